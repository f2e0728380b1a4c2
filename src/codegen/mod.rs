//! Lowering a (spec, schedule) to Cranelift IR.
//!
//! One lowering serves every kind: the [`Plan`] turns the layer into phases of
//! gathering convolutions over a padded input, and the emitter writes, for
//! each phase, a loop nest whose innermost body is a register-tiled f32x4
//! microkernel (CRANELIFT.md: fresh single-use broadcasts, accumulators as
//! block parameters, top-tested loops, alternating FMA order). Every size,
//! stride, offset and channel count is an immediate.
//!
//! The generated function has the C signature
//! `fn(x, w, bias, y, begin, end, part, parts, guard)`: `x` is one padded (and, for the
//! depthwise strategy, channel-blocked) input image, `w` and `bias` the
//! packed weights and bias, `y` the image's NCHW output, `[begin, end)`
//! the range of work items (channel blocks) to compute, and `part` of
//! `parts` (`part < parts`) the slice of every phase's output rows.
//!
//! Invariant: the plain lowering emits no bounds checks. Every address it
//! forms is in range because the plan pads the input for every tap it
//! keeps, tiles cover exactly the phase's output pixels, and lanes past a
//! channel tail are never stored.
//!
//! The **checked lowering** (`Target::checked`, from
//! `Compiler::checked`) tests that claim instead of trusting it: every
//! pointer is formed from one of the four buffer parameters, and every load
//! and store compares its bytes with that buffer's bounds, which the caller
//! writes into the guard block `guard` points to (`[lo, hi)` byte addresses
//! of the input, weights, bias and output, then a fault record). An access
//! outside is not made; the fault is recorded and `Kernel::run` reports it
//! as an error. The property tests run a share of their cases this way,
//! and `convjit run --checked` does on request.

pub mod dsc;
mod lower;
pub mod plan;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, Function, InstBuilder, Signature, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use lower::{Checks, Index, Lower};
pub use plan::Plan;
use plan::{Phase, Tap};

use crate::schedule::{Schedule, Strategy};
use crate::spec::ValidSpec;

/// The most taps of one channel the emitter unrolls: past this, it loops
/// over the kernel's rows (and over chunks of a row's columns), so compile
/// time and memory grow with the register tile and not with the kernel. A
/// 7×7 kernel (49 taps) stays unrolled; a legal 1→1-channel conv with a
/// 256×256 kernel compiles in milliseconds instead of needing gigabytes.
pub const MAX_UNROLLED_TAPS: usize = 64;

/// Whether `steps` (pairs) form an arithmetic progression.
fn is_progression(steps: &[(i64, i64)]) -> bool {
    steps
        .windows(3)
        .all(|w| (w[1].0 - w[0].0, w[1].1 - w[0].1) == (w[2].0 - w[1].0, w[2].1 - w[1].1))
}

/// The first pair of an arithmetic progression and its step (0 for one
/// element). The plan's taps along an axis always form one: conv2d's step
/// by one kernel index and the dilation, a transposed phase's by the stride
/// over their common divisor with the dilation.
fn progression(steps: &[(i64, i64)]) -> ((i64, i64), (i64, i64)) {
    assert!(is_progression(steps), "the taps of an axis form an arithmetic progression");
    let step = match steps {
        [a, b, ..] => (b.0 - a.0, b.1 - a.1),
        _ => (0, 0),
    };
    (steps[0], step)
}

/// The signature of every generated kernel.
pub fn signature(pointer: Type, call_conv: cranelift_codegen::isa::CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for _ in 0..4 {
        sig.params.push(AbiParam::new(pointer));
    }
    for _ in 0..4 {
        sig.params.push(AbiParam::new(types::I64));
    }
    // The guard block of the checked lowering (unused by the plain one).
    sig.params.push(AbiParam::new(pointer));
    sig
}

/// What the target offers the emitter.
#[derive(Clone, Copy)]
pub struct Target {
    /// The pointer type and calling convention, as the frontend needs them.
    pub frontend: cranelift_codegen::isa::TargetFrontendConfig,
    /// Whether fused multiply-add is available; without it each FMA is a
    /// multiply and an add (one more rounding).
    pub has_fma: bool,
    /// Whether to emit the checked lowering: every load and store tested
    /// against the bounds of its buffer (see [`lower`]).
    pub checked: bool,
}

