//! `Kernel`: the safe handle to compiled code, its weight packing, and `run`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

mod call;
mod winograd;

pub(crate) use winograd::Layer as WinogradLayer;

use call::{Call, fill_ranges, floats};

use crate::abi::{Code, ConvFn};
use crate::alloc;
use crate::border::Border;
use crate::codegen::Plan;
use crate::codegen::plan::{Bands, pieces};
use crate::complexity::Complexity;
use crate::copy::Copier;
use crate::error::{Error, Result};
use crate::runtime::{self, Kept, Scratch};
use crate::schedule::{Run, Schedule, Split};
use crate::spec::{Op, ValidSpec};
use crate::timing;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The most pieces of each thread's rows when threads share a
/// whole-image copy's rows.
const ROW_PIECES: usize = 4;

/// What a kernel's epilogue does with each output it computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// Stores `act(conv(x) + b)`: the output's previous contents are
    /// never read.
    #[default]
    Store,
    /// Stores `act(conv(x) + b + y)`, where `y` is what the output held
    /// when the run began: a residual added in the register tile before
    /// the activation, as oneDNN's sum post-op and onnxruntime's fused
    /// Conv+Add do. The caller writes the residual into the output before
    /// each run. Kernels of the direct, width and depthwise algorithms
    /// have it; a Winograd kernel, or a transposed layer with output
    /// pixels no tap reaches, does not ([`Epilogue::check`]).
    Sum,
}

impl Epilogue {
    /// Whether a kernel of `spec` compiled with `schedule` can have this
    /// epilogue: the error says why not.
    pub fn check(self, spec: &ValidSpec, schedule: &Schedule) -> Result<()> {
        if self == Epilogue::Store {
            return Ok(());
        }
        if schedule.winograd.is_some() {
            return Err(Error::Unsupported(
                "the sum epilogue on a Winograd kernel (its outputs come from the output \
                 transform, not a register tile's stores)"
                    .into(),
            ));
        }
        if crate::geometry::Geometry::of(spec).holes {
            return Err(Error::Unsupported(format!(
                "the sum epilogue on {spec}: output pixels no tap reaches are filled, not \
                 stored by a register tile"
            )));
        }
        Ok(())
    }
}

/// A compiled convolution for one spec and schedule. Dropping it frees its
/// code; no pointer to the code leaves it.
pub struct Kernel {
    id: u64,
    spec: ValidSpec,
    /// The spec the plan and the code were made for: `spec`, or `spec` on
    /// its planes cut into rows of another length ([`Schedule::lowered`]).
    lowered: ValidSpec,
    schedule: Schedule,
    plan: Plan,
    /// The output rows of every phase, `[first, last)` as the code reads
    /// them, for the calls on whole phases: computed once, with the plan.
    whole: Vec<i64>,
    /// Owns the code `function` points into; freed on drop.
    _code: Code,
    function: ConvFn,
    compile_time: Duration,
    /// Whether the code is the checked lowering, which reads a guard block.
    checked: bool,
    /// The zero-bordered padded copies (one, or one per thread when each
    /// holds a group or a band), kept between runs.
    scratch: Kept<Scratch>,
    /// With Winograd ([`Schedule::winograd`]): the layer's tiles and
    /// transforms (the code computes the batched products), and each
    /// thread's panel buffer, kept between runs.
    winograd: Option<winograd::Layer>,
    panels: Kept<Scratch>,
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

/// Weights and bias in a kernel's layout, made once by [`Kernel::pack`].
#[derive(Clone, Debug)]
pub struct PackedWeights {
    kernel: u64,
    weights: Vec<f32>,
    bias: Vec<f32>,
    /// Per output channel, the activated bias that the output pixels no
    /// tap reaches hold (only when the plan has such holes).
    holes: Vec<f32>,
    /// The outputs to redo exactly after each run when a non-finite weight
    /// meets the padded copy's zeros (see `border`).
    border: Option<Box<Border>>,
    /// A Winograd kernel's bias and the weights as given
    /// (`winograd.rs`); `weights` are then the transformed ones.
    winograd: Option<Box<winograd::Weights>>,
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
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        spec: ValidSpec,
        schedule: Schedule,
        plan: Plan,
        code: Code,
        function: ConvFn,
        compile_time: Duration,
        checked: bool,
        winograd: Option<winograd::Layer>,
    ) -> Kernel {
        let mut whole = vec![0; 2 * plan.geometry.phases.len()];
        fill_ranges(&plan, 0..1, 1, &mut whole);
        Kernel {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            lowered: schedule.lowered(&spec).into_owned(),
            spec,
            schedule,
            plan,
            whole,
            _code: code,
            function,
            compile_time,
            checked,
            scratch: Kept::default(),
            winograd,
            panels: Kept::default(),
        }
    }

