//! The register tiles of the vector ISAs wider than Cranelift's: AVX2
//! (`ymm`, 8 f32) and AVX-512 (`zmm`, 16 f32), assembled as machine code
//! and linked into the kernel's JIT module.
//!
//! Cranelift's x86-64 backend has no vector type wider than 128 bits, and
//! the register tile is where a convolution spends its time: its f32x4
//! tile is within a few percent of hand-written 128-bit code, and a third
//! of what 512-bit FMAs do on the same core. So the tile alone is
//! assembled, per layer, with every offset an immediate as in the IR
//! lowering; the loop nest around it, the input copies, the item decoding
//! and the epilogue (activation, the stores and their channel tails) stay
//! Cranelift IR, and call the tile as a function.
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
//! A tile is a System V function `tile(x, w, bias, acc)`: it loads its
//! accumulators from the bias, reduces over the channels and taps, and
//! stores the accumulators to `acc`, where the IR epilogue reads them as
//! f32x4 vectors. It is a leaf that touches no stack and no callee-saved
//! register, and ends with `vzeroupper` before `ret`: it needs no unwind
//! information, and leaves the upper halves of the vector registers clean
//! for the SSE code around it.

mod audit;
mod avx;

pub use audit::{Audit, audit, listing, reach};
pub use avx::assemble;

use cranelift_codegen::ir::{AbiParam, Function, Signature, Type};
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

/// The signature of every assembled tile: four pointers (`x`, `w`,
/// `bias`, `acc`) in the System V convention.
pub fn signature(pointer: Type) -> Signature {
    let mut sig = Signature::new(CallConv::SystemV);
    sig.params.extend([AbiParam::new(pointer); 4]);
    sig
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

    /// Bytes of the accumulator block the tile stores: accumulator
    /// `(v, q)` at `(v · positions + q) · vector bytes`.
    pub fn acc_bytes(&self) -> usize {
        self.accumulators() * self.isa.bytes()
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
        steps.iter().chain(&[x.0, x.1, w.0, w.1, b.1]).all(|v| v.abs() <= MAX_REACH)
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
        let x = sum(&[channels, rows, taps, at]);
        let w = sum(&[w_channels, w_rows, w_taps]);
        let bias = self.vectors as i64 * vb;
        if self.taps.taps.is_empty() || self.channels == 0 {
            return [(0, 0), (0, 0), (0, bias)];
        }
        [(x.0, x.1 + 4), (w.0, w.1 + self.vectors as i64 * vb), (0, bias)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A tile with random positions, taps and strides, of an ISA this
    /// host may not have (the code is assembled and decoded, never run).
    fn any_tile() -> impl Strategy<Value = Tile> {
        let isa = prop_oneof![Just(Isa::Avx2), Just(Isa::Avx512)];
        let shape = (1usize..=3, 1usize..=12).prop_map(|(v, p)| (v, p.min(12 / v)));
        let grid = prop::collection::vec((0i64..40, 0i64..400), 1..=9);
        (isa, shape, 0usize..=6, 1usize..=4, (1i64..2000, 1i64..600), grid, 1usize..=3, 1i64..50)
            .prop_map(
                |(isa, (vectors, p), channels, unroll, (plane, w_channel), grid, rows, step)| {
                    let vb = isa.bytes() as i64;
                    Tile {
                        isa,
                        vectors,
                        positions: (0..p as i64).map(|q| q * 8).collect(),
                        channels,
                        unroll,
                        plane: plane * 4,
                        w_channel: w_channel * vectors as i64 * vb,
                        taps: Taps {
                            rows,
                            row_step: (step * vectors as i64 * vb, step * 100),
                            taps: grid
                                .iter()
                                .map(|&(w, x)| (w * vectors as i64 * vb, x * 4))
                                .collect(),
                        },
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every tile decodes to the instructions it was assembled from,
        /// keeps the System V ABI, and addresses exactly its footprint
        /// (found by running its pointer arithmetic and loops): the bytes
        /// the checked lowering tests before each call.
        #[test]
        fn tiles_decode_keep_the_abi_and_stay_in_their_footprint(tile in any_tile()) {
            let (code, intended) = assemble(&tile).unwrap();
            let audit = audit(&code, &intended).unwrap();
            prop_assert_eq!(audit.fmas, tile_fmas(&tile));
            let [x, w, b, acc] = reach(&code).unwrap();
            let footprint = tile.footprint();
            prop_assert_eq!([x, w, b], footprint);
            prop_assert_eq!(acc, (0, tile.acc_bytes() as i64));
        }
    }

    /// The FMA instructions a tile's code holds (loops counted once).
    fn tile_fmas(tile: &Tile) -> usize {
        if tile.channels == 0 {
            return 0;
        }
        let unroll = tile.unroll.min(tile.channels);
        let bodies = unroll * usize::from(tile.channels >= unroll) + tile.channels % unroll;
        bodies * tile.taps.taps.len() * tile.accumulators()
    }
}
