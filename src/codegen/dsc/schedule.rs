//! The fused kernel's schedule, [`DscSchedule`] (data, `legal`, the
//! heuristic `choose`), and the [`Band`]s both of its functions and the
//! run agree on.

use serde::{Deserialize, Serialize};

use super::Plan;
use crate::error::{Error, Result};
use crate::schedule::{
    Algorithm, InputCopy, LoopNest, MAX_ACCUMULATORS, MAX_KNOB, MAX_THREADS, Run, Schedule, Width,
};
use crate::spec::ValidSpec;
use crate::target::{Caches, LANES, VECTOR};

/// How the fused kernel computes one depthwise-separable block: plain
/// data, like [`Schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DscSchedule {
    /// Output rows per band: the depthwise output of a band, `band_rows ·
    /// W₄ · C · 4` bytes, is what stays in cache between the stages.
    pub band_rows: usize,
    /// Rows per depthwise register tile.
    pub dw_rows: usize,
    /// Vectors of 4 pixels per depthwise register tile (accumulators:
    /// `dw_rows · dw_vectors`).
    pub dw_vectors: usize,
    /// Vectors of 4 pixels per pointwise register tile, held in registers
    /// across its output channels.
    pub pw_vectors: usize,
    /// Output channels per pointwise register tile (accumulators:
    /// `pw_outputs · pw_vectors`).
    pub pw_outputs: usize,
    /// Input channels per iteration of the pointwise reduction loop.
    pub pw_unroll: usize,
    /// Threads: each takes a contiguous share of the bands.
    pub threads: usize,
}

/// Bytes the heuristic lets the band buffer take: an eighth of the host's
/// L2 (256 KiB of the 2 MiB L2 of the Xeon cores convjit is measured on),
/// so that it stays there with the pointwise weights and the input rows
/// of a band. On the MobileNetV2 shapes, bands of twice and four times the
/// rows measured within ±5% of it (`examples/dsc_fusion.rs`,
/// docs/blocks.md).
fn band_bytes() -> usize {
    Caches::host().l2 / 8
}

/// Accumulators the heuristic's pointwise register tiles hold: the
/// buffered vectors and a broadcast need registers too (the depthwise
/// tiles hold [`MAX_ACCUMULATORS`], as the width strategy's do). Tiles of
/// 1 × 12, 1 × 14 and 3 × 4 measured within ±5% of 2 × 6 on the
/// stride-1 MobileNetV2 shapes (docs/blocks.md).
const ACCUMULATORS: usize = 12;

impl DscSchedule {
    /// The heuristic schedule for the block `dw` then `pw` on `threads`.
    pub fn choose(dw: &ValidSpec, pw: &ValidSpec, threads: usize) -> DscSchedule {
        let (height, vectors) = (dw.out_height(), dw.out_width().div_ceil(LANES));
        let threads = threads.clamp(1, MAX_THREADS);
        // Bands that fit the buffer, and at least one per thread.
        let row_bytes = vectors * VECTOR.bytes() * dw.out_channels();
        let band_rows = (band_bytes() / row_bytes.max(1)).min(height.div_ceil(threads)).max(1);
        // Depthwise tiles of whole columns of rows, as the width strategy's
        // (`docs/schedules.md`); pointwise tiles that cover a row's vectors
        // with the least waste.
        let dw_rows = band_rows.min(MAX_ACCUMULATORS);
        let pw_vectors = (1..=3).rev().min_by_key(|&v| vectors.div_ceil(v) * v).unwrap_or(1);
        DscSchedule {
            band_rows,
            dw_rows,
            dw_vectors: (MAX_ACCUMULATORS / dw_rows).min(vectors),
            pw_vectors,
            pw_outputs: (ACCUMULATORS / pw_vectors).min(pw.out_channels()),
            pw_unroll: 4,
            threads,
        }
    }

