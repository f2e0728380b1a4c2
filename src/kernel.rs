//! `Kernel`: the safe handle to compiled code, its weight packing, and `run`.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cranelift_jit::JITModule;
use rayon::prelude::*;
use serde::Serialize;

use crate::codegen::Plan;
use crate::codegen::plan::INPUT_BLOCK;
use crate::complexity::Complexity;
use crate::error::{Error, Result};
use crate::schedule::{Schedule, Split, Strategy};
use crate::spec::{Op, ValidSpec};
use crate::timing;

/// The generated function: `(x, w, bias, y, begin, end, part, parts)`, see
/// [`crate::codegen`].
pub(crate) type KernelFn =
    unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32, i64, i64, i64, i64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A compiled convolution for one spec and schedule. Dropping it frees its
/// code; no pointer to the code leaves it.
pub struct Kernel {
    id: u64,
    spec: ValidSpec,
    schedule: Schedule,
    plan: Plan,
    /// Owns the code `function` points into; freed on drop. Never used
    /// otherwise: the mutex only makes the kernel `Sync` (the module has
    /// interior mutability that threads must not share).
    module: Mutex<Option<JITModule>>,
    function: KernelFn,
    compile_time: Duration,
    /// The zero-bordered padded copies (one, or one per thread when each
    /// holds a group or a band), kept between runs.
    scratch: Mutex<Vec<Scratch>>,
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
        let module = self.module.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(module) = module.take() {
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
            module: Mutex::new(Some(module)),
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
                    Strategy::Direct | Strategy::Width => {
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

    /// The threads a run uses: the schedule's, but no more than there are
    /// shares (groups, work items or rows) or threads in rayon's pool.
    pub fn threads(&self) -> usize {
        let shares = if self.plan.copy_per_group {
            self.plan.groups()
        } else if let Some(bands) = self.plan.bands {
            bands.parts
        } else {
            match self.schedule.split {
                Split::Items => self.plan.items,
                Split::Rows => self.plan.phases.iter().map(|p| p.rows.count).max().unwrap_or(1),
            }
        };
        let wanted = self.schedule.threads.min(shares);
        // Asking rayon starts its pool: only when it is to be used.
        if wanted > 1 { wanted.min(rayon::current_num_threads()) } else { 1 }
    }

    /// Computes the output of `input` (NCHW) with packed weights into
    /// `output` (NCHW). Every length, and that `weights` were packed by this
    /// kernel, is checked before the compiled code runs.
    ///
    /// With [`Kernel::threads`] above 1 the work of each image is shared
    /// across rayon's pool: with a whole-image copy ([`crate::schedule::InputCopy`]),
    /// the copy by channel planes and then the output as [`Schedule::split`]
    /// says (row slices or ranges of work items); with a copy per group or
    /// by bands of rows, whole groups or bands, each thread copying its own.
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
        let threads = self.threads();
        // The padded copies' borders are zero and stay zero (only the
        // interior is written), so the buffers are zeroed once and reused by
        // later runs. A run that finds them in use by another thread makes
        // its own.
        let mut cached = self.scratch.try_lock().ok();
        let mut local = Vec::new();
        let buffers: &mut Vec<Scratch> = cached.as_deref_mut().unwrap_or(&mut local);
        let per_thread = self.plan.copy_per_group || self.plan.bands.is_some();
        let needed = match (self.plan.needs_copy, per_thread) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => threads,
        };
        if buffers.len() < needed {
            buffers.resize_with(needed, || Scratch::zeroed(self.plan.copy_len()));
        }
        for n in 0..spec.batch() {
            let x = &input[n * image_in..(n + 1) * image_in];
            let y = &mut output[n * image_out..(n + 1) * image_out];
            let call = Call {
                function: self.function,
                x: x.as_ptr(),
                w: weights.weights.as_ptr(),
                b: weights.bias.as_ptr(),
                y: y.as_mut_ptr(),
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
                self.run_bands(x, call, bands.parts, &mut buffers[..threads]);
                continue;
            }
            let call = match buffers.first_mut().filter(|_| self.plan.needs_copy) {
                Some(buffer) => {
                    self.copy_padded(x, buffer.get_mut(), threads);
                    Call { x: buffer.as_ptr(), ..call }
                }
                None => call,
            };
            let items = self.plan.items;
            if threads == 1 {
                unsafe { call.share(0..items, 0, 1) };
            } else {
                let share = move |t: usize| match self.schedule.split {
                    Split::Items => (t * items / threads..(t + 1) * items / threads, 0, 1),
                    Split::Rows => (0..items, t, threads),
                };
                rayon::in_place_scope(|s| {
                    for t in 1..threads {
                        s.spawn(move |_| {
                            let (items, part, parts) = share(t);
                            unsafe { call.share(items, part, parts) }
                        });
                    }
                    let (items, part, parts) = share(0);
                    unsafe { call.share(items, part, parts) };
                });
            }
        }
        Ok(())
    }

