//! Schedules: *how* a layer is computed, as plain data.
//!
//! A [`Schedule`] holds every decision the code generator and the run take;
//! the emitter branches on nothing else. [`choose`] is the deterministic
//! heuristic, a user can hand one in as JSON (`convjit ir --schedule F`),
//! and a tuner can search the space [`Schedule::legal`] admits.
//!
//! The schedule is typed by concern, so that what one algorithm cannot do
//! cannot be written down for it:
//! - the **algorithm** with its own configuration ([`Algorithm`]): the
//!   microkernel family, its register tile, its reduction unroll and, for
//!   the direct algorithm, the layout of the input it reads;
//! - the **loop nest** ([`LoopNest`]): which operand stays hot;
//! - the **staging** ([`InputCopy`]): how much of the input each padded
//!   copy holds;
//! - the **run** ([`Run`]: threads and how they [`Split`] the work): not
//!   compiled, so it is outside the [`CodeKey`]; one kernel serves every
//!   run ([`crate::Kernel::with_run`]).
//!
//! What is left to [`Schedule::legal`] are the checks against the spec
//! (the depthwise algorithm needs one input channel per group) and the
//! bounds of the numbers (a register tile fits the register file).
//!
//! Schedule files written before the schedule was typed (one flat object
//! with a `strategy` field) are still read: [`Schedule::from_json`]
//! migrates them, or says which of their fields has no typed form.
//!
//! What every schedule shares (not a knob, because one answer measured best or
//! is the only sound one so far):
//! - Vectors are the target's ([`crate::target::VECTOR`]), the widest type
//!   Cranelift's x86-64 backend emits.
//! - Borders are handled by a zero-padded copy of each input image made at run
//!   time (inside the timed run), so the microkernel has no border tests.
//! - Transposed convolutions are lowered by phase (sub-pixel) decomposition:
//!   the output rows and columns of each residue class modulo the stride are
//!   an ordinary stride-1 convolution with a subset of the taps, so nothing is
//!   scattered and nothing races.

mod heuristic;
mod legacy;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::ValidSpec;
use crate::target::LANES;

pub use heuristic::{MIN_MACS_PER_THREAD, choose, choose_threaded};

/// The most accumulators a register tile may hold: the target's vector
/// registers but the two its operands need
/// ([`crate::target::VectorIsa::max_accumulators`]; 14 on f32x4).
pub const MAX_ACCUMULATORS: usize = crate::target::VECTOR.max_accumulators();

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
}

/// The depthwise algorithm's configuration: its register tile (it has no
/// channel reduction to unroll).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Depthwise {
    /// The register tile.
    pub tile: Tile,
}

/// The width algorithm's configuration: one output channel per tile, so its
/// register tile is `pixel_vectors · row_tile` accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Width {
    /// Vectors of consecutive output pixels per row of the tile (the tile is
    /// `lanes · pixel_vectors` pixels wide).
    pub pixel_vectors: usize,
    /// Output rows per register tile.
    pub row_tile: usize,
    /// Input channels per iteration of the reduction loop.
    pub reduction_unroll: usize,
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

/// The order of the two outer loops. In JSON: `"channels_outer"`,
/// `"rows_outer"` or `{"column_blocks": 32}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopNest {
    /// For each channel block, every output row: the block's weights stay in
    /// L1 while the whole input image streams past once per block.
    ChannelsOuter,
    /// For each output row, every channel block: the few input rows a row
    /// needs stay in L1 while all the weights stream past once per row.
    RowsOuter,
    /// Rows outer, and of each row this many output pixels (rounded up to
    /// whole pixel tiles) computed by every work item before the next block
    /// of the row starts: the input the block reads then stays in L1 while
    /// the work items pass over it.
    ColumnBlocks(usize),
}

/// How one layer is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Schedule {
    /// The algorithm and its configuration.
    pub algorithm: Algorithm,
    /// The order of the channel-block and row loops: which operand stays hot.
    pub loop_nest: LoopNest,
    /// How much of the input each padded copy holds.
    pub copy: InputCopy,
    /// How a run shares the work among threads: not compiled, so one
    /// kernel serves every run ([`crate::Kernel::with_run`]). In JSON its
    /// fields sit beside the others.
    #[serde(flatten)]
    pub run: Run,
}

/// What a schedule compiles: all of it but the [`Run`]. Two schedules with
/// the same code key are the same code (the tuner compiles it once and
/// times each run on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodeKey {
    algorithm: Algorithm,
    loop_nest: LoopNest,
    copy: InputCopy,
}

/// How a run of a compiled kernel shares each image among threads; chosen
/// per run, never compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Run {
    /// Threads a run splits its work across: each image's padded copy by
    /// channel planes, then its output as [`Run::split`] says (or, with a
    /// copy per group or by bands, whole groups or bands).
    pub threads: usize,
    /// How threads share an image's output (unused on one thread).
    pub split: Split,
}

