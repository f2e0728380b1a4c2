//! The tuner on a model clock: every run of a schedule takes the ticks a
//! cost function gives it, and the wall clock moves only by those runs and
//! by a fixed step at each of the tuner's own readings. What the search
//! decides from its measurements (which schedule wins, what is cut, when
//! the budget ends it) is then exact, so it is asserted exactly; the
//! kernels still run and are still verified against the reference.

use std::collections::HashSet;
use std::rc::Rc;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::Space;
use super::confirm::{CONFIRM_ROUNDS, FINALISTS};
use super::conv::ConvTuning;
use super::measure::{Clock, PAIRS};
use super::*;
use crate::complexity::Complexity;

/// How far the wall clock moves at each reading the tuner takes: the
/// model's stand-in for compiling, packing and checking.
const STEP: Duration = Duration::from_micros(100);

/// A clock on which a run of a schedule takes `cost(schedule)` TSC ticks,
/// one nanosecond each.
struct ModelClock<F> {
    now: Duration,
    cost: F,
}

impl<F: Fn(&Schedule) -> u64> ModelClock<F> {
    fn new(cost: F) -> ModelClock<F> {
        ModelClock { now: Duration::ZERO, cost }
    }
}

impl<F: Fn(&Schedule) -> u64> Clock<Schedule> for ModelClock<F> {
    fn elapsed(&mut self) -> Duration {
        self.now += STEP;
        self.now
    }

    fn time(
        &mut self,
        schedule: &Schedule,
        run: &mut dyn FnMut() -> Result<()>,
    ) -> (Result<()>, u64) {
        let ticks = (self.cost)(schedule);
        self.now += Duration::from_nanos(ticks);
        (run(), ticks)
    }
}

fn layer(json: &str) -> ValidSpec {
    crate::ConvSpec::from_json(json).unwrap().validate().unwrap()
}

/// A 1×1 depthwise layer on a 3×3 image: a space of a few dozen
/// schedules, each compiled in a moment.
fn tiny() -> ValidSpec {
    layer(
        r#"{"op": "conv2d", "in_channels": 4, "out_channels": 4, "height": 3, "width": 3,
            "kernel": 1, "groups": 4}"#,
    )
}

/// A small dense layer: a space of thousands.
fn small() -> ValidSpec {
    layer(
        r#"{"name": "small", "op": "conv2d", "in_channels": 16, "out_channels": 24,
            "height": 20, "width": 20, "kernel": 3, "padding": 1}"#,
    )
}

fn options(budget: Duration, search: Search) -> Options {
    Options { budget, search, ..Options::default() }
}

/// Tunes on `clock`, writing the records to a file; returns the outcome
/// and the records.
fn tune_model(
    spec: &ValidSpec,
    options: &Options,
    clock: &mut dyn Clock<Schedule>,
) -> (Outcome, Vec<Record>) {
    let compiler = Compiler::host().unwrap();
    tune_recorded(options, clock, |rng| ConvTuning::new(&compiler, spec, options.threads, rng))
}

/// Tunes the op `make` builds on `clock`, writing the records to a file;
/// returns the outcome and the records.
fn tune_recorded<T: Tunable<Config = Schedule>>(
    options: &Options,
    clock: &mut dyn Clock<Schedule>,
    make: impl FnOnce(&mut StdRng) -> Result<T>,
) -> (Outcome, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    let mut log = RecordLog::open(&path).unwrap();
    let outcome =
        session::tune_op(options, Some(&mut log), &mut |_| {}, clock, make).expect("tunes");
    drop(log);
    let (records, skipped) = records::read(&path).unwrap();
    assert_eq!(skipped, 0);
    (outcome, records)
}

/// The records of the search proper (the confirmation's left out).
fn searched(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|r| !r.phase.starts_with("confirm")).collect()
}

#[test]
fn schedules_that_differ_only_in_their_run_share_one_kernel() {
    let compiler = Compiler::host().unwrap();
    let spec = small();
    let mut rng = StdRng::seed_from_u64(1);
    let mut layer = ConvTuning::new(&compiler, &spec, 2, &mut rng).unwrap();
    let one = crate::schedule::choose(&spec);
    let two = Schedule { run: crate::schedule::Run::threads(2), ..one };
    let (a, b) = (layer.compile(&one).unwrap(), layer.compile(&two).unwrap());
    assert!(Rc::ptr_eq(&a.0, &b.0), "one code, one kernel");
    assert_eq!((a.1, b.1), (one.run, two.run));
    // Each run still computes the layer on the shared kernel.
    for compiled in [&a, &b] {
        layer.poison_output();
        layer.run(compiled).unwrap();
        assert_eq!(layer.verify().unwrap(), None, "{:?}", compiled.1);
    }
    // Another code is another kernel.
    let nest = match one.loop_nest {
        crate::schedule::LoopNest::ChannelsOuter => crate::schedule::LoopNest::RowsOuter,
        _ => crate::schedule::LoopNest::ChannelsOuter,
    };
    let other = layer.compile(&Schedule { loop_nest: nest, ..one }).unwrap();
    assert!(!Rc::ptr_eq(&a.0, &other.0));
    // An illegal run is refused even when its code is compiled already.
    let bad = Schedule { run: crate::schedule::Run::threads(0), ..one };
    assert!(layer.compile(&bad).is_err());
}

