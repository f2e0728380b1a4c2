//! The algorithms a layer can be computed by, as a registry: each in its
//! own file here with its configuration (typed, as schedules hold it), the
//! layers it accepts, the values the tuning space tries, and how its work
//! items map onto channels — which the plan, the weight packing and the
//! emitted code all read from one [`Work`].
//!
//! | algorithm | file | vectorised axis |
//! |---|---|---|
//! | direct | `direct.rs` | a group's output channels |
//! | depthwise | `depthwise.rs` | groups of one input channel each |
//! | width | `width.rs` | consecutive output pixels of one channel |
//!
//! `winograd/` holds Winograd's minimal filtering: its configuration
//! ([`winograd::Winograd`]), its transforms and the growth of their
//! rounding error (docs/correctness.md). It is not a register tile but a
//! transform around one: its α² products are a grouped 1×1 layer that
//! one of the algorithms above computes, so a schedule holds it beside
//! its algorithm (`Schedule::winograd`), and the kernel applies the
//! transforms around the compiled products (`kernel/winograd.rs`).
//!
//! Adding one: its file (configuration, [`Family`]), a variant of
//! [`Algorithm`] and of [`Strategy`], and its line in [`REGISTRY`]. The
//! lowering (`codegen::conv`) matches on no algorithm: it reads the
//! [`Work`] and the [`Microkernel`] — what a tile's lanes hold, which
//! operand is broadcast, whether it reduces over channels — so an
//! algorithm that is such a register tile needs no code of its own there;
//! one that is not brings its own lowering.

mod depthwise;
mod direct;
mod width;
pub mod winograd;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The most taps of one channel the emitter unrolls: past this, it loops
/// over the kernel's rows (and over chunks of a row's columns), so compile
/// time and memory grow with the register tile and not with the kernel. A
/// 7×7 kernel (49 taps) stays unrolled; a legal 1→1-channel conv with a
/// 256×256 kernel compiles in milliseconds instead of needing gigabytes.
/// The tiles whose lane masks depend on the kernel row (those that read
/// the image itself) need their taps unrolled.
pub const MAX_UNROLLED_TAPS: usize = 64;

pub use depthwise::Depthwise;
pub use direct::Direct;
pub use width::{Width, even_blocks};

use crate::error::{Error, Result};
use crate::geometry::{Geometry, Phase};
use crate::spec::{Op, ValidSpec};
use crate::target::Isa;

/// The most accumulators a register tile may hold: the target's vector
/// registers but the two its operands need
/// ([`crate::target::VectorIsa::max_accumulators`]; 14 on f32x4).
pub const MAX_ACCUMULATORS: usize = crate::target::VECTOR.max_accumulators();

/// The most accumulators a register tile of `isa` that reuses `reused`
/// registers per step ([`Algorithm::reused_registers`]) may hold.
/// Cranelift's tiles (`sse`): [`MAX_ACCUMULATORS`], its register allocator
/// placing the operands. The assembled tiles name their registers: the
/// accumulators, the reused operands and, on AVX2, one for the broadcast
/// operand (AVX-512 broadcasts it from memory inside the FMA) share the
/// 16 vector registers every ISA has, and never more than
/// [`MAX_ACCUMULATORS`].
pub const fn isa_accumulators(isa: Isa, reused: usize) -> usize {
    let operands = match isa {
        Isa::Sse => return MAX_ACCUMULATORS,
        Isa::Avx2 => reused.saturating_add(1),
        Isa::Avx512 => reused,
    };
    let most = 16usize.saturating_sub(operands);
    if most < MAX_ACCUMULATORS { most } else { MAX_ACCUMULATORS }
}

/// The most column taps of one kernel row (of a phase) an assembled tile
/// takes: it unrolls a row's taps (see `codegen::wide`), so a wider
/// kernel row is computed with Cranelift's tiles (`sse`).
pub const MAX_ASSEMBLED_ROW_TAPS: usize = 256;

/// The most bytes an assembled tile's input or weights may span: its
/// displacements are 32-bit. A layer whose (padded) input or one group's
/// weights are larger is computed with Cranelift's tiles.
pub const MAX_ASSEMBLED_REACH: i64 = i32::MAX as i64;

