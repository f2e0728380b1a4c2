//! `convjit macs`: the complexity report of a layer or a suite.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use convjit::{Complexity, terminal};

use super::common::load_layers;

#[derive(clap::Args)]
pub struct Args {
    /// The spec: a JSON file, or the JSON text itself.
    #[arg(long, conflicts_with = "suite", required_unless_present = "suite")]
    spec: Option<String>,
    /// A suite file: a JSON list of specs.
    #[arg(long)]
    suite: Option<PathBuf>,
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

pub fn main(args: &Args) -> Result<()> {
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
