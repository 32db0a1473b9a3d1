//! An object's unwind table from its `.eh_frame` (or `.debug_frame`): for every address, how to
//! find the caller's frame, in the compact rows the eBPF unwinder searches
//! ([`eagle_ebpf::UnwindRow`]).
//!
//! The bytes come from files of profiled processes: hostile. gimli and object check every read;
//! what is left to this module is to bound the work (rows per object, see [`MAX_ROWS`]) and to
//! turn what the kernel side cannot follow into rows that say so, never into a wrong rule.
//!
//! A big object (libLLVM: 200,000 FDEs, 1.3 million rows) takes a few hundred milliseconds of
//! gimli's evaluation, so its FDEs are evaluated in chunks on several threads. The chunks follow
//! `.eh_frame_hdr`'s table, which the linker sorted by address: their rows come out sorted, and
//! each chunk is merged as soon as the chunks before it are, and handed to a [`RowSink`] (the
//! kernel's map, in the agent) a few thousand rows at a time, instead of all being held and
//! sorted again: the whole table is never in the agent's memory. Of the object, only its
//! headers and unwind sections are read.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use eagle_ebpf::{cfa, UnwindRow};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EhFrameHdr, EndianSlice, LittleEndian, Reader, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::elf::FileHeader64;
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable};
use object::ReadRef;

/// Rows of one object's table at most: the kernel's binary search takes 24 steps.
pub const MAX_ROWS: usize = eagle_ebpf::MAX_TABLE_ROWS;

/// Marks the end of an FDE's range while rows are collected; becomes [`cfa::NONE`] unless the
/// next FDE starts right there.
const GAP: u8 = 0x7f;

/// FDEs one thread evaluates at a time: a few milliseconds of work, so that threads end
/// together, and a big object's rows are held in pieces that are freed as they are merged.
const FDES_PER_CHUNK: usize = 4096;

/// Merged rows are handed to the sink once this many are waiting (64 KiB): the last two are
/// kept back, as a row merged after them may replace or join them.
const ROWS_PER_WRITE: usize = 8192;

/// Where an object's table goes: its rows, sorted by `pc` and merged, a slice at a time in
/// address order.
pub trait RowSink: Send {
    /// The rows the table will have, about (from the number of FDEs), before the first write.
    fn expect(&mut self, _rows: usize) {}
    /// Appends rows after those written before.
    fn write(&mut self, rows: &[UnwindRow]) -> Result<(), TableError>;
    /// Forgets every row written: the object's rows turned out not to be in address order, and
    /// are written again, sorted.
    fn clear(&mut self);
}

/// The whole table in memory: for tests and tools.
impl RowSink for Vec<UnwindRow> {
    fn write(&mut self, rows: &[UnwindRow]) -> Result<(), TableError> {
        self.extend_from_slice(rows);
        Ok(())
    }

    fn clear(&mut self) {
        Vec::clear(self);
    }
}

/// A loadable segment, to turn a mapping's file offset into the object's addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub executable: bool,
}

/// What an object offers the unwinder.
#[derive(Debug, Default)]
pub struct Object {
    /// Sorted by `pc`, no two with the same `pc`; empty when the object has no unwind info.
    pub rows: Vec<UnwindRow>,
    pub segments: Vec<Segment>,
    /// GNU build id, when the object has one.
    pub build_id: Option<Vec<u8>>,
    /// Where the rows came from (`.eh_frame`, `.debug_frame`), for messages.
    pub source: &'static str,
    /// FDEs that could not be parsed and were left out (their code walks frame pointers).
    pub bad_entries: usize,
    /// The object has unwind information whose rows were not built (`skip_rows` said so).
    pub rows_skipped: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TableError {
    #[error("not a 64-bit ELF object: {0}")]
    NotElf(String),
    #[error("not x86-64 code (the unwinder knows x86-64 only)")]
    NotX86_64,
    #[error("code above 4 GiB in the object's own addresses")]
    HighAddresses,
    #[error("more than {MAX_ROWS} unwind rows")]
    TooManyRows,
    /// From the sink: the agent's budget of rows over all objects is spent.
    #[error("over the budget of unwind rows")]
    OverBudget,
    /// From the sink: the kernel refused the table.
    #[error("{0}")]
    Sink(String),
}

impl Object {
    /// Parses an ELF object. An object without unwind sections is no error: its rows are empty
    /// and its code walks frame pointers.
    pub fn parse<'data, R: ReadRef<'data>>(data: R) -> Result<Self, TableError> {
        Self::parse_on(data, 1, |_| false)
    }

    /// As [`Object::parse`], evaluating the unwind entries on up to `threads` threads (this one
    /// included). When `skip_rows`, given the object's build id (empty without one), says so,
    /// the rows are not built (`rows_skipped`): its segments and build id are all that is
    /// needed while its build id has a table already, or until a sample needs its table.
    pub fn parse_on<'data, R: ReadRef<'data>>(
        data: R,
        threads: usize,
        skip_rows: impl Fn(&[u8]) -> bool,
    ) -> Result<Self, TableError> {
        let mut rows = Vec::new();
        let mut object = Self::parse_into(data, threads, skip_rows, &mut rows)?;
        rows.shrink_to_fit();
        object.rows = rows;
        Ok(object)
    }

