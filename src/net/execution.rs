//! Execution: a [`Network`] prepared on an engine — the fold plan
//! ([`super::folding`]), each step's op compiled or bound
//! ([`super::ops`]), every buffer allocated — and run, step by step,
//! timed for the [`Report`] when measured.
//!
//! On the JIT, convs run with what folds into them, blocks as a
//! [`PreparedDsc`](crate::blocks::PreparedDsc) or an ACNet block's deploy
//! conv or training form. The reference engine runs the model as written,
//! as the oracle (`--check`): nothing folded, every conv through the
//! reference interpreter, a depthwise-separable block as its two convs
//! ([`Dsc::reference`](crate::blocks::Dsc::reference)), an ACNet block as
//! its three branches.

use std::time::{Duration, Instant};

use super::graph::{Graph, Node};
use super::infer::{Operation, Source};
use super::memory::{self, Slot};
use super::model::MODEL;
use super::ops::{Adds, Exec};
use super::report::Report;
use super::weights::{Network, Params};
use super::{Options, folding, in_layer, model_error};
use crate::blocks::DscMode;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::kernel::Epilogue;
use crate::reference::{self, Deviation};
use crate::spec::ValidSpec;
use crate::timing::{self, Measurement};

struct Step {
    /// The node it reports on.
    node: usize,
    /// What it reads: its input, then an add's, a mul's or a sub's `with`,
    /// a concat's other operands, or the residual a conv adds.
    operands: Vec<Slot>,
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
    /// Per node: the node (a conv, an add) it was folded into.
    folded_into: Vec<Option<usize>>,
    /// The buffers the steps write, shared among steps whose outputs are
    /// never alive at once ([`memory::plan`]).
    buffers: Vec<Vec<f32>>,
    /// Per step: its buffer, and its output's length.
    outputs: Vec<(usize, usize)>,
    compile_time: Duration,
}

/// A network being prepared: its options, the engine's compiler (none for
/// the reference) and the fold plan.
struct Preparing<'a> {
    network: &'a Network,
    options: &'a Options,
    compiler: Option<&'a Compiler>,
    /// Per node, the node (a conv, an add) it folds into (none on the reference engine).
    plan: Vec<Option<usize>>,
    /// Per node, the residual its conv adds ([`folding::residuals`]).
    residuals: Vec<Option<Source>>,
}

impl Preparing<'_> {
    fn jit(&self) -> bool {
        self.options.engine == Engine::Jit
    }

    /// Node `i`'s op, compiled or bound.
    fn exec(&self, i: usize, node: &Node) -> Result<Exec> {
        let (options, compiler, threads) = (self.options, self.compiler, self.options.threads);
        let within = in_layer(node.name());
        let residual = self.residuals[i].is_some();
        Ok(match (&node.op, &self.network.params[i]) {
            (Operation::Conv(_), Params::Conv(conv)) if residual => {
                let conv = folding::fold_into(self.network, &self.plan, i, conv)?;
                let engine = options.engine;
                let layer = conv.prepare_epilogue(engine, compiler, threads, Epilogue::Sum);
                let step = Box::new(Exec::Conv(layer.map_err(&within)?));
                Exec::Residual { step, adds: Adds::InKernel }
            }
            (Operation::Conv(_), Params::Conv(conv)) => {
                let conv = folding::fold_into(self.network, &self.plan, i, conv)?;
                Exec::Conv(conv.prepare(options.engine, compiler, threads).map_err(&within)?)
            }
            (Operation::Dsc(op), Params::Dsc(params)) if self.jit() => {
                let mode = op.mode.unwrap_or(options.dsc);
                let block = params.folded().map_err(&within)?;
                let epilogue = if residual { Epilogue::Sum } else { Epilogue::Store };
                let block =
                    block.prepare_epilogue(mode, compiler, threads, epilogue).map_err(&within)?;
                // Fused, the block adds after its kernel (the folding
                // leaves it no activation then).
                let adds = if block.epilogue() == epilogue { Adds::InKernel } else { Adds::After };
                let step = Exec::Dsc(Box::new(block));
                if residual { Exec::Residual { step: Box::new(step), adds } } else { step }
            }
            (Operation::Dsc(_), Params::Dsc(params)) => {
                Exec::DscReference(Box::new(params.try_clone().map_err(&within)?))
            }
            (Operation::AcBlock { deploy: true, .. }, Params::AcBlock(block)) if self.jit() => {
                let conv = block.deploy().map_err(&within)?;
                Exec::Conv(conv.prepare(Engine::Jit, compiler, threads).map_err(&within)?)
            }
            (Operation::AcBlock { .. }, Params::AcBlock(block)) => Exec::AcTraining(
                block.training(options.engine, compiler, threads).map_err(&within)?,
            ),
            (Operation::BatchNorm(_), Params::BatchNorm(bn)) => Exec::BatchNorm(bn.clone()),
            (Operation::Activation(act), _) => Exec::Activation(*act),
            (Operation::Add { .. }, _) => {
                Exec::Add(folding::add_activation(self.network, &self.plan, i))
            }
            (Operation::MaxPool(pool), _) => Exec::MaxPool(*pool),
            (Operation::AvgPool { pool, count_include_pad }, _) => {
                Exec::AvgPool { pool: *pool, count_include_pad: *count_include_pad }
            }
            (Operation::Upsample(up), _) => Exec::Upsample(*up),
            (Operation::Pad(pad), _) => Exec::Pad(*pad),
            (Operation::Slice { start, end }, _) => Exec::Slice(*start..*end),
            (Operation::ChannelShuffle(groups), _) => Exec::ChannelShuffle(*groups),
            (Operation::Reshape, _) => Exec::Reshape,
            (Operation::Permute(dims), _) => Exec::Permute(*dims),
            (Operation::Affine { .. }, Params::Affine { weight, bias }) => {
                Exec::Affine { weight: weight.clone(), bias: bias.clone() }
            }
            (Operation::GlobalAvgPool, _) => Exec::GlobalAvgPool,
            (Operation::Concat { channels, .. }, _) => Exec::Concat(channels.clone()),
            (Operation::Prelu(_), Params::Prelu(slopes)) => Exec::Prelu(slopes.clone()),
            (Operation::Function(f), _) => Exec::Function(*f),
            (Operation::Binary { op, per_channel, .. }, _) => {
                Exec::Binary { op: *op, per_channel: *per_channel }
            }
            (Operation::Shuffle(shuffle), _) => Exec::Shuffle(*shuffle),
            _ => unreachable!("binding gives every operation its parameters"),
        })
    }
}

