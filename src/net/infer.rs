//! Shape inference, layer by layer: what a node computes ([`Operation`]),
//! with its shapes resolved, the shape it gives and its [`Cost`].
//!
//! Every conv a layer implies (a conv, a linear layer, a block's convs)
//! becomes a [`ValidSpec`] here, its input shape taken from the layer it
//! reads, so the spec's own validation (contract 1) judges it; its errors
//! come back naming the layer ([`super::in_layer`]). The model as a whole
//! (names, what each layer reads, tensor sizes) is [`super::graph`]'s.

use super::cost::Cost;
use super::model::{self, Layer, PadSides, ShuffleOrder, UpsampleMode};
use super::model_error;
use crate::blocks::{AcBlock, BN_EPS, DscMode};
use crate::error::Result;
use crate::spec::{
    Activation, ActivationKind, ConvSpec, MAX_DIM, Op, PaddingSpec, Pair, ValidSpec,
};

/// Where a node's operand comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The model's input of this index.
    Input(usize),
    /// The output of the node at this index.
    Node(usize),
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

/// A pool's geometry, per axis `[h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pool {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

/// An elementwise function of an `activation` layer that no kernel fuses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Func {
    Sigmoid,
    Tanh,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    Silu,
}

/// A `mul` or a `sub`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Mul,
    Sub,
}

/// A pixel shuffle's or unshuffle's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shuffle {
    /// The block's side r.
    pub factor: usize,
    pub order: ShuffleOrder,
    /// Channels to space (a shuffle), or space to channels.
    pub up: bool,
}

/// An upsampling's geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Upsample {
    /// The whole factor on each side `[h, w]`.
    pub factor: [usize; 2],
    pub mode: UpsampleMode,
    pub align_corners: bool,
}

/// A constant border: its widths `[top, bottom, left, right]` and value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Pad {
    pub sides: [usize; 4],
    pub value: f32,
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
    AvgPool {
        pool: Pool,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    Upsample(Upsample),
    Pad(Pad),
    /// The input's channels `start..end`.
    Slice {
        start: usize,
        end: usize,
    },
    /// A channel shuffle of this many groups.
    ChannelShuffle(usize),
    /// Each image's elements in another shape: a copy.
    Reshape,
    /// Each image's axes reordered: output axis `k` is input axis
    /// `dims[k]`.
    Permute([usize; 4]),
    /// `x · weight + bias` of this many values each (1, or the
    /// channels), either left out.
    Affine {
        count: usize,
        weight: bool,
        bias: bool,
    },
    /// An elementwise function that no kernel fuses.
    Function(Func),
    /// The input times, or less, `with`.
    Binary {
        op: BinaryOp,
        /// `with` is `[N, C, 1, 1]`: one value per plane.
        per_channel: bool,
        with: Source,
    },
    /// PReLU with this many slopes (1, or the channels).
    Prelu(usize),
    /// A pixel shuffle (`up`) or unshuffle.
    Shuffle(Shuffle),
    /// The input's channels, then each of `others`' (`channels` holds
    /// every operand's count, the input's first).
    Concat {
        others: Vec<Source>,
        channels: Vec<usize>,
    },
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

impl ConvFields {
    /// A conv2d of `out_channels` with a `kernel` window and `bias`, every
    /// other field at its default.
    fn plain(out_channels: i64, kernel: Pair, bias: bool) -> ConvFields {
        ConvFields {
            op: None,
            out_channels,
            kernel,
            stride: None,
            padding: None,
            dilation: None,
            groups: None,
            output_padding: None,
            bias,
            activation: None,
            negative_slope: None,
        }
    }
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
fn pool_pair(layer: &str, kind: &str, field: &str, p: Pair, min: i64) -> Result<[usize; 2]> {
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
        format!("{kind} {field} {hw:?}: each value must {least} and at most {MAX_DIM}"),
    ))
}

