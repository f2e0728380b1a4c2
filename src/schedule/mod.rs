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
//!   run ([`crate::Kernel::set_run`]).
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

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, json_message};
use crate::spec::ValidSpec;
pub use crate::target::Isa;

pub use crate::algorithm::winograd::Winograd;
pub use crate::algorithm::{
    Algorithm, Depthwise, Direct, Layout, MAX_ACCUMULATORS, MAX_OC_VECTORS, MAX_REDUCTION_UNROLL,
    Strategy, Tile, Width,
};
pub use heuristic::{
    MIN_MACS_PER_THREAD, choose, choose_direct_for, choose_for, choose_threaded, winograd_with,
};

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
    /// The vector ISA of the register tiles ([`Isa`]): Cranelift's 128-bit
    /// vectors, or a wider ISA's assembled tiles. In JSON `"isa"`; a
    /// schedule without one is `"sse"`, what every schedule meant before
    /// the wider tiles.
    pub isa: Isa,
    /// The algorithm and its configuration; with [`Schedule::winograd`],
    /// the algorithm of the batched products.
    pub algorithm: Algorithm,
    /// Computed through Winograd's minimal filtering: the input tiles
    /// transformed, multiplied by the transformed weights as one grouped
    /// 1×1 layer ([`Winograd::gemm`]) — which the other fields (ISA,
    /// algorithm, loop nest, copy) compile —, and transformed back. In
    /// JSON `"winograd"`, absent for direct computation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub winograd: Option<Winograd>,
    /// The order of the channel-block and row loops: which operand stays hot.
    pub loop_nest: LoopNest,
    /// How much of the input each padded copy holds.
    pub copy: InputCopy,
    /// How a run shares the work among threads: not compiled, so one
    /// kernel serves every run ([`crate::Kernel::set_run`]). In JSON its
    /// fields sit beside the others.
    #[serde(flatten)]
    pub run: Run,
}

/// What a schedule compiles: all of it but the [`Run`]. Two schedules with
/// the same code key are the same code (the tuner compiles it once and
/// times each run on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodeKey {
    isa: Isa,
    algorithm: Algorithm,
    winograd: Option<Winograd>,
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

impl Schedule {
    /// The microkernel family.
    pub fn strategy(&self) -> Strategy {
        self.algorithm.strategy()
    }

    /// What this schedule compiles (all but its run).
    pub fn code_key(&self) -> CodeKey {
        CodeKey {
            isa: self.isa,
            algorithm: self.algorithm,
            winograd: self.winograd,
            loop_nest: self.loop_nest,
            copy: self.copy,
        }
    }

    /// Vectors of output channels per register tile ([`Algorithm::oc_vectors`]).
    pub fn oc_vectors(&self) -> usize {
        self.algorithm.oc_vectors()
    }

    /// Output pixels along a row per register tile.
    pub fn pixel_tile(&self) -> usize {
        self.algorithm.pixel_tile(self.isa)
    }

    /// Output rows per register tile.
    pub fn row_tile(&self) -> usize {
        self.algorithm.row_tile()
    }

    /// The register tile's shape ([`Algorithm::tile`]).
    pub fn tile(&self) -> Tile {
        self.algorithm.tile(self.isa)
    }

    /// Accumulators in one row of the register tile.
    pub fn accumulators_per_row(&self) -> usize {
        self.algorithm.accumulators_per_row()
    }

    /// Input channels per iteration of the reduction loop.
    pub fn reduction_unroll(&self) -> usize {
        self.algorithm.reduction_unroll()
    }

    /// The layer as this schedule's code computes it: with Winograd, its
    /// batched products ([`Winograd::gemm`]); then as the algorithm
    /// computes that ([`Algorithm::lowered`]): the spec the plan and the
    /// code are made for. For a schedule legal for `spec`.
    pub fn lowered<'a>(&self, spec: &'a ValidSpec) -> Cow<'a, ValidSpec> {
        match self.winograd {
            Some(w) => {
                let gemm = w.gemm(spec).expect("a schedule legal for the spec has its products");
                Cow::Owned(self.algorithm.lowered(&gemm).into_owned())
            }
            None => self.algorithm.lowered(spec),
        }
    }

    /// The layer this schedule's algorithm, tile, loop nest and copy
    /// compute: `spec`, or with Winograd its batched products.
    pub fn computed<'a>(&self, spec: &'a ValidSpec) -> Result<Cow<'a, ValidSpec>> {
        match self.winograd {
            Some(w) => {
                w.legal(spec)?;
                Ok(Cow::Owned(w.gemm(spec)?))
            }
            None => Ok(Cow::Borrowed(spec)),
        }
    }

    /// Whether the microkernel reads an NHWC copy.
    pub fn interleave(&self) -> bool {
        self.algorithm.interleave()
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
        let computed = self.computed(spec)?;
        self.algorithm.legal(&computed, self.isa)?;
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
        self.run_legal(&self.run)
    }

    /// Checks that `run` can share the work of this schedule's code
    /// ([`Run::legal`]): with Winograd, threads share panels and each
    /// panel's products run on one thread, so any split is.
    pub fn run_legal(&self, run: &Run) -> Result<()> {
        match self.winograd {
            Some(_) => run.legal(InputCopy::Image),
            None => run.legal(self.copy),
        }
    }

    /// Parses a schedule from JSON: the typed form, or the flat form of
    /// schedule files written before it ([`legacy`]), migrated.
    pub fn from_json(text: &str) -> Result<Schedule> {
        serde_json::from_str(text).map_err(|e| Error::ScheduleJson(json_message(&e)))
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
    #[serde(default)]
    isa: Isa,
    algorithm: Algorithm,
    #[serde(default)]
    winograd: Option<Winograd>,
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
            isa: t.isa,
            algorithm: t.algorithm,
            winograd: t.winograd,
            loop_nest: t.loop_nest,
            copy: t.copy,
            run: Run { threads: t.threads, split: t.split },
        })
    }
}