    /// One image by bands of rows: thread `t` of `buffers.len()` takes a
    /// contiguous range of the `parts` bands and, for each, copies the
    /// input rows the band reads into its buffer and runs every work item
    /// on the band.
    fn run_bands(&self, x: &[f32], call: Call, parts: usize, buffers: &mut [Scratch]) {
        let threads = buffers.len();
        let row = (self.plan.row_len() * self.plan.pixel_len()) as isize;
        let items = self.plan.items;
        let call = &call; // shared whole: its fields alone are not `Sync`
        let work = |t: usize, buffer: &mut Scratch| {
            for b in t * parts / threads..(t + 1) * parts / threads {
                self.copy_band(x, b, buffer.get_mut());
                // The code addresses padded row r at `x + r · row`: point
                // `x` that many rows before the buffer, which holds the
                // band's rows from its first on. A wrapping offset, never
                // dereferenced outside the buffer.
                let first = self.plan.band_rows(b).start as isize;
                let x = buffer.as_ptr().wrapping_offset(-first * row);
                // SAFETY: see `run`; band `b` of the code reads only the
                // padded rows `band_rows(b)`, which the buffer holds, at
                // most `Bands::rows` of them in each plane.
                unsafe { Call { x, ..*call }.share(0..items, b, parts) };
            }
        };
        on_threads(buffers, work);
    }

