//! Winograd's minimal filtering F(m × m, r × r): an r × r correlation's
//! m × m outputs from an α × α input tile (α = m + r − 1) with α²
//! multiplications instead of m²·r², as
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! summed over input channels before the output transform `Aᵀ … A`, so a
//! layer's multiplications become α² matrix products (one per transform
//! point) of the transformed weights by the transformed input tiles. A
//! 1 × r or r × 1 kernel takes the 1-D F(m, r) along its taps and the
//! identity across them: tiles of one row of m outputs (or one column),
//! α points each, m·r/α times fewer multiplications (2× for F(4, 3),
//! 1.75× for F(2, 7)); each transform is a pair of 1-D ones
//! ([`Axis`]), so any kernel of an axis of 2 taps or more takes its own
//! on each axis.
//!
//! - `transform.rs`: the transforms ([`Transform`]), built exactly (in
//!   rationals) from interpolation points by the Toom–Cook construction,
//!   and the growth of their rounding error over direct convolution
//!   ([`Transform::growth`]), which decides which tile sizes stay inside a
//!   layer's tolerance (docs/correctness.md);
//! - `rows.rs`: the transforms as the kernel applies them in f32, 16
//!   consecutive tiles of an image at a time (of one tile row or more),
//!   one a lane ([`Rows`]); `avx512.rs`: the same with AVX-512 intrinsics
//!   and constant entries for the usual tile sizes;
//! - this file: the algorithm's configuration ([`Winograd`]), the layers
//!   it accepts, and the layer its α² products are computed as: one
//!   grouped 1×1 conv2d ([`Winograd::gemm`]) over a panel of tiles, which
//!   the rest of the schedule (an algorithm of the registry, its tile,
//!   loop nest and copy) compiles like any other layer.

#[cfg(target_arch = "x86_64")]
mod avx512;
mod ratio;
pub(crate) mod rows;
mod transform;

pub use rows::Rows;
pub use transform::{Axis, Element, Transform};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::{ActivationKind, ConvSpec, Op, PaddingSpec, Pair, ValidSpec};

/// The largest input tile side the transforms are built for (F(6, 3)).
pub const MAX_ALPHA: usize = 8;

/// The most tiles a panel may hold (the batched products' row length).
pub const MAX_PANEL: usize = 1 << 16;

/// Winograd's configuration: the output tile, and how many tiles go
/// through the batched products at once. In JSON `{"output_tile": 4,
/// "panel": 196}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Winograd {
    /// `m`: output pixels per tile side (F(m × m, r × r)), on each axis of
    /// the kernel of more than one tap (a 1 × r kernel's tiles are 1 × m).
    /// Larger tiles save more multiplications (`m²r²/α²`: 2.25× for F(2,
    /// 3), 4× for F(4, 3), 5.06× for F(6, 3); `mr/α` in 1-D) and cost more
    /// in the transforms and in rounding error ([`Transform::growth`]).
    pub output_tile: usize,
    /// Tiles per panel: the input tiles transformed, multiplied and
    /// transformed back together, sized so that the panel's transformed
    /// input and products stay in cache. Threads share panels.
    pub panel: usize,
}

/// How a layer's output is cut into tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiles {
    /// Tile rows of an image (`⌈out_height / m_h⌉`).
    pub rows: usize,
    /// Tiles of a tile row (`⌈out_width / m_w⌉`).
    pub cols: usize,
    /// Tiles of the whole batch.
    pub count: usize,
}

