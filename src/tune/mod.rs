//! The autotuner: searches a layer's [schedule space](crate::schedule::Space)
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

pub mod cache;
pub mod records;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::complexity::Complexity;
use crate::data::LayerData;
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::kernel::{Kernel, PackedWeights};
use crate::reference::Oracle;
use crate::schedule::{self, Schedule, Space};
use crate::spec::ValidSpec;
use crate::stats::{median as median_f64, median_ticks as median_u64};
use crate::timing;

pub use cache::{Entry, TuningCache, Workload};
pub use records::{Record, RecordLog};

/// Layers of up to this many MACs (the dense count) are verified on every
/// output element; the reference runs at about 10⁸ MACs per second, twice
/// (values and magnitudes), so this costs about 0.3 s once per layer.
pub const FULL_ORACLE_MACS: u64 = 16_000_000;

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

/// The share of the search time the local search spends sampling at random
/// before it starts climbing.
pub const RANDOM_SHARE: f64 = 0.3;

/// How much faster than the heuristic's a schedule must be in the final
/// confirmation to replace it (a fraction of the heuristic's time).
pub const CONFIRM_MARGIN: f64 = 0.02;

/// The local search samples at random first only when the budget has room
/// for at least this many candidates.
const MIN_SAMPLED: f64 = 150.0;

/// How a climb step must improve on the current schedule (a fraction of
/// its time) to move: smaller differences are within the noise.
const CLIMB_MARGIN: f64 = 0.01;

/// Runs of the heuristic's kernel that stand for its current time.
const RECENT: usize = 63;

/// Schedules besides the heuristic's that the confirmation re-times.
const FINALISTS: usize = 4;

/// The share of the budget the confirmation is planned to take, at most
/// (unless its fewest rounds take more).
const CONFIRM_SHARE: f64 = 0.1;

/// Rounds of the confirmation, at most and at least.
const CONFIRM_ROUNDS: (usize, usize) = (11, 3);

/// Timed pairs per candidate: at least, at most, and the timed work per
/// candidate aimed at in between.
const PAIRS: (usize, usize) = (3, 21);
const PAIR_TIME: Duration = Duration::from_millis(4);

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
    /// Test hook: schedules whose output is corrupted after they run, to
    /// check that a failed verification drops a candidate.
    #[cfg(test)]
    pub(crate) sabotage: Option<fn(&Schedule) -> bool>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            budget: Duration::from_secs(10),
            search: Search::Auto,
            threads: 1,
            seed: 1,
            #[cfg(test)]
            sabotage: None,
        }
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

/// The result of tuning one layer.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
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
    pub heuristic: Schedule,
    /// The heuristic's MACs (`macs_valid`) per TSC tick in the confirmation's
    /// last stage (its recent runs in the search when nothing else
    /// verified).
    pub heuristic_macs_per_cycle: f64,
    /// The best schedule: the heuristic's unless another was confirmed
    /// faster.
    pub schedule: Schedule,
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
    tune_on(compiler, spec, options, records, progress, &mut HostClock(Instant::now()))
}

/// The tuner's two clocks: the wall clock its budget is counted on, and
/// the TSC its candidates are timed with. [`tune`] reads the host's; the
/// tests substitute a model in which every duration is known in advance,
/// so that what the search decides from its measurements can be asserted
/// exactly rather than as a quiet machine usually gives it.
pub(crate) trait Clock {
    /// Wall time since the tuning started.
    fn elapsed(&mut self) -> Duration;
    /// Calls `run`, one run of `schedule`'s kernel: its result and the TSC
    /// ticks it took.
    fn time(
        &mut self,
        schedule: &Schedule,
        run: &mut dyn FnMut() -> Result<()>,
    ) -> (Result<()>, u64);
}

/// The host's clocks: `Instant` from the given start, and the TSC.
struct HostClock(Instant);

impl Clock for HostClock {
    fn elapsed(&mut self) -> Duration {
        self.0.elapsed()
    }

    fn time(&mut self, _: &Schedule, run: &mut dyn FnMut() -> Result<()>) -> (Result<()>, u64) {
        let (result, m) = timing::measure(run);
        (result, m.cycles)
    }
}