#[test]
fn fused_schedules_that_differ_only_in_their_threads_share_one_kernel() {
    use crate::codegen::dsc::DscSchedule;
    let compiler = Compiler::host().unwrap();
    let block = crate::blocks::Dsc::mobilenet_v2((16, 14, 1, 8), 2).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut op = super::dsc::DscTuning::new(&compiler, &block, 2, &mut rng).unwrap();
    let heuristic = op.heuristic();
    let (one, two) =
        (DscSchedule { threads: 1, ..heuristic }, DscSchedule { threads: 2, ..heuristic });
    let (a, b) = (op.compile(&one).unwrap(), op.compile(&two).unwrap());
    assert!(Rc::ptr_eq(&a.0, &b.0), "one code, one kernel");
    assert_eq!((a.1, b.1), (1, 2));
    for compiled in [&a, &b] {
        op.poison_output();
        op.run(compiled).unwrap();
        assert_eq!(op.verify().unwrap(), None, "{} threads", compiled.1);
    }
    let other = op.compile(&DscSchedule { pw_unroll: 1 + heuristic.pw_unroll % 4, ..one }).unwrap();
    assert!(!Rc::ptr_eq(&a.0, &other.0));
    assert!(op.compile(&DscSchedule { threads: 0, ..one }).is_err());
}

#[test]
fn exhaustive_search_finds_the_fastest_schedule_and_cuts_the_slow_ones() {
    let spec = tiny();
    let space = Space::of(&spec, 1);
    let heuristic = schedule::choose(&spec);
    let fastest = space.members()[space.len() / 3];
    assert_ne!(fastest, heuristic);
    // The heuristic's schedule need not be a member: it is evaluated
    // first either way.
    let index = |s: &Schedule| space.members().iter().position(|m| m == s).unwrap_or(1);
    // The heuristic's runs take 10 000 ticks; the fastest half that; every
    // seventh other schedule four times that (its cold run is past
    // CUT_COLD times the best's); the rest a little more than the
    // heuristic's.
    let cost = |s: &Schedule| -> u64 {
        let i = index(s);
        if *s == heuristic {
            10_000
        } else if *s == fastest {
            5_000
        } else if i % 7 == 0 {
            40_000
        } else {
            10_100 + 10 * (i % 40) as u64
        }
    };
    let slow = space
        .members()
        .iter()
        .filter(|s| **s != heuristic && **s != fastest && index(s) % 7 == 0)
        .count();
    let (outcome, records) = tune_model(
        &spec,
        &options(Duration::from_secs(60), Search::Auto),
        &mut ModelClock::new(cost),
    );

    // `auto` sees that the whole space fits the budget.
    assert_eq!(outcome.search, Search::Exhaustive);
    let extra = usize::from(!space.contains(&heuristic));
    assert_eq!((outcome.space, outcome.candidates), (space.len(), space.len() + extra));
    let tried: HashSet<Schedule> = searched(&records).iter().map(|r| r.schedule).collect();
    assert_eq!(tried.len(), outcome.candidates);
    assert!(space.members().iter().all(|s| tried.contains(s)));
    assert_eq!(records[0].phase, "heuristic");

    assert_eq!(outcome.failed, 0);
    // The four-times-slower are cut after their cold run, which is their
    // record; once the fastest is found, the rest are cut after one pair,
    // 1.6 times its time.
    let cut: Vec<&Record> = searched(&records).into_iter().filter(|r| r.cut).collect();
    assert_eq!(outcome.cut, cut.len());
    let cold: Vec<&&Record> = cut.iter().filter(|r| r.relative == Some(4.0)).collect();
    assert_eq!(cold.len(), slow);
    for r in cold {
        assert_eq!((index(&r.schedule) % 7, r.runs), (0, 1), "{r:?}");
    }
    let after_fastest = records.iter().skip_while(|r| r.schedule != fastest).skip(1);
    for r in after_fastest.filter(|r| !r.phase.starts_with("confirm")) {
        assert!(r.cut && r.runs == 1, "{r:?}");
    }

    // Twice as fast in every round of the confirmation: exactly 2.
    assert_eq!(outcome.heuristic, heuristic);
    assert_eq!(outcome.schedule, fastest);
    assert_eq!(outcome.speedup, 2.0);
    let macs = Complexity::of(&spec).macs_valid as f64;
    assert_eq!(outcome.heuristic_macs_per_cycle, macs / 10_000.0);
    assert_eq!(outcome.tuned_macs_per_cycle, 2.0 * macs / 10_000.0);
    let entry = outcome.entry(&spec, 1);
    assert_eq!((entry.schedule, entry.macs_per_cycle), (fastest, outcome.tuned_macs_per_cycle));
    // Both stages of the confirmation are recorded.
    for stage in ["confirm-select", "confirm-validate"] {
        let winner = records.iter().find(|r| r.phase == stage && r.schedule == fastest);
        assert_eq!(winner.and_then(|r| r.relative), Some(0.5), "{stage}");
    }
}

