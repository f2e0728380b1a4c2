//! The benchmark harness behind `convjit bench`: every engine on every layer
//! of a suite, on the same random data, in one process, against the
//! [ceiling](mod@crate::ceiling) sampled throughout the same run.
//!
//! Per layer and engine: prepare (timed: for the JIT that is compiling and
//! packing the weights), one untimed warm-up run, then timed runs until
//! there are at least [`Options::min_runs`] of them and [`Options::min_time`]
//! of work, or [`Options::cap_runs`] runs and 5 × `min_time` for engines so
//! slow that more would not change the median (the naive loop nest on big
//! layers). Every engine's output is checked against the
//! [reference](crate::reference) before its figures count: a fast wrong
//! kernel fails the bench.
//!
//! Cycles are TSC ticks ([`timing::CLOCK`]); MACs are `macs_valid`
//! (DESIGN.md contract 4), the work a kernel must do.

mod plot;

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use crate::ceiling::{self, Ceiling};
use crate::complexity::Complexity;
use crate::data::LayerData;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::reference::Oracle;
use crate::spec::ValidSpec;
use crate::target::Isa;
use crate::{stats, timing};

pub use crate::machine::Machine;
pub use plot::plot_svg;

/// What to run and how long.
#[derive(Clone, Debug)]
pub struct Options {
    /// The engines, in the order reports list them.
    pub engines: Vec<Engine>,
    /// Threads each engine may use (engines that do not split work use one;
    /// each result says how many it used).
    pub threads: usize,
    /// Timed work per layer and engine, at least.
    pub min_time: Duration,
    /// Timed runs per layer and engine, at least (within the cap).
    pub min_runs: usize,
    /// Runs after which an engine stops once it has spent 5 × `min_time`.
    pub cap_runs: usize,
    /// Check every engine's output against the reference.
    pub check: bool,
    /// Seed of the random tensors.
    pub seed: u64,
    /// The compiler of the JIT engine (default: the host's, with heuristic
    /// schedules); one with a tuning cache runs the tuned schedules.
    pub compiler: Option<Compiler>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            engines: vec![Engine::Jit, Engine::Naive, Engine::Im2col],
            threads: 1,
            min_time: Duration::from_millis(500),
            min_runs: 10,
            cap_runs: 3,
            check: true,
            seed: 1,
            compiler: None,
        }
    }
}

/// The longest `min_time` the CLI takes: an hour of timed work per layer
/// and engine. (The library takes any; past this it only runs longer.)
pub const MAX_MIN_TIME: Duration = Duration::from_secs(3600);

/// A whole benchmark run: DESIGN.md contract 5 (fields may be added, never
/// renamed).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The machine it ran on.
    pub machine: Machine,
    /// The clock cycles are counted with.
    pub clock: &'static str,
    /// The measured ceiling's median over every sample of the run, MACs
    /// per TSC tick: with the widest vector ISA the host has.
    pub ceiling_macs_per_cycle: f64,
    /// The measured ceiling in full (median, best, worst sample).
    pub ceiling: Ceiling,
    /// The vector ISA of the ceiling: the host's widest.
    pub ceiling_isa: Isa,
    /// The ceiling of Cranelift's f32x4 tile, sampled beside it.
    pub ceiling_f32x4: Ceiling,
    /// Threads the engines were allowed.
    pub threads: usize,
    /// One result per layer and engine, layer by layer.
    pub results: Vec<Outcome>,
}

/// One engine on one layer.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The layer's name (or its shape when it has none).
    pub layer: String,
    /// The layer's kind (standard, depthwise, transposed, ...).
    pub kind: String,
    /// The engine.
    pub engine: Engine,
    /// Threads the engine used.
    pub threads: usize,
    /// The JIT's schedule (absent for other engines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::Schedule>,
    /// Timed runs.
    pub runs: usize,
    /// Median wall time of a run, seconds.
    pub median_s: f64,
    /// Fastest run, seconds.
    pub min_s: f64,
    /// Slowest run, seconds.
    pub max_s: f64,
    /// Interquartile range of the run times over the median: the spread.
    pub spread: f64,
    /// Median TSC ticks of a run.
    pub median_cycles: u64,
    /// `macs_valid` of the layer.
    pub macs_valid: u64,
    /// `macs_valid` per TSC tick of the median run.
    pub macs_per_cycle: f64,
    /// 2 · `macs_valid` per second of the median run, in 10⁹.
    pub gflops: f64,
    /// `macs_per_cycle` as a percentage of `layer_ceiling`.
    pub pct_of_ceiling: f64,
    /// The ceiling while this layer was measured: the median of the
    /// samples taken between its rounds, MACs per TSC tick.
    pub layer_ceiling: f64,
    /// Time to compile code for the layer, milliseconds: the JIT's
    /// lowering, Cranelift and linking; 0 for engines that compile nothing.
    pub compile_ms: f64,
    /// Time to prepare the layer, milliseconds: compiling (the JIT) and
    /// taking or packing the weights.
    pub prepare_ms: f64,
    /// This engine's median over the JIT's: how many times faster the JIT
    /// is (absent on the JIT's own row, or when the JIT did not run).
    pub jit_speedup: Option<f64>,
    /// Normwise relative error against the reference (absent unchecked).
    pub max_rel_error: Option<f64>,
}

