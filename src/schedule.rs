//! Schedules: *how* a layer is computed, as plain data.
//!
//! A [`Schedule`] holds every decision the code generator takes; the emitter
//! branches on nothing else. [`choose`] is the deterministic heuristic, a user
//! can hand one in as JSON (`convjit ir --schedule F`), and a tuner can search
//! the space [`Schedule::legal`] admits.
//!
//! What every schedule shares (not a knob, because one answer measured best or
//! is the only sound one so far):
//! - Vectors are f32x4, the widest type Cranelift's x86-64 backend emits.
//! - Borders are handled by a zero-padded copy of each input image made at run
//!   time (inside the timed run), so the microkernel has no border tests.
//! - Transposed convolutions are lowered by phase (sub-pixel) decomposition:
//!   the output rows and columns of each residue class modulo the stride are
//!   an ordinary stride-1 convolution with a subset of the taps, so nothing is
//!   scattered and nothing races.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::spec::ValidSpec;

/// The most accumulators a register tile may hold: the target's vector
/// registers but the two its operands need
/// ([`crate::target::VectorIsa::max_accumulators`]; 14 on f32x4).
pub const MAX_ACCUMULATORS: usize = crate::target::VECTOR.max_accumulators();

/// Which microkernel family computes the layer, and so which axis is
/// vectorised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Vectorise across the output channels of one group; each FMA multiplies
    /// a broadcast input pixel by a vector of 4 output channels' weights.
    /// Serves every kind; wastes lanes when a group has fewer than 4 output
    /// channels, or a non-multiple of 4.
    Direct,
    /// Vectorise across groups, for layers with one input channel per group
    /// (depthwise, with any channel multiplier): each FMA multiplies 4
    /// channels' input pixels (a channel-blocked copy of the input) by 4
    /// channels' weights. Needs the blocked input copy.
    Depthwise,
    /// Vectorise along the output row: one output channel per work item, and
    /// each FMA multiplies 4 consecutive output pixels' inputs (one vector
    /// load from an NCHW copy) by one weight broadcast to every lane. Serves
    /// every kind; no lane idles on channel tails and the stores are whole
    /// vectors, but every weight is loaded once per pixel tile. Strided
    /// layers read a copy whose rows are split into `stride` column phases
    /// (column `c` in phase `c mod stride`), so no load gathers.
    Width,
}

/// The order of the two outer loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopOrder {
    /// For each channel block, every output row: the block's weights stay in
    /// L1 while the whole input image streams past once per block.
    ChannelsOuter,
    /// For each output row, every channel block: the few input rows a row
    /// needs stay in L1 while all the weights stream past once per row.
    RowsOuter,
}

/// How one layer is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The microkernel family and its vectorised axis.
    pub strategy: Strategy,
    /// f32x4 vectors of channels per register tile (the output-channel block
    /// is `4 · oc_vectors`). More vectors share each input load across more
    /// FMAs but each costs a weight register and wastes more lanes on channel
    /// tails.
    pub oc_vectors: usize,
    /// Output pixels (along a row) per register tile. Accumulators are
    /// `oc_vectors · pixel_tile` (`pixel_tile / 4` for the width strategy,
    /// whose tile is a multiple of 4 pixels): more amortise the weight loads
    /// and hide FMA latency, but above 14 they spill.
    pub pixel_tile: usize,
    /// Input channels per iteration of the reduction loop (Direct only). Larger
    /// unrolls cut loop overhead and back-edge moves when the kernel has few
    /// taps (1×1), at the cost of code size.
    pub reduction_unroll: usize,
    /// Output rows per register tile: the accumulators cover `pixel_tile`
    /// pixels in each of `row_tile` rows, so short rows still fill the
    /// registers. A schedule file without it takes 1.
    #[serde(default = "one")]
    pub row_tile: usize,
    /// The order of the channel-block and row loops: which operand stays hot.
    pub loop_order: LoopOrder,
    /// With rows outer, the output pixels of a row (rounded up to whole
    /// pixel tiles) that every work item computes before the next block
    /// of the row starts: the input the block reads then stays in L1 while
    /// the work items pass over it. `None` (the default) takes whole rows.
    #[serde(default)]
    pub col_block: Option<usize>,
    /// Threads a run splits its work across: each image's padded copy by
    /// channel planes, then its output as [`Schedule::split`] says. Not a
    /// codegen decision: the same code serves every count.
    #[serde(default = "one_thread")]
    pub threads: usize,
    /// How threads share an image's output (unused on one thread). A
    /// schedule file without it splits rows, the split that measured
    /// faster (`docs/schedules.md`).
    #[serde(default)]
    pub split: Split,
    /// How much of the input each padded copy holds. A schedule file
    /// without it copies whole images.
    #[serde(default)]
    pub copy: InputCopy,
    /// Direct only: the copy stores each pixel's channels together (NHWC)
    /// instead of each channel's plane (NCHW), so the reduction over input
    /// channels walks consecutive addresses instead of one plane each. The
    /// copy is then a transpose, and is always made.
    #[serde(default)]
    pub interleave: bool,
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
    /// items reads: a group for the direct and width strategies, a block of
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

