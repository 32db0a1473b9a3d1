//! The clock that drives CPU sampling: a `cpu-clock` perf event on every CPU, with the eBPF
//! sampling program attached, whose period is drawn anew at random every few periods.
//!
//! Why not a fixed period: a fixed period aliases with work that repeats at a commensurate
//! period, and the graph then tilts by the phase of a loop. Measured here on the groundtruth
//! workload (rounds of about 2.0 ms: 60 % in `cpu_60`, 30 % in `cpu_30`, 10 % in `cpu_10`)
//! sampled at a fixed 499 Hz: 52.6 / 42.0 / 5.4 % of 1,991 samples, 6 standard errors off, while
//! 490 Hz and 503 Hz read true. Any program with a periodic main loop (a game or audio frame, a
//! batch of fixed size, a poll loop) can meet this.
//!
//! How: every [`BLOCK_PERIODS`] mean periods (at least [`MIN_BLOCK`]), each CPU's period is set
//! to `1 / f`, `f` drawn uniformly from `[1 - SPREAD, 1 + SPREAD]` times the frequency asked for.
//! Simulated over loop periods from 0.3 to 5 sampling periods, the share of a function then varies
//! between runs as independent samples would (binomial), where a fixed period ranges up to 40
//! times that.
//!
//! Every sample still stands for the same CPU time: each CPU's samples are weighed by its
//! current period over the asked one (the eBPF map `sample_weight`, in
//! [`eagle_ebpf::SAMPLE_UNIT`]s per sample; the agent turns counts back into samples at the asked
//! frequency). Without, a function that ran during blocks of short periods would get more
//! samples than its CPU time: a process's count varied by 4 % between runs where a fixed period
//! varied by 1 %, and shares of work that changes slower than a block (a process alone on its CPU
//! beside another) would vary by more than independent samples do. The weight also makes up for
//! what each redraw loses: `PERF_EVENT_IOC_PERIOD` restarts the CPU's timer with the new period,
//! so the period under way is lost, on average half a period per block (the redraw comes at an
//! instant independent of the timer); the weight is raised by `block / (block - period / 2)`.
//!
//! Why the events are opened here and not by aya's `PerfEvent::attach`: aya keeps the perf
//! event's descriptor to itself, and a period can only be changed through it. The program is
//! attached with `PERF_EVENT_IOC_SET_BPF`, which every kernel with eBPF perf programs has.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use aya_obj::generated::{
    perf_event_attr, perf_sw_ids, perf_type_id, PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_PERIOD, PERF_EVENT_IOC_SET_BPF,
};
use rand::Rng;

/// Mean sampling periods between two draws of each CPU's period. Fewer means more `ioctl`s (one
/// per CPU per block, each an interrupt on that CPU); more means longer runs of samples at one
/// period, which alias as a fixed period does while they last. Ten keeps the variance of shares
/// at that of independent samples in simulation (see the module's comment).
pub const BLOCK_PERIODS: u32 = 10;
/// The shortest block: above 1 kHz, blocks grow to this rather than wake the agent more often.
pub const MIN_BLOCK: Duration = Duration::from_millis(10);
/// How far a drawn frequency strays from the one asked for, as a fraction of it. Wide, because
/// a block is harmful only when its period sits near a multiple of the workload's, and the wider
/// the draw, the rarer that is (0.5 measured 1.3 times the binomial spread at worst, 0.8 none
/// above it).
pub const SPREAD: f64 = 0.8;

/// `PERF_FLAG_FD_CLOEXEC` of `linux/perf_event.h`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// The per-CPU clocks of one run, and the thread that redraws their periods. Dropping it stops
/// sampling (closing a perf event detaches its program).
pub struct CpuClocks {
    /// One event per CPU; shared with the thread, so that they outlive it if it stops early.
    _events: Arc<Vec<OwnedFd>>,
    stop: Option<mpsc::Sender<()>>,
    dither: Option<JoinHandle<()>>,
    failed: Arc<AtomicBool>,
}

