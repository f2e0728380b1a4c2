//! Running a [`Network`]: the plan (which layers fold into which conv),
//! each step prepared on an engine, runs timed step by step, the report.
//!
//! The plan is made once, at [`Network::prepare`]. On the JIT a
//! BatchNorm folds into the conv (or linear layer) right before it when nothing else reads
//! that conv's output and the conv has no activation, and an activation
//! that alone reads a conv's (or its folded BatchNorm's) output is fused
//! into the conv's kernel; the folded layers keep their report rows, with
//! no time of their own. Everything else is a step of its own: convs,
//! blocks (a [`PreparedDsc`], an ACNet block's deploy conv or its training
//! form), and BatchNorm, activation, add and pooling as plain loops over
//! the tensor.
//!
//! The reference engine runs the model as written, as the oracle
//! (`--check`): nothing folded, every conv through the reference
//! interpreter, a depthwise-separable block as its two convs
//! ([`Dsc::reference`]), an ACNet block as its three branches.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::graph::{Cost, Graph, Operation, Pool, Source, in_layer};
use super::weights::{DscParams, Network, Params};
use crate::blocks::{BatchNorm, DscMode, PreparedDsc, Training};
use crate::engine::{Engine, Prepared};
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::reference::{self, Deviation};
use crate::spec::Activation;
use crate::terminal::escape;
use crate::timing::{self, Measurement};

/// How [`Network::prepare`] runs a network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// [`Engine::Jit`] (folding, fused kernels) or [`Engine::Reference`]
    /// (the model as written, interpreted).
    pub engine: Engine,
    /// How depthwise-separable blocks run unless their layer says.
    pub dsc: DscMode,
    /// The most threads a step may use.
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options { engine: Engine::Jit, dsc: DscMode::Fused, threads: 1 }
    }
}

/// The normwise relative error (`reference::compare`'s `max_rel`) past
/// which a network's output fails its check against the reference run.
pub const CHECK_TOLERANCE: f64 = 1e-4;

/// Where a step's operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Input,
    Step(usize),
}

/// What one step executes.
enum Exec {
    Conv(Box<dyn Prepared>),
    Dsc(Box<PreparedDsc>),
    DscReference(Box<DscParams>),
    AcTraining(Training),
    BatchNorm(BatchNorm),
    Activation(Activation),
    Add { with: Slot, activation: Activation },
    MaxPool(Pool),
    GlobalAvgPool,
}

struct Step {
    /// The node it reports on.
    node: usize,
    input: Slot,
    in_shape: [usize; 4],
    exec: Exec,
}

/// A network prepared on an engine: every kernel compiled, every weight
/// packed, every buffer allocated.
pub struct PreparedNet {
    graph: Graph,
    options: Options,
    steps: Vec<Step>,
    /// Per node: the step whose output is its value.
    value: Vec<usize>,
    /// Per node: the conv node it was folded into.
    folded_into: Vec<Option<usize>>,
    outputs: Vec<Vec<f32>>,
    compile_time: Duration,
}

/// Which nodes fold into which: per node, the conv node whose kernel
/// computes it, when it is not computed on its own.
fn fold_plan(network: &Network) -> Vec<Option<usize>> {
    let graph = &network.graph;
    let readers = graph.readers();
    let nodes = graph.nodes();
    let mut folded: Vec<Option<usize>> = vec![None; nodes.len()];
    // Per conv node: whether its kernel has taken a BatchNorm, an activation.
    let mut has_bn = vec![false; nodes.len()];
    let mut has_act = vec![false; nodes.len()];
    // A conv or a linear layer without an activation of its own.
    let is_conv = |j: usize| {
        matches!(nodes[j].kind(), "conv" | "linear")
            && matches!(&network.params[j], Params::Conv(c) if c.spec().activation() == Activation::None)
    };
    for (i, node) in nodes.iter().enumerate() {
        let Source::Node(j) = node.input() else { continue };
        if readers[j] != 1 {
            continue;
        }
        match node.op {
            Operation::BatchNorm(_) if is_conv(j) && folded[j].is_none() && !has_bn[j] => {
                folded[i] = Some(j);
                has_bn[j] = true;
            }
            Operation::Activation(_) => {
                let conv = folded[j].or(is_conv(j).then_some(j));
                if let Some(c) = conv.filter(|&c| !has_act[c]) {
                    folded[i] = Some(c);
                    has_act[c] = true;
                }
            }
            _ => {}
        }
    }
    folded
}

