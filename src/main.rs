//! The `convjit` command line (DESIGN.md, contract 3).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use convjit::bench::{self, Options as BenchOptions};
use convjit::blocks::DscMode;
use convjit::net;
use convjit::reference;
use convjit::schedule::{self, Schedule};
use convjit::tune::{Options as TuneOptions, RecordLog, Search, TuningCache};
use convjit::{
    Compiler, Complexity, ConvSpec, Engine, ValidSpec, atomic, files, npy, suite, terminal, timing,
};
use indicatif::{ProgressBar, ProgressStyle};

/// convjit: a shape-specialising JIT compiler for convolution layers.
#[derive(Parser)]
#[command(name = "convjit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one layer on tensors from .npy files and writes the output.
    Run {
        /// The spec: a JSON file, or the JSON text itself.
        #[arg(long)]
        spec: String,
        /// Input tensor, float32 [N, C_in, H, W].
        #[arg(long)]
        input: PathBuf,
        /// Weights in PyTorch's layout.
        #[arg(long)]
        weight: PathBuf,
        /// Bias [C_out], required exactly when the spec has a bias.
        #[arg(long)]
        bias: Option<PathBuf>,
        /// Where to write the output, float32 [N, C_out, H_out, W_out].
        #[arg(long)]
        output: PathBuf,
        /// The engine (default: the fastest convjit has).
        #[arg(long, default_value_t = Engine::fastest())]
        engine: Engine,
        /// Also run the reference and print the worst absolute and relative
        /// error; fail past the tolerance (docs/correctness.md).
        #[arg(long)]
        check: bool,
        /// Compile the jit's kernel in the checked lowering: every load and
        /// store is tested against its buffer's bounds, and an access
        /// outside is reported as an error instead of made (several times
        /// slower; docs/correctness.md).
        #[arg(long)]
        checked: bool,
        /// Print cycles, MACs/cycle, compile time and the schedule (jit).
        #[arg(long)]
        stats: bool,
        /// A schedule JSON file for the jit engine (default: the heuristic's).
        #[arg(long, conflicts_with = "tuned")]
        schedule: Option<PathBuf>,
        /// Threads the engine may use (for the jit: overrides the schedule's;
        /// with --tuned, the schedule tuned for this many threads).
        #[arg(long)]
        threads: Option<usize>,
        /// Use the schedule `convjit tune` saved for this layer (the
        /// heuristic's when the cache has none).
        #[arg(long)]
        tuned: bool,
        /// The tuning cache --tuned reads (default: convjit/tuning.json in
        /// the user's cache directory).
        #[arg(long, value_name = "FILE", requires = "tuned")]
        cache: Option<PathBuf>,
    },
    /// Prints the schedule, the Cranelift IR and optionally the machine code
    /// of a layer's kernel.
    Ir {
        /// The spec: a JSON file, or the JSON text itself.
        #[arg(long)]
        spec: String,
        /// A schedule JSON file (default: the heuristic's).
        #[arg(long)]
        schedule: Option<PathBuf>,
        /// Also print the machine code.
        #[arg(long)]
        asm: bool,
    },
    /// Prints the complexity report of a layer or of a suite.
    Macs {
        /// The spec: a JSON file, or the JSON text itself.
        #[arg(long, conflicts_with = "suite", required_unless_present = "suite")]
        spec: Option<String>,
        /// A suite file: a JSON list of specs.
        #[arg(long)]
        suite: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Benchmarks engines on a layer or a suite (default: the built-in
    /// suite) against the ceiling sampled throughout the run.
    Bench {
        /// The spec: a JSON file, or the JSON text itself.
        #[arg(long, conflicts_with = "suite")]
        spec: Option<String>,
        /// A suite file: a JSON list of specs (default: the built-in suite).
        #[arg(long)]
        suite: Option<PathBuf>,
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
    },
    /// Searches the schedule space of a layer or a suite (default: the
    /// built-in suite) for the fastest schedule, verifying every candidate,
    /// and saves the best in the tuning cache.
    Tune {
        /// The spec: a JSON file, or the JSON text itself.
        #[arg(long, conflicts_with = "suite")]
        spec: Option<String>,
        /// A suite file: a JSON list of specs (default: the built-in suite).
        #[arg(long)]
        suite: Option<PathBuf>,
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
    },
    /// Runs a whole model layer by layer (docs/networks.md): every layer's
    /// shape, parameters, MACs and median time, and the totals.
    Net {
        /// The model: a JSON file, or builtin:NAME (mobilenetv2, resnet18,
        /// jvet_lf).
        #[arg(long, value_name = "FILE|builtin:NAME")]
        model: String,
        /// The weights: a PyTorch state_dict saved with safetensors (default:
        /// random weights).
        #[arg(long, value_name = "W.safetensors")]
        weights: Option<PathBuf>,
        /// The input tensor, float32 [N, C, H, W] (default: random).
        #[arg(long, value_name = "X.npy")]
        input: Option<PathBuf>,
        /// Print JSON (DESIGN.md contract 5) instead of the table.
        #[arg(long)]
        json: bool,
        /// Timed runs of the whole model, after one warm-up; the report
        /// gives their medians.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Threads each layer may use.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// How depthwise-separable blocks run unless the model says: one
        /// fused kernel or two.
        #[arg(long, default_value_t = DscMode::Fused)]
        dsc: DscMode,
        /// jit, or reference: the model as written through the interpreter
        /// (slow).
        #[arg(long, default_value_t = Engine::Jit)]
        engine: Engine,
        /// Also run the model on the reference engine and fail when the
        /// outputs differ by more than 1e-4 (normwise relative).
        #[arg(long)]
        check: bool,
        /// Where to write the model's output, float32.
        #[arg(long, value_name = "Y.npy")]
        output: Option<PathBuf>,
        /// Print the model as JSON (a file to start from) and exit.
        #[arg(long)]
        print_model: bool,
    },
    /// The main job on a built-in example: runs the built-in layer suite on
    /// random data and prints one row per layer.
    Demo {
        /// The engine (default: the fastest convjit has).
        #[arg(long, default_value_t = Engine::fastest())]
        engine: Engine,
        /// Seed of the random tensors.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away
    // (`convjit ir … | head`) instead of panicking in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE, before any
    // other thread exists, affects nothing else.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            use std::io::Write;
            // env_logger's own layout, with the message escaped: warnings
            // quote names and paths (convjit::terminal).
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                terminal::escape(&record.args().to_string())
            )
        })
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print on stdout and succeed.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("convjit: error: {}", terminal::escape(&usage_error(&e)));
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let outcome = match cli.command {
        Command::Run {
            spec,
            input,
            weight,
            bias,
            output,
            engine,
            check,
            checked,
            stats,
            schedule,
            threads,
            tuned,
            cache,
        } => {
            let files = RunFiles { input, weight, bias, output };
            let tuned = if tuned { cache_file(cache).map(Some) } else { Ok(None) };
            tuned.and_then(|tuned| {
                let options = RunOptions { check, checked, stats, schedule, threads, tuned };
                run(&spec, &files, engine, options)
            })
        }
        Command::Ir { spec, schedule, asm } => ir(&spec, schedule.as_deref(), asm),
        Command::Macs { spec, suite, json } => macs(spec.as_deref(), suite.as_deref(), json),
        Command::Bench {
            spec,
            suite,
            engines,
            threads,
            min_time,
            no_check,
            seed,
            json,
            plot,
            json_out,
            tuned,
            cache,
        } => {
            let Some(min_time) =
                Duration::try_from_secs_f64(min_time).ok().filter(|t| *t <= bench::MAX_MIN_TIME)
            else {
                eprintln!(
                    "convjit: error: --min-time must be a number of seconds from 0 to {}",
                    bench::MAX_MIN_TIME.as_secs()
                );
                return ExitCode::FAILURE;
            };
            let options = BenchOptions {
                engines,
                threads,
                min_time,
                check: !no_check,
                seed,
                ..BenchOptions::default()
            };
            let outputs = BenchOutputs { json, plot, json_out };
            let tuned = if tuned { cache_file(cache).map(Some) } else { Ok(None) };
            tuned.and_then(|tuned| {
                bench(spec.as_deref(), suite.as_deref(), options, tuned.as_deref(), &outputs)
            })
        }
        Command::Tune {
            spec,
            suite,
            budget,
            strategy,
            cache,
            no_cache,
            records,
            threads,
            seed,
            json,
        } => {
            let Some(budget) = Duration::try_from_secs_f64(budget).ok().filter(|b| !b.is_zero())
            else {
                eprintln!("convjit: error: --budget must be a number of seconds > 0");
                return ExitCode::FAILURE;
            };
            let options = TuneOptions { budget, search: strategy, threads, seed };
            let cache = if no_cache { Ok(None) } else { cache_file(cache).map(Some) };
            cache.and_then(|cache| {
                let outputs = TuneOutputs { cache, records, json };
                tune(spec.as_deref(), suite.as_deref(), options, &outputs)
            })
        }
        Command::Net {
            model,
            weights,
            input,
            json,
            runs,
            threads,
            dsc,
            engine,
            check,
            output,
            print_model,
        } => {
            let options = net::Options { engine, dsc, threads };
            let files = NetFiles { weights, input, output };
            net(&model, &files, &options, NetOutputs { runs, json, check, print_model })
        }
        Command::Demo { engine, seed } => demo(engine, seed),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convjit: error: {}", terminal::escape(&reasons(&e).replace('\n', " ")));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, as `{e:#}` gives them, but without a cause
/// its error already ends with (a file's I/O error names its cause).
fn reasons(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !text.ends_with(&cause) {
            text = if text.is_empty() { cause } else { format!("{text}: {cause}") };
        }
    }
    text
}

