//! The model file: a JSON object naming the model, its input shape and its
//! layers in order (docs/networks.md).
//!
//! The layer types are plain serde data that keep what the file says and
//! nothing more: a field left out stays `None`, so a model printed with
//! [`Model::to_json`] reads as it was written, and the defaults live in one
//! place, the shape inference ([`super::infer`]). Parsing goes in two
//! steps, the outer object first and then each layer on its own, so that
//! every error (an unknown field, a missing one, a wrong type) names the
//! layer it is in.

use serde::{Deserialize, Serialize};

use crate::blocks::DscMode;
use crate::error::{Error, Result, json_message};
use crate::spec::{ActivationKind, Op, PaddingSpec, Pair};

/// What a layer reads when it names no `input`: the model's input for the
/// first layer, the previous layer's output for the others. Also the name
/// by which a layer names the model's input, so no layer may have it.
pub const INPUT: &str = "input";

/// The label errors give the model as a whole (its outer object).
pub const MODEL: &str = "(model)";

/// A model file: the inputs and the layers, run in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The model's name, for reports.
    pub name: String,
    /// The inputs: one shape, or named shapes.
    pub input: Inputs,
    /// The layers, in the order they run.
    pub layers: Vec<Layer>,
    /// The outputs, in order (none given: the last layer's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
}

/// One output of a model: a layer's, under the layer's name or a name of
/// its own (an ONNX graph output's): `"head"` or `{"name": "y", "layer":
/// "head"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Output {
    /// The output of this layer, named after it.
    Layer(String),
    /// A layer's output under a name of its own.
    Named(NamedOutput),
}

/// A layer's output under a name of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedOutput {
    /// What the output is called (`net --output NAME=Y.npy`).
    pub name: String,
    /// The layer whose output it is.
    pub layer: String,
}

impl Output {
    /// What the output is called.
    pub fn name(&self) -> &str {
        match self {
            Output::Layer(name) | Output::Named(NamedOutput { name, .. }) => name,
        }
    }

    /// The layer whose output it is.
    pub fn layer(&self) -> &str {
        match self {
            Output::Layer(layer) | Output::Named(NamedOutput { layer, .. }) => layer,
        }
    }
}

/// A model's inputs, as the file's `input` states them: one shape
/// `[N, C, H, W]` (the input named [`INPUT`]), or a list of named shapes
/// (`[{"name": "rec", "shape": [1, 1, 128, 128]}, ...]`), which layers
/// read by name. The first is the one a layer reads when it names none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    /// One input, named [`INPUT`].
    One([i64; 4]),
    /// Named inputs, in order.
    Named(Vec<NamedInput>),
}

/// One input of a model of several.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedInput {
    /// The name layers read it by.
    pub name: String,
    /// Its shape `[N, C, H, W]`.
    pub shape: [i64; 4],
}

impl From<[i64; 4]> for Inputs {
    fn from(shape: [i64; 4]) -> Inputs {
        Inputs::One(shape)
    }
}

impl Inputs {
    /// Each input's name and shape, in order.
    pub fn list(&self) -> Vec<(&str, [i64; 4])> {
        match self {
            Inputs::One(shape) => vec![(INPUT, *shape)],
            Inputs::Named(inputs) => inputs.iter().map(|i| (i.name.as_str(), i.shape)).collect(),
        }
    }
}

/// The outer object, its layers not parsed yet.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outline {
    name: String,
    input: serde_json::Value,
    layers: Vec<serde_json::Value>,
    #[serde(default)]
    outputs: Option<serde_json::Value>,
}

