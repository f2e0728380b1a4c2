//! Lowering the fused depthwise-separable kernel: a depthwise k×k conv
//! (multiplier 1) and the pointwise 1×1 conv after it, as one function
//! that never writes the depthwise output to memory.
//!
//! The output is computed in tiles of `tile` pixels of one output row. For
//! each tile the depthwise stage computes every channel's output into a
//! small buffer `t` (it stays in L1), laid out `[channel][tile]`: register
//! tiles of `dw_channels` channels × `dw_vectors` vectors of 4 pixels, as
//! the width strategy computes them (one weight broadcast per tap and
//! channel, the input vectors loaded into the FMAs) from the same padded
//! NCHW copy ([`Plan`]: strided rows split into column phases), the
//! activation applied. The pointwise stage then reads the buffer: register
//! tiles of `pw_outputs` output channels × `pw_vectors` vectors of pixels,
//! a loop over the input channels unrolled `pw_unroll` times that loads
//! each channel's buffered vectors once and multiplies them by a fresh
//! broadcast of each output channel's weight (CRANELIFT.md rules 3–6),
//! then the bias, the activation and whole-vector NCHW stores. Compared to
//! two kernels, the intermediate tensor is never written and read back,
//! and the pointwise stage reads a contiguous buffer in L1 instead of one
//! plane per input channel.
//!
//! The function has the C signature
//! `fn(x, w_dw, b_dw, w_pw, b_pw, y, t, first, last)`: `x` the padded
//! input copy (addressed from padded row 0, as the width kernel's band
//! copies are), the packed weights and biases of both stages (see
//! `blocks::dsc`), `y` the image's NCHW output, `t` the tile buffer of
//! `tile · C` floats, and `[first, last)` the output rows to compute.
//!
//! As in [`super`], every address is in range by construction: the plan
//! pads the input for every tap and for the whole vectors read at a row's
//! end, tiles cover exactly the row's pixels, the buffer holds exactly one
//! tile, and lanes past the row's last pixel are never stored.

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
    /// Output pixels (of one row) per fused tile, a multiple of 4: the
    /// depthwise output the pointwise stage consumes at once, `tile · C · 4`
    /// bytes of buffer.
    pub tile: usize,
    /// Channels per depthwise register tile.
    pub dw_channels: usize,
    /// Vectors of 4 pixels per depthwise register tile (accumulators:
    /// `dw_channels · dw_vectors`).
    pub dw_vectors: usize,
    /// Vectors of 4 pixels per pointwise register tile, held in registers
    /// across its output channels.
    pub pw_vectors: usize,
    /// Output channels per pointwise register tile (accumulators:
    /// `pw_outputs · pw_vectors`).
    pub pw_outputs: usize,
    /// Input channels per iteration of the pointwise reduction loop.
    pub pw_unroll: usize,
    /// Output rows per band of the input copy: each band's input rows are
    /// copied into a buffer that stays in cache, then computed.
    pub band_rows: usize,
    /// Threads: each takes a contiguous share of the bands.
    pub threads: usize,
}

/// L1 bytes the heuristic lets the tile buffer take.
const TILE_BYTES: usize = 16 * 1024;

/// Input-copy bytes the heuristic lets one band take (stays in L2).
const BAND_BYTES: usize = 256 * 1024;

/// Accumulators the heuristic's register tiles hold.
const ACCUMULATORS: usize = 12;

impl DscSchedule {
    /// The heuristic schedule for the block `dw` then `pw` on `threads`.
    pub fn choose(dw: &ValidSpec, pw: &ValidSpec, threads: usize) -> DscSchedule {
        let (width, channels) = (dw.out_width(), dw.out_channels());
        let vectors = width.div_ceil(4);
        // Whole rows when they fit the buffer, else equal tiles.
        let most = (TILE_BYTES / (channels * 16)).clamp(1, vectors);
        let tile = vectors.div_ceil(vectors.div_ceil(most));
        // Register tiles that divide the tile's vectors with the least waste.
        let pw_vectors = (1..=3).rev().min_by_key(|&v| tile.div_ceil(v) * v).unwrap_or(1);
        let dw_vectors = tile.min(6);
        DscSchedule {
            tile: 4 * tile,
            dw_channels: (ACCUMULATORS / dw_vectors).clamp(1, 4).min(channels),
            dw_vectors,
            pw_vectors,
            pw_outputs: (ACCUMULATORS / pw_vectors).min(pw.out_channels()),
            pw_unroll: 4,
            band_rows: Self::band_rows(dw),
            threads: threads.clamp(1, MAX_THREADS),
        }
    }