    /// As [`Object::parse_on`], handing the rows to `sink` as they are merged rather than
    /// holding them: the object's `rows` stay empty.
    pub fn parse_into<'data, R: ReadRef<'data>>(
        data: R,
        threads: usize,
        skip_rows: impl Fn(&[u8]) -> bool,
        sink: &mut dyn RowSink,
    ) -> Result<Self, TableError> {
        // Headers, section names, notes and the unwind sections are all that is read: not
        // `ElfFile::parse`, which reads both symbol tables whole (megabytes in a big library,
        // held in the read cache while the rows are built) for nothing the table needs.
        let not_elf = |e: object::read::Error| TableError::NotElf(e.to_string());
        let header = FileHeader64::<object::Endianness>::parse(data).map_err(not_elf)?;
        let endian = header.endian().map_err(not_elf)?;
        if header.e_machine(endian) != object::elf::EM_X86_64 {
            return Err(TableError::NotX86_64);
        }
        let segments: Vec<Segment> = header
            .program_headers(endian, data)
            .map_err(not_elf)?
            .iter()
            .filter(|p| p.p_type(endian) == object::elf::PT_LOAD)
            .map(|p| Segment {
                offset: p.p_offset(endian),
                vaddr: p.p_vaddr(endian),
                filesz: p.p_filesz(endian),
                executable: p.p_flags(endian) & object::elf::PF_X != 0,
            })
            .collect();
        let sections = header.sections(endian, data).map_err(not_elf)?;
        let build_id = gnu_build_id(&sections, endian, data).map(<[u8]>::to_vec);
        let has_unwind_info = [b".eh_frame".as_slice(), b".debug_frame"].iter().any(|name| {
            sections
                .section_by_name(endian, name)
                .is_some_and(|(_, s)| s.sh_type(endian) != object::elf::SHT_NOBITS && s.sh_size(endian) > 0)
        });
        if has_unwind_info && skip_rows(build_id.as_deref().unwrap_or_default()) {
            return Ok(Object {
                segments,
                build_id,
                source: "rows not built",
                rows_skipped: true,
                ..Object::default()
            });
        }
        let address = |name: &[u8]| sections.section_by_name(endian, name).map(|(_, s)| s.sh_addr(endian));
        let section = |name: &[u8]| {
            let (_, s) = sections.section_by_name(endian, name)?;
            // SHT_NOBITS (a stripped object's placeholder) has no bytes in the file.
            let data = s.data(endian, data).ok()?;
            (!data.is_empty()).then_some((s.sh_addr(endian), data))
        };
        let mut bases = BaseAddresses::default();
        if let Some(text) = address(b".text") {
            bases = bases.set_text(text);
        }
        if let Some(got) = address(b".got") {
            bases = bases.set_got(got);
        }
        let mut object = Object { segments, build_id, ..Object::default() };
        let built = if let Some((address, data)) = section(b".eh_frame") {
            object.source = ".eh_frame";
            let hdr = section(b".eh_frame_hdr");
            if let Some((hdr_address, _)) = hdr {
                bases = bases.set_eh_frame_hdr(hdr_address);
            }
            let bases = bases.set_eh_frame(address);
            let mut eh_frame = EhFrame::new(data, LittleEndian);
            eh_frame.set_address_size(8);
            let fdes = hdr
                .and_then(|(_, hdr)| fdes_by_address(hdr, address, &bases))
                .unwrap_or_else(|| fdes_in_order(&eh_frame, &bases));
            collect_rows(&eh_frame, &bases, fdes, threads, sink)
        } else if let Some((_, data)) = section(b".debug_frame") {
            object.source = ".debug_frame";
            let mut debug_frame = DebugFrame::new(data, LittleEndian);
            debug_frame.set_address_size(8);
            let fdes = fdes_in_order(&debug_frame, &bases);
            collect_rows(&debug_frame, &bases, fdes, threads, sink)
        } else {
            return Ok(object);
        };
        object.bad_entries = built?;
        Ok(object)
    }

    /// `address - bias` is the object's own address for code mapped at `start..end` from file
    /// offset `offset`; `None` when no loadable segment is in that part of the file.
    pub fn bias(&self, start: u64, end: u64, offset: u64) -> Option<u64> {
        // Mappings start on a page, segments need not: the page a code segment starts in may
        // also hold the end of the read-only segment before it, whose addresses can be offset
        // differently from the file (lld puts them a page apart). The code segment is the one.
        let last = offset.saturating_add(end.saturating_sub(start));
        let overlapping = |s: &&Segment| s.offset < last && offset < s.offset.saturating_add(s.filesz.max(1));
        let segment = self
            .segments
            .iter()
            .filter(overlapping)
            .find(|s| s.executable)
            .or_else(|| self.segments.iter().find(overlapping))?;
        // The file offset `s.offset` is mapped at `start + (s.offset - offset)`, and is the
        // object's address `s.vaddr`.
        Some(start.wrapping_add(segment.offset).wrapping_sub(offset).wrapping_sub(segment.vaddr))
    }
}

/// The GNU build id from the object's note sections (a few bytes each), if it has one.
fn gnu_build_id<'data, R: ReadRef<'data>>(
    sections: &SectionTable<'data, FileHeader64<object::Endianness>, R>,
    endian: object::Endianness,
    data: R,
) -> Option<&'data [u8]> {
    for section in sections.iter() {
        let Ok(Some(mut notes)) = section.notes(endian, data) else { continue };
        while let Ok(Some(note)) = notes.next() {
            if note.name() == object::elf::ELF_NOTE_GNU && note.n_type(endian) == object::elf::NT_GNU_BUILD_ID {
                return Some(note.desc());
            }
        }
    }
    None
}

/// The FDEs of a section, as offsets in it, in the order their rows are to be evaluated.
struct Fdes<O> {
    offsets: Vec<O>,
    /// Entries that could not be read and were left out.
    bad: usize,
}

