//! `Kernel`: the safe handle to compiled code, its weight packing, and `run`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cranelift_jit::JITModule;
use serde::Serialize;

use crate::codegen::Plan;
use crate::complexity::Complexity;
use crate::error::{Error, Result};
use crate::schedule::{Schedule, Strategy};
use crate::spec::{Op, ValidSpec};
use crate::timing;

/// The generated function: `(x, w, bias, y, begin, end)`, see
/// [`crate::codegen`].
pub(crate) type KernelFn =
    unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64, i64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A compiled convolution for one spec and schedule. Dropping it frees its
/// code; no pointer to the code leaves it.
pub struct Kernel {
    id: u64,
    spec: ValidSpec,
    schedule: Schedule,
    plan: Plan,
    /// Owns the code `function` points into; freed on drop.
    module: Option<JITModule>,
    function: KernelFn,
    compile_time: Duration,
    /// The zero-bordered padded input copy, kept between runs.
    scratch: Mutex<Vec<f32>>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("spec", &self.spec.to_string())
            .field("schedule", &self.schedule)
            .field("compile_time", &self.compile_time)
            .finish()
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: `function` is the only pointer into the module's memory
            // and it dies with `self`.
            unsafe { module.free_memory() };
        }
    }
}

/// Weights and bias in a kernel's layout, made once by [`Kernel::pack`].
#[derive(Clone, Debug)]
pub struct PackedWeights {
    kernel: u64,
    weights: Vec<f32>,
    bias: Vec<f32>,
}

/// What one timed run cost.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RunStats {
    /// TSC ticks of the run (layout copies included).
    pub cycles: u64,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// `macs_valid` per TSC tick.
    pub macs_per_cycle: f64,
    /// The clock the cycles come from.
    pub clock: &'static str,
}