impl Model {
    /// Parses a model from JSON text. An error in a layer names the layer
    /// (its `name`, or its position when it has none).
    pub fn from_json(text: &str) -> Result<Model> {
        let outline: Outline = serde_json::from_str(text)
            .map_err(|e| Error::Model { layer: MODEL.into(), reason: json_message(&e) })?;
        let layers = outline
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let label = match value.get("name") {
                    Some(serde_json::Value::String(name)) => name.clone(),
                    _ => format!("layers[{i}]"),
                };
                serde_json::from_value(value)
                    .map_err(|e| Error::Model { layer: label, reason: json_message(&e) })
            })
            .collect::<Result<_>>()?;
        let input = serde_json::from_value(outline.input).map_err(|_| Error::Model {
            layer: MODEL.into(),
            reason: "input: give one shape [N, C, H, W], or a list of named inputs \
                     [{\"name\": ..., \"shape\": [N, C, H, W]}, ...]"
                .into(),
        })?;
        let outputs = match outline.outputs {
            None => Vec::new(),
            Some(value) => serde_json::from_value(value).map_err(|_| Error::Model {
                layer: MODEL.into(),
                reason: "outputs: give a list of layer names, or of named outputs \
                         [{\"name\": ..., \"layer\": ...}, ...]"
                    .into(),
            })?,
        };
        Ok(Model { name: outline.name, input, layers, outputs })
    }

    /// The model as JSON, one layer per line, which [`Model::from_json`]
    /// reads back as the same model.
    pub fn to_json(&self) -> String {
        fn json(value: &impl Serialize) -> String {
            serde_json::to_string(value).expect("a model always serialises")
        }
        let layers: Vec<String> = self.layers.iter().map(|l| format!("    {}", json(l))).collect();
        let outputs = match self.outputs.as_slice() {
            [] => String::new(),
            outputs => format!(",\n  \"outputs\": {}", json(&outputs)),
        };
        format!(
            "{{\n  \"name\": {},\n  \"input\": {},\n  \"layers\": [\n{}\n  ]{outputs}\n}}",
            json(&self.name),
            json(&self.input),
            layers.join(",\n")
        )
    }
}

/// One layer of a model; `kind` selects the variant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Layer {
    /// `nn.Conv2d` or `nn.ConvTranspose2d`.
    Conv(ConvLayer),
    /// `nn.BatchNorm2d` in eval mode.
    Batchnorm(BatchNormLayer),
    /// `nn.ReLU`, `nn.ReLU6`, `nn.LeakyReLU`, or the identity.
    Activation(ActivationLayer),
    /// A depthwise-separable block: depthwise k×k, then pointwise 1×1.
    Dsc(DscLayer),
    /// ACNet's asymmetric convolution block.
    Acblock(AcBlockLayer),
    /// The sum of two tensors of one shape.
    Add(AddLayer),
    /// `nn.MaxPool2d`.
    MaxPool(MaxPoolLayer),
    /// The mean over each channel's plane: `nn.AdaptiveAvgPool2d(1)`.
    GlobalAvgPool(PlainLayer),
    /// `nn.Linear` on the flattened input.
    Linear(LinearLayer),
    /// `torch.cat` along the channels.
    Concat(ConcatLayer),
    /// `nn.PReLU`: a learned slope for negative inputs, one or one per
    /// channel.
    Prelu(PreluLayer),
    /// `nn.PixelShuffle`: channels to space.
    PixelShuffle(ShuffleLayer),
    /// `nn.PixelUnshuffle`: space to channels.
    PixelUnshuffle(ShuffleLayer),
    /// The product of two tensors of one shape, or of an image and one
    /// value per plane (`[N, C, 1, 1]`).
    Mul(BinaryLayer),
    /// The difference of two tensors of one shape, or of an image and one
    /// value per plane: the input less `with`.
    Sub(BinaryLayer),
    /// `nn.AvgPool2d`.
    AvgPool(AvgPoolLayer),
    /// `nn.Upsample`: nearest or bilinear, by a whole factor.
    Upsample(UpsampleLayer),
    /// `nn.ConstantPad2d` (`nn.ZeroPad2d`): borders of one value.
    Pad(PadLayer),
    /// `x · weight + bias`, one value or one per channel: a tensor
    /// multiplied by, or added to, constants.
    Affine(AffineLayer),
    /// A range of the input's channels, `x[:, start:end]` (one part of
    /// `torch.chunk` or `torch.split` along the channels).
    Slice(SliceLayer),
    /// `nn.ChannelShuffle`: the channels of `groups` groups interleaved.
    ChannelShuffle(ChannelShuffleLayer),
    /// `x.reshape(N, c, h, w)`: each image's elements, in order, in
    /// another shape.
    Reshape(ReshapeLayer),
    /// `x.permute(0, a, b, c)`: each image's axes reordered.
    Permute(PermuteLayer),
}

