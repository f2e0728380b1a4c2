//! The `convjit` command line (DESIGN.md, contract 3).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

use convjit::reference::{self, Deviation};
use convjit::{Complexity, ConvSpec, Engine, ValidSpec, npy, suite, timing};

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
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run { spec, input, weight, bias, output, engine } => {
            run(&spec, &input, &weight, bias.as_deref(), &output, engine)
        }
        Command::Macs { spec, suite, json } => macs(spec.as_deref(), suite.as_deref(), json),
        Command::Demo { engine, seed } => demo(engine, seed),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convjit: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Reads a spec from a file, or from the argument itself when it is JSON.
fn load_spec(arg: &str) -> Result<ConvSpec> {
    if arg.trim_start().starts_with('{') {
        return Ok(ConvSpec::from_json(arg)?);
    }
    let text =
        std::fs::read_to_string(arg).with_context(|| format!("cannot read spec file {arg}"))?;
    ConvSpec::from_json(&text).with_context(|| format!("spec file {arg}"))
}

fn load_suite(path: &Path) -> Result<Vec<ConvSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read suite file {}", path.display()))?;
    ConvSpec::suite_from_json(&text).with_context(|| format!("suite file {}", path.display()))
}

fn validate(spec: &ConvSpec) -> Result<ValidSpec> {
    spec.validate().with_context(|| match &spec.name {
        Some(name) => format!("layer {name}"),
        None => "spec".to_string(),
    })
}

fn run(
    spec: &str,
    input: &Path,
    weight: &Path,
    bias: Option<&Path>,
    output: &Path,
    engine: Engine,
) -> Result<()> {
    let spec = validate(&load_spec(spec)?)?;
    match (spec.has_bias(), bias) {
        (true, None) => bail!(
            "the spec has \"bias\": true: give --bias B.npy (shape [{}])",
            spec.out_channels()
        ),
        (false, Some(_)) => bail!("--bias was given but the spec has \"bias\": false"),
        _ => {}
    }
    let x = npy::read_f32(input, "input", &spec.input_shape())?;
    let w = npy::read_f32(weight, "weight", &spec.weight_shape())?;
    let b = match bias {
        Some(path) => Some(npy::read_f32(path, "bias", &[spec.out_channels()])?),
        None => None,
    };
    let layer = engine.prepare(&spec, &w, b.as_deref())?;
    let mut y = vec![0.0f32; spec.output_len()];
    let ((), took) = timing::measure(|| layer.run(&x, &mut y)).map_ok()?;
    log::info!(
        "{engine}: {} in {:?}, {:.2} MACs/cycle ({})",
        spec,
        took.wall,
        took.macs_per_cycle(Complexity::of(&spec).macs_valid),
        timing::CLOCK
    );
    npy::write_f32(output, &spec.output_shape(), &y)?;
    Ok(())
}

/// Turns `(Result<T>, M)` into `Result<(T, M)>`.
trait MapOk<T, M> {
    fn map_ok(self) -> convjit::Result<(T, M)>;
}
impl<T, M> MapOk<T, M> for (convjit::Result<T>, M) {
    fn map_ok(self) -> convjit::Result<(T, M)> {
        let (r, m) = self;
        r.map(|t| (t, m))
    }
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
    let specs = match (spec, suite) {
        (Some(spec), _) => vec![load_spec(spec)?],
        (None, Some(path)) => load_suite(path)?,
        (None, None) => bail!("give --spec or --suite"),
    };
    let valid = specs.iter().map(validate).collect::<Result<Vec<_>>>()?;
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
            s.name().unwrap_or("-"),
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

fn random_tensor(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn demo(engine: Engine, seed: u64) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    println!(
        "convjit demo: the built-in suite on random data, engine {engine}; cycles from the {}",
        timing::CLOCK
    );
    println!(
        "{:<20} {:<11} {:<30} {:>12} {:>10} {:>10} {:>10}",
        "layer", "kind", "shape", "MACs", "time ms", "MACs/cyc", "max err"
    );
    for spec in suite::builtin() {
        let spec = validate(&spec)?;
        let x = random_tensor(&mut rng, spec.input_len());
        let w = random_tensor(&mut rng, spec.weight_len());
        let b = spec.has_bias().then(|| random_tensor(&mut rng, spec.out_channels()));
        let layer = engine.prepare(&spec, &w, b.as_deref())?;
        let mut y = vec![0.0f32; spec.output_len()];
        let ((), took) = timing::measure(|| layer.run(&x, &mut y)).map_ok()?;
        let err = if engine == Engine::Reference {
            "-".to_string()
        } else {
            let want = reference::conv(&spec, &x, &w, b.as_deref())?;
            let Deviation { max_abs, .. } = reference::compare(&y, &want);
            format!("{max_abs:.1e}")
        };
        let macs = Complexity::of(&spec).macs_valid;
        println!(
            "{:<20} {:<11} {:<30} {:>12} {:>10.2} {:>10.3} {:>10}",
            spec.name().unwrap_or("-"),
            spec.kind().to_string(),
            spec.shape_summary(),
            macs,
            took.wall.as_secs_f64() * 1e3,
            took.macs_per_cycle(macs),
            err
        );
    }
    Ok(())
}
