//! The conv lowering's reduction: the loop over a group's input channels,
//! and each channel's taps — unrolled, or in loops over kernel rows and
//! chunks of columns past [`MAX_UNROLLED_TAPS`] — as steps of the register
//! tile of [`crate::codegen::tile`].

use cranelift_codegen::ir::{InstBuilder, Value};

use super::{Emitter, Item, Shape};
use crate::algorithm::{Input, Lanes};
use crate::codegen::lower::Lower;
use crate::codegen::tile::{self, Form, Layout, Operand, Tile};
use crate::geometry::{Phase, Tap};

pub use crate::algorithm::MAX_UNROLLED_TAPS;

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
pub(super) fn progression(steps: &[(i64, i64)]) -> ((i64, i64), (i64, i64)) {
    assert!(is_progression(steps), "the taps of an axis form an arithmetic progression");
    let step = match steps {
        [a, b, ..] => (b.0 - a.0, b.1 - a.1),
        _ => (0, 0),
    };
    (steps[0], step)
}

impl Emitter<'_> {
    /// The Direct reduction: a loop over the group's input channels, unrolled
    /// by `reduction_unroll`, each channel running every tap.
    pub(super) fn reduce_channels(
        &mut self,
        item: &Item,
        phase: &Phase,
        shape: Shape,
        accs: Vec<Value>,
    ) -> Vec<Value> {
        let channels = self.spec.in_per_group();
        let unroll = self.schedule.reduction_unroll().min(channels);
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

    /// Bytes of one tap's packed weights: one f32 per channel of a work
    /// item (`oc_vectors` vectors of the schedule's ISA, or the width
    /// tile's channels).
    pub(super) fn tap_bytes(&self) -> i64 {
        // One f32 per channel of the work item: the lanes of its vectors
        // of channels, or the width tile's channels.
        self.plan.work.lanes as i64 * 4
    }

    /// The byte offset of `tap` along the rows (`cols == false`) or the
    /// columns: from the padded input's origin, its padded row's or column's
    /// offset in the stored copy.
    pub(super) fn tap_offset(&self, tap: &Tap, cols: bool) -> i64 {
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
    pub(super) fn taps(
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
            let o = e.base.fb.ins().imul_imm_s(j, tap_step.1);
            let o = e.base.fb.ins().iadd_imm_s(o, first.1);
            let phase_of = e.base.fb.ins().urem_imm_u(o, phases as i64);
            let within = e.base.fb.ins().udiv_imm_u(o, phases as i64);
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
        let vectors = self.schedule.oc_vectors();
        let vector_bytes = self.base.target.vector.bytes() as i64;
        let lanes = self.base.target.vector.lanes;
        let (eb, plane) = (self.elem_bytes(), self.plane_bytes());
        let col_step = self.col_stride(phase) * eb;
        let row_step = phase.rows.in_step as i64 * self.row_bytes();
        let microkernel = self.microkernel();
        let width = microkernel.lanes == Lanes::Pixels;
        // Input bytes from the tile's first pixel to position `q`'s, or
        // vector `q`'s for the width strategy.
        let per_row = if width { shape.pixels.div_ceil(lanes) } else { shape.pixels };
        let at = move |q: usize| {
            let (r, p) = ((q / per_row) as i64, (q % per_row) as i64);
            r * row_step + if width { lanes as i64 * p * eb } else { p * col_step }
        };
        // Width: one weight broadcast reused by every vector of pixels.
        // Direct: the item's weight vectors reused by a fresh broadcast of
        // each pixel; depthwise: by a vector of each pixel's channels.
        let (fresh, reused, weights, pixels) = match (microkernel.lanes, microkernel.input) {
            (Lanes::Pixels, _) => (accs.len(), 1, Form::Broadcast, Form::Vector),
            (Lanes::Channels, Input::Broadcast) => {
                (shape.positions(), vectors, Form::Vector, Form::Broadcast)
            }
            (Lanes::Channels, Input::Vector) => {
                (shape.positions(), vectors, Form::Vector, Form::Vector)
            }
        };
        // A vector of channels' inputs is one plane of the channel-blocked
        // copy per vector of the tile.
        let blocked = self.plan.work.blocked_input;
        let tile = Tile { reused, fresh, layout: Layout::ReusedMajor };
        for &(row_tap, row_offset) in rows {
            for &(col_tap, col_offset) in cols {
                let tap = row_tap + col_tap;
                let base = row_offset + col_offset;
                let w_at = |r: usize| match microkernel.lanes {
                    Lanes::Pixels => tap * 4,
                    Lanes::Channels => (tap * vectors as i64 + r as i64) * vector_bytes,
                };
                let x_at = |f: usize, r: usize| {
                    if blocked { base + at(f) + r as i64 * plane } else { base + at(f) }
                };
                let weights = Operand { base: w, form: weights, at: w_at };
                let pixels = Operand { base: x, form: pixels, at: x_at };
                tile::step(self, tile, &weights, &pixels, step, &mut accs);
            }
        }
        accs
    }
}
