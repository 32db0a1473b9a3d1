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
    // The target's registers and system call numbers: the C code says which with
    // __TARGET_ARCH_*, as libbpf's bpf_tracing.h spells them; asm/ is the kernel's uapi headers
    // of that architecture, in the multiarch directory on Debian, or in the cross directory
    // of linux-libc-dev-<arch>-cross when cross-building.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let (define, multiarch, cross) = match arch.as_str() {
        "aarch64" => ("arm64", "/usr/include/aarch64-linux-gnu", "/usr/aarch64-linux-gnu/include"),
        "x86_64" => ("x86", "/usr/include/x86_64-linux-gnu", "/usr/x86_64-linux-gnu/include"),
        other => panic!("eagle-ebpf: no eBPF program for {other} (x86_64 and aarch64 only)"),
    };
    let include = [multiarch, cross].into_iter().find(|d| std::path::Path::new(d).join("asm").is_dir()).unwrap_or_else(
        || panic!("eagle-ebpf: no kernel headers for {arch} in {multiarch} or {cross}: install linux-libc-dev (linux-libc-dev-{define}-cross to cross-build)"),
    );
    for (source, object) in &objects {
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{define}"))
            .arg(format!("-I{include}"))
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
