//! `convjit net`: a whole model, layer by layer.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use indicatif::ProgressBar;

use convjit::blocks::DscMode;
use convjit::{Compiler, Engine, atomic, net, npy, terminal};

use super::common::{cache_file, check_threads, load_model};

#[derive(clap::Args)]
pub struct Args {
    /// The model: a JSON file, an ONNX file (.onnx, with its weights), or
    /// builtin:NAME (mobilenetv2, resnet18, jvet_lf).
    #[arg(long, value_name = "FILE|F.onnx|builtin:NAME")]
    model: String,
    /// The weights: a PyTorch state_dict saved with safetensors (default:
    /// random weights; an ONNX model's own).
    #[arg(long, value_name = "W.safetensors")]
    weights: Option<PathBuf>,
    /// An input tensor, float32 [N, C, H, W]: NAME=X.npy for the model's
    /// input NAME, or X.npy for the first not named (repeatable; default:
    /// random, uniform in [-1, 1)).
    #[arg(long, value_name = "[NAME=]X.npy")]
    input: Vec<String>,
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
    /// fused kernel, two, or auto (both timed when the model is prepared,
    /// the faster kept).
    #[arg(long, default_value_t = DscMode::Auto)]
    dsc: DscMode,
    /// jit, or reference: the model as written through the interpreter
    /// (slow).
    #[arg(long, default_value_t = Engine::Jit)]
    engine: Engine,
    /// Also run the model on the reference engine and fail when the
    /// outputs differ by more than 1e-4 (normwise relative).
    #[arg(long)]
    check: bool,
    /// Where to write an output, float32: NAME=Y.npy for the model's
    /// output NAME, or Y.npy for its first (repeatable).
    #[arg(long, value_name = "[NAME=]Y.npy")]
    output: Vec<String>,
    /// Compile each conv with the schedule `convjit tune` saved for it
    /// (`tune --model` tunes a whole model's), the heuristic's for those
    /// the cache does not hold.
    #[arg(long)]
    tuned: bool,
    /// The tuning cache --tuned reads (default: convjit/tuning.json in
    /// the user's cache directory).
    #[arg(long, value_name = "FILE", requires = "tuned")]
    cache: Option<PathBuf>,
    /// Print the model as JSON (a file to start from) and exit.
    #[arg(long)]
    print_model: bool,
}

/// The most timed runs `convjit net` takes.
const MAX_NET_RUNS: usize = 100_000;

/// The seed of `convjit net`'s random input.
const NET_INPUT_SEED: u64 = 1;

