//! The autotuner: searches a layer's [schedule space](Space)
//! by compiling, verifying and timing candidates within a time budget, and
//! keeps the fastest.
//!
//! Each candidate is
//! 1. **compiled** (timed) and its weights packed;
//! 2. **verified**: run once on the layer's random input and checked
//!    against the [reference](crate::reference) (every output element for
//!    layers of up to [`FULL_ORACLE_MACS`]; past that, every pixel of a
//!    sample of output planes, see [`oracle_planes`]). A candidate that fails
//!    is a compiler bug: it is logged as one, recorded, and dropped;
//! 3. **timed** in runs *paired* with the heuristic's schedule (run one,
//!    run the other, alternating which goes first): the host's slow spells
//!    last seconds and move every run alike, so the ratio of a pair is far
//!    steadier than either time. The candidate's score is the median ratio;
//!    timing stops after [`CUT_AFTER`] pairs when the candidate is clearly
//!    slower than the best so far.
//!
//! The search ([`Search`]): the heuristic's schedule first, then every
//! member (exhaustive) when the space fits the budget, otherwise a random
//! sample for [`RANDOM_SHARE`] of the time and a first-improvement hill
//! climb over neighbours (one knob changed) from the best schedules found.
//! At the end the few best are **confirmed**: timed again with the
//! heuristic's, interleaved in rounds; the best of them is then timed
//! against the heuristic's alone, afresh (the best of several noisy scores
//! flatters itself), and replaces it only if it is [`CONFIRM_MARGIN`]
//! faster there too.
//!
//! The budget covers everything (test data, the reference, the search,
//! the confirmation); the heuristic is evaluated even when one evaluation
//! exceeds it.
//!
//! The tuner works on any [`Tunable`] op (a convolution layer today) and is
//! split by concern: [`space`] holds the schedules a layer may take,
//! `search` picks candidates, `measure` times them,
//! `confirm` re-times the best, `session` evaluates one candidate and
//! drives the rest; [`records`] logs every evaluation and [`cache`] keeps
//! the winners.

pub mod cache;
mod confirm;
mod conv;
pub mod dsc;
mod measure;
mod memo;
pub mod records;
mod search;
mod session;
pub mod space;
#[cfg(test)]
mod tests;
mod tunable;

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::blocks::Dsc;
use crate::codegen::dsc::DscSchedule;
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::schedule::{self, Schedule};
use crate::spec::ValidSpec;

pub use cache::{Entry, TuningCache, Workload};
pub use confirm::CONFIRM_MARGIN;
pub use conv::{FULL_ORACLE_MACS, oracle_planes};
pub use measure::{CUT_AFTER, CUT_COLD, CUT_FACTOR, CUT_FIRST};
pub use records::{Record, RecordLog};
pub use search::{RANDOM_SHARE, Search};
pub use space::{KNOBS, Space};
pub use tunable::Tunable;

/// What to tune and for how long.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time for one layer, everything included.
    pub budget: Duration,
    /// How to pick candidates.
    pub search: Search,
    /// The most threads a schedule may use (the space holds 1 to this).
    pub threads: usize,
    /// Seed of the test data and of the search's random choices.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options { budget: Duration::from_secs(10), search: Search::Auto, threads: 1, seed: 1 }
    }
}

impl Options {
    /// Refuses threads past [`schedule::MAX_THREADS`] and a budget no
    /// clock reading can reach (deadlines are durations since the start:
    /// such a budget is refused rather than left to overflow later).
    fn check(&self) -> Result<()> {
        if !(1..=schedule::MAX_THREADS).contains(&self.threads) {
            return Err(Error::InvalidThreads(self.threads));
        }
        if Instant::now().checked_add(self.budget).is_none() {
            return Err(Error::InvalidTuning(format!(
                "a budget of {:?} is too large",
                self.budget
            )));
        }
        Ok(())
    }
}
/// Where the tuner spent a layer's time, seconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct TimeSplit {
    /// Making the test data and running the reference.
    pub reference_s: f64,
    /// Compiling candidates (and packing their weights).
    pub compile_s: f64,
    /// Running each candidate once and checking its output.
    pub verify_s: f64,
    /// Timing candidates (with the heuristic runs they are paired with).
    pub measure_s: f64,
    /// The final interleaved re-timing of the best.
    pub confirm_s: f64,
}