/// The tuning cache file: `--cache`, else the default one in the user's
/// cache directory.
fn cache_file(cache: Option<PathBuf>) -> Result<PathBuf> {
    match cache.or_else(TuningCache::default_path) {
        Some(path) => Ok(path),
        None => bail!("this user has no cache directory: give the tuning cache with --cache FILE"),
    }
}

/// clap's reason for refusing the command line, on one line (contract 3):
/// its own message adds the usage and a hint over several lines.
fn usage_error(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no command given (try 'convjit --help')".to_string();
    }
    let text = e.to_string();
    let reason = text.split("\n\n").next().unwrap_or_default();
    let reason = reason.trim().strip_prefix("error:").unwrap_or(reason);
    reason.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads a spec from a file, or from the argument itself when it is JSON.
fn load_spec(arg: &str) -> Result<ConvSpec> {
    if arg.trim_start().starts_with('{') {
        if arg.len() as u64 > files::SPEC.limit {
            bail!("--spec: the JSON given is {} bytes, more than a spec may hold", arg.len());
        }
        return Ok(ConvSpec::from_json(arg)?);
    }
    let text =
        files::read_text(Path::new(arg), files::SPEC).context("cannot read the spec file")?;
    if text.trim_start().starts_with('[') {
        bail!(
            "spec file {arg} holds a list of specs: --spec takes one (macs and bench take a list \
             with --suite)"
        );
    }
    ConvSpec::from_json(&text).with_context(|| format!("spec file {arg}"))
}