/// The most output pixels of a row a tile of merged column phases
/// ([`Direct::merged_columns`]) computes: its epilogue stores each
/// channel's as the lanes of one vector.
pub const MAX_MERGED_PIXELS: usize = 16;

/// The most vectors of output channels a register tile may hold.
pub const MAX_OC_VECTORS: usize = 3;

/// The most input channels one iteration of the reduction loop may take.
pub const MAX_REDUCTION_UNROLL: usize = 4;

/// The algorithm that computes a layer, with its configuration: the
/// microkernel family, and so which axis is vectorised. In JSON, an object
/// with one field named after the algorithm, e.g. `{"direct": {…}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Vectorise across the output channels of one group; each FMA
    /// multiplies a broadcast input pixel by a vector of output channels'
    /// weights. Serves every kind; wastes lanes when a group has fewer
    /// output channels than a vector holds, or a non-multiple.
    Direct(Direct),
    /// Vectorise across groups, for layers with one input channel per group
    /// (depthwise, with any channel multiplier): each FMA multiplies a
    /// vector of channels' input pixels (a channel-blocked copy of the
    /// input) by as many channels' weights. Needs the blocked input copy.
    Depthwise(Depthwise),
    /// Vectorise along the output row: one output channel per work item, and
    /// each FMA multiplies a vector of consecutive output pixels' inputs (one
    /// load from an NCHW copy) by one weight broadcast to every lane. Serves
    /// every kind; no lane idles on channel tails and the stores are whole
    /// vectors, but every weight is loaded once per pixel tile. Strided
    /// layers read a copy whose rows are split into `stride` column phases
    /// (column `c` in phase `c mod stride`), so no load gathers.
    Width(Width),
}

/// The register tile of the algorithms that vectorise across channels:
/// `oc_vectors · pixel_tile · row_tile` accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tile {
    /// Vectors of channels per register tile (the output-channel block is
    /// `lanes · oc_vectors`). More vectors share each input load across
    /// more FMAs but each costs a weight register and wastes more lanes on
    /// channel tails.
    pub oc_vectors: usize,
    /// Output pixels (along a row) per register tile: more amortise the
    /// weight loads and hide FMA latency, but past the register file they
    /// spill.
    pub pixel_tile: usize,
    /// Output rows per register tile: the accumulators cover `pixel_tile`
    /// pixels in each of `row_tile` rows, so short rows still fill the
    /// registers.
    pub row_tile: usize,
}

/// The layout of the direct algorithm's padded input copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Each channel's plane: the reduction over input channels reads one
    /// plane per channel.
    #[default]
    Nchw,
    /// Each pixel's channels together, so the reduction over input channels
    /// walks consecutive addresses. The copy is then a transpose, and is
    /// always made.
    Nhwc,
}

/// Which microkernel family an [`Algorithm`] is, without its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// [`Algorithm::Direct`].
    Direct,
    /// [`Algorithm::Depthwise`].
    Depthwise,
    /// [`Algorithm::Width`].
    Width,
}

impl Algorithm {
    /// The algorithm of `strategy` from the knobs in the terms the
    /// heuristic and the space draw them in: the tile in pixels (the width
    /// algorithm takes `pixel_tile / lanes` vectors and one channel), the
    /// unroll (the depthwise algorithm has none) and the NHWC layout (the
    /// direct algorithm's only).
    /// For the width algorithm, `oc_vectors` is its channels per tile and
    /// `pixel_tile` is in pixels (whole vectors of `isa`'s lanes).
    pub(crate) fn from_knobs(
        strategy: Strategy,
        tile: Tile,
        reduction_unroll: usize,
        nhwc: bool,
        isa: Isa,
    ) -> Algorithm {
        match strategy {
            Strategy::Direct => Algorithm::Direct(Direct {
                tile,
                reduction_unroll,
                layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
                row_length: None,
                merged_columns: false,
            }),
            Strategy::Depthwise => Algorithm::Depthwise(Depthwise { tile }),
            Strategy::Width => Algorithm::Width(Width {
                pixel_vectors: tile.pixel_tile / isa.lanes(),
                row_tile: tile.row_tile,
                reduction_unroll,
                channels: tile.oc_vectors,
                row_length: None,
                joined: false,
                image: false,
            }),
        }
    }

