//! Compiles `src/profiler.bpf.c` and `src/net.bpf.c` with clang into `$OUT_DIR/*.bpf.o`.
//!
//! Without clang (macOS, a bare CI image) an empty object is written and `eagle_ebpf_stub` is set,
//! so `cargo check`, clippy and the CLI still build everywhere; the agent then says at run time
//! that it was built without the eBPF program and how to fix that.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let objects = [("src/profiler.bpf.c", out.join("profiler.bpf.o")), ("src/net.bpf.c", out.join("net.bpf.o"))];
    for file in ["src/profiler.bpf.c", "src/eagle.h", "src/net.bpf.c", "src/net.h"] {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=EAGLE_CLANG");
    println!("cargo:rustc-check-cfg=cfg(eagle_ebpf_stub)");

    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let clang = env::var("EAGLE_CLANG").ok().or_else(|| {
        ["clang-19", "clang-18", "clang-17", "clang-16", "clang"]
            .into_iter()
            .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
            .map(str::to_owned)
    });
    let Some(clang) = clang.filter(|_| target_os == "linux") else {
        for (_, object) in &objects {
            stub(object, "clang not found (install clang-19, or set EAGLE_CLANG)");
        }
        return;
    };
    // The kernel's uapi headers put asm/ under the multiarch directory on Debian.
    let multiarch =
        format!("/usr/include/{}-linux-gnu", env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into()));
    for (source, object) in &objects {
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(object)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{clang} failed to compile {source} ({s}); is libbpf-dev installed?"),
            Err(e) => panic!("cannot run {clang}: {e}"),
        }
    }
}

fn stub(object: &std::path::Path, why: &str) {
    println!("cargo:warning=eagle-ebpf: {why}; building without the eBPF program");
    println!("cargo:rustc-cfg=eagle_ebpf_stub");
    std::fs::write(object, []).expect("write stub object");
}
