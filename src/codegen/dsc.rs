//! Lowering the fused depthwise-separable kernel: a depthwise k×k conv
//! (multiplier 1) and the pointwise 1×1 conv after it, as two functions
//! that pass the depthwise output through a cache-sized band buffer
//! instead of a whole tensor in memory.
//!
//! The block is computed in bands of `band_rows` output rows, by two
//! functions. The *depthwise function* takes a band's channels in turn: it
//! copies the input rows the band reads from the channel's plane of the
//! image into a small zero-bordered buffer (it stays in L1, as the width
//! strategy's per-group copy does; strided rows are split into column
//! phases there, by `shufps` pairs for stride 2), then computes the
//! channel's rows of the band: register tiles of `dw_rows` rows ×
//! `dw_vectors` vectors of 4 pixels, one weight broadcast per tap reused by
//! the whole tile and the input vectors loaded into the FMAs (the width
//! strategy's microkernel), the activation, and whole-vector stores into
//! the band buffer `[channel][band row][W₄]` (rows rounded up to whole
//! vectors; it stays in L2). The *pointwise function* then runs over the
//! band's rows: register tiles of `pw_outputs` output channels ×
//! `pw_vectors` vectors of pixels, a loop over the input channels unrolled
//! `pw_unroll` times that loads each channel's buffered vectors once and
//! multiplies them by a fresh broadcast of each output channel's weight
//! (CRANELIFT.md rules 3–6), then the bias, the activation and
//! whole-vector NCHW stores. Compared to two kernels, the intermediate
//! tensor never leaves the cache, and the pointwise stage reads a buffer
//! laid out for it instead of one image plane per input channel.
//!
//! The depthwise function has the C signature `fn(x, w, b, t, copy, first,
//! last, from, to)`: `x` the NCHW image, every channel's weights and bias,
//! `t` the band buffer, `copy` the one-plane copy buffer, `[first, last)`
//! the band's output rows and `[from, to)` the padded input rows they read.
//! The pointwise function is `fn(t, w, b, y, first, last)`: the band
//! buffer, the packed weights and bias (see `blocks::dsc`), the image's
//! NCHW output.
//!
//! As in [`super`], every address is in range by construction: the copy
//! reads only the image rows that hold pixels and writes only the buffer's
//! rows of one band; the plan pads the input for every tap and for the
//! whole vectors read at a row's end; the band buffer holds every row of
//! the largest band in whole vectors; lanes past a row's last pixel are
//! never stored.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, ConstantData, Endianness, Function, InstBuilder, MemFlagsData, Signature, Type,
    Value, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use serde::{Deserialize, Serialize};

use super::lower::{self, Index, Lower};
use super::{Plan, Target};
use crate::error::{Error, Result};
use crate::schedule::{
    InputCopy, LoopOrder, MAX_ACCUMULATORS, MAX_KNOB, MAX_THREADS, Schedule, Split, Strategy,
};
use crate::spec::ValidSpec;

/// How the fused kernel computes one depthwise-separable block: plain
/// data, like [`Schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DscSchedule {
    /// Output rows per band: the depthwise output of a band, `band_rows ·
    /// W₄ · C · 4` bytes, is what stays in cache between the stages.
    pub band_rows: usize,
    /// Rows per depthwise register tile.
    pub dw_rows: usize,
    /// Vectors of 4 pixels per depthwise register tile (accumulators:
    /// `dw_rows · dw_vectors`).
    pub dw_vectors: usize,
    /// Vectors of 4 pixels per pointwise register tile, held in registers
    /// across its output channels.
    pub pw_vectors: usize,
    /// Output channels per pointwise register tile (accumulators:
    /// `pw_outputs · pw_vectors`).
    pub pw_outputs: usize,
    /// Input channels per iteration of the pointwise reduction loop.
    pub pw_unroll: usize,
    /// Threads: each takes a contiguous share of the bands.
    pub threads: usize,
}

/// Bytes the heuristic lets the band buffer take: half the L2 of the
/// target's Zen 3 cores (512 KiB), so it stays there with the pointwise
/// weights. On the MobileNetV2 shapes, bands of twice and four times the
/// rows measured within ±5% of it (`examples/dsc_fusion.rs`,
/// docs/blocks.md).
const BAND_BYTES: usize = 256 * 1024;

