//! Lowering the fused depthwise-separable kernel: a depthwise k×k conv
//! (multiplier 1) and the pointwise 1×1 conv after it, as one function
//! that never writes the depthwise output to memory.
//!
//! The block is computed in bands of `band_rows` output rows. For each
//! band, and each channel in turn, the run copies the input rows the band
//! reads into a small zero-bordered buffer (it stays in L1, as the width
//! strategy's per-group copy does) and calls the *depthwise function*:
//! register tiles of `dw_rows` rows × `dw_vectors` vectors of 4 pixels,
//! one weight broadcast per tap reused by the whole tile and the input
//! vectors loaded into the FMAs (the width strategy's microkernel), the
//! activation, and whole-vector stores into the band buffer `t`,
//! `[channel][band row][W₄]` (rows rounded up to whole vectors; it stays
//! in L2). Then the *pointwise function* runs over the band's rows:
//! register tiles of `pw_outputs` output channels × `pw_vectors` vectors of
//! pixels, a loop over the input channels unrolled `pw_unroll` times that
//! loads each channel's buffered vectors once and multiplies them by a
//! fresh broadcast of each output channel's weight (CRANELIFT.md rules
//! 3–6), then the bias, the activation and whole-vector NCHW stores.
//! Compared to two kernels, the intermediate tensor never leaves the cache,
//! and the pointwise stage reads a buffer laid out for it instead of one
//! image plane per input channel.
//!
//! The depthwise function has the C signature `fn(x, w, b, t, first,
//! last)`: `x` one channel's padded input rows (addressed from padded row
//! 0, as band copies are), its weights and bias, `t` its plane of the band
//! buffer, and `[first, last)` the band's output rows. The pointwise
//! function is `fn(t, w, b, y, first, last)`: the band buffer, the packed
//! weights and bias (see `blocks::dsc`), the image's NCHW output.
//!
//! As in [`super`], every address is in range by construction: the plan
//! pads the input for every tap and for the whole vectors read at a row's
//! end, the band buffer holds every row of the largest band in whole
//! vectors, and lanes past a row's last pixel are never stored.

use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, Signature, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use serde::{Deserialize, Serialize};

use super::lower::Lower;
use super::{Plan, Target};
use crate::error::{Error, Result};
use crate::schedule::{
    InputCopy, LoopOrder, MAX_ACCUMULATORS, MAX_THREADS, Schedule, Split, Strategy,
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

/// Bytes the heuristic lets the band buffer take (it stays in L2).
const BAND_BYTES: usize = 256 * 1024;

/// Accumulators the heuristic's register tiles hold.
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
        let dw_rows = band_rows.min(ACCUMULATORS);
        let pw_vectors = (1..=3).rev().min_by_key(|&v| vectors.div_ceil(v) * v).unwrap_or(1);
        DscSchedule {
            band_rows,
            dw_rows,
            dw_vectors: (ACCUMULATORS / dw_rows).min(vectors),
            pw_vectors,
            pw_outputs: (ACCUMULATORS / pw_vectors).min(pw.out_channels()),
            pw_unroll: 4,
            threads,
        }
    }

    /// Checks that this schedule can compute the block; the error names
    /// the field that cannot.
    pub fn legal(&self) -> Result<()> {
        let bad = |field: &'static str, value: usize, reason: &str| {
            Err(Error::InvalidSchedule {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        if self.band_rows == 0 {
            return bad("band_rows", self.band_rows, "must be at least 1");
        }
        if self.dw_rows == 0 {
            return bad("dw_rows", self.dw_rows, "must be at least 1");
        }
        if self.dw_vectors == 0 || self.dw_vectors * self.dw_rows > MAX_ACCUMULATORS {
            return bad(
                "dw_vectors",
                self.dw_vectors,
                "must be at least 1, times dw_rows at most 14",
            );
        }
        if !(1..=3).contains(&self.pw_vectors) {
            return bad("pw_vectors", self.pw_vectors, "must be 1, 2 or 3");
        }
        if self.pw_outputs == 0 || self.pw_outputs * self.pw_vectors > MAX_ACCUMULATORS {
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

/// The signature of both functions: four pointers and a row range.
pub fn signature(pointer: Type, call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(pointer));
    }
    for _ in 0..2 {
        sig.params.push(AbiParam::new(types::I64));
    }
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
    let mut fb = FunctionBuilder::new(func, &mut fctx);
    let entry = fb.create_block();
    fb.append_block_params_for_function_params(entry);
    fb.switch_to_block(entry);
    let p = fb.block_params(entry).to_vec();
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
        Stage::Depthwise => e.depthwise(p[4], p[5]),
        Stage::Pointwise => e.pointwise(p[4], p[5]),
    }
    e.fb.ins().return_(&[]);
    e.fb.seal_all_blocks();
    e.fb.finalize(target.frontend);
}

/// An index known when the code is emitted, or computed by it.
#[derive(Clone, Copy)]
enum Start {
    Fixed(usize),
    Variable(Value),
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
    /// `base` advanced by `index` steps of `step` bytes.
    fn at(&mut self, base: Value, index: Start, step: i64) -> Value {
        match index {
            Start::Fixed(i) => self.offset(base, i as i64 * step),
            Start::Variable(i) => self.scaled(base, i, step),
        }
    }

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

    /// The depthwise function: one channel's output rows `[first, last)`
    /// into its plane of the band buffer, `[band row][W₄]`.
    fn depthwise(&mut self, first: Value, last: Value) {
        let [x, w, b, t] = self.params;
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
        mut tile: impl FnMut(&mut Self, Start, usize),
    ) {
        if looped > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(looped as i64);
            self.counted_loop(zero, end, 1, &[], |e, k, _| {
                let v0 = e.fb.ins().imul_imm_s(k, per_tile as i64);
                tile(e, Start::Variable(v0), per_tile);
                vec![]
            });
        }
        for v0 in (looped * per_tile..vectors).step_by(per_tile) {
            tile(self, Start::Fixed(v0), per_tile.min(vectors - v0));
        }
    }

    /// Runs `group(c, n)` over the channels `0..count` in groups of `n`:
    /// a loop over the whole groups, then the rest as one group.
    fn channel_groups(
        &mut self,
        count: usize,
        n: usize,
        mut group: impl FnMut(&mut Self, Start, usize),
    ) {
        let whole = count - count % n;
        if whole > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(whole as i64);
            self.counted_loop(zero, end, n as i64, &[], |e, c, _| {
                group(e, Start::Variable(c), n);
                vec![]
            });
        }
        if whole < count {
            group(self, Start::Fixed(whole), count - whole);
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
                    Start::Fixed(o) => Start::Fixed(o / outputs),
                    Start::Variable(o) => Start::Variable(e.fb.ins().udiv_imm_u(o, outputs as i64)),
                };
                let w = e.at(w, block, (cin * outputs * 4) as i64);
                let b = e.at(b, o, 4);
                let y = e.at(y, o, out_plane);
                e.vector_tiles(vectors, per_tile, width / 4 / per_tile, |e, v0, nv| {
                    let t = e.at(t, v0, 16);
                    let y = e.at(y, v0, 16);
                    let first = match v0 {
                        Start::Fixed(v) => v,
                        Start::Variable(_) => 0,
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