/// The FDEs listed in `.eh_frame_hdr`'s table, which the linker sorted by address for the C++
/// runtime's binary search: evaluated in this order, their rows need no sorting. It is what the
/// process's own unwinder relies on, so an FDE it does not list is not unwound there either.
/// `None` when there is no table, or an entry of it does not point into `.eh_frame` at
/// `eh_frame_address`: the section is then read in its own order.
fn fdes_by_address(
    hdr: &[u8],
    eh_frame_address: u64,
    bases: &BaseAddresses,
) -> Option<Fdes<gimli::EhFrameOffset<usize>>> {
    let parsed = EhFrameHdr::new(hdr, LittleEndian).parse(bases, 8).ok()?;
    if parsed.eh_frame_ptr().direct().ok()? != eh_frame_address {
        return None;
    }
    let table = parsed.table()?;
    let mut offsets = Vec::new();
    let mut entries = table.iter(bases);
    // At most as many entries as the table has bytes for (8 each): a hostile count does not
    // make this loop longer than the file.
    for _ in 0..hdr.len() / 8 {
        let Ok(Some((_, fde))) = entries.next() else { break };
        // Not gimli's `pointer_to_offset`, which subtracts without checking.
        let offset = fde.direct().ok()?.checked_sub(eh_frame_address)?;
        offsets.push(gimli::EhFrameOffset(usize::try_from(offset).ok()?));
    }
    Some(Fdes { offsets, bad: 0 })
}

/// The FDEs of `section` in the order they are in it: where there is no sorted table (the
/// vDSO's, `.debug_frame`). Their rows are sorted once collected, if they need it.
fn fdes_in_order<R, S>(section: &S, bases: &BaseAddresses) -> Fdes<S::Offset>
where
    R: Reader<Offset = usize>,
    S: UnwindSection<R>,
{
    let mut fdes = Fdes { offsets: Vec::new(), bad: 0 };
    let mut entries = section.entries(bases);
    loop {
        match entries.next() {
            Ok(Some(CieOrFde::Fde(partial))) => fdes.offsets.push(S::Offset::from(partial.offset())),
            Ok(Some(CieOrFde::Cie(_))) => {}
            Ok(None) => break,
            // A broken length or CIE pointer: nothing after it can be found again.
            Err(_) => {
                fdes.bad += 1;
                break;
            }
        }
    }
    fdes
}

/// The rows of the FDEs `fdes` of `section`, evaluated on up to `threads` threads, sorted,
/// merged, and written to `sink`. Returns the number of entries left out because they did not
/// parse.
///
/// Rows evaluated in address order (FDEs from `.eh_frame_hdr`'s table, as linkers write it)
/// are merged chunk by chunk as their chunks are done and written a few thousand at a time, so
/// that only the few chunks done ahead of their turn are held, not the table. Where they turn
/// out not to be in order (FDEs in the section's order, overlapping FDEs), the sink is cleared
/// and all are evaluated again, held, and sorted.
fn collect_rows<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    fdes: Fdes<S::Offset>,
    threads: usize,
    sink: &mut dyn RowSink,
) -> Result<usize, TableError>
where
    S: UnwindSection<EndianSlice<'data, LittleEndian>> + Sync,
    S::Offset: Hash + Eq + Send + Sync,
{
    // libLLVM has 8 rows an FDE, this project's release binary 6.
    sink.expect(fdes.offsets.len().saturating_mul(8).min(MAX_ROWS));
    match collect_rows_as(section, bases, &fdes, threads, &mut *sink)? {
        Some(bad) => Ok(bad),
        None => {
            sink.clear();
            let (rows, bad) = collect_rows_sorted(section, bases, &fdes, threads)?;
            sink.write(&rows)?;
            Ok(bad)
        }
    }
}

/// The rows of `fdes`, all held and sorted: where they are not in address order.
fn collect_rows_sorted<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    fdes: &Fdes<S::Offset>,
    threads: usize,
) -> Result<(Vec<UnwindRow>, usize), TableError>
where
    S: UnwindSection<EndianSlice<'data, LittleEndian>> + Sync,
    S::Offset: Hash + Eq + Send + Sync,
{
    let mut merging = Merging { bad: fdes.bad, ..Merging::default() };
    evaluate_chunks(section, bases, fdes, threads, &mut merging, false)?;
    Ok((merge(std::mem::take(&mut merging.waiting).into_values().collect()), merging.bad))
}

/// Rows of chunks done, shared by the threads that evaluate them.
#[derive(Default)]
struct Merging<'s> {
    /// The last rows merged from the chunks before `next`, not yet written to `sink` (when
    /// merged as they come).
    merged: Vec<UnwindRow>,
    sink: Option<&'s mut dyn RowSink>,
    /// Rows merged that make a write ([`ROWS_PER_WRITE`]).
    write_every: usize,
    /// Why the sink refused rows.
    failed: Option<TableError>,
    /// Chunks done but not merged yet, by index: ahead of their turn, or all of them when the
    /// rows are sorted at the end.
    waiting: BTreeMap<usize, Vec<UnwindRow>>,
    next: usize,
    /// [`sort_key`] of the last row merged.
    last: Option<(u32, bool)>,
    out_of_order: bool,
    bad: usize,
}

