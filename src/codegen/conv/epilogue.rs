//! The conv lowering's epilogue: the activation, then the stores of a
//! register tile — channels in lanes scattered to their planes (direct,
//! depthwise), or pixels in lanes stored as vectors (width). With the sum
//! epilogue ([`crate::codegen::Plan::sum`]) each output's previous value
//! is loaded from where it is stored and added before the activation.

use cranelift_codegen::ir::{InstBuilder, Value, types};

use super::{Emitter, Item, Shape};
use crate::algorithm::Lanes;
use crate::codegen::lower::Lower;
use crate::geometry::Phase;

impl Emitter<'_> {
    /// Activation, then the stores: lane l of vector v is output channel
    /// `first + (4v + l) · lane_stride`. With the sum epilogue the stores
    /// add the outputs' previous values first, then activate.
    pub(super) fn epilogue(&mut self, item: &Item, phase: &Phase, shape: Shape, accs: Vec<Value>) {
        let accs: Vec<Value> = match self.plan.sum {
            true => accs,
            false => accs.into_iter().map(|a| self.activate(a)).collect(),
        };
        if self.microkernel().lanes == Lanes::Pixels {
            return self.width_stores(item, phase, shape, &accs);
        }
        match item.partial {
            None => self.stores(item, phase, shape, &accs, self.plan.work.lanes),
            Some(partial) => {
                let short = self.base.fb.create_block();
                let full = self.base.fb.create_block();
                let done = self.base.fb.create_block();
                self.base.fb.ins().brif(partial, short, &[], full, &[]);
                self.base.fb.switch_to_block(short);
                self.stores(item, phase, shape, &accs, self.partial_lanes());
                self.base.fb.ins().jump(done, &[]);
                self.base.fb.switch_to_block(full);
                self.stores(item, phase, shape, &accs, self.plan.work.lanes);
                self.base.fb.ins().jump(done, &[]);
                self.base.fb.switch_to_block(done);
            }
        }
    }

    /// The first `lanes` channels of the tile stored, each output at
    /// `y + off(lane, q)`; with the sum epilogue, each vector first plus
    /// its lanes' previous outputs, then activated.
    fn stores(&mut self, item: &Item, phase: &Phase, shape: Shape, accs: &[Value], lanes: usize) {
        let lane_bytes = self.lane_stride() as i64 * self.out_plane() * 4;
        let pixel_bytes = phase.cols.out_step as i64 * 4;
        let row_bytes = self.out_row_bytes(phase);
        let width = self.base.target.vector.lanes;
        let off = |lane: usize, q: usize| {
            let (r, p) = ((q / shape.pixels) as i64, (q % shape.pixels) as i64);
            lane as i64 * lane_bytes + r * row_bytes + p * pixel_bytes
        };
        let mut summed = Vec::new();
        let accs = if self.plan.sum {
            for (i, &acc) in accs.iter().enumerate() {
                let (v, q) = (i / shape.positions(), i % shape.positions());
                let first = v * width;
                let mut previous = self.splat_const(0.0);
                for l in 0..width.min(lanes.saturating_sub(first)) {
                    let s = self.load(types::F32, item.y, off(first + l, q));
                    previous = self.base.fb.ins().insertlane(previous, s, l as u8);
                }
                let sum = self.base.fb.ins().fadd(acc, previous);
                summed.push(self.activate(sum));
            }
            &summed[..]
        } else {
            accs
        };
        for lane in 0..lanes {
            let (v, l) = (lane / width, lane % width);
            for q in 0..shape.positions() {
                let s = self.base.fb.ins().extractlane(accs[v * shape.positions() + q], l as u8);
                self.store(s, item.y, off(lane, q));
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
        let lanes = self.base.target.vector.lanes;
        let per_row = shape.pixels.div_ceil(lanes);
        let row_bytes = self.out_row_bytes(phase);
        for (q, &acc) in accs.iter().enumerate() {
            let row = (q / per_row) as i64 * row_bytes;
            let first = lanes * (q % per_row);
            let valid = (shape.pixels - first).min(lanes);
            let off = row + first as i64 * pixel_bytes;
            let acc = match self.plan.sum {
                true => {
                    let previous = self.load_lanes(item.y, off, valid, pixel_bytes);
                    let sum = self.base.fb.ins().fadd(acc, previous);
                    self.activate(sum)
                }
                false => acc,
            };
            self.store_lanes(acc, item.y, off, valid, pixel_bytes);
        }
    }

    /// The fused activation.
    fn activate(&mut self, a: Value) -> Value {
        self.activation(a, self.spec.activation())
    }
}