/// The kind of a layer, without its fields: what reports print and what
/// code that treats kinds differently matches on.
///
/// Each variant is [`Layer`]'s of the same name and serialises as
/// [`LayerKind::as_str`], the file's `kind` (a unit test holds it to
/// [`Layer`]'s serde tag). Files are read through that tag alone, so an
/// unknown kind is refused there, naming the layer and the kinds there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// [`Layer::Conv`].
    Conv,
    /// [`Layer::Batchnorm`].
    Batchnorm,
    /// [`Layer::Activation`].
    Activation,
    /// [`Layer::Dsc`].
    Dsc,
    /// [`Layer::Acblock`].
    Acblock,
    /// [`Layer::Add`].
    Add,
    /// [`Layer::MaxPool`].
    MaxPool,
    /// [`Layer::GlobalAvgPool`].
    GlobalAvgPool,
    /// [`Layer::Linear`].
    Linear,
    /// [`Layer::Concat`].
    Concat,
    /// [`Layer::Prelu`].
    Prelu,
    /// [`Layer::PixelShuffle`].
    PixelShuffle,
    /// [`Layer::PixelUnshuffle`].
    PixelUnshuffle,
    /// [`Layer::Mul`].
    Mul,
    /// [`Layer::Sub`].
    Sub,
    /// [`Layer::AvgPool`].
    AvgPool,
    /// [`Layer::Upsample`].
    Upsample,
    /// [`Layer::Pad`].
    Pad,
    /// [`Layer::Affine`].
    Affine,
    /// [`Layer::Slice`].
    Slice,
    /// [`Layer::ChannelShuffle`].
    ChannelShuffle,
    /// [`Layer::Reshape`].
    Reshape,
    /// [`Layer::Permute`].
    Permute,
}

impl LayerKind {
    /// Every kind, in [`Layer`]'s order.
    pub const ALL: [LayerKind; 23] = [
        LayerKind::Conv,
        LayerKind::Batchnorm,
        LayerKind::Activation,
        LayerKind::Dsc,
        LayerKind::Acblock,
        LayerKind::Add,
        LayerKind::MaxPool,
        LayerKind::GlobalAvgPool,
        LayerKind::Linear,
        LayerKind::Concat,
        LayerKind::Prelu,
        LayerKind::PixelShuffle,
        LayerKind::PixelUnshuffle,
        LayerKind::Mul,
        LayerKind::Sub,
        LayerKind::AvgPool,
        LayerKind::Upsample,
        LayerKind::Pad,
        LayerKind::Affine,
        LayerKind::Slice,
        LayerKind::ChannelShuffle,
        LayerKind::Reshape,
        LayerKind::Permute,
    ];

    /// The `kind` as the model file writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Conv => "conv",
            LayerKind::Batchnorm => "batchnorm",
            LayerKind::Activation => "activation",
            LayerKind::Dsc => "dsc",
            LayerKind::Acblock => "acblock",
            LayerKind::Add => "add",
            LayerKind::MaxPool => "max_pool",
            LayerKind::GlobalAvgPool => "global_avg_pool",
            LayerKind::Linear => "linear",
            LayerKind::Concat => "concat",
            LayerKind::Prelu => "prelu",
            LayerKind::PixelShuffle => "pixel_shuffle",
            LayerKind::PixelUnshuffle => "pixel_unshuffle",
            LayerKind::Mul => "mul",
            LayerKind::Sub => "sub",
            LayerKind::AvgPool => "avg_pool",
            LayerKind::Upsample => "upsample",
            LayerKind::Pad => "pad",
            LayerKind::Affine => "affine",
            LayerKind::Slice => "slice",
            LayerKind::ChannelShuffle => "channel_shuffle",
            LayerKind::Reshape => "reshape",
            LayerKind::Permute => "permute",
        }
    }
}

