//! The confirmation: the few best candidates re-timed with the heuristic's
//! in interleaved rounds, and the winner re-timed against it alone, afresh,
//! before it may replace it.

use std::time::Duration;

use super::session::{Candidate, Evaluation, Session};
use super::{Outcome, Search, Tunable};
use crate::error::Result;
use crate::stats;

/// How much faster than the heuristic's a schedule must be in the final
/// confirmation to replace it (a fraction of the heuristic's time).
pub const CONFIRM_MARGIN: f64 = 0.02;

/// Schedules besides the heuristic's that the confirmation re-times.
pub(super) const FINALISTS: usize = 4;

/// The share of the budget the confirmation is planned to take, at most
/// (unless its fewest rounds take more).
const CONFIRM_SHARE: f64 = 0.1;

/// Rounds of the confirmation, at most and at least.
pub(super) const CONFIRM_ROUNDS: (usize, usize) = (11, 3);

/// The time the search leaves the confirmation, from one `run` of the
/// heuristic's kernel: it times the finalists and the heuristic in rounds,
/// then the winner and the heuristic in twice as many: as many as fit in
/// [`CONFIRM_SHARE`] of the `budget`, within [`CONFIRM_ROUNDS`].
pub(super) fn reserve(run: Duration, budget: Duration) -> Duration {
    let per_round = run * (FINALISTS + 1 + 4) as u32;
    let rounds = (CONFIRM_SHARE * budget.as_secs_f64() / per_round.as_secs_f64().max(1e-9))
        .clamp(CONFIRM_ROUNDS.1 as f64, CONFIRM_ROUNDS.0 as f64);
    per_round.mul_f64(rounds)
}

/// The winner among the contestants (the heuristic's at 0), its speedup
/// over the heuristic, and the heuristic's runs in the last stage.
type Verdict = (usize, f64, Vec<u64>);