/// A conv kernel the JIT compiles for a network ([`Network::jit_convs`]).
#[derive(Clone, Debug)]
pub struct JitConv {
    /// The conv as its kernel computes it: the BatchNorms folded into it
    /// (so a bias), the activation fused.
    pub spec: ValidSpec,
    /// The first layer that runs it (`.depthwise` or `.pointwise` added
    /// for a block's conv).
    pub name: String,
    /// The nodes whose step runs this kernel (one conv, or a
    /// depthwise-separable block run as two kernels), in order.
    pub nodes: Vec<usize>,
}

impl Network {
    /// The distinct conv kernels the JIT compiles for this network on
    /// `options`, in the order they first run: what `convjit tune --model`
    /// tunes and what a tuning cache is asked for. Layers of the same
    /// shape (their names aside) are one kernel, whose schedule serves
    /// them all (a layer that adds a residual in its epilogue compiles
    /// code of its own, with that schedule). A depthwise-separable
    /// block run fused is not among them (its kernel is a block's, with a
    /// schedule of its own; one `auto` may run unfused, so its two convs
    /// are), nor an ACNet block in its training form.
    pub fn jit_convs(&self, options: &Options) -> Result<Vec<JitConv>> {
        let plan = folding::plan(self);
        let mut convs: Vec<JitConv> = Vec::new();
        let nodes = self.graph.nodes();
        let mut add = |spec: &ValidSpec, node: usize, part: &str| {
            let mut key = spec.to_conv_spec();
            key.name = None;
            match convs.iter_mut().find(|c| {
                let mut other = c.spec.to_conv_spec();
                other.name = None;
                other == key
            }) {
                Some(c) if c.nodes.last() != Some(&node) => c.nodes.push(node),
                Some(_) => {}
                None => convs.push(JitConv {
                    spec: spec.clone(),
                    name: format!("{}{part}", nodes[node].name()),
                    nodes: vec![node],
                }),
            }
        };
        for (i, node) in nodes.iter().enumerate() {
            let within = in_layer(node.name());
            match (&node.op, &self.params[i]) {
                _ if plan[i].is_some() => {}
                (Operation::Conv(_), Params::Conv(conv)) => {
                    add(folding::fold_into(self, &plan, i, conv)?.spec(), i, "");
                }
                (Operation::AcBlock { deploy: true, .. }, Params::AcBlock(block)) => {
                    add(block.deploy().map_err(&within)?.spec(), i, "");
                }
                (Operation::Dsc(op), Params::Dsc(params)) => {
                    let block = params.folded().map_err(&within)?;
                    if block.mode_for(op.mode.unwrap_or(options.dsc)) != DscMode::Fused {
                        add(block.depthwise().spec(), i, ".depthwise");
                        add(block.pointwise().spec(), i, ".pointwise");
                    }
                }
                _ => {}
            }
        }
        Ok(convs)
    }