/// Accumulators the heuristic's pointwise register tiles hold: the
/// buffered vectors and a broadcast need registers too (the depthwise
/// tiles hold [`MAX_ACCUMULATORS`], as the width strategy's do). Tiles of
/// 1 × 12, 1 × 14 and 3 × 4 measured within ±5% of 2 × 6 on the
/// stride-1 MobileNetV2 shapes (docs/blocks.md).
const ACCUMULATORS: usize = 12;

impl DscSchedule {
    /// The heuristic schedule for the block `dw` then `pw` on `threads`.
    pub fn choose(dw: &ValidSpec, pw: &ValidSpec, threads: usize) -> DscSchedule {
        let (height, vectors) = (dw.out_height(), dw.out_width().div_ceil(4));
        let threads = threads.clamp(1, MAX_THREADS);
        // Bands that fit the buffer, and at least one per thread.
        let row_bytes = vectors * 16 * dw.out_channels();
        let band_rows = (BAND_BYTES / row_bytes.max(1)).min(height.div_ceil(threads)).max(1);
        // Depthwise tiles of whole columns of rows, as the width strategy's
        // (`docs/schedules.md`); pointwise tiles that cover a row's vectors
        // with the least waste.
        let dw_rows = band_rows.min(MAX_ACCUMULATORS);
        let pw_vectors = (1..=3).rev().min_by_key(|&v| vectors.div_ceil(v) * v).unwrap_or(1);
        DscSchedule {
            band_rows,
            dw_rows,
            dw_vectors: (MAX_ACCUMULATORS / dw_rows).min(vectors),
            pw_vectors,
            pw_outputs: (ACCUMULATORS / pw_vectors).min(pw.out_channels()),
            pw_unroll: 4,
            threads,
        }
    }