impl Network {
    /// Prepares every step on `options.engine`, compiled by `compiler`
    /// (the host's when `None`).
    pub fn prepare(&self, options: &Options, compiler: Option<&Compiler>) -> Result<PreparedNet> {
        let start = Instant::now();
        let jit = match options.engine {
            Engine::Jit => true,
            Engine::Reference => false,
            other => {
                return Err(Error::Model {
                    layer: super::model::MODEL.into(),
                    reason: format!("networks run on the jit or the reference engine, not {other}"),
                });
            }
        };
        // The reference engine compiles nothing.
        let host;
        let compiler = match compiler {
            Some(c) => Some(c),
            None if jit => {
                host = Compiler::host()?;
                Some(&host)
            }
            None => None,
        };
        let graph = &self.graph;
        let nodes = graph.nodes();
        let folded = if jit { fold_plan(self) } else { vec![None; nodes.len()] };
        // Every node not folded into a conv is a step with an output of
        // its own. They are allocated before anything is compiled, so a
        // model too large for the memory fails at once.
        let outputs = nodes
            .iter()
            .zip(&folded)
            .filter(|(_, folded)| folded.is_none())
            .map(|(node, _)| {
                let len = node.output_shape().iter().product();
                crate::alloc::zeroed_f32(len, "the layer's output").map_err(in_layer(node.name()))
            })
            .collect::<Result<Vec<_>>>()?;
        let threads = options.threads;
        let mut steps: Vec<Step> = Vec::new();
        let mut value = vec![0; nodes.len()];
        let slot = |value: &[usize], s: Source| match s {
            Source::Input => Slot::Input,
            Source::Node(j) => Slot::Step(value[j]),
        };
        for (i, node) in nodes.iter().enumerate() {
            let name = node.name();
            let within = super::graph::in_layer(name);
            if let Some(c) = folded[i] {
                // The step of the conv it folds into computes it.
                value[i] = value[c];
                continue;
            }
            let exec = match (&node.op, &self.params[i]) {
                (Operation::Conv(_), Params::Conv(conv)) => {
                    // Fold what the plan gives this conv.
                    let mut conv = conv.try_clone().map_err(&within)?;
                    for (k, other) in nodes.iter().enumerate().skip(i + 1) {
                        if folded[k] != Some(i) {
                            continue;
                        }
                        conv = match (&other.op, &self.params[k]) {
                            (Operation::BatchNorm(_), Params::BatchNorm(bn)) => conv.fold(bn),
                            (Operation::Activation(act), _) => conv.with_activation(*act),
                            _ => unreachable!("only BatchNorms and activations fold"),
                        }
                        .map_err(super::graph::in_layer(other.name()))?;
                    }
                    Exec::Conv(conv.prepare(options.engine, compiler, threads).map_err(&within)?)
                }
                (Operation::Dsc(op), Params::Dsc(params)) if jit => {
                    let mode = op.mode.unwrap_or(options.dsc);
                    let block = params.folded().map_err(&within)?;
                    Exec::Dsc(Box::new(block.prepare(mode, compiler, threads).map_err(&within)?))
                }
                (Operation::Dsc(_), Params::Dsc(params)) => {
                    Exec::DscReference(Box::new(params.try_clone().map_err(&within)?))
                }
                (Operation::AcBlock { deploy: true, .. }, Params::AcBlock(block)) if jit => {
                    let conv = block.deploy().map_err(&within)?;
                    Exec::Conv(conv.prepare(Engine::Jit, compiler, threads).map_err(&within)?)
                }
                (Operation::AcBlock { .. }, Params::AcBlock(block)) => Exec::AcTraining(
                    block.training(options.engine, compiler, threads).map_err(&within)?,
                ),
                (Operation::BatchNorm(_), Params::BatchNorm(bn)) => Exec::BatchNorm(bn.clone()),
                (Operation::Activation(act), _) => Exec::Activation(*act),
                (Operation::Add { with, activation }, _) => {
                    Exec::Add { with: slot(&value, *with), activation: *activation }
                }
                (Operation::MaxPool(pool), _) => Exec::MaxPool(*pool),
                (Operation::GlobalAvgPool, _) => Exec::GlobalAvgPool,
                _ => unreachable!("binding gives every operation its parameters"),
            };
            value[i] = steps.len();
            steps.push(Step {
                node: i,
                input: slot(&value, node.input()),
                in_shape: node.input_shape(),
                exec,
            });
        }
        debug_assert_eq!(outputs.len(), steps.len(), "one output per step");
        let compile_time = start.elapsed();
        log::info!("prepared {} ({} steps) in {compile_time:?}", graph.name(), steps.len());
        Ok(PreparedNet {
            graph: graph.clone(),
            options: *options,
            steps,
            value,
            folded_into: folded,
            outputs,
            compile_time,
        })
    }