#[test]
fn a_schedule_within_the_margin_does_not_replace_the_heuristic() {
    let spec = tiny();
    let space = Space::of(&spec, 1);
    let heuristic = schedule::choose(&spec);
    let best = space.members()[space.len() / 2];
    assert_ne!(best, heuristic);
    // The heuristic's runs take 100 000 ticks, `best`'s `ticks`, the rest
    // more.
    let run = |ticks: u64| {
        let cost = move |s: &Schedule| -> u64 {
            if *s == heuristic {
                100_000
            } else if *s == best {
                ticks
            } else {
                110_000
            }
        };
        let options = options(Duration::from_secs(60), Search::Exhaustive);
        tune_model(&spec, &options, &mut ModelClock::new(cost)).0
    };
    assert_eq!(CONFIRM_MARGIN, 0.02);
    let within = run(99_000);
    assert_eq!((within.schedule, within.speedup), (heuristic, 1.0));
    assert_eq!(within.tuned_macs_per_cycle, within.heuristic_macs_per_cycle);
    let beyond = run(96_000);
    assert_eq!(beyond.schedule, best);
    assert_eq!(beyond.speedup, 100_000.0 / 96_000.0);
}

#[test]
fn every_search_keeps_to_its_budget() {
    let spec = small();
    let budget = Duration::from_millis(300);
    // Runs of about a millisecond, no two schedules alike.
    let cost = |s: &Schedule| -> u64 {
        let knobs = Space::knobs(s);
        let spread = knobs.iter().enumerate().map(|(k, v)| (k as u64 + 3) * v).sum::<u64>();
        950_000 + spread % 100_000
    };
    let longest_run = Duration::from_nanos(1_050_000);
    // What the budget may be overrun by: the evaluation under way when
    // the search's time ends (its cold run and every pair, and the clock
    // readings around them) and the confirmation's fewest rounds (every
    // finalist and the heuristic, then the winner and the heuristic in
    // twice as many rounds and one).
    let evaluation = longest_run * (1 + 2 * PAIRS.1 as u32) + STEP * 64;
    let rounds = CONFIRM_ROUNDS.1 as u32;
    let confirmation = longest_run * ((FINALISTS as u32 + 1) * rounds + 2 * (2 * rounds + 1));
    let most = budget + evaluation + confirmation;
    for search in [Search::Local, Search::Random, Search::Exhaustive] {
        let (outcome, records) =
            tune_model(&spec, &options(budget, search), &mut ModelClock::new(cost));
        assert_eq!(outcome.search, search);
        let seconds = Duration::from_secs_f64(outcome.seconds);
        assert!(seconds <= most, "{search}: {seconds:?}, at most {most:?}");
        // The budget holds dozens of evaluations of a few milliseconds.
        assert!(outcome.candidates > 20, "{search}: {} candidates", outcome.candidates);
        assert!(outcome.candidates < outcome.space);
        assert_eq!(searched(&records).len(), outcome.candidates);
        // The last evaluation ended within one evaluation of the budget.
        let last = searched(&records).last().unwrap().elapsed_s;
        assert!(last <= (budget + evaluation).as_secs_f64(), "{search}: {last} s");
        // The same seed on the same clock makes the same choices.
        let (again, again_records) =
            tune_model(&spec, &options(budget, search), &mut ModelClock::new(cost));
        assert_eq!((again.schedule, again.candidates), (outcome.schedule, outcome.candidates));
        let order = |r: &[Record]| r.iter().map(|r| r.schedule).collect::<Vec<_>>();
        assert_eq!(order(&again_records), order(&records));
    }
    // A budget below one evaluation evaluates the heuristic's alone.
    let (outcome, _) = tune_model(
        &spec,
        &options(Duration::from_millis(1), Search::Auto),
        &mut ModelClock::new(cost),
    );
    assert_eq!((outcome.candidates, outcome.schedule), (1, outcome.heuristic));
}

