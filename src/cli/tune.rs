//! `convjit tune`: searches a layer's schedule space and saves the best.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use convjit::tune::{Options, Outcome, RecordLog, Search, TuningCache};
use convjit::{Compiler, ValidSpec, terminal, timing};

use super::common::{Layers, cache_file, check_threads};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    layers: Layers,
    /// Time per layer, everything included (seconds).
    #[arg(long, default_value_t = 10.0)]
    budget: f64,
    /// How to pick candidates: auto (exhaustive when the space fits the
    /// budget, else local), exhaustive, random or local.
    #[arg(long, default_value_t = Search::Auto)]
    strategy: Search,
    /// The tuning cache to update (default: convjit/tuning.json in the
    /// user's cache directory).
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Do not write the tuning cache.
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
    /// Append every evaluated candidate to this file, a JSON line each.
    #[arg(long, value_name = "FILE")]
    records: Option<PathBuf>,
    /// The most threads a schedule may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of the test data and of the search.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON (DESIGN.md contract 5) instead of the table.
    #[arg(long)]
    json: bool,
    /// The widest vector ISA of the jit's register tiles: avx512, avx2 or
    /// sse (default: the widest the host has).
    #[arg(long)]
    isa: Option<convjit::schedule::Isa>,
}

/// The JSON report (`--json`).
#[derive(Serialize)]
struct TuneReport<'a> {
    budget_s: f64,
    threads: usize,
    cache: Option<&'a Path>,
    results: &'a [Outcome],
}

pub fn main(args: Args) -> Result<()> {
    let Some(budget) = Duration::try_from_secs_f64(args.budget).ok().filter(|b| !b.is_zero())
    else {
        bail!("--budget must be a number of seconds > 0");
    };
    let options = Options { budget, search: args.strategy, threads: args.threads, seed: args.seed };
    let cache = if args.no_cache { None } else { Some(cache_file(args.cache)?) };
    let layers = args.layers.load()?;
    check_threads(options.threads)?;
    let mut records = match &args.records {
        Some(path) => Some(RecordLog::open(path)?),
        None => None,
    };
    let compiler = super::common::host_compiler(args.isa)?;
    let mut results = Vec::with_capacity(layers.len());
    for (i, spec) in layers.iter().enumerate() {
        let outcome = tune_layer(&compiler, spec, (i, layers.len()), &options, records.as_mut())?;
        if let Some(path) = &cache {
            TuningCache::update(path, outcome.entry(spec, options.threads))?;
        }
        results.push(outcome);
    }
    if args.json {
        let report = TuneReport {
            budget_s: options.budget.as_secs_f64(),
            threads: options.threads,
            cache: cache.as_deref(),
            results: &results,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    print_table(&results);
    if let Some(path) = &cache {
        println!("tuning cache: {}", terminal::escape(&path.display().to_string()));
    }
    Ok(())
}

/// Tunes `spec`, layer `i + 1` of `count`, with a progress bar.
fn tune_layer(
    compiler: &Compiler,
    spec: &ValidSpec,
    (i, count): (usize, usize),
    options: &Options,
    records: Option<&mut RecordLog>,
) -> Result<Outcome> {
    let name = spec.name().map_or_else(|| spec.shape_summary(), str::to_string);
    let bar = ProgressBar::new(options.budget.as_millis() as u64).with_style(
        ProgressStyle::with_template("{prefix} {bar:30} {elapsed:>4}/{msg}")
            .expect("a valid template"),
    );
    bar.set_prefix(format!("[{}/{count}] {:<18}", i + 1, terminal::escape(&name)));
    let outcome = convjit::tune::tune(compiler, spec, options, records, &mut |p| {
        bar.set_position(p.elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{:.0}s  {} candidates, best {:.2} MACs/tick",
            p.budget.as_secs_f64(),
            p.candidates,
            p.best_macs_per_cycle
        ));
    });
    bar.finish_and_clear();
    outcome.with_context(|| format!("tuning {name}"))
}

/// The human table: a row per layer, then each layer's best schedule.
fn print_table(results: &[Outcome]) {
    println!(
        "{:<18} {:<10} {:>6} {:>6} {:>5} {:>4} {:>7}  {:>5} {:>5} {:>5} {:>5} {:>5}  {:>9} {:>7} {:>7}",
        "layer",
        "search",
        "space",
        "tried",
        "cut",
        "bad",
        "seconds",
        "ref",
        "comp",
        "verif",
        "meas",
        "conf",
        "heuristic",
        "tuned",
        "speedup"
    );
    for r in results {
        let t = r.time;
        println!(
            "{:<18} {:<10} {:>6} {:>6} {:>5} {:>4} {:>7.1}  {:>5.1} {:>5.1} {:>5.1} {:>5.1} {:>5.1}  {:>9.2} {:>7.2} {:>6.2}×",
            terminal::escape(&r.layer),
            r.search.to_string(),
            r.space,
            r.candidates,
            r.cut,
            r.failed,
            r.seconds,
            t.reference_s,
            t.compile_s,
            t.verify_s,
            t.measure_s,
            t.confirm_s,
            r.heuristic_macs_per_cycle,
            r.tuned_macs_per_cycle,
            r.speedup
        );
    }
    println!(
        "MACs (macs_valid) per {} tick, medians of the final interleaved timing; times in seconds.",
        timing::CLOCK
    );
    for r in results {
        println!("{}: {}", terminal::escape(&r.layer), r.schedule.to_json());
    }
}
