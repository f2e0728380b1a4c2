//! The measured ceiling: how many f32 MACs per TSC tick Cranelift code can
//! do on this machine, now.
//!
//! A benchmark figure alone says little on a shared, frequency-scaling VM; as
//! a fraction of what the best code Cranelift emits reaches in the same run,
//! it says how much of the machine a kernel uses and stays comparable across
//! runs. The microkernel is the best shape in `CRANELIFT.md`: one f32x4
//! weight vector times [`ACCUMULATORS`] fresh single-use broadcasts of the
//! input per reduction step (so each broadcast folds into a
//! `vbroadcastss mem`), accumulators carried as block parameters through a
//! top-tested loop, the reduction unrolled [`UNROLL`]× with the accumulator
//! order reversed on odd steps. Its data (3 KiB of input, 1 KiB of weights)
//! stays in L1, so nothing but the FMA pipes limits it.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder, MemFlagsData, Signature, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::timing;

/// f32x4 accumulators of the microkernel (CRANELIFT.md: 12–14 of the 16
/// xmm registers; one more holds the weight vector).
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

/// `fn(x, w, out, passes)`: `passes` times over `STEPS` reduction steps,
/// then the accumulators are stored to `out` (so none of the work is dead).
type CeilingFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, i64);

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
            (self.microkernel.function)(
                self.x.as_ptr(),
                self.w.as_ptr(),
                self.out.as_mut_ptr(),
                passes as i64,
            )
        }
    }
}

/// The compiled microkernel; frees its code on drop.
struct Microkernel {
    module: Option<JITModule>,
    function: CeilingFn,
}

impl Drop for Microkernel {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: `function` is the only pointer into the module's memory
            // and it dies with `self`.
            unsafe { module.free_memory() };
        }
    }
}

impl Microkernel {
    fn compile(compiler: &Compiler) -> Result<Microkernel> {
        let isa = compiler.isa().clone();
        let ptr = isa.pointer_type();
        let mut module = JITModule::new(JITBuilder::with_isa(isa.clone(), default_libcall_names()));
        let mut ctx = module.make_context();
        let mut sig = Signature::new(isa.default_call_conv());
        sig.params.extend([ptr, ptr, ptr, types::I64].map(AbiParam::new));
        ctx.func.signature = sig.clone();
        emit(&mut ctx.func, isa.frontend_config(), compiler.has_fma());
        let result = (|| {
            let id = module
                .declare_function("ceiling", Linkage::Export, &sig)
                .map_err(|e| Error::Jit(e.to_string()))?;
            module.define_function(id, &mut ctx).map_err(|e| Error::Jit(format!("{e:?}")))?;
            module.finalize_definitions().map_err(|e| Error::Jit(e.to_string()))?;
            Ok(module.get_finalized_function(id))
        })();
        match result {
            // SAFETY: the function was built with exactly `CeilingFn`'s
            // signature in the ISA's default (System V) calling convention.
            Ok(code) => Ok(Microkernel {
                module: Some(module),
                function: unsafe { std::mem::transmute::<*const u8, CeilingFn>(code) },
            }),
            Err(e) => {
                // SAFETY: no pointer into the module's memory escaped.
                unsafe { module.free_memory() };
                Err(e)
            }
        }
    }
}

/// The IR: an outer loop over passes around an inner loop over
/// `STEPS / UNROLL` unrolled groups of reduction steps.
fn emit(
    func: &mut cranelift_codegen::ir::Function,
    frontend: cranelift_codegen::isa::TargetFrontendConfig,
    has_fma: bool,
) {
    let mut fctx = FunctionBuilderContext::new();
    let mut fb = FunctionBuilder::new(func, &mut fctx);
    let flags = MemFlagsData::new().with_notrap();
    let vec = types::F32X4;

    let entry = fb.create_block();
    fb.append_block_params_for_function_params(entry);
    let outer = fb.create_block();
    let inner = fb.create_block();
    let body = fb.create_block();
    let latch = fb.create_block();
    let exit = fb.create_block();
    let ptr = fb.func.signature.params[0].value_type;
    let passes = fb.append_block_param(outer, types::I64);
    let (xp, wp, steps) = (
        fb.append_block_param(inner, ptr),
        fb.append_block_param(inner, ptr),
        fb.append_block_param(inner, types::I64),
    );
    let acc_params = |fb: &mut FunctionBuilder, block| {
        (0..ACCUMULATORS).map(|_| fb.append_block_param(block, vec)).collect::<Vec<_>>()
    };
    let outer_acc = acc_params(&mut fb, outer);
    let inner_acc = acc_params(&mut fb, inner);
    let latch_acc = acc_params(&mut fb, latch);
    let exit_acc = acc_params(&mut fb, exit);
    let args = |head: &[_], acc: &[_]| -> Vec<BlockArg> {
        head.iter().chain(acc).copied().map(BlockArg::Value).collect()
    };

    fb.switch_to_block(entry);
    let [x, w, out, n] = fb.block_params(entry).to_vec()[..] else { unreachable!() };
    let zero = fb.ins().f32const(0.0);
    let zero = fb.ins().splat(vec, zero);
    fb.ins().jump(outer, &args(&[n], &[zero; ACCUMULATORS]));

    // outer(passes, acc): while passes > 0, run the inner loop.
    fb.switch_to_block(outer);
    let more = fb.ins().icmp_imm_s(IntCC::SignedGreaterThan, passes, 0);
    let steps0 = fb.ins().iconst(types::I64, (STEPS / UNROLL) as i64);
    fb.ins().brif(more, inner, &args(&[x, w, steps0], &outer_acc), exit, &args(&[], &outer_acc));

    // inner(x, w, steps, acc): top-tested.
    fb.switch_to_block(inner);
    fb.ins().brif(steps, body, &[], latch, &args(&[], &inner_acc));

    fb.switch_to_block(body);
    let mut acc = inner_acc.clone();
    for u in 0..UNROLL {
        let wv = fb.ins().load(vec, flags, wp, (u * 16) as i32);
        let order: Vec<usize> = if u % 2 == 0 {
            (0..ACCUMULATORS).collect()
        } else {
            (0..ACCUMULATORS).rev().collect()
        };
        for j in order {
            let offset = ((u * ACCUMULATORS + j) * 4) as i32;
            let s = fb.ins().load(types::F32, flags, xp, offset);
            let xv = fb.ins().splat(vec, s);
            acc[j] = if has_fma {
                fb.ins().fma(xv, wv, acc[j])
            } else {
                let p = fb.ins().fmul(xv, wv);
                fb.ins().fadd(p, acc[j])
            };
        }
    }
    let xp_next = fb.ins().iadd_imm_s(xp, (UNROLL * ACCUMULATORS * 4) as i64);
    let wp_next = fb.ins().iadd_imm_s(wp, (UNROLL * 16) as i64);
    let steps_next = fb.ins().iadd_imm_s(steps, -1);
    fb.ins().jump(inner, &args(&[xp_next, wp_next, steps_next], &acc));

    // latch(acc): one pass done.
    fb.switch_to_block(latch);
    let passes_next = fb.ins().iadd_imm_s(passes, -1);
    fb.ins().jump(outer, &args(&[passes_next], &latch_acc));

    fb.switch_to_block(exit);
    for (j, &a) in exit_acc.iter().enumerate() {
        fb.ins().store(flags, a, out, (j * 16) as i32);
    }
    fb.ins().return_(&[]);
    fb.seal_all_blocks();
    fb.finalize(frontend);
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
        unsafe { (microkernel.function)(x.as_ptr(), w.as_ptr(), out.as_mut_ptr(), passes) };
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