/// A layer whose output is corrupted after every run of the schedules
/// `bad` picks: a compiler bug, as the verification sees one.
struct Sabotaged<'a> {
    layer: ConvTuning<'a>,
    bad: &'a dyn Fn(&Schedule) -> bool,
}

impl<'a> Tunable for Sabotaged<'a> {
    type Config = Schedule;
    /// Whether the schedule is sabotaged, and its kernel.
    type Compiled = (bool, <ConvTuning<'a> as Tunable>::Compiled);

    fn name(&self) -> Option<&str> {
        self.layer.name()
    }
    fn summary(&self) -> String {
        self.layer.summary()
    }
    fn workload(&self) -> Workload {
        self.layer.workload()
    }
    fn counted_macs(&self) -> u64 {
        self.layer.counted_macs()
    }
    fn heuristic(&self) -> Schedule {
        self.layer.heuristic()
    }
    fn members(&self) -> &[Schedule] {
        self.layer.members()
    }
    fn neighbours(&self, s: &Schedule) -> Vec<Schedule> {
        self.layer.neighbours(s)
    }
    fn knobs(&self, s: &Schedule) -> Vec<u64> {
        self.layer.knobs(s)
    }
    fn compile(&self, s: &Schedule) -> Result<Self::Compiled> {
        Ok(((self.bad)(s), self.layer.compile(s)?))
    }
    fn poison_output(&mut self) {
        self.layer.poison_output();
    }
    fn run(&mut self, (bad, compiled): &Self::Compiled) -> Result<()> {
        self.layer.run(compiled)?;
        if *bad {
            self.layer.output[0] += 1.0;
        }
        Ok(())
    }
    fn verify(&self) -> Result<Option<String>> {
        self.layer.verify()
    }
    fn checked(&self) -> usize {
        self.layer.checked()
    }
    fn output_len(&self) -> usize {
        self.layer.output_len()
    }
}

/// Builds `spec`'s op with the schedules `bad` picks sabotaged.
fn sabotaged<'a>(
    compiler: &'a Compiler,
    spec: &'a ValidSpec,
    bad: &'a dyn Fn(&Schedule) -> bool,
) -> impl FnOnce(&mut StdRng) -> Result<Sabotaged<'a>> {
    move |rng| Ok(Sabotaged { layer: ConvTuning::new(compiler, spec, 1, rng)?, bad })
}

/// A candidate whose output is wrong is dropped, logged in the records
/// with the reason, and never returned (so never cached).
#[test]
fn a_schedule_that_fails_verification_is_never_chosen() {
    let spec = layer(
        r#"{"op": "conv2d", "in_channels": 8, "out_channels": 12, "height": 12,
            "width": 12, "kernel": 3, "padding": 1}"#,
    );
    let heuristic = schedule::choose(&spec);
    // Every schedule but the heuristic's computes a wrong output.
    let not_heuristic = |s: &Schedule| *s != heuristic;
    // The sabotaged schedules would be twice as fast.
    let cost = |s: &Schedule| if *s == heuristic { 200_000 } else { 100_000 };
    let options = options(Duration::from_millis(400), Search::Random);
    let compiler = Compiler::host().unwrap();
    let make = sabotaged(&compiler, &spec, &not_heuristic);
    let (outcome, records) = tune_recorded(&options, &mut ModelClock::new(cost), make);
    assert_eq!(outcome.schedule, heuristic);
    assert!(outcome.candidates > 1, "{} candidates", outcome.candidates);
    assert_eq!(outcome.failed, outcome.candidates - 1);
    let failed: Vec<&Record> = records.iter().filter(|r| r.error.is_some()).collect();
    assert_eq!(failed.len(), outcome.failed);
    for r in failed {
        assert!(r.error.as_ref().unwrap().contains("past its error bound"), "{r:?}");
        assert_eq!(r.relative, None);
    }
    assert_eq!(outcome.entry(&spec, 1).schedule, heuristic);

    // When the heuristic's own output is wrong, there is nothing to
    // measure against: tuning fails with the reason.
    let make = sabotaged(&compiler, &spec, &|_| true);
    let err = session::tune_op(&options, None, &mut |_| {}, &mut ModelClock::new(cost), make)
        .unwrap_err();
    assert!(err.to_string().contains("heuristic"), "{err}");
}