/// A node's operation, output shape and cost; `others` are the operands
/// it reads besides its input (an `add`'s `with`, a `concat`'s others)
/// and their shapes. Errors other than [`crate::Error::Model`] are the
/// layer's: the caller names it.
pub(crate) fn infer(
    layer: &Layer,
    shape: [usize; 4],
    others: &[(Source, [usize; 4])],
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
                    stride: l.stride,
                    padding: l.padding.clone(),
                    dilation: l.dilation,
                    groups: l.groups,
                    output_padding: l.output_padding,
                    activation: l.activation,
                    negative_slope: l.negative_slope,
                    ..ConvFields::plain(l.out_channels, l.kernel, l.bias.unwrap_or(true))
                },
            )?;
            let cost = Cost::conv(&spec);
            let out = spec.output_shape();
            (Operation::Conv(spec), out, cost)
        }
        Layer::Linear(l) => {
            check_count(name, "in_features", l.in_features, c * h * w)?;
            let spec = conv_spec(
                name,
                shape,
                ConvFields::plain(
                    l.out_features,
                    Pair::Two([h as i64, w as i64]),
                    l.bias.unwrap_or(true),
                ),
            )?;
            let cost = Cost::conv(&spec);
            let out = spec.output_shape();
            (Operation::Conv(spec), out, cost)
        }
        Layer::Batchnorm(l) => {
            check_count(name, "num_features", l.num_features, c)?;
            let eps = l.eps.unwrap_or(BN_EPS);
            if !(eps.is_finite() && eps > 0.0) {
                return Err(model_error(name, format!("eps {eps} must be positive")));
            }
            (Operation::BatchNorm(eps), shape, Cost::batchnorm(shape))
        }
        Layer::Activation(l) => {
            let hard = l.activation == model::Function::Hardsigmoid;
            if !hard && (l.alpha.is_some() || l.beta.is_some()) {
                return Err(model_error(name, "alpha and beta are only allowed with hardsigmoid"));
            }
            match l.activation.fused() {
                Some(kind) => {
                    let act = activation(kind, l.negative_slope)?;
                    (Operation::Activation(act), shape, Cost::activation(shape, act))
                }
                None => {
                    if l.negative_slope.is_some() {
                        return Err(model_error(
                            name,
                            "negative_slope is only allowed with \"leaky_relu\"",
                        ));
                    }
                    let (alpha, beta) = (l.alpha.unwrap_or(1.0 / 6.0), l.beta.unwrap_or(0.5));
                    if !(alpha.is_finite() && beta.is_finite()) {
                        return Err(model_error(name, "alpha and beta must be finite"));
                    }
                    let f = match l.activation {
                        model::Function::Sigmoid => Func::Sigmoid,
                        model::Function::Tanh => Func::Tanh,
                        model::Function::Hardsigmoid => Func::HardSigmoid { alpha, beta },
                        model::Function::Hardswish => Func::HardSwish,
                        model::Function::Silu => Func::Silu,
                        fused => unreachable!("{fused:?} is a fused activation"),
                    };
                    // No module hook of ptflops counts these.
                    (Operation::Function(f), shape, Cost::default())
                }
            }
        }
        Layer::Add(l) => {
            let with = same_shape_operand(name, "adds", shape, others, &l.with)?;
            let act = activation(l.activation.unwrap_or_default(), l.negative_slope)?;
            // The `+` is functional (no module hook sees it); an activation
            // after it is a module.
            (Operation::Add { with, activation: act }, shape, Cost::activation(shape, act))
        }
        Layer::MaxPool(l) => {
            let pool = pool_geometry(name, "max_pool", [h, w], l.kernel, l.stride, l.padding)?;
            (Operation::MaxPool(pool), pool.output(shape), Cost::pool(shape))
        }
        Layer::AvgPool(l) => {
            let pool = pool_geometry(name, "avg_pool", [h, w], l.kernel, l.stride, l.padding)?;
            let count_include_pad = l.count_include_pad.unwrap_or(true);
            (Operation::AvgPool { pool, count_include_pad }, pool.output(shape), Cost::pool(shape))
        }
        Layer::Upsample(l) => upsample(l, shape)?,
        Layer::Pad(l) => {
            let [left, right, top, bottom] = match l.padding {
                PadSides::One(p) => [p; 4],
                PadSides::Four(sides) => sides,
            };
            let sides = [top, bottom, left, right];
            if !sides.iter().all(|p| (0..=MAX_DIM).contains(p)) {
                return Err(model_error(
                    name,
                    format!(
                        "padding [{left}, {right}, {top}, {bottom}]: each side at least 0 and at \
                         most {MAX_DIM}"
                    ),
                ));
            }
            let sides = sides.map(|p| p as usize);
            let out = [n, c, h + sides[0] + sides[1], w + sides[2] + sides[3]];
            bounded(name, out)?;
            let pad = Pad { sides, value: l.value.unwrap_or(0.0) };
            // No module hook of ptflops counts a pad.
            (Operation::Pad(pad), out, Cost::default())
        }
        Layer::Slice(l) => {
            if !(0 <= l.start && l.start < l.end && l.end <= c as i64) {
                return Err(model_error(
                    name,
                    format!(
                        "channels {}..{} of {c}: a range of at least one of the input's",
                        l.start, l.end
                    ),
                ));
            }
            let (start, end) = (l.start as usize, l.end as usize);
            // Indexing: no module hook of ptflops counts it.
            (Operation::Slice { start, end }, [n, end - start, h, w], Cost::default())
        }
        Layer::ChannelShuffle(l) => {
            if !(1..=c as i64).contains(&l.groups) || c % l.groups as usize != 0 {
                return Err(model_error(
                    name,
                    format!("groups {}: at least 1, dividing the input's {c} channels", l.groups),
                ));
            }
            // No module hook of ptflops counts it.
            (Operation::ChannelShuffle(l.groups as usize), shape, Cost::default())
        }
        Layer::Reshape(l) => {
            let out = reshaped(name, l.shape, [c, h, w])?;
            let out = [n, out[0], out[1], out[2]];
            bounded(name, out)?;
            // A view: ptflops counts nothing.
            (Operation::Reshape, out, Cost::default())
        }
        Layer::Permute(l) => {
            // Out of range is 4, which no permutation of 0..4 holds.
            let dims = l.dims.map(|d| usize::try_from(d).map_or(4, |d| d.min(4)));
            let mut sorted = dims;
            sorted.sort_unstable();
            if dims[0] != 0 || sorted != [0, 1, 2, 3] {
                return Err(model_error(
                    name,
                    format!("dims {:?}: a permutation of 0, 1, 2, 3 that keeps 0 first", l.dims),
                ));
            }
            (Operation::Permute(dims), dims.map(|d| shape[d]), Cost::default())
        }
        Layer::Affine(l) => {
            let count = per_channel_count(name, l.num_parameters, c)?;
            let (weight, bias) = (l.weight.unwrap_or(true), l.bias.unwrap_or(true));
            // Functional arithmetic: ptflops counts nothing.
            let cost = Cost {
                params: (count * (weight as usize + bias as usize)) as u64,
                ..Cost::default()
            };
            (Operation::Affine { count, weight, bias }, shape, cost)
        }
        Layer::GlobalAvgPool(_) => (Operation::GlobalAvgPool, [n, c, 1, 1], Cost::pool(shape)),
        Layer::Mul(l) | Layer::Sub(l) => {
            let verb = if matches!(layer, Layer::Mul(_)) { "multiplies" } else { "subtracts" };
            // `with` of one value per channel and batch item, `[N, C, 1,
            // 1]`, broadcast over the plane (a squeeze-and-excitation
            // gate), or of the input's shape.
            let per_channel = matches!(others, &[(_, [wn, wc, 1, 1])] if [wn, wc] == [n, c]);
            let with = match others {
                &[(source, _)] if per_channel => source,
                _ => same_shape_operand(name, verb, shape, others, &l.with)?,
            };
            let op = if matches!(layer, Layer::Mul(_)) { BinaryOp::Mul } else { BinaryOp::Sub };
            // Functional in PyTorch: ptflops counts nothing.
            (Operation::Binary { op, with, per_channel }, shape, Cost::default())
        }
        Layer::Prelu(l) => {
            let count = per_channel_count(name, l.num_parameters, c)?;
            let cost = Cost { params: count as u64, ..Cost::activation(shape, Activation::Relu) };
            (Operation::Prelu(count), shape, cost)
        }
        Layer::PixelShuffle(l) | Layer::PixelUnshuffle(l) => {
            let up = matches!(layer, Layer::PixelShuffle(_));
            let r = l.factor;
            if !(1..=MAX_DIM).contains(&r) {
                return Err(model_error(
                    name,
                    format!("factor {r}: at least 1, at most {MAX_DIM}"),
                ));
            }
            let r = r as usize;
            let out = if up {
                if c % (r * r) != 0 {
                    return Err(model_error(
                        name,
                        format!(
                            "{c} channels: a pixel shuffle by {r} needs a multiple of {}",
                            r * r
                        ),
                    ));
                }
                [n, c / (r * r), h * r, w * r]
            } else {
                if h % r != 0 || w % r != 0 {
                    return Err(model_error(
                        name,
                        format!(
                            "{h}×{w}: a pixel unshuffle by {r} needs sides that are multiples of {r}"
                        ),
                    ));
                }
                [n, c * r * r, h / r, w / r]
            };
            bounded(name, out)?;
            let shuffle = Shuffle { factor: r, order: l.order.unwrap_or_default(), up };
            // No module hook of ptflops counts it.
            (Operation::Shuffle(shuffle), out, Cost::default())
        }
        Layer::Concat(l) => {
            let mut channels = vec![c];
            for ((_, other), operand) in others.iter().zip(&l.inputs[1..]) {
                if [other[0], other[2], other[3]] != [n, h, w] {
                    return Err(model_error(
                        name,
                        format!(
                            "concatenates the channels of {shape:?} ({:?}) and {other:?} \
                             ({operand:?}): N, H and W differ",
                            l.inputs[0]
                        ),
                    ));
                }
                channels.push(other[1]);
            }
            let total = channels.iter().sum::<usize>();
            if total > MAX_DIM as usize {
                return Err(model_error(
                    name,
                    format!("{total} channels in all, more than {MAX_DIM}"),
                ));
            }
            let others = others.iter().map(|(s, _)| *s).collect();
            // `torch.cat` is functional: ptflops counts nothing.
            (Operation::Concat { others, channels }, [n, total, h, w], Cost::default())
        }
        Layer::Dsc(l) => dsc(l, shape)?,
        Layer::Acblock(l) => {
            check_count(name, "in_channels", l.in_channels, c)?;
            let spec = conv_spec(
                name,
                shape,
                ConvFields {
                    stride: l.stride,
                    padding: l.padding.clone(),
                    dilation: l.dilation,
                    groups: l.groups,
                    activation: l.activation,
                    negative_slope: l.negative_slope,
                    ..ConvFields::plain(l.out_channels, l.kernel, true)
                },
            )?;
            let deploy = l.deploy.unwrap_or(true);
            let out = spec.output_shape();
            // Also checks the block's shape (an odd square kernel,
            // symmetric padding).
            let branches = AcBlock::branch_specs_of(&spec)?;
            let cost = if deploy {
                Cost::conv(&spec)
            } else {
                // Three bias-free convs, each with a BatchNorm.
                branches.iter().map(|(s, _)| Cost::conv(s) + Cost::batchnorm(out)).sum()
            };
            (Operation::AcBlock { spec, deploy }, out, cost)
        }
    })
}