    /// Checks that this schedule can compute the block; the error names
    /// the field that cannot. Every knob is bounded before any product of
    /// knobs is formed, so no arithmetic on a legal schedule overflows.
    pub fn legal(&self) -> Result<()> {
        let bad = |field: &'static str, value: usize, reason: &str| {
            Err(Error::InvalidSchedule {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        if !(1..=MAX_KNOB).contains(&self.band_rows) {
            return bad("band_rows", self.band_rows, &format!("must be 1 to {MAX_KNOB}"));
        }
        if !(1..=MAX_ACCUMULATORS).contains(&self.dw_rows) {
            return bad("dw_rows", self.dw_rows, "must be 1 to 14");
        }
        if !(1..=MAX_ACCUMULATORS).contains(&self.dw_vectors)
            || self.dw_vectors * self.dw_rows > MAX_ACCUMULATORS
        {
            return bad(
                "dw_vectors",
                self.dw_vectors,
                "must be at least 1, times dw_rows at most 14",
            );
        }
        if !(1..=3).contains(&self.pw_vectors) {
            return bad("pw_vectors", self.pw_vectors, "must be 1, 2 or 3");
        }
        if !(1..=MAX_ACCUMULATORS).contains(&self.pw_outputs)
            || self.pw_outputs * self.pw_vectors > MAX_ACCUMULATORS
        {
            return bad(
                "pw_outputs",
                self.pw_outputs,
                "must be at least 1, times pw_vectors at most 14",
            );
        }
        if !(1..=4).contains(&self.pw_unroll) {
            return bad("pw_unroll", self.pw_unroll, "must be 1 to 4");
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad("threads", self.threads, "must be 1 to 256");
        }
        Ok(())
    }

    /// The depthwise kernel schedule whose plan (a padded NCHW copy by
    /// bands, strided rows split into column phases) the fused kernel reads.
    pub fn depthwise(&self) -> Schedule {
        Schedule {
            strategy: Strategy::Width,
            oc_vectors: 1,
            pixel_tile: 4 * self.dw_vectors,
            reduction_unroll: 1,
            row_tile: self.dw_rows,
            loop_order: LoopOrder::ChannelsOuter,
            col_block: None,
            threads: self.threads,
            split: Split::Rows,
            copy: InputCopy::Bands(self.band_rows),
            interleave: false,
        }
    }
}

/// The bands both functions and the run agree on.
#[derive(Clone, Copy, Debug)]
pub struct Band {
    /// Bands per image: band `b` is output rows `[H·b / parts, H·(b + 1) /
    /// parts)`, the rows the plan's band copies are made for.
    pub parts: usize,
    /// Output rows of the largest band.
    pub rows: usize,
    /// Floats of one channel's row in the buffer: the width in whole
    /// vectors.
    pub row: usize,
    /// Channels of the buffer.
    pub channels: usize,
}

impl Band {
    /// The bands of `dw` under `schedule`, whose depthwise plan is `plan`.
    pub fn of(dw: &ValidSpec, schedule: &DscSchedule, plan: &Plan) -> Band {
        let height = dw.out_height();
        let parts = plan.bands.map_or(height.div_ceil(schedule.band_rows), |b| b.parts);
        Band {
            parts,
            rows: height.div_ceil(parts),
            row: dw.out_width().next_multiple_of(4),
            channels: dw.out_channels(),
        }
    }

    /// The output rows of band `b`.
    pub fn rows_of(&self, height: usize, b: usize) -> std::ops::Range<usize> {
        height * b / self.parts..height * (b + 1) / self.parts
    }

    /// Floats of one channel's plane of the band buffer.
    pub fn plane(&self) -> usize {
        self.rows * self.row
    }

    /// Floats of the band buffer, `[channel][band row][W₄]`.
    pub fn buffer_len(&self) -> usize {
        self.channels * self.plane()
    }
}

/// The signature of `stage`'s function: its pointers, then its row
/// numbers.
pub fn signature(
    stage: Stage,
    pointer: Type,
    call_conv: cranelift_codegen::isa::CallConv,
) -> Signature {
    let (pointers, rows) = match stage {
        Stage::Depthwise => (5, 4),
        Stage::Pointwise => (4, 2),
    };
    let mut sig = Signature::new(call_conv);
    sig.params.extend(std::iter::repeat_n(AbiParam::new(pointer), pointers));
    sig.params.extend(std::iter::repeat_n(AbiParam::new(types::I64), rows));
    sig
}

/// Which of the two functions to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// One channel's depthwise output over a band, into the band buffer.
    Depthwise,
    /// Every output channel over a band, from the band buffer.
    Pointwise,
}

/// Emits the body of `func` (whose signature is [`signature`]): `stage` of
/// the block `dw` then `pw`; `plan` is the depthwise plan of
/// [`DscSchedule::depthwise`].
pub fn lower(
    stage: Stage,
    (dw, pw): (&ValidSpec, &ValidSpec),
    schedule: &DscSchedule,
    plan: &Plan,
    target: Target,
    func: &mut Function,
) {
    let mut fctx = FunctionBuilderContext::new();
    let (fb, p) = lower::begin(func, &mut fctx);
    let mut e = Fused {
        dw,
        pw,
        s: schedule,
        plan,
        band: Band::of(dw, schedule, plan),
        target,
        fb,
        params: [p[0], p[1], p[2], p[3]],
    };
    match stage {
        Stage::Depthwise => e.depthwise(p[4], [p[5], p[6]], [p[7], p[8]]),
        Stage::Pointwise => e.pointwise(p[4], p[5]),
    }
    lower::finish(e.fb, target.frontend);
}

struct Fused<'a> {
    dw: &'a ValidSpec,
    pw: &'a ValidSpec,
    s: &'a DscSchedule,
    plan: &'a Plan,
    band: Band,
    target: Target,
    fb: FunctionBuilder<'a>,
    /// The four pointer parameters.
    params: [Value; 4],
}

impl<'a> Lower<'a> for Fused<'a> {
    fn fb(&mut self) -> &mut FunctionBuilder<'a> {
        &mut self.fb
    }
    fn has_fma(&self) -> bool {
        self.target.has_fma
    }
}

