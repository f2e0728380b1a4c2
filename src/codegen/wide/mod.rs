//! The register tiles of the vector ISAs wider than Cranelift's: AVX2
//! (`ymm`, 8 f32) and AVX-512 (`zmm`, 16 f32), assembled as machine code
//! and linked into the kernel's JIT module.
//!
//! Cranelift's x86-64 backend has no vector type wider than 128 bits, and
//! the register tile is where a convolution spends its time: its f32x4
//! tile is within a few percent of hand-written 128-bit code, and a third
//! of what 512-bit FMAs do on the same core. So the tile alone is
//! assembled, per layer, with every offset an immediate as in the IR
//! lowering, and with it the epilogue where the IR's would cost as much
//! as the tile (the activation and the stores of an AVX-512 channels tile,
//! through a transpose; every pixels tile's); the loop nest around it, the
//! input copies and the item decoding stay Cranelift IR, and call the tile
//! as a function.
//!
//! - [`Tile`]: what one assembled tile computes, in the lowering's terms
//!   (the reduction's taps and channels, the pixels of the tile), and the
//!   bytes of each buffer it reads ([`Tile::footprint`]: the checked
//!   lowering tests them before each call);
//! - `avx`: the assembler, for both ISAs;
//! - `audit`: the checks hand-assembled code needs because Cranelift's do
//!   not cover it — the bytes decode to the instructions intended, and
//!   they keep the System V ABI — and its listing for `convjit ir --asm`.
//!
//! A tile is a System V function `tile(x, w, bias, acc, y, lanes)`: it
//! loads its accumulators from the bias, reduces over the channels and
//! taps, and either stores the accumulators to `acc`, where the IR
//! epilogue reads them as f32x4 vectors, or stores the first `lanes`
//! channels of its outputs to `y` itself ([`Stores`], [`Form::Pixels`]). It is a leaf that touches no stack and no callee-saved
//! register, and ends with `vzeroupper` before `ret`: it needs no unwind
//! information, and leaves the upper halves of the vector registers clean
//! for the SSE code around it.

mod audit;
mod avx;

pub use audit::{Audit, audit, listing, reach};
pub use avx::assemble;

use cranelift_codegen::ir::{Function, Signature, Type};
use cranelift_codegen::isa::CallConv;

use crate::error::Result;
use crate::target::Isa;

/// The most bytes any displacement of an assembled tile may reach: the
/// x86-64 encoding holds 32 signed bits. The schedule's legality keeps a
/// layer's tiles within it ([`crate::algorithm::MAX_ASSEMBLED_REACH`]);
/// [`assemble`] checks it again.
pub const MAX_REACH: i64 = crate::algorithm::MAX_ASSEMBLED_REACH;

/// Where the lowering puts the code it assembles, and how the IR names it.
pub trait Linker {
    /// Defines `code`, a function of [`signature`] named `name` in
    /// listings, and returns the reference `func` calls it by.
    fn link(
        &mut self,
        func: &mut Function,
        name: &str,
        code: &[u8],
    ) -> Result<cranelift_codegen::ir::FuncRef>;
}

/// The signature of every assembled tile ([`crate::abi::TileFn`]'s):
/// `x`, `w`, `bias`, `acc`, `y` and `lanes` in the System V convention.
pub fn signature(pointer: Type) -> Signature {
    crate::abi::TileFn::signature(pointer, CallConv::SystemV)
}