    /// Checks that this schedule can compute the block; the error names
    /// the field that cannot. Every knob is bounded before any product of
    /// knobs is formed, so no arithmetic on a legal schedule overflows.
    pub fn legal(&self) -> Result<()> {
        let bad = |field: &'static str, value: usize, reason: &str| {
            Err(Error::InvalidSchedule {
                field,
                value: value.to_string(),
                reason: reason.to_string(),
            })
        };
        if !(1..=MAX_KNOB).contains(&self.band_rows) {
            return bad("band_rows", self.band_rows, &format!("must be 1 to {MAX_KNOB}"));
        }
        if !(1..=MAX_ACCUMULATORS).contains(&self.dw_rows) {
            return bad("dw_rows", self.dw_rows, &format!("must be 1 to {MAX_ACCUMULATORS}"));
        }
        if !(1..=MAX_ACCUMULATORS).contains(&self.dw_vectors)
            || self.dw_vectors * self.dw_rows > MAX_ACCUMULATORS
        {
            return bad(
                "dw_vectors",
                self.dw_vectors,
                &format!("must be at least 1, times dw_rows at most {MAX_ACCUMULATORS}"),
            );
        }
        if !(1..=3).contains(&self.pw_vectors) {
            return bad("pw_vectors", self.pw_vectors, "must be 1, 2 or 3");
        }
        if !(1..=MAX_ACCUMULATORS).contains(&self.pw_outputs)
            || self.pw_outputs * self.pw_vectors > MAX_ACCUMULATORS
        {
            return bad(
                "pw_outputs",
                self.pw_outputs,
                &format!("must be at least 1, times pw_vectors at most {MAX_ACCUMULATORS}"),
            );
        }
        if !(1..=4).contains(&self.pw_unroll) {
            return bad("pw_unroll", self.pw_unroll, "must be 1 to 4");
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return bad("threads", self.threads, "must be 1 to 256");
        }
        Ok(())
    }

    /// The depthwise kernel schedule whose plan (a padded NCHW copy by
    /// bands, strided rows split into column phases) the fused kernel reads.
    pub fn depthwise(&self) -> Schedule {
        Schedule {
            isa: crate::target::Isa::Sse,
            algorithm: Algorithm::Width(Width {
                pixel_vectors: self.dw_vectors,
                row_tile: self.dw_rows,
                reduction_unroll: 1,
                channels: 1,
                row_length: None,
                joined: false,
                image: false,
            }),
            winograd: None,
            loop_nest: LoopNest::ChannelsOuter,
            copy: InputCopy::Bands(self.band_rows),
            run: Run::threads(self.threads),
        }
    }
}

/// The bands both functions and the run agree on.
#[derive(Clone, Copy, Debug)]
pub struct Band {
    /// Bands per image: band `b` is output rows `[H·b / parts, H·(b + 1) /
    /// parts)`, the rows the plan's band copies are made for.
    pub parts: usize,
    /// Output rows of the largest band.
    pub rows: usize,
    /// Floats of one channel's row in the buffer: the width in whole
    /// vectors.
    pub row: usize,
    /// Channels of the buffer.
    pub channels: usize,
}

impl Band {
    /// The bands of `dw` under `schedule`, whose depthwise plan is `plan`.
    pub fn of(dw: &ValidSpec, schedule: &DscSchedule, plan: &Plan) -> Band {
        let height = dw.out_height();
        let parts = plan.bands.map_or(height.div_ceil(schedule.band_rows), |b| b.parts);
        Band {
            parts,
            rows: height.div_ceil(parts),
            row: dw.out_width().next_multiple_of(LANES),
            channels: dw.out_channels(),
        }
    }

    /// The output rows of band `b`.
    pub fn rows_of(&self, height: usize, b: usize) -> std::ops::Range<usize> {
        height * b / self.parts..height * (b + 1) / self.parts
    }

    /// Floats of one channel's plane of the band buffer.
    pub fn plane(&self) -> usize {
        self.rows * self.row
    }

    /// Floats of the band buffer, `[channel][band row][W₄]`.
    pub fn buffer_len(&self) -> usize {
        self.channels * self.plane()
    }
}