impl Serialize for LayerKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for LayerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl Layer {
    /// The layer's name (its tensors' prefix in a PyTorch `state_dict`).
    pub fn name(&self) -> &str {
        self.common().0
    }

    /// The layer whose output it reads, when it names one (a concat's
    /// first operand).
    pub fn input(&self) -> Option<&str> {
        match self {
            Layer::Concat(l) => l.inputs.first().map(String::as_str),
            _ => self.common().1.as_deref(),
        }
    }

    /// What it reads besides its input: an add's `with`, a concat's other
    /// operands.
    pub fn others(&self) -> Vec<&str> {
        match self {
            Layer::Add(l) => vec![l.with.as_str()],
            Layer::Mul(l) | Layer::Sub(l) => vec![l.with.as_str()],
            Layer::Concat(l) => l.inputs.iter().skip(1).map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The layer's kind.
    pub fn kind(&self) -> LayerKind {
        match self {
            Layer::Conv(_) => LayerKind::Conv,
            Layer::Batchnorm(_) => LayerKind::Batchnorm,
            Layer::Activation(_) => LayerKind::Activation,
            Layer::Dsc(_) => LayerKind::Dsc,
            Layer::Acblock(_) => LayerKind::Acblock,
            Layer::Add(_) => LayerKind::Add,
            Layer::MaxPool(_) => LayerKind::MaxPool,
            Layer::GlobalAvgPool(_) => LayerKind::GlobalAvgPool,
            Layer::Linear(_) => LayerKind::Linear,
            Layer::Concat(_) => LayerKind::Concat,
            Layer::Prelu(_) => LayerKind::Prelu,
            Layer::PixelShuffle(_) => LayerKind::PixelShuffle,
            Layer::PixelUnshuffle(_) => LayerKind::PixelUnshuffle,
            Layer::Mul(_) => LayerKind::Mul,
            Layer::Sub(_) => LayerKind::Sub,
            Layer::AvgPool(_) => LayerKind::AvgPool,
            Layer::Upsample(_) => LayerKind::Upsample,
            Layer::Pad(_) => LayerKind::Pad,
            Layer::Affine(_) => LayerKind::Affine,
            Layer::Slice(_) => LayerKind::Slice,
            Layer::ChannelShuffle(_) => LayerKind::ChannelShuffle,
            Layer::Reshape(_) => LayerKind::Reshape,
            Layer::Permute(_) => LayerKind::Permute,
        }
    }

    fn common(&self) -> (&String, &Option<String>) {
        match self {
            Layer::Conv(l) => (&l.name, &l.input),
            Layer::Batchnorm(l) => (&l.name, &l.input),
            Layer::Activation(l) => (&l.name, &l.input),
            Layer::Dsc(l) => (&l.name, &l.input),
            Layer::Acblock(l) => (&l.name, &l.input),
            Layer::Add(l) => (&l.name, &l.input),
            Layer::MaxPool(l) => (&l.name, &l.input),
            Layer::GlobalAvgPool(l) => (&l.name, &l.input),
            Layer::Linear(l) => (&l.name, &l.input),
            Layer::Concat(l) => (&l.name, &NO_INPUT),
            Layer::Prelu(l) => (&l.name, &l.input),
            Layer::PixelShuffle(l) | Layer::PixelUnshuffle(l) => (&l.name, &l.input),
            Layer::Mul(l) | Layer::Sub(l) => (&l.name, &l.input),
            Layer::AvgPool(l) => (&l.name, &l.input),
            Layer::Upsample(l) => (&l.name, &l.input),
            Layer::Pad(l) => (&l.name, &l.input),
            Layer::Affine(l) => (&l.name, &l.input),
            Layer::Slice(l) => (&l.name, &l.input),
            Layer::ChannelShuffle(l) => (&l.name, &l.input),
            Layer::Reshape(l) => (&l.name, &l.input),
            Layer::Permute(l) => (&l.name, &l.input),
        }
    }
}

/// A convolution: the fields and defaults of a spec (DESIGN.md contract 1)
/// less the input's shape, which comes from the layer's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    /// The name; tensors `{name}.weight` and `{name}.bias`.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// `conv2d` (default) or `conv_transpose2d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<Op>,
    /// Input channels, checked against the input when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_channels: Option<i64>,
    /// Output channels.
    pub out_channels: i64,
    /// Kernel size.
    pub kernel: Pair,
    /// Stride (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Pair>,
    /// Padding (default 0), in any of the spec's forms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<PaddingSpec>,
    /// Dilation (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dilation: Option<Pair>,
    /// Groups (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<i64>,
    /// A transposed conv's output padding (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_padding: Option<Pair>,
    /// Whether it adds a bias (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
    /// The activation after the bias (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationKind>,
    /// `leaky_relu`'s slope (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_slope: Option<f32>,
}

impl ConvLayer {
    /// A conv2d of `out_channels` with a `kernel`×`kernel` window and every
    /// other field at its default.
    pub fn new(name: &str, out_channels: i64, kernel: i64) -> ConvLayer {
        ConvLayer {
            name: name.to_string(),
            input: None,
            op: None,
            in_channels: None,
            out_channels,
            kernel: Pair::One(kernel),
            stride: None,
            padding: None,
            dilation: None,
            groups: None,
            output_padding: None,
            bias: None,
            activation: None,
            negative_slope: None,
        }
    }
}

/// BatchNorm2d in eval mode; tensors `{name}.weight`, `.bias`,
/// `.running_mean`, `.running_var`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNormLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Channels, checked against the input when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_features: Option<i64>,
    /// ε (default 1e-5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
}