/// One assembled register tile: accumulators `(v, q)` for `vectors`
/// vectors of channels and `positions.len()` pixel positions, reduced over
/// `channels` input channels (`unroll` per loop iteration), each running
/// the taps of [`Taps`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    /// The ISA: [`Isa::Avx2`] or [`Isa::Avx512`].
    pub isa: Isa,
    /// Vectors of output channels (the weights reused by every position).
    pub vectors: usize,
    /// 1, or (a channels tile of merged column phases) the column phases
    /// its `vectors` are: each vector the same channels in the next
    /// phase, its weights the next kernel column's (one vector on), its
    /// bias the first vector's, and its outputs one pixel on, so that
    /// [`Stores`] takes each channel's positions of every phase as one
    /// row of `members · positions` consecutive pixels.
    pub members: usize,
    /// Input bytes from the tile's first pixel to each position's.
    pub positions: Vec<i64>,
    /// Input channels summed over.
    pub channels: usize,
    /// Channels per iteration of the channel loop.
    pub unroll: usize,
    /// Input bytes from one channel to the next.
    pub plane: i64,
    /// Weight bytes from one channel to the next.
    pub w_channel: i64,
    /// One channel's taps.
    pub taps: Taps,
    /// The epilogue, when a channels-in-lanes tile stores its outputs
    /// itself (AVX-512, outside the checked lowering); without one it
    /// leaves its accumulators in `acc` for the IR's epilogue.
    pub stores: Option<Stores>,
    /// What the lanes hold.
    pub form: Form,
    /// For a pixels tile of joined rows or of the image's rows (AVX-512):
    /// the lanes of position `q` whose input at tap `i` (of
    /// [`Taps::taps`]) lies in the image (or the copy's row) and the
    /// tile's pixels, at `masks[i · positions + q]`; the others are loaded
    /// as zeros, and no memory is read for them. Empty: every lane of every
    /// load.
    pub masks: Vec<u16>,
    /// For a pixels tile (AVX-512): whether lane `l` of a position's
    /// vector is the input `2l` elements past the position's (a conv2d of
    /// column stride 2 read from the image itself): loaded as the two
    /// vectors of 32 consecutive elements, of which an in-lane shuffle
    /// keeps the even ones (in an order of its own that the epilogue
    /// undoes). Its lanes always come with `masks`.
    pub deinterleave: bool,
}

/// What an assembled tile's lanes hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// Output channels (the direct algorithm): `vectors` vectors of the
    /// tap's weights, reused by every position, times each position's
    /// pixel broadcast; accumulator `(v, q)` at `v · positions + q`.
    Channels,
    /// Consecutive output pixels (the width algorithm): `vectors` output
    /// channels times `positions.len()` vectors of pixels, each position
    /// the input offset of a vector; accumulator `(m, j)` at
    /// `m · positions + j`. The fewer of the two operands is held in
    /// registers through a tap, the other read by each FMA. It always
    /// stores its outputs itself.
    Pixels(PixelStores),
    /// Channels of one group each (the depthwise algorithm): `vectors`
    /// vectors of the tap's weights, each times the vector of its channels'
    /// input pixel, read by the FMA from plane `v` (`plane` bytes apart) of
    /// the channel-blocked copy; no reduction over channels. Accumulator
    /// `(v, q)` at `v · positions + q`, left in `acc` for the IR epilogue.
    Depthwise,
}

/// The epilogue of a pixels-in-lanes tile: the activation, then for each
/// channel `m` (the first `lanes` only) and pixel vector `j`, its `valid[j]`
/// lanes stored at `y + m · out_plane + out[j]`, `out_step` bytes apart —
/// a whole vector where they are consecutive (the valid lanes of a partial
/// one: masked on AVX-512, in pieces of 4, 2 and 1 lanes on AVX2), lane by
/// lane through `acc` where they are not.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PixelStores {
    /// Output bytes of each pixel vector's first pixel.
    pub out: Vec<i64>,
    /// The lanes of each pixel vector that are pixels of the row.
    pub valid: Vec<usize>,
    /// Output bytes between consecutive pixels of a vector.
    pub out_step: i64,
    /// Output bytes from one channel to the next.
    pub out_plane: i64,
    /// The activation.
    pub activation: Activation,
    /// The sum epilogue: each register plus the outputs it is stored to,
    /// then activated.
    pub sum: bool,
    /// Channels every call stores.
    pub min_lanes: usize,
}