/// Where a run is, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// Measuring the ceiling.
    Ceiling,
    /// Computing the reference output of a layer.
    Reference {
        /// The layer.
        layer: &'a str,
    },
    /// Running an engine on a layer.
    Engine {
        /// The layer.
        layer: &'a str,
        /// The engine.
        engine: Engine,
    },
    /// One engine finished one layer.
    Done,
}

/// Runs the benchmark of `specs`, telling `progress` where it is.
pub fn run(
    specs: &[ValidSpec],
    options: &Options,
    mut progress: impl FnMut(Progress),
) -> Result<Report> {
    if options.threads == 0 {
        return Err(Error::InvalidThreads(0));
    }
    let machine = Machine::detect();
    progress(Progress::Ceiling);
    // The ceiling is sampled before the first layer and between the rounds
    // of every layer (`measure_layer`); the report's ceiling is the median
    // of all the samples.
    let mut meter = ceiling::Meter::new(&Compiler::host()?)?;
    let mut samples: Vec<ceiling::Sample> =
        (0..CEILING_SAMPLES_FIRST).map(|_| meter.sample()).collect();
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut results = Vec::with_capacity(specs.len() * options.engines.len());
    for spec in specs {
        let layer = spec.name().map_or_else(|| spec.shape_summary(), str::to_string);
        let data = LayerData::random(spec, &mut rng)?;
        let oracle = if options.check {
            progress(Progress::Reference { layer: &layer });
            Some(Oracle::new(spec, &data.input, &data.weight, data.bias.as_deref())?)
        } else {
            None
        };
        let run = LayerRun { name: &layer, spec, data: &data, oracle: oracle.as_ref() };
        let (mut outcomes, ceiling_here) = measure_layer(&run, options, &mut meter, &mut progress)?;
        samples.extend(&ceiling_here);
        let here: Vec<f64> = ceiling_here.iter().map(|s| s.widest).collect();
        let local = Ceiling::of(&here).macs_per_cycle;
        for r in &mut outcomes {
            r.layer_ceiling = local;
            r.pct_of_ceiling = 100.0 * r.macs_per_cycle / local;
        }
        if let Some(jit) = outcomes.iter().find(|r| r.engine == Engine::Jit) {
            let jit_median = jit.median_s;
            for r in outcomes.iter_mut().filter(|r| r.engine != Engine::Jit) {
                r.jit_speedup = Some(r.median_s / jit_median);
            }
        }
        results.extend(outcomes);
    }
    let widest: Vec<f64> = samples.iter().map(|s| s.widest).collect();
    let f32x4: Vec<f64> = samples.iter().map(|s| s.f32x4).collect();
    let ceiling = Ceiling::of(&widest);
    Ok(Report {
        machine,
        clock: timing::CLOCK,
        ceiling_macs_per_cycle: ceiling.macs_per_cycle,
        ceiling,
        ceiling_isa: meter.isa(),
        ceiling_f32x4: Ceiling::of(&f32x4),
        threads: options.threads,
        results,
    })
}

/// One layer of a run, as every engine sees it.
struct LayerRun<'a> {
    name: &'a str,
    spec: &'a ValidSpec,
    data: &'a LayerData,
    oracle: Option<&'a Oracle>,
}

/// Ceiling samples before the first layer.
const CEILING_SAMPLES_FIRST: usize = 5;

/// Time each engine runs for in one round of a layer (at least one run).
const SLICE: Duration = Duration::from_millis(25);

/// One engine of one layer while it is being measured.
struct Timing {
    engine: Engine,
    prepared: Box<dyn crate::engine::Prepared>,
    preparation: timing::Measurement,
    output: Vec<f32>,
    samples: Vec<timing::Measurement>,
    spent: Duration,
}

impl Timing {
    fn done(&self, options: &Options) -> bool {
        let n = self.samples.len();
        let enough = n >= options.min_runs && self.spent >= options.min_time;
        let capped = n >= options.cap_runs && self.spent >= options.min_time.saturating_mul(5);
        enough || capped
    }
}

