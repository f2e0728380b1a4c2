//! The fused kernel's pointwise function: every output channel of a band's
//! rows from the band buffer, in register tiles of output channels ×
//! buffered vectors of pixels, then the bias, the activation and the NCHW
//! stores.

use cranelift_codegen::ir::{InstBuilder, Value};

use super::Fused;
use crate::codegen::lower::{Index, Lower};
use crate::codegen::tile::{self, Form, Layout, Operand, Tile};

impl Fused<'_> {
    /// The pointwise function: every output channel of rows `[first,
    /// last)` from the band buffer.
    pub(super) fn pointwise(&mut self, first: Value, last: Value) {
        let [t, w, b, y] = self.params;
        let outputs = self.s.pw_outputs.min(self.pw.out_channels());
        let cin = self.pw.in_channels();
        let width = self.pw.out_width();
        let out_plane = (self.pw.out_height() * width) as i64 * 4;
        let band_row = self.band.row as i64 * 4;
        let (lanes, vector_bytes) =
            (self.base.target.vector.lanes, self.base.target.vector.bytes() as i64);
        let (vectors, per_tile) = (self.band.row / lanes, self.s.pw_vectors);
        let activation = self.pw.activation();
        let zero = self.iconst(0);
        let rows = self.base.fb.ins().isub(last, first);
        self.counted_loop(zero, rows, 1, &[], |e, i, _| {
            let t = e.scaled(t, i, band_row);
            let r = e.base.fb.ins().iadd(first, i);
            let y = e.scaled(y, r, width as i64 * 4);
            e.channel_groups(e.pw.out_channels(), outputs, |e, o, count| {
                // Output block `o / outputs`: weights `[channel][outputs]`.
                let block = match o {
                    Index::Fixed(o) => Index::Fixed(o / outputs),
                    Index::Variable(o) => {
                        Index::Variable(e.base.fb.ins().udiv_imm_u(o, outputs as i64))
                    }
                };
                let w = e.at(w, block, (cin * outputs * 4) as i64);
                let b = e.at(b, o, 4);
                let y = e.at(y, o, out_plane);
                e.vector_tiles(vectors, per_tile, width / lanes / per_tile, |e, v0, nv| {
                    let t = e.at(t, v0, vector_bytes);
                    let y = e.at(y, v0, vector_bytes);
                    let first = match v0 {
                        Index::Fixed(v) => v,
                        Index::Variable(_) => 0,
                    };
                    let mut accs = Vec::with_capacity(count * nv);
                    for k in 0..count {
                        let bias = e.broadcast(b, k as i64 * 4);
                        accs.extend(std::iter::repeat_n(bias, nv));
                    }
                    let accs = e.reduce(t, w, nv, count, accs);
                    for (a, acc) in accs.into_iter().enumerate() {
                        let (k, v) = (a / nv, a % nv);
                        let acc = e.activation(acc, activation);
                        let off = k as i64 * out_plane + v as i64 * vector_bytes;
                        // Looped tiles are whole; a tile emitted with its
                        // first vector known may end past the row.
                        let valid = (width - lanes * (first + v)).min(lanes);
                        e.store_lanes(acc, y, off, valid, 4);
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
    /// tile: its `nv` buffered vectors loaded once and reused, each of the
    /// `count` output channels' weights a fresh broadcast per FMA (rule 3
    /// of `codegen::tile`); accumulator `k · nv + v`.
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
        let vector_bytes = self.base.target.vector.bytes() as i64;
        let tile = Tile { reused: nv, fresh: count, layout: Layout::FreshMajor };
        let pixels = Operand {
            base: t,
            form: Form::Vector,
            at: |v| c as i64 * plane + v as i64 * vector_bytes,
        };
        let weights = Operand {
            base: w,
            form: Form::Broadcast,
            at: |k: usize, _| (c as i64 * outputs + k as i64) * 4,
        };
        tile::step(self, tile, &pixels, &weights, step, &mut accs);
        accs
    }
}