/// An assembled tile's own epilogue: the activation, the accumulators
/// transposed from channels-in-lanes to pixels-in-lanes through the `acc`
/// block, and each channel's pixels of each row stored with one masked
/// store, or, `pixel_step` apart, with one masked store per
/// `⌈16 / pixel_step⌉` pixels spread to every `pixel_step`-th lane. Position
/// `q` of the tile is pixel `q % pixels` of row `q / pixels`, at
/// `y + (q % pixels) · pixel_step · 4` in the row; channel `c`'s output
/// is at `y + c · out_plane`. Only the first `lanes` channels (the call's
/// last argument) are stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stores {
    /// Output pixels per row of the tile.
    pub pixels: usize,
    /// Output pixels from one pixel of a row to the next: 1, or a
    /// transposed convolution's stride (its phases' pixels interleave).
    pub pixel_step: usize,
    /// Output bytes from one row of the tile to the next.
    pub out_row: i64,
    /// Output bytes from one channel to the next.
    pub out_plane: i64,
    /// The activation.
    pub activation: Activation,
    /// The sum epilogue: each channel's row of outputs plus what they
    /// held (read under the store's mask), then activated.
    pub sum: bool,
    /// Channels every call stores (the call's `lanes` is checked only
    /// past these).
    pub min_lanes: usize,
}

impl Stores {
    /// Output bytes from a row's first pixel to the end of its last.
    pub fn row_bytes(&self) -> i64 {
        ((self.pixels.max(1) - 1) * self.pixel_step + 1) as i64 * 4
    }
}

/// An activation as an assembled epilogue applies it (the parameter's
/// bits, so that tiles hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`, NaN kept.
    Relu,
    /// `min(max(x, 0), 6)`, NaN kept.
    Relu6,
    /// `x` if `x ≥ 0`, else the slope (these f32 bits) times `x`.
    LeakyRelu(u32),
}

impl From<crate::spec::Activation> for Activation {
    fn from(a: crate::spec::Activation) -> Activation {
        use crate::spec::Activation as A;
        match a {
            A::None => Activation::None,
            A::Relu => Activation::Relu,
            A::Relu6 => Activation::Relu6,
            A::LeakyRelu { negative_slope } => Activation::LeakyRelu(negative_slope.to_bits()),
        }
    }
}

/// One channel's taps: `rows` iterations (a loop when more than one), each
/// running the `taps` listed as `(weight byte offset, input byte offset)`,
/// then advancing both pointers by `row_step`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taps {
    /// Iterations over the kernel's rows (1: every tap in `taps`).
    pub rows: usize,
    /// Weight and input bytes from one row iteration to the next.
    pub row_step: (i64, i64),
    /// The taps of one iteration: `(weight bytes, input bytes)` from the
    /// iteration's pointers.
    pub taps: Vec<(i64, i64)>,
}

impl Tile {
    /// Accumulators.
    pub fn accumulators(&self) -> usize {
        self.vectors * self.positions.len()
    }

    /// The output channels of a channels tile: its vectors' lanes, or
    /// one vector's for merged column phases (each vector a phase of the
    /// same channels).
    pub fn channel_lanes(&self) -> usize {
        self.vectors / self.members.max(1) * self.isa.lanes()
    }

    /// The rows of output pixels a tile with `st` stores: its positions
    /// (of every member) in rows of `st.pixels`.
    pub fn store_rows(&self, st: &Stores) -> usize {
        self.positions.len() * self.members.max(1) / st.pixels.max(1)
    }

    /// Bytes of the accumulator block the tile uses: accumulator `(v, q)`
    /// at `(v · positions + q) · vector bytes`; a pixels tile uses it for
    /// its stores lane by lane and one vector past the accumulators for
    /// its activation's constant.
    pub fn acc_bytes(&self) -> usize {
        let extra = usize::from(matches!(self.form, Form::Pixels(_)));
        (self.accumulators() + extra) * self.isa.bytes()
    }