/// [`tune`] on the given clock.
pub(crate) fn tune_on<'a>(
    compiler: &'a Compiler,
    spec: &'a ValidSpec,
    options: &'a Options,
    records: Option<&'a mut RecordLog>,
    progress: &'a mut dyn FnMut(&Progress),
    clock: &'a mut dyn Clock,
) -> Result<Outcome> {
    if !(1..=schedule::MAX_THREADS).contains(&options.threads) {
        return Err(Error::InvalidThreads(options.threads));
    }
    // Deadlines are durations since the start; a budget no clock reading
    // can reach is refused rather than left to overflow later.
    if Instant::now().checked_add(options.budget).is_none() {
        return Err(Error::InvalidTuning(format!("a budget of {:?} is too large", options.budget)));
    }
    let deadline = options.budget;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let LayerData { input, weight, bias } = LayerData::random(spec, &mut rng)?;
    let output = crate::alloc::filled(spec.output_len(), f32::NAN, "the output")?;
    let oracle = match oracle_planes(spec, options.threads, &mut rng) {
        None => Oracle::new(spec, &input, &weight, bias.as_deref())?,
        Some(planes) => Oracle::of_planes(spec, &input, &weight, bias.as_deref(), &planes)?,
    };
    let heuristic = schedule::choose_threaded(spec, options.threads);
    let mut session = Session {
        compiler,
        spec,
        options,
        layer: spec.name().map_or_else(|| spec.shape_summary(), str::to_string),
        workload: Workload::host(spec, options.threads),
        macs: Complexity::of(spec).macs_valid,
        input,
        weight,
        bias,
        oracle,
        output,
        started_at_ms: since_epoch().as_millis() as u64,
        deadline,
        search_deadline: deadline,
        anchor: None,
        anchor_cycles: Vec::new(),
        anchor_run: Duration::ZERO,
        pairs: PAIRS.0,
        scores: HashMap::new(),
        finalists: Vec::new(),
        candidates: 0,
        failed: 0,
        cut: 0,
        time: TimeSplit { reference_s: clock.elapsed().as_secs_f64(), ..TimeSplit::default() },
        records,
        progress,
        rng,
        clock,
    };
    session.evaluate_heuristic(heuristic)?;
    let space = Space::of(spec, options.threads);
    let search = session.search(&space);
    session.confirm(search, space.len())
}

/// The output planes `(image, channel)` a layer's candidates are checked
/// on, or `None` for every element (layers of up to [`FULL_ORACLE_MACS`]).
/// Otherwise the first and last image, and in each: the first and last 12
/// channels (every lane of the first and last channel block of any tile,
/// and the channel tail); the first and last channel of every group (each
/// group's tail); the 12 channels on each side of where `threads` or fewer
/// threads splitting the channels would meet (the items split); and
/// channels drawn at random, as many as keep the reference near
/// [`FULL_ORACLE_MACS`]. Every pixel of a plane is checked, so borders,
/// tile tails, bands and row splits all are.
pub fn oracle_planes(
    spec: &ValidSpec,
    threads: usize,
    rng: &mut StdRng,
) -> Option<Vec<(usize, usize)>> {
    let macs = Complexity::of(spec).macs;
    if macs <= FULL_ORACLE_MACS {
        return None;
    }
    let (batch, channels) = (spec.batch(), spec.out_channels());
    let images: Vec<usize> = if batch == 1 { vec![0] } else { vec![0, batch - 1] };
    let near = |c: usize| c.saturating_sub(12)..(c + 12).min(channels);
    let mut must = std::collections::BTreeSet::new();
    must.extend(near(0));
    must.extend(near(channels));
    let per_group = spec.out_per_group();
    for g in 1..spec.groups() {
        must.extend([g * per_group - 1, g * per_group]);
    }
    for parts in 2..=threads.min(channels) {
        for t in 1..parts {
            must.extend(near(t * channels / parts));
        }
    }
    let per_plane = (macs / (batch * channels) as u64).max(1);
    let affordable = (FULL_ORACLE_MACS / per_plane / images.len() as u64) as usize;
    let mut rest: Vec<usize> = (0..channels).filter(|c| !must.contains(c)).collect();
    rest.shuffle(rng);
    let more = affordable.saturating_sub(must.len());
    let chosen: Vec<usize> = must.into_iter().chain(rest.into_iter().take(more)).collect();
    Some(images.iter().flat_map(|&n| chosen.iter().map(move |&c| (n, c))).collect())
}

