//! The host as reports and caches name it: CPU model, vector extensions,
//! TSC frequency. The benchmark reports it; the tuning cache keys entries
//! by it.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::timing;

/// The machine of a benchmark run.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    /// The CPU model, as the OS reports it.
    pub cpu: String,
    /// The architecture and the vector extensions the host has.
    pub isa: String,
    /// Ticks per second of the clock cycles are counted with, measured.
    pub tsc_hz: f64,
}

impl Machine {
    /// Reads the CPU model and extensions and calibrates the TSC against
    /// the OS's monotonic clock (about 60 ms).
    pub fn detect() -> Machine {
        Machine { cpu: cpu_model(), isa: isa(), tsc_hz: tsc_hz() }
    }
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn isa() -> String {
    let mut features = vec!["x86_64"];
    macro_rules! detect {
        ($($f:tt),*) => {
            $(if std::is_x86_feature_detected!($f) { features.push($f); })*
        };
    }
    detect!("sse4.2", "avx", "avx2", "fma", "avx512f");
    features.join(" ")
}

#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn isa() -> String {
    std::env::consts::ARCH.to_string()
}

/// TSC ticks per second: the median of three 20 ms windows timed by both
/// clocks. (The TSC rate is constant on the target machines; the kernel
/// does not export it in a portable place.)
fn tsc_hz() -> f64 {
    let rates = crate::stats::sorted((0..3).map(|_| {
        let start = Instant::now();
        let c0 = timing::cycles();
        std::thread::sleep(Duration::from_millis(20));
        let c1 = timing::cycles();
        c1.saturating_sub(c0) as f64 / start.elapsed().as_secs_f64()
    }));
    crate::stats::quantile(&rates, 0.5).expect("three windows")
}
