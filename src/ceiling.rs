//! The measured ceiling: how many f32 MACs per TSC tick convjit's code can
//! do on this machine, now — with the widest vector ISA the host has, and
//! with Cranelift's f32x4 beside it.
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
//!
//! On an AVX2 or AVX-512 host the ceiling is the assembled register tile
//! of `codegen::wide` — the conv kernels' own emitter — at the shape the
//! heuristic gives dense layers ([`WIDE_ACCUMULATORS`] accumulators of one
//! weight vector), its kernel-row loop running [`WIDE_ROWS`] times over
//! the same [`WIDE_TAPS`] taps, so its data too stays in L1.

use serde::Serialize;

use crate::abi::{CeilingFn, Code, TileFn};
use crate::codegen;
use crate::codegen::wide::{self, Form, Taps, Tile};
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::target::Isa;
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
/// Accumulators of the assembled ceiling tile.
pub const WIDE_ACCUMULATORS: usize = 14;
/// Taps per kernel row of the assembled ceiling tile.
pub const WIDE_TAPS: usize = 16;
/// Kernel-row iterations per call of the assembled ceiling tile.
pub const WIDE_ROWS: usize = 256;
/// Calls of the assembled tile per timed sample.
const WIDE_CALLS: u64 = 24;

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

/// Compiles the microkernels for `compiler`'s widest vector ISA and
/// measures them: 15 samples in a row. The ceiling of that ISA.
pub fn measure(compiler: &Compiler) -> Result<Ceiling> {
    let mut meter = Meter::new(compiler)?;
    let samples: Vec<f64> = (0..SAMPLES).map(|_| meter.sample().widest).collect();
    let ceiling = Ceiling::of(&samples);
    log::info!("measured ceiling ({}): {ceiling:?}", meter.isa());
    Ok(ceiling)
}

/// One sample of each ceiling, MACs per TSC tick.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// With the widest vector ISA the meter's compiler has.
    pub widest: f64,
    /// With Cranelift's f32x4 tile (the same figure as `widest` when that
    /// is the widest).
    pub f32x4: f64,
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
    /// The assembled tile, when the widest ISA is not f32x4.
    wide: Option<Wide>,
}

impl Meter {
    /// Compiles the microkernels (Cranelift's f32x4, and the assembled
    /// tile of `compiler`'s widest vector ISA when it is wider) and warms
    /// them up.
    pub fn new(compiler: &Compiler) -> Result<Meter> {
        let isa = compiler.vector_isa();
        let mut meter = Meter {
            microkernel: Microkernel::compile(compiler)?,
            x: (0..STEPS * ACCUMULATORS).map(|i| (i % 7) as f32 * 1e-3).collect(),
            w: (0..STEPS * 4).map(|i| (i % 5) as f32 * 1e-3).collect(),
            out: vec![0.0f32; ACCUMULATORS * 4],
            wide: if isa.is_assembled() { Some(Wide::compile(compiler, isa)?) } else { None },
        };
        meter.call(PASSES / 8); // warm-up: page in the code, wake the core
        if let Some(wide) = &mut meter.wide {
            wide.call(WIDE_CALLS / 4);
        }
        Ok(meter)
    }

    /// The widest vector ISA it measures.
    pub fn isa(&self) -> Isa {
        self.wide.as_ref().map_or(Isa::Sse, |w| w.tile.isa)
    }