    /// This tile, without its own stores when their offsets would not fit
    /// its displacements (the IR epilogue stores them then).
    pub fn reaching(self) -> Tile {
        if self.stores.is_some() && !self.within_reach() {
            return Tile { stores: None, ..self };
        }
        self
    }

    /// Whether every displacement and step the tile's code forms is
    /// within [`MAX_REACH`] (the footprint bounds every displacement).
    pub fn within_reach(&self) -> bool {
        let unroll = self.unroll.max(1) as i64;
        let steps = [
            self.plane.saturating_mul(unroll),
            self.w_channel.saturating_mul(unroll),
            self.taps.row_step.0,
            self.taps.row_step.1,
            self.acc_bytes() as i64,
        ];
        let [x, w, b] = self.footprint();
        let y = match (&self.stores, &self.form) {
            (Some(st), _) => {
                let rows = self.store_rows(st) as i64;
                let reach = self.channel_lanes() as i64 * st.out_plane.abs()
                    + rows * (st.out_row.abs() + st.row_bytes());
                [reach, -reach]
            }
            (None, Form::Pixels(st)) => {
                let out = st.out.iter().map(|o| o.abs()).max().unwrap_or(0);
                let reach = self.vectors as i64 * st.out_plane.abs()
                    + out
                    + self.isa.lanes() as i64 * st.out_step.abs();
                [reach, -reach]
            }
            (None, Form::Channels | Form::Depthwise) => [0, 0],
        };
        steps.iter().chain(&[x.0, x.1, w.0, w.1, b.1]).chain(&y).all(|v| v.abs() <= MAX_REACH)
    }

    /// The bytes of the output a tile with [`Stores`] writes when it
    /// stores `lanes` channels, as `[lo, hi)` offsets from `y`.
    pub fn output_footprint(&self, lanes: usize) -> Option<(i64, i64)> {
        if let Form::Pixels(st) = &self.form {
            let lanes = lanes.min(self.vectors);
            if lanes == 0 {
                return Some((0, 0));
            }
            let ends = st.out.iter().zip(&st.valid);
            let lo = ends.clone().map(|(&o, _)| o).min().unwrap_or(0);
            let hi = ends.map(|(&o, &v)| o + (v as i64 - 1) * st.out_step + 4).max().unwrap_or(0);
            return Some((lo, (lanes - 1) as i64 * st.out_plane + hi));
        }
        let st = self.stores.as_ref()?;
        let rows = self.store_rows(st);
        // Merged column phases are one vector of channels.
        let lanes = lanes.min(self.channel_lanes());
        if lanes == 0 || rows == 0 {
            return Some((0, 0));
        }
        let last = (lanes - 1) as i64 * st.out_plane + (rows - 1) as i64 * st.out_row;
        Some((0, last + st.row_bytes()))
    }