impl Winograd {
    /// Why Winograd cannot compute `spec`, when it cannot: it takes a
    /// conv2d with a kernel of 2 taps or more on one axis at least, stride
    /// 1 and dilation 1.
    pub fn refuses(spec: &ValidSpec) -> Option<&'static str> {
        if spec.op() != Op::Conv2d
            || spec.kernel().iter().all(|&r| r < 2)
            || spec.stride() != [1, 1]
            || spec.dilation() != [1, 1]
        {
            return Some(
                "Winograd computes a conv2d with a kernel of 2 taps or more on one axis at \
                 least, stride 1 and dilation 1",
            );
        }
        None
    }

    /// Checks this configuration against `spec`; the error names the field.
    pub fn legal(&self, spec: &ValidSpec) -> Result<()> {
        let bad = |field: &'static str, value: String, reason: String| {
            Err(Error::InvalidSchedule { field, value, reason })
        };
        if let Some(reason) = Winograd::refuses(spec) {
            return bad("winograd", format!("{self:?}"), reason.into());
        }
        let r = spec.kernel().into_iter().max().unwrap_or(1);
        if r + 1 > MAX_ALPHA {
            return bad(
                "winograd",
                format!("{self:?}"),
                format!(
                    "F(m, {r}) needs input tiles of at least {} pixels a side; they are built up \
                     to {MAX_ALPHA}",
                    r + 1
                ),
            );
        }
        if self.output_tile < 2 || self.output_tile > MAX_ALPHA + 1 - r {
            return bad(
                "output_tile",
                self.output_tile.to_string(),
                format!(
                    "F(m, {r}) is built for m from 2 to {} (input tiles of at most {MAX_ALPHA})",
                    MAX_ALPHA + 1 - r
                ),
            );
        }
        if !(1..=MAX_PANEL).contains(&self.panel) {
            return bad("panel", self.panel.to_string(), format!("must be 1 to {MAX_PANEL}"));
        }
        self.gemm(spec).map(drop)
    }

    /// The transforms of `spec`'s kernel: F(m, r) on each axis of more
    /// than one tap, the identity on the others.
    pub fn transform(&self, spec: &ValidSpec) -> Transform {
        Transform::for_kernel(self.output_tile, spec.kernel())
    }

    /// Outputs of a tile of `spec`: `[m_h, m_w]`, m on each axis of the
    /// kernel of more than one tap, 1 on the others.
    pub fn tile(&self, spec: &ValidSpec) -> [usize; 2] {
        spec.kernel().map(|r| if r > 1 { self.output_tile } else { 1 })
    }

    /// Transform points of a tile: `α_h · α_w`.
    pub fn points(&self, spec: &ValidSpec) -> usize {
        let [mh, mw] = self.tile(spec);
        let [rh, rw] = spec.kernel();
        (mh + rh - 1) * (mw + rw - 1)
    }

    /// The tiles of `spec`'s output.
    pub fn tiles(&self, spec: &ValidSpec) -> Tiles {
        let [mh, mw] = self.tile(spec);
        let (rows, cols) = (spec.out_height().div_ceil(mh), spec.out_width().div_ceil(mw));
        Tiles { rows, cols, count: spec.batch() * rows * cols }
    }

    /// Tiles per panel: the configured panel, or all the tiles when there
    /// are fewer.
    pub fn panel_tiles(&self, spec: &ValidSpec) -> usize {
        self.panel.min(self.tiles(spec).count)
    }

    /// Panels of the whole batch.
    pub fn panels(&self, spec: &ValidSpec) -> usize {
        self.tiles(spec).count.div_ceil(self.panel_tiles(spec))
    }

    /// The layer the products of one panel are, one per transform point
    /// (`P` = α_h·α_w of them, [`Winograd::points`]): a grouped 1×1 conv2d
    /// of one row of [`Winograd::panel_tiles`] pixels (the tiles), with
    /// `P·C_in` input and `P·C_out` output channels in `P·groups` groups —
    /// transform point `ξ`'s group `g` takes the transformed
    /// input channels `ξ·C_in + g·C_in/groups …` to the products'
    /// channels `ξ·C_out + g·C_out/groups …` — without bias or
    /// activation (the output transform adds them).
    pub fn gemm(&self, spec: &ValidSpec) -> Result<ValidSpec> {
        let refused = |reason: String| Error::InvalidSchedule {
            field: "winograd",
            value: format!("{self:?}"),
            reason: format!("its batched products are not a layer convjit computes: {reason}"),
        };
        let points = self.points(spec) as i64;
        let scaled = |v: usize| {
            (v as i64).checked_mul(points).ok_or_else(|| refused("too many channels".into()))
        };
        let gemm = ConvSpec {
            name: None,
            op: Op::Conv2d,
            batch: 1,
            in_channels: scaled(spec.in_channels())?,
            out_channels: scaled(spec.out_channels())?,
            height: 1,
            width: self.panel_tiles(spec) as i64,
            kernel: Pair::One(1),
            stride: Pair::One(1),
            padding: PaddingSpec::One(0),
            dilation: Pair::One(1),
            groups: scaled(spec.groups())?,
            output_padding: Pair::One(0),
            bias: false,
            activation: ActivationKind::None,
            negative_slope: None,
        };
        gemm.validate().map_err(|e| refused(e.to_string()))
    }
}