/// A compiled candidate, ready to run.
struct Compiled {
    schedule: Schedule,
    kernel: Kernel,
    weights: PackedWeights,
}

/// One layer's tuning.
struct Session<'a> {
    compiler: &'a Compiler,
    spec: &'a ValidSpec,
    options: &'a Options,
    layer: String,
    workload: Workload,
    macs: u64,
    input: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    oracle: Oracle,
    output: Vec<f32>,
    /// When the tuning started, in milliseconds since the Unix epoch, for
    /// the records.
    started_at_ms: u64,
    /// When the tuning should end, since it started: the budget.
    deadline: Duration,
    /// When the search stops, leaving time for the confirmation.
    search_deadline: Duration,
    /// The heuristic's schedule, compiled: every candidate is timed
    /// against it.
    anchor: Option<Compiled>,
    /// Every timed run of the anchor, in order.
    anchor_cycles: Vec<u64>,
    /// The wall time of one run of the anchor.
    anchor_run: Duration,
    /// Timed pairs per candidate.
    pairs: usize,
    /// Every candidate evaluated: its time over the heuristic's (`None`
    /// when it failed).
    scores: HashMap<Schedule, Option<f64>>,
    /// The best few, compiled, fastest first, with their scores.
    finalists: Vec<(f64, Compiled)>,
    candidates: usize,
    failed: usize,
    cut: usize,
    time: TimeSplit,
    records: Option<&'a mut RecordLog>,
    progress: &'a mut dyn FnMut(&Progress),
    rng: StdRng,
    clock: &'a mut dyn Clock,
}

/// What evaluating one candidate found.
#[derive(Default)]
struct Evaluation {
    compile: Duration,
    verify: Duration,
    measure: Duration,
    /// TSC ticks of the first (verified) run, cold.
    first_run: u64,
    cycles: Vec<u64>,
    relative: Option<f64>,
    cut: bool,
    error: Option<String>,
}