    /// One timed sample of each ceiling, MACs per TSC tick.
    pub fn sample(&mut self) -> Sample {
        let ((), m) = timing::measure(|| self.call(PASSES));
        std::hint::black_box(&self.out);
        let f32x4 = m.macs_per_cycle(PASSES * MACS_PER_PASS);
        let widest = match &mut self.wide {
            Some(wide) => {
                let ((), m) = timing::measure(|| wide.call(WIDE_CALLS));
                std::hint::black_box(&wide.acc);
                m.macs_per_cycle(WIDE_CALLS * wide.macs_per_call())
            }
            None => f32x4,
        };
        Sample { widest, f32x4 }
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

/// The assembled ceiling tile, its code and its data.
struct Wide {
    tile: Tile,
    /// Owns the memory `function` points into.
    _code: Code,
    function: TileFn,
    x: Vec<f32>,
    w: Vec<f32>,
    bias: Vec<f32>,
    acc: Vec<f32>,
}

impl Wide {
    /// The ceiling tile of `isa`: [`WIDE_ACCUMULATORS`] consecutive pixels
    /// broadcast against one weight vector, [`WIDE_TAPS`] taps a kernel
    /// row, the row loop run [`WIDE_ROWS`] times over the same row.
    fn compile(compiler: &Compiler, isa: Isa) -> Result<Wide> {
        let vb = isa.bytes() as i64;
        let tap_x = WIDE_ACCUMULATORS as i64 * 4;
        let tile = Tile {
            isa,
            vectors: 1,
            members: 1,
            positions: (0..WIDE_ACCUMULATORS as i64).map(|q| q * 4).collect(),
            channels: 1,
            unroll: 1,
            plane: 0,
            w_channel: 0,
            taps: Taps {
                rows: WIDE_ROWS,
                row_step: (0, 0),
                taps: (0..WIDE_TAPS as i64).map(|t| (t * vb, t * tap_x)).collect(),
            },
            stores: None,
            form: Form::Channels,
            masks: Vec::new(),
            deinterleave: false,
        };
        let (code, intended) = wide::assemble(&tile)?;
        wide::audit(&code, &intended)
            .map_err(|e| Error::Jit(format!("the ceiling tile failed its audit: {e}")))?;
        let (owner, pointer) = compiler.define_assembled(&code)?;
        // SAFETY: the code is a `TileFn` (`wide::signature`, System V, which
        // `extern "C"` is on the hosts with these ISAs); `owner` owns it.
        let function = unsafe { TileFn::from_code(pointer) };
        let [x, w, _] = tile.footprint();
        let floats = |bytes: i64| (bytes as usize).div_ceil(4);
        Ok(Wide {
            x: (0..floats(x.1)).map(|i| (i % 7) as f32 * 1e-3).collect(),
            w: (0..floats(w.1)).map(|i| (i % 5) as f32 * 1e-3).collect(),
            bias: vec![0.0; isa.lanes()],
            acc: vec![0.0; tile.acc_bytes() / 4],
            tile,
            _code: owner,
            function,
        })
    }

    fn macs_per_call(&self) -> u64 {
        let t = &self.tile;
        (t.taps.rows * t.taps.taps.len() * t.accumulators() * t.isa.lanes()) as u64
    }

    fn call(&mut self, calls: u64) {
        for _ in 0..calls {
            // SAFETY: the tile reads its footprint, inside `x`, `w` and
            // `bias` as allocated in `compile` (offsets from 0), and writes
            // `acc_bytes` of `acc`; it has no stores, so no output.
            unsafe {
                self.function.call(
                    self.x.as_ptr(),
                    self.w.as_ptr(),
                    self.bias.as_ptr(),
                    self.acc.as_mut_ptr(),
                    std::ptr::null_mut(),
                    0,
                )
            }
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

    /// The assembled ceiling tile, when the host has a wider ISA, does
    /// the MACs it counts: every accumulator lane is the sum over its rows
    /// and taps of pixel × weight.
    #[test]
    fn the_wide_ceiling_tile_computes_what_it_counts() {
        let compiler = Compiler::host().unwrap();
        let isa = compiler.vector_isa();
        if !isa.is_assembled() {
            return;
        }
        let mut wide = Wide::compile(&compiler, isa).unwrap();
        for (i, x) in wide.x.iter_mut().enumerate() {
            *x = (i % 5) as f32 - 2.0;
        }
        for (i, w) in wide.w.iter_mut().enumerate() {
            *w = (i % 3) as f32 - 1.0;
        }
        wide.call(1);
        let lanes = isa.lanes();
        for q in 0..WIDE_ACCUMULATORS {
            for lane in 0..lanes {
                let dot: f32 = (0..WIDE_TAPS)
                    .map(|t| wide.x[t * WIDE_ACCUMULATORS + q] * wide.w[t * lanes + lane])
                    .sum();
                // Small integers: every partial sum is exact in f32.
                assert_eq!(wide.acc[q * lanes + lane], WIDE_ROWS as f32 * dot, "{q} {lane}");
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