impl Kernel {
    pub(crate) fn new(
        spec: ValidSpec,
        schedule: Schedule,
        plan: Plan,
        module: JITModule,
        function: KernelFn,
        compile_time: Duration,
    ) -> Kernel {
        Kernel {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            spec,
            schedule,
            plan,
            module: Some(module),
            function,
            compile_time,
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// The spec this kernel computes.
    pub fn spec(&self) -> &ValidSpec {
        &self.spec
    }
    /// The schedule it was compiled with.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    /// How long compilation took (lowering, Cranelift, linking).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Packs PyTorch-layout weights and the bias (present exactly when the
    /// spec has one) into this kernel's layout: per work item, per input
    /// channel, per tap, a block of `lanes` output channels, zero past the
    /// channel tail.
    pub fn pack(&self, weight: &[f32], bias: Option<&[f32]>) -> Result<PackedWeights> {
        let spec = &self.spec;
        spec.check_operands(spec.input_len(), weight.len(), bias.map(<[f32]>::len))?;
        let lanes = self.plan.lanes;
        let taps = spec.kernel()[0] * spec.kernel()[1];
        let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
        let mut w = vec![0.0f32; self.plan.items * cig * taps * lanes];
        let mut b = vec![0.0f32; self.plan.items * lanes];
        for item in 0..self.plan.items {
            for lane in 0..lanes {
                // This lane's output channel, and the PyTorch index of its
                // weight for input channel 0 of the group and tap 0, with the
                // step between consecutive input channels.
                let (oc, first, channel_step) = match self.schedule.strategy {
                    Strategy::Direct => {
                        let blocks = cog.div_ceil(lanes);
                        let (g, ocg) = (item / blocks, (item % blocks) * lanes + lane);
                        if ocg >= cog {
                            continue;
                        }
                        let oc = g * cog + ocg;
                        match spec.op() {
                            // [C_out, C_in/g, kh, kw]
                            Op::Conv2d => (oc, oc * cig * taps, taps),
                            // [C_in, C_out/g, kh, kw]
                            Op::ConvTranspose2d => (oc, (g * cig * cog + ocg) * taps, cog * taps),
                        }
                    }
                    Strategy::Depthwise => {
                        // One input channel per group: both layouts hold the
                        // weights of output channel oc at oc·taps.
                        let (cb, k) = (item / cog, item % cog);
                        let g = cb * lanes + lane;
                        if g >= spec.groups() {
                            continue;
                        }
                        let oc = g * cog + k;
                        (oc, oc * taps, taps)
                    }
                };
                if let Some(bias) = bias {
                    b[item * lanes + lane] = bias[oc];
                }
                for c in 0..cig {
                    let src = first + c * channel_step;
                    let dst = (item * cig + c) * taps * lanes + lane;
                    for t in 0..taps {
                        w[dst + t * lanes] = weight[src + t];
                    }
                }
            }
        }
        Ok(PackedWeights { kernel: self.id, weights: w, bias: b })
    }

    /// Computes the output of `input` (NCHW) with packed weights into
    /// `output` (NCHW). Every length, and that `weights` were packed by this
    /// kernel, is checked before the compiled code runs.
    pub fn run(&self, input: &[f32], weights: &PackedWeights, output: &mut [f32]) -> Result<()> {
        let spec = &self.spec;
        spec.check_operands(
            input.len(),
            spec.weight_len(),
            spec.has_bias().then_some(spec.out_channels()),
        )?;
        spec.check_output(output.len())?;
        if weights.kernel != self.id {
            return Err(Error::ForeignWeights);
        }
        let image_in = spec.in_channels() * spec.height() * spec.width();
        let image_out = spec.out_channels() * spec.out_height() * spec.out_width();
        let needs_copy = self.plan.pad != [0; 4] || self.plan.blocked_input;
        // The padded copy's borders are zero and stay zero (only the interior
        // is written), so the buffer is zeroed once and reused by later runs.
        // A run that finds it in use by another thread makes its own.
        let mut cached = self.scratch.try_lock().ok();
        let mut local = Vec::new();
        let scratch: &mut Vec<f32> = cached.as_deref_mut().unwrap_or(&mut local);
        if needs_copy && scratch.is_empty() {
            *scratch = vec![0.0f32; self.plan.padded_image_len(spec.in_channels()).max(1)];
        }
        for n in 0..spec.batch() {
            let x = &input[n * image_in..(n + 1) * image_in];
            let y = &mut output[n * image_out..(n + 1) * image_out];
            let x_ptr = if needs_copy {
                self.copy_padded(x, scratch);
                scratch.as_ptr()
            } else {
                x.as_ptr()
            };
            // SAFETY: `function` was generated for `self.plan`: it reads
            // `padded_image_len` elements from `x_ptr` (the scratch copy, or
            // the unpadded image when the plan needs no copy, which then has
            // the same length), `items · cig · taps · lanes` weights and
            // `items · lanes` bias values (the lengths `pack` made, checked
            // by the kernel id), and writes only inside the image's output,
            // whose length was checked above. No bounds are checked inside:
            // codegen proves every address in range (see `codegen`).
            unsafe {
                (self.function)(
                    x_ptr,
                    weights.weights.as_ptr(),
                    weights.bias.as_ptr(),
                    y.as_mut_ptr(),
                    0,
                    self.plan.items as i64,
                );
            }
        }
        Ok(())
    }

    /// Like [`Kernel::run`], also measuring the run.
    pub fn run_with_stats(
        &self,
        input: &[f32],
        weights: &PackedWeights,
        output: &mut [f32],
    ) -> Result<RunStats> {
        let (result, m) = timing::measure(|| self.run(input, weights, output));
        result?;
        let macs = Complexity::of(&self.spec).macs_valid;
        let stats = RunStats {
            cycles: m.cycles,
            wall: m.wall,
            macs_per_cycle: m.macs_per_cycle(macs),
            clock: timing::CLOCK,
        };
        log::info!(
            "ran {} in {:?}: {:.2} MACs/cycle ({})",
            self.spec,
            stats.wall,
            stats.macs_per_cycle,
            stats.clock
        );
        Ok(stats)
    }

    /// Copies one image into the plan's padded (and maybe channel-blocked)
    /// layout. The borders of `scratch` are zero and stay zero: only the
    /// interior is written.
    fn copy_padded(&self, x: &[f32], scratch: &mut [f32]) {
        let (h, w) = (self.spec.height(), self.spec.width());
        let [hp, wp] = self.plan.padded;
        let [top, left, _, _] = self.plan.pad;
        for c in 0..self.spec.in_channels() {
            for row in 0..h {
                let src = &x[(c * h + row) * w..(c * h + row + 1) * w];
                if self.plan.blocked_input {
                    let (block, lane) = (c / 4, c % 4);
                    let base = ((block * hp + row + top) * wp + left) * 4 + lane;
                    for (i, &v) in src.iter().enumerate() {
                        scratch[base + 4 * i] = v;
                    }
                } else {
                    let base = (c * hp + row + top) * wp + left;
                    scratch[base..base + w].copy_from_slice(src);
                }
            }
        }
    }
}
