//! The conv lowering's calls to an assembled register tile (`codegen::wide`)
//! for the wider ISAs: the tile's reduction described in the lowering's
//! terms, assembled and linked once per distinct tile, called with the
//! item's pointers and a block of stack where it leaves its accumulators,
//! which the IR epilogue reads as f32x4 vectors.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{FuncRef, InstBuilder, StackSlotData, StackSlotKind, Value};

use super::taps::progression;
use super::{Emitter, Item, Shape};
use crate::algorithm::{Input, Lanes, MAX_ACCUMULATORS};
use crate::codegen::MAX_UNROLLED_TAPS;
use crate::codegen::lower::Lower;
use crate::codegen::wide::{self, Form, Linker, PixelStores, Stores, Taps, Tile};
use crate::error::Error;
use crate::geometry::Phase;
use crate::target::Isa;

/// The lowering's assembled tiles: each distinct tile is assembled and
/// linked once, however many places call it.
pub(super) struct Assembled<'a> {
    pub linker: &'a mut dyn Linker,
    pub tiles: HashMap<Tile, FuncRef>,
    /// The stack block the tiles leave their accumulators in (one per
    /// function, as large as the largest tile's).
    pub slot: Option<cranelift_codegen::ir::StackSlot>,
    /// The first error assembling or linking met: the lowering then
    /// finishes without it and returns the error.
    pub failed: Option<Error>,
}

/// Bytes of the accumulator block: the most accumulators of the widest
/// vector, and one vector of a constant past them (see
/// [`Tile::acc_bytes`]; `linked` refuses a tile that would need more).
const SLOT_BYTES: u32 = ((MAX_ACCUMULATORS + 1) * crate::target::Isa::Avx512.bytes()) as u32;

