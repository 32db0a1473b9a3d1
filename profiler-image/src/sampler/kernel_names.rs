//! Kernel frames named by the kernel's own symbol table. The agent writes the addresses into a
//! map and runs `name_kernel_addresses` (`profiler.bpf.c`) once per batch with
//! `BPF_PROG_TEST_RUN`; its `%ps` looks each address up (a binary search in the kernel's own
//! symbols). Reading `/proc/kallsyms` instead, as blazesym does, makes the kernel format all of
//! its lines (120,000 here, about 50 ms of system time) in every run, for the few hundred
//! addresses a profile has. What the program does not name, and everything where it cannot load
//! or run (it needs Linux 5.17, for `bpf_loop`), is named from kallsyms.

use aya::maps::{Array, MapData};
use aya::programs::{RawTracePoint, RawTracePointRunOptions, TestRun};
use aya::Ebpf;
use eagle_ebpf::{names, KSYM_BATCH, KSYM_NAME};

pub struct KernelNames {
    addrs: Array<MapData, u64>,
    names: Array<MapData, [u8; KSYM_NAME]>,
}

impl KernelNames {
    /// Loads the program and takes its two maps; the reason where the kernel refuses it.
    pub fn load(bpf: &mut Ebpf) -> Result<Self, String> {
        let program: &mut RawTracePoint = bpf
            .program_mut(names::NAME_KERNEL_ADDRESSES_PROGRAM)
            .ok_or("program missing from the eBPF object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        program.load().map_err(|e| e.to_string())?;
        let mut take = |name: &str| bpf.take_map(name).ok_or(format!("map `{name}` missing from the eBPF object"));
        let addrs = Array::try_from(take(names::KSYM_ADDRS)?).map_err(|e| e.to_string())?;
        let names = Array::try_from(take(names::KSYM_NAMES)?).map_err(|e| e.to_string())?;
        Ok(Self { addrs, names })
    }

    /// The name of each address, in order; `None` where the kernel's lookup names none (no
    /// symbol holds it, or one it does not search: kallsyms also lists ftrace's and kprobes'
    /// trampolines), which is left to kallsyms.
    pub fn name(&mut self, bpf: &Ebpf, addrs: &[u64]) -> Result<Vec<Option<String>>, String> {
        let program: &RawTracePoint = bpf
            .program(names::NAME_KERNEL_ADDRESSES_PROGRAM)
            .ok_or("program missing from the eBPF object")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| e.to_string())?;
        let mut named = Vec::with_capacity(addrs.len());
        for batch in addrs.chunks(KSYM_BATCH as usize) {
            for (i, addr) in batch.iter().enumerate() {
                self.addrs.set(i as u32, addr, 0).map_err(|e| e.to_string())?;
            }
            let mut args = RawTracePointRunOptions::new();
            args.args[0] = batch.len() as u64;
            let ran = program.test_run(args).map_err(|e| e.to_string())?;
            // The program returns how many it named: names past that are a batch's before.
            if ran.return_value as usize != batch.len() {
                return Err(format!("named {} of {} addresses", ran.return_value, batch.len()));
            }
            for i in 0..batch.len() {
                named.push(symbol_name(&self.names.get(&(i as u32), 0).map_err(|e| e.to_string())?));
            }
        }
        Ok(named)
    }
}

/// Says, under `EAGLE_SYMBOLIZE_DEBUG=1`, why kernel frames are named from kallsyms.
pub fn say_why_kallsyms(why: &str) {
    if std::env::var_os("EAGLE_SYMBOLIZE_DEBUG").is_some() {
        eprintln!("eagle-agent: kernel frames named from /proc/kallsyms: {why}");
    }
}

/// `eagle-agent --name-kernel-addresses ADDR...` (hex): for each address, a line of the address,
/// the kernel's name for it and the name read from `/proc/kallsyms`, tab-separated (`-` for
/// none). For the tests, which compare the two.
pub const NAME_KERNEL_ADDRESSES_FLAG: &str = "--name-kernel-addresses";

pub fn serve_name_kernel_addresses(args: impl Iterator<Item = String>) -> i32 {
    let mut addrs = Vec::new();
    for arg in args {
        match u64::from_str_radix(arg.trim_start_matches("0x"), 16) {
            Ok(addr) => addrs.push(addr),
            Err(_) => {
                eprintln!("eagle-agent: {arg} is not a hexadecimal address");
                return 2;
            }
        }
    }
    let Some(object) = eagle_ebpf::object() else {
        eprintln!("eagle-agent: this build has no eBPF program");
        return 1;
    };
    let mut bpf = match aya::EbpfLoader::new().load(object) {
        Ok(bpf) => bpf,
        Err(e) => {
            eprintln!("eagle-agent: cannot load the eBPF object: {e}");
            return 1;
        }
    };
    let kernel = match KernelNames::load(&mut bpf).and_then(|mut names| names.name(&bpf, &addrs)) {
        Ok(kernel) => kernel,
        Err(e) => {
            eprintln!("eagle-agent: cannot name kernel addresses with the kernel's lookup: {e}");
            return 1;
        }
    };
    let mut symbols = crate::symbolize::Symbols::new();
    let kallsyms = symbols.kernel(&addrs);
    for ((addr, kernel), kallsyms) in addrs.iter().zip(kernel).zip(kallsyms) {
        let kallsyms = kallsyms[0].trim_end_matches(crate::symbolize::KERNEL_SUFFIX);
        println!("{addr:x}\t{}\t{}", kernel.as_deref().unwrap_or("-"), kallsyms);
    }
    0
}

/// The function's name in what `%ps` wrote: without the module a module's symbol is followed
/// by (kallsyms, as blazesym reads it, names the function alone); `None` for an address no
/// symbol holds, which `%ps` prints in hex, and where the program wrote nothing (a failed or
/// too long name). Kernel symbols have no spaces.
fn symbol_name(written: &[u8]) -> Option<String> {
    let end = written.iter().position(|b| *b == 0).unwrap_or(written.len());
    let text = String::from_utf8_lossy(&written[..end]);
    let name = text.split_once(" [").map_or(&*text, |(name, _)| name);
    (!name.is_empty() && !name.starts_with("0x")).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn padded(text: &str) -> [u8; KSYM_NAME] {
        let mut out = [0; KSYM_NAME];
        out[..text.len()].copy_from_slice(text.as_bytes());
        out
    }

    #[test]
    fn what_ps_writes_is_read_as_the_function_alone() {
        assert_eq!(symbol_name(&padded("do_syscall_64")).as_deref(), Some("do_syscall_64"));
        assert_eq!(symbol_name(&padded("nf_hook_slow [nf_tables]")).as_deref(), Some("nf_hook_slow"));
        assert_eq!(symbol_name(&padded("0xffffffffc0a01234")), None);
        assert_eq!(
            symbol_name(&padded("bpf_prog_6deef7357e7b4530_offcpu_switch")).as_deref(),
            Some("bpf_prog_6deef7357e7b4530_offcpu_switch")
        );
        assert_eq!(symbol_name(&padded("")), None);
    }
}