/// Emits the body of `func` (whose signature is [`signature`]).
pub fn lower(
    spec: &ValidSpec,
    schedule: &Schedule,
    plan: &Plan,
    target: Target,
    func: &mut Function,
) {
    let mut fctx = FunctionBuilderContext::new();
    let (fb, params) = lower::begin(func, &mut fctx);
    let checks = target.checked.then(|| {
        use lower::Buffer::{Bias, Input, Output, Weights};
        let buffers =
            [(params[0], Input), (params[1], Weights), (params[2], Bias), (params[3], Output)];
        Checks::new(params[8], buffers)
    });
    let mut e = Emitter {
        spec,
        schedule,
        plan,
        target,
        fb,
        x: params[0],
        w: params[1],
        b: params[2],
        y: params[3],
        checks,
    };
    e.body(params[4], params[5], params[6], params[7]);
    lower::finish(e.fb, target.frontend);
}

/// Runtime values that locate one work item.
#[derive(Clone, Copy)]
struct Item {
    x: Value,
    w: Value,
    b: Value,
    y: Value,
    /// Non-zero when the item's last vector block runs past the channels.
    partial: Option<Value>,
}

/// Which member of a phase's rows and of its columns (see
/// `plan::Axis::members`).
#[derive(Clone, Copy)]
struct Member {
    rows: Index,
    cols: Index,
}

/// The output pixels one register tile computes: `pixels` consecutive
/// phase positions in each of `rows` consecutive phase rows. Position
/// `q = r · pixels + p` is pixel `p` of row `r`.
#[derive(Clone, Copy)]
struct Shape {
    pixels: usize,
    rows: usize,
}

impl Shape {
    fn positions(self) -> usize {
        self.pixels * self.rows
    }
}

impl<'a> Lower<'a> for Emitter<'a> {
    fn fb(&mut self) -> &mut FunctionBuilder<'a> {
        &mut self.fb
    }
    fn has_fma(&self) -> bool {
        self.target.has_fma
    }
    fn checks(&mut self) -> Option<&mut Checks> {
        self.checks.as_mut()
    }
}

struct Emitter<'a> {
    spec: &'a ValidSpec,
    schedule: &'a Schedule,
    plan: &'a Plan,
    target: Target,
    fb: FunctionBuilder<'a>,
    x: Value,
    w: Value,
    b: Value,
    y: Value,
    /// The checked lowering's state, when it is the one emitted.
    checks: Option<Checks>,
}

