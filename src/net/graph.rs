//! Shape inference: a [`Model`] checked whole, before anything is compiled
//! or any tensor read, into a [`Graph`] of nodes that know what they read,
//! the shape they give and what they cost.
//!
//! Every conv a layer implies (a conv, a linear layer, a block's convs)
//! becomes a [`ValidSpec`] here, its input shape taken from the layer it
//! reads, so the spec's own validation (contract 1) judges it; its errors
//! come back naming the layer. The counts of [`Cost`] follow
//! docs/networks.md: the convs' [`Complexity`], and ptflops' module hooks
//! for the rest.

use std::collections::HashMap;

use serde::Serialize;

use super::model::{self, INPUT, Layer, MODEL, Model};
use crate::blocks::{AcBlock, BN_EPS, DscMode};
use crate::complexity::Complexity;
use crate::error::{Error, Result};
use crate::spec::{
    Activation, ActivationKind, ConvSpec, MAX_DIM, MAX_TENSOR_ELEMENTS, Op, PaddingSpec, Pair,
    ValidSpec,
};

/// Where a node's operand comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The model's input.
    Input,
    /// The output of the node at this index.
    Node(usize),
}

/// What a layer costs, under the conventions of docs/networks.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Weights, biases and BatchNorms' γ and β (PyTorch's parameters).
    pub params: u64,
    /// Dense multiply-adds of the layer's convs ([`Complexity::macs`]).
    pub macs: u64,
    /// Multiply-adds of its convs that read real input
    /// ([`Complexity::macs_valid`]).
    pub macs_valid: u64,
    /// What ptflops' module hooks count for the layer's PyTorch modules.
    pub macs_ptflops: u64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        // Saturating: a few of the largest legal convs exceed u64.
        Cost {
            params: self.params.saturating_add(o.params),
            macs: self.macs.saturating_add(o.macs),
            macs_valid: self.macs_valid.saturating_add(o.macs_valid),
            macs_ptflops: self.macs_ptflops.saturating_add(o.macs_ptflops),
        }
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), |a, b| a + b)
    }
}

impl From<Complexity> for Cost {
    fn from(c: Complexity) -> Cost {
        Cost {
            params: c.params,
            macs: c.macs,
            macs_valid: c.macs_valid,
            macs_ptflops: c.macs_ptflops,
        }
    }
}

/// The tensor prefixes of a depthwise-separable block.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DscTensors {
    pub depthwise: String,
    pub depthwise_bn: String,
    pub pointwise: String,
    pub pointwise_bn: String,
}

/// A depthwise-separable block, resolved.
#[derive(Clone, Debug)]
pub(crate) struct DscOp {
    /// The depthwise conv: bias as declared, no activation.
    pub depthwise: ValidSpec,
    /// The pointwise conv: bias as declared, no activation.
    pub pointwise: ValidSpec,
    /// Whether a BatchNorm follows each conv.
    pub batchnorm: bool,
    /// After the depthwise conv and after the pointwise one.
    pub activations: [Activation; 2],
    pub tensors: DscTensors,
    /// How the layer says it runs, if it does.
    pub mode: Option<DscMode>,
}

/// Max pooling's geometry, per axis `[h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// What a node computes, its shapes resolved.
#[derive(Clone, Debug)]
pub(crate) enum Operation {
    /// A conv (also a linear layer, as a conv over the whole plane).
    Conv(ValidSpec),
    /// BatchNorm with this ε.
    BatchNorm(f64),
    Activation(Activation),
    Dsc(Box<DscOp>),
    AcBlock {
        /// The block as one conv (with bias), its activation included.
        spec: ValidSpec,
        deploy: bool,
    },
    Add {
        with: Source,
        activation: Activation,
    },
    MaxPool(Pool),
    GlobalAvgPool,
}

/// One layer of a [`Graph`].
#[derive(Clone, Debug)]
pub struct Node {
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) input: Source,
    pub(crate) input_shape: [usize; 4],
    pub(crate) output_shape: [usize; 4],
    pub(crate) op: Operation,
    pub(crate) cost: Cost,
}

