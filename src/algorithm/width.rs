//! The width algorithm: vectorise along the output row; one output channel
//! per work item, and each FMA multiplies a vector of consecutive output
//! pixels' inputs (one load from an NCHW copy) by one weight broadcast to
//! every lane. Strided layers read a copy whose rows are split into
//! `stride` column phases, so no load gathers.

use serde::{Deserialize, Serialize};

use super::{Family, Input, Lanes, MAX_ACCUMULATORS, Microkernel, Strategy, Tile, Work, tiles_of};
use crate::geometry::{Geometry, Phase};
use crate::spec::ValidSpec;
use crate::target::Isa;

/// The width algorithm's configuration: `channels` output channels per
/// tile, so its register tile is `channels · pixel_vectors · row_tile`
/// accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Width {
    /// Vectors of consecutive output pixels per row of the tile (the tile is
    /// `lanes · pixel_vectors` pixels wide); with joined rows, the vectors
    /// of the whole run of `row_tile` rows.
    pub pixel_vectors: usize,
    /// Output rows per register tile.
    pub row_tile: usize,
    /// Input channels per iteration of the reduction loop.
    pub reduction_unroll: usize,
    /// Output channels per tile, each with its own accumulators and its
    /// weight broadcast (default 1; more on the assembled ISAs only).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub channels: usize,
    /// The length of the rows the layer's planes are computed as, when not
    /// its own width: a 1×1 conv2d of stride 1 without padding reads and
    /// writes the same `H·W` consecutive pixels of each plane, so any
    /// length that divides them computes it (rows of whole tiles: no
    /// vector masked at a row's end). Absent: the layer's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_length: Option<usize>,
    /// Whether the tile's `row_tile` rows are computed as one run of
    /// `row_tile · width` consecutive pixels, in `pixel_vectors` vectors
    /// (exactly as many as the run needs): the copy stores each plane's
    /// rows back to back, without columns of padding, so a vector may
    /// span the end of one row and the start of the next, and each tap's
    /// lanes whose input lies left or right of the row are loaded as
    /// zeros (AVX-512 masks). For a conv2d of stride 1 whose output rows
    /// are as wide as its input rows; rows narrower than a vector no
    /// longer leave lanes idle (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joined: bool,
    /// Whether the tiles read the layer's rows from the NCHW image itself
    /// instead of a padded copy (AVX-512; a conv2d of column stride 1 or
    /// 2, each tile a whole output row wide): lanes whose inputs lie
    /// outside the image are masked off the loads, and a tile of several
    /// rows loads each input vector once for all the taps that read it.
    /// With column stride 2, each vector of 16 output pixels' inputs is
    /// loaded as the 32 consecutive pixels they lie among, of which a
    /// shuffle keeps every second one (deinterleaved loads), instead of a
    /// copy whose rows are split into column phases (default false;
    /// `deinterleaved` is the name schedules saved before stride 1 was
    /// read so).
    #[serde(default, alias = "deinterleaved", skip_serializing_if = "std::ops::Not::not")]
    pub image: bool,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// The size of `count` items cut into the fewest near-equal blocks of at
/// most `most`: 64 channels, at most 12 a block, in blocks of 11 (five of
/// 11 and one of 9), where blocks of 12 leave one of 4.
pub fn even_blocks(count: usize, most: usize) -> usize {
    let blocks = count.div_ceil(most.max(1)).max(1);
    count.div_ceil(blocks).max(1)
}

/// The width algorithm's registry entry.
pub(super) struct WidthFamily;

/// The one instance.
pub(super) const FAMILY: WidthFamily = WidthFamily;

impl Family for WidthFamily {
    fn strategy(&self) -> Strategy {
        Strategy::Width
    }

    fn name(&self) -> &'static str {
        "width"
    }

    /// Whole vectors of pixels, up to the first that covers the widest
    /// phase; one channel (`sse`), or up to as many as a group has
    /// (assembled: 1 to 7, and 14).
    fn tiles(
        &self,
        spec: &ValidSpec,
        geometry: &Geometry,
        min_accumulators: usize,
        isa: Isa,
    ) -> Vec<Tile> {
        let (cols, lanes) = (geometry.most_cols(), isa.lanes());
        let pixels: Vec<usize> =
            (1..=MAX_ACCUMULATORS).map(|v| lanes * v).filter(|&p| p < cols + lanes).collect();
        let mut out = Vec::new();
        let mut channels: Vec<usize> = match isa.is_assembled() {
            // And a group's channels in near-equal blocks of at most 12.
            true => vec![1, 2, 3, 4, 5, 6, 7, 12, 14, even_blocks(spec.out_per_group(), 12)],
            false => vec![1],
        };
        channels.sort_unstable();
        channels.dedup();
        for &m in channels.iter().filter(|&&m| m == 1 || m <= spec.out_per_group()) {
            let per_row = |_, p: usize| m * (p / lanes);
            let tiles = tiles_of(1, &pixels, per_row, geometry, min_accumulators, isa);
            out.extend(tiles.into_iter().map(|t| Tile { oc_vectors: m, ..t }));
        }
        out
    }

    /// Every ISA: on the wider ones its tile is assembled
    /// (`codegen::wide`).
    fn isas(&self) -> &'static [Isa] {
        &Isa::ALL
    }

    /// `channels` output channels per item: the direct algorithm's items
    /// with blocks of that many channels.
    fn work(&self, spec: &ValidSpec, _isa: Isa, channels: usize) -> Work {
        super::direct::channel_blocks(spec, channels)
    }

    /// A vector of consecutive pixels' inputs times the tap's weight
    /// broadcast, summed over the group's input channels.
    fn microkernel(&self) -> Microkernel {
        Microkernel { lanes: Lanes::Pixels, input: Input::Vector, reduces_channels: true }
    }

    /// The column phases and sub-row length of the width strategy's copy. Its
    /// tiles load whole vectors of `lanes` consecutive phase positions, so a row's
    /// last vector may read up to `lanes − 1` positions past the last output pixel: the
    /// sub-row is long enough that those reads stay inside it (they are zero
    /// padding or real pixels, and their lanes are never stored).
    fn row_phases(&self, phases: &[Phase], padded_width: usize, lanes: usize) -> (usize, usize) {
        // conv2d has one phase whose column step is the stride; the phases of
        // conv_transpose2d all step by 1.
        let col_phases = phases.iter().map(|p| p.cols.in_step).max().unwrap_or(1).max(1);
        let reach = phases
            .iter()
            .filter_map(|p| {
                let (_, last_tap) = p.cols.offset_range()?;
                Some(
                    p.cols.count.next_multiple_of(lanes) * p.cols.in_step / col_phases
                        + last_tap / col_phases,
                )
            })
            .max()
            .unwrap_or(0);
        (col_phases, padded_width.div_ceil(col_phases).max(reach))
    }
}