impl Merging<'_> {
    /// Merges the chunks that are next in turn and writes what is merged; notes when one is out
    /// of address order, or the sink refused rows.
    fn merge_ready(&mut self) {
        while let Some(rows) = self.waiting.remove(&self.next) {
            let in_order = rows.is_sorted_by_key(sort_key)
                && rows.first().is_none_or(|first| self.last.is_none_or(|last| last <= sort_key(first)));
            if !in_order {
                self.out_of_order = true;
                return;
            }
            self.last = rows.last().map(sort_key).or(self.last);
            for row in rows {
                push_merged(&mut self.merged, row);
            }
            self.next += 1;
            if self.merged.len() >= self.write_every.max(3) {
                // The last two may still be replaced or joined by the next row (push_merged).
                self.write(self.merged.len() - 2);
                if self.failed.is_some() {
                    return;
                }
            }
        }
    }

    /// Writes the first `n` rows merged to the sink.
    fn write(&mut self, n: usize) {
        let Some(sink) = self.sink.as_mut() else { return };
        match sink.write(&self.merged[..n]) {
            Ok(()) => {
                self.merged.drain(..n);
            }
            Err(e) => self.failed = Some(e),
        }
    }
}

/// [`collect_rows`], merging rows as their chunks are done and writing them to `sink`: `None`
/// when they are not in address order.
fn collect_rows_as<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    fdes: &Fdes<S::Offset>,
    threads: usize,
    sink: &mut dyn RowSink,
) -> Result<Option<usize>, TableError>
where
    S: UnwindSection<EndianSlice<'data, LittleEndian>> + Sync,
    S::Offset: Hash + Eq + Send + Sync,
{
    let mut merging = Merging { bad: fdes.bad, sink: Some(sink), write_every: ROWS_PER_WRITE, ..Merging::default() };
    evaluate_chunks(section, bases, fdes, threads, &mut merging, true)?;
    if merging.out_of_order {
        return Ok(None);
    }
    let rest = merging.merged.len();
    merging.write(rest);
    match merging.failed {
        Some(e) => Err(e),
        None => Ok(Some(merging.bad)),
    }
}

/// Evaluates the chunks of `fdes` on up to `threads` threads into `merging`: merged as they
/// are done (`merge_as_done`; stopping where they turn out of address order or the sink
/// refuses them), or all held.
fn evaluate_chunks<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    fdes: &Fdes<S::Offset>,
    threads: usize,
    merging: &mut Merging<'_>,
    merge_as_done: bool,
) -> Result<(), TableError>
where
    S: UnwindSection<EndianSlice<'data, LittleEndian>> + Sync,
    S::Offset: Hash + Eq + Send + Sync,
{
    let chunks: Vec<&[S::Offset]> = fdes.offsets.chunks(FDES_PER_CHUNK).collect();
    let next = AtomicUsize::new(0);
    let collected = AtomicUsize::new(0);
    let shared = Mutex::new(std::mem::take(merging));
    // Each thread takes the next chunk until none is left (or the rows are found out of order),
    // with a context and CIE cache of its own.
    let work = || -> Result<(), TableError> {
        let mut context = UnwindContext::new();
        let mut cies = HashMap::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            let Some(chunk) = chunks.get(index) else { return Ok(()) };
            let mut rows = Vec::new();
            match evaluate(section, bases, chunk, &mut context, &mut cies, &mut rows, &collected) {
                Ok(bad) => {
                    let mut merging = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    merging.bad += bad;
                    merging.waiting.insert(index, rows);
                    if merge_as_done {
                        merging.merge_ready();
                        if merging.out_of_order || merging.failed.is_some() {
                            next.store(chunks.len(), Ordering::Relaxed);
                            return Ok(());
                        }
                    }
                }
                Err(e) => {
                    // The others stop before their next chunk.
                    next.store(chunks.len(), Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    };
    let threads = threads.clamp(1, chunks.len().max(1));
    let results = if threads == 1 {
        vec![work()]
    } else {
        std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut results = vec![work()];
            for helper in helpers {
                // gimli and object do not panic on hostile bytes (see the tests below); if
                // they did, this thread must end as it would without helpers.
                results.push(helper.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
            }
            results
        })
    };
    *merging = shared.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    results.into_iter().collect()
}

/// Evaluates the FDEs at `offsets` into `rows` (in their order); counts the rows in `collected`,
/// shared by all threads working on the object. Returns the number of FDEs left out.
fn evaluate<'data, S>(
    section: &S,
    bases: &BaseAddresses,
    offsets: &[S::Offset],
    context: &mut UnwindContext<usize>,
    cies: &mut HashMap<S::Offset, gimli::CommonInformationEntry<EndianSlice<'data, LittleEndian>>>,
    rows: &mut Vec<UnwindRow>,
    collected: &AtomicUsize,
) -> Result<usize, TableError>
where
    S: UnwindSection<EndianSlice<'data, LittleEndian>>,
    S::Offset: Hash + Eq,
{
    let mut bad = 0usize;
    for &offset in offsets {
        let fde = section.fde_from_offset(bases, offset, |section, bases, offset| {
            if let Some(cie) = cies.get(&offset) {
                return Ok(Clone::clone(cie));
            }
            let cie = section.cie_from_offset(bases, offset)?;
            cies.insert(offset, cie.clone());
            Ok(cie)
        });
        let Ok(fde) = fde else {
            bad += 1;
            continue;
        };
        if fde.initial_address() > u64::from(u32::MAX) || fde.end_address() > u64::from(u32::MAX) + 1 {
            if fde.len() == 0 {
                continue;
            }
            return Err(TableError::HighAddresses);
        }
        let signal = fde.is_signal_trampoline();
        let before = rows.len();
        let Ok(mut table) = fde.rows(section, bases, context) else {
            bad += 1;
            continue;
        };
        let mut ok = true;
        loop {
            match table.next_row() {
                Ok(Some(row)) => {
                    if row.start_address() >= row.end_address() {
                        continue;
                    }
                    let mut compact = if signal { signal_row() } else { convert(row, section) };
                    compact.pc = row.start_address() as u32;
                    rows.push(compact);
                }
                Ok(None) => break,
                Err(_) => {
                    ok = false;
                    break;
                }
            }
            if rows.len() > MAX_ROWS {
                return Err(TableError::TooManyRows);
            }
        }
        if !ok {
            // A half-evaluated FDE could hold wrong rules: leave all of it out.
            rows.truncate(before);
            bad += 1;
            continue;
        }
        if rows.len() > before {
            // Code past the FDE's end is not covered by it (padding, code without CFI).
            let end = fde.end_address();
            if end <= u64::from(u32::MAX) {
                rows.push(UnwindRow { pc: end as u32, kind: GAP, ..UnwindRow::default() });
            }
        }
        // Over all threads, counted per FDE.
        if collected.fetch_add(rows.len() - before, Ordering::Relaxed) + rows.len() - before > MAX_ROWS {
            return Err(TableError::TooManyRows);
        }
    }
    Ok(bad)
}

/// Where two rows start at the same address, the gap that ends an FDE sorts before the rule
/// of the FDE that starts there, so that the rule wins.
fn sort_key(row: &UnwindRow) -> (u32, bool) {
    (row.pc, row.kind != GAP)
}

/// The rows of all chunks, in address order, as the kernel searches them: where two start at
/// the same address the later one (in [`sort_key`] order) is kept; consecutive rows with the
/// same rule become one. Rows evaluated in address order are merged as they are joined,
/// freeing each chunk once merged; others are sorted first.
fn merge(chunks: Vec<Vec<UnwindRow>>) -> Vec<UnwindRow> {
    let total = chunks.iter().map(Vec::len).sum();
    let mut merged: Vec<UnwindRow> = Vec::with_capacity(total);
    // Each chunk, then where one ends and the next begins (a slice is checked faster than the
    // chunks' rows as one iterator).
    let ends: Vec<(&UnwindRow, &UnwindRow)> = chunks.iter().filter_map(|c| Some((c.first()?, c.last()?))).collect();
    let joined_in_order = ends.windows(2).all(|w| sort_key(w[0].1) <= sort_key(w[1].0));
    if joined_in_order && chunks.iter().all(|c| c.is_sorted_by_key(sort_key)) {
        for chunk in chunks {
            for row in chunk {
                push_merged(&mut merged, row);
            }
        }
    } else {
        let mut rows = chunks.concat();
        rows.sort_by_key(sort_key);
        for row in rows {
            push_merged(&mut merged, row);
        }
    }
    merged.shrink_to_fit();
    merged
}

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    a.kind == b.kind && a.cfa_offset == b.cfa_offset && a.rbp_offset == b.rbp_offset
}