fn load_suite(path: &Path) -> Result<Vec<ConvSpec>> {
    let text = files::read_text(path, files::SUITE).context("cannot read the suite file")?;
    ConvSpec::suite_from_json(&text).with_context(|| format!("suite file {}", path.display()))
}

fn validate(spec: &ConvSpec) -> Result<ValidSpec> {
    spec.validate().with_context(|| match &spec.name {
        Some(name) => format!("layer {name}"),
        None => "spec".to_string(),
    })
}

struct RunFiles {
    input: PathBuf,
    weight: PathBuf,
    bias: Option<PathBuf>,
    output: PathBuf,
}

struct RunOptions {
    check: bool,
    /// Compile the jit's kernel in the checked lowering.
    checked: bool,
    stats: bool,
    schedule: Option<PathBuf>,
    threads: Option<usize>,
    /// The tuning cache to take the jit's schedule from.
    tuned: Option<PathBuf>,
}

fn load_schedule(path: Option<&Path>, spec: &ValidSpec) -> Result<Schedule> {
    let Some(path) = path else { return Ok(schedule::choose(spec)) };
    let text = files::read_text(path, files::SCHEDULE).context("cannot read the schedule file")?;
    let sched =
        Schedule::from_json(&text).with_context(|| format!("schedule file {}", path.display()))?;
    sched.legal(spec).with_context(|| format!("schedule file {}", path.display()))?;
    Ok(sched)
}