impl Fused<'_> {
    /// Runs `body(r, rows)` over the rows `[first, last)` in tiles of
    /// `tile` rows, then one at a time for the rest.
    fn row_tiles(
        &mut self,
        first: Value,
        last: Value,
        tile: usize,
        mut body: impl FnMut(&mut Self, Value, usize),
    ) {
        if tile > 1 {
            let n = self.fb.ins().isub(last, first);
            let rest = self.fb.ins().urem_imm_u(n, tile as i64);
            let tiled = self.fb.ins().isub(last, rest);
            self.counted_loop(first, tiled, tile as i64, &[], |e, r, _| {
                body(e, r, tile);
                vec![]
            });
            self.counted_loop(tiled, last, 1, &[], |e, r, _| {
                body(e, r, 1);
                vec![]
            });
        } else {
            self.counted_loop(first, last, 1, &[], |e, r, _| {
                body(e, r, 1);
                vec![]
            });
        }
    }

    /// The depthwise function: for every channel, the input rows
    /// `[copy.0, copy.1)` (padded coordinates) of its plane of the image
    /// into `scratch` (when the plan pads), then its output rows `rows` into
    /// its plane of the band buffer.
    fn depthwise(&mut self, scratch: Value, rows: [Value; 2], copy: [Value; 2]) {
        let [x, w, b, t] = self.params;
        let (plane_in, taps) =
            (self.dw.height() * self.dw.width(), self.dw.kernel()[0] * self.dw.kernel()[1]);
        let plane_out = self.band.plane() as i64 * 4;
        let row_bytes = self.plan.row_len() as i64 * 4;
        let zero = self.iconst(0);
        let channels = self.iconst(self.dw.out_channels() as i64);
        self.counted_loop(zero, channels, 1, &[], |e, c, _| {
            let x = e.scaled(x, c, plane_in as i64 * 4);
            let x = if e.plan.bands.is_some() {
                e.copy_rows(x, scratch, copy);
                // Padded row r is at `scratch + (r − copy.0) · row`.
                let back = e.fb.ins().imul_imm_s(copy[0], row_bytes);
                e.fb.ins().isub(scratch, back)
            } else {
                x
            };
            let w = e.scaled(w, c, taps as i64 * 4);
            let b = e.scaled(b, c, 4);
            let t = e.scaled(t, c, plane_out);
            e.depthwise_channel([x, w, b, t], rows);
            vec![]
        });
    }

    /// Copies padded rows `[rows.0, rows.1)` of one channel's plane `x` of
    /// the image into `dst` (row `rows.0` first), in the plan's layout: the
    /// interior of a row that holds input pixels, zeros for a row of
    /// padding. The columns of padding are never written: they stay zero.
    fn copy_rows(&mut self, x: Value, dst: Value, rows: [Value; 2]) {
        let (top, height, width) = (self.plan.pad[0], self.dw.height(), self.dw.width());
        let row_bytes = self.plan.row_len() as i64 * 4;
        self.counted_loop(rows[0], rows[1], 1, &[], |e, r, _| {
            let i = e.fb.ins().isub(r, rows[0]);
            let dst = e.scaled(dst, i, row_bytes);
            let above = e.fb.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, r, top as i64);
            let below = e.fb.ins().icmp_imm_s(IntCC::UnsignedLessThan, r, (top + height) as i64);
            let inside = e.fb.ins().band(above, below);
            let (copy, clear, done) =
                (e.fb.create_block(), e.fb.create_block(), e.fb.create_block());
            e.fb.ins().brif(inside, copy, &[], clear, &[]);
            e.fb.switch_to_block(copy);
            let input_row = e.fb.ins().iadd_imm_s(r, -(top as i64));
            let src = e.scaled(x, input_row, width as i64 * 4);
            e.copy_row(src, dst);
            e.fb.ins().jump(done, &[]);
            e.fb.switch_to_block(clear);
            e.clear_row(dst);
            e.fb.ins().jump(done, &[]);
            e.fb.switch_to_block(done);
            vec![]
        });
    }

    /// One input row at `src` into the stored row at `dst`: padded column
    /// `left + i` takes pixel `i`, split into the plan's column phases.
    fn copy_row(&mut self, src: Value, dst: Value) {
        let (width, left) = (self.dw.width(), self.plan.pad[1]);
        let phases = self.plan.col_phases;
        let plan = self.plan;
        let at = |c: usize| plan.col_offset(c) as i64 * 4;
        // Vectors of `4 · phases` pixels, each phase's 4 consecutive.
        let (runs, run) = match phases {
            1 | 2 => (width / (4 * phases), 4 * phases),
            _ => (0, 1),
        };
        if runs > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(runs as i64);
            self.counted_loop(zero, end, 1, &[], |e, k, _| {
                let src = e.scaled(src, k, run as i64 * 4);
                // Pixel `run · k + j` of phase `(left + j) mod phases` is at
                // `col_offset(left + j) + 4k` elements.
                let dst = e.scaled(dst, k, 16);
                let a = e.load(types::F32X4, src, 0);
                if phases == 1 {
                    e.store(a, dst, at(left));
                    return vec![];
                }
                let b = e.load(types::F32X4, src, 16);
                let evens = e.interleave(a, b, [0, 2, 4, 6]);
                let odds = e.interleave(a, b, [1, 3, 5, 7]);
                e.store(evens, dst, at(left));
                e.store(odds, dst, at(left + 1));
                vec![]
            });
        }
        for i in runs * run..width {
            let v = self.load(types::F32, src, i as i64 * 4);
            self.store(v, dst, at(left + i));
        }
    }

    /// Lanes `lanes` of the 8 lanes of `a` then `b`.
    fn interleave(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        let bytes: Vec<u8> = lanes.iter().flat_map(|&l| (0..4).map(move |k| 4 * l + k)).collect();
        let mask = self.fb.func.dfg.immediates.push(ConstantData::from(bytes));
        let a = self.fb.ins().bitcast(types::I8X16, flags, a);
        let b = self.fb.ins().bitcast(types::I8X16, flags, b);
        let picked = self.fb.ins().shuffle(a, b, mask);
        self.fb.ins().bitcast(types::F32X4, flags, picked)
    }

    /// Zeros over the whole stored row at `dst`.
    fn clear_row(&mut self, dst: Value) {
        let len = self.plan.row_len();
        let zero = self.splat_const(0.0);
        for v in 0..len / 4 {
            self.store(zero, dst, v as i64 * 16);
        }
        let scalar = self.fb.ins().f32const(0.0);
        for i in len / 4 * 4..len {
            self.store(scalar, dst, i as i64 * 4);
        }
    }

    /// One channel's output rows `[first, last)` from its padded rows at
    /// `x` into its plane `t` of the band buffer, `[band row][W₄]`.
    fn depthwise_channel(&mut self, [x, w, b, t]: [Value; 4], [first, last]: [Value; 2]) {
        let plan = self.plan;
        let phase = &plan.phases[0];
        let row_bytes = plan.row_len() as i64 * 4;
        let kw = self.dw.kernel()[1];
        let band_row = self.band.row as i64 * 4;
        let vectors = self.band.row / 4;
        let per_tile = self.s.dw_vectors.min(vectors);
        // Buffer row 0 is output row `first`.
        let t = {
            let back = self.fb.ins().imul_imm_s(first, band_row);
            self.fb.ins().isub(t, back)
        };
        let activation = self.dw.activation();
        let tile = self.s.dw_rows.min(self.band.rows);
        self.row_tiles(first, last, tile, |e, r, rows| {
            // With the columns in phases, consecutive output pixels are
            // consecutive elements of a stored row.
            let x = e.scaled(x, r, phase.rows.in_step as i64 * row_bytes);
            let t = e.scaled(t, r, band_row);
            e.vector_tiles(vectors, per_tile, vectors / per_tile, |e, v0, nv| {
                let x = e.at(x, v0, 16);
                let t = e.at(t, v0, 16);
                let bias = e.load(types::F32, b, 0);
                let bias = e.fb.ins().splat(types::F32X4, bias);
                let mut accs = vec![bias; rows * nv];
                let mut step = 0usize;
                for rt in &phase.rows.taps {
                    for ct in &phase.cols.taps {
                        let tap = (rt.kernel * kw + ct.kernel) as i64;
                        let base =
                            rt.offset as i64 * row_bytes + plan.col_offset(ct.offset) as i64 * 4;
                        // One weight broadcast, reused by the whole tile.
                        let s = e.load(types::F32, w, tap * 4);
                        let wv = e.fb.ins().splat(types::F32X4, s);
                        // Alternate the order on odd taps (CRANELIFT.md rule 6).
                        let order: Vec<usize> = if step.is_multiple_of(2) {
                            (0..rows * nv).collect()
                        } else {
                            (0..rows * nv).rev().collect()
                        };
                        step += 1;
                        for a in order {
                            let (rr, v) = ((a / nv) as i64, (a % nv) as i64);
                            let off = base + rr * phase.rows.in_step as i64 * row_bytes + v * 16;
                            let xv = e.load(types::F32X4, x, off);
                            accs[a] = e.mul_add(xv, wv, accs[a]);
                        }
                    }
                }
                for (a, acc) in accs.into_iter().enumerate() {
                    let (rr, v) = ((a / nv) as i64, (a % nv) as i64);
                    let acc = e.activation(acc, activation);
                    e.store(acc, t, rr * band_row + v * 16);
                }
            });
        });
    }

    /// Runs `tile(v0, n)` over the vectors `0..vectors` of a row in tiles of
    /// `per_tile`: a loop over the first `looped` whole tiles (keeping the
    /// code small: CRANELIFT.md rule 8), then the rest one by one, emitted
    /// with their first vector known.
    fn vector_tiles(
        &mut self,
        vectors: usize,
        per_tile: usize,
        looped: usize,
        mut tile: impl FnMut(&mut Self, Index, usize),
    ) {
        if looped > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(looped as i64);
            self.counted_loop(zero, end, 1, &[], |e, k, _| {
                let v0 = e.fb.ins().imul_imm_s(k, per_tile as i64);
                tile(e, Index::Variable(v0), per_tile);
                vec![]
            });
        }
        for v0 in (looped * per_tile..vectors).step_by(per_tile) {
            tile(self, Index::Fixed(v0), per_tile.min(vectors - v0));
        }
    }

    /// Runs `group(c, n)` over the channels `0..count` in groups of `n`:
    /// a loop over the whole groups, then the rest as one group.
    fn channel_groups(
        &mut self,
        count: usize,
        n: usize,
        mut group: impl FnMut(&mut Self, Index, usize),
    ) {
        let whole = count - count % n;
        if whole > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(whole as i64);
            self.counted_loop(zero, end, n as i64, &[], |e, c, _| {
                group(e, Index::Variable(c), n);
                vec![]
            });
        }
        if whole < count {
            group(self, Index::Fixed(whole), count - whole);
        }
    }

    /// The pointwise function: every output channel of rows `[first,
    /// last)` from the band buffer.
    fn pointwise(&mut self, first: Value, last: Value) {
        let [t, w, b, y] = self.params;
        let outputs = self.s.pw_outputs.min(self.pw.out_channels());
        let cin = self.pw.in_channels();
        let width = self.pw.out_width();
        let out_plane = (self.pw.out_height() * width) as i64 * 4;
        let band_row = self.band.row as i64 * 4;
        let (vectors, per_tile) = (self.band.row / 4, self.s.pw_vectors);
        let activation = self.pw.activation();
        let zero = self.iconst(0);
        let rows = self.fb.ins().isub(last, first);
        self.counted_loop(zero, rows, 1, &[], |e, i, _| {
            let t = e.scaled(t, i, band_row);
            let r = e.fb.ins().iadd(first, i);
            let y = e.scaled(y, r, width as i64 * 4);
            e.channel_groups(e.pw.out_channels(), outputs, |e, o, count| {
                // Output block `o / outputs`: weights `[channel][outputs]`.
                let block = match o {
                    Index::Fixed(o) => Index::Fixed(o / outputs),
                    Index::Variable(o) => Index::Variable(e.fb.ins().udiv_imm_u(o, outputs as i64)),
                };
                let w = e.at(w, block, (cin * outputs * 4) as i64);
                let b = e.at(b, o, 4);
                let y = e.at(y, o, out_plane);
                e.vector_tiles(vectors, per_tile, width / 4 / per_tile, |e, v0, nv| {
                    let t = e.at(t, v0, 16);
                    let y = e.at(y, v0, 16);
                    let first = match v0 {
                        Index::Fixed(v) => v,
                        Index::Variable(_) => 0,
                    };
                    let mut accs = Vec::with_capacity(count * nv);
                    for k in 0..count {
                        let bias = e.load(types::F32, b, k as i64 * 4);
                        let bias = e.fb.ins().splat(types::F32X4, bias);
                        accs.extend(std::iter::repeat_n(bias, nv));
                    }
                    let accs = e.reduce(t, w, nv, count, accs);
                    for (a, acc) in accs.into_iter().enumerate() {
                        let (k, v) = (a / nv, a % nv);
                        let acc = e.activation(acc, activation);
                        let off = k as i64 * out_plane + v as i64 * 16;
                        // Looped tiles are whole; a tile emitted with its
                        // first vector known may end past the row.
                        let lanes = (width - 4 * (first + v)).min(4);
                        if lanes == 4 {
                            e.store(acc, y, off);
                        } else {
                            for l in 0..lanes {
                                let s = e.fb.ins().extractlane(acc, l as u8);
                                e.store(s, y, off + l as i64 * 4);
                            }
                        }
                    }
                });
            });
            vec![]
        });
    }

    /// The pointwise reduction over every input channel for a register
    /// tile of `count` output channels × the `nv` buffered vectors at `t`
    /// (accumulator `k · nv + v`), the block's weights at `w`.
    fn reduce(
        &mut self,
        t: Value,
        w: Value,
        nv: usize,
        count: usize,
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let cin = self.pw.in_channels();
        let unroll = self.s.pw_unroll.min(cin);
        let looped = cin - cin % unroll;
        let outputs = self.s.pw_outputs.min(self.pw.out_channels()) as i64;
        let plane = self.band.plane() as i64 * 4;
        let mut accs = accs;
        let mut step = 0usize;
        if looped > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(looped as i64);
            accs = self.counted_loop(zero, end, unroll as i64, &accs, |e, c, carried| {
                let w = e.scaled(w, c, outputs * 4);
                let t = e.scaled(t, c, plane);
                let mut accs = carried.to_vec();
                for u in 0..unroll {
                    accs = e.channel(w, t, u, nv, count, &mut step, accs);
                }
                accs
            });
        }
        for c in looped..cin {
            accs = self.channel(w, t, c, nv, count, &mut step, accs);
        }
        accs
    }

    /// Input channel `c` (relative to `w` and `t`) of the pointwise register
    /// tile: its buffered vectors loaded once, each output channel's weight
    /// a fresh broadcast per FMA (CRANELIFT.md rule 3).
    #[allow(clippy::too_many_arguments)]
    fn channel(
        &mut self,
        w: Value,
        t: Value,
        c: usize,
        nv: usize,
        count: usize,
        step: &mut usize,
        mut accs: Vec<Value>,
    ) -> Vec<Value> {
        let outputs = self.s.pw_outputs.min(self.pw.out_channels()) as i64;
        let plane = self.band.plane() as i64 * 4;
        let x: Vec<Value> =
            (0..nv).map(|v| self.load(types::F32X4, t, c as i64 * plane + v as i64 * 16)).collect();
        let order: Vec<usize> =
            if step.is_multiple_of(2) { (0..count).collect() } else { (0..count).rev().collect() };
        *step += 1;
        for k in order {
            for (v, &xv) in x.iter().enumerate() {
                let s = self.load(types::F32, w, (c as i64 * outputs + k as i64) * 4);
                let wv = self.fb.ins().splat(types::F32X4, s);
                let a = k * nv + v;
                // The fresh broadcast first: Cranelift ties the result to
                // the first multiplicand, which then needs no copy.
                accs[a] = self.mul_add(wv, xv, accs[a]);
            }
        }
        accs
    }
}