/// Appends `row` (of an address at or after the last's) to sorted, merged `rows`.
fn push_merged(rows: &mut Vec<UnwindRow>, mut row: UnwindRow) {
    if row.kind == GAP {
        row.kind = cfa::NONE;
    }
    match rows.last_mut() {
        Some(last) if last.pc == row.pc => {
            *last = row;
            // The row replaced may have been all that told it from the one before.
            if let [.., before, last] = rows.as_slice() {
                if same_rule(before, last) {
                    rows.pop();
                }
            }
        }
        Some(last) if same_rule(last, &row) => {}
        _ => rows.push(row),
    }
}

fn signal_row() -> UnwindRow {
    UnwindRow { kind: cfa::SIGNAL, ..UnwindRow::default() }
}

/// One row of gimli's table as the kernel side can follow it, or [`cfa::NONE`].
fn convert<R, S>(row: &gimli::UnwindTableRow<usize>, section: &S) -> UnwindRow
where
    R: Reader<Offset = usize>,
    S: UnwindSection<R>,
{
    let none = UnwindRow { kind: cfa::NONE, ..UnwindRow::default() };
    match row.register(X86_64::RA) {
        Some(RegisterRule::Undefined) => return UnwindRow { kind: cfa::END, ..UnwindRow::default() },
        None | Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return none,
    }
    let (mut kind, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = u16::try_from(*offset) else { return none };
            match *register {
                X86_64::RSP => (cfa::RSP, offset),
                X86_64::RBP => (cfa::RBP, offset),
                _ => return none,
            }
        }
        CfaRule::Expression(expression) => {
            let Ok(expression) = expression.get(section) else { return none };
            let Ok(bytes) = expression.0.to_slice() else { return none };
            match plt_threshold(&bytes) {
                Some(threshold) => (cfa::PLT, u16::from(threshold)),
                None => return none,
            }
        }
    };
    let mut rbp_offset = 0i8;
    match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => {}
        Some(RegisterRule::Offset(offset)) => {
            let Some(slots) = (offset % 8 == 0).then_some(offset / 8).and_then(|s| i8::try_from(s).ok()) else {
                return none;
            };
            kind |= cfa::RBP_SAVED;
            rbp_offset = slots;
        }
        // Anything else (another register, an expression) the kernel does not follow; a wrong
        // rbp would only matter to a caller whose CFA is rbp-based, but then it would be wrong.
        Some(_) => return none,
    }
    UnwindRow { pc: 0, cfa_offset, kind, rbp_offset }
}