impl Emitter<'_> {
    /// The assembled tile computing `shape` at `item` in `phase`, called;
    /// `None` when it stored its outputs itself, else its accumulators
    /// read back as f32x4 vectors in the order the IR epilogue takes
    /// (vector `v` of 4 lanes, position `q` at `v · positions + q`).
    pub(super) fn assembled_tile(
        &mut self,
        item: &Item,
        phase: &Phase,
        shape: Shape,
    ) -> Option<Vec<Value>> {
        let microkernel = self.microkernel();
        debug_assert!(
            match microkernel.lanes {
                Lanes::Channels =>
                    microkernel.reduces_channels == (microkernel.input == Input::Broadcast),
                Lanes::Pixels => microkernel.reduces_channels && microkernel.input == Input::Vector,
            },
            "the assembled tiles are the direct, width and depthwise algorithms'"
        );
        let tile = self.describe(phase, shape);
        let func = self.linked(&tile);
        let slot = *self.assembled.slot.get_or_insert_with(|| {
            let data = StackSlotData::new(StackSlotKind::ExplicitSlot, SLOT_BYTES, 6);
            self.base.fb.create_sized_stack_slot(data)
        });
        let pointer = self.base.target.frontend.pointer_type();
        let acc = self.base.fb.ins().stack_addr(pointer, slot, 0);
        // Without a function (linking failed), the error is returned once
        // the lowering ends.
        if let Some(func) = func {
            self.guarded_call(func, &tile, item, acc);
        }
        if tile.stores.is_some() || matches!(tile.form, Form::Pixels(_)) {
            return None;
        }
        // Wide vector `v` of position `q` holds 4-lane vectors `v · k + j`.
        let (p, vb) = (tile.positions.len(), tile.isa.bytes() as i64);
        let k = tile.isa.lanes() / self.base.target.vector.lanes;
        let ty = self.base.target.vector.ty;
        let mut accs = Vec::with_capacity(tile.vectors * k * p);
        for v in 0..tile.vectors {
            for j in 0..k {
                for q in 0..p {
                    let off = (v * p + q) as i64 * vb + j as i64 * 16;
                    accs.push(self.raw_load(ty, acc, off));
                }
            }
        }
        Some(accs)
    }

    /// The epilogue an AVX-512 tile does itself: on rows of output pixels
    /// (consecutive, or a transposed phase's, `stride` apart), outside the
    /// checked lowering (whose stores are the IR's, each tested), when its
    /// offsets fit its displacements.
    fn own_stores(&self, phase: &Phase, shape: Shape) -> Option<Stores> {
        let isa = self.schedule.isa;
        if isa != Isa::Avx512 || self.base.checks.is_some() {
            return None;
        }
        let work = self.plan.work;
        // Merged column phases: each channel's pixels of every phase, one
        // consecutive run (legal schedules tile them one row at a time).
        let members = self.merged_members(phase);
        debug_assert!(members == 1 || shape.rows == 1);
        let (pixels, pixel_step) = match members {
            1 => (shape.pixels, phase.cols.out_step),
            m => (m * shape.pixels, 1),
        };
        Some(Stores {
            pixels,
            pixel_step,
            out_row: (phase.rows.out_step * self.spec.out_width()) as i64 * 4,
            out_plane: (work.lane_stride as i64) * self.out_plane() * 4,
            activation: self.spec.activation().into(),
            sum: self.plan.sum,
            min_lanes: work.tail.lanes.min(work.lanes),
        })
    }

    /// The pixels-in-lanes form of `shape` in `phase`: each row's pixels
    /// in vectors of the ISA's lanes, the last masked to the row (or, for
    /// joined rows, the run of all its rows' pixels in vectors); the
    /// input offsets of the vectors.
    fn pixel_form(&self, phase: &Phase, shape: Shape) -> (Vec<i64>, Form) {
        let isa = self.schedule.isa;
        let lanes = isa.lanes();
        let (eb, row_step) = (self.elem_bytes(), phase.rows.in_step as i64 * self.row_bytes());
        let per_row = shape.pixels.div_ceil(lanes);
        let pixel_out = phase.cols.out_step as i64 * 4;
        let out_row = (phase.rows.out_step * self.spec.out_width()) as i64 * 4;
        let (mut positions, mut out, mut valid) = (Vec::new(), Vec::new(), Vec::new());
        if self.plan.joined {
            // Whole rows as one run: input and output rows are both
            // `pixels` long (a legal joined schedule's), so the run's
            // vectors are consecutive in both.
            debug_assert_eq!(shape.pixels, self.spec.width());
            let run = shape.positions();
            for n in 0..run.div_ceil(lanes) {
                positions.push((lanes * n) as i64 * eb);
                out.push((lanes * n) as i64 * 4);
                valid.push((run - lanes * n).min(lanes));
            }
        } else {
            // The column-phase copy keeps a phase's pixels consecutive;
            // deinterleaving loads read the image's, `stride` apart.
            let pixel_in = self.col_stride(phase) * eb;
            for r in 0..shape.rows {
                for n in 0..per_row {
                    positions.push(r as i64 * row_step + (lanes * n) as i64 * pixel_in);
                    out.push(r as i64 * out_row + (lanes * n) as i64 * pixel_out);
                    valid.push((shape.pixels - lanes * n).min(lanes));
                }
            }
        }
        let work = self.plan.work;
        let stores = PixelStores {
            out,
            valid,
            out_step: pixel_out,
            out_plane: work.lane_stride as i64 * self.out_plane() * 4,
            activation: self.spec.activation().into(),
            sum: self.plan.sum,
            min_lanes: work.tail.lanes.min(work.lanes),
        };
        (positions, Form::Pixels(stores))
    }

    /// The assembled tile of `shape` in `phase`: its positions, taps and
    /// channels as the IR lowering would have stepped through them.
    fn describe(&self, phase: &Phase, shape: Shape) -> Tile {
        let eb = self.elem_bytes();
        let col_step = self.col_stride(phase) * eb;
        let row_step = phase.rows.in_step as i64 * self.row_bytes();
        let (positions, form) = match self.microkernel().lanes {
            Lanes::Pixels => self.pixel_form(phase, shape),
            Lanes::Channels => {
                let at = |q: usize| {
                    (q / shape.pixels) as i64 * row_step + (q % shape.pixels) as i64 * col_step
                };
                let form = match self.microkernel().input {
                    Input::Broadcast => Form::Channels,
                    Input::Vector => Form::Depthwise,
                };
                ((0..shape.positions()).map(at).collect(), form)
            }
        };
        let own_stores = match form {
            Form::Channels | Form::Depthwise => self.own_stores(phase, shape),
            Form::Pixels(_) => None,
        };
        let kw = self.spec.kernel()[1] as i64;
        let tap_bytes = self.tap_bytes();
        let rows: Vec<(i64, i64)> = phase
            .rows
            .taps
            .iter()
            .map(|t| (t.kernel as i64 * kw, self.tap_offset(t, false)))
            .collect();
        let cols: Vec<(i64, i64)> =
            phase.cols.taps.iter().map(|t| (t.kernel as i64, self.tap_offset(t, true))).collect();
        let grid = |rows: &[(i64, i64)]| -> Vec<(i64, i64)> {
            rows.iter()
                .flat_map(|r| cols.iter().map(move |c| ((r.0 + c.0) * tap_bytes, r.1 + c.1)))
                .collect()
        };
        let taps = if rows.len() * cols.len() <= MAX_UNROLLED_TAPS {
            Taps { rows: 1, row_step: (0, 0), taps: grid(&rows) }
        } else {
            // A loop over the kernel's rows, which step by constant kernel
            // rows and padded rows (see `plan`).
            let (first, step) = progression(&rows);
            Taps { rows: rows.len(), row_step: (step.0 * tap_bytes, step.1), taps: grid(&[first]) }
        };
        let image_rows = self.schedule.algorithm.image_rows();
        let masks = if image_rows {
            self.image_row_masks(phase, shape)
        } else if self.plan.joined {
            let offsets: Vec<usize> = phase.cols.taps.iter().map(|t| t.offset).collect();
            // A tile that reads the image itself at a row whose taps reach
            // above or below it: every tap unrolled, each tap's padded row
            // known.
            let rows: Vec<Option<usize>> = if let Some(t) = self.border_row {
                debug_assert_eq!(taps.rows, 1);
                let first = t * phase.rows.in_step;
                phase.rows.taps.iter().map(|tap| Some(first + tap.offset)).collect()
            } else {
                vec![None; taps.taps.len() / offsets.len().max(1)]
            };
            self.joined_masks(shape, &offsets, &rows)
        } else {
            Vec::new()
        };
        let channels = self.spec.in_per_group();
        // Merged column phases: a vector of the tap's weights per phase,
        // the next kernel column's one vector on.
        let members = self.merged_members(phase);
        debug_assert!(members == 1 || tap_bytes == self.schedule.isa.bytes() as i64);
        Tile {
            isa: self.schedule.isa,
            vectors: self.schedule.oc_vectors() * members,
            members,
            positions,
            channels,
            unroll: self.schedule.reduction_unroll().min(channels),
            plane: self.plane_bytes(),
            w_channel: self.w_channel_bytes(),
            taps,
            stores: own_stores,
            form,
            // Column stride 2 (the only other an image's rows are read
            // at) deinterleaves; a tile without taps loads nothing.
            deinterleave: image_rows && col_step == 2 * eb && !masks.is_empty(),
            masks,
        }
        .reaching()
    }

    /// The lanes each tap of a tile of the image's rows loads (see
    /// [`Tile::masks`]), its taps every row tap of `phase` by every column
    /// tap, row-major, and each row of the tile one row of output pixels
    /// (a whole row: legal schedules of the image's rows tile rows whole):
    /// lane `l` of vector `n` of row `r` is output pixel `o = lanes · n +
    /// l`, and loads where `o` is in the row, its input column (`stride ·
    /// o` plus the tap's padded offset) in the image's columns, and — for
    /// a tile at a row whose taps reach past the image (`border_row`) —
    /// its input row in the image's rows.
    fn image_row_masks(&self, phase: &Phase, shape: Shape) -> Vec<u16> {
        let lanes = self.schedule.isa.lanes();
        let [top, left, _, _] = self.plan.geometry.pad;
        let (height, width) = (self.spec.height(), self.spec.width());
        let (rows, cols) = (&phase.rows, &phase.cols);
        let per_row = shape.pixels.div_ceil(lanes);
        let mut masks = Vec::new();
        for row_tap in &rows.taps {
            for col_tap in &cols.taps {
                for r in 0..shape.rows {
                    let row = self.border_row.map(|t| (t + r) * rows.in_step + row_tap.offset);
                    let row_inside = row.is_none_or(|row| (top..top + height).contains(&row));
                    for n in 0..per_row {
                        masks.push(lanes_where(lanes, |l| {
                            let o = lanes * n + l;
                            let col = o * cols.in_step + col_tap.offset;
                            row_inside && o < shape.pixels && (left..left + width).contains(&col)
                        }));
                    }
                }
            }
        }
        masks
    }

    /// The lanes each tap of a tile of joined rows loads (see
    /// [`Tile::masks`]): its taps are `rows.len()` kernel rows (those one
    /// iteration of the tap loop runs) of the column taps at padded
    /// offsets `cols`, row-major; lane `l` of vector `n` is pixel `f =
    /// lanes · n + l` of the run, column `f mod width` of row `f / width`,
    /// and loads where that column plus the tap's offset lies in the
    /// row's pixels and `f` in the run — and, for a tile that reads the
    /// image itself at a row whose taps reach past it, the row plus the
    /// padded row of the tile's first row and kernel row (`Some`) in the
    /// image's rows.
    fn joined_masks(&self, shape: Shape, cols: &[usize], rows: &[Option<usize>]) -> Vec<u16> {
        let (lanes, width) = (self.schedule.isa.lanes(), self.spec.width());
        let [top, left, _, _] = self.plan.geometry.pad;
        let (height, run) = (self.spec.height(), shape.positions());
        let vectors = run.div_ceil(lanes);
        let mut masks = Vec::with_capacity(rows.len() * cols.len() * vectors);
        for &row in rows {
            for &offset in cols {
                for n in 0..vectors {
                    masks.push(lanes_where(lanes, |l| {
                        let f = lanes * n + l;
                        let in_rows =
                            row.is_none_or(|r| (top..top + height).contains(&(f / width + r)));
                        f < run && in_rows && (left..left + width).contains(&(f % width + offset))
                    }));
                }
            }
        }
        masks
    }

    /// The function of `tile`, assembled and linked on first use; `None`
    /// once assembling or linking has failed.
    fn linked(&mut self, tile: &Tile) -> Option<FuncRef> {
        if self.assembled.failed.is_some() {
            return None;
        }
        if let Some(&func) = self.assembled.tiles.get(tile) {
            return Some(func);
        }
        if tile.acc_bytes() > SLOT_BYTES as usize {
            let bytes = tile.acc_bytes();
            let error =
                format!("a tile needs {bytes} bytes of accumulator block, past {SLOT_BYTES}");
            self.assembled.failed = Some(Error::Jit(error));
            return None;
        }
        let name = format!("tile{}", self.assembled.tiles.len());
        // Every tile is audited before it is linked (`wide::audit`): a
        // compiler bug there is an error, never code that runs.
        let linked = wide::assemble(tile).and_then(|(code, intended)| {
            wide::audit(&code, &intended)
                .map_err(|e| Error::Jit(format!("an assembled tile failed its audit: {e}")))?;
            self.assembled.linker.link(self.base.fb.func, &name, &code)
        });
        match linked {
            Ok(func) => {
                self.assembled.tiles.insert(tile.clone(), func);
                Some(func)
            }
            Err(e) => {
                self.assembled.failed = Some(e);
                None
            }
        }
    }

    /// Calls `func` on the item's input, weights and bias with `acc`; in
    /// the checked lowering only when every byte the tile reads
    /// ([`Tile::footprint`]) lies inside its buffer, a fault recorded
    /// otherwise.
    fn guarded_call(&mut self, func: FuncRef, tile: &Tile, item: &Item, acc: Value) {
        let work = self.plan.work;
        let full = self.iconst(work.lanes as i64);
        let stores_itself = tile.stores.is_some() || matches!(tile.form, Form::Pixels(_));
        let lanes = match item.partial {
            Some(partial) if stores_itself => {
                let tail = self.iconst(work.tail.lanes as i64);
                self.base.fb.ins().select(partial, tail, full)
            }
            _ => full,
        };
        let args = [item.x, item.w, item.b, acc, item.y, lanes];
        if self.base.checks.is_none() {
            self.base.fb.ins().call(func, &args);
            return;
        }
        let [x, w, b] = tile.footprint();
        let mut inside = None;
        let mut spans = Vec::new();
        for (base, (lo, hi)) in [(item.x, x), (item.w, w), (item.b, b)] {
            if hi > lo {
                let size = self.iconst(hi - lo);
                spans.push((base, lo, size));
            }
        }
        // A tile that stores its outputs: the bytes of the channels this
        // call stores, `(lanes − 1) · out_plane` past those of the first.
        if let (Form::Pixels(st), Some((lo, hi))) = (&tile.form, tile.output_footprint(1)) {
            let size = self.base.fb.ins().imul_imm_s(lanes, st.out_plane);
            let size = self.base.fb.ins().iadd_imm_s(size, hi - lo - st.out_plane);
            spans.push((item.y, lo, size));
        }
        for (base, lo, size) in spans {
            let here = self.checked_span(base, lo, size);
            inside = Some(match inside {
                None => here,
                Some(all) => self.base.fb.ins().band(all, here),
            });
        }
        let Some(inside) = inside else {
            self.base.fb.ins().call(func, &args);
            return;
        };
        let call = self.base.fb.create_block();
        let done = self.base.fb.create_block();
        let inside = self.base.fb.ins().icmp_imm_s(IntCC::NotEqual, inside, 0);
        self.base.fb.ins().brif(inside, call, &[], done, &[]);
        self.base.fb.switch_to_block(call);
        self.base.fb.ins().call(func, &args);
        self.base.fb.ins().jump(done, &[]);
        self.base.fb.switch_to_block(done);
    }
}

/// The mask of the first `lanes` lanes for which `load` holds.
fn lanes_where(lanes: usize, load: impl Fn(usize) -> bool) -> u16 {
    (0..lanes).filter(|&l| load(l)).fold(0, |mask, l| mask | 1 << l)
}