fn run(spec: &str, files: &RunFiles, engine: Engine, options: RunOptions) -> Result<()> {
    // Refuse an output that cannot be written before the work, not after.
    atomic::check(&files.output)?;
    let spec = validate(&load_spec(spec)?)?;
    match (spec.has_bias(), &files.bias) {
        (true, None) => bail!(
            "the spec has \"bias\": true: give --bias B.npy (shape [{}])",
            spec.out_channels()
        ),
        (false, Some(_)) => bail!("--bias was given but the spec has \"bias\": false"),
        _ => {}
    }
    if (options.schedule.is_some() || options.tuned.is_some() || options.checked)
        && engine != Engine::Jit
    {
        bail!("--schedule, --tuned and --checked apply to the jit engine only");
    }
    let x = npy::read_f32(&files.input, "input", &spec.input_shape())?;
    let w = npy::read_f32(&files.weight, "weight", &spec.weight_shape())?;
    let b = match &files.bias {
        Some(path) => Some(npy::read_f32(path, "bias", &[spec.out_channels()])?),
        None => None,
    };
    // Before anything is compiled: a legal layer too large for the memory
    // the process may have fails here, in one line.
    let mut y = convjit::alloc::zeroed_f32(spec.output_len(), "the output")?;
    let macs = Complexity::of(&spec).macs_valid;
    if engine == Engine::Jit {
        let mut compiler = Compiler::host()?;
        if options.checked {
            compiler = compiler.checked();
        }
        let (sched, origin) = if let Some(cache) = &options.tuned {
            compiler = compiler.with_tuning_cache(cache);
            let threads = options.threads.unwrap_or(1);
            if !(1..=schedule::MAX_THREADS).contains(&threads) {
                bail!("--threads {threads}: give 1 to {}", schedule::MAX_THREADS);
            }
            match compiler.tuned_schedule(&spec, threads) {
                Some(tuned) => (tuned, format!("tuned, from {}", cache.display())),
                None => (
                    schedule::choose_threaded(&spec, threads),
                    format!("heuristic: {} holds no schedule for this layer", cache.display()),
                ),
            }
        } else {
            let mut sched = load_schedule(options.schedule.as_deref(), &spec)?;
            if let Some(threads) = options.threads {
                sched.threads = threads;
                sched.legal(&spec).context("--threads")?;
            }
            let origin = if options.schedule.is_some() { "from --schedule" } else { "heuristic" };
            (sched, origin.to_string())
        };
        let kernel = compiler.compile_with(&spec, &sched)?;
        let packed = kernel.pack(&w, b.as_deref())?;
        let stats = kernel.run_with_stats(&x, &packed, &mut y)?;
        if options.stats {
            println!("target:        {}", compiler.describe());
            println!("schedule:      {} ({})", sched.to_json(), terminal::escape(&origin));
            println!("compile time:  {:.3} ms", kernel.compile_time().as_secs_f64() * 1e3);
            println!("run time:      {:.3} ms", stats.wall.as_secs_f64() * 1e3);
            println!("cycles:        {} ({})", stats.cycles, stats.clock);
            println!("MACs (valid):  {macs}");
            println!("MACs/cycle:    {:.3}", stats.macs_per_cycle);
        }
    } else {
        let layer =
            engine.prepare_threaded(&spec, &w, b.as_deref(), options.threads.unwrap_or(1))?;
        let (result, took) = timing::measure(|| layer.run(&x, &mut y));
        result?;
        if options.stats {
            println!("run time:      {:.3} ms", took.wall.as_secs_f64() * 1e3);
            println!("cycles:        {} ({})", took.cycles, timing::CLOCK);
            println!("MACs (valid):  {macs}");
            println!("MACs/cycle:    {:.3}", took.macs_per_cycle(macs));
        }
    }
    if options.check {
        let verdict = reference::verify(&spec, &x, &w, b.as_deref(), &y)?;
        let d = verdict.deviation;
        println!(
            "check: max abs error {:.3e}, max rel error {:.3e}, worst error/bound {:.3}",
            d.max_abs, d.max_rel, verdict.worst_ratio
        );
        ensure_passed(&spec, &verdict)?;
    }
    npy::write_f32(&files.output, &spec.output_shape(), &y)?;
    Ok(())
}