impl Default for Run {
    /// One thread.
    fn default() -> Run {
        Run { threads: 1, split: Split::default() }
    }
}

impl Run {
    /// `threads` threads sharing rows.
    pub fn threads(threads: usize) -> Run {
        Run { threads, ..Run::default() }
    }

    /// This run with its threads splitting the work by `split`.
    pub fn split(self, split: Split) -> Run {
        Run { split, ..self }
    }

    /// Checks that this run can share the work of a kernel compiled with
    /// `copy`; the error names the field that cannot.
    pub fn legal(&self, copy: InputCopy) -> Result<()> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(Error::InvalidSchedule { field, value, reason: reason.to_string() })
        };
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad("threads", self.threads.to_string(), "must be 1 to 256");
        }
        match copy {
            InputCopy::Group if self.split == Split::Rows && self.threads > 1 => bad(
                "split",
                "rows".into(),
                "copy = group shares whole groups between threads: needs split = items",
            ),
            InputCopy::Bands(_) if self.split == Split::Items && self.threads > 1 => bad(
                "split",
                "items".into(),
                "copy = bands shares whole bands of rows between threads: needs split = rows",
            ),
            _ => Ok(()),
        }
    }
}

/// The granularity of the padded input copy (when the plan needs one).
/// In JSON: `"image"`, `"group"` or `{"bands": 8}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputCopy {
    /// The whole image, then all of its work items: the copy is written to
    /// memory and read back, one more pass over the input.
    #[default]
    Image,
    /// One group's input channels (the channels a run of consecutive work
    /// items reads: a group for the direct and width algorithms, a block of
    /// channels for depthwise), then that group's work items, in a buffer
    /// that stays in cache. Threads share whole groups, each with its own
    /// buffer, so it needs `split = items`.
    Group,
    /// Bands of this many output rows (of each phase): the input rows a
    /// band reads are copied into a buffer that stays in cache, then every
    /// work item computes the band. Threads share whole bands, each with
    /// its own buffer, so it needs `split = rows`.
    Bands(usize),
}

/// How the threads of a run share an image's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Contiguous ranges of work items (channel blocks): each thread reads
    /// the whole input image and only its items' weights.
    Items,
    /// Equal slices of every phase's output rows: each thread reads about
    /// its share of the input and all the weights.
    #[default]
    Rows,
}

/// The most threads a schedule may ask for.
pub const MAX_THREADS: usize = 256;

/// The largest column block or band of rows a schedule may ask for: the
/// spec's [`MAX_DIM`](crate::spec::MAX_DIM) (2^24), so that rounding a
/// block up to whole pixel tiles cannot overflow. A block or band larger
/// than the layer's rows computes them whole.
pub const MAX_KNOB: usize = crate::spec::MAX_DIM as usize;