    /// Prepares every step on `options.engine`, compiled by `compiler`
    /// (the host's when `None`).
    pub fn prepare(&self, options: &Options, compiler: Option<&Compiler>) -> Result<PreparedNet> {
        let start = Instant::now();
        let jit = match options.engine {
            Engine::Jit => true,
            Engine::Reference => false,
            other => {
                return Err(model_error(
                    MODEL,
                    format!("networks run on the jit or the reference engine, not {other}"),
                ));
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
        let plan = if jit { folding::plan(self) } else { vec![None; nodes.len()] };
        let residuals = folding::residuals(self, &plan);
        let preparing = Preparing { network: self, options, compiler, plan, residuals };
        // Every node not folded into another is a step with an output of
        // its own: what it reads, and where its output is.
        let mut value = vec![0; nodes.len()];
        let mut operands: Vec<Vec<Slot>> = Vec::new();
        let mut lens = Vec::new();
        let mut step_nodes = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            if let Some(c) = preparing.plan[i] {
                // The step of the node it folds into computes it.
                value[i] = value[c];
                continue;
            }
            // A conv's residual is its second operand.
            let mut reads = node.operands();
            reads.extend(preparing.residuals[i]);
            let slot = |s: Source| match s {
                Source::Input(k) => Slot::Input(k),
                Source::Node(j) => Slot::Step(value[j]),
            };
            operands.push(reads.into_iter().map(slot).collect());
            lens.push(node.output_shape().iter().product::<usize>());
            value[i] = step_nodes.len();
            step_nodes.push(i);
        }
        // The buffers, allocated before anything is compiled, so that a
        // model too large for the memory fails at once.
        let kept: Vec<usize> = graph.output_nodes().map(|i| value[i]).collect();
        let shared = memory::plan(&operands, &lens, &kept);
        let buffers = (shared.lens.iter().zip(&shared.sized_by))
            .map(|(&len, &step)| {
                let within = in_layer(nodes[step_nodes[step]].name());
                crate::alloc::zeroed_f32(len, "the layer's output").map_err(within)
            })
            .collect::<Result<Vec<_>>>()?;
        let outputs: Vec<(usize, usize)> = shared.of_step.into_iter().zip(lens).collect();
        let mut steps: Vec<Step> = Vec::with_capacity(step_nodes.len());
        for (i, operands) in step_nodes.into_iter().zip(operands) {
            let node = &nodes[i];
            let exec = preparing.exec(i, node)?;
            steps.push(Step { node: i, operands, in_shape: node.input_shape(), exec });
        }
        debug_assert_eq!(outputs.len(), steps.len(), "one output per step");
        let compile_time = start.elapsed();
        log::info!("prepared {} ({} steps) in {compile_time:?}", graph.name(), steps.len());
        Ok(PreparedNet {
            graph: graph.clone(),
            options: *options,
            steps,
            value,
            folded_into: preparing.plan,
            buffers,
            outputs,
            compile_time,
        })
    }

    /// Runs the network as written on the reference engine and compares
    /// `output` (this network's output on `input`, from any engine) with
    /// its output. For a model of one input; [`Network::check_inputs`]
    /// takes several.
    pub fn check(&self, input: &[f32], output: &[f32]) -> Result<Deviation> {
        self.check_inputs(&[input], output)
    }

    /// [`Network::check`] of a model on `inputs`, one per model input in
    /// order: `output` is its first output.
    pub fn check_inputs(&self, inputs: &[&[f32]], output: &[f32]) -> Result<Deviation> {
        let mut deviations = self.check_outputs(inputs, &[output])?;
        Ok(deviations.remove(0))
    }

    /// Runs the network as written on the reference engine on `inputs`
    /// and compares each of `outputs` (the model's first outputs, in
    /// order, from any engine) with its: one deviation each.
    pub fn check_outputs(&self, inputs: &[&[f32]], outputs: &[&[f32]]) -> Result<Vec<Deviation>> {
        let options = Options { engine: Engine::Reference, ..Options::default() };
        let mut reference = self.prepare(&options, None)?;
        reference.forward(inputs, None)?;
        let expected = reference.outputs();
        if outputs.len() > expected.len() {
            return Err(model_error(
                MODEL,
                format!("{} outputs to check; the model has {}", outputs.len(), expected.len()),
            ));
        }
        let shapes = self.graph.outputs();
        let mut deviations = Vec::with_capacity(outputs.len());
        for ((output, expected), (_, shape)) in outputs.iter().zip(expected).zip(shapes) {
            if output.len() != expected.len() {
                return Err(Error::BufferLength {
                    what: "network output",
                    shape: shape.to_vec(),
                    expected: expected.len(),
                    found: output.len(),
                });
            }
            deviations.push(reference::compare(output, expected));
        }
        Ok(deviations)
    }
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
    /// input), its length checked first. For a model of one input;
    /// [`PreparedNet::run_inputs`] takes several.
    pub fn run(&mut self, input: &[f32]) -> Result<&[f32]> {
        self.run_inputs(&[input])
    }

    /// The output of the network on `inputs`, one per model input in
    /// order ([`Graph::inputs`]), their count and lengths checked first.
    pub fn run_inputs(&mut self, inputs: &[&[f32]]) -> Result<&[f32]> {
        self.forward(inputs, None)?;
        Ok(self.output())
    }

    fn output(&self) -> &[f32] {
        let first = self.graph.output_nodes().next().expect("a graph has an output");
        self.output_of(self.value[first])
    }

    /// Each of the model's outputs ([`Graph::outputs`]), in order, as the
    /// last run left them (after a run that failed, they may hold values
    /// of other layers, which share their buffers within a run).
    pub fn outputs(&self) -> Vec<&[f32]> {
        self.graph.output_nodes().map(|i| self.output_of(self.value[i])).collect()
    }

    /// The output of step `s`.
    fn output_of(&self, s: usize) -> &[f32] {
        let (buffer, len) = self.outputs[s];
        &self.buffers[buffer][..len]
    }

    /// Checks that `inputs` are one per model input, each of its length.
    fn check_inputs(&self, inputs: &[&[f32]]) -> Result<()> {
        let expected = self.graph.inputs();
        if inputs.len() != expected.len() {
            let names: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
            return Err(model_error(
                MODEL,
                format!(
                    "{} input tensor{} given; the model has {} ({})",
                    inputs.len(),
                    if inputs.len() == 1 { "" } else { "s" },
                    expected.len(),
                    names.join(", ")
                ),
            ));
        }
        for (x, (_, shape)) in inputs.iter().zip(expected) {
            let len: usize = shape.iter().product();
            if x.len() != len {
                return Err(Error::BufferLength {
                    what: "model input",
                    shape: shape.to_vec(),
                    expected: len,
                    found: x.len(),
                });
            }
        }
        Ok(())
    }

    /// One run, each step measured into `times` when given.
    fn forward(
        &mut self,
        inputs: &[&[f32]],
        mut times: Option<&mut Vec<Measurement>>,
    ) -> Result<()> {
        self.check_inputs(inputs)?;
        for (i, step) in self.steps.iter().enumerate() {
            let (buffer, len) = self.outputs[i];
            // The step's buffer, written while the others are read (its
            // operands are never in it: `memory::plan`).
            let (before, rest) = self.buffers.split_at_mut(buffer);
            let (y, after) = rest.split_first_mut().expect("the step's buffer");
            let outputs = &self.outputs;
            let read = |slot: &Slot| match *slot {
                Slot::Input(k) => inputs[k],
                Slot::Step(j) => {
                    let (b, len) = outputs[j];
                    debug_assert_ne!(b, buffer, "a step reads the buffer it writes");
                    let other = if b < buffer { &before[b] } else { &after[b - buffer - 1] };
                    &other[..len]
                }
            };
            let xs: Vec<&[f32]> = step.operands.iter().map(read).collect();
            let (result, took) =
                timing::measure(|| step.exec.run(&xs, &mut y[..len], step.in_shape));
            result.map_err(in_layer(self.graph.nodes()[step.node].name()))?;
            if let Some(times) = times.as_deref_mut() {
                times.push(took);
            }
        }
        Ok(())
    }

    /// Runs the network once to warm up, then `runs` times, timing every
    /// step; returns the last run's output and the report of medians.
    pub fn measure(&mut self, input: &[f32], runs: usize) -> Result<(Vec<f32>, Report)> {
        self.measure_inputs(&[input], runs)
    }

    /// [`PreparedNet::measure`] on `inputs`, one per model input in order.
    pub fn measure_inputs(&mut self, inputs: &[&[f32]], runs: usize) -> Result<(Vec<f32>, Report)> {
        if runs == 0 {
            return Err(model_error(MODEL, "give at least one timed run"));
        }
        self.forward(inputs, None)?;
        let mut steps: Vec<(usize, Vec<Measurement>)> =
            self.steps.iter().map(|s| (s.node, Vec::with_capacity(runs))).collect();
        let mut totals = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut times = Vec::with_capacity(self.steps.len());
            let (result, total) = timing::measure(|| self.forward(inputs, Some(&mut times)));
            result?;
            totals.push(total);
            for ((_, all), took) in steps.iter_mut().zip(times) {
                all.push(took);
            }
        }
        let report = Report::new(
            &self.graph,
            &self.options,
            self.compile_time,
            &self.folded_into,
            &steps,
            &totals,
        );
        Ok((crate::alloc::copied(self.output(), "the model's output")?, report))
    }
}