impl Node {
    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The layer's kind, as the model file writes it.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
    /// What it reads.
    pub fn input(&self) -> Source {
        self.input
    }
    /// The shape it reads, `[N, C, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }
    /// The shape it gives, `[N, C, H, W]`.
    pub fn output_shape(&self) -> [usize; 4] {
        self.output_shape
    }
    /// Its parameters and multiply-adds.
    pub fn cost(&self) -> Cost {
        self.cost
    }
    /// The other operand of an `add`.
    pub fn with(&self) -> Option<Source> {
        match self.op {
            Operation::Add { with, .. } => Some(with),
            _ => None,
        }
    }
}

/// A model whose shapes chain: every node's input exists, comes earlier
/// and fits it.
#[derive(Clone, Debug)]
pub struct Graph {
    name: String,
    input: [usize; 4],
    nodes: Vec<Node>,
}

fn model_error(layer: &str, reason: impl Into<String>) -> Error {
    Error::Model { layer: layer.to_string(), reason: reason.into() }
}

/// `e` (a spec's or a block's error) as the layer's.
pub(crate) fn in_layer(layer: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Model { .. } => e,
        other => model_error(layer, other.to_string()),
    }
}

impl Graph {
    /// Infers every layer's shapes and costs, in order; refuses what does
    /// not chain, naming the layer.
    pub fn new(model: &Model) -> Result<Graph> {
        if model.input.iter().any(|&d| !(1..=MAX_DIM).contains(&d)) {
            return Err(model_error(
                MODEL,
                format!(
                    "input {:?}: every size must be at least 1 and at most {MAX_DIM}",
                    model.input
                ),
            ));
        }
        let input = model.input.map(|d| d as usize);
        check_size(MODEL, "input", input)?;
        if model.layers.is_empty() {
            return Err(model_error(MODEL, "the model has no layers"));
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, layer) in model.layers.iter().enumerate() {
            let name = layer.name();
            if name.is_empty() || name == INPUT {
                return Err(model_error(
                    if name.is_empty() { "" } else { name },
                    format!("a layer's name must not be empty nor {INPUT:?}"),
                ));
            }
            if index.insert(name, i).is_some() {
                return Err(model_error(name, "two layers have this name"));
            }
        }
        let mut graph = Graph { name: model.name.clone(), input, nodes: Vec::new() };
        for (i, layer) in model.layers.iter().enumerate() {
            let name = layer.name();
            let resolve = |what: &str, target: Option<&str>| -> Result<Source> {
                match target {
                    None if i == 0 => Ok(Source::Input),
                    None => Ok(Source::Node(i - 1)),
                    Some(INPUT) => Ok(Source::Input),
                    Some(t) => match index.get(t) {
                        Some(&j) if j < i => Ok(Source::Node(j)),
                        Some(&j) if j == i => {
                            Err(model_error(name, format!("{what} {t:?} is the layer itself")))
                        }
                        Some(_) => Err(model_error(
                            name,
                            format!("{what} {t:?} is a later layer: a layer reads earlier ones"),
                        )),
                        None => {
                            Err(model_error(name, format!("{what} {t:?}: no layer has this name")))
                        }
                    },
                }
            };
            let source = resolve("input", layer.input())?;
            let with = match layer {
                Layer::Add(add) => {
                    let with = resolve("with", Some(&add.with))?;
                    Some((with, graph.shape_of(with)))
                }
                _ => None,
            };
            let shape = graph.shape_of(source);
            let (op, output_shape, cost) = infer(layer, shape, with).map_err(in_layer(name))?;
            check_size(name, "output", output_shape)?;
            graph.nodes.push(Node {
                name: name.to_string(),
                kind: layer.kind(),
                input: source,
                input_shape: shape,
                output_shape,
                op,
                cost,
            });
        }
        Ok(graph)
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The model's input shape.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input
    }
    /// The model's output shape: the last layer's.
    pub fn output_shape(&self) -> [usize; 4] {
        self.nodes.last().map_or(self.input, |n| n.output_shape)
    }
    /// The nodes, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// The sum of every node's cost.
    pub fn total(&self) -> Cost {
        self.nodes.iter().map(|n| n.cost).sum()
    }
    /// The shape `source` holds.
    pub(crate) fn shape_of(&self, source: Source) -> [usize; 4] {
        match source {
            Source::Input => self.input,
            Source::Node(i) => self.nodes[i].output_shape,
        }
    }
    /// How many nodes read each node's output (as `input` or `with`).
    pub(crate) fn readers(&self) -> Vec<usize> {
        let mut readers = vec![0; self.nodes.len()];
        for node in &self.nodes {
            for source in [Some(node.input), node.with()].into_iter().flatten() {
                if let Source::Node(j) = source {
                    readers[j] += 1;
                }
            }
        }
        readers
    }
}