pub fn main(args: Args) -> Result<()> {
    let (model, onnx_tensors) = load_model(&args.model)?;
    if onnx_tensors.is_some() && args.weights.is_some() {
        bail!("--weights: an ONNX model carries its own weights (its initializers)");
    }
    if args.print_model {
        println!("{}", model.to_json());
        return Ok(());
    }
    check_threads(args.threads)?;
    if args.tuned && args.engine != Engine::Jit {
        bail!("--tuned applies to the jit engine only");
    }
    if !(1..=MAX_NET_RUNS).contains(&args.runs) {
        bail!("--runs {}: give 1 to {MAX_NET_RUNS}", args.runs);
    }
    let graph = net::Graph::new(&model)?;
    let output_files = output_files(&graph, &args.output)?;
    for (_, path) in &output_files {
        atomic::check(path)?;
    }
    let tensors = match &args.weights {
        Some(path) => Some(net::Tensors::load(path)?),
        None => onnx_tensors,
    };
    let network = net::Network::new(graph, tensors.as_ref())?;
    let inputs = model_inputs(network.graph(), &args.input)?;
    let xs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let options = net::Options { engine: args.engine, dsc: args.dsc, threads: args.threads };
    let compiler = match &args.cache {
        _ if !args.tuned => None,
        cache => Some(Compiler::host()?.with_tuning_cache(cache_file(cache.clone())?)),
    };
    if let Some(compiler) = &compiler {
        let convs = network.jit_convs(&options)?;
        let tuned =
            convs.iter().filter(|c| compiler.tuned_schedule(&c.spec, args.threads).is_some());
        eprintln!(
            "--tuned: the cache holds {} of the model's {} conv kernels (for {} thread{}); the \
             others take the heuristic's schedule",
            tuned.count(),
            convs.len(),
            args.threads,
            if args.threads == 1 { "" } else { "s" }
        );
    }
    let (ys, report) = measure(&network, &model.name, &xs, &options, compiler.as_ref(), &args)?;
    let shapes = network.graph().outputs();
    for (k, path) in &output_files {
        npy::write_f32(path, &shapes[*k].1, &ys[*k])?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Compiles and times the model, and with `--check` compares its outputs
/// with the reference run's, behind a spinner: the outputs and the report.
fn measure(
    network: &net::Network,
    model: &str,
    xs: &[&[f32]],
    options: &net::Options,
    compiler: Option<&Compiler>,
    args: &Args,
) -> Result<(Vec<Vec<f32>>, net::Report)> {
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let name = terminal::escape(model);
    spinner.set_message(format!("{name}: compiling"));
    let prepared = network.prepare(options, compiler);
    spinner.set_message(format!("{name}: {} runs", args.runs + 1));
    let measured = prepared.and_then(|mut p| {
        let (_, report) = p.measure_inputs(xs, args.runs)?;
        Ok((p.outputs().iter().map(|y| y.to_vec()).collect::<Vec<_>>(), report))
    });
    let checked = match (&measured, args.check) {
        (Ok((ys, _)), true) => {
            spinner.set_message(format!("{name}: the reference run"));
            let ys: Vec<&[f32]> = ys.iter().map(Vec::as_slice).collect();
            Some(network.check_outputs(xs, &ys))
        }
        _ => None,
    };
    spinner.finish_and_clear();
    let (ys, mut report) = measured?;
    if let Some(deviations) = checked.transpose()? {
        // The worst output's.
        let names = network.graph().outputs();
        let checks = deviations.into_iter().map(net::CheckReport::from);
        let (k, check) = checks
            .enumerate()
            .max_by(|(_, a), (_, b)| {
                (!a.passed, a.max_rel)
                    .partial_cmp(&(!b.passed, b.max_rel))
                    .unwrap_or(std::cmp::Ordering::Greater)
            })
            .expect("a model has an output");
        if !check.passed {
            let which = if names.len() > 1 {
                format!(" {}", terminal::escape(names[k].0))
            } else {
                String::new()
            };
            bail!(
                "check failed on {model}: the output{which} is {:.3e} from the reference run \
                 (normwise relative), past {:.0e}",
                check.max_rel,
                check.tolerance
            );
        }
        report.check = Some(check);
    }
    Ok((ys, report))
}

/// The output files `--output` names: `NAME=Y.npy` for output NAME, `Y.npy`
/// for the first (one such); each output once. The outputs by index.
fn output_files(graph: &net::Graph, given: &[String]) -> Result<Vec<(usize, PathBuf)>> {
    let outputs = graph.outputs();
    let names: Vec<&str> = outputs.iter().map(|(n, _)| *n).collect();
    let mut files: Vec<(usize, PathBuf)> = Vec::new();
    for arg in given {
        let named = arg.split_once('=').filter(|(n, f)| !n.contains(['/', '\\']) && !f.is_empty());
        let (k, file) = match named {
            Some((n, f)) => match names.iter().position(|&m| m == n) {
                Some(k) => (k, f),
                None => bail!(
                    "--output {}: no output named {} ({})",
                    terminal::escape(arg),
                    terminal::escape(n),
                    terminal::escape(&names.join(", "))
                ),
            },
            None => (0, arg.as_str()),
        };
        if files.iter().any(|(j, _)| *j == k) {
            bail!("--output: the model's output {} is given twice", terminal::escape(names[k]));
        }
        if files.iter().any(|(_, f)| f.as_os_str() == file) {
            bail!("--output {}: two outputs to one file", terminal::escape(file));
        }
        files.push((k, PathBuf::from(file)));
    }
    Ok(files)
}

/// The model's inputs, in order: from `--input` (`NAME=X.npy`, or `X.npy`
/// for the first input not named), random for those not given (input k
/// from seed [`NET_INPUT_SEED`] + k).
fn model_inputs(graph: &net::Graph, given: &[String]) -> Result<Vec<Vec<f32>>> {
    let names: Vec<&str> = graph.inputs().iter().map(|(n, _)| n.as_str()).collect();
    let mut files: Vec<Option<PathBuf>> = vec![None; names.len()];
    let mut unnamed = Vec::new();
    for arg in given {
        match arg.split_once('=').and_then(|(n, f)| Some((names.iter().position(|&m| m == n)?, f)))
        {
            Some((k, _)) if files[k].is_some() => {
                bail!("--input: the model's input {} is given twice", terminal::escape(names[k]))
            }
            Some((k, file)) => files[k] = Some(PathBuf::from(file)),
            // NAME=X.npy of a name the model does not have (and no file of
            // that whole path): a mistyped name, not a path.
            None if arg
                .split_once('=')
                .is_some_and(|(n, f)| !n.contains(['/', '\\']) && !f.is_empty())
                && !std::path::Path::new(arg).exists() =>
            {
                let name = arg.split_once('=').map_or("", |(n, _)| n);
                bail!(
                    "--input {}: no input named {} ({})",
                    terminal::escape(arg),
                    terminal::escape(name),
                    terminal::escape(&names.join(", "))
                )
            }
            None => unnamed.push(PathBuf::from(arg)),
        }
    }
    for file in unnamed {
        let Some(k) = files.iter().position(Option::is_none) else {
            bail!(
                "--input {}: every input of the model ({}) is given already",
                terminal::escape(&file.display().to_string()),
                terminal::escape(&names.join(", "))
            );
        };
        files[k] = Some(file);
    }
    (graph.inputs().iter().zip(files).enumerate())
        .map(|(k, ((name, shape), file))| match file {
            Some(path) => Ok(npy::read_f32(&path, &format!("input {name}"), shape)?),
            None => Ok(net::random_input(*shape, NET_INPUT_SEED + k as u64)?),
        })
        .collect()
}