    /// Runs the network as written on the reference engine and compares
    /// `output` (this network's output on `input`, from any engine) with
    /// its output.
    pub fn check(&self, input: &[f32], output: &[f32]) -> Result<Deviation> {
        let options = Options { engine: Engine::Reference, ..Options::default() };
        let mut reference = self.prepare(&options, None)?;
        let expected = reference.run(input)?;
        if output.len() != expected.len() {
            return Err(Error::BufferLength {
                what: "network output",
                shape: self.graph.output_shape().to_vec(),
                expected: expected.len(),
                found: output.len(),
            });
        }
        Ok(reference::compare(output, expected))
    }
}

impl Exec {
    /// Computes `y` from `x` (of `shape`) and, for an add, `with`.
    fn run(&self, x: &[f32], with: Option<&[f32]>, y: &mut [f32], shape: [usize; 4]) -> Result<()> {
        match self {
            Exec::Conv(layer) => layer.run(x, y),
            Exec::Dsc(block) => block.run(x, y),
            Exec::DscReference(block) => {
                y.copy_from_slice(&block.reference(x)?);
                Ok(())
            }
            Exec::AcTraining(block) => block.run(x, y),
            Exec::BatchNorm(bn) => {
                y.copy_from_slice(x);
                bn.apply(y, shape)
            }
            Exec::Activation(act) => {
                y.iter_mut().zip(x).for_each(|(y, &x)| *y = act.apply_f32(x));
                Ok(())
            }
            Exec::Add { activation, .. } => {
                let with = with.expect("an add has its operand");
                for ((y, &a), &b) in y.iter_mut().zip(x).zip(with) {
                    *y = activation.apply_f32(a + b);
                }
                Ok(())
            }
            Exec::MaxPool(pool) => max_pool(pool, x, shape, y),
            Exec::GlobalAvgPool => {
                let plane = shape[2] * shape[3];
                for (y, x) in y.iter_mut().zip(x.chunks(plane)) {
                    *y = (x.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32;
                }
                Ok(())
            }
        }
    }
}

/// Max pooling of `x` (NCHW of `shape`) into `y`: each output the largest
/// input of its window, the padding never chosen (PyTorch's −∞); NaN wins,
/// as in PyTorch. Separable: each input row's maxima over the column
/// windows first, then the maxima of those over the row windows.
fn max_pool(pool: &Pool, x: &[f32], shape: [usize; 4], y: &mut [f32]) -> Result<()> {
    let [_, _, h, w] = shape;
    let (kernel, stride, pad) = (pool.kernel, pool.stride, pool.padding);
    let out_w = (w + 2 * pad[1] - kernel[1]) / stride[1] + 1;
    let out_h = (h + 2 * pad[0] - kernel[0]) / stride[0] + 1;
    // The input rows or columns of window `o` on an axis, inside the input.
    let window = |o: usize, axis: usize, size: usize| {
        let start = (o * stride[axis]) as isize - pad[axis] as isize;
        let end = (start + kernel[axis] as isize).min(size as isize) as usize;
        start.max(0) as usize..end
    };
    let larger = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    let mut rows = crate::alloc::filled(h * out_w, f32::NEG_INFINITY, "the pool's row maxima")?;
    for (x, y) in x.chunks(h * w).zip(y.chunks_mut(out_h * out_w)) {
        for (row, maxima) in x.chunks(w).zip(rows.chunks_mut(out_w)) {
            for (ox, m) in maxima.iter_mut().enumerate() {
                *m = row[window(ox, 1, w)].iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
            }
        }
        for (oy, out) in y.chunks_mut(out_w).enumerate() {
            out.fill(f32::NEG_INFINITY);
            for maxima in
                rows.chunks(out_w).skip(window(oy, 0, h).start).take(window(oy, 0, h).len())
            {
                out.iter_mut().zip(maxima).for_each(|(o, &v)| *o = larger(*o, v));
            }
        }
    }
    Ok(())
}

impl PreparedNet {
    /// The graph it runs.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// How long preparing (compiling, packing) took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// The output of the network on `input` (`[N, C, H, W]` of the model's
    /// input), its length checked first.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32]> {
        self.forward(input, None)?;
        Ok(self.output())
    }

