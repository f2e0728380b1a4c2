//! `convjit run`: one layer on tensors from .npy files.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use convjit::source::{Given, Request, Resolved};
use convjit::{Complexity, Engine, ValidSpec, atomic, npy, reference, terminal, timing};

use super::common::{cache_file, ensure_passed, load_spec, validate};

#[derive(clap::Args)]
pub struct Args {
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
    /// The engine: jit (the default, the fastest convjit has), naive
    /// (the textbook loop nest), im2col (im2col + GEMM) or reference (the
    /// f64 interpreter).
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
    /// Print cycles, MACs/cycle, compile time, the schedule and the algorithm it computes by (jit).
    #[arg(long)]
    stats: bool,
    /// A schedule JSON file for the jit engine (default: the heuristic's).
    #[arg(long, conflicts_with = "tuned")]
    schedule: Option<PathBuf>,
    /// Threads the engine may use (for the jit: the heuristic's schedule
    /// for this many threads, or in place of the --schedule file's; with
    /// --tuned, the schedule tuned for this many threads).
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
    /// The widest vector ISA of the jit's register tiles: avx512, avx2 or
    /// sse (default: the widest the host has).
    #[arg(long)]
    isa: Option<convjit::schedule::Isa>,
}

/// The operands of a run, read and checked against the spec.
struct Operands {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
}

pub fn main(mut args: Args) -> Result<()> {
    let tuned = if args.tuned { Some(cache_file(args.cache.take())?) } else { None };
    // Refuse an output that cannot be written before the work, not after.
    atomic::check(&args.output)?;
    let spec = validate(&load_spec(&args.spec)?)?;
    match (spec.has_bias(), &args.bias) {
        (true, None) => bail!(
            "the spec has \"bias\": true: give --bias B.npy (shape [{}])",
            spec.out_channels()
        ),
        (false, Some(_)) => bail!("--bias was given but the spec has \"bias\": false"),
        _ => {}
    }
    if (args.schedule.is_some() || tuned.is_some() || args.checked) && args.engine != Engine::Jit {
        bail!("--schedule, --tuned and --checked apply to the jit engine only");
    }
    let operands = Operands {
        x: npy::read_f32(&args.input, "input", &spec.input_shape())?,
        w: npy::read_f32(&args.weight, "weight", &spec.weight_shape())?,
        b: match &args.bias {
            Some(path) => Some(npy::read_f32(path, "bias", &[spec.out_channels()])?),
            None => None,
        },
    };
    // Before anything is compiled: a legal layer too large for the memory
    // the process may have fails here, in one line.
    let mut y = convjit::alloc::zeroed_f32(spec.output_len(), "the output")?;
    let schedule = if args.engine == Engine::Jit {
        Some(run_jit(&spec, &args, tuned, &operands, &mut y)?)
    } else {
        run_engine(&spec, &args, &operands, &mut y)?;
        None
    };
    if args.check {
        let Operands { x, w, b } = &operands;
        // A Winograd schedule is held to the bound of its transforms.
        let oracle = reference::Oracle::for_schedule(&spec, schedule.as_ref(), x, w, b.as_deref())?;
        let verdict = oracle.verify(&y)?;
        let d = verdict.deviation;
        println!(
            "check: max abs error {:.3e}, max rel error {:.3e}, worst error/bound {:.3}",
            d.max_abs, d.max_rel, verdict.worst_ratio
        );
        ensure_passed(&spec, &verdict)?;
    }
    npy::write_f32(&args.output, &spec.output_shape(), &y)?;
    Ok(())
}

/// Runs the jit with the schedule the library resolves for the request
/// (`convjit::source`): `--schedule`'s with `--threads` in place of its
/// own, the tuning cache's, or the heuristic's for `--threads`.
fn run_jit(
    spec: &ValidSpec,
    args: &Args,
    tuned: Option<PathBuf>,
    operands: &Operands,
    y: &mut [f32],
) -> Result<convjit::Schedule> {
    let mut compiler = super::common::host_compiler(args.isa)?;
    if args.checked {
        compiler = compiler.checked();
    }
    if let Some(cache) = tuned {
        compiler = compiler.with_tuning_cache(cache);
    }
    let given = match &args.schedule {
        Some(path) => Some(Given::load(path, spec)?.named("--schedule")),
        None => None,
    };
    let request = Request { given, threads: args.threads };
    let Resolved { schedule, origin } = compiler.resolve(spec, &request).context("--threads")?;
    let kernel = compiler.compile_with(spec, &schedule)?;
    let packed = kernel.pack(&operands.w, operands.b.as_deref())?;
    let stats = kernel.run_with_stats(&operands.x, &packed, y)?;
    if args.stats {
        println!("target:        {}", compiler.describe());
        println!(
            "schedule:      {} ({})",
            schedule.to_json(),
            terminal::escape(&origin.to_string())
        );
        println!("algorithm:     {}", super::common::algorithm(spec, &schedule));
        println!("compile time:  {:.3} ms", kernel.compile_time().as_secs_f64() * 1e3);
        println!("run time:      {:.3} ms", stats.wall.as_secs_f64() * 1e3);
        println!("cycles:        {} ({})", stats.cycles, stats.clock);
        print_macs(spec, stats.macs_per_cycle);
    }
    Ok(schedule)
}

/// Runs an engine other than the jit, timed.
fn run_engine(spec: &ValidSpec, args: &Args, operands: &Operands, y: &mut [f32]) -> Result<()> {
    let Operands { x, w, b } = operands;
    let layer = args.engine.prepare_threaded(spec, w, b.as_deref(), args.threads.unwrap_or(1))?;
    let (result, took) = timing::measure(|| layer.run(x, y));
    result?;
    if args.stats {
        println!("run time:      {:.3} ms", took.wall.as_secs_f64() * 1e3);
        println!("cycles:        {} ({})", took.cycles, timing::CLOCK);
        print_macs(spec, took.macs_per_cycle(Complexity::of(spec).macs_valid));
    }
    Ok(())
}

/// The last lines of `--stats`: the layer's MACs and their rate.
fn print_macs(spec: &ValidSpec, macs_per_cycle: f64) {
    println!("MACs (valid):  {}", Complexity::of(spec).macs_valid);
    println!("MACs/cycle:    {macs_per_cycle:.3}");
}