/// How many values a layer of `num_parameters` has for an input of `c`
/// channels: 1 (the default) or one per channel.
fn per_channel_count(name: &str, num_parameters: Option<i64>, c: usize) -> Result<usize> {
    match num_parameters {
        None | Some(1) => Ok(1),
        Some(p) if p == c as i64 => Ok(c),
        Some(p) => {
            Err(model_error(name, format!("num_parameters {p}: 1, or the input's {c} channels")))
        }
    }
}

/// A pool's window, stride and padding over an `[h, w]` input, as
/// PyTorch's pools take them: the stride the window by default, the
/// padding at most half the window, the window inside the padded input.
fn pool_geometry(
    name: &str,
    kind: &str,
    [h, w]: [usize; 2],
    kernel: Pair,
    stride: Option<Pair>,
    padding: Option<Pair>,
) -> Result<Pool> {
    // Each value bounded before any arithmetic on it (a padding near
    // 2^63 once wrapped, and the pool read out of bounds).
    let kernel = pool_pair(name, kind, "kernel", kernel, 1)?;
    let stride = stride.map_or(Ok(kernel), |s| pool_pair(name, kind, "stride", s, 1))?;
    let padding = padding.map_or(Ok([0, 0]), |p| pool_pair(name, kind, "padding", p, 0))?;
    if (0..2).any(|axis| 2 * padding[axis] > kernel[axis]) {
        return Err(model_error(
            name,
            format!("padding {padding:?} must be at most half the kernel {kernel:?} (as PyTorch)"),
        ));
    }
    let padded = [h + 2 * padding[0], w + 2 * padding[1]];
    if padded[0] < kernel[0] || padded[1] < kernel[1] {
        return Err(model_error(
            name,
            format!(
                "the {kernel:?} window is larger than the padded {}×{} input: the output would \
                 be empty",
                padded[0], padded[1]
            ),
        ));
    }
    Ok(Pool { kernel, stride, padding })
}