/// The result of tuning one layer (one op, of configs `C`).
#[derive(Clone, Debug, Serialize)]
pub struct Outcome<C = Schedule> {
    /// The layer's name, or its shape.
    pub layer: String,
    /// The search used (`auto` resolved).
    pub search: Search,
    /// Schedules in the space.
    pub space: usize,
    /// Candidates evaluated, the heuristic's included.
    pub candidates: usize,
    /// Candidates dropped because they failed to compile, to verify, or to
    /// run while timed.
    pub failed: usize,
    /// Candidates whose timing stopped early.
    pub cut: usize,
    /// Output elements each candidate's output was checked on, of all.
    pub checked_elements: usize,
    /// Output elements of the layer.
    pub output_elements: usize,
    /// Wall time tuning the layer took, seconds.
    pub seconds: f64,
    /// Where it went.
    pub time: TimeSplit,
    /// The heuristic's schedule.
    pub heuristic: C,
    /// The heuristic's MACs (`macs_valid`) per TSC tick in the confirmation's
    /// last stage (its recent runs in the search when nothing else
    /// verified).
    pub heuristic_macs_per_cycle: f64,
    /// The best schedule: the heuristic's unless another was confirmed
    /// faster.
    pub schedule: C,
    /// Its MACs per TSC tick: the heuristic's times `speedup`.
    pub tuned_macs_per_cycle: f64,
    /// How many times faster than the heuristic's it is: the median over
    /// the validation's rounds of the heuristic's time over its own (1
    /// when the heuristic's schedule won).
    pub speedup: f64,
}

impl Outcome {
    /// The cache entry of this result for `spec`.
    pub fn entry(&self, spec: &ValidSpec, threads: usize) -> Entry {
        Entry {
            workload: Workload::host(spec, threads),
            schedule: self.schedule,
            macs_per_cycle: self.tuned_macs_per_cycle,
            heuristic_macs_per_cycle: self.heuristic_macs_per_cycle,
            candidates: self.candidates,
            tuned_at: since_epoch().as_secs(),
        }
    }
}

/// Where a tuning run is, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Time spent on this layer.
    pub elapsed: Duration,
    /// The layer's budget.
    pub budget: Duration,
    /// Candidates evaluated so far.
    pub candidates: usize,
    /// The best MACs per TSC tick so far (estimated from the paired ratio).
    pub best_macs_per_cycle: f64,
}

/// Tunes `spec` within `options.budget`, appending every evaluation to
/// `records` when given, and telling `progress` after each.
pub fn tune(
    compiler: &Compiler,
    spec: &ValidSpec,
    options: &Options,
    records: Option<&mut RecordLog>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome> {
    let clock = &mut measure::HostClock(Instant::now());
    tune_on(compiler, spec, options, records, progress, clock)
}

/// [`tune`] on the given clock.
fn tune_on(
    compiler: &Compiler,
    spec: &ValidSpec,
    options: &Options,
    records: Option<&mut RecordLog>,
    progress: &mut dyn FnMut(&Progress),
    clock: &mut dyn measure::Clock<Schedule>,
) -> Result<Outcome> {
    session::tune_op(options, records, progress, clock, |rng| {
        conv::ConvTuning::new(compiler, spec, options.threads, rng)
    })
}

/// Tunes the fused kernel of the depthwise-separable `block` (its
/// [`DscSchedule`]: bands, the two stages' register tiles, the pointwise
/// unroll, the threads) within `options.budget`, as [`tune`] tunes a conv
/// layer: every candidate run on random input and checked against the
/// reference of the two convs before it is timed. Fails for a block the
/// fused kernel does not compute ([`Dsc::unfusable`]).
pub fn tune_dsc(
    compiler: &Compiler,
    block: &Dsc,
    options: &Options,
    records: Option<&mut RecordLog>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Outcome<DscSchedule>> {
    if let Some(why) = block.unfusable() {
        return Err(Error::Block(format!("dsc: {why}: no fused kernel to tune")));
    }
    let clock = &mut measure::HostClock(Instant::now());
    session::tune_op(options, records, progress, clock, |rng| {
        dsc::DscTuning::new(compiler, block, options.threads, rng)
    })
}

/// The time since the Unix epoch (0 on a clock set before it).
fn since_epoch() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}
