//! `convjit demo`: the built-in suite on random data, a row per layer.

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use convjit::{Complexity, Engine, ValidSpec, reference, stats, suite, timing};

use super::common::{ensure_passed, validate};

#[derive(clap::Args)]
pub struct Args {
    /// The engine (default: the fastest convjit has).
    #[arg(long, default_value_t = Engine::fastest())]
    engine: Engine,
    /// Seed of the random tensors.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs of each layer the demo times; it reports their median.
const DEMO_RUNS: usize = 5;

pub fn main(args: &Args) -> Result<()> {
    let engine = args.engine;
    let mut rng = StdRng::seed_from_u64(args.seed);
    println!(
        "convjit demo: the built-in suite on random data, engine {engine}, median of {DEMO_RUNS} runs; \
         cycles are {} ticks",
        timing::CLOCK
    );
    println!(
        "{:<18} {:<11} {:<30} {:>11} {:>10} {:>9} {:>10} {:>9}",
        "layer", "kind", "shape", "MACs", "compile ms", "run ms", "MACs/cyc", "rel err"
    );
    let mut compile_ms = Vec::new();
    for spec in suite::builtin() {
        let spec = validate(&spec)?;
        let row = demo_layer(&spec, engine, &mut rng)?;
        if let Some(ms) = row.compile_ms {
            compile_ms.push(ms);
        }
        let macs = Complexity::of(&spec).macs_valid;
        println!(
            "{:<18} {:<11} {:<30} {:>11} {:>10} {:>9.2} {:>10.3} {:>9}",
            spec.name().unwrap_or("-"),
            spec.kind().to_string(),
            spec.shape_summary(),
            macs,
            row.compile_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.2}")),
            row.median.wall.as_secs_f64() * 1e3,
            row.median.macs_per_cycle(macs),
            row.rel_err.map_or_else(|| "-".to_string(), |e| format!("{e:.1e}"))
        );
    }
    if !compile_ms.is_empty() {
        let sorted = stats::sorted(compile_ms);
        println!(
            "compile (incl. weight packing): median {:.2} ms, max {:.2} ms",
            stats::quantile(&sorted, 0.5).unwrap_or(0.0),
            stats::quantile(&sorted, 1.0).unwrap_or(0.0)
        );
    }
    Ok(())
}

/// What the demo measured of one layer.
struct Row {
    /// Preparing the layer, for the jit (compiling and packing), in ms.
    compile_ms: Option<f64>,
    /// The median run.
    median: timing::Measurement,
    /// The worst relative error against the reference, but for the
    /// reference itself.
    rel_err: Option<f64>,
}

/// Prepares `spec` on random tensors, times it, and checks its output.
fn demo_layer(spec: &ValidSpec, engine: Engine, rng: &mut StdRng) -> Result<Row> {
    let x = random_tensor(rng, spec.input_len());
    let w = random_tensor(rng, spec.weight_len());
    let b = spec.has_bias().then(|| random_tensor(rng, spec.out_channels()));
    let (layer, prepared) = timing::measure(|| engine.prepare(spec, &w, b.as_deref()));
    let layer = layer?;
    let mut y = vec![0.0f32; spec.output_len()];
    let runs = if engine == Engine::Reference { 1 } else { DEMO_RUNS };
    let mut timings = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (result, took) = timing::measure(|| layer.run(&x, &mut y));
        result?;
        timings.push(took);
    }
    timings.sort_by_key(|t| t.cycles);
    let median = stats::quantile(&timings, 0.5).expect("at least one run");
    let rel_err = if engine == Engine::Reference {
        None
    } else {
        // The jit's schedule may compute through Winograd's transforms.
        let schedule = layer.schedule();
        let oracle =
            reference::Oracle::for_schedule(spec, schedule.as_ref(), &x, &w, b.as_deref())?;
        let verdict = oracle.verify(&y)?;
        ensure_passed(spec, &verdict)?;
        Some(verdict.deviation.max_rel)
    };
    let compile_ms = (engine == Engine::Jit).then_some(prepared.wall.as_secs_f64() * 1e3);
    Ok(Row { compile_ms, median, rel_err })
}

fn random_tensor(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}