fn one_thread() -> usize {
    1
}

fn one() -> usize {
    1
}

/// The fewest MACs (`macs_valid`) per thread the heuristic splits a layer
/// into: about 0.25 ms of work at 8 MACs per TSC tick.
pub const MIN_MACS_PER_THREAD: u64 = 2_000_000;

/// The most threads a schedule may ask for.
pub const MAX_THREADS: usize = 256;

/// The largest column block or band of rows a schedule may ask for: the
/// spec's [`MAX_DIM`](crate::spec::MAX_DIM) (2^24), so that rounding a
/// block up to whole pixel tiles cannot overflow. A block or band larger
/// than the layer's rows computes them whole.
pub const MAX_KNOB: usize = crate::spec::MAX_DIM as usize;

impl Schedule {
    /// Checks that this schedule can compute `spec`; the error names the
    /// field that cannot. Every numeric knob is bounded (the accumulators'
    /// by [`MAX_ACCUMULATORS`], threads by [`MAX_THREADS`], column blocks
    /// and bands by [`MAX_KNOB`]) before any product of knobs is formed, so
    /// no arithmetic on a legal schedule overflows.
    pub fn legal(&self, spec: &ValidSpec) -> Result<()> {
        let bad = |field: &'static str, value: String, reason: &str| {
            Err(Error::InvalidSchedule { field, value, reason: reason.to_string() })
        };
        if self.strategy == Strategy::Depthwise && spec.in_per_group() != 1 {
            return bad(
                "strategy",
                "depthwise".into(),
                "needs exactly one input channel per group",
            );
        }
        if !(1..=3).contains(&self.oc_vectors) {
            return bad("oc_vectors", self.oc_vectors.to_string(), "must be 1, 2 or 3");
        }
        if self.strategy == Strategy::Width {
            if self.oc_vectors != 1 {
                return bad(
                    "oc_vectors",
                    self.oc_vectors.to_string(),
                    "must be 1 for the width strategy (one output channel per work item)",
                );
            }
            if self.pixel_tile == 0
                || !self.pixel_tile.is_multiple_of(4)
                || self.pixel_tile / 4 > MAX_ACCUMULATORS
            {
                return bad(
                    "pixel_tile",
                    self.pixel_tile.to_string(),
                    "must be a multiple of 4 from 4 to 56 for the width strategy",
                );
            }
        } else if !(1..=MAX_ACCUMULATORS).contains(&self.pixel_tile)
            || self.oc_vectors * self.pixel_tile > MAX_ACCUMULATORS
        {
            return bad(
                "pixel_tile",
                self.pixel_tile.to_string(),
                "must be at least 1 with oc_vectors · pixel_tile at most 14",
            );
        }
        let per_row = match self.strategy {
            Strategy::Width => self.pixel_tile / 4,
            _ => self.oc_vectors * self.pixel_tile,
        };
        if !(1..=MAX_ACCUMULATORS).contains(&self.row_tile)
            || per_row * self.row_tile > MAX_ACCUMULATORS
        {
            return bad(
                "row_tile",
                self.row_tile.to_string(),
                "must be at least 1 with the accumulators of a row times row_tile at most 14",
            );
        }
        if !(1..=4).contains(&self.reduction_unroll) {
            return bad("reduction_unroll", self.reduction_unroll.to_string(), "must be 1 to 4");
        }
        match self.col_block {
            Some(b) if !(1..=MAX_KNOB).contains(&b) => {
                return bad("col_block", b.to_string(), &format!("must be 1 to {MAX_KNOB} pixels"));
            }
            Some(b) if self.loop_order == LoopOrder::ChannelsOuter => {
                return bad(
                    "col_block",
                    b.to_string(),
                    "blocks rows only when rows are outer (loop_order = rows_outer)",
                );
            }
            _ => {}
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad("threads", self.threads.to_string(), "must be 1 to 256");
        }
        if self.interleave && self.strategy != Strategy::Direct {
            return bad("interleave", "true".into(), "only the direct strategy reads an NHWC copy");
        }
        match self.copy {
            InputCopy::Group if self.split == Split::Rows && self.threads > 1 => {
                return bad(
                    "split",
                    "rows".into(),
                    "copy = group shares whole groups between threads: needs split = items",
                );
            }
            InputCopy::Bands(rows) if !(1..=MAX_KNOB).contains(&rows) => {
                return bad(
                    "copy",
                    format!("bands of {rows} rows"),
                    &format!("a band has 1 to {MAX_KNOB} rows"),
                );
            }
            InputCopy::Bands(_) if self.split == Split::Items && self.threads > 1 => {
                return bad(
                    "split",
                    "items".into(),
                    "copy = bands shares whole bands of rows between threads: needs split = rows",
                );
            }
            _ => {}
        }
        if self.strategy == Strategy::Depthwise && self.reduction_unroll != 1 {
            return bad(
                "reduction_unroll",
                self.reduction_unroll.to_string(),
                "must be 1 for the depthwise strategy (it has no channel reduction)",
            );
        }
        Ok(())
    }

    /// Parses a schedule from JSON.
    pub fn from_json(text: &str) -> Result<Schedule> {
        serde_json::from_str(text).map_err(|e| Error::ScheduleJson(e.to_string()))
    }

    /// The schedule as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a Schedule always serialises")
    }
}