/// Fails when an output is past its error bound against the reference.
fn ensure_passed(spec: &ValidSpec, verdict: &reference::Verdict) -> Result<()> {
    if !verdict.passed() {
        bail!(
            "check failed on {}: output element {} is {:.2}× past its error bound \
             (docs/correctness.md)",
            spec.name().unwrap_or("the layer"),
            verdict.worst.unwrap_or(0),
            verdict.worst_ratio
        );
    }
    Ok(())
}

fn ir(spec: &str, schedule: Option<&Path>, asm: bool) -> Result<()> {
    let spec = validate(&load_spec(spec)?)?;
    let sched = load_schedule(schedule, &spec)?;
    let listing = Compiler::host()?.listing(&spec, &sched, asm)?;
    println!("; {spec}");
    println!("; schedule: {}", sched.to_json());
    println!("{}", listing.ir);
    if let Some(asm) = listing.asm {
        println!("; machine code");
        println!("{asm}");
    }
    Ok(())
}

#[derive(Serialize)]
struct MacsRow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    op: String,
    kind: String,
    output_shape: [usize; 4],
    #[serde(flatten)]
    complexity: Complexity,
    kmac_per_pixel: f64,
}

fn macs(spec: Option<&str>, suite: Option<&Path>, json: bool) -> Result<()> {
    let valid = load_layers(spec, suite)?;
    let rows: Vec<MacsRow> = valid
        .iter()
        .map(|s| {
            let complexity = Complexity::of(s);
            MacsRow {
                name: s.name(),
                op: s.op().to_string(),
                kind: s.kind().to_string(),
                output_shape: s.output_shape(),
                complexity,
                kmac_per_pixel: complexity.macs_per_pixel / 1000.0,
            }
        })
        .collect();
    if json {
        let text = if spec.is_some() {
            serde_json::to_string_pretty(&rows[0])?
        } else {
            serde_json::to_string_pretty(&rows)?
        };
        println!("{text}");
        return Ok(());
    }
    println!(
        "{:<20} {:<11} {:<32} {:>14} {:>14} {:>14} {:>9} {:>10} {:>10}",
        "layer",
        "kind",
        "shape",
        "macs",
        "macs_valid",
        "macs_ptflops",
        "GFLOPs",
        "params",
        "kMAC/px"
    );
    for (s, row) in valid.iter().zip(&rows) {
        let c = row.complexity;
        println!(
            "{:<20} {:<11} {:<32} {:>14} {:>14} {:>14} {:>9.3} {:>10} {:>10.3}",
            terminal::escape(s.name().unwrap_or("-")),
            row.kind,
            s.shape_summary(),
            c.macs,
            c.macs_valid,
            c.macs_ptflops,
            c.flops as f64 / 1e9,
            c.params,
            row.kmac_per_pixel
        );
    }
    Ok(())
}

/// The layers of `--spec`, `--suite`, or the built-in suite.
fn load_layers(spec: Option<&str>, suite: Option<&Path>) -> Result<Vec<ValidSpec>> {
    let specs = match (spec, suite) {
        (Some(spec), _) => vec![load_spec(spec)?],
        (None, Some(path)) => load_suite(path)?,
        (None, None) => suite::builtin(),
    };
    specs.iter().map(validate).collect()
}

/// What `convjit bench` prints and writes.
struct BenchOutputs {
    json: bool,
    plot: Option<PathBuf>,
    json_out: Option<PathBuf>,
}

