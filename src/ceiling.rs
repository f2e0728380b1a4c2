//! The measured ceiling: how many f32 MACs per TSC tick Cranelift code can
//! do on this machine, now.
//!
//! A benchmark figure alone says little on a shared, frequency-scaling VM; as
//! a fraction of what the best code Cranelift emits reaches in the same run,
//! it says how much of the machine a kernel uses and stays comparable across
//! runs. The microkernel (`codegen::ceiling`) is the shared register tile at
//! its best shape: one weight vector times [`ACCUMULATORS`] fresh
//! single-use broadcasts of the input per reduction step (so each broadcast
//! folds into a `vbroadcastss mem`), accumulators carried as block
//! parameters through a top-tested loop, the reduction unrolled [`UNROLL`]×
//! with the accumulator order reversed on odd steps. Its data (3 KiB of input, 1 KiB of weights)
//! stays in L1, so nothing but the FMA pipes limits it.

use serde::Serialize;

use crate::abi::{CeilingFn, Code};
use crate::codegen;
use crate::error::Result;
use crate::jit::Compiler;
use crate::timing;

/// Vector accumulators of the microkernel (12 to 14 of the 16 registers
/// measured best; one more holds the weight vector).
pub const ACCUMULATORS: usize = 12;
/// Reduction steps per loop iteration.
pub const UNROLL: usize = 4;
/// Reduction steps per pass over the data: 64 steps are 3 KiB of input and
/// 1 KiB of weights, well inside the 32 KiB L1.
const STEPS: usize = 64;
/// MACs of one pass: every step is one FMA (4 lanes) per accumulator.
const MACS_PER_PASS: u64 = (STEPS * ACCUMULATORS * 4) as u64;
/// Passes per timed sample: about 24 M MACs, a few milliseconds.
const PASSES: u64 = 8192;
/// Timed samples; the report is their median.
const SAMPLES: usize = 15;

/// The ceiling as measured.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ceiling {
    /// Median over the samples, MACs per TSC tick: the figure reports divide by.
    pub macs_per_cycle: f64,
    /// The best sample.
    pub best_macs_per_cycle: f64,
    /// The worst sample: the spread shows how noisy the machine is.
    pub worst_macs_per_cycle: f64,
}

/// Compiles the microkernel with `compiler`'s ISA and measures it:
/// 15 samples in a row.
pub fn measure(compiler: &Compiler) -> Result<Ceiling> {
    let mut meter = Meter::new(compiler)?;
    let samples: Vec<f64> = (0..SAMPLES).map(|_| meter.sample()).collect();
    let ceiling = Ceiling::of(&samples);
    log::info!("measured ceiling: {ceiling:?}");
    Ok(ceiling)
}

impl Ceiling {
    /// The median, best and worst of `samples` (MACs per TSC tick; at
    /// least one).
    pub fn of(samples: &[f64]) -> Ceiling {
        let sorted = crate::stats::sorted(samples.iter().copied());
        Ceiling {
            macs_per_cycle: crate::stats::quantile(&sorted, 0.5).unwrap_or(f64::NAN),
            best_macs_per_cycle: sorted.last().copied().unwrap_or(f64::NAN),
            worst_macs_per_cycle: sorted.first().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The compiled microkernel and its data, ready to take samples: a
/// benchmark takes them between its layers, so that the ceiling it divides
/// by saw the same moments of the host as the layers did.
pub struct Meter {
    microkernel: Microkernel,
    x: Vec<f32>,
    w: Vec<f32>,
    out: Vec<f32>,
}

impl Meter {
    /// Compiles the microkernel with `compiler`'s ISA and warms it up.
    pub fn new(compiler: &Compiler) -> Result<Meter> {
        let mut meter = Meter {
            microkernel: Microkernel::compile(compiler)?,
            x: (0..STEPS * ACCUMULATORS).map(|i| (i % 7) as f32 * 1e-3).collect(),
            w: (0..STEPS * 4).map(|i| (i % 5) as f32 * 1e-3).collect(),
            out: vec![0.0f32; ACCUMULATORS * 4],
        };
        meter.call(PASSES / 8); // warm-up: page in the code, wake the core
        Ok(meter)
    }

    /// One timed sample, MACs per TSC tick.
    pub fn sample(&mut self) -> f64 {
        let ((), m) = timing::measure(|| self.call(PASSES));
        std::hint::black_box(&self.out);
        m.macs_per_cycle(PASSES * MACS_PER_PASS)
    }

    fn call(&mut self, passes: u64) {
        // SAFETY: the kernel reads STEPS·ACCUMULATORS floats of `x` and
        // STEPS·4 of `w` per pass and writes ACCUMULATORS·4 floats of
        // `out`: exactly the lengths allocated in `new`.
        unsafe {
            self.microkernel.function.call(
                self.x.as_ptr(),
                self.w.as_ptr(),
                self.out.as_mut_ptr(),
                passes as i64,
            )
        }
    }
}

/// The compiled microkernel, and the code it lives in.
struct Microkernel {
    /// Owns the memory `function` points into.
    _code: Code,
    function: CeilingFn,
}

impl Microkernel {
    fn compile(compiler: &Compiler) -> Result<Microkernel> {
        let isa = compiler.isa();
        let signature = CeilingFn::signature(isa.pointer_type(), isa.default_call_conv());
        let shape =
            codegen::ceiling::Shape { accumulators: ACCUMULATORS, unroll: UNROLL, steps: STEPS };
        let (code, pointer) = compiler.define(signature, |func, target, _| {
            codegen::ceiling::lower(shape, target, func);
            Ok(())
        })?;
        // SAFETY: the function was compiled with `CeilingFn::signature` in
        // the ISA's default calling convention; `code` owns it.
        let function = unsafe { CeilingFn::from_code(pointer) };
        Ok(Microkernel { _code: code, function })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The microkernel does the MACs the ceiling counts: every output lane
    /// is `passes · Σ_k x[k][j] · w[k][lane]`.
    #[test]
    fn microkernel_computes_what_it_counts() {
        let compiler = Compiler::host().unwrap();
        let microkernel = Microkernel::compile(&compiler).unwrap();
        let x: Vec<f32> = (0..STEPS * ACCUMULATORS).map(|i| (i % 11) as f32 - 5.0).collect();
        let w: Vec<f32> = (0..STEPS * 4).map(|i| (i % 3) as f32 - 1.0).collect();
        let mut out = vec![f32::NAN; ACCUMULATORS * 4];
        let passes = 3;
        // SAFETY: the lengths are the ones the kernel reads and writes.
        unsafe { microkernel.function.call(x.as_ptr(), w.as_ptr(), out.as_mut_ptr(), passes) };
        for j in 0..ACCUMULATORS {
            for lane in 0..4 {
                let dot: f32 = (0..STEPS).map(|k| x[k * ACCUMULATORS + j] * w[k * 4 + lane]).sum();
                // Small integers: every partial sum is exact in f32.
                assert_eq!(out[j * 4 + lane], passes as f32 * dot, "accumulator {j} lane {lane}");
            }
        }
    }

    #[test]
    fn measure_reports_ordered_finite_samples() {
        let ceiling = measure(&Compiler::host().unwrap()).unwrap();
        assert!(ceiling.worst_macs_per_cycle > 0.0);
        assert!(ceiling.worst_macs_per_cycle <= ceiling.macs_per_cycle);
        assert!(ceiling.macs_per_cycle <= ceiling.best_macs_per_cycle);
        assert!(ceiling.best_macs_per_cycle.is_finite());
    }
}