fn numel(shape: [usize; 4]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

/// Refuses a tensor of more than [`MAX_TENSOR_ELEMENTS`] elements (the
/// limit every conv's operands have), so that no size a model states
/// overflows or allocates without bound.
fn check_size(layer: &str, what: &str, shape: [usize; 4]) -> Result<()> {
    let elements: u128 = shape.iter().map(|&d| d as u128).product();
    if elements > u128::from(MAX_TENSOR_ELEMENTS) {
        return Err(model_error(
            layer,
            format!(
                "its {what} {shape:?} has {elements} elements, more than {MAX_TENSOR_ELEMENTS}"
            ),
        ));
    }
    Ok(())
}

/// The activation a kind and slope stand for, by the spec's own rules
/// (contract 1): a leaky ReLU's slope defaults to 0.01 and must be finite,
/// and a slope is only allowed with one.
pub(crate) fn activation(kind: ActivationKind, negative_slope: Option<f32>) -> Result<Activation> {
    let mut probe = ConvSpec::new(Op::Conv2d, 1, 1, 1, (1, 1), [1, 1]);
    (probe.activation, probe.negative_slope) = (kind, negative_slope);
    Ok(probe.validate()?.activation())
}

/// Checks a channel count the layer states against the one it reads.
fn check_count(layer: &str, field: &str, stated: Option<i64>, found: usize) -> Result<()> {
    match stated {
        Some(c) if c != found as i64 => {
            Err(model_error(layer, format!("{field} is {c} but the layer's input has {found}")))
        }
        _ => Ok(()),
    }
}

/// The spec of a conv2d on `shape` with the fields a layer gives.
struct ConvFields {
    op: Option<Op>,
    out_channels: i64,
    kernel: Pair,
    stride: Option<Pair>,
    padding: Option<PaddingSpec>,
    dilation: Option<Pair>,
    groups: Option<i64>,
    output_padding: Option<Pair>,
    bias: bool,
    activation: Option<ActivationKind>,
    negative_slope: Option<f32>,
}

fn conv_spec(name: &str, shape: [usize; 4], f: ConvFields) -> Result<ValidSpec> {
    let [n, c, h, w] = shape.map(|d| d as i64);
    let mut spec = ConvSpec::new(f.op.unwrap_or(Op::Conv2d), n, c, f.out_channels, (h, w), [1, 1]);
    spec.name = Some(name.to_string());
    spec.kernel = f.kernel;
    spec.stride = f.stride.unwrap_or(Pair::One(1));
    spec.padding = f.padding.unwrap_or_default();
    spec.dilation = f.dilation.unwrap_or(Pair::One(1));
    spec.groups = f.groups.unwrap_or(1);
    spec.output_padding = f.output_padding.unwrap_or(Pair::One(0));
    spec.bias = f.bias;
    spec.activation = f.activation.unwrap_or_default();
    spec.negative_slope = f.negative_slope;
    spec.validate()
}

/// A pooling layer's `field` as `[h, w]`, each value checked to be in
/// `min..=`[`MAX_DIM`] (the spec's bound on every size, which keeps the
/// pool's index arithmetic far from overflow).
fn pool_pair(layer: &str, field: &str, p: Pair, min: i64) -> Result<[usize; 2]> {
    let hw = match p {
        Pair::One(v) => [v, v],
        Pair::Two(hw) => hw,
    };
    if hw.iter().all(|v| (min..=MAX_DIM).contains(v)) {
        return Ok(hw.map(|v| v as usize));
    }
    let least = if min == 0 { "not be negative" } else { "be at least 1" };
    Err(model_error(
        layer,
        format!("max_pool {field} {hw:?}: each value must {least} and at most {MAX_DIM}"),
    ))
}

/// A node's operation, output shape and cost; `with` is an `add`'s other
/// operand and its shape. Errors other than [`Error::Model`] are the
/// layer's: the caller names it.
fn infer(
    layer: &Layer,
    shape: [usize; 4],
    with: Option<(Source, [usize; 4])>,
) -> Result<(Operation, [usize; 4], Cost)> {
    let name = layer.name();
    let [n, c, h, w] = shape;
    Ok(match layer {
        Layer::Conv(l) => {
            check_count(name, "in_channels", l.in_channels, c)?;
            let spec = conv_spec(
                name,
                shape,
                ConvFields {
                    op: l.op,
                    out_channels: l.out_channels,
                    kernel: l.kernel,
                    stride: l.stride,
                    padding: l.padding.clone(),
                    dilation: l.dilation,
                    groups: l.groups,
                    output_padding: l.output_padding,
                    bias: l.bias.unwrap_or(true),
                    activation: l.activation,
                    negative_slope: l.negative_slope,
                },
            )?;
            let cost = Complexity::of(&spec).into();
            let out = spec.output_shape();
            (Operation::Conv(spec), out, cost)
        }
        Layer::Linear(l) => {
            check_count(name, "in_features", l.in_features, c * h * w)?;
            let spec = conv_spec(
                name,
                shape,
                ConvFields {
                    op: None,
                    out_channels: l.out_features,
                    kernel: Pair::Two([h as i64, w as i64]),
                    stride: None,
                    padding: None,
                    dilation: None,
                    groups: None,
                    output_padding: None,
                    bias: l.bias.unwrap_or(true),
                    activation: None,
                    negative_slope: None,
                },
            )?;
            let cost = Complexity::of(&spec).into();
            let out = spec.output_shape();
            (Operation::Conv(spec), out, cost)
        }
        Layer::Batchnorm(l) => {
            check_count(name, "num_features", l.num_features, c)?;
            let eps = l.eps.unwrap_or(BN_EPS);
            if !(eps.is_finite() && eps > 0.0) {
                return Err(model_error(name, format!("eps {eps} must be positive")));
            }
            let cost =
                Cost { params: 2 * c as u64, macs_ptflops: 2 * numel(shape), ..Cost::default() };
            (Operation::BatchNorm(eps), shape, cost)
        }
        Layer::Activation(l) => {
            let act = activation(l.activation, l.negative_slope)?;
            // An identity is no module: ptflops sees nothing.
            let ptflops = if act == Activation::None { 0 } else { numel(shape) };
            (Operation::Activation(act), shape, Cost { macs_ptflops: ptflops, ..Cost::default() })
        }
        Layer::Add(l) => {
            let (with, other) = with.expect("an add's other operand is resolved");
            if other != shape {
                return Err(model_error(
                    name,
                    format!(
                        "adds {shape:?} (its input) and {other:?} ({:?}): the shapes differ",
                        l.with
                    ),
                ));
            }
            let act = activation(l.activation.unwrap_or_default(), l.negative_slope)?;
            // The `+` is functional (no module hook sees it); an activation
            // after it is a module.
            let ptflops = if act == Activation::None { 0 } else { numel(shape) };
            (
                Operation::Add { with, activation: act },
                shape,
                Cost { macs_ptflops: ptflops, ..Cost::default() },
            )
        }
        Layer::MaxPool(l) => {
            // Each value bounded before any arithmetic on it (a padding
            // near 2^63 once wrapped, and the pool read out of bounds).
            let kernel = pool_pair(name, "kernel", l.kernel, 1)?;
            let stride = l.stride.map_or(Ok(kernel), |s| pool_pair(name, "stride", s, 1))?;
            let padding = l.padding.map_or(Ok([0, 0]), |p| pool_pair(name, "padding", p, 0))?;
            if (0..2).any(|axis| 2 * padding[axis] > kernel[axis]) {
                return Err(model_error(
                    name,
                    format!(
                        "padding {padding:?} must be at most half the kernel {kernel:?} (as PyTorch)"
                    ),
                ));
            }
            let padded = [h + 2 * padding[0], w + 2 * padding[1]];
            if padded[0] < kernel[0] || padded[1] < kernel[1] {
                return Err(model_error(
                    name,
                    format!(
                        "the {kernel:?} window is larger than the padded {}×{} input: the \
                         output would be empty",
                        padded[0], padded[1]
                    ),
                ));
            }
            let mut out = shape;
            for axis in 0..2 {
                out[2 + axis] = (padded[axis] - kernel[axis]) / stride[axis] + 1;
            }
            let pool = Pool { kernel, stride, padding };
            (Operation::MaxPool(pool), out, Cost { macs_ptflops: numel(shape), ..Cost::default() })
        }
        Layer::GlobalAvgPool(_) => {
            let cost = Cost { macs_ptflops: numel(shape), ..Cost::default() };
            (Operation::GlobalAvgPool, [n, c, 1, 1], cost)
        }
        Layer::Dsc(l) => dsc(l, shape)?,
        Layer::Acblock(l) => {
            check_count(name, "in_channels", l.in_channels, c)?;
            let spec = conv_spec(
                name,
                shape,
                ConvFields {
                    op: None,
                    out_channels: l.out_channels,
                    kernel: l.kernel,
                    stride: l.stride,
                    padding: l.padding.clone(),
                    dilation: l.dilation,
                    groups: l.groups,
                    output_padding: None,
                    bias: true,
                    activation: l.activation,
                    negative_slope: l.negative_slope,
                },
            )?;
            let deploy = l.deploy.unwrap_or(true);
            let out = spec.output_shape();
            // Also checks the block's shape (an odd square kernel,
            // symmetric padding).
            let branches = AcBlock::branch_specs_of(&spec)?;
            let cost = if deploy {
                Complexity::of(&spec).into()
            } else {
                // Three bias-free convs, each with a BatchNorm.
                let bn = Cost {
                    params: 2 * out[1] as u64,
                    macs_ptflops: 2 * numel(out),
                    ..Cost::default()
                };
                branches.iter().map(|(s, _)| Cost::from(Complexity::of(s)) + bn).sum()
            };
            (Operation::AcBlock { spec, deploy }, out, cost)
        }
    })
}

/// A depthwise-separable block's operation, output shape and cost.
fn dsc(l: &model::DscLayer, shape: [usize; 4]) -> Result<(Operation, [usize; 4], Cost)> {
    let name = &l.name;
    let c = shape[1];
    check_count(name, "in_channels", l.in_channels, c)?;
    let batchnorm = l.batchnorm.unwrap_or(true);
    let bias = l.bias.unwrap_or(!batchnorm);
    let kinds = l.activations.unwrap_or([ActivationKind::Relu, ActivationKind::None]);
    if l.negative_slope.is_some() && !kinds.contains(&ActivationKind::LeakyRelu) {
        return Err(model_error(
            name,
            "negative_slope is only allowed with a \"leaky_relu\" in \"activations\"",
        ));
    }
    let slope =
        |k: ActivationKind| if k == ActivationKind::LeakyRelu { l.negative_slope } else { None };
    let activations =
        [activation(kinds[0], slope(kinds[0]))?, activation(kinds[1], slope(kinds[1]))?];
    let depthwise = conv_spec(
        &format!("{name}.depthwise"),
        shape,
        ConvFields {
            op: None,
            out_channels: c as i64,
            kernel: l.kernel,
            stride: l.stride,
            padding: l.padding.clone(),
            dilation: l.dilation,
            groups: Some(c as i64),
            output_padding: None,
            bias,
            activation: None,
            negative_slope: None,
        },
    )?;
    let pointwise = conv_spec(
        &format!("{name}.pointwise"),
        depthwise.output_shape(),
        ConvFields {
            op: None,
            out_channels: l.out_channels,
            kernel: Pair::One(1),
            stride: None,
            padding: None,
            dilation: None,
            groups: None,
            output_padding: None,
            bias,
            activation: None,
            negative_slope: None,
        },
    )?;
    let (mid, out) = (depthwise.output_shape(), pointwise.output_shape());
    let mut cost = Cost::from(Complexity::of(&depthwise)) + Complexity::of(&pointwise).into();
    for (shape, act) in [(mid, activations[0]), (out, activations[1])] {
        if batchnorm {
            cost.params += 2 * shape[1] as u64;
            cost.macs_ptflops += 2 * numel(shape);
        }
        if act != Activation::None {
            cost.macs_ptflops += numel(shape);
        }
    }
    let prefix = |given: &Option<String>, suffix: &str| {
        given.clone().unwrap_or_else(|| format!("{name}.{suffix}"))
    };
    let tensors = DscTensors {
        depthwise: prefix(&l.depthwise, "depthwise"),
        depthwise_bn: prefix(&l.depthwise_bn, "depthwise_bn"),
        pointwise: prefix(&l.pointwise, "pointwise"),
        pointwise_bn: prefix(&l.pointwise_bn, "pointwise_bn"),
    };
    let op = DscOp { depthwise, pointwise, batchnorm, activations, tensors, mode: l.mode };
    let op = Operation::Dsc(Box::new(op));
    Ok((op, out, cost))
}