    /// Output rows per band such that a band's input rows take about
    /// [`BAND_BYTES`].
    fn band_rows(dw: &ValidSpec) -> usize {
        let p = dw.padding();
        let padded_row = (dw.width() + p.left + p.right + 4) * dw.in_channels() * 4;
        let reach = (dw.kernel()[0] - 1) * dw.dilation()[0] + 1;
        let rows = (BAND_BYTES / padded_row.max(1)).saturating_sub(reach) / dw.stride()[0];
        rows.clamp(1, dw.out_height())
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
        if self.tile == 0 || !self.tile.is_multiple_of(4) {
            return bad("tile", self.tile, "must be a positive multiple of 4");
        }
        if !(1..=4).contains(&self.dw_channels) {
            return bad("dw_channels", self.dw_channels, "must be 1 to 4");
        }
        if self.dw_vectors == 0 || self.dw_vectors * self.dw_channels > MAX_ACCUMULATORS {
            return bad(
                "dw_vectors",
                self.dw_vectors,
                "must be at least 1, times dw_channels at most 14",
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
        if self.band_rows == 0 {
            return bad("band_rows", self.band_rows, "must be at least 1");
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
            row_tile: 1,
            loop_order: LoopOrder::ChannelsOuter,
            col_block: None,
            threads: self.threads,
            split: Split::Rows,
            copy: InputCopy::Bands(self.band_rows),
            interleave: false,
        }
    }

    /// Floats of the tile buffer for a block whose depthwise conv is `dw`.
    pub fn tile_len(&self, dw: &ValidSpec) -> usize {
        self.tile.min(dw.out_width().next_multiple_of(4)) * dw.out_channels()
    }
}

/// The signature of the fused kernel.
pub fn signature(pointer: Type, call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..7 {
        sig.params.push(AbiParam::new(pointer));
    }
    for _ in 0..2 {
        sig.params.push(AbiParam::new(types::I64));
    }
    sig
}

/// Emits the body of `func` (whose signature is [`signature`]) for the
/// block `dw` then `pw`; `plan` is the depthwise plan of
/// [`DscSchedule::depthwise`].
pub fn lower(
    dw: &ValidSpec,
    pw: &ValidSpec,
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
        target,
        fb,
        x: p[0],
        w_dw: p[1],
        b_dw: p[2],
        w_pw: p[3],
        b_pw: p[4],
        y: p[5],
        t: p[6],
    };
    e.rows(p[7], p[8]);
    e.fb.ins().return_(&[]);
    e.fb.seal_all_blocks();
    e.fb.finalize(target.frontend);
}

/// The first pixel of a tile: known when emitted, or a loop's value.
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
    target: Target,
    fb: FunctionBuilder<'a>,
    x: Value,
    w_dw: Value,
    b_dw: Value,
    w_pw: Value,
    b_pw: Value,
    y: Value,
    t: Value,
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
    /// Pixels of one buffered channel: the tile, in whole vectors.
    fn tile(&self) -> usize {
        self.s.tile.min(self.dw.out_width().next_multiple_of(4))
    }

    /// `base` advanced to pixel `start`, `step` bytes a pixel.
    fn at(&mut self, base: Value, start: Start, step: i64) -> Value {
        match start {
            Start::Fixed(p) => self.offset(base, p as i64 * step),
            Start::Variable(p) => self.scaled(base, p, step),
        }
    }

