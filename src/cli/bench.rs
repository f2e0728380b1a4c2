//! `convjit bench`: engines on a layer or a suite against the ceiling.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use convjit::bench::{self, Options};
use convjit::{Compiler, Engine, ValidSpec, atomic, terminal};

use super::common::{Layers, cache_file};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    layers: Layers,
    /// The engines, comma-separated, in the order to report them.
    #[arg(long, value_delimiter = ',', default_values_t = [Engine::Jit, Engine::Naive, Engine::Im2col])]
    engines: Vec<Engine>,
    /// Threads each engine may use.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed work per layer and engine, at least (seconds).
    #[arg(long, default_value_t = 0.5)]
    min_time: f64,
    /// Skip checking every output against the reference.
    #[arg(long)]
    no_check: bool,
    /// Seed of the random tensors.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print JSON (DESIGN.md contract 5) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write an SVG bar chart of MACs/cycle per layer and engine.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<PathBuf>,
    /// Also write the JSON report to a file (the table still prints).
    #[arg(long, value_name = "OUT.json")]
    json_out: Option<PathBuf>,
    /// Run the jit with the schedules `convjit tune` saved (the
    /// heuristic's for layers the cache does not hold).
    #[arg(long)]
    tuned: bool,
    /// The tuning cache --tuned reads (default: convjit/tuning.json in
    /// the user's cache directory).
    #[arg(long, value_name = "FILE", requires = "tuned")]
    cache: Option<PathBuf>,
    /// The widest vector ISA of the jit's register tiles: avx512, avx2 or
    /// sse (default: the widest the host has).
    #[arg(long)]
    isa: Option<convjit::schedule::Isa>,
}

pub fn main(args: Args) -> Result<()> {
    let Some(min_time) =
        Duration::try_from_secs_f64(args.min_time).ok().filter(|t| *t <= bench::MAX_MIN_TIME)
    else {
        bail!("--min-time must be a number of seconds from 0 to {}", bench::MAX_MIN_TIME.as_secs());
    };
    let mut options = Options {
        engines: args.engines,
        threads: args.threads,
        min_time,
        check: !args.no_check,
        seed: args.seed,
        ..Options::default()
    };
    let tuned = if args.tuned { Some(cache_file(args.cache)?) } else { None };
    let layers = args.layers.load()?;
    let compiler = super::common::host_compiler(args.isa)?;
    options.compiler = Some(match &tuned {
        Some(cache) => tuned_compiler(compiler, &layers, cache, options.threads)?,
        None => compiler,
    });
    // Refuse an unwritable file before the run, not after minutes of it.
    for path in args.plot.iter().chain(&args.json_out) {
        atomic::check(path)?;
    }
    if options.engines.is_empty() {
        bail!("--engines: give at least one engine");
    }
    let report = run(&layers, &options)?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.plot {
        let svg = bench::plot_svg(&report)?;
        atomic::write(path, |file| file.write_all(svg.as_bytes()))?;
    }
    if let Some(path) = &args.json_out {
        atomic::write(path, |file| writeln!(file, "{json}"))?;
    }
    if args.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `compiler` with the tuning cache at `cache`, after saying how many of
/// the layers it holds.
fn tuned_compiler(
    compiler: Compiler,
    layers: &[ValidSpec],
    cache: &Path,
    threads: usize,
) -> Result<Compiler> {
    let compiler = compiler.with_tuning_cache(cache);
    let held = layers.iter().filter(|l| compiler.tuned_schedule(l, threads).is_some()).count();
    eprintln!(
        "jit schedules: {held} of {} layers tuned ({}), the heuristic's for the rest",
        layers.len(),
        terminal::escape(&cache.display().to_string())
    );
    Ok(compiler)
}

/// The benchmark, with a progress bar.
fn run(layers: &[ValidSpec], options: &Options) -> Result<bench::Report> {
    let steps = (layers.len() * options.engines.len()) as u64;
    let bar = ProgressBar::new(steps).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}")
            .expect("a valid template"),
    );
    let report = bench::run(layers, options, |step| match step {
        bench::Progress::Ceiling => bar.set_message("measuring the ceiling"),
        bench::Progress::Reference { layer } => {
            bar.set_message(format!("{}: reference", terminal::escape(layer)));
        }
        bench::Progress::Engine { layer, engine } => {
            bar.set_message(format!("{}: {engine}", terminal::escape(layer)));
        }
        bench::Progress::Done => bar.inc(1),
    });
    bar.finish_and_clear();
    Ok(report?)
}
