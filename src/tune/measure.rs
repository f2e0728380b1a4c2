//! Timing candidates: the clocks, the heuristic's runs alone, and each
//! candidate's runs paired with the heuristic's, cut short when it is
//! clearly slower than the best so far.

use std::time::{Duration, Instant};

use super::Tunable;
use super::session::{Candidate, Evaluation, Session};
use crate::error::Result;
use crate::{stats, timing};

/// Timed pairs after which a clearly slower candidate stops being timed.
pub const CUT_AFTER: usize = 3;

/// "Clearly slower": a median ratio this many times the best's.
pub const CUT_FACTOR: f64 = 1.25;

/// "Far slower": a first timed pair whose ratio is this many times the
/// best's ends the timing at once.
pub const CUT_FIRST: f64 = 1.6;

/// A first (cold) run this many times the best's run time ends the
/// evaluation before any timed pair.
pub const CUT_COLD: f64 = 3.0;

/// Runs of the heuristic's kernel that stand for its current time.
const RECENT: usize = 63;

/// Timed pairs per candidate: at least, at most, and the timed work per
/// candidate aimed at in between.
pub(super) const PAIRS: (usize, usize) = (3, 21);
const PAIR_TIME: Duration = Duration::from_millis(4);

/// The tuner's two clocks: the wall clock its budget is counted on, and
/// the TSC its candidates are timed with. [`super::tune`] reads the host's;
/// the tests substitute a model in which every duration is known in
/// advance, so that what the search decides from its measurements can be
/// asserted exactly rather than as a quiet machine usually gives it.
pub(crate) trait Clock<C> {
    /// Wall time since the tuning started.
    fn elapsed(&mut self) -> Duration;
    /// Calls `run`, one run of `config`'s kernel: its result and the TSC
    /// ticks it took.
    fn time(&mut self, config: &C, run: &mut dyn FnMut() -> Result<()>) -> (Result<()>, u64);
}

/// The host's clocks: `Instant` from the given start, and the TSC.
pub(super) struct HostClock(pub(super) Instant);

impl<C> Clock<C> for HostClock {
    fn elapsed(&mut self) -> Duration {
        self.0.elapsed()
    }

    fn time(&mut self, _: &C, run: &mut dyn FnMut() -> Result<()>) -> (Result<()>, u64) {
        let (result, m) = timing::measure(run);
        (result, m.cycles)
    }
}

impl<T: Tunable> Session<'_, T> {
    /// Times the heuristic's `compiled` alone, [`PAIRS`]`.0` runs.
    pub(super) fn time_alone(
        &mut self,
        compiled: &Candidate<T>,
        eval: &mut Evaluation,
    ) -> Result<()> {
        let started = self.clock.elapsed();
        for _ in 0..PAIRS.0 {
            let c = self.time_run(compiled)?;
            eval.cycles.push(c);
        }
        eval.measure = self.clock.elapsed().saturating_sub(started);
        Ok(())
    }

    /// Sets the pairs per candidate, and the search's deadline that leaves
    /// the confirmation its reserve, from one run of the heuristic's kernel.
    pub(super) fn plan(&mut self, run: Duration) {
        self.anchor_run = run;
        self.pairs = (PAIR_TIME.as_secs_f64() / (2.0 * run.as_secs_f64().max(1e-9)))
            .clamp(PAIRS.0 as f64, PAIRS.1 as f64) as usize;
        let reserve = super::confirm::reserve(run, self.options.budget);
        self.search_deadline = self.deadline.saturating_sub(reserve);
    }

    /// Times `compiled` in pairs with the heuristic's kernel.
    pub(super) fn measure(&mut self, compiled: &Candidate<T>, eval: &mut Evaluation) {
        let started = self.clock.elapsed();
        let best = self.finalists.first().map_or(1.0, |f| f.0).min(1.0);
        // Its first run, cold, already took several times the best's run:
        // no pair can make it the best.
        let first = eval.first_run as f64 / self.anchor_median().max(1) as f64;
        if first > best * CUT_COLD {
            // The one run it had is its record.
            eval.cycles.push(eval.first_run);
            eval.relative = Some(first);
            eval.cut = true;
        } else {
            self.time_pairs(compiled, best, eval);
        }
        eval.measure = self.clock.elapsed().saturating_sub(started);
        self.time.measure_s += eval.measure.as_secs_f64();
    }

    /// Up to [`Session::pairs`] pairs of runs of the heuristic's kernel and
    /// `compiled` (alternating which goes first), cut when it is far or
    /// clearly slower than `best`; its score is the median ratio.
    fn time_pairs(&mut self, compiled: &Candidate<T>, best: f64, eval: &mut Evaluation) {
        let mut ratios = Vec::with_capacity(self.pairs);
        let anchor = self.anchor.take().expect("the heuristic is evaluated first");
        for i in 0..self.pairs {
            let (a, c) = if i % 2 == 0 {
                let a = self.time_run(&anchor);
                (a, self.time_run(compiled))
            } else {
                let c = self.time_run(compiled);
                (self.time_run(&anchor), c)
            };
            let (Ok(a), Ok(c)) = (a, c) else {
                eval.error = Some("run failed while timing".into());
                break;
            };
            self.anchor_cycles.push(a);
            eval.cycles.push(c);
            ratios.push(c as f64 / a.max(1) as f64);
            if (i == 0 && ratios[0] > best * CUT_FIRST)
                || (i + 1 == CUT_AFTER && stats::median(&ratios) > best * CUT_FACTOR)
            {
                eval.cut = true;
                break;
            }
            if i + 1 >= CUT_AFTER && self.clock.elapsed() > self.search_deadline {
                break;
            }
        }
        self.anchor = Some(anchor);
        if eval.error.is_none() && !ratios.is_empty() {
            eval.relative = Some(stats::median(&ratios));
        }
    }

    /// One timed run, in TSC ticks.
    pub(super) fn time_run(&mut self, c: &Candidate<T>) -> Result<u64> {
        let (result, ticks) = self.clock.time(&c.config, &mut || self.op.run(&c.compiled));
        result.map(|()| ticks)
    }

    /// The heuristic's recent runs (the last [`RECENT`]).
    pub(super) fn recent(&self) -> &[u64] {
        &self.anchor_cycles[self.anchor_cycles.len().saturating_sub(RECENT)..]
    }

    /// The median of the anchor's recent runs: its time in the host's
    /// current state, without sorting every run so far.
    pub(super) fn anchor_median(&self) -> u64 {
        stats::median_ticks(self.recent())
    }
}