impl Pool {
    /// The output's shape for an input of `shape` (floor, as
    /// `ceil_mode` false).
    pub(crate) fn output(&self, shape: [usize; 4]) -> [usize; 4] {
        let mut out = shape;
        for axis in 0..2 {
            let padded = shape[2 + axis] + 2 * self.padding[axis];
            out[2 + axis] = (padded - self.kernel[axis]) / self.stride[axis] + 1;
        }
        out
    }
}

/// An output shape checked to keep each size within [`MAX_DIM`].
fn bounded(name: &str, out: [usize; 4]) -> Result<()> {
    match out.iter().find(|&&d| d > MAX_DIM as usize) {
        Some(d) => Err(model_error(
            name,
            format!("its output {out:?} has a size of {d}, more than {MAX_DIM}"),
        )),
        None => Ok(()),
    }
}

/// An `upsample` layer on `shape`: its whole factors (from
/// `scale_factor`, or from `size` a multiple of the input's), the mode.
fn upsample(l: &model::UpsampleLayer, shape: [usize; 4]) -> Result<(Operation, [usize; 4], Cost)> {
    let name = &l.name;
    let [n, c, h, w] = shape;
    let pair = |p: Pair| match p {
        Pair::One(v) => [v, v],
        Pair::Two(hw) => hw,
    };
    let factor = match (l.scale_factor, l.size) {
        (Some(f), None) => {
            let f = pair(f);
            if !f.iter().all(|v| (1..=MAX_DIM).contains(v)) {
                return Err(model_error(
                    name,
                    format!("scale_factor {f:?}: whole factors, at least 1 and at most {MAX_DIM}"),
                ));
            }
            f.map(|v| v as usize)
        }
        (None, Some(size)) => {
            let size = pair(size);
            let mut f = [0; 2];
            for (axis, (&s, input)) in size.iter().zip([h, w]).enumerate() {
                if !(1..=MAX_DIM).contains(&s) || !(s as usize).is_multiple_of(input) {
                    return Err(model_error(
                        name,
                        format!(
                            "size {size:?} of a {h}×{w} input: each side a whole multiple of \
                             the input's, at most {MAX_DIM}"
                        ),
                    ));
                }
                f[axis] = s as usize / input;
            }
            f
        }
        _ => {
            return Err(model_error(name, "one of scale_factor and size, not both".to_string()));
        }
    };
    let mode = l.mode.unwrap_or_default();
    if l.align_corners.is_some() && mode == UpsampleMode::Nearest {
        return Err(model_error(
            name,
            "align_corners is a bilinear upsampling's (as PyTorch refuses it for nearest)"
                .to_string(),
        ));
    }
    let out = [n, c, h * factor[0], w * factor[1]];
    bounded(name, out)?;
    let up = Upsample { factor, mode, align_corners: l.align_corners.unwrap_or(false) };
    // ptflops' hook counts the elements of the output's first item,
    // C·H·W.
    let cost =
        Cost { macs_ptflops: out[1..].iter().map(|&d| d as u64).product(), ..Cost::default() };
    Ok((Operation::Upsample(up), out, cost))
}

