//! Lowering a conv layer (spec, schedule) to Cranelift IR.
//!
//! One lowering serves every kind: the layer's geometry (the [`Plan`]'s) is
//! phases of gathering convolutions over a padded input, and the emitter writes, for
//! each phase, a loop nest whose innermost body is the register tile of
//! `codegen::tile` (fresh single-use broadcasts, accumulators as block
//! parameters, top-tested loops, alternating FMA order). Every size,
//! stride, offset and channel count is an immediate.
//!
//! The generated function has the C signature
//! `fn(x, w, bias, y, begin, end, rows, guard)`: `x` is one padded (and, for
//! the depthwise strategy, channel-blocked) input image, `w` and `bias` the
//! packed weights and bias, `y` the image's NCHW output, `[begin, end)`
//! the range of work items (channel blocks) to compute, and `rows` the
//! output rows of each phase to compute, `[first, last)` as two i64 per
//! phase: the caller computes them (`Plan::part_rows`), so the partition
//! of the rows among threads and bands is stated once, on the host.
//!
//! Invariant: the plain lowering emits no bounds checks. Every address it
//! forms is in range because the plan pads the input for every tap it
//! keeps, tiles cover exactly the phase's output pixels, and lanes past a
//! channel tail are never stored.
//!
//! The **checked lowering** (`Target::checked`, from
//! `Compiler::checked`) tests that claim instead of trusting it: every
//! pointer is formed from one of the five buffer parameters, and every load
//! and store compares its bytes with that buffer's bounds, which the caller
//! writes into the guard block `guard` points to (`[lo, hi)` byte addresses
//! of the input, weights, bias, output and row ranges, then a fault
//! record). An access
//! outside is not made; the fault is recorded and `Kernel::run` reports it
//! as an error. The property tests run a share of their cases this way,
//! and `convjit run --checked` does on request.

mod assembled;
mod epilogue;
mod taps;

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Function, InstBuilder, Value, types};
use cranelift_frontend::FunctionBuilderContext;

use super::Target;
use super::lower::{self, Base, Checks, Index, Lower};
use super::plan::Plan;
use super::wide::Linker;
use crate::algorithm::Coordinate;
use crate::algorithm::{Lanes, Microkernel};
use crate::error::Result;
use crate::geometry::Phase;
use crate::schedule::{LoopNest, Schedule};
use crate::spec::ValidSpec;
use assembled::Assembled;
pub use taps::MAX_UNROLLED_TAPS;

/// Emits the body of `func` (whose signature is `abi::ConvFn`'s), the
/// register tiles of a wider ISA assembled and linked by `linker`.
pub fn lower(
    spec: &ValidSpec,
    schedule: &Schedule,
    plan: &Plan,
    target: Target,
    func: &mut Function,
    linker: &mut dyn Linker,
) -> Result<()> {
    let mut fctx = FunctionBuilderContext::new();
    let (mut base, params) = lower::begin(func, &mut fctx, target);
    base.checks = target.checked.then(|| {
        use lower::Buffer::{Bias, Input, Output, Rows, Weights};
        let buffers = [
            (params[0], Input),
            (params[1], Weights),
            (params[2], Bias),
            (params[3], Output),
            (params[6], Rows),
        ];
        Checks::new(params[7], buffers)
    });
    let mut e = Emitter {
        spec,
        schedule,
        plan,
        base,
        x: params[0],
        w: params[1],
        b: params[2],
        y: params[3],
        assembled: Assembled { linker, tiles: HashMap::new(), slot: None, failed: None },
        border_row: None,
    };
    e.body(params[4], params[5], params[6]);
    if let Some(error) = e.assembled.failed.take() {
        return Err(error);
    }
    lower::finish(e.base);
    Ok(())
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
/// `geometry::Axis::members`).
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
    fn base(&mut self) -> &mut Base<'a> {
        &mut self.base
    }
}

