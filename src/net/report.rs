//! The report of a measured run (DESIGN.md contract 5): one row per
//! layer — its counts, the median time of its step, or the conv it was
//! folded into — the totals, and the check against the reference; as JSON
//! (serde) or as the human table.

use std::time::Duration;

use serde::Serialize;

use super::Options;
use super::cost::Cost;
use super::graph::Graph;
use super::model::LayerKind;
use crate::blocks::DscMode;
use crate::engine::Engine;
use crate::reference::Deviation;
use crate::terminal::escape;
use crate::timing::{self, Measurement};

/// The tolerance of a network's check against the reference run: every
/// output within `CHECK_TOLERANCE · (1 + the largest |expected|)`
/// ([`Deviation::within`]): a normwise relative error, absolute where the
/// whole output is near zero.
pub const CHECK_TOLERANCE: f64 = 1e-4;

impl Report {
    /// The report of the timed runs of `graph`, prepared with `options` in
    /// `compile_time`: `steps` are each step's node and its times, one per
    /// run, `totals` the whole runs' times; `folded_into` is, per node, the
    /// node whose step computes it (a conv's kernel, an add's loop).
    pub(crate) fn new(
        graph: &Graph,
        options: &Options,
        compile_time: Duration,
        folded_into: &[Option<usize>],
        steps: &[(usize, Vec<Measurement>)],
        totals: &[Measurement],
    ) -> Report {
        let nodes = graph.nodes();
        let mut layers: Vec<LayerReport> = nodes
            .iter()
            .zip(folded_into)
            .map(|(node, folded)| {
                let cost = node.cost();
                LayerReport {
                    name: node.name().to_string(),
                    kind: node.kind(),
                    output_shape: node.output_shape(),
                    params: cost.params,
                    macs: cost.macs,
                    macs_valid: cost.macs_valid,
                    macs_ptflops: cost.macs_ptflops,
                    median_s: 0.0,
                    median_cycles: 0,
                    macs_per_cycle: None,
                    folded_into: folded.map(|c| nodes[c].name().to_string()),
                }
            })
            .collect();
        for (node, times) in steps {
            let row = &mut layers[*node];
            row.median_s = median(times.iter().map(|t| t.wall.as_secs_f64()));
            row.median_cycles = median(times.iter().map(|t| t.cycles as f64)) as u64;
            row.macs_per_cycle = (row.macs_valid > 0)
                .then(|| row.macs_valid as f64 / row.median_cycles.max(1) as f64);
        }
        let cost: Cost = graph.total();
        let input = graph.input_shape();
        let pixels = (input[0] * input[2] * input[3]) as f64;
        let median_cycles = median(totals.iter().map(|t| t.cycles as f64)) as u64;
        Report {
            model: graph.name().to_string(),
            input,
            output_shape: graph.output_shape(),
            engine: options.engine,
            dsc: options.dsc,
            threads: options.threads,
            runs: totals.len(),
            compile_s: compile_time.as_secs_f64(),
            layers,
            total: Total {
                params: cost.params,
                macs: cost.macs,
                macs_valid: cost.macs_valid,
                macs_ptflops: cost.macs_ptflops,
                kmac_per_pixel: cost.macs_ptflops as f64 / pixels / 1000.0,
                median_s: median(totals.iter().map(|t| t.wall.as_secs_f64())),
                median_cycles,
                macs_per_cycle: cost.macs_valid as f64 / median_cycles.max(1) as f64,
            },
            check: None,
        }
    }
}

/// [`crate::stats::median`] of `values`: of an even count, the mean of the
/// two middle values.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    crate::stats::median(&values.collect::<Vec<f64>>())
}

/// One layer's row of a [`Report`] (DESIGN.md contract 5).
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// The layer's name.
    pub name: String,
    /// Its kind (as the model file writes it, in JSON).
    pub kind: LayerKind,
    /// The shape it gives.
    pub output_shape: [usize; 4],
    /// Its parameters (docs/networks.md).
    pub params: u64,
    /// Dense multiply-adds of its convs.
    pub macs: u64,
    /// Multiply-adds of its convs that read real input.
    pub macs_valid: u64,
    /// What ptflops counts for it.
    pub macs_ptflops: u64,
    /// The median time of its step (0 when folded into another layer's).
    pub median_s: f64,
    /// The median TSC ticks of its step.
    pub median_cycles: u64,
    /// `macs_valid` per TSC tick of the median, for layers with MACs that
    /// run as a step of their own.
    pub macs_per_cycle: Option<f64>,
    /// The layer whose step computes it (a conv's kernel, an add's loop), when it was folded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded_into: Option<String>,
}