    /// The bytes of each buffer the tile reads, as `[lo, hi)` offsets from
    /// its pointer: the input, the weights, the bias.
    pub fn footprint(&self) -> [(i64, i64); 3] {
        // Every input address is a sum of independent terms: the channel,
        // the row iteration, the tap, the position.
        let span = |n: usize, step: i64| {
            let last = (n.max(1) as i64 - 1).saturating_mul(step);
            (last.min(0), last.max(0))
        };
        let range = |values: &mut dyn Iterator<Item = i64>| {
            values.fold((i64::MAX, i64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
        };
        let sum = |parts: &[(i64, i64)]| {
            parts.iter().fold((0i64, 0i64), |(lo, hi), &(a, b)| {
                (lo.saturating_add(a), hi.saturating_add(b))
            })
        };
        let vb = self.isa.bytes() as i64;
        let channels = span(self.channels, self.plane);
        let w_channels = span(self.channels, self.w_channel);
        let rows = span(self.taps.rows, self.taps.row_step.1);
        let w_rows = span(self.taps.rows, self.taps.row_step.0);
        let taps = range(&mut self.taps.taps.iter().map(|t| t.1));
        let w_taps = range(&mut self.taps.taps.iter().map(|t| t.0));
        let at = range(&mut self.positions.iter().copied());
        // A depthwise tile's vectors read their own planes.
        let planes = match self.form {
            Form::Depthwise => span(self.vectors, self.plane),
            _ => (0, 0),
        };
        let x = sum(&[channels, rows, taps, at, planes]);
        let w = sum(&[w_channels, w_rows, w_taps]);
        // What one address reads: a pixel broadcast and a vector of
        // weights, a vector of pixels and a weight broadcast, or a vector
        // of each.
        let (pixel, weights, bias) = match self.form {
            Form::Channels => {
                let bias = if self.members > 1 { vb } else { self.vectors as i64 * vb };
                (4, self.vectors as i64 * vb, bias)
            }
            Form::Pixels(_) => (vb, self.vectors as i64 * 4, self.vectors as i64 * 4),
            Form::Depthwise => (vb, self.vectors as i64 * vb, self.vectors as i64 * vb),
        };
        if self.taps.taps.is_empty() || self.channels == 0 {
            return [(0, 0), (0, 0), (0, bias)];
        }
        if !self.masks.is_empty() {
            // Masked loads read their lanes alone: the tap and the position
            // bound together, by each load's first and last lane (lane `l`
            // the element `2l` past a deinterleaving load's first).
            let lane = if self.deinterleave { 8 } else { 4 };
            let p = self.positions.len();
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            for (i, &(_, tx)) in self.taps.taps.iter().enumerate() {
                for (q, &at) in self.positions.iter().enumerate() {
                    let mask = self.masks.get(i * p + q).copied().unwrap_or(u16::MAX);
                    if mask != 0 {
                        let (first, last) = (mask.trailing_zeros(), 15 - mask.leading_zeros());
                        lo = lo.min(tx + at + lane * first as i64);
                        hi = hi.max(tx + at + lane * last as i64 + 4);
                    }
                }
            }
            if lo > hi {
                return [(0, 0), (w.0, w.1 + weights), (0, bias)];
            }
            let x = sum(&[channels, rows, (lo, hi)]);
            return [x, (w.0, w.1 + weights), (0, bias)];
        }
        [(x.0, x.1 + pixel), (w.0, w.1 + weights), (0, bias)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tile with random positions, taps and strides, of an ISA this
    /// host may not have (the code is assembled and decoded, never run):
    /// channels in lanes (on AVX-512, with its own stores half the time),
    /// or pixels in lanes.
    fn any_tile() -> impl Strategy<Value = Tile> {
        let isa = prop_oneof![Just(Isa::Avx2), Just(Isa::Avx512)];
        let shape = (1usize..=3, 1usize..=12).prop_map(|(v, p)| (v, p.min(12 / v)));
        let grid = prop::collection::vec((0i64..40, 0i64..400), 0..=9);
        // The activation's index, plus 4 for the sum epilogue.
        let stores = (0u8..4, 1usize..=4, 0usize..=4, 0u32..8, 0usize..=48);
        let sizes = (0usize..=6, 1usize..=4, (1i64..2000, 1i64..600), 1usize..=3, 1i64..50);
        let pixels = (1usize..=14, 1usize..=4, 1usize..=40, any::<bool>());
        // Lane masks of joined rows or deinterleaving loads (AVX-512
        // pixels tiles), half the time.
        let masks = prop::option::of((prop::collection::vec(any::<u16>(), 9 * 14), any::<bool>()));
        (isa, shape, grid, sizes, (stores, pixels, masks)).prop_map(
            |(isa, (vectors, p), grid, sizes, (stores, pixels, masks))| {
                let (kind, rows_of, plane_out, activation, min_lanes) = stores;
                let sum = activation >= 4;
                let activation = [
                    Activation::None,
                    Activation::Relu,
                    Activation::Relu6,
                    Activation::LeakyRelu(0.5f32.to_bits()),
                ][activation as usize % 4];
                let lanes = isa.lanes();
                // Pixels in lanes: m channels × vectors of a row's pixels.
                if kind == 2 {
                    let (m, rows_of, row_pixels, strided) = pixels;
                    let per_row = row_pixels.div_ceil(lanes);
                    let j = per_row * rows_of;
                    let fits = |m: usize| {
                        m * j + m.min(j) + usize::from(isa == Isa::Avx2 && j < m) <= 16
                            && m * j <= 14
                    };
                    if !fits(1) {
                        return any_channels_tile(isa, (1, 1), vec![(0, 0)], sizes, None);
                    }
                    let m = (1..=m).rev().find(|&m| fits(m)).unwrap_or(1);
                    let out_step = if strided { 8 } else { 4 };
                    let out_row = 4 * (row_pixels as i64 * 2 + 5);
                    let (mut positions, mut out, mut valid) = (vec![], vec![], vec![]);
                    for r in 0..rows_of {
                        for n in 0..per_row {
                            positions.push(r as i64 * 400 + (lanes * n * 4) as i64);
                            out.push(r as i64 * out_row + (lanes * n) as i64 * out_step);
                            valid.push((row_pixels - lanes * n).min(lanes));
                        }
                    }
                    let stores = PixelStores {
                        out,
                        valid,
                        out_step,
                        out_plane: out_row * rows_of as i64 + 4 * plane_out as i64,
                        activation,
                        sum,
                        min_lanes: min_lanes.min(m),
                    };
                    let mut tile = any_channels_tile(isa, (m, 1), grid, sizes, None);
                    tile.positions = positions;
                    tile.w_channel = tile.w_channel / (vectors_bytes(isa, 1)) * 4 * m as i64;
                    tile.taps.taps = tile.taps.taps.iter().map(|&(w, x)| (w / 4 * 4, x)).collect();
                    tile.form = Form::Pixels(stores);
                    if let (Isa::Avx512, Some((masks, deinterleave))) = (isa, masks) {
                        let n = tile.taps.taps.len() * tile.positions.len();
                        tile.masks = masks.into_iter().cycle().take(n).collect();
                        tile.deinterleave = deinterleave && n > 0;
                        if tile.deinterleave {
                            // Taps one element apart, as a row's columns
                            // are, loaded in pairs.
                            for i in (1..tile.taps.taps.len()).step_by(2) {
                                tile.taps.taps[i].1 = tile.taps.taps[i - 1].1 + 4;
                            }
                        }
                    }
                    return tile;
                }
                // Merged column phases (a channels tile of several
                // vectors, a phase each): one row of every phase's pixels.
                if kind == 1 && vectors > 1 && rows_of == 4 {
                    let pixels = vectors * p;
                    let stores = (isa == Isa::Avx512).then(|| Stores {
                        pixels,
                        pixel_step: 1,
                        out_row: 4 * (pixels + 3) as i64,
                        out_plane: 4 * (pixels + 3 + plane_out) as i64,
                        activation,
                        sum,
                        min_lanes: min_lanes.min(16),
                    });
                    let tile = any_channels_tile(isa, (vectors, p), grid, sizes, stores);
                    return Tile { members: vectors, ..tile };
                }
                // Positions in whole rows when the tile stores them (a
                // channels tile, or a depthwise one: kind 3).
                let own = (kind == 1 || (kind == 3 && rows_of % 2 == 0)) && isa == Isa::Avx512;
                let (p, stores) = if own {
                    let rows_of = rows_of.min(p);
                    let pixels = p / rows_of;
                    // Consecutive pixels, or a transposed phase's (every
                    // 2nd or 3rd), the rows far enough apart.
                    let pixel_step = [1, 1, 2, 3][plane_out % 4];
                    let row = pixels * pixel_step + 3;
                    let stores = Stores {
                        pixels,
                        pixel_step,
                        out_row: 4 * row as i64,
                        out_plane: 4 * (rows_of * row + plane_out) as i64,
                        activation,
                        sum,
                        min_lanes: min_lanes.min(vectors * 16),
                    };
                    (pixels * rows_of, Some(stores))
                } else {
                    (p, None)
                };
                let mut tile = any_channels_tile(isa, (vectors, p), grid, sizes, stores);
                // Channels of a group each: vectors of weights times
                // vectors of pixels, each vector its own plane.
                if kind == 3 {
                    tile.form = Form::Depthwise;
                }
                tile
            },
        )
    }

    fn vectors_bytes(isa: Isa, vectors: usize) -> i64 {
        (vectors * isa.bytes()) as i64
    }

    /// A channels-in-lanes tile of `vectors` × `p` from the drawn sizes.
    fn any_channels_tile(
        isa: Isa,
        (vectors, p): (usize, usize),
        grid: Vec<(i64, i64)>,
        (channels, unroll, (plane, w_channel), rows, step): (usize, usize, (i64, i64), usize, i64),
        stores: Option<Stores>,
    ) -> Tile {
        let vb = vectors_bytes(isa, vectors);
        Tile {
            isa,
            vectors,
            members: 1,
            positions: (0..p as i64).map(|q| q * 8).collect(),
            channels,
            unroll,
            plane: plane * 4,
            w_channel: w_channel * vb,
            taps: Taps {
                rows,
                row_step: (step * vb, step * 100),
                taps: grid.iter().map(|&(w, x)| (w * vb, x * 4)).collect(),
            },
            stores,
            form: Form::Channels,
            masks: Vec::new(),
            deinterleave: false,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every tile decodes to the instructions it was assembled from,
        /// keeps the System V ABI, and addresses exactly its footprint
        /// (found by running its pointer arithmetic and loops): the bytes
        /// the checked lowering tests before each call; a tile that
        /// stores its outputs writes exactly the channels it is asked for.
        #[test]
        fn tiles_decode_keep_the_abi_and_stay_in_their_footprint(
            tile in any_tile(),
            lanes in 1usize..=48,
        ) {
            let (code, intended) = assemble(&tile).unwrap();
            let audit = audit(&code, &intended).unwrap();
            prop_assert_eq!(audit.fmas, tile_fmas(&tile));
            let (all, least) = match &tile.form {
                Form::Pixels(st) => (tile.vectors, st.min_lanes),
                Form::Channels | Form::Depthwise => {
                    (tile.channel_lanes(), tile.stores.as_ref().map_or(1, |s| s.min_lanes))
                }
            };
            let lanes = lanes.clamp(least.max(1), all);
            let [x, w, b, acc, y] = reach(&code, lanes as i64).unwrap();
            prop_assert_eq!([x, w, b], tile.footprint());
            match tile.form {
                // Within the block: the stores lane by lane and the
                // constant use parts of it.
                Form::Pixels(_) => {
                    prop_assert!(acc.0 >= 0 && acc.1 <= tile.acc_bytes() as i64, "{:?}", acc)
                }
                Form::Channels | Form::Depthwise => {
                    prop_assert_eq!(acc, (0, tile.acc_bytes() as i64))
                }
            }
            prop_assert_eq!(y, tile.output_footprint(lanes).unwrap_or((0, 0)));
        }
    }

    /// The FMA instructions a tile's code holds (loops counted once).
    fn tile_fmas(tile: &Tile) -> usize {
        if tile.taps.taps.is_empty() {
            return 0;
        }
        if tile.channels == 0 {
            return 0;
        }
        let unroll = tile.unroll.min(tile.channels);
        let bodies = unroll * usize::from(tile.channels >= unroll) + tile.channels % unroll;
        bodies * tile.taps.taps.len() * tile.accumulators()
    }
}