impl Emitter<'_> {
    /// Bytes of one stored pixel (see `Plan::pixel_len`).
    fn elem_bytes(&self) -> i64 {
        self.plan.pixel_len() as i64 * 4
    }

    /// Bytes of one stored padded row.
    fn row_bytes(&self) -> i64 {
        self.plan.row_len() as i64 * self.elem_bytes()
    }

    /// Bytes from one input plane (a channel, or a block of 4) to the next.
    fn plane_bytes(&self) -> i64 {
        self.plan.plane_step() as i64 * 4
    }

    /// Stored elements between consecutive phase positions along a row.
    fn col_stride(&self, phase: &Phase) -> i64 {
        (phase.cols.in_step / self.plan.col_phases) as i64
    }

    /// Taps of the full kernel (the packed weights hold all of them).
    fn kernel_taps(&self) -> usize {
        self.spec.kernel()[0] * self.spec.kernel()[1]
    }

    /// Bytes of one input channel's packed weights for one work item.
    fn w_channel_bytes(&self) -> i64 {
        (self.kernel_taps() * self.plan.lanes * 4) as i64
    }

    fn out_plane(&self) -> i64 {
        (self.spec.out_height() * self.spec.out_width()) as i64
    }

    /// Output channels between consecutive lanes.
    fn lane_stride(&self) -> usize {
        match self.schedule.strategy {
            Strategy::Direct | Strategy::Width => 1,
            Strategy::Depthwise => self.spec.out_per_group(),
        }
    }

    /// Lanes valid in a partial work item (all lanes if none is partial).
    fn partial_lanes(&self) -> usize {
        let lanes = self.plan.lanes;
        let channels = match self.schedule.strategy {
            Strategy::Direct | Strategy::Width => self.spec.out_per_group(),
            Strategy::Depthwise => self.spec.groups(),
        };
        match channels % lanes {
            0 => lanes,
            r => r,
        }
    }

    /// The whole function body: the two outer loops in the schedule's order,
    /// over work items `[begin, end)` and, in every member of every phase,
    /// part `part` of `parts` equal slices of the output rows.
    fn body(&mut self, begin: Value, end: Value, part: Value, parts: Value) {
        let phases = self.plan.phases.clone();
        match self.schedule.loop_order {
            crate::schedule::LoopOrder::ChannelsOuter => {
                self.counted_loop(begin, end, 1, &[], |e, wi, _| {
                    let item = e.item(wi);
                    for phase in &phases {
                        e.members(phase, |e, member| {
                            let item = e.shifted(&item, phase, member);
                            let (first, last) = e.row_slice(phase, part, parts);
                            e.row_loop(phase, first, last, |e, t, rows| {
                                let shape = Shape { pixels: phase.cols.count, rows };
                                e.row(&item, phase, t, Index::Fixed(0), shape);
                            });
                        });
                    }
                    vec![]
                });
            }
            crate::schedule::LoopOrder::RowsOuter => {
                for phase in &phases {
                    let count = phase.cols.count;
                    let block = match self.schedule.col_block {
                        Some(b) => b.next_multiple_of(self.schedule.pixel_tile).min(count),
                        None => count,
                    };
                    let (full, rest) = (count / block, count % block);
                    self.members(phase, |e, member| {
                        // Every work item over one block of the row's pixels.
                        let items = |e: &mut Self, t: Value, start: Index, shape: Shape| {
                            e.counted_loop(begin, end, 1, &[], |e, wi, _| {
                                let item = e.item(wi);
                                let item = e.shifted(&item, phase, member);
                                e.row(&item, phase, t, start, shape);
                                vec![]
                            });
                        };
                        let (first, last) = e.row_slice(phase, part, parts);
                        e.row_loop(phase, first, last, |e, t, rows| {
                            if full == 1 {
                                items(e, t, Index::Fixed(0), Shape { pixels: block, rows });
                            } else {
                                let zero = e.iconst(0);
                                let n = e.iconst(full as i64);
                                e.counted_loop(zero, n, 1, &[], |e, k, _| {
                                    let start = e.fb.ins().imul_imm_s(k, block as i64);
                                    let shape = Shape { pixels: block, rows };
                                    items(e, t, Index::Variable(start), shape);
                                    vec![]
                                });
                            }
                            if rest > 0 {
                                let start = Index::Fixed(full * block);
                                items(e, t, start, Shape { pixels: rest, rows });
                            }
                        });
                    });
                }
            }
        }
    }

    /// Runs `body` for every member of `phase` (see `plan::Axis::members`):
    /// in loops over the rows' and the columns' members, or once for an
    /// axis of one.
    fn members(&mut self, phase: &Phase, mut body: impl FnMut(&mut Self, Member)) {
        let (rows, cols) = (phase.rows.members as i64, phase.cols.members as i64);
        let mut over_cols = |e: &mut Self, r: Index| {
            if cols == 1 {
                body(e, Member { rows: r, cols: Index::Fixed(0) });
                return;
            }
            let (zero, n) = (e.iconst(0), e.iconst(cols));
            e.counted_loop(zero, n, 1, &[], |e, c, _| {
                body(e, Member { rows: r, cols: Index::Variable(c) });
                vec![]
            });
        };
        if rows == 1 {
            over_cols(self, Index::Fixed(0));
            return;
        }
        let (zero, n) = (self.iconst(0), self.iconst(rows));
        self.counted_loop(zero, n, 1, &[], |e, r, _| {
            over_cols(e, Index::Variable(r));
            vec![]
        });
    }

    /// `item`'s pointers moved to `member` of `phase`: its input by the
    /// member's tap offsets, its weights by its kernel indices, its output
    /// by its output start.
    fn shifted(&mut self, item: &Item, phase: &Phase, member: Member) -> Item {
        let (rows, cols) = (phase.rows.shift, phase.cols.shift);
        // Members exist on transposed axes only, whose copies never split
        // rows into column phases: a column step is one stored pixel.
        debug_assert!(phase.cols.members == 1 || self.plan.col_phases == 1);
        let (kw, tap) = (self.spec.kernel()[1] as i64, self.tap_bytes());
        let x = self.at(item.x, member.rows, rows.offset * self.row_bytes());
        let x = self.at(x, member.cols, cols.offset * self.elem_bytes());
        let w = self.at(item.w, member.rows, rows.kernel * kw * tap);
        let w = self.at(w, member.cols, cols.kernel * tap);
        let y = self.at(item.y, member.rows, rows.out * self.spec.out_width() as i64 * 4);
        let y = self.at(y, member.cols, cols.out * 4);
        Item { x, w, y, ..*item }
    }

    /// The rows `[first, last)` of `phase` in tiles of `row_tile` rows,
    /// then one at a time for the rest: `body(t, rows)` emits rows
    /// `t..t + rows`.
    fn row_loop(
        &mut self,
        phase: &Phase,
        first: Value,
        last: Value,
        mut body: impl FnMut(&mut Self, Value, usize),
    ) {
        let tile = self.schedule.row_tile.min(phase.rows.count).max(1);
        if tile == 1 {
            self.counted_loop(first, last, 1, &[], |e, t, _| {
                body(e, t, 1);
                vec![]
            });
            return;
        }
        let n = self.fb.ins().isub(last, first);
        let rest = self.fb.ins().urem_imm_u(n, tile as i64);
        let tiled = self.fb.ins().isub(last, rest);
        self.counted_loop(first, tiled, tile as i64, &[], |e, t, _| {
            body(e, t, tile);
            vec![]
        });
        self.counted_loop(tiled, last, 1, &[], |e, t, _| {
            body(e, t, 1);
            vec![]
        });
    }

    /// Rows `[count·part / parts, count·(part + 1) / parts)` of a phase: the
    /// slices of all parts tile its rows exactly.
    fn row_slice(&mut self, phase: &Phase, part: Value, parts: Value) -> (Value, Value) {
        let count = phase.rows.count as i64;
        let first = self.fb.ins().imul_imm_s(part, count);
        let first = self.fb.ins().udiv(first, parts);
        let next = self.fb.ins().iadd_imm_s(part, 1);
        let last = self.fb.ins().imul_imm_s(next, count);
        let last = self.fb.ins().udiv(last, parts);
        (first, last)
    }

    /// The input planes of group `g` (see `Plan::group_items`): at `x`
    /// itself when the copy holds one group.
    fn group_input(&mut self, g: Value) -> Value {
        if self.plan.copy_per_group {
            self.x
        } else {
            self.scaled(self.x, g, self.plan.group_planes as i64 * self.plane_bytes())
        }
    }

    /// Decodes work item `wi` into base pointers.
    fn item(&mut self, wi: Value) -> Item {
        let lanes = self.plan.lanes as i64;
        let out_plane_bytes = self.out_plane() * 4;
        let w_item_bytes = self.spec.in_per_group() as i64 * self.w_channel_bytes();
        let w = self.scaled(self.w, wi, w_item_bytes);
        let b = self.scaled(self.b, wi, lanes * 4);
        let (x, y, last, partial_at) = match self.schedule.strategy {
            Strategy::Direct | Strategy::Width => {
                let blocks = self.spec.out_per_group().div_ceil(self.plan.lanes) as i64;
                let g = self.fb.ins().udiv_imm_u(wi, blocks);
                let ocb = self.fb.ins().urem_imm_u(wi, blocks);
                let x = self.group_input(g);
                // First output channel: g·cog + ocb·lanes.
                let y = self.scaled(self.y, g, self.spec.out_per_group() as i64 * out_plane_bytes);
                let y = self.scaled(y, ocb, lanes * out_plane_bytes);
                (x, y, ocb, blocks - 1)
            }
            Strategy::Depthwise => {
                let m = self.spec.out_per_group() as i64;
                let blocks = self.spec.groups().div_ceil(self.plan.lanes) as i64;
                let cb = self.fb.ins().udiv_imm_u(wi, m);
                let k = self.fb.ins().urem_imm_u(wi, m);
                let x = self.group_input(cb);
                // First output channel: (cb·lanes)·m + k.
                let y = self.scaled(self.y, cb, lanes * m * out_plane_bytes);
                let y = self.scaled(y, k, out_plane_bytes);
                (x, y, cb, blocks - 1)
            }
        };
        let partial = (self.partial_lanes() != self.plan.lanes)
            .then(|| self.fb.ins().icmp_imm_s(IntCC::Equal, last, partial_at));
        Item { x, w, b, y, partial }
    }

    /// Phase positions `start..start + shape.pixels` of output rows
    /// `t..t + shape.rows` of `phase` for one work item: full pixel tiles in
    /// a loop, then the tail tile.
    fn row(&mut self, item: &Item, phase: &Phase, t: Value, start: Index, shape: Shape) {
        let (pixels, rows_tiled) = (shape.pixels, shape.rows);
        let (rows, cols) = (&phase.rows, &phase.cols);
        let x_step = self.col_stride(phase) * self.elem_bytes();
        let y_step = cols.out_step as i64 * 4;
        let x_row = self.scaled(item.x, t, rows.in_step as i64 * self.row_bytes());
        let x_row = self.at(x_row, start, x_step);
        let y_row = self.scaled(item.y, t, (rows.out_step * self.spec.out_width()) as i64 * 4);
        let y_row = self.at(y_row, start, y_step);
        let y_row = self
            .offset(y_row, (rows.out_start * self.spec.out_width() + cols.out_start) as i64 * 4);
        let row_item = Item { x: x_row, y: y_row, ..*item };

        let tile = self.schedule.pixel_tile.min(pixels);
        let full = pixels / tile;
        let tail = pixels % tile;
        let x_step = tile as i64 * x_step;
        let y_step = tile as i64 * y_step;
        if full > 0 {
            let zero = self.iconst(0);
            let n = self.iconst(full as i64);
            self.counted_loop(zero, n, 1, &[], |e, u, _| {
                let x = e.scaled(row_item.x, u, x_step);
                let y = e.scaled(row_item.y, u, y_step);
                e.tile(&Item { x, y, ..row_item }, phase, Shape { pixels: tile, rows: rows_tiled });
                vec![]
            });
        }
        if tail > 0 {
            let x = self.offset(row_item.x, full as i64 * x_step);
            let y = self.offset(row_item.y, full as i64 * y_step);
            self.tile(&Item { x, y, ..row_item }, phase, Shape { pixels: tail, rows: rows_tiled });
        }
    }

    /// One register tile, accumulated over the reduction, then the
    /// epilogue: `pixels` output pixels × `oc_vectors` vectors of channels
    /// (accumulator `v · pixels + p`), or for the width strategy one channel
    /// × `pixels` pixels in vectors of 4 (accumulator `p / 4`).
    fn tile(&mut self, item: &Item, phase: &Phase, shape: Shape) {
        let mut accs: Vec<Value> = if self.schedule.strategy == Strategy::Width {
            let b = self.load(types::F32, item.b, 0);
            let bias = self.fb.ins().splat(types::F32X4, b);
            vec![bias; shape.rows * shape.pixels.div_ceil(4)]
        } else {
            let vectors = self.schedule.oc_vectors;
            let mut bias = Vec::with_capacity(vectors);
            for v in 0..vectors {
                bias.push(self.load(types::F32X4, item.b, v as i64 * 16));
            }
            (0..vectors).flat_map(|v| std::iter::repeat_n(bias[v], shape.positions())).collect()
        };
        let has_taps = !phase.rows.taps.is_empty() && !phase.cols.taps.is_empty();
        if has_taps {
            accs = match self.schedule.strategy {
                Strategy::Direct | Strategy::Width => {
                    self.reduce_channels(item, phase, shape, accs)
                }
                Strategy::Depthwise => {
                    let mut step = 0;
                    self.taps(item.x, item.w, phase, shape, &mut step, accs)
                }
            };
        }
        self.epilogue(item, phase, shape, accs);
    }

    /// The Direct reduction: a loop over the group's input channels, unrolled
    /// by `reduction_unroll`, each channel running every tap.
    fn reduce_channels(
        &mut self,
        item: &Item,
        phase: &Phase,
        shape: Shape,
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let channels = self.spec.in_per_group();
        let unroll = self.schedule.reduction_unroll.min(channels);
        let looped = channels - channels % unroll;
        let (plane, wch) = (self.plane_bytes(), self.w_channel_bytes());
        let mut accs = accs;
        if looped > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(looped as i64);
            accs = self.counted_loop(zero, end, unroll as i64, &accs, |e, c, carried| {
                let x = e.scaled(item.x, c, plane);
                let w = e.scaled(item.w, c, wch);
                let mut accs = carried.to_vec();
                let mut step = 0;
                for u in 0..unroll as i64 {
                    let xu = e.offset(x, u * plane);
                    let wu = e.offset(w, u * wch);
                    accs = e.taps(xu, wu, phase, shape, &mut step, accs);
                }
                accs
            });
        }
        let mut step = 0;
        for c in looped..channels {
            let x = self.offset(item.x, c as i64 * plane);
            let w = self.offset(item.w, c as i64 * wch);
            accs = self.taps(x, w, phase, shape, &mut step, accs);
        }
        accs
    }

    /// Bytes of one tap's packed weights: a vector per `oc_vectors`, or
    /// one scalar for the width strategy.
    fn tap_bytes(&self) -> i64 {
        match self.schedule.strategy {
            Strategy::Width => 4,
            _ => self.schedule.oc_vectors as i64 * 16,
        }
    }

    /// The byte offset of `tap` along the rows (`cols == false`) or the
    /// columns: from the padded input's origin, its padded row's or column's
    /// offset in the stored copy.
    fn tap_offset(&self, tap: &Tap, cols: bool) -> i64 {
        if cols {
            self.plan.col_offset(tap.offset) as i64 * self.elem_bytes()
        } else {
            tap.offset as i64 * self.row_bytes()
        }
    }

    /// Every tap of `phase` for one input channel (Direct, Width) or channel
    /// block (Depthwise) at `x`, with that channel's weights at `w`. Up to
    /// [`MAX_UNROLLED_TAPS`] they are unrolled; past that, a loop over the
    /// kernel's rows runs each row's taps (unrolled, or in a loop over
    /// chunks of columns when one row alone has too many), so the code
    /// grows with the register tile, not with the kernel (whose taps the
    /// plan holds as data).
    fn taps(
        &mut self,
        x: Value,
        w: Value,
        phase: &Phase,
        shape: Shape,
        step: &mut usize,
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let (rows, cols) = (&phase.rows.taps, &phase.cols.taps);
        let kw = self.spec.kernel()[1] as i64;
        let tap_bytes = self.tap_bytes();
        let row_taps: Vec<(i64, i64)> =
            rows.iter().map(|t| (t.kernel as i64 * kw, self.tap_offset(t, false))).collect();
        let col_taps: Vec<(i64, i64)> =
            cols.iter().map(|t| (t.kernel as i64, self.tap_offset(t, true))).collect();
        if rows.len() * cols.len() <= MAX_UNROLLED_TAPS {
            return self.tap_grid(x, w, phase, shape, step, &row_taps, &col_taps, accs);
        }
        // The rows' taps step by constant kernel rows and padded rows (see
        // `plan`): one iteration per kernel row, the pointers advanced.
        let (first, row_step) = progression(&row_taps);
        let x = self.offset(x, first.1);
        let w = self.offset(w, first.0 * tap_bytes);
        let zero = self.iconst(0);
        let n = self.iconst(rows.len() as i64);
        self.counted_loop(zero, n, 1, &accs, |e, j, carried| {
            let x = e.scaled(x, j, row_step.1);
            let w = e.scaled(w, j, row_step.0 * tap_bytes);
            e.row_taps(x, w, phase, shape, cols, &col_taps, carried.to_vec())
        })
    }

    /// One kernel row's column taps at `x` with its weights at `w` (`raw`,
    /// and `cols` as `(kernel column, byte offset)`): unrolled up to
    /// [`MAX_UNROLLED_TAPS`]; past that, in a loop over chunks of about that
    /// many whose offsets repeat with a constant step (a chunk is a whole
    /// number of column phases, so a strided width-strategy copy repeats
    /// too); when even that does not repeat, one tap per iteration with its
    /// offset computed.
    #[allow(clippy::too_many_arguments)]
    fn row_taps(
        &mut self,
        x: Value,
        w: Value,
        phase: &Phase,
        shape: Shape,
        raw: &[Tap],
        cols: &[(i64, i64)],
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let here = [(0, 0)];
        let mut step = 0;
        if cols.len() <= MAX_UNROLLED_TAPS {
            return self.tap_grid(x, w, phase, shape, &mut step, &here, cols, accs);
        }
        let tap_bytes = self.tap_bytes();
        let phases = self.plan.col_phases;
        let chunk = match MAX_UNROLLED_TAPS.next_multiple_of(phases) {
            c if c <= 2 * MAX_UNROLLED_TAPS => c,
            _ => MAX_UNROLLED_TAPS,
        };
        if cols.len() <= chunk {
            // One chunk (a whole number of column phases) holds them all.
            return self.tap_grid(x, w, phase, shape, &mut step, &here, cols, accs);
        }
        let chunks = cols.len() / chunk;
        let relative = |c: usize, t: usize| {
            let (a, a0) = (cols[c * chunk + t], cols[c * chunk]);
            (a.0 - a0.0, a.1 - a0.1)
        };
        let starts: Vec<(i64, i64)> = (0..chunks).map(|c| cols[c * chunk]).collect();
        let regular = is_progression(&starts)
            && (1..chunks).all(|c| (0..chunk).all(|t| relative(c, t) == relative(0, t)));
        let zero = self.iconst(0);
        if regular {
            let (first, chunk_step) = progression(&starts);
            let pattern: Vec<(i64, i64)> = (0..chunk).map(|t| relative(0, t)).collect();
            let x0 = self.offset(x, first.1);
            let w0 = self.offset(w, first.0 * tap_bytes);
            let n = self.iconst(chunks as i64);
            let accs = self.counted_loop(zero, n, 1, &accs, |e, c, carried| {
                let x = e.scaled(x0, c, chunk_step.1);
                let w = e.scaled(w0, c, chunk_step.0 * tap_bytes);
                let mut step = 0;
                e.tap_grid(x, w, phase, shape, &mut step, &here, &pattern, carried.to_vec())
            });
            let rest = &cols[chunks * chunk..];
            return self.tap_grid(x, w, phase, shape, &mut step, &here, rest, accs);
        }
        // One tap per iteration: padded column `o` is element
        // `(o mod phases) · sub_row + o / phases` of a stored row.
        let kernel: Vec<(i64, i64)> =
            raw.iter().map(|t| (t.kernel as i64, t.offset as i64)).collect();
        let (first, tap_step) = progression(&kernel);
        let (eb, sub_row) = (self.elem_bytes(), self.plan.sub_row as i64);
        let n = self.iconst(raw.len() as i64);
        self.counted_loop(zero, n, 1, &accs, |e, j, carried| {
            let o = e.fb.ins().imul_imm_s(j, tap_step.1);
            let o = e.fb.ins().iadd_imm_s(o, first.1);
            let phase_of = e.fb.ins().urem_imm_u(o, phases as i64);
            let within = e.fb.ins().udiv_imm_u(o, phases as i64);
            let x = e.scaled(x, phase_of, sub_row * eb);
            let x = e.scaled(x, within, eb);
            let w = e.offset(w, first.0 * tap_bytes);
            let w = e.scaled(w, j, tap_step.0 * tap_bytes);
            let mut step = 0;
            e.tap_grid(x, w, phase, shape, &mut step, &here, &here, carried.to_vec())
        })
    }

    /// The taps `rows × cols` (each `(weight tap index part, input byte
    /// offset)`; a tap's weights are at tap index `row.0 + col.0`, its input
    /// at `row.1 + col.1` from `x`), unrolled, for one channel (block).
    #[allow(clippy::too_many_arguments)]
    fn tap_grid(
        &mut self,
        x: Value,
        w: Value,
        phase: &Phase,
        shape: Shape,
        step: &mut usize,
        rows: &[(i64, i64)],
        cols: &[(i64, i64)],
        mut accs: Vec<Value>,
    ) -> Vec<Value> {
        let vectors = self.schedule.oc_vectors;
        let eb = self.elem_bytes();
        let col_step = self.col_stride(phase) * eb;
        let row_step = phase.rows.in_step as i64 * self.row_bytes();
        let positions = shape.positions();
        // Input bytes from the tile's first pixel to position `q`'s, or
        // vector `q`'s for the width strategy.
        let per_row = if self.schedule.strategy == Strategy::Width {
            shape.pixels.div_ceil(4)
        } else {
            shape.pixels
        };
        let width = self.schedule.strategy == Strategy::Width;
        let at = move |q: usize| {
            let (r, p) = ((q / per_row) as i64, (q % per_row) as i64);
            r * row_step + if width { 4 * p * eb } else { p * col_step }
        };
        for &(row_tap, row_offset) in rows {
            for &(col_tap, col_offset) in cols {
                let tap = row_tap + col_tap;
                let base = row_offset + col_offset;
                // Alternate the accumulator order on odd steps (CRANELIFT.md
                // rule 6): it removes register moves on the loop's back edge.
                let forward = step.is_multiple_of(2);
                *step += 1;
                if self.schedule.strategy == Strategy::Width {
                    // One weight broadcast, reused by every vector of pixels.
                    let s = self.load(types::F32, w, tap * 4);
                    let wv = self.fb.ins().splat(types::F32X4, s);
                    let n = accs.len();
                    for i in 0..n {
                        let q = if forward { i } else { n - 1 - i };
                        let xv = self.load(types::F32X4, x, base + at(q));
                        accs[q] = self.mul_add(xv, wv, accs[q]);
                    }
                    continue;
                }
                let weights: Vec<Value> = (0..vectors)
                    .map(|v| self.load(types::F32X4, w, (tap * vectors as i64 + v as i64) * 16))
                    .collect();
                let order: Vec<usize> =
                    if forward { (0..positions).collect() } else { (0..positions).rev().collect() };
                for &q in &order {
                    let off = base + at(q);
                    for (v, &wv) in weights.iter().enumerate() {
                        let xv = if self.schedule.strategy == Strategy::Depthwise {
                            self.load(types::F32X4, x, off + v as i64 * self.plane_bytes())
                        } else {
                            // A fresh single-use broadcast per FMA (rule 3).
                            let s = self.load(types::F32, x, off);
                            self.fb.ins().splat(types::F32X4, s)
                        };
                        let a = v * positions + q;
                        accs[a] = self.mul_add(xv, wv, accs[a]);
                    }
                }
            }
        }
        accs
    }

    /// Activation, then the stores: lane l of vector v is output channel
    /// `first + (4v + l) · lane_stride`.
    fn epilogue(&mut self, item: &Item, phase: &Phase, shape: Shape, accs: Vec<Value>) {
        let accs: Vec<Value> = accs.into_iter().map(|a| self.activate(a)).collect();
        if self.schedule.strategy == Strategy::Width {
            return self.width_stores(item, phase, shape, &accs);
        }
        match item.partial {
            None => self.stores(item, phase, shape, &accs, self.plan.lanes),
            Some(partial) => {
                let short = self.fb.create_block();
                let full = self.fb.create_block();
                let done = self.fb.create_block();
                self.fb.ins().brif(partial, short, &[], full, &[]);
                self.fb.switch_to_block(short);
                self.stores(item, phase, shape, &accs, self.partial_lanes());
                self.fb.ins().jump(done, &[]);
                self.fb.switch_to_block(full);
                self.stores(item, phase, shape, &accs, self.plan.lanes);
                self.fb.ins().jump(done, &[]);
                self.fb.switch_to_block(done);
            }
        }
    }

    fn stores(&mut self, item: &Item, phase: &Phase, shape: Shape, accs: &[Value], lanes: usize) {
        let lane_bytes = self.lane_stride() as i64 * self.out_plane() * 4;
        let pixel_bytes = phase.cols.out_step as i64 * 4;
        let row_bytes = self.out_row_bytes(phase);
        for lane in 0..lanes {
            let (v, l) = (lane / 4, lane % 4);
            for q in 0..shape.positions() {
                let (r, p) = ((q / shape.pixels) as i64, (q % shape.pixels) as i64);
                let s = self.fb.ins().extractlane(accs[v * shape.positions() + q], l as u8);
                let off = lane as i64 * lane_bytes + r * row_bytes + p * pixel_bytes;
                self.store(s, item.y, off);
            }
        }
    }

    /// Output bytes between consecutive rows of a phase.
    fn out_row_bytes(&self, phase: &Phase) -> i64 {
        (phase.rows.out_step * self.spec.out_width()) as i64 * 4
    }

    /// The width strategy's stores: vector `v` holds pixels `4v..4v + 4` of
    /// the tile; whole vectors where the phase's output pixels are
    /// consecutive, lane by lane where they are not (transposed phases) and
    /// for the lanes of a last vector that are inside the row.
    fn width_stores(&mut self, item: &Item, phase: &Phase, shape: Shape, accs: &[Value]) {
        let pixel_bytes = phase.cols.out_step as i64 * 4;
        let per_row = shape.pixels.div_ceil(4);
        let row_bytes = self.out_row_bytes(phase);
        for (q, &acc) in accs.iter().enumerate() {
            let row = (q / per_row) as i64 * row_bytes;
            let first = 4 * (q % per_row);
            let lanes = (shape.pixels - first).min(4);
            if lanes == 4 && phase.cols.out_step == 1 {
                self.store(acc, item.y, row + first as i64 * pixel_bytes);
                continue;
            }
            for l in 0..lanes {
                let s = self.fb.ins().extractlane(acc, l as u8);
                self.store(s, item.y, row + (first + l) as i64 * pixel_bytes);
            }
        }
    }

    /// The fused activation.
    fn activate(&mut self, a: Value) -> Value {
        self.activation(a, self.spec.activation())
    }
}