impl Algorithm {
    /// The algorithm of `strategy` from the knobs in the terms the
    /// heuristic and the space draw them in: the tile in pixels (the width
    /// algorithm takes `pixel_tile / lanes` vectors and one channel), the
    /// unroll (the depthwise algorithm has none) and the NHWC layout (the
    /// direct algorithm's only).
    pub(crate) fn from_knobs(
        strategy: Strategy,
        tile: Tile,
        reduction_unroll: usize,
        nhwc: bool,
    ) -> Algorithm {
        match strategy {
            Strategy::Direct => Algorithm::Direct(Direct {
                tile,
                reduction_unroll,
                layout: if nhwc { Layout::Nhwc } else { Layout::Nchw },
            }),
            Strategy::Depthwise => Algorithm::Depthwise(Depthwise { tile }),
            Strategy::Width => Algorithm::Width(Width {
                pixel_vectors: tile.pixel_tile / LANES,
                row_tile: tile.row_tile,
                reduction_unroll,
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
}

impl Schedule {
    /// The microkernel family.
    pub fn strategy(&self) -> Strategy {
        self.algorithm.strategy()
    }

    /// What this schedule compiles (all but its run).
    pub fn code_key(&self) -> CodeKey {
        CodeKey { algorithm: self.algorithm, loop_nest: self.loop_nest, copy: self.copy }
    }

    /// Vectors of output channels per register tile (1 for the width
    /// algorithm, which computes one channel at a time).
    pub fn oc_vectors(&self) -> usize {
        match self.algorithm {
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                tile.oc_vectors
            }
            Algorithm::Width(_) => 1,
        }
    }

    /// Output pixels along a row per register tile.
    pub fn pixel_tile(&self) -> usize {
        match self.algorithm {
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                tile.pixel_tile
            }
            Algorithm::Width(w) => w.pixel_vectors * LANES,
        }
    }

    /// Output rows per register tile.
    pub fn row_tile(&self) -> usize {
        match self.algorithm {
            Algorithm::Direct(Direct { tile, .. }) | Algorithm::Depthwise(Depthwise { tile }) => {
                tile.row_tile
            }
            Algorithm::Width(w) => w.row_tile,
        }
    }

    /// The register tile's shape, in the terms of the algorithms that
    /// vectorise across channels (the width algorithm's is one vector of
    /// channels by its pixels).
    pub fn tile(&self) -> Tile {
        Tile {
            oc_vectors: self.oc_vectors(),
            pixel_tile: self.pixel_tile(),
            row_tile: self.row_tile(),
        }
    }

    /// Accumulators in one row of the register tile.
    pub fn accumulators_per_row(&self) -> usize {
        match self.algorithm {
            Algorithm::Width(w) => w.pixel_vectors,
            _ => self.oc_vectors() * self.pixel_tile(),
        }
    }

    /// Input channels per iteration of the reduction loop (1 for the
    /// depthwise algorithm, which has no channel reduction).
    pub fn reduction_unroll(&self) -> usize {
        match self.algorithm {
            Algorithm::Direct(d) => d.reduction_unroll,
            Algorithm::Width(w) => w.reduction_unroll,
            Algorithm::Depthwise(_) => 1,
        }
    }

    /// Whether the microkernel reads an NHWC copy (the direct algorithm's
    /// [`Layout::Nhwc`]).
    pub fn interleave(&self) -> bool {
        matches!(self.algorithm, Algorithm::Direct(Direct { layout: Layout::Nhwc, .. }))
    }

    /// Checks that this schedule can compute `spec`; the error names the
    /// field that cannot. Every numeric knob is bounded (the accumulators'
    /// by [`MAX_ACCUMULATORS`], threads by [`MAX_THREADS`], column blocks
    /// and bands by [`MAX_KNOB`]) before any product of knobs is formed, so
    /// no arithmetic on a legal schedule overflows.
    pub fn legal(&self, spec: &ValidSpec) -> Result<()> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(Error::InvalidSchedule { field, value, reason: reason.to_string() })
        };
        match self.algorithm {
            Algorithm::Depthwise(_) if spec.in_per_group() != 1 => {
                return bad(
                    "algorithm",
                    "depthwise".into(),
                    "needs exactly one input channel per group",
                );
            }
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
            }
        }
        let row_tile = self.row_tile();
        if !(1..=MAX_ACCUMULATORS).contains(&row_tile)
            || self.accumulators_per_row() * row_tile > MAX_ACCUMULATORS
        {
            return bad(
                "row_tile",
                row_tile.to_string(),
                &format!(
                    "must be at least 1 with the accumulators of a row times row_tile at most \
                     {MAX_ACCUMULATORS}"
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
        if let LoopNest::ColumnBlocks(b) = self.loop_nest
            && !(1..=MAX_KNOB).contains(&b)
        {
            return bad(
                "loop_nest",
                format!("column blocks of {b}"),
                &format!("a column block has 1 to {MAX_KNOB} pixels"),
            );
        }
        if let InputCopy::Bands(rows) = self.copy
            && !(1..=MAX_KNOB).contains(&rows)
        {
            return bad(
                "copy",
                format!("bands of {rows} rows"),
                &format!("a band has 1 to {MAX_KNOB} rows"),
            );
        }
        self.run.legal(self.copy)
    }

    /// Parses a schedule from JSON: the typed form, or the flat form of
    /// schedule files written before it ([`legacy`]), migrated.
    pub fn from_json(text: &str) -> Result<Schedule> {
        serde_json::from_str(text).map_err(|e| Error::ScheduleJson(e.to_string()))
    }

    /// The schedule as JSON (the typed form).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Schedule always serialises")
    }
}

/// The typed form as JSON holds it: the run's fields may be left out (one
/// thread, rows), as may the copy (whole images).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Typed {
    algorithm: Algorithm,
    loop_nest: LoopNest,
    #[serde(default)]
    copy: InputCopy,
    #[serde(default = "one_thread")]
    threads: usize,
    #[serde(default)]
    split: Split,
}

fn one_thread() -> usize {
    1
}

impl<'de> Deserialize<'de> for Schedule {
    /// Reads the typed form, or migrates the flat form (an object with a
    /// `strategy` field): every schedule file and tuning cache written
    /// before the schedule was typed still reads, or fails with an error
    /// naming the field that has no typed form.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Schedule, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.get("strategy").is_some() {
            let flat: legacy::Flat = serde_json::from_value(value).map_err(D::Error::custom)?;
            return flat.migrate().map_err(D::Error::custom);
        }
        let t: Typed = serde_json::from_value(value).map_err(D::Error::custom)?;
        Ok(Schedule {
            algorithm: t.algorithm,
            loop_nest: t.loop_nest,
            copy: t.copy,
            run: Run { threads: t.threads, split: t.split },
        })
    }
}