impl<T: Tunable> Session<'_, T> {
    /// Keeps `compiled` among the finalists if it is one of the fastest.
    pub(super) fn offer(&mut self, score: f64, compiled: Candidate<T>) {
        let at = self.finalists.partition_point(|f| f.0 <= score);
        if at < FINALISTS {
            self.finalists.insert(at, (score, compiled));
            self.finalists.truncate(FINALISTS);
        }
    }

    /// Picks the winner in two stages, each timing kernels in interleaved
    /// rounds (the order rotating) and scoring each by the median over the
    /// rounds of the heuristic's time over its own:
    /// 1. **select**: the finalists and the heuristic; the best score wins
    ///    the stage;
    /// 2. **validate**: that winner against the heuristic alone, afresh. The
    ///    winner of a stage is the best of several noisy scores, so its own
    ///    score flatters it; a fresh sample does not. It replaces the
    ///    heuristic only if it is [`CONFIRM_MARGIN`] faster here too.
    pub(super) fn confirm(mut self, search: Search) -> Result<Outcome<T::Config>> {
        let started = self.clock.elapsed();
        let anchor = self.anchor.take().expect("the heuristic is evaluated first");
        let finalists = std::mem::take(&mut self.finalists);
        let mut contestants: Vec<&Candidate<T>> = vec![&anchor];
        contestants.extend(finalists.iter().map(|f| &f.1));
        // The time left, shared by the two stages in proportion to their
        // runs per round (the validation takes two rounds per selection's).
        let left = self.deadline.saturating_sub(self.clock.elapsed());
        let per_round = self.anchor_run * (contestants.len() + 4) as u32;
        let rounds = (left.as_secs_f64() / per_round.as_secs_f64().max(1e-9))
            .clamp(CONFIRM_ROUNDS.1 as f64, CONFIRM_ROUNDS.0 as f64) as usize;
        let recent = self.recent().to_vec();
        let (winner, speedup, heuristic_cycles) = if contestants.len() == 1 {
            (0, 1.0, recent)
        } else {
            match self.select_and_validate(&contestants, rounds) {
                Ok(found) => found,
                // A run cannot fail once it has run (lengths and weights are
                // the same every time); if one does, keep the heuristic.
                Err(e) => {
                    log::error!("tuning {}: a run failed in the confirmation: {e}", self.layer);
                    (0, 1.0, recent)
                }
            }
        };
        let seconds = self.clock.elapsed();
        self.time.confirm_s = seconds.saturating_sub(started).as_secs_f64();
        let heuristic_median = stats::median_ticks(&heuristic_cycles);
        let heuristic_macs_per_cycle = self.macs as f64 / (heuristic_median as f64).max(1.0);
        Ok(Outcome {
            layer: self.layer.clone(),
            search,
            space: self.op.members().len(),
            candidates: self.tally.candidates,
            failed: self.tally.failed,
            cut: self.tally.cut,
            checked_elements: self.op.checked(),
            output_elements: self.op.output_len(),
            seconds: seconds.as_secs_f64(),
            time: self.time,
            heuristic: anchor.config,
            heuristic_macs_per_cycle,
            schedule: contestants[winner].config,
            tuned_macs_per_cycle: heuristic_macs_per_cycle * speedup,
            speedup,
        })
    }

    /// The confirmation's two stages on `contestants` (the heuristic's
    /// first).
    fn select_and_validate(
        &mut self,
        contestants: &[&Candidate<T>],
        rounds: usize,
    ) -> Result<Verdict> {
        let (scores, cycles) = self.rounds(contestants, rounds)?;
        for (c, (score, cycles)) in contestants.iter().zip(scores.iter().zip(&cycles)) {
            self.record_confirm("select", c.config, cycles, 1.0 / score);
        }
        let best = (1..contestants.len())
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .expect("a finalist");
        if scores[best] < 1.0 + CONFIRM_MARGIN {
            // Not even flattered by its selection: the heuristic stays.
            return Ok((0, 1.0, cycles[0].clone()));
        }
        let pair = [contestants[0], contestants[best]];
        let (scores, cycles) = self.rounds(&pair, 2 * rounds + 1)?;
        for (c, (score, cycles)) in pair.iter().zip(scores.iter().zip(&cycles)) {
            self.record_confirm("validate", c.config, cycles, 1.0 / score);
        }
        if scores[1] >= 1.0 + CONFIRM_MARGIN {
            Ok((best, scores[1], cycles[0].clone()))
        } else {
            Ok((0, 1.0, cycles[0].clone()))
        }
    }

    /// Times `kernels` in `rounds` interleaved rounds (each round in a
    /// rotated order); returns each one's score (the median over rounds of
    /// the first kernel's time over its own) and its runs' ticks.
    fn rounds(
        &mut self,
        kernels: &[&Candidate<T>],
        rounds: usize,
    ) -> Result<(Vec<f64>, Vec<Vec<u64>>)> {
        let mut cycles = vec![Vec::with_capacity(rounds); kernels.len()];
        for round in 0..rounds {
            for k in 0..kernels.len() {
                let i = (k + round) % kernels.len();
                cycles[i].push(self.time_run(kernels[i])?);
            }
        }
        let scores = cycles
            .iter()
            .map(|own| {
                let ratios: Vec<f64> =
                    cycles[0].iter().zip(own).map(|(&h, &c)| h as f64 / c.max(1) as f64).collect();
                stats::median(&ratios)
            })
            .collect();
        Ok((scores, cycles))
    }

    /// Records a kernel's runs in one stage of the confirmation.
    fn record_confirm(&mut self, stage: &str, config: T::Config, cycles: &[u64], relative: f64) {
        let eval = Evaluation {
            cycles: cycles.to_vec(),
            relative: Some(relative),
            ..Evaluation::default()
        };
        if let Err(e) = self.record(&format!("confirm-{stage}"), config, &eval) {
            log::warn!("tuning records: {e}");
        }
    }
}