/// An activation on its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The function.
    pub activation: Function,
    /// `leaky_relu`'s slope (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_slope: Option<f32>,
    /// `hardsigmoid`'s `max(0, min(1, alpha · x + beta))`: alpha (default
    /// 1/6, PyTorch's; ONNX's HardSigmoid defaults to 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// `hardsigmoid`'s beta (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta: Option<f32>,
}

/// What an `activation` layer computes: one of the activations a conv's
/// kernel fuses ([`ActivationKind`]), or an elementwise function of
/// PyTorch's that runs as a step of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Function {
    /// The identity.
    #[default]
    None,
    /// `nn.ReLU`.
    Relu,
    /// `nn.ReLU6`.
    Relu6,
    /// `nn.LeakyReLU`.
    LeakyRelu,
    /// `nn.Sigmoid`: `1 / (1 + e^−x)`.
    Sigmoid,
    /// `nn.Tanh`.
    Tanh,
    /// `nn.Hardsigmoid`: `max(0, min(1, alpha · x + beta))`.
    Hardsigmoid,
    /// `nn.Hardswish`: `x · relu6(x + 3) / 6`.
    Hardswish,
    /// `nn.SiLU` (swish): `x · sigmoid(x)`.
    Silu,
}

impl Function {
    /// The fused activation it is, if it is one.
    pub fn fused(self) -> Option<ActivationKind> {
        match self {
            Function::None => Some(ActivationKind::None),
            Function::Relu => Some(ActivationKind::Relu),
            Function::Relu6 => Some(ActivationKind::Relu6),
            Function::LeakyRelu => Some(ActivationKind::LeakyRelu),
            _ => None,
        }
    }
}