/// Measures every engine on one layer, in rounds: each round gives every
/// engine that still needs runs a slice of about [`SLICE`] (at least one
/// run) and then takes one ceiling sample, until every engine has enough.
/// So a slow or fast spell of the host falls on every engine and on the
/// ceiling alike, and the ratios between them hold. Returns the outcomes
/// (`pct_of_ceiling` and `jit_speedup` left for the caller) and the
/// ceiling samples taken.
fn measure_layer(
    layer: &LayerRun,
    options: &Options,
    meter: &mut ceiling::Meter,
    progress: &mut impl FnMut(Progress),
) -> Result<(Vec<Outcome>, Vec<ceiling::Sample>)> {
    let LayerRun { name, spec, data, .. } = *layer;
    let mut timings = Vec::with_capacity(options.engines.len());
    for &engine in &options.engines {
        progress(Progress::Engine { layer: name, engine });
        let (prepared, preparation) = timing::measure(|| {
            let compiler = options.compiler.as_ref();
            engine.prepare_with(compiler, spec, &data.weight, data.bias.as_deref(), options.threads)
        });
        let prepared = prepared?;
        // NaN: an element no run writes fails the check.
        let mut output = crate::alloc::filled(spec.output_len(), f32::NAN, "the output")?;
        prepared.run(&data.input, &mut output)?; // warm-up: pages, caches, scratch
        timings.push(Timing {
            engine,
            prepared,
            preparation,
            output,
            samples: Vec::new(),
            spent: Duration::ZERO,
        });
    }
    let mut ceiling_samples = vec![meter.sample()];
    while timings.iter().any(|t| !t.done(options)) {
        for t in timings.iter_mut().filter(|t| !t.done(options)) {
            let start = Instant::now();
            loop {
                let (result, m) = timing::measure(|| t.prepared.run(&data.input, &mut t.output));
                result?;
                t.samples.push(m);
                if start.elapsed() >= SLICE || t.done(options) {
                    break;
                }
            }
            t.spent += start.elapsed();
        }
        ceiling_samples.push(meter.sample());
    }
    let mut outcomes = Vec::with_capacity(timings.len());
    for t in timings {
        outcomes.push(outcome(layer, &t)?);
        progress(Progress::Done);
    }
    Ok((outcomes, ceiling_samples))
}

/// The outcome of one engine on one layer, its output checked.
fn outcome(layer: &LayerRun, t: &Timing) -> Result<Outcome> {
    let LayerRun { name, spec, oracle, data } = *layer;
    let max_rel_error = match oracle {
        Some(oracle) => {
            // A schedule through Winograd's transforms is held to their
            // bound (`Oracle::for_schedule`), every other to the direct one.
            let winograd = t.prepared.schedule().and_then(|s| s.winograd);
            let widened = match winograd {
                Some(w) => Some(oracle.clone().widened(
                    spec,
                    &w.transform(spec),
                    &data.input,
                    &data.weight,
                    data.bias.as_deref(),
                )?),
                None => None,
            };
            let verdict = widened.as_ref().unwrap_or(oracle).verify(&t.output)?;
            if !verdict.passed() {
                return Err(Error::CheckFailed {
                    layer: name.to_string(),
                    engine: t.engine.to_string(),
                    element: verdict.worst.unwrap_or(0),
                    ratio: verdict.worst_ratio,
                });
            }
            Some(verdict.deviation.max_rel)
        }
        None => None,
    };
    let macs = Complexity::of(spec).macs_valid;
    let stats = Stats::of(&t.samples);
    let macs_per_cycle = macs as f64 / stats.median_cycles.max(1) as f64;
    Ok(Outcome {
        layer: name.to_string(),
        kind: spec.kind().to_string(),
        engine: t.engine,
        threads: t.prepared.threads(),
        schedule: t.prepared.schedule(),
        runs: t.samples.len(),
        median_s: stats.median_s,
        min_s: stats.min_s,
        max_s: stats.max_s,
        spread: stats.iqr_s / stats.median_s.max(f64::MIN_POSITIVE),
        median_cycles: stats.median_cycles,
        macs_valid: macs,
        macs_per_cycle,
        gflops: 2.0 * macs as f64 / stats.median_s.max(f64::MIN_POSITIVE) / 1e9,
        pct_of_ceiling: f64::NAN,
        layer_ceiling: f64::NAN,
        compile_ms: t.prepared.compile_time().unwrap_or_default().as_secs_f64() * 1e3,
        prepare_ms: t.preparation.wall.as_secs_f64() * 1e3,
        jit_speedup: None,
        max_rel_error,
    })
}

