//! One op's tuning: the [`Session`] that the search, the measuring and the
//! confirmation share, and the evaluation of one candidate (compile,
//! verify, time, record).

use std::collections::HashMap;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use super::measure::{self, Clock};
use super::{Options, Outcome, Progress, Record, RecordLog, TimeSplit, Tunable, Workload};
use crate::error::{Error, Result};
use crate::stats;

/// Tunes the op `make` builds (from the search's random source, after the
/// options are checked) within `options.budget`, timing on `clock`.
pub(crate) fn tune_op<T: Tunable>(
    options: &Options,
    records: Option<&mut RecordLog>,
    progress: &mut dyn FnMut(&Progress),
    clock: &mut dyn Clock<T::Config>,
    make: impl FnOnce(&mut StdRng) -> Result<T>,
) -> Result<Outcome<T::Config>> {
    options.check()?;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let op = make(&mut rng)?;
    let reference_s = clock.elapsed().as_secs_f64();
    let mut session = Session::new(op, options, rng, records, progress, clock);
    session.time.reference_s = reference_s;
    session.evaluate_heuristic()?;
    let search = session.search();
    session.confirm(search)
}

/// A compiled candidate, ready to run.
pub(super) struct Candidate<T: Tunable> {
    pub(super) config: T::Config,
    pub(super) compiled: T::Compiled,
}

/// The candidates evaluated so far, and how many of them failed or were
/// cut.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) candidates: usize,
    pub(super) failed: usize,
    pub(super) cut: usize,
}

/// One op's tuning.
pub(super) struct Session<'a, T: Tunable> {
    pub(super) op: T,
    pub(super) options: &'a Options,
    /// The op's name, or its summary.
    pub(super) layer: String,
    workload: Workload,
    pub(super) macs: u64,
    /// When the tuning started, in milliseconds since the Unix epoch, for
    /// the records.
    started_at_ms: u64,
    /// When the tuning should end, since it started: the budget.
    pub(super) deadline: Duration,
    /// When the search stops, leaving time for the confirmation.
    pub(super) search_deadline: Duration,
    /// The heuristic's config, compiled: every candidate is timed against
    /// it.
    pub(super) anchor: Option<Candidate<T>>,
    /// Every timed run of the anchor, in order.
    pub(super) anchor_cycles: Vec<u64>,
    /// The wall time of one run of the anchor.
    pub(super) anchor_run: Duration,
    /// Timed pairs per candidate.
    pub(super) pairs: usize,
    /// Every candidate evaluated: its time over the heuristic's (`None`
    /// when it failed).
    pub(super) scores: HashMap<T::Config, Option<f64>>,
    /// The best few, compiled, fastest first, with their scores.
    pub(super) finalists: Vec<(f64, Candidate<T>)>,
    pub(super) tally: Tally,
    pub(super) time: TimeSplit,
    records: Option<&'a mut RecordLog>,
    progress: &'a mut dyn FnMut(&Progress),
    pub(super) rng: StdRng,
    pub(super) clock: &'a mut dyn Clock<T::Config>,
}

/// What evaluating one candidate found.
#[derive(Default)]
pub(super) struct Evaluation {
    pub(super) compile: Duration,
    pub(super) verify: Duration,
    pub(super) measure: Duration,
    /// TSC ticks of the first (verified) run, cold.
    pub(super) first_run: u64,
    pub(super) cycles: Vec<u64>,
    pub(super) relative: Option<f64>,
    pub(super) cut: bool,
    pub(super) error: Option<String>,
}