/// The CFA expression of PLT entries as linkers write it:
/// `rsp + 8 + ((rip & 15) >= N) << 3`, i.e. `DW_OP_breg7 8; DW_OP_breg16 0; DW_OP_lit15;
/// DW_OP_and; DW_OP_litN; DW_OP_ge; DW_OP_lit3; DW_OP_shl; DW_OP_plus`. Returns N.
fn plt_threshold(bytes: &[u8]) -> Option<u8> {
    const LIT0: u8 = 0x30;
    match bytes {
        [0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, lit, 0x2a, 0x33, 0x24, 0x22] if (LIT0..=LIT0 + 15).contains(lit) => {
            Some(lit - LIT0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _, ObjectSegment as _};

    use super::*;

    fn row(pc: u32, kind: u8, cfa_offset: u16) -> UnwindRow {
        UnwindRow { pc, cfa_offset, kind, rbp_offset: 0 }
    }

    /// [`collect_rows`] into memory.
    fn collected<'data, S>(
        section: &S,
        bases: &BaseAddresses,
        fdes: Fdes<S::Offset>,
        threads: usize,
    ) -> Result<(Vec<UnwindRow>, usize), TableError>
    where
        S: UnwindSection<EndianSlice<'data, LittleEndian>> + Sync,
        S::Offset: Hash + Eq + Send + Sync,
    {
        let mut rows = Vec::new();
        let bad = collect_rows(section, bases, fdes, threads, &mut rows)?;
        Ok((rows, bad))
    }

    /// Chunks merged as they come, written every `write_every` rows: what the sink is given.
    fn merged_and_written(chunks: Vec<Vec<UnwindRow>>, write_every: usize) -> Option<Vec<UnwindRow>> {
        let mut written = Vec::new();
        let mut merging = Merging { sink: Some(&mut written), write_every, ..Merging::default() };
        for (index, chunk) in chunks.into_iter().enumerate() {
            merging.waiting.insert(index, chunk);
            merging.merge_ready();
        }
        if merging.out_of_order {
            return None;
        }
        let rest = merging.merged.len();
        merging.write(rest);
        drop(merging);
        Some(written)
    }

    #[test]
    fn merge_prefers_rules_over_gaps_and_joins_equal_rows() {
        let rows = vec![
            row(0x20, cfa::RSP, 8),
            row(0x10, cfa::RSP, 8),
            row(0x14, cfa::RSP, 16),
            row(0x20, GAP, 0), // end of the FDE at 0x10, where the next starts
            row(0x30, GAP, 0),
            row(0x18, cfa::RSP, 16),
        ];
        assert_eq!(
            merge(vec![rows]),
            vec![row(0x10, cfa::RSP, 8), row(0x14, cfa::RSP, 16), row(0x20, cfa::RSP, 8), row(0x30, cfa::NONE, 0)]
        );
    }

    /// `rows` cut into chunks at `cuts` (positions past the end taken as the end).
    fn cut_at(rows: &[UnwindRow], cuts: Vec<usize>) -> Vec<Vec<UnwindRow>> {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(rows.len())).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for cut in cuts.into_iter().chain([rows.len()]) {
            chunks.push(rows[from..cut].to_vec());
            from = cut;
        }
        chunks
    }

    /// What [`merge`] must give, the plain way: all rows sorted, the last of each address kept,
    /// then runs of one rule joined.
    fn merged_by_sorting(chunks: &[Vec<UnwindRow>]) -> Vec<UnwindRow> {
        let mut rows = chunks.concat();
        rows.sort_by_key(sort_key);
        let mut merged: Vec<UnwindRow> = Vec::new();
        for mut row in rows {
            if row.kind == GAP {
                row.kind = cfa::NONE;
            }
            match merged.last_mut() {
                Some(last) if last.pc == row.pc => *last = row,
                _ => merged.push(row),
            }
        }
        merged.dedup_by(|next, kept| same_rule(next, kept));
        merged
    }

    #[test]
    fn rows_in_address_order_are_merged_across_chunks() {
        // Two FDEs in order, the second starting where the first ends, split between chunks.
        let chunks = vec![
            vec![row(0x10, cfa::RSP, 8), row(0x11, cfa::RSP, 16)],
            vec![row(0x20, GAP, 0), row(0x20, cfa::RSP, 8), row(0x21, cfa::RSP, 16)],
            vec![row(0x28, GAP, 0)],
        ];
        let expected = vec![
            row(0x10, cfa::RSP, 8),
            row(0x11, cfa::RSP, 16),
            row(0x20, cfa::RSP, 8),
            row(0x21, cfa::RSP, 16),
            row(0x28, cfa::NONE, 0),
        ];
        assert_eq!(merged_by_sorting(&chunks), expected);
        assert_eq!(merge(chunks), expected);
    }

    /// The rows of the object at `path` evaluated one FDE after the other in the section's
    /// order, with rows sorted after (as before `.eh_frame_hdr` was used), and in the table's
    /// order on 3 threads: the same table.
    fn hdr_order_and_threads_change_nothing(path: &str) {
        let Ok(data) = std::fs::read(path) else { return };
        let elf = object::File::parse(data.as_slice()).expect("an ELF object");
        let section = |name| {
            let s = elf.section_by_name(name)?;
            Some((s.address(), s.data().ok()?))
        };
        let (Some((address, bytes)), Some((hdr_address, hdr))) = (section(".eh_frame"), section(".eh_frame_hdr"))
        else {
            return;
        };
        let bases = BaseAddresses::default().set_eh_frame(address).set_eh_frame_hdr(hdr_address);
        let mut eh_frame = EhFrame::new(bytes, LittleEndian);
        eh_frame.set_address_size(8);
        let in_order = fdes_in_order(&eh_frame, &bases);
        let by_address = fdes_by_address(hdr, address, &bases).expect("a sorted table");
        assert_eq!(in_order.offsets.len(), by_address.offsets.len(), "{path}: FDEs listed");
        let mut backwards = Fdes { offsets: by_address.offsets.clone(), bad: 0 };
        backwards.offsets.reverse();
        assert_eq!(
            collect_rows_as(&eh_frame, &bases, &backwards, 2, &mut Vec::new()).expect("rows"),
            None,
            "{path}: rows out of order merged as they came"
        );
        let serial = collected(&eh_frame, &bases, in_order, 1).expect("rows");
        let threaded = collected(&eh_frame, &bases, by_address, 3).expect("rows");
        assert!(serial.0.len() > 100, "{path}: only {} rows", serial.0.len());
        assert_eq!(serial, threaded, "{path}");
        assert_eq!(collected(&eh_frame, &bases, backwards, 2).expect("rows"), serial, "{path}: sorted at the end");
    }

    #[test]
    fn the_sorted_table_and_threads_give_the_rows_of_the_plain_way() {
        hdr_order_and_threads_change_nothing("/proc/self/exe");
        // A C library built by a distribution (GNU ld, many FDEs).
        hdr_order_and_threads_change_nothing("/lib/x86_64-linux-gnu/libc.so.6");
    }

    /// What the table reads of an object without its symbol tables is what `object`'s full
    /// parse gives.
    fn segments_and_build_id_as_object_reads_them(path: &str) {
        let Ok(data) = std::fs::read(path) else { return };
        let elf = object::File::parse(data.as_slice()).expect("an ELF object");
        let parsed = Object::parse_on(data.as_slice(), 1, |_| true).expect("parsed");
        assert_eq!(parsed.build_id.as_deref(), elf.build_id().expect("notes"), "{path}");
        let loads: Vec<(u64, u64)> = elf.segments().map(|s| (s.address(), s.file_range().0)).collect();
        let ours: Vec<(u64, u64)> = parsed.segments.iter().map(|s| (s.vaddr, s.offset)).collect();
        assert_eq!(ours, loads, "{path}");
    }

    #[test]
    fn headers_alone_give_the_segments_and_build_id() {
        segments_and_build_id_as_object_reads_them("/proc/self/exe");
        segments_and_build_id_as_object_reads_them("/lib/x86_64-linux-gnu/libc.so.6");
    }

    #[test]
    fn the_plt_expression_is_recognised() {
        assert_eq!(plt_threshold(&[0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22]), Some(11));
        assert_eq!(plt_threshold(&[0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3a, 0x2a, 0x33, 0x24, 0x22]), Some(10));
        assert_eq!(plt_threshold(&[0x77, 0x08, 0x06]), None);
    }

    #[test]
    fn the_agent_itself_has_a_table_that_covers_its_code() {
        let data = std::fs::read("/proc/self/exe").expect("read own binary");
        let object = Object::parse(data.as_slice()).expect("parse own binary");
        assert_eq!(object.source, ".eh_frame");
        assert!(object.rows.len() > 1000, "only {} rows", object.rows.len());
        assert!(object.rows.windows(2).all(|w| w[0].pc < w[1].pc), "rows not sorted and unique");
        // This very function is covered by a rule (not a gap).
        let pc = the_agent_itself_has_a_table_that_covers_its_code as *const () as usize as u64;
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let mapping = crate::unwind::maps::parse(&maps).into_iter().find(|m| m.start <= pc && pc < m.end).unwrap();
        let bias = object.bias(mapping.start, mapping.end, mapping.offset).expect("a segment holds the code");
        let relative = (pc - bias) as u32;
        let i = object.rows.partition_point(|r| r.pc <= relative) - 1;
        assert_ne!(object.rows[i].kind & 0x7f, cfa::NONE, "{:?}", object.rows[i]);
    }

    #[test]
    fn the_code_segment_gives_the_bias_where_a_page_holds_two_segments() {
        // lld's layout (this project's release binary): the code starts in the page where the
        // read-only data ends, one page further in addresses than in the file.
        let object = Object {
            segments: vec![
                Segment { offset: 0, vaddr: 0, filesz: 0x3c80b8, executable: false },
                Segment { offset: 0x3c80c0, vaddr: 0x3c90c0, filesz: 0xb635c0, executable: true },
                Segment { offset: 0xf2b680, vaddr: 0xf2d680, filesz: 0x7eda0, executable: false },
            ],
            ..Object::default()
        };
        let bias = object.bias(0x55f0526be000, 0x55f053222000, 0x3c8000).expect("a bias");
        assert_eq!(0x55f0526be0c0 - bias, 0x3c90c0, "the code segment's first byte is its own address");
        assert_eq!(object.bias(0x1000, 0x2000, 0x7000_0000), None);
    }

    #[test]
    fn not_elf_is_an_error_not_a_panic() {
        assert!(matches!(Object::parse(&b"not an ELF file"[..]), Err(TableError::NotElf(_))));
    }

    /// The `.eh_frame` of this test binary, cut to `len` bytes, and its address.
    fn own_eh_frame(len: usize) -> (u64, Vec<u8>) {
        static WHOLE: std::sync::OnceLock<(u64, Vec<u8>)> = std::sync::OnceLock::new();
        let (address, bytes) = WHOLE.get_or_init(|| {
            let data = std::fs::read("/proc/self/exe").expect("read own binary");
            let elf = object::File::parse(data.as_slice()).expect("parse own binary");
            let section = elf.section_by_name(".eh_frame").expect("an .eh_frame");
            (section.address(), section.data().expect("its bytes").to_vec())
        });
        (*address, bytes[..len.min(bytes.len())].to_vec())
    }

    fn rows_of(address: u64, bytes: &[u8]) -> Result<(Vec<UnwindRow>, usize), TableError> {
        let mut eh_frame = EhFrame::new(bytes, LittleEndian);
        eh_frame.set_address_size(8);
        let bases = BaseAddresses::default().set_eh_frame(address);
        collected(&eh_frame, &bases, fdes_in_order(&eh_frame, &bases), 2)
    }

    fn well_formed(rows: &[UnwindRow]) -> bool {
        rows.windows(2).all(|w| w[0].pc < w[1].pc) && rows.len() <= MAX_ROWS
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 256, ..Default::default() })]

        /// Hostile bytes as `.eh_frame`: rows or an error, never a panic or a hang.
        #[test]
        fn random_eh_frame_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            if let Ok((rows, _)) = rows_of(0x1000, &bytes) {
                proptest::prop_assert!(well_formed(&rows));
            }
        }

        /// A real `.eh_frame` with bytes overwritten: the entries before the damage still give
        /// rules, the damaged ones are left out, nothing panics.
        #[test]
        fn damaged_real_eh_frame_never_panics(
            damage in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..24),
            cut in 1usize..65536,
        ) {
            let (address, mut bytes) = own_eh_frame(cut);
            let len = bytes.len();
            for (at, value) in damage {
                bytes[at % len] = value;
            }
            if let Ok((rows, _)) = rows_of(address, &bytes) {
                proptest::prop_assert!(well_formed(&rows));
            }
        }

        /// Random rows in random chunks: merged as the plain way merges them, whether they came
        /// in address order (merged as joined) or not (sorted first).
        #[test]
        fn merging_chunks_is_sorting_then_joining(
            raw in proptest::collection::vec((0u32..64, 0u8..3, 0u16..3), 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..6),
            in_address_order in proptest::bool::ANY,
        ) {
            let kinds = [cfa::RSP, cfa::RBP, GAP];
            let mut rows: Vec<UnwindRow> = raw.iter().map(|&(pc, k, off)| row(pc, kinds[k as usize], off)).collect();
            if in_address_order {
                rows.sort_by_key(sort_key);
            }
            let chunks = cut_at(&rows, cuts);
            proptest::prop_assert_eq!(merge(chunks.clone()), merged_by_sorting(&chunks));
        }

        /// Rows in address order in random chunks, merged as they come and written to the sink
        /// a few at a time: the sink gets what merging them all at once gives.
        #[test]
        fn rows_written_as_merged_are_the_merged_table(
            raw in proptest::collection::vec((0u32..64, 0u8..3, 0u16..3), 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..6),
            write_every in 3usize..20,
        ) {
            let kinds = [cfa::RSP, cfa::RBP, GAP];
            let mut rows: Vec<UnwindRow> = raw.iter().map(|&(pc, k, off)| row(pc, kinds[k as usize], off)).collect();
            rows.sort_by_key(sort_key);
            let chunks = cut_at(&rows, cuts);
            proptest::prop_assert_eq!(merged_and_written(chunks.clone(), write_every), Some(merged_by_sorting(&chunks)));
        }

        /// A whole ELF object damaged anywhere (headers, section table, `.eh_frame`).
        #[test]
        fn damaged_elf_never_panics(damage in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..16)) {
            let mut data = std::fs::read("/bin/true").or_else(|_| std::fs::read("/usr/bin/true")).expect("a /bin/true");
            let len = data.len();
            for (at, value) in damage {
                // Half the damage in the first 4 KiB, where the headers are.
                let at = if value & 1 == 0 { at % len.min(4096) } else { at % len };
                data[at] = value;
            }
            if let Ok(object) = Object::parse(data.as_slice()) {
                proptest::prop_assert!(well_formed(&object.rows));
            }
        }
    }

    proptest::proptest! {
        // Each case evaluates a whole C library's `.eh_frame`.
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

        /// A real `.eh_frame` with a damaged `.eh_frame_hdr` beside it: rows or an error, never
        /// a panic, a hang, or rows out of order.
        #[test]
        fn damaged_eh_frame_hdr_never_panics(
            damage in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..24),
        ) {
            // A distribution's C library: a few thousand FDEs, not this binary's 100,000.
            static LIBC: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let data = LIBC.get_or_init(|| std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").expect("a libc.so.6"));
            let elf = object::File::parse(data.as_slice()).expect("parse libc");
            let section = |name| {
                let s = elf.section_by_name(name).expect("the section");
                (s.address(), s.data().expect("its bytes"))
            };
            let (address, bytes) = section(".eh_frame");
            let (hdr_address, hdr) = section(".eh_frame_hdr");
            let mut hdr = hdr.to_vec();
            let len = hdr.len();
            for (at, value) in damage {
                // Half the damage in the header and the first entries.
                let at = if value & 1 == 0 { at % len.min(64) } else { at % len };
                hdr[at] = value;
            }
            let bases = BaseAddresses::default().set_eh_frame(address).set_eh_frame_hdr(hdr_address);
            let mut eh_frame = EhFrame::new(bytes, LittleEndian);
            eh_frame.set_address_size(8);
            if let Some(fdes) = fdes_by_address(&hdr, address, &bases) {
                proptest::prop_assert!(fdes.offsets.len() <= len / 8);
                if let Ok((rows, _)) = collected(&eh_frame, &bases, fdes, 2) {
                    proptest::prop_assert!(well_formed(&rows));
                }
            }
        }
    }
}