    /// Output rows `[first, last)`, each in whole tiles and a tail tile.
    fn rows(&mut self, first: Value, last: Value) {
        let width = self.dw.out_width();
        let tile = self.tile();
        let (full, tail) = (width / tile, width % tile);
        self.counted_loop(first, last, 1, &[], |e, row, _| {
            if full > 0 {
                let zero = e.iconst(0);
                let n = e.iconst(full as i64);
                e.counted_loop(zero, n, 1, &[], |e, k, _| {
                    let start = e.fb.ins().imul_imm_s(k, tile as i64);
                    e.depthwise(row, Start::Variable(start), tile);
                    e.pointwise(row, Start::Variable(start), tile);
                    vec![]
                });
            }
            if tail > 0 {
                e.depthwise(row, Start::Fixed(full * tile), tail);
                e.pointwise(row, Start::Fixed(full * tile), tail);
            }
            vec![]
        });
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

    /// The depthwise stage: the output of every channel at pixels
    /// `start..start + n` of `row` into the buffer, `[channel][tile]`.
    fn depthwise(&mut self, row: Value, start: Start, n: usize) {
        let plan = self.plan;
        let phase = &plan.phases[0];
        let row_bytes = plan.row_len() as i64 * 4;
        let plane = plan.plane_step() as i64 * 4;
        let kw = self.dw.kernel()[1];
        let taps = (self.dw.kernel()[0] * kw) as i64;
        let channel_bytes = self.tile() as i64 * 4;
        // With the columns in phases, consecutive output pixels are
        // consecutive elements of a stored row.
        let x = self.scaled(self.x, row, phase.rows.in_step as i64 * row_bytes);
        let x = self.at(x, start, 4);
        let (vectors, per_tile) = (n.div_ceil(4), self.s.dw_vectors);
        self.channel_groups(self.dw.out_channels(), self.s.dw_channels, |e, c, count| {
            let x = e.at(x, c, plane);
            let w = e.at(e.w_dw, c, taps * 4);
            let b = e.at(e.b_dw, c, 4);
            let t = e.at(e.t, c, channel_bytes);
            for first in (0..vectors).step_by(per_tile) {
                let nv = per_tile.min(vectors - first);
                let mut accs = Vec::with_capacity(count * nv);
                for ch in 0..count {
                    let bias = e.load(types::F32, b, ch as i64 * 4);
                    let bias = e.fb.ins().splat(types::F32X4, bias);
                    accs.extend(std::iter::repeat_n(bias, nv));
                }
                let mut step = 0usize;
                for rt in &phase.rows.taps {
                    for ct in &phase.cols.taps {
                        let tap = (rt.kernel * kw + ct.kernel) as i64;
                        let base =
                            rt.offset as i64 * row_bytes + plan.col_offset(ct.offset) as i64 * 4;
                        for ch in 0..count {
                            // One weight broadcast, reused by the channel's
                            // vectors of pixels (as the width strategy).
                            let s = e.load(types::F32, w, (ch as i64 * taps + tap) * 4);
                            let wv = e.fb.ins().splat(types::F32X4, s);
                            // Alternate the order on odd steps (CRANELIFT.md rule 6).
                            let order: Vec<usize> = if step.is_multiple_of(2) {
                                (0..nv).collect()
                            } else {
                                (0..nv).rev().collect()
                            };
                            step += 1;
                            for v in order {
                                let off = ch as i64 * plane + base + (first + v) as i64 * 16;
                                let xv = e.load(types::F32X4, x, off);
                                let a = ch * nv + v;
                                accs[a] = e.mul_add(xv, wv, accs[a]);
                            }
                        }
                    }
                }
                for (a, acc) in accs.into_iter().enumerate() {
                    let (ch, v) = (a / nv, a % nv);
                    let acc = e.activation(acc, e.dw.activation());
                    e.store(acc, t, ch as i64 * channel_bytes + (first + v) as i64 * 16);
                }
            }
        });
    }

    /// The pointwise stage: every output channel at pixels `start..start +
    /// n` of `row`, from the buffer.
    fn pointwise(&mut self, row: Value, start: Start, n: usize) {
        let outputs = self.s.pw_outputs.min(self.pw.out_channels());
        let cin = self.pw.in_channels();
        let out_plane = (self.pw.out_height() * self.pw.out_width()) as i64 * 4;
        let y = self.scaled(self.y, row, self.pw.out_width() as i64 * 4);
        let y = self.at(y, start, 4);
        let (vectors, per_tile) = (n.div_ceil(4), self.s.pw_vectors);
        self.channel_groups(self.pw.out_channels(), outputs, |e, o, count| {
            // Output block `o / outputs`: weights `[channel][outputs]`.
            let block = match o {
                Start::Fixed(o) => Start::Fixed(o / outputs),
                Start::Variable(o) => Start::Variable(e.fb.ins().udiv_imm_u(o, outputs as i64)),
            };
            let w = e.at(e.w_pw, block, (cin * outputs * 4) as i64);
            let b = e.at(e.b_pw, o, 4);
            let y = e.at(y, o, out_plane);
            for first in (0..vectors).step_by(per_tile) {
                let nv = per_tile.min(vectors - first);
                let mut accs = Vec::with_capacity(count * nv);
                for k in 0..count {
                    let bias = e.load(types::F32, b, k as i64 * 4);
                    let bias = e.fb.ins().splat(types::F32X4, bias);
                    accs.extend(std::iter::repeat_n(bias, nv));
                }
                let accs = e.reduce(w, first, nv, count, accs);
                for (a, acc) in accs.into_iter().enumerate() {
                    let (k, v) = (a / nv, a % nv);
                    let acc = e.activation(acc, e.pw.activation());
                    let off = k as i64 * out_plane + (first + v) as i64 * 16;
                    let lanes = (n - 4 * (first + v)).min(4);
                    if lanes == 4 {
                        e.store(acc, y, off);
                    } else {
                        for l in 0..lanes {
                            let s = e.fb.ins().extractlane(acc, l as u8);
                            e.store(s, y, off + l as i64 * 4);
                        }
                    }
                }
            }
        });
    }

    /// The pointwise reduction over every input channel for a register
    /// tile of `count` output channels × buffered vectors `first..first +
    /// nv` (accumulator `k · nv + v`), the block's weights at `w`.
    fn reduce(
        &mut self,
        w: Value,
        first: usize,
        nv: usize,
        count: usize,
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let cin = self.pw.in_channels();
        let unroll = self.s.pw_unroll.min(cin);
        let looped = cin - cin % unroll;
        let outputs = self.s.pw_outputs.min(self.pw.out_channels()) as i64;
        let channel_bytes = self.tile() as i64 * 4;
        let t = self.offset(self.t, first as i64 * 16);
        let mut accs = accs;
        let mut step = 0usize;
        if looped > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(looped as i64);
            accs = self.counted_loop(zero, end, unroll as i64, &accs, |e, c, carried| {
                let w = e.scaled(w, c, outputs * 4);
                let t = e.scaled(t, c, channel_bytes);
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
        let channel_bytes = self.tile() as i64 * 4;
        let x: Vec<Value> = (0..nv)
            .map(|v| self.load(types::F32X4, t, c as i64 * channel_bytes + v as i64 * 16))
            .collect();
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