impl<'a, T: Tunable> Session<'a, T> {
    fn new(
        op: T,
        options: &'a Options,
        rng: StdRng,
        records: Option<&'a mut RecordLog>,
        progress: &'a mut dyn FnMut(&Progress),
        clock: &'a mut dyn Clock<T::Config>,
    ) -> Session<'a, T> {
        Session {
            layer: op.name().map_or_else(|| op.summary(), str::to_string),
            workload: op.workload(),
            macs: op.counted_macs(),
            op,
            options,
            started_at_ms: super::since_epoch().as_millis() as u64,
            deadline: options.budget,
            search_deadline: options.budget,
            anchor: None,
            anchor_cycles: Vec::new(),
            anchor_run: Duration::ZERO,
            pairs: measure::PAIRS.0,
            scores: HashMap::new(),
            finalists: Vec::new(),
            tally: Tally::default(),
            time: TimeSplit::default(),
            records,
            progress,
            rng,
            clock,
        }
    }

    /// Compiles and verifies the heuristic's config and times it alone
    /// ([`Session::plan`] sizes the rest of the tuning from that); a
    /// heuristic that fails leaves nothing to measure against.
    fn evaluate_heuristic(&mut self) -> Result<()> {
        let heuristic = self.op.heuristic();
        let mut eval = Evaluation::default();
        let Some(compiled) = self.compile_and_verify(heuristic, &mut eval) else {
            self.record("heuristic", heuristic, &eval)?;
            return Err(Error::InvalidTuning(format!(
                "the heuristic's schedule for {} failed: {}",
                self.layer,
                eval.error.unwrap_or_default()
            )));
        };
        self.time_alone(&compiled, &mut eval)?;
        self.plan(eval.measure / measure::PAIRS.0 as u32);
        self.anchor_cycles.extend(&eval.cycles);
        eval.relative = Some(1.0);
        self.time.measure_s += eval.measure.as_secs_f64();
        self.scores.insert(heuristic, Some(1.0));
        self.tally.candidates += 1;
        self.record("heuristic", heuristic, &eval)?;
        self.anchor = Some(compiled);
        self.report_progress();
        Ok(())
    }

    /// The average cost of one evaluation so far.
    pub(super) fn cost(&self) -> Duration {
        let t = &self.time;
        let spent = t.compile_s + t.verify_s + t.measure_s;
        Duration::from_secs_f64(spent / self.tally.candidates.max(1) as f64)
    }

    /// Whether another evaluation fits before the search's deadline.
    pub(super) fn time_left(&mut self) -> bool {
        self.clock.elapsed().saturating_add(self.cost()) <= self.search_deadline
    }

    /// The configs that verified, fastest first.
    pub(super) fn ranked(&self) -> Vec<(T::Config, f64)> {
        let mut ranked: Vec<(T::Config, f64)> =
            self.scores.iter().filter_map(|(s, r)| r.map(|r| (*s, r))).collect();
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| json(&a.0).cmp(&json(&b.0))));
        ranked
    }

    /// Compiles, verifies and times `config` against the heuristic's;
    /// returns its score (its time over the heuristic's), `None` when it
    /// failed. Evaluated configs are not evaluated again.
    pub(super) fn evaluate(&mut self, config: T::Config, phase: &str) -> Option<f64> {
        if let Some(&score) = self.scores.get(&config) {
            return score;
        }
        let mut eval = Evaluation::default();
        if let Some(compiled) = self.compile_and_verify(config, &mut eval) {
            self.measure(&compiled, &mut eval);
            if let Some(r) = eval.relative.filter(|_| !eval.cut) {
                self.offer(r, compiled);
            }
        }
        self.scores.insert(config, eval.relative);
        self.tally.candidates += 1;
        self.tally.failed += usize::from(eval.error.is_some());
        self.tally.cut += usize::from(eval.cut);
        if let Err(e) = self.record(phase, config, &eval) {
            log::warn!("tuning records: {e}");
        }
        self.report_progress();
        eval.relative
    }

    /// Compiles `config` and checks one run's output; `None` (with the
    /// reason in `eval.error`) when either fails.
    fn compile_and_verify(
        &mut self,
        config: T::Config,
        eval: &mut Evaluation,
    ) -> Option<Candidate<T>> {
        let started = self.clock.elapsed();
        let compiled = self.op.compile(&config);
        eval.compile = self.clock.elapsed().saturating_sub(started);
        self.time.compile_s += eval.compile.as_secs_f64();
        let compiled = match compiled {
            Ok(compiled) => Candidate { config, compiled },
            Err(e) => {
                log::error!(
                    "compiler bug: {} with the legal schedule {} does not compile: {e}",
                    self.layer,
                    json(&config)
                );
                eval.error = Some(format!("compile: {e}"));
                return None;
            }
        };
        let started = self.clock.elapsed();
        self.op.poison_output();
        let (ran, first) = self.clock.time(&config, &mut || self.op.run(&compiled.compiled));
        eval.first_run = first;
        let verdict = ran.and_then(|()| self.op.verify());
        eval.verify = self.clock.elapsed().saturating_sub(started);
        self.time.verify_s += eval.verify.as_secs_f64();
        let failure = match verdict {
            Ok(None) => return Some(compiled),
            Ok(Some(wrong)) => format!("verification: {wrong}"),
            Err(e) => format!("run: {e}"),
        };
        log::error!("compiler bug: {} with schedule {}: {failure}", self.layer, json(&config));
        eval.error = Some(failure);
        None
    }

    /// Appends `eval` of `config`, found in `phase`, to the records.
    pub(super) fn record(
        &mut self,
        phase: &str,
        config: T::Config,
        eval: &Evaluation,
    ) -> Result<()> {
        let Some(log) = self.records.as_deref_mut() else { return Ok(()) };
        let cycles = (!eval.cycles.is_empty()).then(|| stats::median_ticks(&eval.cycles));
        log.append(&Record {
            workload: self.workload.clone(),
            layer: self.op.name().map(str::to_string),
            phase: phase.to_string(),
            schedule: config,
            started_at_ms: self.started_at_ms,
            elapsed_s: self.clock.elapsed().as_secs_f64(),
            compile_ms: eval.compile.as_secs_f64() * 1e3,
            verify_ms: eval.verify.as_secs_f64() * 1e3,
            measure_ms: eval.measure.as_secs_f64() * 1e3,
            runs: eval.cycles.len(),
            cycles,
            macs_per_cycle: cycles.map(|c| self.macs as f64 / c.max(1) as f64),
            relative: eval.relative,
            cut: eval.cut,
            error: eval.error.clone(),
        })
    }

    fn report_progress(&mut self) {
        let best = self.ranked().first().map_or(1.0, |b| b.1);
        let heuristic = self.macs as f64 / self.anchor_median().max(1) as f64;
        let elapsed = self.clock.elapsed();
        (self.progress)(&Progress {
            elapsed,
            budget: self.options.budget,
            candidates: self.tally.candidates,
            best_macs_per_cycle: heuristic / best.max(1e-9),
        });
    }
}

/// A config as JSON: how logs show it and how equal scores are ordered.
pub(super) fn json(config: &impl Serialize) -> String {
    serde_json::to_string(config).expect("a config always serialises")
}