    /// One image with a copy per group: thread `t` of `buffers.len()` takes
    /// a contiguous range of groups and, for each, copies the group's
    /// planes into its buffer and runs the group's work items on it.
    fn run_groups(&self, x: &[f32], call: Call, buffers: &mut [Scratch]) {
        let (groups, per_group) = (self.plan.groups(), self.plan.group_items);
        let threads = buffers.len();
        let call = &call; // shared whole: its fields alone are not `Sync`
        let work = |t: usize, buffer: &mut Scratch| {
            for g in t * groups / threads..(t + 1) * groups / threads {
                self.copy_group(x, g, buffer.get_mut());
                let call = Call { x: buffer.as_ptr(), ..*call };
                // SAFETY: see `run`; the buffer holds group `g`'s planes,
                // `copy_len` elements, which is what the code reads for the
                // group's items.
                unsafe { call.share(g * per_group..(g + 1) * per_group, 0, 1) };
            }
        };
        on_threads(buffers, work);
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
    /// layout, split by planes (a channel, or a block of 4 channels)
    /// across `threads`. The borders of `scratch` are zero and stay zero:
    /// only the interior is written.
    fn copy_padded(&self, x: &[f32], scratch: &mut [f32], threads: usize) {
        if self.plan.interleaved {
            // Split by stored rows instead: one plane is the whole copy.
            let row = self.plan.row_len() * self.plan.pixel_len();
            let channels = 0..self.spec.in_channels();
            let copy = |(r, dst): (usize, &mut [f32])| self.interleave_row(x, &channels, r, dst);
            if threads == 1 {
                scratch.chunks_mut(row).enumerate().for_each(copy);
            } else {
                scratch.par_chunks_mut(row).enumerate().for_each(copy);
            }
            return;
        }
        let plane = self.plan.plane_len();
        let interior = self.interior_rows();
        let copy = |(p, dst): (usize, &mut [f32])| {
            let dst = &mut dst[interior.start * self.plan.row_len() * self.plan.pixel_len()..];
            self.copy_plane(x, p, interior.clone(), dst)
        };
        if threads == 1 {
            scratch.chunks_mut(plane).enumerate().for_each(copy);
        } else {
            let planes = scratch.len().div_ceil(plane);
            scratch
                .par_chunks_mut(plane)
                .with_min_len(planes.div_ceil(threads))
                .enumerate()
                .for_each(copy);
        }
    }

    /// Copies the planes of group `g` into `scratch` (one group's planes),
    /// the interior only.
    fn copy_group(&self, x: &[f32], g: usize, scratch: &mut [f32]) {
        let first = g * self.plan.group_planes;
        if self.plan.interleaved {
            let channels = first..first + self.plan.group_planes;
            let row = self.plan.row_len() * self.plan.pixel_len();
            for (r, dst) in scratch.chunks_mut(row).enumerate() {
                self.interleave_row(x, &channels, r, dst);
            }
            return;
        }
        let interior = self.interior_rows();
        for (i, dst) in scratch.chunks_mut(self.plan.plane_len()).enumerate() {
            let dst = &mut dst[interior.start * self.plan.row_len() * self.plan.pixel_len()..];
            self.copy_plane(x, first + i, interior.clone(), dst);
        }
    }

    /// The padded rows that hold input pixels.
    fn interior_rows(&self) -> Range<usize> {
        let top = self.plan.pad[0];
        top..top + self.spec.height()
    }

    /// Copies the padded input rows of band `b` into `scratch` (one band's
    /// planes, each of `Bands::rows` stored rows).
    fn copy_band(&self, x: &[f32], b: usize, scratch: &mut [f32]) {
        let rows = self.plan.band_rows(b);
        if self.plan.interleaved {
            let stride = self.plan.row_len() * self.plan.pixel_len();
            let channels = 0..self.spec.in_channels();
            for (r, dst) in rows.zip(scratch.chunks_mut(stride)) {
                self.interleave_row(x, &channels, r, dst);
            }
            return;
        }
        for (p, dst) in scratch.chunks_mut(self.plan.plane_len()).enumerate() {
            self.copy_plane(x, p, rows.clone(), dst);
        }
    }

    /// Writes the interior of stored row `r` of an interleaved copy of
    /// `channels` into `dst`: pixel by pixel, each pixel's channels
    /// together.
    fn interleave_row(&self, x: &[f32], channels: &Range<usize>, r: usize, dst: &mut [f32]) {
        let (h, w) = (self.spec.height(), self.spec.width());
        let [top, left, _, _] = self.plan.pad;
        let n = channels.len();
        let dst = &mut dst[self.plan.col_offset(left) * n..][..w * n];
        if r < top || r >= top + h {
            // A border row (a reused band buffer may hold pixels there).
            dst.fill(0.0);
            return;
        }
        let row = r - top;
        let src = |c: usize| &x[((channels.start + c) * h + row) * w..][..w];
        // Blocks of 4 channels × 4 pixels as 4×4 transposes, then the
        // channels and pixels left over one by one.
        let (quads, cols) = (n / 4 * 4, w / 4 * 4);
        for c in (0..quads).step_by(4) {
            let rows = [src(c), src(c + 1), src(c + 2), src(c + 3)];
            for p in (0..cols).step_by(4) {
                transpose4(&rows, p, &mut dst[p * n + c..], n);
            }
            for p in cols..w {
                for (i, r) in rows.iter().enumerate() {
                    dst[p * n + c + i] = r[p];
                }
            }
        }
        for c in quads..n {
            let s = src(c);
            for p in 0..w {
                dst[p * n + c] = s[p];
            }
        }
    }

    /// Writes the interior of padded rows `rows` of plane `p` into `dst`,
    /// which holds those stored rows from `rows.start` on: the plane's
    /// channels, zeros in border rows and in the lanes of a block past the
    /// last channel (a reused buffer may hold real pixels there).
    fn copy_plane(&self, x: &[f32], p: usize, rows: Range<usize>, dst: &mut [f32]) {
        let (h, w) = (self.spec.height(), self.spec.width());
        let plan = &self.plan;
        let [top, left, _, _] = plan.pad;
        let lanes = if plan.blocked_input { INPUT_BLOCK } else { 1 };
        let stride = plan.row_len() * lanes;
        for (r, dst_row) in rows.zip(dst.chunks_mut(stride)) {
            for lane in 0..lanes {
                let c = p * lanes + lane;
                if c >= self.spec.in_channels() || !(top..top + h).contains(&r) {
                    (0..w).for_each(|i| dst_row[plan.col_offset(left + i) * lanes + lane] = 0.0);
                    continue;
                }
                let src = &x[(c * h + r - top) * w..][..w];
                if lanes > 1 {
                    for (i, &v) in src.iter().enumerate() {
                        dst_row[(left + i) * lanes + lane] = v;
                    }
                    continue;
                }
                copy_row(src, dst_row, left, plan);
            }
        }
    }
}

/// Floats in a cache line (64 bytes).
const LINE_FLOATS: usize = 16;

/// A zeroed buffer for a padded copy that shares no cache line with any
/// other allocation: the threads of a run each write their own, and small
/// ones side by side on the heap would otherwise bounce lines between
/// cores (two threads ran small depthwise layers at half the speed of one).
struct Scratch {
    /// The buffer with a cache line of margin on each side.
    data: Vec<f32>,
}

impl Scratch {
    fn zeroed(len: usize) -> Scratch {
        Scratch { data: vec![0.0; len.max(1) + 2 * LINE_FLOATS] }
    }