    /// The microkernel family, without its configuration.
    pub fn strategy(&self) -> Strategy {
        match self {
            Algorithm::Direct(_) => Strategy::Direct,
            Algorithm::Depthwise(_) => Strategy::Depthwise,
            Algorithm::Width(_) => Strategy::Width,
        }
    }

    /// This algorithm's entry in the registry.
    pub fn family(&self) -> &'static dyn Family {
        family(self.strategy())
    }

    /// How its work items map onto the channels of `spec` when its tiles
    /// are vectors of `isa`.
    pub fn work(&self, spec: &ValidSpec, isa: Isa) -> Work {
        self.family().work(spec, isa, self.oc_vectors())
    }

    /// What its register tile holds and multiplies.
    pub fn microkernel(&self) -> Microkernel {
        self.family().microkernel()
    }

    /// Vectors of output channels per register tile; for the width
    /// algorithm, its output channels per tile (each its own accumulators).
    pub fn oc_vectors(&self) -> usize {
        match *self {
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                tile.oc_vectors
            }
            Algorithm::Width(w) => w.channels,
        }
    }

    /// Output pixels along a row per register tile with vectors of `isa`.
    pub fn pixel_tile(&self, isa: Isa) -> usize {
        match *self {
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                tile.pixel_tile
            }
            Algorithm::Width(w) => w.pixel_vectors.saturating_mul(isa.lanes()),
        }
    }

    /// Output rows per register tile.
    pub fn row_tile(&self) -> usize {
        match *self {
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                tile.row_tile
            }
            Algorithm::Width(w) => w.row_tile,
        }
    }

    /// The register tile's shape with vectors of `isa`, in the terms of
    /// the algorithms that vectorise across channels (the width
    /// algorithm's is its channels by its pixels).
    pub fn tile(&self, isa: Isa) -> Tile {
        Tile {
            oc_vectors: self.oc_vectors(),
            pixel_tile: self.pixel_tile(isa),
            row_tile: self.row_tile(),
        }
    }

    /// Accumulators in one row of the register tile (for joined rows, the
    /// whole run's: see [`Algorithm::accumulators`]).
    pub fn accumulators_per_row(&self) -> usize {
        match *self {
            Algorithm::Width(w) => w.pixel_vectors.saturating_mul(w.channels),
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                tile.oc_vectors * tile.pixel_tile
            }
        }
    }

    /// Accumulators of the whole register tile: a row's times the rows,
    /// or, for a width tile of joined rows, its channels times its vectors.
    pub fn accumulators(&self) -> usize {
        match *self {
            Algorithm::Width(w) if w.joined => w.channels.saturating_mul(w.pixel_vectors),
            _ => self.accumulators_per_row().saturating_mul(self.row_tile()),
        }
    }

    /// Whether its tiles compute rows joined into one run of pixels
    /// ([`Width::joined`]).
    pub fn joined(&self) -> bool {
        matches!(*self, Algorithm::Width(Width { joined: true, .. }))
    }

    /// Whether its tiles read the NCHW image of `spec` itself, with no
    /// padded copy: joined rows ([`Width::joined`]) whose kernel's taps
    /// are unrolled, or the image's rows ([`Width::image`]), so that the
    /// lane masks of the tiles at the top and bottom of a plane zero the
    /// inputs above and below the image as every tile's zero those left
    /// and right of a row.
    pub fn reads_image(&self, spec: &ValidSpec) -> bool {
        let taps = spec.kernel()[0] * spec.kernel()[1];
        (self.joined() && taps <= MAX_UNROLLED_TAPS) || self.image_rows()
    }

    /// Whether its tiles compute a transposed convolution's column phases
    /// together ([`Direct::merged_columns`]).
    pub fn merged_columns(&self) -> bool {
        matches!(*self, Algorithm::Direct(Direct { merged_columns: true, .. }))
    }

    /// Whether its tiles read the image's own rows, a whole output row
    /// wide ([`Width::image`]).
    pub fn image_rows(&self) -> bool {
        matches!(*self, Algorithm::Width(Width { image: true, .. }))
    }

    /// The column phases and sub-row length of its copy of a layer of
    /// `geometry` with vectors of `isa` (see `codegen::Plan`): the
    /// family's, or for joined rows the input's own width, with no
    /// columns of padding.
    pub fn row_phases(&self, geometry: &Geometry, isa: Isa) -> (usize, usize) {
        if self.joined() || self.image_rows() {
            let [_, left, _, right] = geometry.pad;
            return (1, geometry.padded[1] - left - right);
        }
        self.family().row_phases(&geometry.phases, geometry.padded[1], isa.lanes())
    }

    /// The vector registers one step of its tile reuses across its
    /// multiply-adds (the weight vectors of the direct and depthwise
    /// algorithms; for the width algorithm, the pixel vectors or the
    /// broadcast weights, the fewer), which the accumulators share the
    /// register file with.
    pub fn reused_registers(&self) -> usize {
        match *self {
            Algorithm::Width(w) if w.joined => w.channels.min(w.pixel_vectors),
            Algorithm::Width(w) => w.channels.min(w.pixel_vectors.saturating_mul(w.row_tile)),
            _ => self.oc_vectors(),
        }
    }

    /// Input channels per iteration of the reduction loop (1 for the
    /// depthwise algorithm, which has no channel reduction).
    pub fn reduction_unroll(&self) -> usize {
        match *self {
            Algorithm::Direct(d) => d.reduction_unroll,
            Algorithm::Width(w) => w.reduction_unroll,
            Algorithm::Depthwise(_) => 1,
        }
    }

    /// The length of the rows it computes the layer's planes as, when not
    /// the layer's own ([`Width::row_length`], [`Direct::row_length`]).
    pub fn row_length(&self) -> Option<usize> {
        match *self {
            Algorithm::Width(w) => w.row_length,
            Algorithm::Direct(d) => d.row_length,
            Algorithm::Depthwise(_) => None,
        }
    }

    /// The layer as this configuration computes it: `spec`, or `spec` on
    /// its planes cut into rows of [`Algorithm::row_length`] (the same
    /// tensors in memory). For a configuration legal for `spec`.
    pub fn lowered<'a>(&self, spec: &'a ValidSpec) -> Cow<'a, ValidSpec> {
        match self.row_length().and_then(|len| spec.as_rows(len)) {
            Some(rows) => Cow::Owned(rows),
            None => Cow::Borrowed(spec),
        }
    }

    /// Whether its code reads a copy of the input rather than the NCHW
    /// image itself, for `spec` (whose geometry is `geometry`) with tiles
    /// of `isa`: a padded, channel-blocked or NHWC copy, or one whose rows
    /// are split into column phases or stored longer than the image's.
    pub fn reads_copy(&self, spec: &ValidSpec, geometry: &Geometry, isa: Isa) -> bool {
        if self.reads_image(spec) {
            return false;
        }
        let (col_phases, sub_row) = self.row_phases(geometry, isa);
        // A row split into column phases is a copy even when its length
        // happens to equal the image's (stride 2, no padding, the last
        // vector's reach exactly the width).
        geometry.pad != [0; 4]
            || self.work(spec, isa).blocked_input
            || self.interleave()
            || col_phases > 1
            || col_phases * sub_row != spec.width()
    }

    /// Whether the microkernel reads an NHWC copy (the direct algorithm's
    /// [`Layout::Nhwc`]).
    pub fn interleave(&self) -> bool {
        matches!(*self, Algorithm::Direct(Direct { layout: Layout::Nhwc, .. }))
    }

    /// Checks this configuration against `spec` with tiles of `isa`: that
    /// the algorithm accepts the layer and has tiles of that ISA, and the
    /// bounds of its numbers (the register tile fits the register file,
    /// the unroll is at most [`MAX_REDUCTION_UNROLL`]). The error names the
    /// field.
    pub fn legal(&self, spec: &ValidSpec, isa: Isa) -> Result<()> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(Error::InvalidSchedule { field, value, reason: reason.to_string() })
        };
        if let Some(reason) = self.family().refuses(spec) {
            return bad("algorithm", self.family().name().into(), reason);
        }
        if !self.family().isas().contains(&isa) {
            let has: Vec<&str> = self.family().isas().iter().map(|i| i.name()).collect();
            let name = self.family().name();
            let reason = format!("the {name} algorithm has tiles of {} only", has.join(", "));
            return bad("isa", isa.name().into(), &reason);
        }
        match *self {
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                if !(1..=MAX_OC_VECTORS).contains(&tile.oc_vectors) {
                    return bad("oc_vectors", tile.oc_vectors.to_string(), "must be 1, 2 or 3");
                }
                if !(1..=MAX_ACCUMULATORS).contains(&tile.pixel_tile)
                    || tile.oc_vectors * tile.pixel_tile > MAX_ACCUMULATORS
                {
                    return bad(
                        "pixel_tile",
                        tile.pixel_tile.to_string(),
                        &format!(
                            "must be at least 1 with oc_vectors · pixel_tile at most \
                             {MAX_ACCUMULATORS}"
                        ),
                    );
                }
            }
            Algorithm::Width(w) => {
                if !(1..=MAX_ACCUMULATORS).contains(&w.pixel_vectors) {
                    return bad(
                        "pixel_vectors",
                        w.pixel_vectors.to_string(),
                        &format!("must be 1 to {MAX_ACCUMULATORS}"),
                    );
                }
                if !(1..=MAX_ACCUMULATORS).contains(&w.channels)
                    || w.channels * w.pixel_vectors > MAX_ACCUMULATORS
                {
                    return bad(
                        "channels",
                        w.channels.to_string(),
                        &format!(
                            "must be at least 1 with channels · pixel_vectors at most \
                             {MAX_ACCUMULATORS}"
                        ),
                    );
                }
                if w.joined {
                    let runs = |why: &str| bad("joined", "true".into(), why);
                    if isa != Isa::Avx512 {
                        return runs(
                            "rows are joined on avx512 only (its masks zero a tap's lanes)",
                        );
                    }
                    if !spec.rows_join() {
                        return runs(
                            "joined rows compute a conv2d of stride 1 whose output rows are as \
                             wide as its input rows",
                        );
                    }
                    if w.row_length.is_some() {
                        return runs("rows of another length are not joined");
                    }
                    let needed = w.row_tile.saturating_mul(spec.width()).div_ceil(isa.lanes());
                    if w.pixel_vectors != needed {
                        return bad(
                            "pixel_vectors",
                            w.pixel_vectors.to_string(),
                            &format!(
                                "joined rows take exactly the vectors of row_tile rows: {needed}"
                            ),
                        );
                    }
                }
                if w.image {
                    let rows = |why: &str| bad("image", "true".into(), why);
                    if isa != Isa::Avx512 {
                        return rows(
                            "the image's rows are read by avx512 tiles (its masks zero the \
                             lanes outside the image)",
                        );
                    }
                    if spec.op() != Op::Conv2d || spec.stride()[1] > 2 {
                        return rows(
                            "the image's rows are read for a conv2d of column stride 1, or 2 \
                             (deinterleaved loads)",
                        );
                    }
                    if w.joined || w.row_length.is_some() {
                        return rows("the image's rows are the layer's own, not joined");
                    }
                    let needed = spec.out_width().div_ceil(isa.lanes());
                    if w.pixel_vectors < needed {
                        return bad(
                            "pixel_vectors",
                            w.pixel_vectors.to_string(),
                            &format!(
                                "tiles of the image's rows take a whole output row: at least \
                                 {needed}"
                            ),
                        );
                    }
                    if spec.kernel()[0] * spec.kernel()[1] > MAX_UNROLLED_TAPS {
                        return rows(&format!(
                            "tiles of the image's rows mask the taps of a kernel of at most {} \
                             taps",
                            MAX_UNROLLED_TAPS
                        ));
                    }
                }
                if w.channels > 1 && !isa.is_assembled() {
                    return bad(
                        "channels",
                        w.channels.to_string(),
                        "sse width tiles hold one channel (more need an assembled ISA)",
                    );
                }
            }
        }
        if let Some(len) = self.row_length()
            && spec.as_rows(len).is_none()
        {
            return bad(
                "row_length",
                len.to_string(),
                "rows of another length compute a 1×1 conv2d of stride 1 without padding \
                 (its input and output planes are the same pixels: any length that divides \
                 the pixels of a plane), or a k×1 conv2d of stride 1 without columns of \
                 padding (a whole plane as one row: its pixels)",
            );
        }
        let row_tile = self.row_tile();
        if !(1..=MAX_ACCUMULATORS).contains(&row_tile) || self.accumulators() > MAX_ACCUMULATORS {
            return bad(
                "row_tile",
                row_tile.to_string(),
                &format!(
                    "must be at least 1 with the tile's accumulators (a row's times row_tile; \
                     joined rows: channels · pixel_vectors) at most {MAX_ACCUMULATORS}"
                ),
            );
        }
        if !(1..=MAX_REDUCTION_UNROLL).contains(&self.reduction_unroll()) {
            return bad(
                "reduction_unroll",
                self.reduction_unroll().to_string(),
                &format!("must be 1 to {MAX_REDUCTION_UNROLL}"),
            );
        }
        // With every knob bounded: the assembled tiles' own limits.
        let most = isa_accumulators(isa, self.reused_registers());
        if self.accumulators() > most {
            return bad(
                "row_tile",
                row_tile.to_string(),
                &format!(
                    "{isa} tiles reusing {} registers hold at most {most} accumulators",
                    self.reused_registers()
                ),
            );
        }
        // The limits of the layer as it is computed (a k×1 kernel's taps
        // are a row's on its planes as one row).
        let lowered = self.lowered(spec);
        if self.merged_columns() {
            let merged = |why: &str| bad("merged_columns", "true".into(), why);
            let Some(members) = Geometry::of(&lowered).merged_columns() else {
                return merged(
                    "merged column phases are a transposed conv's whose column phases read the \
                     same input pixels, each with the next kernel column (a kernel as wide as \
                     its stride, among others)",
                );
            };
            if !isa.is_assembled() || self.oc_vectors() != 1 || row_tile != 1 {
                return merged(
                    "merged column phases take an assembled ISA, one vector of channels and \
                     tiles of one row",
                );
            }
            let pixels = members * self.pixel_tile(isa);
            let most = isa_accumulators(isa, members);
            if pixels > MAX_MERGED_PIXELS || pixels > most {
                return merged(&format!(
                    "{members} merged column phases of {} pixels make {pixels} accumulators \
                     and output pixels a row, past the {} a tile of {isa} holds",
                    self.pixel_tile(isa),
                    most.min(MAX_MERGED_PIXELS)
                ));
            }
        }
        if isa.is_assembled()
            && let Some(reason) = beyond_assembled(&lowered, self.work(&lowered, isa).lanes)
        {
            return bad("isa", isa.name().into(), &reason);
        }
        Ok(())
    }
}

