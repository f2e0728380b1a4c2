//! The fused kernel's depthwise function: per channel, the band's input
//! rows copied into a zero-bordered buffer (strided rows split into column
//! phases), then the channel's rows of the band in register tiles of rows ×
//! vectors of pixels, into its plane of the band buffer.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Value, types};

use super::Fused;
use crate::codegen::lower::Lower;
use crate::codegen::tile::{self, Form, Layout, Operand, Tile};

impl Fused<'_> {
    /// The depthwise function: for every channel, the input rows
    /// `[copy.0, copy.1)` (padded coordinates) of its plane of the image
    /// into `scratch` (when the plan pads), then its output rows `rows` into
    /// its plane of the band buffer.
    pub(super) fn depthwise(&mut self, scratch: Value, rows: [Value; 2], copy: [Value; 2]) {
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
                let back = e.base.fb.ins().imul_imm_s(copy[0], row_bytes);
                e.base.fb.ins().isub(scratch, back)
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
        let (top, height, width) = (self.plan.geometry.pad[0], self.dw.height(), self.dw.width());
        let row_bytes = self.plan.row_len() as i64 * 4;
        self.counted_loop(rows[0], rows[1], 1, &[], |e, r, _| {
            let i = e.base.fb.ins().isub(r, rows[0]);
            let dst = e.scaled(dst, i, row_bytes);
            let above =
                e.base.fb.ins().icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, r, top as i64);
            let below =
                e.base.fb.ins().icmp_imm_s(IntCC::UnsignedLessThan, r, (top + height) as i64);
            let inside = e.base.fb.ins().band(above, below);
            let (copy, clear, done) =
                (e.base.fb.create_block(), e.base.fb.create_block(), e.base.fb.create_block());
            e.base.fb.ins().brif(inside, copy, &[], clear, &[]);
            e.base.fb.switch_to_block(copy);
            let input_row = e.base.fb.ins().iadd_imm_s(r, -(top as i64));
            let src = e.scaled(x, input_row, width as i64 * 4);
            e.copy_row(src, dst);
            e.base.fb.ins().jump(done, &[]);
            e.base.fb.switch_to_block(clear);
            e.clear_row(dst);
            e.base.fb.ins().jump(done, &[]);
            e.base.fb.switch_to_block(done);
            vec![]
        });
    }

    /// One input row at `src` into the stored row at `dst`: padded column
    /// `left + i` takes pixel `i`, split into the plan's column phases.
    fn copy_row(&mut self, src: Value, dst: Value) {
        let (width, left) = (self.dw.width(), self.plan.geometry.pad[1]);
        let phases = self.plan.col_phases;
        let plan = self.plan;
        let at = |c: usize| plan.col_offset(c) as i64 * 4;
        let (ty, vector_bytes) =
            (self.base.target.vector.ty, self.base.target.vector.bytes() as i64);
        // Vectors of `4 · phases` pixels, each phase's 4 consecutive.
        let lanes = self.base.target.vector.lanes;
        let (runs, run) = match phases {
            1 | 2 => (width / (lanes * phases), lanes * phases),
            _ => (0, 1),
        };
        if runs > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(runs as i64);
            self.counted_loop(zero, end, 1, &[], |e, k, _| {
                let src = e.scaled(src, k, run as i64 * 4);
                // Pixel `run · k + j` of phase `(left + j) mod phases` is at
                // `col_offset(left + j) + 4k` elements.
                let dst = e.scaled(dst, k, vector_bytes);
                let a = e.load(ty, src, 0);
                if phases == 1 {
                    e.store(a, dst, at(left));
                    return vec![];
                }
                let b = e.load(ty, src, vector_bytes);
                let evens = e.deinterleave(a, b, 0);
                let odds = e.deinterleave(a, b, 1);
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

    /// The even (`odd` 0) or odd (`odd` 1) lanes of the lanes of `a` then
    /// `b`: one shuffle.
    fn deinterleave(&mut self, a: Value, b: Value, odd: u8) -> Value {
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        let lanes = self.base.target.vector.lanes as u8;
        let bytes: Vec<u8> =
            (0..lanes).map(|i| 2 * i + odd).flat_map(|l| (0..4).map(move |k| 4 * l + k)).collect();
        let mask = self.base.fb.func.dfg.immediates.push(ConstantData::from(bytes));
        let ty = self.base.target.vector.ty;
        let bytes = types::I8.by(ty.bytes()).expect("a vector of bytes as wide as the vector");
        let a = self.base.fb.ins().bitcast(bytes, flags, a);
        let b = self.base.fb.ins().bitcast(bytes, flags, b);
        let picked = self.base.fb.ins().shuffle(a, b, mask);
        self.base.fb.ins().bitcast(ty, flags, picked)
    }

    /// Zeros over the whole stored row at `dst`.
    fn clear_row(&mut self, dst: Value) {
        let len = self.plan.row_len();
        let zero = self.splat_const(0.0);
        let (lanes, vector_bytes) =
            (self.base.target.vector.lanes, self.base.target.vector.bytes() as i64);
        for v in 0..len / lanes {
            self.store(zero, dst, v as i64 * vector_bytes);
        }
        let scalar = self.base.fb.ins().f32const(0.0);
        for i in len / lanes * lanes..len {
            self.store(scalar, dst, i as i64 * 4);
        }
    }

    /// One channel's output rows `[first, last)` from its padded rows at
    /// `x` into its plane `t` of the band buffer, `[band row][W₄]`.
    fn depthwise_channel(&mut self, [x, w, b, t]: [Value; 4], [first, last]: [Value; 2]) {
        let plan = self.plan;
        let phase = &plan.geometry.phases[0];
        let row_bytes = plan.row_len() as i64 * 4;
        let kw = self.dw.kernel()[1];
        let band_row = self.band.row as i64 * 4;
        let (lanes, vector_bytes) =
            (self.base.target.vector.lanes, self.base.target.vector.bytes() as i64);
        let vectors = self.band.row / lanes;
        let per_tile = self.s.dw_vectors.min(vectors);
        // Buffer row 0 is output row `first`.
        let t = {
            let back = self.base.fb.ins().imul_imm_s(first, band_row);
            self.base.fb.ins().isub(t, back)
        };
        let activation = self.dw.activation();
        let tile = self.s.dw_rows.min(self.band.rows);
        self.row_tiles(first, last, tile, |e, r, rows| {
            // With the columns in phases, consecutive output pixels are
            // consecutive elements of a stored row.
            let x = e.scaled(x, r, phase.rows.in_step as i64 * row_bytes);
            let t = e.scaled(t, r, band_row);
            e.vector_tiles(vectors, per_tile, vectors / per_tile, |e, v0, nv| {
                let x = e.at(x, v0, vector_bytes);
                let t = e.at(t, v0, vector_bytes);
                let bias = e.broadcast(b, 0);
                let mut accs = vec![bias; rows * nv];
                let tile = Tile { reused: 1, fresh: rows * nv, layout: Layout::ReusedMajor };
                let in_row = phase.rows.in_step as i64 * row_bytes;
                let mut step = 0usize;
                for rt in &phase.rows.taps {
                    for ct in &phase.cols.taps {
                        let tap = (rt.kernel * kw + ct.kernel) as i64;
                        let base =
                            rt.offset as i64 * row_bytes + plan.col_offset(ct.offset) as i64 * 4;
                        // One weight broadcast, reused by the whole tile of
                        // `rows × nv` vectors of pixels.
                        let weight = Operand { base: w, form: Form::Broadcast, at: |_| tap * 4 };
                        let pixels = Operand {
                            base: x,
                            form: Form::Vector,
                            at: |a: usize, _| {
                                let (rr, v) = ((a / nv) as i64, (a % nv) as i64);
                                base + rr * in_row + v * vector_bytes
                            },
                        };
                        tile::step(e, tile, &weight, &pixels, &mut step, &mut accs);
                    }
                }
                for (a, acc) in accs.into_iter().enumerate() {
                    let (rr, v) = ((a / nv) as i64, (a % nv) as i64);
                    let acc = e.activation(acc, activation);
                    e.store(acc, t, rr * band_row + v * vector_bytes);
                }
            });
        });
    }
}
