//! The direct algorithm: vectorise across a group's output channels; each
//! FMA multiplies a broadcast input pixel by a vector of output channels'
//! weights. Serves every layer.

use serde::{Deserialize, Serialize};

use super::{
    Coordinate, Family, Input, Lanes, Layout, MAX_ACCUMULATORS, MAX_OC_VECTORS, Microkernel,
    Strategy, Tail, Tile, Work, tail_lanes, tiles_of,
};
use crate::geometry::Geometry;
use crate::spec::ValidSpec;
use crate::target::Isa;

/// The direct algorithm's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Direct {
    /// The register tile.
    pub tile: Tile,
    /// Input channels per iteration of the reduction loop. Larger unrolls
    /// cut loop overhead and back-edge moves when the kernel has few taps
    /// (1×1), at the cost of code size.
    pub reduction_unroll: usize,
    /// The layout of the padded copy the microkernel reads.
    #[serde(default)]
    pub layout: Layout,
    /// The length of the rows the layer's planes are computed as, when not
    /// its own width: a k×1 conv2d of stride 1 without columns of padding
    /// computes each plane as one row of `H·W` pixels, its taps `W`
    /// pixels apart, so a tile's pixels run on past the end of an image
    /// row ([`crate::spec::ValidSpec::as_rows`]; a 1×1 conv2d of stride 1
    /// without padding, any length that divides a plane). Absent: the
    /// layer's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_length: Option<usize>,
    /// A transposed convolution whose column phases read the same input
    /// pixels, each with the next kernel column (a kernel as wide as its
    /// stride; also, e.g., 4 columns at stride 2 without padding;
    /// [`crate::geometry::Axis::merges`]): one tile computes its `stride`
    /// column phases, a vector of accumulators each for the same
    /// channels, each input pixel broadcast once for all of them. The
    /// AVX-512 tile that stores its outputs itself stores each channel's
    /// pixels of all of them interleaved, as one run of consecutive
    /// outputs; otherwise (AVX2, the checked lowering) the IR stores each
    /// phase's. The tile is then `stride · pixel_tile` accumulators, at
    /// most 16 output pixels a row.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merged_columns: bool,
}

/// The direct algorithm's registry entry.
pub(super) struct DirectFamily;

/// The one instance.
pub(super) const FAMILY: DirectFamily = DirectFamily;

impl Family for DirectFamily {
    fn strategy(&self) -> Strategy {
        Strategy::Direct
    }

    fn name(&self) -> &'static str {
        "direct"
    }

    fn tiles(
        &self,
        spec: &ValidSpec,
        geometry: &Geometry,
        min_accumulators: usize,
        isa: Isa,
    ) -> Vec<Tile> {
        // Vectors of channels beyond what a group has only add idle lanes.
        let vectors = spec.out_per_group().div_ceil(isa.lanes()).min(MAX_OC_VECTORS);
        let pixels: Vec<usize> = (1..=MAX_ACCUMULATORS.min(geometry.most_cols())).collect();
        tiles_of(vectors, &pixels, |v, p| v * p, geometry, min_accumulators, isa)
    }

    /// Every ISA: its tile is the one assembled for the wider ones
    /// (`codegen::wide`).
    fn isas(&self) -> &'static [Isa] {
        &Isa::ALL
    }

    fn layouts(&self) -> &'static [Layout] {
        &[Layout::Nchw, Layout::Nhwc]
    }

    /// Items are `(group, block of lanes output channels)`, the blocks of a
    /// group consecutive; the last block of each group may be partial.
    fn work(&self, spec: &ValidSpec, isa: Isa, oc_vectors: usize) -> Work {
        channel_blocks(spec, isa.lanes() * oc_vectors)
    }

    /// A broadcast input pixel times a vector of channels' weights, summed
    /// over the group's input channels.
    fn microkernel(&self) -> Microkernel {
        Microkernel { lanes: Lanes::Channels, input: Input::Broadcast, reduces_channels: true }
    }
}

/// The work of the algorithms that take a group's output channels in
/// blocks of `lanes`: items `(group, block)`, reading the group's input
/// channels.
pub(super) fn channel_blocks(spec: &ValidSpec, lanes: usize) -> Work {
    let cog = spec.out_per_group();
    let blocks = cog.div_ceil(lanes);
    Work {
        lanes,
        items: spec.groups() * blocks,
        group_items: blocks,
        group_planes: spec.in_per_group(),
        q_channels: cog,
        r_channels: lanes,
        lane_stride: 1,
        tail: Tail { coordinate: Coordinate::R, lanes: tail_lanes(cog, lanes) },
        blocked_input: false,
    }
}