/// Why an assembled tile of `lanes` channels cannot compute `spec`, when
/// it cannot: a kernel row of more than [`MAX_ASSEMBLED_ROW_TAPS`] taps, or
/// an input copy (bounded from above: rows split into column phases, each
/// with room for a last vector), an output or a group's weights past
/// [`MAX_ASSEMBLED_REACH`] bytes.
fn beyond_assembled(spec: &ValidSpec, lanes: usize) -> Option<String> {
    let geometry = Geometry::of(spec);
    let row_taps = geometry.phases.iter().map(|p| p.cols.taps.len()).max().unwrap_or(0);
    if row_taps > MAX_ASSEMBLED_ROW_TAPS {
        return Some(format!(
            "an assembled tile takes kernel rows of at most {MAX_ASSEMBLED_ROW_TAPS} taps; \
             this layer's have {row_taps} (use sse)"
        ));
    }
    let [h, w] = geometry.padded;
    let [kh, kw] = spec.kernel();
    let bytes = |dims: &[usize]| dims.iter().try_fold(4u64, |a, &b| a.checked_mul(b as u64));
    // The stored copy: its rows may be split into column phases (a stride
    // each), each long enough for a last vector of 16 lanes past the row.
    let row = w.checked_add(spec.out_width()).and_then(|r| r.checked_add(16));
    let row = row.and_then(|r| r.checked_mul(spec.stride()[1]));
    let input = row.and_then(|row| bytes(&[h, row, spec.in_channels()]));
    let weights = bytes(&[spec.in_per_group(), kh, kw, lanes]);
    let output = bytes(&[spec.out_height(), spec.out_width(), spec.out_channels()]);
    let reach = MAX_ASSEMBLED_REACH as u64;
    if [input, weights, output].iter().any(|b| b.is_none_or(|b| b > reach)) {
        return Some(format!(
            "an assembled tile addresses at most {reach} bytes of input, of output and of a \
             group's weights (use sse)"
        ));
    }
    None
}

