//! `convjit tune`: searches a layer's schedule space and saves the best.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use convjit::blocks::DscMode;
use convjit::tune::{Options, Outcome, RecordLog, Search, TuningCache};
use convjit::{Compiler, ValidSpec, net, terminal, timing};

use super::common::{Layers, cache_file, check_threads, load_model};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    layers: Layers,
    /// A whole model (a JSON model, an ONNX file or builtin:NAME): its
    /// distinct conv kernels as the JIT compiles them (BatchNorms folded,
    /// activations fused), tuned within --budget in all, each given a
    /// share of it by its share of the model's time.
    #[arg(long, value_name = "FILE|F.onnx|builtin:NAME", conflicts_with_all = ["spec", "suite"])]
    model: Option<String>,
    /// With --model, tune again the kernels the cache already holds (by
    /// default they are skipped, so an interrupted run resumes where it
    /// stopped).
    #[arg(long, requires = "model")]
    retune: bool,
    /// With --model, how its depthwise-separable blocks run, as `net
    /// --dsc` (unfused or auto: their two convs are kernels to tune).
    #[arg(long, default_value_t = DscMode::Auto, requires = "model")]
    dsc: DscMode,
    /// Time per layer, everything included (seconds); with --model, for
    /// the whole model.
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
    let cache = if args.no_cache { None } else { Some(cache_file(args.cache.clone())?) };
    check_threads(options.threads)?;
    let compiler = super::common::host_compiler(args.isa)?;
    let (layers, budgets) = match &args.model {
        Some(model) => {
            let cached = match (&cache, args.retune) {
                (Some(path), false) => TuningCache::load(path),
                _ => TuningCache::default(),
            };
            model_layers(model, args.dsc, &compiler, &options, &cached)?
        }
        None => {
            let layers = args.layers.load()?;
            let budgets = vec![options.budget; layers.len()];
            (layers, budgets)
        }
    };
    let mut records = match &args.records {
        Some(path) => Some(RecordLog::open(path)?),
        None => None,
    };
    let mut results = Vec::with_capacity(layers.len());
    for (i, (spec, &budget)) in layers.iter().zip(&budgets).enumerate() {
        let options = Options { budget, ..options };
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

/// The least budget `tune --model` gives a kernel: one with a smaller
/// share of the model's time keeps the heuristic's schedule.
const MIN_MODEL_SHARE: Duration = Duration::from_secs(1);

/// The distinct conv kernels of `model` that `options.budget` is split
/// between, each named after the first layer that runs it, and each one's
/// budget: the total split by each kernel's share of the model's time (a
/// run of its heuristic schedules, timed step by step), kernels whose
/// share would be under [`MIN_MODEL_SHARE`] left out. Kernels `cached`
/// holds a schedule for are left out first: each run splits its budget
/// between the kernels not tuned yet.
fn model_layers(
    model: &str,
    dsc: DscMode,
    compiler: &Compiler,
    options: &Options,
    cached: &TuningCache,
) -> Result<(Vec<ValidSpec>, Vec<Duration>)> {
    let (model, tensors) = load_model(model)?;
    let network = net::Network::new(net::Graph::new(&model)?, tensors.as_ref())?;
    let net_options = net::Options { threads: options.threads, dsc, ..net::Options::default() };
    let convs = network.jit_convs(&net_options)?;
    let held = convs.iter().filter(|c| cached.lookup(&c.spec, options.threads).is_some()).count();
    if held == convs.len() {
        eprintln!(
            "{}: the cache holds all {held} of its conv kernels (--retune tunes them again)",
            terminal::escape(&model.name)
        );
        return Ok((Vec::new(), Vec::new()));
    }
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(format!("{}: timing the heuristic's schedules", model.name));
    let inputs = (network.graph().inputs().iter().enumerate())
        .map(|(k, (_, shape))| net::random_input(*shape, 1 + k as u64))
        .collect::<convjit::Result<Vec<_>>>()?;
    let xs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let report =
        network.prepare(&net_options, Some(compiler)).and_then(|mut p| p.measure_inputs(&xs, 3));
    spinner.finish_and_clear();
    let (_, report) = report?;
    let nodes = network.graph().nodes();
    // Each kernel's time: its nodes' step times, a step of two kernels
    // (an unfused block) split by their multiply-adds.
    let time = |conv: &net::JitConv| -> f64 {
        let macs = convjit::Complexity::of(&conv.spec).macs_valid as f64;
        conv.nodes
            .iter()
            .map(|&n| {
                let node = nodes[n].cost().macs_valid.max(1) as f64;
                report.layers[n].median_s * (macs / node).min(1.0)
            })
            .sum()
    };
    let mut kernels: Vec<(ValidSpec, f64)> = Vec::new();
    for conv in &convs {
        if cached.lookup(&conv.spec, options.threads).is_some() {
            continue;
        }
        let name = match conv.nodes.len() {
            1 => conv.name.clone(),
            n => format!("{} (×{n})", conv.name),
        };
        let mut named = conv.spec.to_conv_spec();
        named.name = Some(name);
        kernels.push((named.validate()?, time(conv)));
    }
    // The most time-consuming kernels, as many as the budget gives each
    // at least MIN_MODEL_SHARE when it is split between them by time.
    let mut times: Vec<f64> = kernels.iter().map(|(_, t)| *t).collect();
    times.sort_by(|a, b| b.total_cmp(a));
    let kept = (1..=times.len())
        .rev()
        .find(|&k| {
            let total: f64 = times[..k].iter().sum();
            total > 0.0 && options.budget.mul_f64(times[k - 1] / total) >= MIN_MODEL_SHARE
        })
        .unwrap_or(0);
    let least = if kept == 0 { f64::INFINITY } else { times[kept - 1] };
    let total: f64 = times[..kept].iter().sum();
    // Every kernel slower than the least kept; of those as slow as it,
    // the first in the model's order.
    let mut ties = kept - times[..kept].iter().filter(|&&t| t > least).count();
    kernels.retain(|(_, t)| {
        let tie = *t == least && ties > 0;
        ties -= usize::from(tie);
        *t > least || tie
    });
    let budgets = kernels.iter().map(|(_, t)| options.budget.mul_f64(t / total)).collect();
    if kept == 0 {
        eprintln!(
            "{}: --budget {}s gives no kernel the {}s a kernel is tuned with at least",
            terminal::escape(&model.name),
            options.budget.as_secs_f64(),
            MIN_MODEL_SHARE.as_secs()
        );
    }
    eprintln!(
        "{}: {} distinct conv kernels; {} tuned here, {held} already in the cache, {} with less \
         than {}s of the budget keep the heuristic's schedule",
        terminal::escape(&model.name),
        convs.len(),
        kernels.len(),
        convs.len() - held - kernels.len(),
        MIN_MODEL_SHARE.as_secs()
    );
    Ok((kernels.into_iter().map(|(s, _)| s).collect(), budgets))
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