/// Output rows below which threads share channel blocks instead of rows
/// (rows measured as fast as channel blocks or faster on every suite layer,
/// `docs/schedules.md`): 16 rows cut in 2 or 4 equal slices; fewer
/// leave threads unevenly loaded.
const MIN_ROWS_TO_SPLIT: usize = 16;

/// The deterministic heuristic for one thread: a legal schedule for every
/// valid spec.
pub fn choose(spec: &ValidSpec) -> Schedule {
    choose_threaded(spec, 1)
}

/// The deterministic heuristic for a run on `threads` threads (clamped to
/// 1..=[`MAX_THREADS`]). The measurements behind each choice are in
/// `docs/schedules.md` (`examples/compare_schedules.rs`).
pub fn choose_threaded(spec: &ValidSpec, threads: usize) -> Schedule {
    // Waking another core costs tens of microseconds in the VMs measured:
    // layers of a few hundred microseconds ran slower on two threads than
    // on one. Each thread gets at least `MIN_MACS_PER_THREAD` of the work.
    let macs = crate::complexity::Complexity::of(spec).macs_valid;
    let worth = usize::try_from(macs / MIN_MACS_PER_THREAD).unwrap_or(usize::MAX);
    let threads = threads.min(worth).clamp(1, MAX_THREADS);
    let depthwise = spec.in_per_group() == 1 && spec.groups() > 1;
    let strategy = match depthwise {
        // One input channel per group. Along the row, each FMA takes its
        // input vector straight from the NCHW copy and the stores are whole
        // vectors; across channels (a channel-blocked copy), no lane idles
        // on rows shorter than two vectors. Measured: the width strategy ran
        // 1.2–2.2× faster on depthwise layers 14 to 112 pixels wide, and
        // 0.9× on a 7-pixel one.
        true if spec.out_width() >= MIN_WIDTH_FOR_ROWS => Strategy::Width,
        true => Strategy::Depthwise,
        // One weight vector against 12 fresh broadcasts: the best measured
        // shape of the register tile (`codegen::tile`), the ceiling's.
        false => Strategy::Direct,
    };
    // The register tile: 12–14 accumulators (rule 2 of `codegen::tile`). Measured
    // (docs/schedules.md): for the width strategy, one vector of 4 pixels
    // in each of 14 rows ran 1.1–1.3× faster than whole rows of up to 14
    // vectors on depthwise layers 14 to 112 pixels wide; for the direct
    // strategy, 7 pixels in each of 2 rows ran 1.15–1.45× faster than 12
    // pixels of one row on 3×3 layers with rows of 7 to 28 pixels (no
    // 4-pixel tail tile, twice the accumulators on short rows), but only
    // 0–3% on wider rows, where its second, one-row body (for a slice of
    // odd rows) costs compile time, and 3–4% slower on the few-tap layers.
    let narrow = phase_cols(spec) <= MAX_NARROW_ROW;
    let (pixel_tile, row_tile) = match strategy {
        Strategy::Width => (4, MAX_ACCUMULATORS),
        Strategy::Direct if narrow && phase_taps(spec) > 3 => (7, 2),
        _ => (12, 1),
    };
    // Unroll the channel loop until an iteration holds up to 36 taps (4
    // channels of a 3×3 kernel or of any smaller phase). The autotuner
    // found this (docs/autotuning.md): 4 channels per iteration ran 5–11%
    // faster than 1 on the suite's 3×3 layers and 16% on the 2×2-stride-2
    // transposed one (whose phases have one tap each), where one channel of
    // 9 taps leaves the loop's overhead and the accumulators' moves on every
    // 9 FMAs; on a 7×7 kernel 4 channels (196 taps) ran 10% slower (code
    // size), so kernels of more than 18 taps per phase are not unrolled.
    let cig = spec.in_per_group();
    let reduction_unroll = match strategy {
        Strategy::Depthwise => 1,
        _ => (MAX_BODY_TAPS / phase_taps(spec)).clamp(1, 4).min(cig),
    };
    // Kernels of a few taps per phase read one input pixel per FMA per
    // channel: with many channels, an NCHW input spreads each pixel tile's
    // reduction over as many planes. The NHWC copy keeps a tile's channels
    // together; it measured 1.3–1.5× faster on the suite's 1×1, 3×1 and
    // 2×2-stride-2 transposed layers with 64–256 input channels, and 0.9×
    // on 3×3 layers and on 32 channels.
    let interleave = strategy == Strategy::Direct && phase_taps(spec) <= 3 && cig >= 64;
    // A group's planes copied just before its work items stay in cache, where
    // a whole-image copy goes to memory and back: depthwise layers ran 1.7–2×
    // faster with it. Threads then share whole groups, so there must be
    // enough of them to go round evenly.
    let groups = spec.groups();
    let per_group = groups > 1 && (groups.is_multiple_of(threads) || groups >= 4 * threads);
    // Likewise the rows a band of output rows reads: bands of up to 4 rows
    // measured 3–14% faster than a whole-image copy on one thread on the
    // suite's 1×1, transposed and 128×128 layers (the copy stays in L2), as
    // fast elsewhere, and on two threads up to 1.4× faster, as each thread
    // copies its own bands in the one parallel region. Smaller bands when
    // there are few rows, so that threads share them evenly.
    let rows = phase_rows(spec);
    let (copy, split) = if per_group {
        (InputCopy::Group, Split::Items)
    } else if rows >= MIN_ROWS_TO_SPLIT {
        (InputCopy::Bands((rows / (4 * threads)).clamp(1, 4)), Split::Rows)
    } else {
        (InputCopy::Image, Split::Items)
    };
    Schedule {
        strategy,
        oc_vectors: 1,
        pixel_tile,
        reduction_unroll,
        row_tile,
        loop_order: LoopOrder::RowsOuter,
        col_block: None,
        threads,
        split,
        copy,
        interleave,
    }
}