struct Emitter<'a> {
    /// The wider ISA's assembled tiles, linked once each.
    assembled: Assembled<'a>,
    spec: &'a ValidSpec,
    schedule: &'a Schedule,
    plan: &'a Plan,
    /// The builder, the target, and the checked lowering's state when it
    /// is the one emitted.
    base: Base<'a>,
    x: Value,
    w: Value,
    b: Value,
    y: Value,
    /// While a tile of a plan that reads the image is emitted at a row of
    /// its own (see `image_row_tiles`): that row, whose taps reach above
    /// or below the image.
    border_row: Option<usize>,
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

    /// Bytes from one input plane (a channel, or a block of one vector's
    /// channels) to the next.
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
        (self.kernel_taps() * self.plan.work.lanes * 4) as i64
    }

    fn out_plane(&self) -> i64 {
        (self.spec.out_height() * self.spec.out_width()) as i64
    }

    /// What the algorithm's register tile holds and multiplies.
    fn microkernel(&self) -> Microkernel {
        self.schedule.algorithm.microkernel()
    }

    /// Output channels between consecutive lanes.
    fn lane_stride(&self) -> usize {
        self.plan.work.lane_stride
    }

    /// Lanes valid in a partial work item (all lanes if none is partial).
    fn partial_lanes(&self) -> usize {
        self.plan.work.tail.lanes
    }

    /// The whole function body: the two outer loops in the schedule's order,
    /// over work items `[begin, end)` and, in every member of every phase,
    /// the output rows `rows` gives it.
    fn body(&mut self, begin: Value, end: Value, rows: Value) {
        let phases = self.plan.geometry.phases.clone();
        match self.schedule.loop_nest {
            LoopNest::ChannelsOuter => {
                self.counted_loop(begin, end, 1, &[], |e, wi, _| {
                    let item = e.item(wi);
                    for (index, phase) in phases.iter().enumerate() {
                        e.members(phase, |e, member| {
                            let item = e.shifted(&item, phase, member);
                            let (first, last) = e.row_range(rows, index);
                            e.row_loop(phase, first, last, |e, t, rows| {
                                let shape = Shape { pixels: phase.cols.count, rows };
                                e.row(&item, phase, t, Index::Fixed(0), shape);
                            });
                        });
                    }
                    vec![]
                });
            }
            LoopNest::RowsOuter | LoopNest::ColumnBlocks(_) => {
                for (index, phase) in phases.iter().enumerate() {
                    let count = phase.cols.count;
                    let block = match self.schedule.loop_nest {
                        LoopNest::ColumnBlocks(b) => {
                            b.next_multiple_of(self.schedule.pixel_tile()).min(count)
                        }
                        _ => count,
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
                        let (first, last) = e.row_range(rows, index);
                        e.row_loop(phase, first, last, |e, t, rows| {
                            if full == 1 {
                                items(e, t, Index::Fixed(0), Shape { pixels: block, rows });
                            } else {
                                let zero = e.iconst(0);
                                let n = e.iconst(full as i64);
                                e.counted_loop(zero, n, 1, &[], |e, k, _| {
                                    let start = e.base.fb.ins().imul_imm_s(k, block as i64);
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

    /// Runs `body` for every member of `phase` (see `geometry::Axis::members`):
    /// in loops over the rows' and the columns' members, or once for an
    /// axis of one.
    fn members(&mut self, phase: &Phase, mut body: impl FnMut(&mut Self, Member)) {
        // A tile of merged column phases computes every member of the
        // columns at once, from member 0.
        let cols = match self.merged_members(phase) {
            1 => phase.cols.members as i64,
            _ => 1,
        };
        let rows = phase.rows.members as i64;
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

    /// How many column phases of `phase` one tile computes: its column
    /// run's members where the schedule merges them, else 1.
    pub(super) fn merged_members(&self, phase: &Phase) -> usize {
        match self.schedule.algorithm.merged_columns() && phase.cols.merges() {
            true => phase.cols.members,
            false => 1,
        }
    }

    /// The epilogue of a tile of every merged column phase of `phase`
    /// whose accumulators the IR stores: each phase's vectors
    /// (`accs.len() / members` of them, in order) at its own output
    /// pixels, one on from the phase before's.
    fn member_epilogues(&mut self, item: &Item, phase: &Phase, shape: Shape, accs: Vec<Value>) {
        let members = self.merged_members(phase);
        let per = accs.len() / members;
        for (v, accs) in accs.chunks(per).enumerate() {
            let y = self.offset(item.y, v as i64 * phase.cols.shift.out * 4);
            self.epilogue(&Item { y, ..*item }, phase, shape, accs.to_vec());
        }
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
        body: impl FnMut(&mut Self, Value, usize),
    ) {
        let tile = self.schedule.row_tile().min(phase.rows.count).max(1);
        if self.plan.reads_image {
            self.image_row_tiles(phase, tile, body);
            return;
        }
        self.row_tiles(first, last, tile, body);
    }

    /// Every row of `phase` in tiles of `tile` rows, then one tile of the
    /// rows left, for a plan that reads the image itself: the tiles whose taps reach
    /// rows above or below the image each at its own row (`border_row`,
    /// for their masks), the others in loops.
    fn image_row_tiles(
        &mut self,
        phase: &Phase,
        tile: usize,
        mut body: impl FnMut(&mut Self, Value, usize),
    ) {
        let (count, step) = (phase.rows.count, phase.rows.in_step);
        let full = count / tile * tile;
        let tiles: Vec<(usize, usize)> = (0..full)
            .step_by(tile)
            .map(|t| (t, tile))
            .chain((full < count).then_some((full, count - full)))
            .collect();
        let (top, height) = (self.plan.geometry.pad[0], self.spec.height());
        let border = |&(t, rows): &(usize, usize)| {
            phase.rows.offset_range().is_some_and(|(low, high)| {
                t * step + low < top || (t + rows - 1) * step + high >= top + height
            })
        };
        let mut i = 0;
        while i < tiles.len() {
            let (t, rows) = tiles[i];
            if border(&tiles[i]) {
                self.border_row = Some(t);
                let at = self.iconst(t as i64);
                body(self, at, rows);
                self.border_row = None;
                i += 1;
                continue;
            }
            let run = tiles[i..].iter().take_while(|r| r.1 == rows && !border(r)).count();
            let (first, end) = (self.iconst(t as i64), self.iconst((t + run * rows) as i64));
            self.counted_loop(first, end, rows as i64, &[], |e, at, _| {
                body(e, at, rows);
                vec![]
            });
            i += run;
        }
    }

    /// The output rows `[first, last)` of phase `index`, as the caller
    /// wrote them at `rows`.
    fn row_range(&mut self, rows: Value, index: usize) -> (Value, Value) {
        let first = self.load(types::I64, rows, index as i64 * 16);
        let last = self.load(types::I64, rows, index as i64 * 16 + 8);
        (first, last)
    }

    /// The input planes of group `g` (see `Plan::group_items`): at `x`
    /// itself when the copy holds one group.
    fn group_input(&mut self, g: Value) -> Value {
        if self.plan.copy_per_group {
            self.x
        } else {
            self.scaled(self.x, g, self.plan.work.group_planes as i64 * self.plane_bytes())
        }
    }

    /// Decodes work item `wi` into base pointers.
    fn item(&mut self, wi: Value) -> Item {
        let lanes = self.plan.work.lanes as i64;
        let out_plane_bytes = self.out_plane() * 4;
        let w_item_bytes = self.spec.in_per_group() as i64 * self.w_channel_bytes();
        let w = self.scaled(self.w, wi, w_item_bytes);
        let b = self.scaled(self.b, wi, lanes * 4);
        // Item wi is (q, r) = (wi / group_items, wi % group_items): the
        // input of group q, and first output channel q·q_channels +
        // r·r_channels (see `algorithm::Work`).
        let work = self.plan.work;
        let per_group = work.group_items as i64;
        let q = self.base.fb.ins().udiv_imm_u(wi, per_group);
        let r = self.base.fb.ins().urem_imm_u(wi, per_group);
        // The image itself, read with padded coordinates (`Plan::origin`):
        // a pointer before the plane's first pixel, which only the lanes of
        // pixels inside the image are read through.
        let x = self.group_input(q);
        let x = self.offset(x, -(self.plan.origin() as i64 * 4));
        let y = self.scaled(self.y, q, work.q_channels as i64 * out_plane_bytes);
        let y = self.scaled(y, r, work.r_channels as i64 * out_plane_bytes);
        let last = match work.tail.coordinate {
            Coordinate::Q => q,
            Coordinate::R => r,
        };
        let partial = work
            .partial()
            .then(|| self.base.fb.ins().icmp_imm_s(IntCC::Equal, last, work.last_block() as i64));
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

        let tile = self.schedule.pixel_tile().min(pixels);
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
        let has_taps = !phase.rows.taps.is_empty() && !phase.cols.taps.is_empty();
        // An assembled channels tile without taps is the bias, which the
        // IR stores; a pixels tile is always assembled (the IR's holds one
        // channel).
        let pixels = self.microkernel().lanes == Lanes::Pixels;
        if self.schedule.isa.is_assembled() && (has_taps || pixels) {
            if let Some(accs) = self.assembled_tile(item, phase, shape) {
                self.member_epilogues(item, phase, shape, accs);
            }
            return;
        }
        let mut accs: Vec<Value> = if self.microkernel().lanes == Lanes::Pixels {
            let bias = self.broadcast(item.b, 0);
            vec![bias; shape.rows * shape.pixels.div_ceil(self.base.target.vector.lanes)]
        } else {
            let vectors = self.plan.work.lanes / self.base.target.vector.lanes;
            let mut bias = Vec::with_capacity(vectors);
            for v in 0..vectors {
                let (ty, bytes) =
                    (self.base.target.vector.ty, self.base.target.vector.bytes() as i64);
                bias.push(self.load(ty, item.b, v as i64 * bytes));
            }
            (0..vectors).flat_map(|v| std::iter::repeat_n(bias[v], shape.positions())).collect()
        };
        if has_taps {
            accs = if self.microkernel().reduces_channels {
                self.reduce_channels(item, phase, shape, accs)
            } else {
                let mut step = 0;
                self.taps(item.x, item.w, phase, shape, &mut step, accs)
            };
        }
        // One tile per phase but where the schedule merges them (whose
        // tiles are assembled, so reach here only for a phase without
        // taps: each merged phase is then the bias).
        let members = self.merged_members(phase);
        let accs = (0..members).flat_map(|_| accs.iter().copied()).collect();
        self.member_epilogues(item, phase, shape, accs);
    }
}