    fn output(&self) -> &[f32] {
        let last = self.value[self.graph.nodes().len() - 1];
        &self.outputs[last]
    }

    /// One run, each step measured into `times` when given.
    fn forward(&mut self, input: &[f32], mut times: Option<&mut Vec<Measurement>>) -> Result<()> {
        let shape = self.graph.input_shape();
        let expected: usize = shape.iter().product();
        if input.len() != expected {
            return Err(Error::BufferLength {
                what: "model input",
                shape: shape.to_vec(),
                expected,
                found: input.len(),
            });
        }
        for (i, step) in self.steps.iter().enumerate() {
            let (done, rest) = self.outputs.split_at_mut(i);
            let read = |slot: Slot| match slot {
                Slot::Input => input,
                Slot::Step(j) => &done[j][..],
            };
            let x = read(step.input);
            let with = match step.exec {
                Exec::Add { with, .. } => Some(read(with)),
                _ => None,
            };
            let (result, took) =
                timing::measure(|| step.exec.run(x, with, &mut rest[0], step.in_shape));
            result.map_err(super::graph::in_layer(self.graph.nodes()[step.node].name()))?;
            if let Some(times) = times.as_deref_mut() {
                times.push(took);
            }
        }
        Ok(())
    }

    /// Runs the network once to warm up, then `runs` times, timing every
    /// step; returns the last run's output and the report of medians.
    pub fn measure(&mut self, input: &[f32], runs: usize) -> Result<(Vec<f32>, Report)> {
        if runs == 0 {
            return Err(Error::Model {
                layer: super::model::MODEL.into(),
                reason: "give at least one timed run".into(),
            });
        }
        self.forward(input, None)?;
        let mut steps: Vec<Vec<Measurement>> = vec![Vec::with_capacity(runs); self.steps.len()];
        let mut totals = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut times = Vec::with_capacity(self.steps.len());
            let (result, total) = timing::measure(|| self.forward(input, Some(&mut times)));
            result?;
            totals.push(total);
            for (all, took) in steps.iter_mut().zip(times) {
                all.push(took);
            }
        }
        let report = self.report(&steps, &totals, runs);
        Ok((crate::alloc::copied(self.output(), "the model's output")?, report))
    }

    fn report(&self, steps: &[Vec<Measurement>], totals: &[Measurement], runs: usize) -> Report {
        let nodes = self.graph.nodes();
        let mut layers: Vec<LayerReport> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
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
                    folded_into: self.folded_into[i].map(|c| nodes[c].name().to_string()),
                }
            })
            .collect();
        for (step, times) in self.steps.iter().zip(steps) {
            let row = &mut layers[step.node];
            row.median_s = median(times.iter().map(|t| t.wall.as_secs_f64()));
            row.median_cycles = median(times.iter().map(|t| t.cycles as f64)) as u64;
            row.macs_per_cycle = (row.macs_valid > 0)
                .then(|| row.macs_valid as f64 / row.median_cycles.max(1) as f64);
        }
        let cost: Cost = self.graph.total();
        let input = self.graph.input_shape();
        let pixels = (input[0] * input[2] * input[3]) as f64;
        let median_cycles = median(totals.iter().map(|t| t.cycles as f64)) as u64;
        Report {
            model: self.graph.name().to_string(),
            input,
            output_shape: self.graph.output_shape(),
            engine: self.options.engine,
            dsc: self.options.dsc,
            threads: self.options.threads,
            runs,
            compile_s: self.compile_time.as_secs_f64(),
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
    /// Its kind, as the model file writes it.
    pub kind: &'static str,
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
    /// The median time of its step (0 when folded into a conv's).
    pub median_s: f64,
    /// The median TSC ticks of its step.
    pub median_cycles: u64,
    /// `macs_valid` per TSC tick of the median, for layers with MACs that
    /// run as a step of their own.
    pub macs_per_cycle: Option<f64>,
    /// The conv whose kernel computes it, when it was folded.
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
    /// Whether `max_rel` is within it.
    pub passed: bool,
}

impl From<Deviation> for CheckReport {
    fn from(d: Deviation) -> CheckReport {
        CheckReport {
            max_abs: d.max_abs,
            max_rel: d.max_rel,
            tolerance: CHECK_TOLERANCE,
            passed: d.max_rel <= CHECK_TOLERANCE,
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

fn shape_str(s: [usize; 4]) -> String {
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