impl From<ActivationKind> for Function {
    fn from(kind: ActivationKind) -> Function {
        match kind {
            ActivationKind::None => Function::None,
            ActivationKind::Relu => Function::Relu,
            ActivationKind::Relu6 => Function::Relu6,
            ActivationKind::LeakyRelu => Function::LeakyRelu,
        }
    }
}

/// A depthwise-separable block: a depthwise k×k conv (groups = channels),
/// an optional BatchNorm and an activation, then a 1×1 conv, an optional
/// BatchNorm and an activation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DscLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Input channels, checked against the input when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_channels: Option<i64>,
    /// The pointwise conv's output channels.
    pub out_channels: i64,
    /// The depthwise kernel size.
    pub kernel: Pair,
    /// The depthwise stride (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Pair>,
    /// The depthwise padding (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<PaddingSpec>,
    /// The depthwise dilation (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dilation: Option<Pair>,
    /// A BatchNorm after each conv (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batchnorm: Option<bool>,
    /// Whether the convs have biases (default: not `batchnorm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
    /// The activations after the depthwise and after the pointwise conv
    /// (default `["relu", "none"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<[ActivationKind; 2]>,
    /// The slope of either `leaky_relu` (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_slope: Option<f32>,
    /// The depthwise conv's tensor prefix (default `{name}.depthwise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depthwise: Option<String>,
    /// Its BatchNorm's prefix (default `{name}.depthwise_bn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depthwise_bn: Option<String>,
    /// The pointwise conv's tensor prefix (default `{name}.pointwise`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointwise: Option<String>,
    /// Its BatchNorm's prefix (default `{name}.pointwise_bn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointwise_bn: Option<String>,
    /// Fused into one kernel or run as two (default: the run's option).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DscMode>,
}

/// ACNet's block: k×k, k×1 and 1×k convs with BatchNorms, summed;
/// tensors `{name}.square_conv.weight`, `{name}.square_bn.*`,
/// `{name}.ver_conv.weight`, `{name}.ver_bn.*`, `{name}.hor_conv.weight`,
/// `{name}.hor_bn.*`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcBlockLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Input channels, checked against the input when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_channels: Option<i64>,
    /// Output channels.
    pub out_channels: i64,
    /// The square kernel's size (odd).
    pub kernel: Pair,
    /// Stride (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Pair>,
    /// Padding (default 0), symmetric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<PaddingSpec>,
    /// Dilation (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dilation: Option<Pair>,
    /// Groups (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<i64>,
    /// The activation after the sum (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationKind>,
    /// `leaky_relu`'s slope (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_slope: Option<f32>,
    /// Run the deploy form, one k×k conv (default true), or the three
    /// branches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<bool>,
}

/// The sum of the input and another layer's output, of the same shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The other operand: a layer's name, or `"input"`.
    pub with: String,
    /// The activation after the sum (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<ActivationKind>,
    /// `leaky_relu`'s slope (default 0.01).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_slope: Option<f32>,
}

/// Max pooling with PyTorch's semantics (padding is −∞, `ceil_mode`
/// false).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPoolLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The window.
    pub kernel: Pair,
    /// Stride (default: the kernel, as PyTorch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Pair>,
    /// Padding (default 0), at most half the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<Pair>,
}

/// A layer with no parameters of its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// A fully connected layer on the input flattened in C order; tensors
/// `{name}.weight` `[out_features, C·H·W]` and `{name}.bias`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// C·H·W of the input, checked when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_features: Option<i64>,
    /// Outputs.
    pub out_features: i64,
    /// Whether it adds a bias (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
}

/// The channels of several tensors of one `[N, H, W]`, in order:
/// `torch.cat(inputs, dim=1)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcatLayer {
    /// The name.
    pub name: String,
    /// The layers (or model inputs) it reads, at least one.
    pub inputs: Vec<String>,
}

/// `nn.PReLU(num_parameters)`: `x` where `x > 0`, else `a · x`, with one
/// slope `a` for every channel or one per channel; tensor `{name}.weight`
/// `[num_parameters]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreluLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// 1 (default, as PyTorch), or the input's channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_parameters: Option<i64>,
}

