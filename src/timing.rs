//! Cycle counting. Hardware performance counters are not available in the
//! VMs convjit is developed on, so cycles are read from the time-stamp
//! counter (`rdtsc`), which ticks at a constant rate independent of the core
//! clock. Every figure called "MACs per cycle" is per TSC tick.

use std::time::{Duration, Instant};

/// The name of the clock that [`cycles`] reads, for reports.
pub const CLOCK: &str = "TSC (rdtsc)";

/// The current value of the time-stamp counter.
#[cfg(target_arch = "x86_64")]
pub fn cycles() -> u64 {
    // SAFETY: `rdtsc` is available on every x86-64 CPU and has no preconditions.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Without a TSC, nanoseconds stand in for ticks.
#[cfg(not(target_arch = "x86_64"))]
pub fn cycles() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The cost of one timed call: TSC ticks and wall time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// TSC ticks.
    pub cycles: u64,
    /// Wall-clock time.
    pub wall: Duration,
}

impl Measurement {
    /// MACs per TSC tick for `macs` multiply-adds.
    pub fn macs_per_cycle(&self, macs: u64) -> f64 {
        macs as f64 / self.cycles.max(1) as f64
    }
}

/// Runs `f` once and measures it.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, Measurement) {
    let start = Instant::now();
    let c0 = cycles();
    let out = f();
    let c1 = cycles();
    let wall = start.elapsed();
    (out, Measurement { cycles: c1.saturating_sub(c0), wall })
}