/// Every algorithm, in the order the tuning space lists them.
pub const REGISTRY: [&dyn Family; 3] = [&direct::FAMILY, &width::FAMILY, &depthwise::FAMILY];

/// The registry's entry for `strategy`.
pub fn family(strategy: Strategy) -> &'static dyn Family {
    let found = REGISTRY.iter().find(|f| f.strategy() == strategy);
    *found.expect("every strategy is registered")
}

/// The algorithms that can compute `spec`, in the registry's order.
pub fn accepting(spec: &ValidSpec) -> impl Iterator<Item = &'static dyn Family> + '_ {
    REGISTRY.into_iter().filter(|f| f.refuses(spec).is_none())
}

/// What the compiler asks of an algorithm, whatever its configuration.
pub trait Family: Sync {
    /// Its kind.
    fn strategy(&self) -> Strategy;
    /// Its name in schedules and errors.
    fn name(&self) -> &'static str;
    /// Why it cannot compute `spec`, when it cannot.
    fn refuses(&self, _spec: &ValidSpec) -> Option<&'static str> {
        None
    }
    /// The register tiles the tuning space tries on phases of at most
    /// `cols` × `rows` output pixels, in the terms of
    /// [`Algorithm::from_knobs`]; fewer than `min_accumulators`
    /// accumulators only when the tile covers a whole phase.
    fn tiles(
        &self,
        spec: &ValidSpec,
        geometry: &Geometry,
        min_accumulators: usize,
        isa: Isa,
    ) -> Vec<Tile>;
    /// The vector ISAs it has register tiles of.
    fn isas(&self) -> &'static [Isa] {
        &[Isa::Sse]
    }
    /// The most input channels per iteration of the reduction the space
    /// tries.
    fn max_unroll(&self, spec: &ValidSpec) -> usize {
        MAX_REDUCTION_UNROLL.min(spec.in_per_group())
    }
    /// The input layouts it can read (the space's `layout` knob).
    fn layouts(&self) -> &'static [Layout] {
        &[Layout::Nchw]
    }
    /// How its work items map onto the channels of `spec` with a register
    /// tile of `oc_vectors` vectors of `isa`'s channels.
    fn work(&self, spec: &ValidSpec, isa: Isa, oc_vectors: usize) -> Work;
    /// What its register tile holds and multiplies, as the lowering emits
    /// it.
    fn microkernel(&self) -> Microkernel;
    /// The column phases of each stored row of the padded copy and the
    /// length of one (see `codegen::Plan::col_phases`): plain rows of the
    /// padded width, unless the algorithm reads strided rows split (and
    /// loads whole vectors of `lanes` pixels).
    fn row_phases(&self, _phases: &[Phase], padded_width: usize, _lanes: usize) -> (usize, usize) {
        (1, padded_width)
    }
}