/// The most taps the heuristic unrolls into one iteration of the channel
/// loop.
const MAX_BODY_TAPS: usize = 36;

/// The widest output rows (in pixels) that the direct strategy tiles two
/// rows at a time.
const MAX_NARROW_ROW: usize = 28;

/// The most output columns any phase of the layer has.
pub(crate) fn phase_cols(spec: &ValidSpec) -> usize {
    match spec.op() {
        crate::spec::Op::Conv2d => spec.out_width(),
        crate::spec::Op::ConvTranspose2d => spec.out_width().div_ceil(spec.stride()[1]),
    }
}

/// The most output rows any phase of the layer has.
pub(crate) fn phase_rows(spec: &ValidSpec) -> usize {
    match spec.op() {
        crate::spec::Op::Conv2d => spec.out_height(),
        crate::spec::Op::ConvTranspose2d => spec.out_height().div_ceil(spec.stride()[0]),
    }
}

/// The most taps any phase of the layer has: the kernel's for conv2d, about
/// `⌈k/s⌉` per axis for conv_transpose2d.
fn phase_taps(spec: &ValidSpec) -> usize {
    let axis = |i: usize| match spec.op() {
        crate::spec::Op::Conv2d => spec.kernel()[i],
        crate::spec::Op::ConvTranspose2d => spec.kernel()[i].div_ceil(spec.stride()[i]),
    };
    axis(0) * axis(1)
}

/// Output rows narrower than this vectorise depthwise layers across
/// channels: two vectors per row keep too few accumulators busy.
const MIN_WIDTH_FOR_ROWS: usize = 8;