/// The totals of a [`Report`].
#[derive(Clone, Debug, Serialize)]
pub struct Total {
    /// Parameters.
    pub params: u64,
    /// Dense multiply-adds of the convs.
    pub macs: u64,
    /// Multiply-adds of the convs that read real input.
    pub macs_valid: u64,
    /// ptflops' count.
    pub macs_ptflops: u64,
    /// `macs_ptflops` per input pixel (N·H·W), in thousands.
    pub kmac_per_pixel: f64,
    /// The median time of a whole run.
    pub median_s: f64,
    /// The median TSC ticks of a whole run.
    pub median_cycles: u64,
    /// `macs_valid` per TSC tick of the median run.
    pub macs_per_cycle: f64,
}

/// The outcome of `--check`: the output against the reference run's.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CheckReport {
    /// The largest absolute difference.
    pub max_abs: f64,
    /// The normwise relative error (`max_abs` over the largest |expected|).
    pub max_rel: f64,
    /// The tolerance it is held to.
    pub tolerance: f64,
    /// Whether `max_abs` is within it times 1 + the largest |expected|.
    pub passed: bool,
}

impl From<Deviation> for CheckReport {
    fn from(d: Deviation) -> CheckReport {
        CheckReport {
            max_abs: d.max_abs,
            max_rel: d.max_rel,
            tolerance: CHECK_TOLERANCE,
            passed: d.within(CHECK_TOLERANCE),
        }
    }
}

/// A timed run of a network (DESIGN.md contract 5's `convjit net --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The model's name.
    pub model: String,
    /// Its input shape.
    pub input: [usize; 4],
    /// Its output shape.
    pub output_shape: [usize; 4],
    /// The engine of its convs.
    pub engine: Engine,
    /// How depthwise-separable blocks ran (unless their layer said).
    pub dsc: DscMode,
    /// The most threads a step used.
    pub threads: usize,
    /// The timed runs the medians are over.
    pub runs: usize,
    /// Seconds spent preparing (compiling, packing).
    pub compile_s: f64,
    /// One row per layer, in order.
    pub layers: Vec<LayerReport>,
    /// The totals.
    pub total: Total,
    /// The check against the reference, when one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckReport>,
}

/// A shape as the tables print it: `N×C×H×W`.
pub fn shape_str(s: [usize; 4]) -> String {
    format!("{}×{}×{}×{}", s[0], s[1], s[2], s[3])
}

impl Report {
    /// The human table: one row per layer, the totals, and what is counted.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let pixels = (self.input[0] * self.input[2] * self.input[3]) as f64;
        // Names are the model file's: escaped for the terminal (crate::terminal).
        let names: Vec<_> = self.layers.iter().map(|l| escape(&l.name)).collect();
        let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(5).max(5);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: input {}, engine {}, dsc {}, {} thread{}, median of {} runs, prepared in {:.1} ms",
            escape(&self.model),
            shape_str(self.input),
            self.engine,
            self.dsc,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.runs,
            self.compile_s * 1e3
        );
        let _ = writeln!(
            out,
            "{:<width$} {:<19} {:<15} {:>10} {:>13} {:>13} {:>13} {:>8} {:>10} {:>9}",
            "layer",
            "kind",
            "output",
            "params",
            "macs",
            "macs_valid",
            "macs_ptflops",
            "kMAC/px",
            "median ms",
            "MACs/tick"
        );
        let row = |out: &mut String,
                   name: &str,
                   kind: &str,
                   shape: &str,
                   c: [u64; 4],
                   s: f64,
                   mpc: String| {
            let _ = writeln!(
                out,
                "{:<width$} {:<19} {:<15} {:>10} {:>13} {:>13} {:>13} {:>8.3} {:>10.3} {:>9}",
                name,
                kind,
                shape,
                c[0],
                c[1],
                c[2],
                c[3],
                c[3] as f64 / pixels / 1000.0,
                s * 1e3,
                mpc
            );
        };
        for (l, name) in self.layers.iter().zip(&names) {
            let kind = match &l.folded_into {
                Some(_) => format!("{} (folded)", l.kind),
                None => l.kind.to_string(),
            };
            let mpc = l.macs_per_cycle.map_or_else(|| "-".to_string(), |m| format!("{m:.2}"));
            let c = [l.params, l.macs, l.macs_valid, l.macs_ptflops];
            row(&mut out, name, &kind, &shape_str(l.output_shape), c, l.median_s, mpc);
        }
        let t = &self.total;
        let c = [t.params, t.macs, t.macs_valid, t.macs_ptflops];
        let mpc = format!("{:.2}", t.macs_per_cycle);
        row(&mut out, "total", "", &shape_str(self.output_shape), c, t.median_s, mpc);
        let _ = writeln!(
            out,
            "macs: dense multiply-adds of the convs (conv, linear, dsc, acblock), no bias; \
             macs_valid: those reading real input; macs_ptflops: ptflops' module count \
             (docs/networks.md); MACs/tick: macs_valid per {} tick of the median",
            timing::CLOCK
        );
        if let Some(c) = &self.check {
            let _ = writeln!(
                out,
                "check: normwise relative error {:.3e} (max abs {:.3e}) against the reference \
                 run, tolerance {:.0e}",
                c.max_rel, c.max_abs, c.tolerance
            );
        }
        out
    }
}