/// What an algorithm's register tile is, in the terms the lowering of the
/// microkernel (`codegen::tile`) takes: every algorithm here is a register
/// tile reduced over a list of (input, weight) offsets, and they differ in
/// what a vector's lanes hold and which operand is broadcast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Microkernel {
    /// What the lanes of an accumulator hold.
    pub lanes: Lanes,
    /// The input operand of each FMA.
    pub input: Input,
    /// Whether the tile sums over the input channels of its group, or only
    /// over its taps (one input channel per output channel).
    pub reduces_channels: bool,
}

/// What the lanes of an accumulator hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lanes {
    /// Output channels: the tile is vectors of channels × pixels, and each
    /// FMA takes a vector of the channels' weights for one tap.
    Channels,
    /// Consecutive output pixels of one channel: each FMA takes the tap's
    /// one weight broadcast to every lane.
    Pixels,
}

/// The input operand of each FMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// One input pixel broadcast to every lane.
    Broadcast,
    /// A vector load: the lanes' channels of one pixel (a channel-blocked
    /// copy) or consecutive pixels of one channel.
    Vector,
}

/// How the work items of a layer map onto its channels. Item `wi` is the
/// pair `(q, r) = (wi / group_items, wi % group_items)`: its input is the
/// planes of the `q`-th group of items, and its first output channel
/// `q · q_channels + r · r_channels`; lane `l` of its channel block is
/// output channel `first + l · lane_stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Output channels per work item: one per lane of the tile's channel
    /// block (`lanes · oc_vectors`), or the width algorithm's `channels`.
    pub lanes: usize,
    /// Work items of one image.
    pub items: usize,
    /// Consecutive work items that read the same input planes.
    pub group_items: usize,
    /// The input planes of one group of items (channels, or blocks of one
    /// vector's channels in a channel-blocked copy, [`Work::input_block`]),
    /// which nothing else reads.
    pub group_planes: usize,
    /// Output channels from one group of items to the next.
    pub q_channels: usize,
    /// Output channels from one item of a group to the next.
    pub r_channels: usize,
    /// Output channels between consecutive lanes of an item.
    pub lane_stride: usize,
    /// The channel block that may hold fewer channels than lanes.
    pub tail: Tail,
    /// Whether it reads a channel-blocked copy (`[C/lanes][Hp][row][lanes]`).
    pub blocked_input: bool,
}