impl Session<'_> {
    /// Compiles and verifies the heuristic's schedule, times it alone, and
    /// sets the number of pairs and the confirmation's reserve from its
    /// cost.
    fn evaluate_heuristic(&mut self, heuristic: Schedule) -> Result<()> {
        let mut eval = Evaluation::default();
        let compiled = match self.compile_and_verify(heuristic, &mut eval) {
            Some(c) => c,
            None => {
                self.record("heuristic", heuristic, &eval)?;
                return Err(Error::InvalidTuning(format!(
                    "the heuristic's schedule for {} failed: {}",
                    self.layer,
                    eval.error.unwrap_or_default()
                )));
            }
        };
        let measure = self.clock.elapsed();
        for _ in 0..PAIRS.0 {
            let c = self.time_run(&compiled)?;
            eval.cycles.push(c);
        }
        eval.measure = self.clock.elapsed().saturating_sub(measure);
        let run = eval.measure / PAIRS.0 as u32;
        self.anchor_run = run;
        self.pairs = (PAIR_TIME.as_secs_f64() / (2.0 * run.as_secs_f64().max(1e-9)))
            .clamp(PAIRS.0 as f64, PAIRS.1 as f64) as usize;
        // The confirmation times the finalists and the heuristic in rounds,
        // then the winner and the heuristic in twice as many: as many as fit
        // in a tenth of the budget, within CONFIRM_ROUNDS.
        let per_round = run * (FINALISTS + 1 + 4) as u32;
        let rounds = (CONFIRM_SHARE * self.options.budget.as_secs_f64()
            / per_round.as_secs_f64().max(1e-9))
        .clamp(CONFIRM_ROUNDS.1 as f64, CONFIRM_ROUNDS.0 as f64);
        let reserve = per_round.mul_f64(rounds);
        self.search_deadline = self.deadline.saturating_sub(reserve);
        self.anchor_cycles.extend(&eval.cycles);
        eval.relative = Some(1.0);
        self.time.measure_s += eval.measure.as_secs_f64();
        self.scores.insert(heuristic, Some(1.0));
        self.candidates += 1;
        self.record("heuristic", heuristic, &eval)?;
        self.anchor = Some(compiled);
        self.report_progress();
        Ok(())
    }

    /// Runs the search; returns the strategy it used.
    fn search(&mut self, space: &Space) -> Search {
        let mut order: Vec<Schedule> = space.members().to_vec();
        let search = match self.options.search {
            Search::Auto => {
                // A candidate timed in full costs the heuristic's compile and
                // verification plus its pairs (early cuts only make it less).
                let left = self.search_deadline.saturating_sub(self.clock.elapsed());
                let t = &self.time;
                let full = t.compile_s
                    + t.verify_s
                    + self.anchor_run.as_secs_f64() * (2 * self.pairs) as f64;
                let fits = full * space.len() as f64 <= 0.8 * left.as_secs_f64();
                if fits { Search::Exhaustive } else { Search::Local }
            }
            other => other,
        };
        if search != Search::Exhaustive {
            order.shuffle(&mut self.rng);
        }
        let mut pool = order.into_iter();
        match search {
            Search::Local => self.local(space, &mut pool),
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

    /// Random sampling for [`RANDOM_SHARE`] of the search time, then hill
    /// climbs (first improvement over shuffled neighbours) from the best
    /// schedules found, each start used once; random samples again when
    /// every good start has been climbed from.
    fn local(&mut self, space: &Space, pool: &mut impl Iterator<Item = Schedule>) {
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
            let Some(mut current) = start else {
                match pool.next() {
                    Some(s) => {
                        self.evaluate(s, "random");
                        continue;
                    }
                    None => break,
                }
            };
            climbed.insert(current);
            'climb: loop {
                let here = self.scores[&current].unwrap_or(f64::INFINITY);
                for s in self.knob_by_knob(space.neighbours(&current), &current) {
                    if self.scores.contains_key(&s) {
                        continue;
                    }
                    if !self.time_left() {
                        return;
                    }
                    if self.evaluate(s, "local").is_some_and(|r| r < here * (1.0 - CLIMB_MARGIN)) {
                        current = s;
                        climbed.insert(s);
                        continue 'climb;
                    }
                }
                break;
            }
        }
    }

    /// `neighbours` of `current` in an order that takes each knob in turn
    /// (the values of a knob shuffled): the register tile alone has dozens
    /// of values, and a climb with room for few candidates should try
    /// every knob early.
    fn knob_by_knob(&mut self, neighbours: Vec<Schedule>, current: &Schedule) -> Vec<Schedule> {
        let here = Space::knobs(current);
        let mut by_knob: Vec<Vec<Schedule>> = vec![Vec::new(); here.len()];
        for n in neighbours {
            let k = Space::knobs(&n).iter().zip(&here).position(|(a, b)| a != b);
            by_knob[k.expect("a neighbour differs in one knob")].push(n);
        }
        for values in &mut by_knob {
            values.shuffle(&mut self.rng);
        }
        by_knob.shuffle(&mut self.rng);
        let longest = by_knob.iter().map(Vec::len).max().unwrap_or(0);
        (0..longest).flat_map(|i| by_knob.iter().filter_map(move |v| v.get(i).copied())).collect()
    }

    /// The median of the anchor's recent runs (the last [`RECENT`]): its
    /// time in the host's current state, without sorting every run so far.
    fn anchor_median(&self) -> u64 {
        median_u64(&self.anchor_cycles[self.anchor_cycles.len().saturating_sub(RECENT)..])
    }

    /// The schedules that verified, fastest first.
    fn ranked(&self) -> Vec<(Schedule, f64)> {
        let mut ranked: Vec<(Schedule, f64)> =
            self.scores.iter().filter_map(|(s, r)| r.map(|r| (*s, r))).collect();
        ranked.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.to_json().cmp(&b.0.to_json())));
        ranked
    }

    /// The average cost of one evaluation so far.
    fn cost(&self) -> Duration {
        let t = &self.time;
        let spent = t.compile_s + t.verify_s + t.measure_s;
        Duration::from_secs_f64(spent / self.candidates.max(1) as f64)
    }

    /// Whether another evaluation fits before the search's deadline.
    fn time_left(&mut self) -> bool {
        self.clock.elapsed().saturating_add(self.cost()) <= self.search_deadline
    }

    /// Compiles, verifies and times `schedule` against the heuristic's;
    /// returns its score (its time over the heuristic's), `None` when it
    /// failed. Evaluated schedules are not evaluated again.
    fn evaluate(&mut self, schedule: Schedule, phase: &str) -> Option<f64> {
        if let Some(&score) = self.scores.get(&schedule) {
            return score;
        }
        let mut eval = Evaluation::default();
        if let Some(compiled) = self.compile_and_verify(schedule, &mut eval) {
            self.measure(&compiled, &mut eval);
            if let Some(r) = eval.relative.filter(|_| !eval.cut) {
                self.offer(r, compiled);
            }
        }
        self.scores.insert(schedule, eval.relative);
        self.candidates += 1;
        self.failed += usize::from(eval.error.is_some());
        self.cut += usize::from(eval.cut);
        if let Err(e) = self.record(phase, schedule, &eval) {
            log::warn!("tuning records: {e}");
        }
        self.report_progress();
        eval.relative
    }

    /// Compiles `schedule` and checks one run's output; `None` (with the
    /// reason in `eval.error`) when either fails.
    fn compile_and_verify(
        &mut self,
        schedule: Schedule,
        eval: &mut Evaluation,
    ) -> Option<Compiled> {
        let started = self.clock.elapsed();
        let compiled = self.compiler.compile_with(self.spec, &schedule).and_then(|kernel| {
            let weights = kernel.pack(&self.weight, self.bias.as_deref())?;
            Ok(Compiled { schedule, kernel, weights })
        });
        eval.compile = self.clock.elapsed().saturating_sub(started);
        self.time.compile_s += eval.compile.as_secs_f64();
        let compiled = match compiled {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "compiler bug: {} with the legal schedule {} does not compile: {e}",
                    self.layer,
                    schedule.to_json()
                );
                eval.error = Some(format!("compile: {e}"));
                return None;
            }
        };
        let started = self.clock.elapsed();
        self.output.fill(f32::NAN); // an element no run writes fails
        let (ran, first) = self.clock.time(&schedule, &mut || {
            compiled.kernel.run(&self.input, &compiled.weights, &mut self.output)
        });
        eval.first_run = first;
        let verdict = ran.and_then(|()| {
            #[cfg(test)]
            if self.options.sabotage.is_some_and(|bad| bad(&schedule)) {
                self.output[0] += 1.0;
            }
            self.oracle.verify(&self.output)
        });
        eval.verify = self.clock.elapsed().saturating_sub(started);
        self.time.verify_s += eval.verify.as_secs_f64();
        let failure = match verdict {
            Ok(v) if v.passed() => return Some(compiled),
            Ok(v) => format!(
                "verification: output element {} is {:.2}× past its error bound",
                v.worst.unwrap_or(0),
                v.worst_ratio
            ),
            Err(e) => format!("run: {e}"),
        };
        log::error!("compiler bug: {} with schedule {}: {failure}", self.layer, schedule.to_json());
        eval.error = Some(failure);
        None
    }

    /// Times `compiled` in pairs with the heuristic's kernel.
    fn measure(&mut self, compiled: &Compiled, eval: &mut Evaluation) {
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
            eval.measure = self.clock.elapsed().saturating_sub(started);
            self.time.measure_s += eval.measure.as_secs_f64();
            return;
        }
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
                || (i + 1 == CUT_AFTER && median_f64(&ratios) > best * CUT_FACTOR)
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
            eval.relative = Some(median_f64(&ratios));
        }
        eval.measure = self.clock.elapsed().saturating_sub(started);
        self.time.measure_s += eval.measure.as_secs_f64();
    }

    /// One timed run, in TSC ticks.
    fn time_run(&mut self, c: &Compiled) -> Result<u64> {
        let (result, ticks) = self
            .clock
            .time(&c.schedule, &mut || c.kernel.run(&self.input, &c.weights, &mut self.output));
        result.map(|()| ticks)
    }

    /// Keeps `compiled` among the finalists if it is one of the fastest.
    fn offer(&mut self, score: f64, compiled: Compiled) {
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
    fn confirm(mut self, search: Search, space: usize) -> Result<Outcome> {
        let started = self.clock.elapsed();
        let anchor = self.anchor.take().expect("the heuristic is evaluated first");
        let finalists = std::mem::take(&mut self.finalists);
        let mut contestants: Vec<&Compiled> = vec![&anchor];
        contestants.extend(finalists.iter().map(|f| &f.1));
        // The time left, shared by the two stages in proportion to their
        // runs per round (the validation takes two rounds per selection's).
        let left = self.deadline.saturating_sub(self.clock.elapsed());
        let per_round = self.anchor_run * (contestants.len() + 4) as u32;
        let rounds = (left.as_secs_f64() / per_round.as_secs_f64().max(1e-9))
            .clamp(CONFIRM_ROUNDS.1 as f64, CONFIRM_ROUNDS.0 as f64) as usize;
        let recent = self.anchor_cycles[self.anchor_cycles.len().saturating_sub(RECENT)..].to_vec();
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
        let heuristic_median = median_u64(&heuristic_cycles);
        let per_cycle = |m: f64| self.macs as f64 / m.max(1.0);
        Ok(Outcome {
            layer: self.layer.clone(),
            search,
            space,
            candidates: self.candidates,
            failed: self.failed,
            cut: self.cut,
            checked_elements: self.oracle.checked(),
            output_elements: self.spec.output_len(),
            seconds: seconds.as_secs_f64(),
            time: self.time,
            heuristic: anchor.schedule,
            heuristic_macs_per_cycle: per_cycle(heuristic_median as f64),
            schedule: contestants[winner].schedule,
            tuned_macs_per_cycle: per_cycle(heuristic_median as f64) * speedup,
            speedup,
        })
    }

    /// The confirmation's two stages on `contestants` (the heuristic's
    /// first): the winner's index, its speedup over the heuristic, and the
    /// heuristic's runs in the last stage.
    fn select_and_validate(
        &mut self,
        contestants: &[&Compiled],
        rounds: usize,
    ) -> Result<(usize, f64, Vec<u64>)> {
        let (scores, cycles) = self.rounds(contestants, rounds)?;
        for (c, (score, cycles)) in contestants.iter().zip(scores.iter().zip(&cycles)) {
            self.record_confirm("select", c.schedule, cycles, 1.0 / score);
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
            self.record_confirm("validate", c.schedule, cycles, 1.0 / score);
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
        kernels: &[&Compiled],
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
                median_f64(&ratios)
            })
            .collect();
        Ok((scores, cycles))
    }

    /// Records a kernel's runs in one stage of the confirmation.
    fn record_confirm(&mut self, stage: &str, schedule: Schedule, cycles: &[u64], relative: f64) {
        let eval = Evaluation {
            cycles: cycles.to_vec(),
            relative: Some(relative),
            ..Evaluation::default()
        };
        if let Err(e) = self.record(&format!("confirm-{stage}"), schedule, &eval) {
            log::warn!("tuning records: {e}");
        }
    }

    fn record(&mut self, phase: &str, schedule: Schedule, eval: &Evaluation) -> Result<()> {
        let Some(log) = self.records.as_deref_mut() else { return Ok(()) };
        let cycles = (!eval.cycles.is_empty()).then(|| median_u64(&eval.cycles));
        log.append(&Record {
            workload: self.workload.clone(),
            layer: self.spec.name().map(str::to_string),
            phase: phase.to_string(),
            schedule,
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
            candidates: self.candidates,
            best_macs_per_cycle: heuristic / best.max(1e-9),
        });
    }
}

/// The time since the Unix epoch (0 on a clock set before it).
fn since_epoch() -> Duration {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default()
}