/// The order of the channels a pixel shuffle reads (or an unshuffle
/// writes): of output channel `c` and position `(i, j)` in its `r × r`
/// block, channel `c·r² + i·r + j` (`crd`: PyTorch's, ONNX DepthToSpace's
/// `CRD` mode) or `(i·r + j)·C + c` (`dcr`: ONNX DepthToSpace's default
/// and SpaceToDepth's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShuffleOrder {
    /// Channel, then the row and column in the block (PyTorch's).
    #[default]
    Crd,
    /// The row and column in the block, then the channel.
    Dcr,
}

/// A pixel shuffle or unshuffle by `factor`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShuffleLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The block's side r: PyTorch's `upscale_factor` or
    /// `downscale_factor`.
    pub factor: i64,
    /// The channels' order (default `crd`, PyTorch's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<ShuffleOrder>,
}

/// An elementwise product or difference of the input and `with`, of one
/// shape, or `with` of `[N, C, 1, 1]`: one value per plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinaryLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The other operand: a layer, or an input by its name.
    pub with: String,
}

/// Average pooling with PyTorch's semantics (`ceil_mode` false, no
/// `divisor_override`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPoolLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The window.
    pub kernel: Pair,
    /// Stride (default: the kernel, as PyTorch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<Pair>,
    /// Zero padding (default 0), at most half the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<Pair>,
    /// Whether a window's padding counts in its divisor (default true, as
    /// PyTorch; ONNX's AveragePool defaults to false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_include_pad: Option<bool>,
}

/// How an `upsample` layer reads between input pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsampleMode {
    /// Each output pixel is the input pixel it falls in (PyTorch's
    /// `nearest`).
    #[default]
    Nearest,
    /// Interpolated between the four input pixels around it.
    Bilinear,
}

/// `nn.Upsample` by a whole factor on each side: `scale_factor`, or the
/// output's `size`, a multiple of the input's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsampleLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The factor on each side (a whole number, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_factor: Option<Pair>,
    /// The output's `[h, w]` instead of a factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Pair>,
    /// `nearest` (default) or `bilinear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<UpsampleMode>,
    /// Bilinear only: corner pixels of input and output aligned (default
    /// false, as PyTorch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align_corners: Option<bool>,
}

/// The sides a `pad` layer adds: one width for all four, or `[left,
/// right, top, bottom]` as `nn.ZeroPad2d` takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PadSides {
    /// The same on every side.
    One(i64),
    /// Left, right, top, bottom.
    Four([i64; 4]),
}

/// `nn.ConstantPad2d`: the input inside borders of `value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PadLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The borders' widths (none negative).
    pub padding: PadSides,
    /// Their value (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f32>,
}

/// `x · weight + bias`, each one value for every channel or one per
/// channel; tensors `{name}.weight` and `{name}.bias` `[num_parameters]`.
/// Either may be left out: a layer of `weight` alone multiplies (`x · a`,
/// not `x · a + 0`, so signed zeros are kept), one of `bias` alone adds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffineLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// 1 (default), or the input's channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_parameters: Option<i64>,
    /// Whether it multiplies by `{name}.weight` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<bool>,
    /// Whether it adds `{name}.bias` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bias: Option<bool>,
}

/// The input's channels `start..end`: `x[:, start:end]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The first channel.
    pub start: i64,
    /// One past the last (at most the input's channels).
    pub end: i64,
}

/// `nn.ChannelShuffle(groups)`: the channels seen as `groups` groups of
/// `C / groups`, output channel `k · groups + g` the input's `g · (C /
/// groups) + k` (ShuffleNet's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelShuffleLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The groups (dividing the channels).
    pub groups: i64,
}

/// `x.reshape(N, c, h, w)`: each image's `C·H·W` elements, in the same
/// order, as `shape` = `[c, h, w]` (one of which may be −1: what the
/// others leave). The batch stays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshapeLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Each image's new shape, `[c, h, w]`.
    pub shape: [i64; 3],
}