/// Seconds as milliseconds with at least four significant digits for runs
/// of microseconds.
fn milliseconds(seconds: f64) -> String {
    let ms = seconds * 1e3;
    if ms >= 1.0 { format!("{ms:.3}") } else { format!("{ms:.5}") }
}

/// Order statistics of the timed runs, by nearest rank ([`stats::quantile`]).
struct Stats {
    median_s: f64,
    min_s: f64,
    max_s: f64,
    iqr_s: f64,
    median_cycles: u64,
}

impl Stats {
    fn of(samples: &[timing::Measurement]) -> Stats {
        let walls = stats::sorted(samples.iter().map(|m| m.wall.as_secs_f64()));
        let mut cycles: Vec<u64> = samples.iter().map(|m| m.cycles).collect();
        cycles.sort_unstable();
        let at = |q: f64| stats::quantile(&walls, q).expect("a timed run");
        Stats {
            median_s: at(0.5),
            min_s: at(0.0),
            max_s: at(1.0),
            iqr_s: at(0.75) - at(0.25),
            median_cycles: stats::quantile(&cycles, 0.5).expect("a timed run"),
        }
    }
}

impl Report {
    /// The human table: one row per layer and engine, then the geometric
    /// mean of the JIT's speedups. Column `jit ×` is this engine's median
    /// time over the JIT's: above 1 the JIT is faster.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "machine: {} ({}), TSC {:.3} GHz", m.cpu, m.isa, m.tsc_hz / 1e9);
        let _ = writeln!(
            out,
            "ceiling ({} register tile, data in L1): {:.2} MACs/cycle (samples {:.2}–{:.2}); \
             f32x4 (Cranelift) {:.2}; cycles are {} ticks; MACs are macs_valid",
            self.ceiling_isa,
            self.ceiling.macs_per_cycle,
            self.ceiling.worst_macs_per_cycle,
            self.ceiling.best_macs_per_cycle,
            self.ceiling_f32x4.macs_per_cycle,
            self.clock
        );
        let _ = writeln!(
            out,
            "{:<18} {:<11} {:<9} {:>3} {:>5} {:>11} {:>7} {:>13} {:>9} {:>8} {:>7} {:>9} {:>10} {:>8}",
            "layer",
            "kind",
            "engine",
            "thr",
            "runs",
            "median ms",
            "spread",
            "MACs",
            "MACs/cyc",
            "GFLOP/s",
            "% ceil",
            "jit ×",
            "compile ms",
            "prep ms"
        );
        let mut previous = "";
        for r in &self.results {
            let (layer, kind) =
                if r.layer == previous { ("", "") } else { (r.layer.as_str(), r.kind.as_str()) };
            previous = &r.layer;
            let speedup = r.jit_speedup.map_or_else(|| "-".to_string(), |s| format!("{s:.2}×"));
            let _ = writeln!(
                out,
                "{:<18} {:<11} {:<9} {:>3} {:>5} {:>11} {:>6.1}% {:>13} {:>9.3} {:>8.2} {:>6.1}% {:>9} {:>10.2} {:>8.2}",
                crate::terminal::escape(layer),
                kind,
                r.engine.to_string(),
                r.threads,
                r.runs,
                milliseconds(r.median_s),
                r.spread * 100.0,
                r.macs_valid,
                r.macs_per_cycle,
                r.gflops,
                r.pct_of_ceiling,
                speedup,
                r.compile_ms,
                r.prepare_ms
            );
        }
        for engine in self.engines().into_iter().filter(|&e| e != Engine::Jit) {
            let speedups: Vec<f64> = self
                .results
                .iter()
                .filter(|r| r.engine == engine)
                .filter_map(|r| r.jit_speedup)
                .collect();
            if speedups.is_empty() {
                continue;
            }
            let geomean =
                (speedups.iter().map(|s| s.ln()).sum::<f64>() / speedups.len() as f64).exp();
            let (lo, hi) = speedups
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), &s| (lo.min(s), hi.max(s)));
            let _ = writeln!(
                out,
                "jit × over {engine}: geometric mean {geomean:.2}× over {} layers (from {lo:.2}× to \
                 {hi:.2}×; above 1 the jit is faster)",
                speedups.len()
            );
        }
        out
    }

    /// The engines in the report, in order of first appearance.
    pub fn engines(&self) -> Vec<Engine> {
        let mut engines = Vec::new();
        for r in &self.results {
            if !engines.contains(&r.engine) {
                engines.push(r.engine);
            }
        }
        engines
    }

    /// The layers in the report, in order.
    pub fn layers(&self) -> Vec<&str> {
        let mut layers: Vec<&str> = Vec::new();
        for r in &self.results {
            if layers.last() != Some(&r.layer.as_str()) {
                layers.push(&r.layer);
            }
        }
        layers
    }
}