impl CpuClocks {
    /// Opens a `cpu-clock` event on each of `cpus` counting every process, attaches `program` (a
    /// loaded perf-event program) to each, and starts redrawing their periods around
    /// `frequency_hz`, writing each CPU's weight into `weights` (the program's `sample_weight`).
    pub fn start(
        program: impl AsFd,
        mut weights: PerCpuArray<MapData, u32>,
        cpus: &[u32],
        frequency_hz: u64,
    ) -> Result<Self, ClockError> {
        let frequency_hz = frequency_hz.max(1) as f64;
        let block = Duration::from_secs_f64(f64::from(BLOCK_PERIODS) / frequency_hz).max(MIN_BLOCK);
        let draw = PeriodDraw { frequency_hz, block };
        let possible = aya::util::nr_cpus().map_err(|(what, e)| ClockError { action: what.to_owned(), source: e })?;
        let mut rng = rand::rng();
        let mut periods: Vec<(u32, Period)> = cpus.iter().map(|&cpu| (cpu, draw.period(&mut rng))).collect();
        // Weights first: a sample must never find its CPU's clock running without one.
        write_weights(&mut weights, possible, &periods)
            .map_err(ClockError::doing("write the sampling weights".to_string()))?;
        let mut events = Vec::with_capacity(cpus.len());
        for &(cpu, period) in &periods {
            let event = open_cpu_clock(cpu, period.ns)
                .map_err(ClockError::doing(format!("open the CPU clock perf event on CPU {cpu}")))?;
            ioctl(&event, PERF_EVENT_IOC_SET_BPF, program.as_fd().as_raw_fd() as libc::c_ulong)
                .map_err(ClockError::doing(format!("attach the sampling program to the perf event on CPU {cpu}")))?;
            events.push(event);
        }
        for (event, cpu) in events.iter().zip(cpus) {
            ioctl(event, PERF_EVENT_IOC_ENABLE, 0)
                .map_err(ClockError::doing(format!("start the CPU clock perf event on CPU {cpu}")))?;
        }
        let events = Arc::new(events);
        let failed = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        if events.is_empty() {
            // Off-CPU mode: no clock to redraw.
            return Ok(Self { _events: events, stop: None, dither: None, failed });
        }
        let dither = {
            let failed = Arc::clone(&failed);
            let events = Arc::clone(&events);
            std::thread::Builder::new()
                .name("eagle-dither".into())
                .spawn(move || {
                    let mut rng = rand::rng();
                    // Ends when the sender is dropped, or at the first failure (the periods then
                    // stay as they are: still random, no longer redrawn, weighed as drawn).
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(draw.block) {
                        for (_, period) in periods.iter_mut() {
                            *period = draw.period(&mut rng);
                        }
                        // The weights first, then the periods, CPU by CPU: a CPU's samples
                        // between the two (microseconds of a block of milliseconds) take the new
                        // weight at the old period.
                        if write_weights(&mut weights, possible, &periods).is_err() {
                            failed.store(true, Ordering::Relaxed);
                            return;
                        }
                        for (event, (_, period)) in events.iter().zip(&periods) {
                            let mut ns = period.ns;
                            if ioctl(event, PERF_EVENT_IOC_PERIOD, &mut ns as *mut u64 as libc::c_ulong).is_err() {
                                failed.store(true, Ordering::Relaxed);
                                return;
                            }
                        }
                    }
                })
                .map_err(ClockError::doing("start the thread that redraws sampling periods".to_string()))?
        };
        Ok(Self { _events: events, stop: Some(stop), dither: Some(dither), failed })
    }

    /// Whether redrawing a period failed at some point, after which the periods were left as
    /// they were.
    pub fn dither_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
}

impl Drop for CpuClocks {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(dither) = self.dither.take() {
            let _ = dither.join();
        }
    }
}

/// What could not be done while starting the clocks, and why.
#[derive(Debug)]
pub struct ClockError {
    /// What was being done, as "open the CPU clock perf event on CPU 3".
    pub action: String,
    pub source: io::Error,
}

impl ClockError {
    fn doing(action: String) -> impl FnOnce(io::Error) -> Self {
        move |source| Self { action, source }
    }
}

/// How each block's period is drawn (see the module's comment).
#[derive(Clone, Copy, Debug)]
struct PeriodDraw {
    frequency_hz: f64,
    block: Duration,
}

/// A drawn period, and what each of its samples weighs in [`eagle_ebpf::SAMPLE_UNIT`]s.
#[derive(Clone, Copy, Debug)]
struct Period {
    ns: u64,
    weight: u32,
}

impl PeriodDraw {
    fn period(&self, rng: &mut impl Rng) -> Period {
        let drawn = self.frequency_hz * rng.random_range(1.0 - SPREAD..1.0 + SPREAD);
        let seconds = 1.0 / drawn;
        // Over the asked period, raised for the half period each redraw loses.
        let block = self.block.as_secs_f64();
        let weight = seconds * self.frequency_hz * block / (block - seconds / 2.0).max(seconds / 2.0);
        Period { ns: (seconds * 1e9) as u64, weight: (weight * eagle_ebpf::SAMPLE_UNIT as f64).round() as u32 }
    }
}