/// The work items whose channel block runs past the last channel: those
/// whose coordinate `coordinate` is its last value, where only the first
/// `lanes` lanes are channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tail {
    /// Which coordinate counts channel blocks.
    pub coordinate: Coordinate,
    /// The lanes of the last block that are channels (all of them when no
    /// block is partial).
    pub lanes: usize,
}

/// A coordinate of a work item (see [`Work`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coordinate {
    /// The group of items, `wi / group_items`.
    Q,
    /// The item within its group, `wi % group_items`.
    R,
}

impl Work {
    /// Groups of work items.
    pub fn groups(&self) -> usize {
        self.items / self.group_items
    }

    /// Channels per block of a channel-blocked copy: one vector of the
    /// tile's ISA (each of the group's planes is a block).
    pub fn input_block(&self) -> usize {
        self.lanes / self.group_planes.max(1)
    }

    /// Whether some work item's channel block is partial.
    pub fn partial(&self) -> bool {
        self.tail.lanes != self.lanes
    }

    /// The last value of the tail's coordinate.
    pub fn last_block(&self) -> usize {
        match self.tail.coordinate {
            Coordinate::Q => self.groups() - 1,
            Coordinate::R => self.group_items - 1,
        }
    }

    /// The output channel of lane `lane` of work item `item`, or `None`
    /// past the last channel.
    pub fn channel(&self, item: usize, lane: usize) -> Option<usize> {
        let (q, r) = (item / self.group_items, item % self.group_items);
        let block = match self.tail.coordinate {
            Coordinate::Q => q,
            Coordinate::R => r,
        };
        if block == self.last_block() && lane >= self.tail.lanes {
            return None;
        }
        Some(q * self.q_channels + r * self.r_channels + lane * self.lane_stride)
    }
}

