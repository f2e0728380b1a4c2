//! `convjit macs`: the complexity report of a layer, a suite or a whole
//! model (counted from the shapes alone, nothing compiled).

use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use serde::Serialize;

use convjit::net::{self, Cost, LayerKind};
use convjit::{Complexity, terminal};

use super::common::{load_layers, load_model};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("counted").required(true).args(["spec", "suite", "model"])))]
pub struct Args {
    /// The spec: a JSON file, or the JSON text itself.
    #[arg(long)]
    spec: Option<String>,
    /// A suite file: a JSON list of specs.
    #[arg(long)]
    suite: Option<PathBuf>,
    /// A whole model: a JSON file, an ONNX file (.onnx) or builtin:NAME;
    /// each layer's counts and the totals, from the shapes alone.
    #[arg(long, value_name = "FILE|F.onnx|builtin:NAME")]
    model: Option<String>,
    /// With --model, count it on an input of this shape instead:
    /// NAME=NxCxHxW for the input NAME, or NxCxHxW for the first
    /// (repeatable).
    #[arg(long, value_name = "[NAME=]NxCxHxW", requires = "model")]
    input_shape: Vec<String>,
    /// With --model, the input whose pixels (N·H·W) the kMAC per pixel
    /// counts (default: the first; JVET NNVC counts a filter's luma
    /// pixels).
    #[arg(long, value_name = "NAME", requires = "model")]
    pixels_of: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One layer's row of the report.
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

/// One layer's row of a model's report.
#[derive(Serialize)]
struct ModelRow<'a> {
    name: &'a str,
    kind: LayerKind,
    output_shape: [usize; 4],
    #[serde(flatten)]
    cost: Cost,
}

/// A model's report: its layers, the totals and the multiply-adds per
/// pixel of its input (`macs_ptflops` over `N·H·W` pixels, JVET NNVC's
/// kMAC/pixel, as `convjit net` reports it).
#[derive(Serialize)]
struct ModelReport<'a> {
    model: &'a str,
    input: [usize; 4],
    layers: Vec<ModelRow<'a>>,
    total: Cost,
    kmac_per_pixel: f64,
}

/// `model` with the input shapes `--input-shape` gives.
fn with_input_shapes(mut model: net::Model, given: &[String]) -> Result<net::Model> {
    let one = matches!(model.input, net::Inputs::One(_));
    let mut inputs: Vec<net::NamedInput> = (model.input.list().into_iter())
        .map(|(name, shape)| net::NamedInput { name: name.to_string(), shape })
        .collect();
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    for arg in given {
        let (k, dims) = match arg.split_once('=') {
            Some((name, dims)) => match names.iter().position(|n| n == name) {
                Some(k) => (k, dims),
                None => bail!(
                    "--input-shape {}: no input named {} ({})",
                    terminal::escape(arg),
                    terminal::escape(name),
                    terminal::escape(&names.join(", "))
                ),
            },
            None => (0, arg.as_str()),
        };
        let parsed: Vec<i64> = dims
            .split(['x', '×'])
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()
            .filter(|d: &Vec<i64>| d.len() == 4)
            .ok_or_else(|| {
                anyhow!("--input-shape {}: give N×C×H×W, as 1x3x224x224", terminal::escape(arg))
            })?;
        inputs[k].shape = [parsed[0], parsed[1], parsed[2], parsed[3]];
    }
    model.input = match (one, inputs.as_slice()) {
        (true, [input]) => net::Inputs::One(input.shape),
        _ => net::Inputs::Named(inputs),
    };
    Ok(model)
}

/// The counts of a whole model, from its shapes: nothing is compiled or
/// run.
fn model(name: &str, args: &Args) -> Result<()> {
    let json = args.json;
    let (model, _) = load_model(name)?;
    let model = with_input_shapes(model, &args.input_shape)?;
    let graph = net::Graph::new(&model)?;
    let input = match &args.pixels_of {
        None => graph.input_shape(),
        Some(of) => match graph.inputs().iter().find(|(n, _)| n == of) {
            Some((_, shape)) => *shape,
            None => {
                bail!("--pixels-of {}: the model has no input of this name", terminal::escape(of))
            }
        },
    };
    let pixels = (input[0] * input[2] * input[3]) as f64;
    let total = graph.total();
    let report = ModelReport {
        model: graph.name(),
        input,
        layers: graph
            .nodes()
            .iter()
            .map(|n| ModelRow {
                name: n.name(),
                kind: n.kind(),
                output_shape: n.output_shape(),
                cost: n.cost(),
            })
            .collect(),
        total,
        kmac_per_pixel: total.macs_ptflops as f64 / pixels / 1000.0,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<15} {:<18} {:>12} {:>14} {:>14} {:>14}",
        "layer", "kind", "output", "params", "macs", "macs_valid", "macs_ptflops"
    );
    let row = |name: &str, kind: &str, output: String, c: Cost| {
        println!(
            "{:<24} {:<15} {:<18} {:>12} {:>14} {:>14} {:>14}",
            terminal::escape(name),
            kind,
            output,
            c.params,
            c.macs,
            c.macs_valid,
            c.macs_ptflops
        )
    };
    for layer in &report.layers {
        row(layer.name, layer.kind.as_str(), net::shape_str(layer.output_shape), layer.cost);
    }
    row("total", "", net::shape_str(graph.output_shape()), total);
    println!(
        "{:.3} kMAC per input pixel (macs_ptflops over {} × {} × {} pixels); macs: dense \
         multiply-adds of the convs and linear layers, no bias; macs_valid: those reading real \
         input; macs_ptflops: ptflops' module count (docs/networks.md)",
        report.kmac_per_pixel, input[0], input[2], input[3]
    );
    Ok(())
}

pub fn main(args: &Args) -> Result<()> {
    if let Some(name) = &args.model {
        return model(name, args);
    }
    let valid = load_layers(args.spec.as_deref(), args.suite.as_deref())?;
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
    if args.json {
        let text = if args.spec.is_some() {
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