/// Writes each CPU's weight (CPUs not sampled keep one sample's worth: they take none).
fn write_weights(
    weights: &mut PerCpuArray<MapData, u32>,
    possible: usize,
    periods: &[(u32, Period)],
) -> io::Result<()> {
    let mut values = vec![eagle_ebpf::SAMPLE_UNIT as u32; possible];
    for &(cpu, period) in periods {
        if let Some(value) = values.get_mut(cpu as usize) {
            *value = period.weight;
        }
    }
    let values = PerCpuValues::try_from(values)?;
    weights.set(0, values, 0).map_err(io::Error::other)
}

/// A disabled `cpu-clock` event counting every process on `cpu`, overflowing every `period_ns`.
fn open_cpu_clock(cpu: u32, period_ns: u64) -> io::Result<OwnedFd> {
    // SAFETY: perf_event_attr is plain data; all-zero is its documented default.
    let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
    attr.type_ = perf_type_id::PERF_TYPE_SOFTWARE as u32;
    attr.config = perf_sw_ids::PERF_COUNT_SW_CPU_CLOCK as u64;
    attr.size = std::mem::size_of::<perf_event_attr>() as u32;
    attr.__bindgen_anon_1.sample_period = period_ns;
    attr.set_disabled(1);
    // SAFETY: the attribute outlives the call; pid -1 with a cpu counts every process there.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const perf_event_attr,
            -1,
            cpu as libc::c_int,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just handed this descriptor over; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

fn ioctl(event: &OwnedFd, request: u32, argument: libc::c_ulong) -> io::Result<()> {
    // SAFETY: `event` is an open perf event; each request used here takes an integer or a
    // pointer to a u64 that outlives the call.
    if unsafe { libc::ioctl(event.as_raw_fd(), request as _, argument) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn weighed_samples_keep_the_cpu_time_at_every_frequency() {
        // A timer as the kernel runs it: at each redraw it restarts with the new period, and
        // the period under way is lost. Redraws come a little late, as a woken thread does.
        // 200,000 blocks: the total's noise is then 0.1 %, a tenth of what is allowed.
        let mut rng = StdRng::seed_from_u64(7);
        for frequency_hz in [99.0, 499.0, 999.0, 4999.0] {
            let block = Duration::from_secs_f64(f64::from(BLOCK_PERIODS) / frequency_hz).max(MIN_BLOCK);
            let draw = PeriodDraw { frequency_hz, block };
            let (mut weighed, mut elapsed) = (0u64, 0u64);
            for _ in 0..200_000 {
                let period = draw.period(&mut rng);
                let length = block.as_nanos() as u64 + rng.random_range(0..200_000);
                // Fires at the redraw + one period, + two periods, ... before the next redraw.
                weighed += (length - 1) / period.ns * u64::from(period.weight);
                elapsed += length;
            }
            let samples = weighed as f64 / eagle_ebpf::SAMPLE_UNIT as f64;
            let expected = elapsed as f64 / 1e9 * frequency_hz;
            assert!(
                (samples / expected - 1.0).abs() < 0.01,
                "{samples:.0} samples weighed for {expected:.0} at {frequency_hz} Hz"
            );
        }
    }

    #[test]
    fn periods_spread_around_the_one_asked_for() {
        let draw = PeriodDraw { frequency_hz: 1000.0, block: MIN_BLOCK };
        let mut rng = StdRng::seed_from_u64(7);
        let periods: Vec<Period> = (0..10_000).map(|_| draw.period(&mut rng)).collect();
        let shortest = periods.iter().min_by_key(|p| p.ns).unwrap();
        let longest = periods.iter().max_by_key(|p| p.ns).unwrap();
        // 1 / 1.8 kHz and 1 / 0.2 kHz, each weighed by its length and the half period lost.
        assert!((550_000..=560_000).contains(&shortest.ns), "shortest {shortest:?}");
        assert!((4_900_000..=5_000_000).contains(&longest.ns), "longest {longest:?}");
        let unit = eagle_ebpf::SAMPLE_UNIT as f64;
        assert!((shortest.weight as f64 / unit - 0.556 * 10.0 / (10.0 - 0.278)).abs() < 0.01, "{shortest:?}");
        assert!((longest.weight as f64 / unit - 5.0 * 10.0 / 7.5).abs() < 0.02, "{longest:?}");
    }
}