/// `x.permute(dims)`: each image's axes reordered, output axis `k` the
/// input's axis `dims[k]`; `dims` a permutation of 0, 1, 2, 3 that keeps
/// the batch first (`dims[0] = 0`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermuteLayer {
    /// The name.
    pub name: String,
    /// The layer it reads (default: the previous one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The input's axis of each output axis.
    pub dims: [i64; 4],
}

/// What [`Layer::input`] gives a layer that names no single input.
static NO_INPUT: Option<String> = None;

#[cfg(test)]
mod tests {
    use super::*;

    /// One layer of each kind, as a file writes it.
    const EVERY_KIND: &str = r#"{"name": "m", "input": [1, 4, 8, 8], "layers": [
        {"kind": "conv", "name": "c", "out_channels": 4, "kernel": 3},
        {"kind": "batchnorm", "name": "bn"},
        {"kind": "activation", "name": "a", "activation": "relu"},
        {"kind": "dsc", "name": "d", "out_channels": 4, "kernel": 3},
        {"kind": "acblock", "name": "ac", "out_channels": 4, "kernel": 3},
        {"kind": "add", "name": "s", "with": "c"},
        {"kind": "max_pool", "name": "p", "kernel": 2},
        {"kind": "global_avg_pool", "name": "g"},
        {"kind": "linear", "name": "l", "out_features": 2},
        {"kind": "concat", "name": "cat", "inputs": ["l", "l"]},
        {"kind": "prelu", "name": "pr"},
        {"kind": "pixel_shuffle", "name": "up", "factor": 2},
        {"kind": "pixel_unshuffle", "name": "down", "factor": 2},
        {"kind": "mul", "name": "prod", "with": "down"},
        {"kind": "sub", "name": "diff", "with": "down"},
        {"kind": "avg_pool", "name": "avg", "kernel": 2},
        {"kind": "upsample", "name": "x2", "scale_factor": 2},
        {"kind": "pad", "name": "border", "padding": 1},
        {"kind": "affine", "name": "scale"},
        {"kind": "slice", "name": "part", "start": 0, "end": 2},
        {"kind": "channel_shuffle", "name": "shuffle", "groups": 2},
        {"kind": "reshape", "name": "view", "shape": [1, 2, -1]},
        {"kind": "permute", "name": "nhwc", "dims": [0, 2, 3, 1]}]}"#;

    /// A layer's typed kind is spelt as the file's `kind` tag, for every
    /// kind, both ways: the one read and the one written.
    #[test]
    fn layer_kinds_are_spelt_as_the_files_tag() {
        let model = Model::from_json(EVERY_KIND).unwrap();
        let written: serde_json::Value = serde_json::from_str(EVERY_KIND).unwrap();
        let kinds: Vec<LayerKind> = model.layers.iter().map(Layer::kind).collect();
        assert_eq!(kinds, LayerKind::ALL);
        for (layer, file) in model.layers.iter().zip(written["layers"].as_array().unwrap()) {
            let kind = layer.kind();
            assert_eq!(file["kind"], kind.as_str());
            assert_eq!(serde_json::to_value(layer).unwrap()["kind"], kind.as_str());
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(kind.to_string(), kind.as_str());
        }
    }

    /// An unknown kind is refused naming the layer, the kind and the
    /// kinds there are.
    #[test]
    fn an_unknown_kind_names_the_layer_and_the_known_kinds() {
        let text = EVERY_KIND.replace(r#""kind": "max_pool""#, r#""kind": "lp_pool""#);
        let err = Model::from_json(&text).unwrap_err().to_string();
        assert!(err.contains(r#"layer "p""#) && err.contains("lp_pool"), "{err}");
        for kind in LayerKind::ALL {
            assert!(err.contains(kind.as_str()), "{err}");
        }
    }
}
