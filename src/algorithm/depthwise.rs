//! The depthwise algorithm: for layers with one input channel per group
//! (any channel multiplier), vectorise across groups; each FMA multiplies
//! a vector of channels' input pixels (a channel-blocked copy of the input)
//! by as many channels' weights.

use serde::{Deserialize, Serialize};

use super::{
    Coordinate, Family, Input, Lanes, MAX_ACCUMULATORS, MAX_OC_VECTORS, Microkernel, Strategy,
    Tail, Tile, Work, tail_lanes, tiles_of,
};
use crate::geometry::Geometry;
use crate::spec::ValidSpec;
use crate::target::Isa;

/// The depthwise algorithm's configuration: its register tile (it has no
/// channel reduction to unroll).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Depthwise {
    /// The register tile.
    pub tile: Tile,
}

/// The depthwise algorithm's registry entry.
pub(super) struct DepthwiseFamily;

/// The one instance.
pub(super) const FAMILY: DepthwiseFamily = DepthwiseFamily;

impl Family for DepthwiseFamily {
    fn strategy(&self) -> Strategy {
        Strategy::Depthwise
    }

    fn name(&self) -> &'static str {
        "depthwise"
    }

    fn refuses(&self, spec: &ValidSpec) -> Option<&'static str> {
        (spec.in_per_group() != 1).then_some("needs exactly one input channel per group")
    }

    fn tiles(
        &self,
        spec: &ValidSpec,
        geometry: &Geometry,
        min_accumulators: usize,
        isa: Isa,
    ) -> Vec<Tile> {
        // Vectors of channels beyond what the layer has only add idle lanes.
        let vectors = spec.out_channels().div_ceil(isa.lanes()).min(MAX_OC_VECTORS);
        let pixels: Vec<usize> = (1..=MAX_ACCUMULATORS.min(geometry.most_cols())).collect();
        tiles_of(vectors, &pixels, |v, p| v * p, geometry, min_accumulators, isa)
    }

    /// Cranelift's f32x4 tiles, and the assembled AVX2 and AVX-512 ones
    /// (`codegen::wide`, over a copy blocked by 8 or 16 channels).
    fn isas(&self) -> &'static [Isa] {
        &Isa::ALL
    }

    /// It has no reduction over input channels.
    fn max_unroll(&self, _spec: &ValidSpec) -> usize {
        1
    }

    /// Items are `(block of lanes groups, multiplier index)`, the
    /// multipliers of a block consecutive and reading the block's
    /// `oc_vectors` planes of the channel-blocked copy; the last block may
    /// be partial.
    fn work(&self, spec: &ValidSpec, isa: Isa, oc_vectors: usize) -> Work {
        let (lanes, m) = (isa.lanes() * oc_vectors, spec.out_per_group());
        Work {
            lanes,
            items: spec.groups().div_ceil(lanes) * m,
            group_items: m,
            group_planes: oc_vectors,
            q_channels: lanes * m,
            r_channels: 1,
            lane_stride: m,
            tail: Tail { coordinate: Coordinate::Q, lanes: tail_lanes(spec.groups(), lanes) },
            blocked_input: true,
        }
    }

    /// A vector of channels' input pixels (the channel-blocked copy) times
    /// as many channels' weights, over the taps alone.
    fn microkernel(&self) -> Microkernel {
        Microkernel { lanes: Lanes::Channels, input: Input::Vector, reduces_channels: false }
    }
}
