//! Picking candidates: every member in order, a random sample, or a random
//! sample then hill climbs over neighbours (one knob changed).

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::Tunable;
use super::session::Session;
use crate::error::{Error, Result};

/// The share of the search time the local search spends sampling at random
/// before it starts climbing.
pub const RANDOM_SHARE: f64 = 0.3;

/// The local search samples at random first only when the budget has room
/// for at least this many candidates.
const MIN_SAMPLED: f64 = 150.0;

/// How a climb step must improve on the current schedule (a fraction of
/// its time) to move: smaller differences are within the noise.
const CLIMB_MARGIN: f64 = 0.01;

/// How the tuner picks candidates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Search {
    /// Exhaustive when the whole space fits the budget (judged from the
    /// cost of evaluating the heuristic's schedule), local otherwise.
    #[default]
    Auto,
    /// Every member of the space, in order, until the budget ends.
    Exhaustive,
    /// Members drawn at random without replacement.
    Random,
    /// A random sample, then hill climbs from the best found.
    Local,
}

impl fmt::Display for Search {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Search::Auto => "auto",
            Search::Exhaustive => "exhaustive",
            Search::Random => "random",
            Search::Local => "local",
        })
    }
}

impl FromStr for Search {
    type Err = Error;
    fn from_str(s: &str) -> Result<Search> {
        [Search::Auto, Search::Exhaustive, Search::Random, Search::Local]
            .into_iter()
            .find(|m| m.to_string() == s)
            .ok_or_else(|| Error::InvalidTuning(format!("unknown search strategy {s:?}")))
    }
}

impl<T: Tunable> Session<'_, T> {
    /// Runs the search; returns the strategy it used.
    pub(super) fn search(&mut self) -> Search {
        let mut order: Vec<T::Config> = self.op.members().to_vec();
        let search = match self.options.search {
            Search::Auto => self.auto(order.len()),
            other => other,
        };
        if search != Search::Exhaustive {
            order.shuffle(&mut self.rng);
        }
        let mut pool = order.into_iter();
        match search {
            Search::Local => self.local(&mut pool),
            _ => {
                let phase = if search == Search::Random { "random" } else { "exhaustive" };
                for s in pool.by_ref() {
                    if !self.time_left() {
                        break;
                    }
                    self.evaluate(s, phase);
                }
            }
        }
        search
    }

    /// Exhaustive when a space of `space` members fits the search's time,
    /// local otherwise.
    fn auto(&mut self, space: usize) -> Search {
        // A candidate timed in full costs the heuristic's compile and
        // verification plus its pairs (early cuts only make it less).
        let left = self.search_deadline.saturating_sub(self.clock.elapsed());
        let t = &self.time;
        let full =
            t.compile_s + t.verify_s + self.anchor_run.as_secs_f64() * (2 * self.pairs) as f64;
        let fits = full * space as f64 <= 0.8 * left.as_secs_f64();
        if fits { Search::Exhaustive } else { Search::Local }
    }

    /// Random sampling for [`RANDOM_SHARE`] of the search time, then hill
    /// climbs (first improvement over shuffled neighbours) from the best
    /// schedules found, each start used once; random samples again when
    /// every good start has been climbed from.
    fn local(&mut self, pool: &mut impl Iterator<Item = T::Config>) {
        let now = self.clock.elapsed();
        let left = self.search_deadline.saturating_sub(now);
        // With room for few candidates, the heuristic's neighbourhood is a
        // better bet than a random sample of a space of thousands.
        let affordable = left.as_secs_f64() / self.cost().as_secs_f64().max(1e-9);
        let share = if affordable >= MIN_SAMPLED { RANDOM_SHARE } else { 0.0 };
        let sampling_end = now.saturating_add(left.mul_f64(share));
        while self.clock.elapsed() < sampling_end && self.time_left() {
            let Some(s) = pool.next() else { break };
            self.evaluate(s, "random");
        }
        let mut climbed = HashSet::new();
        while self.time_left() {
            let start = self.ranked().into_iter().map(|(s, _)| s).find(|s| !climbed.contains(s));
            let Some(start) = start else {
                match pool.next() {
                    Some(s) => {
                        self.evaluate(s, "random");
                        continue;
                    }
                    None => break,
                }
            };
            if !self.climb(start, &mut climbed) {
                return;
            }
        }
    }

    /// One first-improvement climb from `start`, every point it stands on
    /// added to `climbed`; `false` when the search's time ran out in it.
    fn climb(&mut self, start: T::Config, climbed: &mut HashSet<T::Config>) -> bool {
        let mut current = start;
        climbed.insert(current);
        'climb: loop {
            let here = self.scores[&current].unwrap_or(f64::INFINITY);
            let neighbours = self.op.neighbours(&current);
            for s in self.knob_by_knob(neighbours, &current) {
                if self.scores.contains_key(&s) {
                    continue;
                }
                if !self.time_left() {
                    return false;
                }
                if self.evaluate(s, "local").is_some_and(|r| r < here * (1.0 - CLIMB_MARGIN)) {
                    current = s;
                    climbed.insert(s);
                    continue 'climb;
                }
            }
            return true;
        }
    }

    /// `neighbours` of `current` in an order that takes each knob in turn
    /// (the values of a knob shuffled): the register tile alone has dozens
    /// of values, and a climb with room for few candidates should try
    /// every knob early.
    fn knob_by_knob(&mut self, neighbours: Vec<T::Config>, current: &T::Config) -> Vec<T::Config> {
        let here = self.op.knobs(current);
        let mut by_knob: Vec<Vec<T::Config>> = vec![Vec::new(); here.len()];
        for n in neighbours {
            let k = self.op.knobs(&n).iter().zip(&here).position(|(a, b)| a != b);
            by_knob[k.expect("a neighbour differs in one knob")].push(n);
        }
        for values in &mut by_knob {
            values.shuffle(&mut self.rng);
        }
        by_knob.shuffle(&mut self.rng);
        let longest = by_knob.iter().map(Vec::len).max().unwrap_or(0);
        (0..longest).flat_map(|i| by_knob.iter().filter_map(move |v| v.get(i).copied())).collect()
    }
}