fn bench(
    spec: Option<&str>,
    suite: Option<&Path>,
    mut options: BenchOptions,
    tuned: Option<&Path>,
    outputs: &BenchOutputs,
) -> Result<()> {
    let layers = load_layers(spec, suite)?;
    if let Some(cache) = tuned {
        let compiler = Compiler::host()?.with_tuning_cache(cache);
        let held =
            layers.iter().filter(|l| compiler.tuned_schedule(l, options.threads).is_some()).count();
        eprintln!(
            "jit schedules: {held} of {} layers tuned ({}), the heuristic's for the rest",
            layers.len(),
            terminal::escape(&cache.display().to_string())
        );
        options.compiler = Some(compiler);
    }
    let options = &options;
    // Refuse an unwritable file before the run, not after minutes of it.
    for path in outputs.plot.iter().chain(&outputs.json_out) {
        atomic::check(path)?;
    }
    if options.engines.is_empty() {
        bail!("--engines: give at least one engine");
    }
    let steps = (layers.len() * options.engines.len()) as u64;
    let bar = ProgressBar::new(steps).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}] {msg}")
            .expect("a valid template"),
    );
    let report = bench::run(&layers, options, |step| match step {
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
    let report = report?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &outputs.plot {
        let svg = bench::plot_svg(&report)?;
        atomic::write(path, |file| file.write_all(svg.as_bytes()))?;
    }
    if let Some(path) = &outputs.json_out {
        atomic::write(path, |file| writeln!(file, "{json}"))?;
    }
    if outputs.json {
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Where `convjit tune` writes.
struct TuneOutputs {
    cache: Option<PathBuf>,
    records: Option<PathBuf>,
    json: bool,
}

#[derive(Serialize)]
struct TuneReport<'a> {
    budget_s: f64,
    threads: usize,
    cache: Option<&'a Path>,
    results: &'a [convjit::tune::Outcome],
}

fn tune(
    spec: Option<&str>,
    suite: Option<&Path>,
    options: TuneOptions,
    outputs: &TuneOutputs,
) -> Result<()> {
    let layers = load_layers(spec, suite)?;
    if !(1..=schedule::MAX_THREADS).contains(&options.threads) {
        bail!("--threads {}: give 1 to {}", options.threads, schedule::MAX_THREADS);
    }
    let mut records = match &outputs.records {
        Some(path) => Some(RecordLog::open(path)?),
        None => None,
    };
    let compiler = Compiler::host()?;
    let mut results = Vec::with_capacity(layers.len());
    for (i, spec) in layers.iter().enumerate() {
        let name = spec.name().map_or_else(|| spec.shape_summary(), str::to_string);
        let bar = ProgressBar::new(options.budget.as_millis() as u64).with_style(
            ProgressStyle::with_template("{prefix} {bar:30} {elapsed:>4}/{msg}")
                .expect("a valid template"),
        );
        bar.set_prefix(format!("[{}/{}] {:<18}", i + 1, layers.len(), terminal::escape(&name)));
        let outcome = convjit::tune::tune(&compiler, spec, &options, records.as_mut(), &mut |p| {
            bar.set_position(p.elapsed.as_millis() as u64);
            bar.set_message(format!(
                "{:.0}s  {} candidates, best {:.2} MACs/tick",
                p.budget.as_secs_f64(),
                p.candidates,
                p.best_macs_per_cycle
            ));
        });
        bar.finish_and_clear();
        let outcome = outcome.with_context(|| format!("tuning {name}"))?;
        if let Some(path) = &outputs.cache {
            TuningCache::update(path, outcome.entry(spec, options.threads))?;
        }
        results.push(outcome);
    }
    if outputs.json {
        let report = TuneReport {
            budget_s: options.budget.as_secs_f64(),
            threads: options.threads,
            cache: outputs.cache.as_deref(),
            results: &results,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
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
    for r in &results {
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
    for r in &results {
        println!("{}: {}", terminal::escape(&r.layer), r.schedule.to_json());
    }
    if let Some(path) = &outputs.cache {
        println!("tuning cache: {}", terminal::escape(&path.display().to_string()));
    }
    Ok(())
}

/// The files `convjit net` reads and writes.
struct NetFiles {
    weights: Option<PathBuf>,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
}

/// What `convjit net` does besides running the model.
struct NetOutputs {
    runs: usize,
    json: bool,
    check: bool,
    print_model: bool,
}

/// The most timed runs `convjit net` takes.
const MAX_NET_RUNS: usize = 100_000;

/// The seed of `convjit net`'s random input.
const NET_INPUT_SEED: u64 = 1;

fn net(model: &str, files: &NetFiles, options: &net::Options, outputs: NetOutputs) -> Result<()> {
    let model = match model.strip_prefix("builtin:") {
        Some(name) => net::builtin(name)?,
        None => {
            let text = files::read_text(Path::new(model), files::MODEL)
                .context("cannot read the model file")?;
            net::Model::from_json(&text).with_context(|| format!("model file {model}"))?
        }
    };
    if outputs.print_model {
        println!("{}", model.to_json());
        return Ok(());
    }
    if !(1..=schedule::MAX_THREADS).contains(&options.threads) {
        bail!("--threads {}: give 1 to {}", options.threads, schedule::MAX_THREADS);
    }
    if !(1..=MAX_NET_RUNS).contains(&outputs.runs) {
        bail!("--runs {}: give 1 to {MAX_NET_RUNS}", outputs.runs);
    }
    if let Some(path) = &files.output {
        atomic::check(path)?;
    }
    let graph = net::Graph::new(&model)?;
    let tensors = match &files.weights {
        Some(path) => Some(net::Tensors::load(path)?),
        None => None,
    };
    let network = net::Network::new(graph, tensors.as_ref())?;
    let shape = network.graph().input_shape();
    let x = match &files.input {
        Some(path) => npy::read_f32(path, "input", &shape)?,
        None => net::random_input(shape, NET_INPUT_SEED)?,
    };
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let name = terminal::escape(&model.name);
    spinner.set_message(format!("{name}: compiling"));
    let prepared = network.prepare(options, None);
    spinner.set_message(format!("{name}: {} runs", outputs.runs + 1));
    let measured = prepared.and_then(|mut p| p.measure(&x, outputs.runs));
    let checked = match (&measured, outputs.check) {
        (Ok((y, _)), true) => {
            spinner.set_message(format!("{name}: the reference run"));
            Some(network.check(&x, y))
        }
        _ => None,
    };
    spinner.finish_and_clear();
    let (y, mut report) = measured?;
    if let Some(deviation) = checked.transpose()? {
        let check = net::CheckReport::from(deviation);
        if !check.passed {
            bail!(
                "check failed on {}: the output is {:.3e} from the reference run (normwise \
                 relative), past {:.0e}",
                model.name,
                check.max_rel,
                check.tolerance
            );
        }
        report.check = Some(check);
    }
    if let Some(path) = &files.output {
        npy::write_f32(path, &network.graph().output_shape(), &y)?;
    }
    if outputs.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

fn random_tensor(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Runs of each layer the demo times; it reports their median.
const DEMO_RUNS: usize = 5;

fn demo(engine: Engine, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
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
        let x = random_tensor(&mut rng, spec.input_len());
        let w = random_tensor(&mut rng, spec.weight_len());
        let b = spec.has_bias().then(|| random_tensor(&mut rng, spec.out_channels()));
        let (layer, prepared) = timing::measure(|| engine.prepare(&spec, &w, b.as_deref()));
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
        let median = timings[timings.len() / 2];
        let err = if engine == Engine::Reference {
            "-".to_string()
        } else {
            let verdict = reference::verify(&spec, &x, &w, b.as_deref(), &y)?;
            ensure_passed(&spec, &verdict)?;
            format!("{:.1e}", verdict.deviation.max_rel)
        };
        let compile = if engine == Engine::Jit {
            let ms = prepared.wall.as_secs_f64() * 1e3;
            compile_ms.push(ms);
            format!("{ms:.2}")
        } else {
            "-".to_string()
        };
        let macs = Complexity::of(&spec).macs_valid;
        println!(
            "{:<18} {:<11} {:<30} {:>11} {:>10} {:>9.2} {:>10.3} {:>9}",
            spec.name().unwrap_or("-"),
            spec.kind().to_string(),
            spec.shape_summary(),
            macs,
            compile,
            median.wall.as_secs_f64() * 1e3,
            median.macs_per_cycle(macs),
            err
        );
    }
    if !compile_ms.is_empty() {
        compile_ms.sort_by(f64::total_cmp);
        println!(
            "compile (incl. weight packing): median {:.2} ms, max {:.2} ms",
            compile_ms[compile_ms.len() / 2],
            compile_ms[compile_ms.len() - 1]
        );
    }
    Ok(())
}