/// The lanes of the last of the blocks of `lanes` that `channels` fill.
pub(crate) fn tail_lanes(channels: usize, lanes: usize) -> usize {
    match channels % lanes {
        0 => lanes,
        r => r,
    }
}

/// The register tiles of `vectors` vectors of channels at most by each of
/// `pixels` pixels along a row, and as many rows as the register file and
/// the phases' `rows` allow, whose accumulators (`per_row(oc_vectors,
/// pixel_tile)` a row) number at least `min_accumulators` or cover a whole
/// phase of `cols` × `rows` pixels.
pub(crate) fn tiles_of(
    vectors: usize,
    pixels: &[usize],
    per_row: impl Fn(usize, usize) -> usize,
    geometry: &Geometry,
    min_accumulators: usize,
    isa: Isa,
) -> Vec<Tile> {
    let (cols, rows) = (geometry.most_cols(), geometry.most_rows());
    let mut out = Vec::new();
    for oc_vectors in 1..=vectors {
        let most = isa_accumulators(isa, oc_vectors);
        for &pixel_tile in pixels {
            let per_row = per_row(oc_vectors, pixel_tile);
            for row_tile in 1..=rows.min(most / per_row) {
                let whole = pixel_tile >= cols && row_tile == rows;
                if per_row * row_tile >= min_accumulators || whole {
                    out.push(Tile { oc_vectors, pixel_tile, row_tile });
                }
            }
        }
    }
    out
}