    /// The spec this kernel computes.
    pub fn spec(&self) -> &ValidSpec {
        &self.spec
    }
    /// The schedule it was compiled with, and the run it runs with.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Runs this kernel with `run` from now on instead of its schedule's:
    /// the same code, shared among threads another way, without compiling
    /// again. Fails, changing nothing, when `run` cannot share this
    /// kernel's work (its threads are outside 1 to
    /// [`crate::schedule::MAX_THREADS`], or it splits otherwise than its
    /// input copy needs).
    pub fn set_run(&mut self, run: Run) -> Result<()> {
        self.schedule.run_legal(&run)?;
        self.schedule.run = run;
        Ok(())
    }

    /// How long compilation took (lowering, Cranelift, linking).
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Packs PyTorch-layout weights and the bias (present exactly when the
    /// spec has one) into this kernel's layout: per work item, per input
    /// channel, per tap, a block of `lanes` output channels (the channel of
    /// each lane as the algorithm's [`crate::algorithm::Work`] maps it),
    /// zero past the channel tail.
    ///
    /// A Winograd kernel transforms the weights first (`G g Gᵀ`, in f64)
    /// and packs them as its batched products read them.
    pub fn pack(&self, weight: &[f32], bias: Option<&[f32]>) -> Result<PackedWeights> {
        let spec = &self.spec;
        spec.check_operands(spec.input_len(), weight.len(), bias.map(<[f32]>::len))?;
        match &self.winograd {
            Some(layer) => self.pack_winograd(layer, weight, bias),
            None => self.pack_layer(spec, weight, bias),
        }
    }

    /// Packs the weights of `spec`, the layer the code computes (the
    /// kernel's own, or its batched Winograd products), operands checked.
    fn pack_layer(
        &self,
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedWeights> {
        let work = &self.plan.work;
        let lanes = work.lanes;
        let taps = spec.kernel()[0] * spec.kernel()[1];
        let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
        let mut w = alloc::zeroed_f32(work.items * cig * taps * lanes, "the packed weights")?;
        let mut b = alloc::zeroed_f32(work.items * lanes, "the packed bias")?;
        for item in 0..work.items {
            for lane in 0..lanes {
                let Some(oc) = work.channel(item, lane) else { continue };
                // The PyTorch index of output channel oc's weight for input
                // channel 0 of its group and tap 0, and the step between
                // consecutive input channels.
                let (first, channel_step) = match spec.op() {
                    // [C_out, C_in/g, kh, kw]
                    Op::Conv2d => (oc * cig * taps, taps),
                    // [C_in, C_out/g, kh, kw]
                    Op::ConvTranspose2d => {
                        let (g, ocg) = (oc / cog, oc % cog);
                        ((g * cig * cog + ocg) * taps, cog * taps)
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
        let holes = if self.plan.geometry.holes {
            let activation = spec.activation();
            (0..spec.out_channels())
                .map(|oc| activation.apply_f32(bias.map_or(0.0, |b| b[oc])))
                .collect()
        } else {
            Vec::new()
        };
        let border = Border::new(spec, weight, bias)?.map(Box::new);
        Ok(PackedWeights { kernel: self.id, weights: w, bias: b, holes, border, winograd: None })
    }

    /// The threads a run uses: the schedule's, but no more than there are
    /// shares (groups, work items or rows) or cores.
    pub fn threads(&self) -> usize {
        self.threads_of(&self.schedule.run)
    }

    /// The threads `run` uses on this kernel.
    fn threads_of(&self, run: &Run) -> usize {
        if let Some(layer) = &self.winograd {
            return runtime::threads(run.threads, layer.panels);
        }
        let shares = if self.plan.copy_per_group {
            self.plan.groups()
        } else if let Some(bands) = self.plan.bands {
            bands.parts
        } else {
            match self.plan.split(run.split) {
                Split::Items => self.plan.work.items,
                Split::Rows => {
                    self.plan.geometry.phases.iter().map(|p| p.rows.count).max().unwrap_or(1)
                }
            }
        };
        runtime::threads(run.threads, shares)
    }

    /// What the epilogue does with each output ([`Epilogue::Sum`]: adds
    /// what `output` holds when a run begins).
    pub fn epilogue(&self) -> Epilogue {
        if self.plan.sum { Epilogue::Sum } else { Epilogue::Store }
    }

    /// Computes the output of `input` (NCHW) with packed weights into
    /// `output` (NCHW); with [`Epilogue::Sum`], `act(conv + b + y)` where
    /// `y` is what `output` holds (the activation of the sum). Every
    /// length, and that `weights` were packed by this kernel, is checked
    /// before the compiled code runs.
    ///
    /// With [`Kernel::threads`] above 1 the work of each image is shared
    /// among threads (the caller and the process's workers,
    /// `runtime::on_each`): with a whole-image copy ([`crate::schedule::InputCopy`]),
    /// the copy by channel planes and then the output as [`Run::split`]
    /// says (row slices or ranges of work items); with a copy per group or
    /// by bands of rows, whole groups or bands, each thread copying its own.
    pub fn run(&self, input: &[f32], weights: &PackedWeights, output: &mut [f32]) -> Result<()> {
        self.run_as(&self.schedule.run, input, weights, output)
    }

    /// [`Kernel::run`] shared among threads as `run` says (legal for this
    /// kernel's copy: the tuner checks every run it tries).
    pub(crate) fn run_as(
        &self,
        run: &Run,
        input: &[f32],
        weights: &PackedWeights,
        output: &mut [f32],
    ) -> Result<()> {
        let spec = &self.spec;
        spec.check_input(input.len())?;
        spec.check_output(output.len())?;
        if weights.kernel != self.id {
            return Err(Error::ForeignWeights);
        }
        if let Some(layer) = &self.winograd {
            return self.run_winograd(layer, run, input, weights, output);
        }
        // The sum epilogue adds the previous outputs, which the border's
        // recomputation needs too once the run has replaced them.
        let previous = match &weights.border {
            Some(border) if self.plan.sum => Some(border.outputs(output)?),
            _ => None,
        };
        let threads = self.threads_of(run);
        // Where the checked lowering's calls report an access out of bounds.
        let faults: Mutex<Option<Error>> = Mutex::new(None);
        let per_thread = self.plan.copy_per_group || self.plan.bands.is_some();
        let needed = match (self.plan.needs_copy, per_thread) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => threads,
        };
        let copy = || Scratch::zeroed(self.plan.copy_len(), "the padded input copy");
        self.scratch.with(needed, copy, |buffers| {
            self.run_images(run, threads, input, weights, output, buffers, &faults);
            Ok(())
        })?;
        if let Some(fault) = faults.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(fault);
        }
        if let Some(border) = &weights.border {
            border.apply(input, output, previous.as_deref());
        }
        Ok(())
    }

    /// Every image of a run on `threads` threads, with the padded copies in
    /// `buffers` (as many as the plan needs: none, one, or one a thread).
    #[allow(clippy::too_many_arguments)]
    fn run_images(
        &self,
        run: &Run,
        threads: usize,
        input: &[f32],
        weights: &PackedWeights,
        output: &mut [f32],
        buffers: &mut [Scratch],
        faults: &Mutex<Option<Error>>,
    ) {
        // The layer the code computes: the kernel's own on its rows, or
        // a Winograd kernel's batched products.
        let spec = &self.lowered;
        let image_in = spec.in_channels() * spec.height() * spec.width();
        let image_out = spec.out_channels() * spec.out_height() * spec.out_width();
        for n in 0..spec.batch() {
            let x = &input[n * image_in..(n + 1) * image_in];
            let y = &mut output[n * image_out..(n + 1) * image_out];
            if self.plan.geometry.holes {
                // The pixels of no phase hold the activated bias; the
                // phases then write theirs over it.
                let plane = spec.out_height() * spec.out_width();
                for (channel, &value) in y.chunks_exact_mut(plane).zip(&weights.holes) {
                    channel.fill(value);
                }
            }
            let call = Call {
                function: self.function,
                x: x.as_ptr(),
                w: weights.weights.as_ptr(),
                b: weights.bias.as_ptr(),
                y: y.as_mut_ptr(),
                plan: &self.plan,
                whole: &self.whole,
                buffers: [
                    floats(x.as_ptr(), x.len()),
                    floats(weights.weights.as_ptr(), weights.weights.len()),
                    floats(weights.bias.as_ptr(), weights.bias.len()),
                    floats(y.as_ptr(), y.len()),
                ],
                faults: self.checked.then_some(faults as *const _),
            };
            // SAFETY (for every `share` below): `function` was generated for
            // `self.plan`: it reads `copy_len` elements from `x` (a scratch
            // copy of that length, or the unpadded image when the plan needs
            // no copy, which then has the same length),
            // `items · cig · taps · lanes` weights and `items · lanes` bias
            // values (the lengths `pack` made, checked by the kernel id),
            // and writes only the output channels of the work items in its
            // range, in the rows of its part, inside the image's output,
            // whose length was checked above. No bounds are checked inside:
            // codegen proves every address in range (see `codegen`).
            // Concurrent calls get disjoint item ranges or disjoint row
            // parts, so they write disjoint outputs; they only read `w`,
            // `b` and their `x`, which nothing writes meanwhile (each thread
            // of a per-group run writes only its own copy, between its own
            // calls); `y`, the buffers and the operands outlive the scope.
            if self.plan.copy_per_group {
                self.run_groups(x, call, &mut buffers[..threads]);
                continue;
            }
            if let Some(bands) = self.plan.bands {
                self.run_bands(x, call, bands, &mut buffers[..threads]);
                continue;
            }
            let call = match buffers.first_mut().filter(|_| self.plan.needs_copy) {
                Some(buffer) => {
                    self.copier().image(x, buffer.get_mut(), threads);
                    call.reading(buffer.as_ptr(), buffer.as_ptr(), self.plan.copy_len())
                }
                None => call,
            };
            let items = self.plan.work.items;
            match self.plan.split(run.split) {
                Split::Items => runtime::on_each(threads, |t| unsafe {
                    call.share(runtime::share(items, t, threads), 0..1, 1)
                }),
                Split::Rows => {
                    // Each thread's rows in pieces, so that a thread that
                    // finishes early takes the other's last ones.
                    let rows = self.plan.geometry.most_rows() / threads;
                    let row_tile = self.schedule.row_tile();
                    let grain = if threads > 1 { pieces(rows, row_tile, ROW_PIECES) } else { 1 };
                    let parts = threads * grain;
                    let shares = runtime::Shares::pieces(threads, grain, threads);
                    runtime::on_each(threads, |t| {
                        while let Some(span) = shares.next_pieces(t) {
                            unsafe { call.share(0..items, span, parts) }
                        }
                    });
                }
            }
        }
    }

    /// One image by bands of rows: thread `t` of `buffers.len()` takes
    /// bands as [`runtime::Shares`] deals them (its own contiguous range
    /// first, each range's last band in `Bands::pieces`) and, for each,
    /// copies the input rows the band reads into its buffer and runs every
    /// work item on the band.
    fn run_bands(&self, x: &[f32], call: Call, bands: Bands, buffers: &mut [Scratch]) {
        let threads = buffers.len();
        let row = (self.plan.row_len() * self.plan.pixel_len()) as isize;
        let items = self.plan.work.items;
        let call = &call; // shared whole: its fields alone are not `Sync`
        // Parts of the image's rows: `Bands::pieces` a band, for threads
        // that share them.
        let grain = if threads > 1 { bands.pieces } else { 1 };
        let pieces = bands.parts * grain;
        let shares = runtime::Shares::pieces(bands.parts, grain, threads);
        let work = |t: usize, buffer: &mut Scratch| {
            while let Some(span) = shares.next_pieces(t) {
                self.copier().band(x, span.clone(), pieces, buffer.get_mut());
                // The code addresses padded row r at `x + r · row`: point
                // `x` that many rows before the buffer, which holds the
                // span's rows from its first on. A wrapping offset, never
                // dereferenced outside the buffer.
                let first = self.plan.span_rows(span.clone(), pieces).start as isize;
                let x = buffer.as_ptr().wrapping_offset(-first * row);
                // SAFETY: see `run`; the pieces of one band (`next_pieces`
                // never spans two) read only the padded rows `span_rows`,
                // which the buffer holds, at most the band's `Bands::rows`
                // in each plane.
                let copy = self.plan.copy_len();
                unsafe { call.reading(x, buffer.as_ptr(), copy).share(0..items, span, pieces) };
            }
        };
        runtime::on_threads(buffers, work);
    }

    /// One image with a copy per group: thread `t` of `buffers.len()` takes
    /// groups as [`runtime::Shares`] deals them and, for each, copies the
    /// group's planes into its buffer and runs the group's work items on
    /// it.
    fn run_groups(&self, x: &[f32], call: Call, buffers: &mut [Scratch]) {
        let (groups, per_group) = (self.plan.groups(), self.plan.work.group_items);
        let threads = buffers.len();
        let call = &call; // shared whole: its fields alone are not `Sync`
        let shares = runtime::Shares::new(groups, threads);
        let work = |t: usize, buffer: &mut Scratch| {
            while let Some(g) = shares.next(t) {
                self.copier().group(x, g, buffer.get_mut());
                let call = call.reading(buffer.as_ptr(), buffer.as_ptr(), self.plan.copy_len());
                // SAFETY: see `run`; the buffer holds group `g`'s planes,
                // `copy_len` elements, which is what the code reads for the
                // group's items.
                unsafe { call.share(g * per_group..(g + 1) * per_group, 0..1, 1) };
            }
        };
        runtime::on_threads(buffers, work);
    }

    /// The padded copies of this kernel's plan.
    fn copier(&self) -> Copier<'_> {
        Copier { spec: &self.lowered, plan: &self.plan }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jit::Compiler;

    /// The checked lowering reports an access past a buffer's bounds and
    /// does not make it: here the guard block says the output is half as
    /// long as it is, so the code's writes to the second half are caught,
    /// and that half keeps what it held. The IR's accesses are tested one
    /// by one, so every write inside the bounds is made; an assembled tile
    /// is tested as a whole before its call, so one that would write past
    /// them is not called at all.
    #[test]
    fn the_checked_lowering_reports_and_skips_an_access_out_of_bounds() {
        use crate::target::Isa;
        for isa in [Isa::Sse, Isa::host()] {
            checked_lowering_with(isa);
        }
    }

    fn checked_lowering_with(isa: crate::target::Isa) {
        let spec = crate::ConvSpec::from_json(
            r#"{"op": "conv2d", "in_channels": 3, "out_channels": 8, "height": 6, "width": 7,
                "kernel": 3, "padding": 1}"#,
        )
        .unwrap()
        .validate()
        .unwrap();
        for checked in [false, true] {
            let compiler = Compiler::host().unwrap();
            let compiler = if checked { compiler.checked() } else { compiler };
            // A whole-image copy, which the single call below makes.
            let schedule = Schedule {
                copy: crate::schedule::InputCopy::Image,
                ..crate::schedule::choose_for(&spec, 1, isa)
            };
            let kernel = compiler.compile_with(&spec, &schedule).unwrap();
            assert_eq!(kernel.checked, checked);
            let x: Vec<f32> = (0..spec.input_len()).map(|i| (i % 7) as f32).collect();
            let w = vec![0.5; spec.weight_len()];
            let packed = kernel.pack(&w, Some(&[1.0; 8])).unwrap();
            let mut y = vec![f32::NAN; spec.output_len()];
            kernel.run(&x, &packed, &mut y).unwrap();
            assert!(y.iter().all(|v| v.is_finite()));
            if !checked {
                continue;
            }
            // One call on the image with a guard that halves the output.
            let half = y.len() / 2;
            let mut z = vec![f32::NAN; y.len()];
            let faults = Mutex::new(None);
            let call = Call {
                function: kernel.function,
                plan: &kernel.plan,
                whole: &kernel.whole,
                x: std::ptr::null(),
                w: packed.weights.as_ptr(),
                b: packed.bias.as_ptr(),
                y: z.as_mut_ptr(),
                buffers: [
                    floats(std::ptr::null(), 0),
                    floats(packed.weights.as_ptr(), packed.weights.len()),
                    floats(packed.bias.as_ptr(), packed.bias.len()),
                    floats(z.as_ptr(), half),
                ],
                faults: Some(&raw const faults),
            };
            let mut copy = Scratch::zeroed(kernel.plan.copy_len(), "the input copy").unwrap();
            kernel.copier().image(&x, copy.get_mut(), 1);
            let call = call.reading(copy.as_ptr(), copy.as_ptr(), kernel.plan.copy_len());
            // SAFETY: the pointers are valid for the plan's lengths; the
            // guard only claims less.
            unsafe { call.share(0..kernel.plan.work.items, 0..1, 1) };
            let fault = faults.into_inner().unwrap().expect("a fault");
            let Error::CheckedAccess { buffer, offset, len } = fault else { panic!("{fault}") };
            assert_eq!((buffer, len), ("output", 4 * half as u64));
            assert!(offset >= len as i64, "{offset}");
            if isa.is_assembled() {
                let kept = z[..half].iter().zip(&y[..half]).all(|(z, y)| z.is_nan() || z == y);
                assert!(kept, "inside the bounds, the writes made are the kernel's");
            } else {
                assert_eq!(z[..half], y[..half], "inside the bounds, the writes were made");
            }
            assert!(z[half..].iter().all(|v| v.is_nan()), "past them, none was");
        }
    }
}