    fn get_mut(&mut self) -> &mut [f32] {
        let end = self.data.len() - LINE_FLOATS;
        &mut self.data[LINE_FLOATS..end]
    }

    fn as_ptr(&self) -> *const f32 {
        self.data[LINE_FLOATS..].as_ptr()
    }
}

/// Runs `work(t, buffer)` for every buffer `t`, on as many threads of
/// rayon's pool (the calling thread takes buffer 0).
fn on_threads(buffers: &mut [Scratch], work: impl Fn(usize, &mut Scratch) + Sync) {
    match buffers {
        [only] => work(0, only),
        [first, rest @ ..] => rayon::in_place_scope(|s| {
            for (t, buffer) in rest.iter_mut().enumerate() {
                let work = &work;
                s.spawn(move |_| work(t + 1, buffer));
            }
            work(0, first);
        }),
        [] => {}
    }
}

/// Writes `rows[i][p + j]` to `dst[j · stride + i]` for `i, j < 4`.
fn transpose4(rows: &[&[f32]; 4], p: usize, dst: &mut [f32], stride: usize) {
    let quad = |i: usize| -> [f32; 4] { rows[i][p..p + 4].try_into().expect("4 pixels") };
    let [a, b, c, d] = [quad(0), quad(1), quad(2), quad(3)];
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        let dst = &mut dst[..3 * stride + 4];
        // SAFETY: SSE is part of x86-64; every load reads one of the 4-element
        // arrays above and every store writes 4 elements inside `dst`, whose
        // length was just checked.
        unsafe {
            let (a, b, c, d) = (
                _mm_loadu_ps(a.as_ptr()),
                _mm_loadu_ps(b.as_ptr()),
                _mm_loadu_ps(c.as_ptr()),
                _mm_loadu_ps(d.as_ptr()),
            );
            let (ab_lo, ab_hi) = (_mm_unpacklo_ps(a, b), _mm_unpackhi_ps(a, b));
            let (cd_lo, cd_hi) = (_mm_unpacklo_ps(c, d), _mm_unpackhi_ps(c, d));
            let out = [
                _mm_movelh_ps(ab_lo, cd_lo),
                _mm_movehl_ps(cd_lo, ab_lo),
                _mm_movelh_ps(ab_hi, cd_hi),
                _mm_movehl_ps(cd_hi, ab_hi),
            ];
            for (j, v) in out.into_iter().enumerate() {
                _mm_storeu_ps(dst[j * stride..j * stride + 4].as_mut_ptr(), v);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for j in 0..4 {
        dst[j * stride..j * stride + 4].copy_from_slice(&[a[j], b[j], c[j], d[j]]);
    }
}

/// Copies one input row into a stored padded row whose interior starts at
/// padded column `left`: as is when the row has one column phase, else
/// each phase takes every `col_phases`-th pixel.
fn copy_row(src: &[f32], dst: &mut [f32], left: usize, plan: &Plan) {
    let phases = plan.col_phases;
    if phases == 1 {
        dst[left..left + src.len()].copy_from_slice(src);
        return;
    }
    // Whole runs of `phases` pixels first, then the last partial run.
    let runs = src.len() / phases;
    let (whole, rest) = src.split_at(runs * phases);
    let (a, b) = (plan.col_offset(left), plan.col_offset(left + 1));
    if phases == 2 {
        // The common stride 2, as one deinterleaving loop the compiler
        // vectorises. The two phases are different sub-rows: disjoint.
        let (first, second) = if a < b {
            let (lo, hi) = dst.split_at_mut(b);
            (&mut lo[a..a + runs], &mut hi[..runs])
        } else {
            let (lo, hi) = dst.split_at_mut(a);
            (&mut hi[..runs], &mut lo[b..b + runs])
        };
        for ((x, y), pair) in first.iter_mut().zip(second.iter_mut()).zip(whole.chunks_exact(2)) {
            *x = pair[0];
            *y = pair[1];
        }
    } else {
        for first in 0..phases {
            let start = plan.col_offset(left + first);
            for (d, run) in dst[start..start + runs].iter_mut().zip(whole.chunks_exact(phases)) {
                *d = run[first];
            }
        }
    }
    for (i, &v) in rest.iter().enumerate() {
        dst[plan.col_offset(left + whole.len() + i)] = v;
    }
}

/// One call of the compiled code on one image: the pointers it takes, which
/// threads of one run share.
#[derive(Clone, Copy)]
struct Call {
    function: KernelFn,
    x: *const f32,
    w: *const f32,
    b: *const f32,
    y: *mut f32,
}

// SAFETY: the pointers are only dereferenced by `Call::share`, whose callers
// give concurrent calls disjoint shares (see `Kernel::run`).
unsafe impl Send for Call {}
unsafe impl Sync for Call {}

impl Call {
    /// Runs the work items `items` of the image, on part `part` of `parts`
    /// slices of its output rows.
    ///
    /// # Safety
    /// The pointers must be valid for the lengths the plan implies (see
    /// `Kernel::run`), `part < parts`, and no other call may run an
    /// overlapping share at the same time.
    unsafe fn share(self, items: std::ops::Range<usize>, part: usize, parts: usize) {
        let (begin, end) = (items.start as i64, items.end as i64);
        let (part, parts) = (part as i64, parts as i64);
        // SAFETY: as the caller promises.
        unsafe { (self.function)(self.x, self.w, self.b, self.y, begin, end, part, parts) }
    }
}