/// The one other operand of an elementwise layer of two (an add, a mul, a
/// sub), which must have the input's `shape`.
fn same_shape_operand(
    name: &str,
    verb: &str,
    shape: [usize; 4],
    others: &[(Source, [usize; 4])],
    with: &str,
) -> Result<Source> {
    let &[(source, other)] = others else {
        unreachable!("a layer of two operands has its other one resolved")
    };
    if other != shape {
        return Err(model_error(
            name,
            format!(
                "{verb} {shape:?} (its input) and {other:?} ({with:?}): the shapes differ (the \
                 one broadcast is of [N, C, 1, 1], in a mul or a sub, over the planes)"
            ),
        ));
    }
    Ok(source)
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
            stride: l.stride,
            padding: l.padding.clone(),
            dilation: l.dilation,
            groups: Some(c as i64),
            ..ConvFields::plain(c as i64, l.kernel, bias)
        },
    )?;
    let pointwise = conv_spec(
        &format!("{name}.pointwise"),
        depthwise.output_shape(),
        ConvFields::plain(l.out_channels, Pair::One(1), bias),
    )?;
    let (mid, out) = (depthwise.output_shape(), pointwise.output_shape());
    let mut cost = Cost::conv(&depthwise) + Cost::conv(&pointwise);
    for (shape, act) in [(mid, activations[0]), (out, activations[1])] {
        if batchnorm {
            cost = cost + Cost::batchnorm(shape);
        }
        cost = cost + Cost::activation(shape, act);
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

/// Each image's shape `[c, h, w]` after a reshape to `shape` (one entry
/// may be −1: what the others leave of the `C·H·W` elements).
fn reshaped(name: &str, shape: [i64; 3], dims: [usize; 3]) -> Result<[usize; 3]> {
    let [c, h, w] = dims;
    let sizes = reshaped_sizes(&shape, &dims.map(|d| d as i64), false);
    let sizes = sizes.ok_or_else(|| {
        model_error(
            name,
            format!(
                "shape {shape:?}: each image's {c}×{h}×{w} elements as [c, h, w], each \
                 positive or one −1"
            ),
        )
    })?;
    Ok([sizes[0], sizes[1], sizes[2]].map(|d| d as usize))
}

/// The sizes ONNX's Reshape gives `dims` for `shape`: a 0 copies the
/// size on that axis (unless `allowzero`: `zero` false), one −1 is what
/// the others leave; `None` where they do not make the same number of
/// elements, or make a size of 0.
pub(super) fn reshaped_sizes(shape: &[i64], dims: &[i64], zero: bool) -> Option<Vec<i64>> {
    let total = dims.iter().try_fold(1i64, |p, &d| p.checked_mul(d))?;
    let sizes: Vec<i64> = shape
        .iter()
        .enumerate()
        .map(|(i, &v)| if v == 0 && zero { dims.get(i).copied() } else { Some(v) })
        .collect::<Option<_>>()?;
    if sizes.iter().filter(|&&v| v == -1).count() > 1 || sizes.iter().any(|&v| v == 0 || v < -1) {
        return None;
    }
    let known = sizes.iter().filter(|&&v| v != -1).try_fold(1i64, |p, &v| p.checked_mul(v))?;
    let sizes: Vec<i64> =
        sizes.iter().map(|&v| if v == -1 && known > 0 { total / known } else { v }).collect();
    let made = sizes.iter().try_fold(1i64, |p, &v| p.checked_mul(v))?;
    (made == total && !sizes.contains(&0)).then_some(sizes)
}
