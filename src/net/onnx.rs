//! ONNX models in: a `.onnx` file's graph as a [`Model`] and its
//! initializers as [`Tensors`] (docs/networks.md), so that the model runs,
//! counts and checks as a model file with its safetensors weights does.
//!
//! The file is decoded by the `protobuf` crate from the ONNX project's own
//! schema (`proto/onnx.proto`, compiled to Rust by `build.rs`); a file that
//! is not a valid `ModelProto` (truncated, fuzzed, another format) is
//! refused whole. The graph's inputs (those that are no initializer) must
//! be f32 `[N, C, H, W]` of fixed sizes; they become the model's inputs
//! under their ONNX names. Its outputs, each computed by a node, become the
//! model's outputs under their ONNX names; its nodes, in the file's
//! (topological) order, become the model's layers:
//!
//! | ONNX (default domain, opset 13–21) | layer |
//! |---|---|
//! | Conv (`pads`, `auto_pad` VALID, SAME_UPPER, SAME_LOWER), ConvTranspose (also `output_padding`, `output_shape`) | `conv` |
//! | BatchNormalization (inference) | `batchnorm` |
//! | Relu, LeakyRelu, Clip to [0, 6] or [0, ∞) | `activation` |
//! | Add of two computed tensors | `add` |
//! | Add, Mul, Sub of a computed tensor and a constant (one value, or one per channel) | `affine` |
//! | Concat of images along the channels (axis 1) | `concat` |
//! | PRelu (one slope, or one per channel) | `prelu` |
//! | Sigmoid, Tanh, HardSigmoid, HardSwish | `activation` |
//! | Mul, Sub of two computed tensors (one of them `[N, C, 1, 1]` too: a gate per plane) | `mul`, `sub` |
//! | DepthToSpace (DCR, CRD), SpaceToDepth | `pixel_shuffle`, `pixel_unshuffle` |
//! | MaxPool, AveragePool (symmetric `pads`, floor, no dilation) | `max_pool`, `avg_pool` |
//! | Resize by whole factors: nearest (as PyTorch's), linear (half_pixel, pytorch_half_pixel, align_corners) | `upsample` |
//! | Pad (constant, of the rows and columns) | `pad` |
//! | GlobalAveragePool | `global_avg_pool` |
//! | Gemm of a matrix (α = β = 1, weights an initializer), MatMul of a matrix by an initializer | `linear` |
//! | Flatten (axis 1), Reshape to `[N, F]`, Identity, Dropout, Constant | none: an alias, a value |
//! | Reshape of an image (or a matrix) to `[N, C, H, W]` | `reshape` |
//! | Transpose of an image's axes, the batch first (`[0, a, b, c]`) | `permute` |
//! | Split, Slice of an image's channels | `slice` |
//! | Reshape to `[N, g, C/g, H, W]`, Transpose `[0, 2, 1, 3, 4]`, Reshape back | `channel_shuffle` |
//! | ReduceMean over `[2, 3]` | `global_avg_pool` |
//! | Shape, Gather, Unsqueeze, Squeeze, Cast, Concat, Add, Sub, Mul, Div, Slice of integers | none: folded at import |
//!
//! A matrix `[N, F]` (a Flatten's, a Reshape's or a Gemm's output, and what elementwise
//! layers make of it) is held as `[N, F, 1, 1]`: convs and pools refuse
//! it, an Add refuses a matrix and an image, and a Gemm reads only a
//! matrix.
//!
//! A layer takes the node's name (its first output's where it has none);
//! its weights are stored under PyTorch's names for that layer
//! (`{layer}.weight`, `{layer}.running_var`, ...), each initializer
//! decoded when a layer takes it (a copy each, where several do). Anything else — another
//! operator, domain or opset, a tensor of another type, a shape that is
//! not fixed — is refused in one error naming the node, its operator and
//! the opset, with the operators there are.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use protobuf::Message;

use super::infer::{Source, infer, reshaped_sizes};
use super::model::{
    ActivationLayer, AddLayer, AffineLayer, AvgPoolLayer, BatchNormLayer, BinaryLayer,
    ChannelShuffleLayer, ConcatLayer, ConvLayer, Function, INPUT, Inputs, Layer, LinearLayer,
    MODEL, MaxPoolLayer, Model, NamedInput, NamedOutput, Output, PadLayer, PadSides, PermuteLayer,
    PlainLayer, PreluLayer, ReshapeLayer, ShuffleLayer, ShuffleOrder, SliceLayer, UpsampleLayer,
    UpsampleMode,
};
use super::{Tensors, in_layer, model_error};
use crate::error::{Error, Result};
use crate::files;
use crate::spec::{ActivationKind, MAX_DIM, Op, PaddingSpec, Pair};

mod proto {
    // The messages `build.rs` generates from proto/onnx.proto.
    #![allow(clippy::all, clippy::pedantic, missing_docs, unused)]
    include!(concat!(env!("OUT_DIR"), "/onnx/mod.rs"));
}

use proto::onnx::attribute_proto::AttributeType;
use proto::onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto};

/// The opsets of the default domain whose operators this reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// The operators this reads, as errors list them.
pub const OPERATORS: [&str; 39] = [
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "ConvTranspose",
    "DepthToSpace",
    "Div",
    "Dropout",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MatMul",
    "MaxPool",
    "Mul",
    "PRelu",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Slice",
    "SpaceToDepth",
    "Split",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// `TensorProto.DataType.INT64`: shapes.
const INT64: i32 = 7;

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;

/// Reads an ONNX model: its graph as a [`Model`] named after the file (or
/// the graph), its weights as [`Tensors`].
pub fn load(path: &Path) -> Result<(Model, Tensors)> {
    let bytes = files::read(path, files::ONNX)?;
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| Error::InputFile {
        path: path.to_path_buf(),
        reason: format!("not a valid ONNX model ({e})"),
    })?;
    drop(bytes);
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    import(&model, name)
}

/// A tensor a node reads: what the model computes, or a tensor of the
/// file.
#[derive(Clone, Debug)]
enum Value<'a> {
    /// The output of this layer (or of the model's input of this name); `flat`
    /// for a matrix `[N, F]` (a Flatten's, a Gemm's and what elementwise
    /// layers make of them), which the model holds as `[N, F, 1, 1]`.
    Computed { layer: String, flat: bool },
    /// An initializer or a Constant's value, decoded when a node takes it
    /// (an unused one, such as a shape of another type, costs nothing).
    Tensor(&'a TensorProto),
    /// A channel shuffle under way (ShuffleNet's, as exports write
    /// it): this layer's image `[N, C, H, W]` reshaped to `[N, groups,
    /// C/groups, H, W]` (`swapped` false), then transposed to `[N,
    /// C/groups, groups, H, W]` (true), which a Reshape back to four axes
    /// makes a `channel_shuffle`.
    Shuffling { layer: String, groups: usize, swapped: bool },
    /// Integers the import computed from shapes (a Shape, and the
    /// arithmetic exports do on it: a chunk's bounds, a flatten's size),
    /// as a vector (a scalar is one value).
    Ints(Vec<i64>),
}

/// What the import has seen so far.
struct Import<'a> {
    opset: i64,
    /// The model's batch, N of its input.
    batch: i64,
    values: BTreeMap<String, Value<'a>>,
    layers: Vec<Layer>,
    /// The shape of each layer's (and input's) output, by its name, as
    /// the shape inference gives it: what a node's attributes are read
    /// against (a Resize's sizes, a constant's broadcast).
    shapes: BTreeMap<String, [usize; 4]>,
    names: BTreeSet<String>,
    tensors: Tensors,
    /// How many times nodes (and the graph's outputs) read each value.
    readers: BTreeMap<String, usize>,
    /// The f32 values decoded for layers so far, and how many the file
    /// may give: twice what it holds, and 2^24 more.
    decoded: usize,
    budget: usize,
    /// Each layer's index in `layers` and the name of the value its node
    /// wrote (aliases of it aside), by the layer's name.
    index: HashMap<String, (usize, String)>,
}

fn import(model: &ModelProto, name: String) -> Result<(Model, Tensors)> {
    let refuse = |reason: String| model_error(MODEL, reason);
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain().is_empty() || o.domain() == "ai.onnx")
        .map(|o| o.version())
        .ok_or_else(|| refuse("the model imports no opset of the default ONNX domain".into()))?;
    if !OPSETS.contains(&opset) {
        return Err(refuse(format!(
            "opset {opset} of the default domain; this reads opsets {} to {}",
            OPSETS.start(),
            OPSETS.end()
        )));
    }
    let graph: &GraphProto = model.graph.as_ref().ok_or_else(|| refuse("no graph".into()))?;
    let mut import = Import {
        opset,
        batch: 0,
        values: BTreeMap::new(),
        layers: Vec::new(),
        shapes: BTreeMap::new(),
        readers: BTreeMap::new(),
        index: HashMap::new(),
        decoded: 0,
        // A value is 4 bytes of the file at least.
        budget: usize::try_from(model.compute_size() / 2)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 24),
        names: BTreeSet::from([INPUT.to_string()]),
        tensors: Tensors::new(),
    };
    for t in &graph.initializer {
        import.values.insert(t.name().to_string(), Value::Tensor(t));
    }
    let inputs: Vec<_> =
        graph.input.iter().filter(|i| !import.values.contains_key(i.name())).collect();
    if inputs.is_empty() {
        return Err(refuse("the graph has no input but its initializers".into()));
    }
    let mut named = Vec::with_capacity(inputs.len());
    for input in inputs {
        let shape = input_shape(input)?;
        let name = input.name().to_string();
        if name.is_empty() {
            return Err(refuse("an input of the graph has no name".into()));
        }
        import.names.insert(name.clone());
        import.shapes.insert(name.clone(), shape.map(|d| d.clamp(0, MAX_DIM) as usize));
        import.values.insert(name.clone(), Value::Computed { layer: name.clone(), flat: false });
        named.push(NamedInput { name, shape });
    }
    import.batch = named[0].shape[0];
    let read = graph.node.iter().flat_map(|n| n.input.iter().map(String::as_str));
    for name in read.chain(graph.output.iter().map(|o| o.name())) {
        *import.readers.entry(name.to_string()).or_default() += 1;
    }
    for (i, node) in graph.node.iter().enumerate() {
        import.node(node, i)?;
    }
    if graph.output.is_empty() {
        return Err(refuse("the graph has no output".into()));
    }
    let mut outputs = Vec::with_capacity(graph.output.len());
    for output in &graph.output {
        let name = output.name();
        match import.values.get(name) {
            Some(Value::Computed { layer, .. }) if import.index.contains_key(layer) => {
                outputs.push(match name == layer {
                    true => Output::Layer(name.to_string()),
                    false => Output::Named(NamedOutput { name: name.into(), layer: layer.clone() }),
                });
            }
            _ => {
                return Err(refuse(format!(
                    "the graph's output {name:?} is no layer's: this reads outputs that nodes \
                     compute (not an input, an initializer or a Constant)"
                )));
            }
        }
    }
    let model = Model { name, input: Inputs::Named(named), layers: import.layers, outputs };
    Ok((model, import.tensors))
}

/// The graph input's shape: an f32 tensor of four fixed sizes.
fn input_shape(input: &proto::onnx::ValueInfoProto) -> Result<[i64; 4]> {
    let refuse =
        |reason: String| model_error(MODEL, format!("the input {}: {reason}", input.name()));
    let tensor = input.type_.tensor_type();
    if tensor.elem_type() != FLOAT {
        return Err(refuse(format!(
            "element type {} (this reads float32, type {FLOAT})",
            tensor.elem_type()
        )));
    }
    let dims: Vec<Option<i64>> = tensor
        .shape
        .dim
        .iter()
        .map(|d| (d.has_dim_value() && d.dim_value() > 0).then(|| d.dim_value()))
        .collect();
    match dims.as_slice() {
        [Some(n), Some(c), Some(h), Some(w)] if [n, c, h, w].iter().all(|&&d| d <= MAX_DIM) => {
            Ok([*n, *c, *h, *w])
        }
        _ => Err(refuse(format!(
            "shape {dims:?}: this reads an [N, C, H, W] input of fixed sizes (a dynamic size \
             such as a batch named by a parameter is refused), each at most {MAX_DIM}"
        ))),
    }
}

/// A tensor's shape, its element count checked not to overflow.
fn tensor_shape(t: &TensorProto, what: &str) -> Result<(Vec<usize>, usize)> {
    let refuse = |reason: String| model_error(what, format!("tensor {}: {reason}", t.name()));
    let shape: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| refuse(format!("a dimension of {d}"))))
        .collect::<Result<_>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| refuse(format!("shape {shape:?}: its element count overflows")))?;
    Ok((shape, count))
}

/// A tensor's shape and values of one element type: its typed field
/// (`typed`) or its little-endian `raw_data` of `N`-byte values (`what`,
/// the node reading it, names it in errors; `kind` is the type ONNX
/// numbers `data_type`, `name` the type's).
fn decode<T: Clone, const N: usize>(
    t: &TensorProto,
    what: &str,
    (kind, name): (i32, &str),
    typed: &[T],
    from_le: fn([u8; N]) -> T,
) -> Result<(Vec<usize>, Vec<T>)> {
    let refuse = |reason: String| model_error(what, format!("tensor {}: {reason}", t.name()));
    if t.data_type() != kind {
        return Err(refuse(format!(
            "data type {} (this reads {name}, type {kind})",
            t.data_type()
        )));
    }
    if !t.external_data.is_empty() {
        return Err(refuse(
            "its data is in an external file; this reads models in one file".into(),
        ));
    }
    let (shape, count) = tensor_shape(t, what)?;
    let data: Vec<T> = if !typed.is_empty() {
        typed.to_vec()
    } else {
        let raw = t.raw_data();
        if raw.len() != count.saturating_mul(N) {
            return Err(refuse(format!(
                "shape {shape:?} holds {count} values, its raw data {} bytes",
                raw.len()
            )));
        }
        raw.chunks_exact(N).map(|b| from_le(b.try_into().expect("N bytes"))).collect()
    };
    if data.len() != count {
        return Err(refuse(format!(
            "shape {shape:?} holds {count} values, its data {}",
            data.len()
        )));
    }
    Ok((shape, data))
}

/// An f32 tensor's shape and values (`what` names the node reading it).
fn tensor_values(t: &TensorProto, what: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    decode(t, what, (FLOAT, "float32"), &t.float_data, f32::from_le_bytes)
}

/// A node's attributes, read by name, each of the type ONNX gives it.
struct Attributes<'a> {
    node: &'a NodeProto,
    label: String,
}

impl<'a> Attributes<'a> {
    /// The attribute `name`, when it is there, of type `kind`.
    fn get(&self, name: &str, kind: AttributeType) -> Result<Option<&'a AttributeProto>> {
        match self.node.attribute.iter().find(|a| a.name() == name) {
            Some(a) if a.type_() != kind => Err(model_error(
                &self.label,
                format!("attribute {name} is of type {:?}, not {kind:?}", a.type_()),
            )),
            found => Ok(found),
        }
    }

    fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.get(name, AttributeType::INT)?.map_or(default, |a| a.i()))
    }

    fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.get(name, AttributeType::FLOAT)?.map_or(default, |a| a.f()))
    }

    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self.get(name, AttributeType::INTS)?.map(|a| a.ints.clone()))
    }

    fn string(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .get(name, AttributeType::STRING)?
            .map(|a| String::from_utf8_lossy(a.s()).into_owned()))
    }

    /// A pair of a 2-D operator's attribute (`[h, w]`), or `default`.
    fn pair(&self, name: &str, default: i64) -> Result<[i64; 2]> {
        match self.ints(name)?.as_deref() {
            None => Ok([default, default]),
            Some(&[h, w]) => Ok([h, w]),
            Some(other) => Err(model_error(
                &self.label,
                format!("attribute {name} {other:?}: this reads 2-D operators ([h, w])"),
            )),
        }
    }

    /// `pads` as `[top, left, bottom, right]`, after checking that
    /// `auto_pad` leaves them explicit.
    fn pads(&self) -> Result<[i64; 4]> {
        match self.string("auto_pad")?.as_deref() {
            None | Some("NOTSET") => {}
            Some("VALID") => return Ok([0; 4]),
            Some(other) => {
                return Err(model_error(
                    &self.label,
                    format!(
                        "auto_pad {other}: this reads explicit pads (NOTSET) or VALID, and a \
                         Conv's SAME_UPPER and SAME_LOWER"
                    ),
                ));
            }
        }
        match self.ints("pads")?.as_deref() {
            None => Ok([0; 4]),
            Some(&[t, l, b, r]) => Ok([t, l, b, r]),
            Some(other) => Err(model_error(
                &self.label,
                format!("pads {other:?}: this reads 2-D operators ([top, left, bottom, right])"),
            )),
        }
    }
}

/// Whether ONNX's nearest Resize by a whole `factor`, with this
/// coordinate transformation and rounding, takes every output pixel `o` to
/// input pixel `o / factor` (the coordinates clamped into the image, as
/// onnxruntime does): checked on two periods of the map, which repeats
/// with period `factor` (the first period clamped at 0, the second not).
fn nearest_is_floor(transform: &str, rounding: &str, factor: i64) -> bool {
    let f = factor as f32;
    (0..2 * factor).all(|o| {
        let x = o as f32;
        let source = match transform {
            "asymmetric" => x / f,
            "half_pixel" | "pytorch_half_pixel" => (x + 0.5) / f - 0.5,
            "tf_half_pixel_for_nn" => (x + 0.5) / f,
            _ => return false,
        };
        let index = match rounding {
            "floor" => source.floor(),
            "ceil" => source.ceil(),
            "round_prefer_floor" if source.fract().abs() == 0.5 => source.floor(),
            "round_prefer_ceil" if source.fract().abs() == 0.5 => source.ceil(),
            "round_prefer_floor" | "round_prefer_ceil" => source.round(),
            _ => return false,
        };
        let index = if o < factor { index.max(0.0) } else { index };
        index == (o / factor) as f32
    })
}

/// A ConvTranspose's `[top, left, bottom, right]` pads and output padding
/// for an output of `target` `[h, w]` (`output_shape`), or, without one,
/// of the input's size times the stride (`auto_pad` SAME_*), as ONNX
/// states them: on each axis the total padding `stride · (in − 1) +
/// output_padding + (k − 1) · dilation + 1 − out`, split evenly, its odd
/// pixel at the end (SAME_UPPER) or at the start (SAME_LOWER, and
/// NOTSET with `output_shape`). An output larger than the padding can
/// reach is made with more output padding.
fn transposed_pads(
    input: [usize; 2],
    kernel: [usize; 2],
    (stride, dilation, adjust): ([i64; 2], [i64; 2], [i64; 2]),
    target: Option<[i64; 2]>,
    upper: bool,
) -> std::result::Result<([i64; 4], [i64; 2]), String> {
    let mut pads = [0i64; 4];
    let mut adjusted = adjust;
    for axis in 0..2 {
        let (i, k) = (input[axis] as i128, kernel[axis] as i128);
        let (s, d, a) =
            (i128::from(stride[axis]), i128::from(dilation[axis]), i128::from(adjust[axis]));
        let out = target.map_or(i * s, |t| i128::from(t[axis]));
        let mut total = s * (i - 1) + a + (k - 1) * d + 1 - out;
        if total < 0 {
            adjusted[axis] = i64::try_from(a - total).map_err(|_| format!("output size {out}"))?;
            total = 0;
        }
        let (begin, end) =
            if upper { (total / 2, total - total / 2) } else { (total - total / 2, total / 2) };
        let fit = |v: i128| i64::try_from(v).map_err(|_| format!("a padding of {v}"));
        [pads[axis], pads[axis + 2]] = [fit(begin)?, fit(end)?];
    }
    Ok((pads, adjusted))
}

/// The features `C·H·W` of a matrix flattened from an image of those
/// sizes, checked not to overflow.
fn features(c: usize, h: usize, w: usize, label: &str) -> Result<i64> {
    c.checked_mul(h)
        .and_then(|v| v.checked_mul(w))
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| model_error(label, format!("a matrix of {c}·{h}·{w} features")))
}

/// `v` as an `i64` for a layer's field (a size of the file, which fits).
fn field(v: usize, what: &str, label: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| model_error(label, format!("{what} {v} is past every size")))
}

impl<'a> Import<'a> {
    /// Reads node `index`.
    fn node(&mut self, node: &'a NodeProto, index: usize) -> Result<()> {
        let op = node.op_type();
        let shown = if node.name().is_empty() { format!("#{index}") } else { node.name().into() };
        let label = format!("{shown} ({op}, opset {})", self.opset);
        let refuse = |reason: String| model_error(&label, reason);
        if !(node.domain().is_empty() || node.domain() == "ai.onnx") {
            return Err(refuse(format!(
                "domain {}: this reads the default ONNX domain's operators: {}",
                node.domain(),
                OPERATORS.join(", ")
            )));
        }
        let attributes = Attributes { node, label: label.clone() };
        let output = node.output.first().cloned().unwrap_or_default();
        if let Some(value) = self.fold(node, &attributes, &label)? {
            self.values.insert(output, value);
            return Ok(());
        }
        match op {
            "Slice" => self.channel_slice(node, &label)?,
            "Identity" | "Dropout" => {
                if op == "Dropout" && node.input.get(2).is_some_and(|n| !n.is_empty()) {
                    return Err(refuse("its training_mode input: this reads inference".into()));
                }
                let value = self.input(node, 0, &label)?;
                self.values.insert(output, value);
            }
            "Constant" => {
                let tensor = attributes
                    .get("value", AttributeType::TENSOR)?
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| refuse("a Constant of no tensor `value`".into()))?;
                self.values.insert(output, Value::Tensor(tensor));
            }
            "Flatten" => {
                if attributes.int("axis", 1)? != 1 {
                    return Err(refuse("this reads Flatten with axis 1 (before a Gemm)".into()));
                }
                let (layer, _) = self.source(node, 0, &label)?;
                self.values.insert(output, Value::Computed { layer, flat: true });
            }
            "Mul" if self.silu(node, &label)? => {}
            "Reshape" if self.shuffle_reshape(node, &attributes, &label)? => {}
            "Transpose" => {
                let perm = attributes.ints("perm")?;
                let value = match (self.input(node, 0, &label)?, perm.as_deref()) {
                    (Value::Shuffling { layer, groups, swapped: false }, Some([0, 2, 1, 3, 4])) => {
                        Value::Shuffling { layer, groups, swapped: true }
                    }
                    (Value::Computed { layer, flat: false }, Some([0, 1, 2, 3])) => {
                        Value::Computed { layer, flat: false }
                    }
                    (Value::Computed { layer, flat: false }, Some(&[0, a, b, c]))
                        if [1, 2, 3].iter().all(|d| [a, b, c].contains(d)) =>
                    {
                        let name = self.name(node, &label)?;
                        let permute = PermuteLayer { name, input: Some(layer), dims: [0, a, b, c] };
                        self.push(Layer::Permute(permute), false, output, &label)?;
                        return Ok(());
                    }
                    (_, perm) => {
                        let perm = perm.map_or("absent (reversed)".into(), |p| format!("{p:?}"));
                        return Err(refuse(format!(
                            "perm {perm}: this reads a Transpose of an image's axes that keeps \
                             the batch first ([0, a, b, c]) or swaps the groups of a channel \
                             shuffle ([0, 2, 1, 3, 4] of [N, g, C/g, H, W])"
                        )));
                    }
                };
                self.values.insert(output, value);
            }
            "Split" => self.split(node, &attributes, &label)?,
            "Reshape" => {
                // A flatten written as a reshape to [N, F]: [0, -1] or
                // [N, -1] (PyTorch's `x.view(x.size(0), -1)`), or F given;
                // or an image reshaped: each image's elements in order.
                // The batch stays.
                let (layer, flat) = self.source(node, 0, &label)?;
                let shape = self.shape(node, 1, &label)?;
                let zero = attributes.int("allowzero", 0)? == 0;
                let [n, c, h, w] = self.shapes.get(&layer).copied().unwrap_or_default();
                let features = features(c, h, w, &label)?;
                // The input as ONNX has it: a matrix [N, F], or an image.
                let dims = match flat {
                    true => vec![n as i64, features],
                    false => [n, c, h, w].map(|d| d as i64).to_vec(),
                };
                match reshaped_sizes(&shape, &dims, zero).as_deref() {
                    Some(&[m, f]) if m == dims[0] && f == features => {
                        self.values.insert(output, Value::Computed { layer, flat: true });
                    }
                    Some(&[m, c, h, w]) if m == dims[0] => {
                        let name = self.name(node, &label)?;
                        let reshape = ReshapeLayer { name, input: Some(layer), shape: [c, h, w] };
                        self.push(Layer::Reshape(reshape), false, output, &label)?;
                    }
                    _ => {
                        return Err(refuse(format!(
                            "shape {shape:?} of {dims:?}: this reads Reshape to a matrix [N, F] \
                             or to images [N, C, H, W] of the input's N and elements"
                        )));
                    }
                }
            }
            _ => {
                let (layer, flat) = self.layer(node, &attributes, &label)?;
                self.push(layer, flat, output, &label)?;
            }
        }
        Ok(())
    }

    /// Input `i` of `node` as integers, when it is: computed from shapes,
    /// or an int64 constant of the file of at most one axis and a few
    /// values (`None` otherwise, or when it is absent).
    fn ints(&self, node: &NodeProto, i: usize, label: &str) -> Result<Option<Vec<i64>>> {
        let Some(name) = node.input.get(i).filter(|n| !n.is_empty()) else { return Ok(None) };
        match self.values.get(name) {
            Some(Value::Ints(values)) => Ok(Some(values.clone())),
            Some(Value::Tensor(t)) if t.data_type() == INT64 && t.dims.len() <= 1 => {
                if tensor_shape(t, label)?.1 > 64 {
                    return Ok(None);
                }
                Ok(Some(decode(t, label, (INT64, "int64"), &t.int64_data, i64::from_le_bytes)?.1))
            }
            _ => Ok(None),
        }
    }

    /// Constant folding of the integer arithmetic exports do on shapes
    /// (`x.size(1) // 2`, `x.view(x.size(0), -1)`): Shape of a computed
    /// tensor (its shape is known), and Gather, Add, Sub, Mul, Div,
    /// Unsqueeze, Squeeze, Concat, Cast to int64 and Slice of such
    /// integers. The value, when `node` is one of them.
    fn fold(&self, node: &NodeProto, a: &Attributes<'_>, label: &str) -> Result<Option<Value<'a>>> {
        let refuse = |reason: String| model_error(label, reason);
        let ints = |i: usize| self.ints(node, i, label);
        let op = node.op_type();
        let values = match op {
            "Shape" => {
                let (layer, flat) = self.source(node, 0, label)?;
                let [n, c, h, w] = self.shapes.get(&layer).copied().unwrap_or_default();
                let dims: Vec<i64> = match flat {
                    true => vec![n as i64, features(c, h, w, label)?],
                    false => vec![n as i64, c as i64, h as i64, w as i64],
                };
                let rank = dims.len() as i64;
                let bound = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
                let (start, end) = (bound(a.int("start", 0)?), bound(a.int("end", rank)?));
                dims[start..end.max(start)].to_vec()
            }
            "Gather" => {
                let (Some(data), Some(indices)) = (ints(0)?, ints(1)?) else { return Ok(None) };
                if a.int("axis", 0)? != 0 {
                    return Err(refuse("a Gather of integers along axis 0 only".into()));
                }
                let len = data.len() as i64;
                (indices.iter())
                    .map(|&k| {
                        let k = if k < 0 { k + len } else { k };
                        (0..len)
                            .contains(&k)
                            .then(|| data[k as usize])
                            .ok_or_else(|| refuse(format!("index {k} of {len} values")))
                    })
                    .collect::<Result<_>>()?
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (Some(x), Some(y)) = (ints(0)?, ints(1)?) else { return Ok(None) };
                if x.len() != y.len() && x.len() != 1 && y.len() != 1 {
                    return Err(refuse(format!("{x:?} and {y:?} do not broadcast")));
                }
                let at = |v: &[i64], k: usize| v[if v.len() == 1 { 0 } else { k }];
                // A single value broadcasts, to none as to many.
                let len = if x.len() == 1 { y.len() } else { x.len() };
                (0..len)
                    .map(|k| {
                        let (p, q) = (at(&x, k), at(&y, k));
                        match op {
                            "Add" => p.checked_add(q),
                            "Sub" => p.checked_sub(q),
                            "Mul" => p.checked_mul(q),
                            _ => p.checked_div(q),
                        }
                        .ok_or_else(|| {
                            refuse(format!("{op} of {p} and {q} overflows or divides by 0"))
                        })
                    })
                    .collect::<Result<_>>()?
            }
            "Unsqueeze" | "Squeeze" | "Identity" => {
                let Some(x) = ints(0)? else { return Ok(None) };
                x
            }
            "Cast" => {
                let Some(x) = ints(0)? else { return Ok(None) };
                if a.int("to", 0)? != i64::from(INT64) {
                    return Err(refuse("a Cast of integers to int64 only".into()));
                }
                x
            }
            "Concat" => {
                let mut all = Vec::new();
                for i in 0..node.input.len() {
                    let Some(x) = ints(i)? else { return Ok(None) };
                    all.extend(x);
                    if all.len() > 64 {
                        return Err(refuse("a Concat of more than 64 integers".into()));
                    }
                }
                all
            }
            "Slice" => {
                let Some(x) = ints(0)? else { return Ok(None) };
                let (start, end) = self.slice_bounds(node, x.len(), label)?;
                x[start..end.max(start)].to_vec()
            }
            _ => return Ok(None),
        };
        if values.len() > 64 {
            return Err(refuse(format!("{} integers: this folds shapes, of a few", values.len())));
        }
        Ok(Some(Value::Ints(values)))
    }

    /// A Slice's `[start, end)` on an axis of `len`: its one axis (0, or 1
    /// for an image's channels: the caller checks which), step 1, bounds
    /// clamped as ONNX states (negative from the end).
    fn slice_bounds(&self, node: &NodeProto, len: usize, label: &str) -> Result<(usize, usize)> {
        let refuse = |reason: String| model_error(label, reason);
        let one = |i: usize, what: &str| -> Result<Option<i64>> {
            match self.ints(node, i, label)? {
                None if node.input.get(i).is_none_or(|n| n.is_empty()) => Ok(None),
                Some(v) if v.len() == 1 => Ok(Some(v[0])),
                _ => Err(refuse(format!("its {what}: this reads one constant value"))),
            }
        };
        let (starts, ends) = (one(1, "starts")?, one(2, "ends")?);
        if one(4, "steps")?.is_some_and(|s| s != 1) {
            return Err(refuse("steps: this reads step 1".into()));
        }
        let len = len as i64;
        let bound = |v: i64| (if v < 0 { v.saturating_add(len) } else { v }).clamp(0, len) as usize;
        Ok((bound(starts.unwrap_or(0)), bound(ends.unwrap_or(len))))
    }

    /// A Slice of an image's channels (`axes` [1], step 1), as exports
    /// write `torch.chunk` and `x[:, a:b]`: a `slice` layer.
    fn channel_slice(&mut self, node: &NodeProto, label: &str) -> Result<()> {
        let refuse = |reason: String| model_error(label, reason);
        let input = self.image(node, 0, label)?;
        let axes = self.ints(node, 3, label)?;
        if !matches!(axes.as_deref(), Some([1] | [-3])) {
            let axes = axes.map_or("absent (every axis)".into(), |a| format!("{a:?}"));
            return Err(refuse(format!(
                "axes {axes}: this reads a Slice of an image's channels (axes [1])"
            )));
        }
        let c = self.shapes.get(&input).copied().unwrap_or_default()[1];
        let (start, end) = self.slice_bounds(node, c, label)?;
        let name = self.name(node, label)?;
        let layer = Layer::Slice(SliceLayer {
            name,
            input: Some(input),
            start: field(start, "start", label)?,
            end: field(end, "end", label)?,
        });
        let output = node.output.first().cloned().unwrap_or_default();
        self.push(layer, false, output, label)
    }

    /// Adds `layer`, which writes value `output` (a matrix when `flat`),
    /// its shape inferred.
    fn push(&mut self, layer: Layer, flat: bool, output: String, label: &str) -> Result<()> {
        let name = layer.name().to_string();
        let shape_of = |l: &str| self.shapes.get(l).copied().unwrap_or_default();
        let others: Vec<_> =
            layer.others().iter().map(|o| (Source::Input(0), shape_of(o))).collect();
        let input = shape_of(layer.input().unwrap_or_default());
        let (_, out, _) = infer(&layer, input, &others).map_err(in_layer(label))?;
        self.shapes.insert(name.clone(), out);
        self.index.insert(name.clone(), (self.layers.len(), output.clone()));
        self.values.insert(output, Value::Computed { layer: name, flat });
        self.layers.push(layer);
        Ok(())
    }

    /// A Reshape of a channel shuffle: an image `[N, C, H, W]` to `[N, g,
    /// C/g, H, W]`, or the transposed groups back to `[N, C, H, W]` (a
    /// `channel_shuffle` layer). Whether it was one (other Reshapes are
    /// flattens, reshapes of images, or refused).
    fn shuffle_reshape(
        &mut self,
        node: &NodeProto,
        a: &Attributes<'_>,
        label: &str,
    ) -> Result<bool> {
        let refuse = |reason: String| model_error(label, reason);
        let value = self.input(node, 0, label)?;
        let shape = self.shape(node, 1, label)?;
        let output = node.output.first().cloned().unwrap_or_default();
        // A 0 copies the input's size on that axis (unless allowzero).
        let zero = a.int("allowzero", 0)? == 0;
        let size = |v: i64, at: usize, dims: &[usize]| match v {
            0 if zero => dims.get(at).map(|&d| d as i64),
            v => Some(v),
        };
        match value {
            Value::Computed { layer, flat: false } if shape.len() == 5 => {
                let dims = self.shapes.get(&layer).copied().unwrap_or_default();
                let [n, c, h, w] = dims.map(|d| d as i64);
                let got: Vec<Option<i64>> =
                    shape.iter().enumerate().map(|(i, &v)| size(v, i, &dims)).collect();
                let g = got[1].filter(|&g| g > 0 && c % g == 0);
                let fits = g.is_some_and(|g| {
                    got[0] == Some(n)
                        && (got[2] == Some(c / g) || got[2] == Some(-1))
                        && got[3] == Some(h)
                        && got[4] == Some(w)
                });
                if !fits {
                    return Err(refuse(format!(
                        "shape {shape:?} of {dims:?}: this reads a Reshape to five axes as a \
                         channel shuffle's [N, g, C/g, H, W]"
                    )));
                }
                let groups = g.unwrap_or(1) as usize;
                self.values.insert(output, Value::Shuffling { layer, groups, swapped: false });
                Ok(true)
            }
            Value::Shuffling { layer, groups, swapped } => {
                let [n, c, h, w] =
                    self.shapes.get(&layer).copied().unwrap_or_default().map(|d| d as i64);
                let fits = swapped
                    && matches!(shape.as_slice(), &[sn, sc, sh, sw]
                        if (sn == n || sn == -1 || (sn == 0 && zero)) && (sc == c || sc == -1)
                            && sh == h && sw == w && !(sn == -1 && sc == -1));
                if !fits {
                    return Err(refuse(format!(
                        "shape {shape:?}: this reads a channel shuffle's groups, transposed, back \
                         to [N, C, H, W] = {:?}",
                        [n, c, h, w]
                    )));
                }
                let name = self.name(node, label)?;
                let groups = field(groups, "groups", label)?;
                let layer =
                    Layer::ChannelShuffle(ChannelShuffleLayer { name, input: Some(layer), groups });
                self.push(layer, false, output, label)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// A Split of an image's channels (axis 1): each output a `slice`
    /// layer named after it; the sizes from the `split` input, or equal
    /// (`num_outputs`, opset 18: the last part smaller where they do not
    /// divide the channels).
    fn split(&mut self, node: &NodeProto, a: &Attributes<'_>, label: &str) -> Result<()> {
        let refuse = |reason: String| model_error(label, reason);
        if !matches!(a.int("axis", 0)?, 1 | -3) {
            return Err(refuse("this reads Split of an image's channels (axis 1)".into()));
        }
        let input = self.image(node, 0, label)?;
        let c = self.shapes.get(&input).copied().unwrap_or_default()[1];
        let parts = node.output.len();
        let num_outputs = a.get("num_outputs", AttributeType::INT)?.map(|n| n.i());
        if num_outputs.is_some_and(|n| n != parts as i64) {
            return Err(refuse(format!("num_outputs {num_outputs:?} and {parts} outputs")));
        }
        let sizes: Vec<i64> = if node.input.get(1).is_some_and(|n| !n.is_empty()) {
            self.ints(node, 1, label)?
                .ok_or_else(|| refuse("its split: this reads constant sizes (int64)".into()))?
        } else {
            let chunk = c.div_ceil(parts.max(1));
            if num_outputs.is_none() && c % parts.max(1) != 0 {
                return Err(refuse(format!("{c} channels in {parts} equal parts")));
            }
            (0..parts).map(|k| (chunk.min(c.saturating_sub(k * chunk))) as i64).collect()
        };
        let total = sizes.iter().try_fold(0i64, |t, &s| t.checked_add(s));
        if sizes.len() != parts || sizes.iter().any(|&s| s < 1) || total != Some(c as i64) {
            return Err(refuse(format!(
                "split {sizes:?} into {parts} outputs: parts of at least one channel, {c} in all"
            )));
        }
        let mut start = 0;
        for (output, size) in node.output.iter().zip(sizes) {
            if output.is_empty() || !self.names.insert(output.clone()) {
                return Err(refuse(format!("its output name {output:?} is empty or taken")));
            }
            let layer = Layer::Slice(SliceLayer {
                name: output.clone(),
                input: Some(input.clone()),
                start,
                end: start + size,
            });
            self.push(layer, false, output.clone(), label)?;
            start += size;
        }
        Ok(())
    }

    /// Fuses a Mul of `x` and `sigmoid(x)` (SiLU, as exporters write
    /// it), when nothing else reads the Sigmoid's output (the Mul reads
    /// the value the Sigmoid's node wrote, no alias of it, and that value
    /// has no other reader, a graph output included), into one `silu`
    /// activation: the Sigmoid's layer becomes it, and the Mul's output
    /// is its. Whether it did.
    fn silu(&mut self, node: &NodeProto, label: &str) -> Result<bool> {
        let computed = |i: usize| match self.input(node, i, label) {
            Ok(Value::Computed { layer, flat }) => Some((layer, flat)),
            _ => None,
        };
        let (Some(a), Some(b)) = (computed(0), computed(1)) else { return Ok(false) };
        // The operand `gate` (0 or 1) when it is the Sigmoid of the other.
        let sigmoid = |gate: usize| {
            let ((gate_layer, _), (x, _)) = if gate == 1 { (&b, &a) } else { (&a, &b) };
            let (at, written) = self.index.get(gate_layer)?;
            let is_sigmoid = matches!(&self.layers[*at], Layer::Activation(ActivationLayer {
                input: Some(input), activation: Function::Sigmoid, .. }) if input == x);
            let alone = node.input[gate] == *written && self.readers.get(written) == Some(&1);
            (is_sigmoid && alone).then_some((gate, *at))
        };
        let Some((gate, at)) = sigmoid(1).or_else(|| sigmoid(0)) else { return Ok(false) };
        let Layer::Activation(layer) = &mut self.layers[at] else { unreachable!("found above") };
        layer.activation = Function::Silu;
        let (name, output) = (layer.name.clone(), node.output.first().cloned().unwrap_or_default());
        let flat = if gate == 1 { a.1 } else { b.1 };
        self.values.insert(output, Value::Computed { layer: name, flat });
        Ok(true)
    }

    /// Input `i` of `node`.
    fn input(&self, node: &NodeProto, i: usize, label: &str) -> Result<Value<'a>> {
        let name = node
            .input
            .get(i)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| model_error(label, format!("input {i} is missing")))?;
        self.values.get(name).cloned().ok_or_else(|| {
            model_error(label, format!("reads {name}, which no initializer or earlier node gives"))
        })
    }

    /// The layer `node`'s input `i` is the output of, and whether that is
    /// a matrix (`flat`).
    fn source(&self, node: &NodeProto, i: usize, label: &str) -> Result<(String, bool)> {
        match self.input(node, i, label)? {
            Value::Computed { layer, flat } => Ok((layer, flat)),
            Value::Ints(_) => Err(model_error(
                label,
                format!("input {i} is integers computed from shapes; this reads a tensor"),
            )),
            Value::Shuffling { .. } => Err(model_error(
                label,
                format!(
                    "input {i} is a 5-D tensor: this reads those only in a channel shuffle \
                     (Reshape to [N, g, C/g, H, W], Transpose [0, 2, 1, 3, 4], Reshape to [N, C, \
                     H, W])"
                ),
            )),
            Value::Tensor(t) => Err(model_error(
                label,
                format!(
                    "input {i} is the tensor {}; this reads it computed from the model's input",
                    t.name()
                ),
            )),
        }
    }

    /// The layer `node`'s input `i` is the output of, an image `[N, C, H,
    /// W]` (not a matrix).
    fn image(&self, node: &NodeProto, i: usize, label: &str) -> Result<String> {
        match self.source(node, i, label)? {
            (layer, false) => Ok(layer),
            (_, true) => Err(model_error(
                label,
                format!("input {i} is a matrix [N, F]; this reads it as an image [N, C, H, W]"),
            )),
        }
    }

    /// Input `i` of `node`, a tensor of the file, decoded as a layer's
    /// weights (absent: `None`). A tensor several nodes read (exporters
    /// store equal constants once: two zero biases, tied weights) is
    /// each one's copy.
    fn weights(
        &mut self,
        node: &NodeProto,
        i: usize,
        label: &str,
    ) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        if node.input.get(i).is_none_or(|n| n.is_empty()) {
            return Ok(None);
        }
        match self.input(node, i, label)? {
            Value::Tensor(t) => self.decoded(t, label).map(Some),
            Value::Computed { .. } | Value::Shuffling { .. } | Value::Ints(_) => Err(model_error(
                label,
                format!("input {i} is computed; this reads it as an initializer or a Constant"),
            )),
        }
    }

    /// An f32 tensor of the file decoded for a layer, counted against the
    /// import's budget: a tensor several layers read is each one's copy,
    /// and the copies of a file whose nodes read one large initializer
    /// many times are refused instead of filling the memory.
    fn decoded(&mut self, t: &TensorProto, label: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (_, count) = tensor_shape(t, label)?;
        self.decoded = self.decoded.saturating_add(count);
        if self.decoded > self.budget {
            return Err(model_error(
                label,
                format!(
                    "the tensor {}: the layers' weights would reach {} values, more than twice \
                     the file's (each layer's copy of a tensor several read)",
                    t.name(),
                    self.decoded
                ),
            ));
        }
        tensor_values(t, label)
    }

    /// Input `i` of `node`, a shape of the file (int64 values).
    fn shape(&self, node: &NodeProto, i: usize, label: &str) -> Result<Vec<i64>> {
        let refuse = |reason: String| model_error(label, reason);
        let t = match self.input(node, i, label)? {
            Value::Tensor(t) => t,
            Value::Ints(values) => return Ok(values),
            _ => {
                return Err(refuse(format!("input {i} is computed; this reads a constant shape")));
            }
        };
        // A shape has a few values: a larger tensor is refused undecoded.
        if tensor_shape(t, label)?.1 > 8 {
            return Err(refuse(format!("the shape {} has more than 8 values", t.name())));
        }
        let (shape, values) =
            decode(t, label, (INT64, "int64"), &t.int64_data, i64::from_le_bytes)?;
        if shape.len() != 1 {
            return Err(refuse(format!("the shape {} is of shape {shape:?}", t.name())));
        }
        Ok(values)
    }

    /// Input `i` of `node`, one value of the file (absent: `None`).
    fn scalar(&self, node: &NodeProto, i: usize, label: &str) -> Result<Option<f32>> {
        if node.input.get(i).is_none_or(|n| n.is_empty()) {
            return Ok(None);
        }
        match self.input(node, i, label)? {
            Value::Tensor(t) if tensor_shape(t, label)?.1 == 1 => {
                Ok(Some(tensor_values(t, label)?.1[0]))
            }
            _ => Err(model_error(label, format!("input {i} is not one value of the file"))),
        }
    }

    /// A fresh layer name for `node`: its own, or its first output's.
    fn name(&mut self, node: &NodeProto, label: &str) -> Result<String> {
        let name = if node.name().is_empty() {
            node.output.first().cloned().unwrap_or_default()
        } else {
            node.name().to_string()
        };
        if name.is_empty() || !self.names.insert(name.clone()) {
            return Err(model_error(label, format!("its name {name:?} is empty or taken")));
        }
        Ok(name)
    }

    /// Stores `data` as `{layer}.{part}` of `shape`.
    fn store(&mut self, layer: &str, part: &str, shape: &[usize], data: Vec<f32>) -> Result<()> {
        self.tensors.insert(&format!("{layer}.{part}"), shape, data)
    }

    /// An Add, Mul or Sub of a computed tensor and a constant (one value,
    /// or one per channel of an image or feature of a matrix) as an
    /// `affine` layer: `x + c` a bias, `x · c` a weight, `x − c` the bias
    /// −c, `c − x` the weight −1 and the bias c. The constant is copied,
    /// so that exports that share one (a 0.5, a 6) between nodes read.
    fn affine(&mut self, node: &NodeProto, label: &str) -> Result<(Layer, bool)> {
        let refuse = |reason: String| model_error(label, reason);
        let op = node.op_type();
        // The constant's input: 0 (`c − x`) or 1.
        let at = if matches!(self.input(node, 0, label)?, Value::Tensor(_)) { 0 } else { 1 };
        let (input, flat) = self.source(node, 1 - at, label).map_err(|_| {
            refuse("two constants: this reads an operator of a computed tensor".into())
        })?;
        let Value::Tensor(t) = self.input(node, at, label)? else {
            unreachable!("input {at} is the constant")
        };
        // A matrix's features are its image's C·H·W: one value per channel
        // is one per feature where the planes are one pixel (after a global
        // pool), and the only per-feature constant read.
        let [_, c, h, w] = self.shapes.get(&input).copied().unwrap_or_default();
        let c = if flat { features(c, h, w, label)? as usize } else { c };
        let one_pixel = h * w == 1;
        let (shape, _) = tensor_shape(t, label)?;
        // One value in any rank; per channel [C, 1, 1] or [1, C, 1, 1] of
        // an image, per feature [F] or [1, F] of a matrix (numpy's
        // broadcast aligns the last axes).
        let per_channel = match (flat, shape.as_slice()) {
            (_, s) if s.iter().product::<usize>() == 1 => false,
            (false, [k, 1, 1] | [1, k, 1, 1]) if *k == c => true,
            (true, [k] | [1, k]) if *k == c && one_pixel => true,
            (_, s) => {
                let want = match (flat, one_pixel) {
                    (false, _) => "[C, 1, 1] or [1, C, 1, 1]",
                    (true, true) => "[F] or [1, F]",
                    (true, false) => {
                        "none per feature of a matrix flattened from planes of \
                                      more than one pixel"
                    }
                };
                return Err(refuse(format!(
                    "the constant {} of shape {s:?}: this reads one value, or one per channel \
                     ({want}, here {c})",
                    t.name()
                )));
            }
        };
        let (_, values) = self.decoded(t, label)?;
        let count = values.len();
        let name = self.name(node, label)?;
        let (weight, bias) = match (op, at) {
            ("Mul", _) => (Some(values), None),
            ("Add", _) => (None, Some(values)),
            ("Sub", 1) => (None, Some(values.iter().map(|v| -v).collect())),
            _ => (Some(vec![-1.0; count]), Some(values)),
        };
        let (has_weight, has_bias) = (weight.is_some(), bias.is_some());
        for (part, values) in [("weight", weight), ("bias", bias)] {
            if let Some(values) = values {
                self.store(&name, part, &[count], values)?;
            }
        }
        let num_parameters =
            Some(if per_channel { field(count, "num_parameters", label)? } else { 1 });
        let layer = AffineLayer {
            name,
            input: Some(input),
            num_parameters,
            weight: Some(has_weight),
            bias: Some(has_bias),
        };
        Ok((Layer::Affine(layer), flat))
    }

    /// A Resize (opset 13 onwards; Upsample is not in these opsets) as an
    /// `upsample` layer: whole factors ≥ 1 from `scales`, or `sizes` of
    /// whole multiples; `linear` as PyTorch's bilinear (`half_pixel`,
    /// `pytorch_half_pixel`: align_corners false; `align_corners`), and
    /// `nearest` where its coordinate mode and rounding take output pixel
    /// `o` to input pixel `o / factor`, as PyTorch's `nearest` does.
    fn resize(&mut self, node: &NodeProto, a: &Attributes<'_>, label: &str) -> Result<Layer> {
        let refuse = |reason: String| model_error(label, reason);
        let input = self.image(node, 0, label)?;
        let shape = self.shapes.get(&input).copied().unwrap_or_default();
        let mode = a.string("mode")?.unwrap_or_else(|| "nearest".into());
        let transform =
            a.string("coordinate_transformation_mode")?.unwrap_or_else(|| "half_pixel".into());
        let rounding = a.string("nearest_mode")?.unwrap_or_else(|| "round_prefer_floor".into());
        let axes = a.ints("axes")?.unwrap_or_else(|| vec![0, 1, 2, 3]);
        if axes.iter().any(|x| !(-4..4).contains(x)) {
            return Err(refuse(format!("axes {axes:?}: an [N, C, H, W] tensor has axes −4 to 3")));
        }
        let axes: Vec<usize> = axes.iter().map(|&x| x.rem_euclid(4) as usize).collect();
        if node.input.get(1).is_some_and(|n| !n.is_empty()) && transform == "tf_crop_and_resize" {
            return Err(refuse("tf_crop_and_resize: this reads whole images".into()));
        }
        // An input given: named, and not an empty tensor (which ONNX reads
        // as absent: exporters write `scales` so beside `sizes`).
        let given = |i: usize| {
            node.input.get(i).is_some_and(|n| !n.is_empty())
                && !matches!(self.input(node, i, label), Ok(Value::Tensor(t)) if t.dims.contains(&0))
        };
        let whole = |hw: [f64; 2], values: &[f64], what: &str| -> Result<[i64; 2]> {
            if hw.iter().any(|&f| f < 1.0 || f.fract() != 0.0 || f > MAX_DIM as f64) {
                return Err(refuse(format!(
                    "{what} {values:?} of a {}×{} input: this reads upsampling by whole factors",
                    shape[2], shape[3]
                )));
            }
            Ok(hw.map(|f| f as i64))
        };
        // Per axis of `axes`, the output size over the input size.
        let (mut scale_factor, mut size) = (None, None);
        let checked = |values: &[f64], what: &str| -> Result<[f64; 2]> {
            let mut hw = [1.0; 2];
            if values.len() != axes.len() {
                return Err(refuse(format!("{what} {values:?} for axes {axes:?}")));
            }
            for (&v, &axis) in values.iter().zip(&axes) {
                match axis {
                    2 | 3 => hw[axis - 2] = v,
                    _ if v == 1.0 => {}
                    _ => {
                        return Err(refuse(format!(
                            "{what} {values:?}: this reads resizing of the rows and columns \
                             alone"
                        )));
                    }
                }
            }
            Ok(hw)
        };
        let factors = match (given(2), given(3)) {
            (true, false) => {
                let Value::Tensor(t) = self.input(node, 2, label)? else {
                    return Err(refuse("its scales are computed: this reads constants".into()));
                };
                // A few values: a larger tensor is refused undecoded.
                if tensor_shape(t, label)?.1 > 4 {
                    return Err(refuse(format!("the scales {} have more than 4 values", t.name())));
                }
                let (_, values) = tensor_values(t, label)?;
                let values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
                let f = whole(checked(&values, "scales")?, &values, "scales")?;
                scale_factor = Some(Pair::Two(f));
                f
            }
            (false, true) => {
                let sizes = self.shape(node, 3, label)?;
                let input_sizes: Vec<i64> = axes.iter().map(|&x| shape[x] as i64).collect();
                let ratio: Vec<f64> =
                    sizes.iter().zip(&input_sizes).map(|(&s, &i)| s as f64 / i as f64).collect();
                if a.string("keep_aspect_ratio_policy")?.is_some_and(|p| p != "stretch") {
                    return Err(refuse("keep_aspect_ratio_policy: this reads stretch".into()));
                }
                let sizes: Vec<f64> = sizes.iter().map(|&s| s as f64).collect();
                let f = whole(checked(&ratio, "sizes")?, &sizes, "sizes")?;
                size = Some(Pair::Two([shape[2] as i64 * f[0], shape[3] as i64 * f[1]]));
                f
            }
            _ => {
                return Err(refuse(
                    "this reads a Resize by scales or by sizes, one of them".into(),
                ));
            }
        };
        let (mode, align_corners) = match (mode.as_str(), transform.as_str()) {
            ("linear", "half_pixel" | "pytorch_half_pixel") => {
                (UpsampleMode::Bilinear, Some(false))
            }
            ("linear", "align_corners") => (UpsampleMode::Bilinear, Some(true)),
            ("nearest", _)
                if factors.iter().all(|&f| nearest_is_floor(&transform, &rounding, f)) =>
            {
                (UpsampleMode::Nearest, None)
            }
            _ => {
                return Err(refuse(format!(
                    "mode {mode}, coordinate_transformation_mode {transform}, nearest_mode \
                     {rounding}: this reads linear with half_pixel, pytorch_half_pixel or \
                     align_corners, and nearest that takes output pixel o to input pixel o / \
                     factor (asymmetric with floor, as PyTorch exports it; half_pixel with \
                     round_prefer_floor or round_prefer_ceil)"
                )));
            }
        };
        let name = self.name(node, label)?;
        Ok(Layer::Upsample(UpsampleLayer {
            name,
            input: Some(input),
            scale_factor,
            size,
            mode: Some(mode),
            align_corners,
        }))
    }

    /// The layer `node` is, and whether its output is a matrix.
    fn layer(
        &mut self,
        node: &NodeProto,
        a: &Attributes<'_>,
        label: &str,
    ) -> Result<(Layer, bool)> {
        let refuse = |reason: String| model_error(label, reason);
        let op = node.op_type();
        Ok(match op {
            "Conv" | "ConvTranspose" => {
                let input = self.image(node, 0, label)?;
                let (shape, weight) = self
                    .weights(node, 1, label)?
                    .ok_or_else(|| refuse("the weights are missing".into()))?;
                let &[first, second, kh, kw] = shape.as_slice() else {
                    return Err(refuse(format!(
                        "weights of shape {shape:?}: this reads 2-D convs"
                    )));
                };
                if let Some(kernel) = a.ints("kernel_shape")?
                    && kernel != [kh as i64, kw as i64]
                {
                    return Err(refuse(format!(
                        "kernel_shape {kernel:?}, weights of shape {shape:?}: they disagree"
                    )));
                }
                let groups = a.int("group", 1)?;
                let g = usize::try_from(groups).ok().filter(|&g| g > 0);
                let g = g.ok_or_else(|| refuse(format!("group {groups}")))?;
                let transposed = op == "ConvTranspose";
                let grouped = second
                    .checked_mul(g)
                    .ok_or_else(|| refuse(format!("group {groups} of {second} channels")))?;
                let (in_channels, out_channels) = match transposed {
                    false => (grouped, first),
                    true => (first, grouped),
                };
                let (stride, dilation) = (a.pair("strides", 1)?, a.pair("dilations", 1)?);
                let auto_pad = a.string("auto_pad")?;
                let same = matches!(auto_pad.as_deref(), Some("SAME_UPPER" | "SAME_LOWER"));
                let output_shape = if transposed { a.ints("output_shape")? } else { None };
                let (padding, output_padding) = match (transposed, auto_pad.as_deref()) {
                    // SAME_UPPER and SAME_LOWER: padding the input's size
                    // gives, resolved by the spec's validation.
                    (false, Some(same @ ("SAME_UPPER" | "SAME_LOWER"))) => {
                        (PaddingSpec::Named(same.to_lowercase()), None)
                    }
                    (false, _) => (PaddingSpec::List(a.pads()?.to_vec()), None),
                    (true, _) if output_shape.is_none() && !same => {
                        let adjust = a.pair("output_padding", 0)?;
                        (PaddingSpec::List(a.pads()?.to_vec()), Some(Pair::Two(adjust)))
                    }
                    (true, _) => {
                        let [_, _, h, w] = self.shapes.get(&input).copied().unwrap_or_default();
                        let target = match output_shape.as_deref() {
                            None => None,
                            Some(&[oh, ow]) => Some([oh, ow]),
                            Some(other) => {
                                return Err(refuse(format!(
                                    "output_shape {other:?}: this reads [h, w]"
                                )));
                            }
                        };
                        let (pads, adjust) = transposed_pads(
                            [h, w],
                            [kh, kw],
                            (stride, dilation, a.pair("output_padding", 0)?),
                            target,
                            auto_pad.as_deref() == Some("SAME_UPPER"),
                        )
                        .map_err(refuse)?;
                        (PaddingSpec::List(pads.to_vec()), Some(Pair::Two(adjust)))
                    }
                };
                let bias = self.weights(node, 2, label)?;
                let name = self.name(node, label)?;
                self.store(&name, "weight", &shape, weight)?;
                let has_bias = bias.is_some();
                if let Some((shape, data)) = bias {
                    self.store(&name, "bias", &shape, data)?;
                }
                let layer = Layer::Conv(ConvLayer {
                    name,
                    input: Some(input),
                    op: Some(if transposed { Op::ConvTranspose2d } else { Op::Conv2d }),
                    in_channels: Some(field(in_channels, "in_channels", label)?),
                    out_channels: field(out_channels, "out_channels", label)?,
                    kernel: Pair::Two([field(kh, "kh", label)?, field(kw, "kw", label)?]),
                    stride: Some(Pair::Two(stride)),
                    padding: Some(padding),
                    dilation: Some(Pair::Two(dilation)),
                    groups: Some(groups),
                    output_padding,
                    bias: Some(has_bias),
                    activation: None,
                    negative_slope: None,
                });
                (layer, false)
            }
            "BatchNormalization" => {
                if a.int("training_mode", 0)? != 0 {
                    return Err(refuse("training_mode 1: this reads inference".into()));
                }
                let (input, flat) = self.source(node, 0, label)?;
                let eps = a.float("epsilon", 1e-5)?;
                let mut parts = Vec::new();
                for (i, part) in
                    ["weight", "bias", "running_mean", "running_var"].iter().enumerate()
                {
                    let value = self.weights(node, i + 1, label)?;
                    let value =
                        value.ok_or_else(|| refuse(format!("input {} is missing", i + 1)))?;
                    parts.push((*part, value));
                }
                let features = parts[0].1.1.len();
                let name = self.name(node, label)?;
                for (part, (shape, data)) in parts {
                    self.store(&name, part, &shape, data)?;
                }
                let layer = Layer::Batchnorm(BatchNormLayer {
                    name,
                    input: Some(input),
                    num_features: Some(field(features, "num_features", label)?),
                    eps: Some(f64::from(eps)),
                });
                (layer, flat)
            }
            "Relu" | "LeakyRelu" | "Clip" => {
                let (input, flat) = self.source(node, 0, label)?;
                let (activation, negative_slope) = match op {
                    "Relu" => (ActivationKind::Relu, None),
                    "LeakyRelu" => (ActivationKind::LeakyRelu, Some(a.float("alpha", 0.01)?)),
                    _ => match (self.scalar(node, 1, label)?, self.scalar(node, 2, label)?) {
                        (Some(0.0), Some(6.0)) => (ActivationKind::Relu6, None),
                        (Some(0.0), None) => (ActivationKind::Relu, None),
                        (low, high) => {
                            return Err(refuse(format!(
                                "Clip to [{low:?}, {high:?}]: this reads [0, 6] (ReLU6) and \
                                 [0, ∞) (ReLU)"
                            )));
                        }
                    },
                };
                let name = self.name(node, label)?;
                let layer = Layer::Activation(ActivationLayer {
                    name,
                    input: Some(input),
                    activation: activation.into(),
                    negative_slope,
                    ..ActivationLayer::default()
                });
                (layer, flat)
            }
            "Sigmoid" | "Tanh" | "HardSigmoid" | "HardSwish" => {
                let (input, flat) = self.source(node, 0, label)?;
                let (activation, alpha, beta) = match op {
                    "Sigmoid" => (Function::Sigmoid, None, None),
                    "Tanh" => (Function::Tanh, None, None),
                    // ONNX's defaults, not PyTorch's 1/6.
                    "HardSigmoid" => {
                        let (alpha, beta) = (a.float("alpha", 0.2)?, a.float("beta", 0.5)?);
                        (Function::Hardsigmoid, Some(alpha), Some(beta))
                    }
                    _ => (Function::Hardswish, None, None),
                };
                let name = self.name(node, label)?;
                let layer = ActivationLayer {
                    name,
                    input: Some(input),
                    activation,
                    negative_slope: None,
                    alpha,
                    beta,
                };
                (Layer::Activation(layer), flat)
            }
            "Add" | "Mul" | "Sub" => {
                let constant =
                    |i: usize| matches!(self.input(node, i, label), Ok(Value::Tensor(_)));
                if constant(0) || constant(1) {
                    return self.affine(node, label);
                }
                let (mut input, flat) = self.source(node, 0, label)?;
                let (mut with, with_flat) = self.source(node, 1, label)?;
                // A gate `[N, C, 1, 1]` times an image: the image is the
                // layer's input, the gate broadcast over its planes.
                let shape = |l: &str| self.shapes.get(l).copied().unwrap_or_default();
                if op == "Mul" && shape(&input)[2..] == [1, 1] && shape(&with)[2..] != [1, 1] {
                    std::mem::swap(&mut input, &mut with);
                }
                if flat != with_flat {
                    return Err(refuse(
                        "a matrix [N, F] and an image [N, C, H, W]: this reads two tensors of \
                         one shape"
                            .into(),
                    ));
                }
                let name = self.name(node, label)?;
                let layer = match op {
                    "Add" => Layer::Add(AddLayer {
                        name,
                        input: Some(input),
                        with,
                        ..AddLayer::default()
                    }),
                    "Mul" => Layer::Mul(BinaryLayer { name, input: Some(input), with }),
                    _ => Layer::Sub(BinaryLayer { name, input: Some(input), with }),
                };
                (layer, flat)
            }
            "PRelu" => {
                let (input, flat) = self.source(node, 0, label)?;
                let (shape, slopes) = self
                    .weights(node, 1, label)?
                    .ok_or_else(|| refuse("the slopes are missing".into()))?;
                // One slope, or one per channel: [C, 1, 1] or [1, C, 1, 1]
                // as exports write them (broadcast against N, C, H, W).
                let per_channel = matches!(shape.as_slice(), [_, 1, 1] | [1, _, 1, 1]);
                if slopes.len() != 1 && (!per_channel || flat) {
                    return Err(refuse(format!(
                        "slopes of shape {shape:?}: this reads one slope, or one per channel of \
                         an image ([C, 1, 1] or [1, C, 1, 1])"
                    )));
                }
                let count = slopes.len();
                let name = self.name(node, label)?;
                self.store(&name, "weight", &[count], slopes)?;
                let num_parameters = Some(field(count, "num_parameters", label)?);
                (Layer::Prelu(PreluLayer { name, input: Some(input), num_parameters }), flat)
            }
            "DepthToSpace" | "SpaceToDepth" => {
                let input = self.image(node, 0, label)?;
                let factor = a
                    .get("blocksize", AttributeType::INT)?
                    .map(|b| b.i())
                    .ok_or_else(|| refuse("no blocksize".into()))?;
                // SpaceToDepth has no mode: its order is DepthToSpace's DCR.
                let order = match (op, a.string("mode")?.as_deref()) {
                    (_, None) | ("DepthToSpace", Some("DCR")) => ShuffleOrder::Dcr,
                    ("DepthToSpace", Some("CRD")) => ShuffleOrder::Crd,
                    ("DepthToSpace", Some(other)) => {
                        return Err(refuse(format!("mode {other}: this reads DCR and CRD")));
                    }
                    (_, Some(_)) => return Err(refuse("SpaceToDepth has no mode".into())),
                };
                let name = self.name(node, label)?;
                let shuffle = ShuffleLayer { name, input: Some(input), factor, order: Some(order) };
                match op {
                    "DepthToSpace" => (Layer::PixelShuffle(shuffle), false),
                    _ => (Layer::PixelUnshuffle(shuffle), false),
                }
            }
            "Concat" => {
                let axis = a.get("axis", AttributeType::INT)?.map(|x| x.i());
                if !matches!(axis, Some(1 | -3)) {
                    return Err(refuse(
                        "this reads Concat of images along the channels (axis 1)".into(),
                    ));
                }
                let mut inputs = Vec::with_capacity(node.input.len());
                for i in 0..node.input.len() {
                    let (input, flat) = self.source(node, i, label)?;
                    if flat {
                        return Err(refuse(format!(
                            "input {i} is a matrix [N, F]: this reads Concat of images"
                        )));
                    }
                    inputs.push(input);
                }
                if inputs.is_empty() {
                    return Err(refuse("a Concat of no input".into()));
                }
                let name = self.name(node, label)?;
                (Layer::Concat(ConcatLayer { name, inputs }), false)
            }
            "MaxPool" | "AveragePool" => {
                if a.int("ceil_mode", 0)? != 0 || a.pair("dilations", 1)? != [1, 1] {
                    return Err(refuse(
                        "ceil_mode or dilations: this reads floor, dilation 1".into(),
                    ));
                }
                if node.output.get(1).is_some_and(|o| !o.is_empty()) {
                    return Err(refuse("its indices output: this reads the values alone".into()));
                }
                let [t, l, b, r] = a.pads()?;
                if t != b || l != r {
                    return Err(refuse(format!(
                        "pads {:?}: this reads symmetric pads",
                        [t, l, b, r]
                    )));
                }
                let input = self.image(node, 0, label)?;
                let kernel =
                    a.ints("kernel_shape")?.ok_or_else(|| refuse("no kernel_shape".into()))?;
                let &[kh, kw] = kernel.as_slice() else {
                    return Err(refuse(format!("kernel_shape {kernel:?}: this reads 2-D pools")));
                };
                let (kernel, stride) =
                    (Pair::Two([kh, kw]), Some(Pair::Two(a.pair("strides", 1)?)));
                let padding = Some(Pair::Two([t, l]));
                let name = self.name(node, label)?;
                let layer = match op {
                    "MaxPool" => Layer::MaxPool(MaxPoolLayer {
                        name,
                        input: Some(input),
                        kernel,
                        stride,
                        padding,
                    }),
                    _ => Layer::AvgPool(AvgPoolLayer {
                        name,
                        input: Some(input),
                        kernel,
                        stride,
                        padding,
                        count_include_pad: Some(a.int("count_include_pad", 0)? != 0),
                    }),
                };
                (layer, false)
            }
            "Resize" => (self.resize(node, a, label)?, false),
            "Pad" => {
                let input = self.image(node, 0, label)?;
                match a.string("mode")?.as_deref() {
                    None | Some("constant") => {}
                    Some(other) => {
                        return Err(refuse(format!("mode {other}: this reads constant padding")));
                    }
                }
                let pads = self.shape(node, 1, label)?;
                let axes = match node.input.get(3).filter(|n| !n.is_empty()) {
                    Some(_) => self.shape(node, 3, label)?,
                    None => vec![0, 1, 2, 3],
                };
                // [top, bottom, left, right] from ONNX's begins then ends.
                let mut sides = [0i64; 4];
                let mut other_axes = false;
                if pads.len() != 2 * axes.len() {
                    return Err(refuse(format!("pads {pads:?} for axes {axes:?}")));
                }
                for (k, &axis) in axes.iter().enumerate() {
                    let (begin, end) = (pads[k], pads[k + axes.len()]);
                    match axis.rem_euclid(4) {
                        2 => [sides[0], sides[1]] = [begin, end],
                        3 => [sides[2], sides[3]] = [begin, end],
                        _ => other_axes |= begin != 0 || end != 0,
                    }
                }
                if other_axes
                    || sides.iter().any(|&p| p < 0)
                    || axes.iter().any(|&x| !(-4..4).contains(&x))
                {
                    return Err(refuse(format!(
                        "pads {pads:?} on axes {axes:?}: this reads padding of the rows and \
                         columns alone (N and C unpadded), none negative"
                    )));
                }
                let value = self.scalar(node, 2, label)?;
                let name = self.name(node, label)?;
                let [top, bottom, left, right] = sides;
                let padding = PadSides::Four([left, right, top, bottom]);
                (Layer::Pad(PadLayer { name, input: Some(input), padding, value }), false)
            }
            "ReduceMean" => {
                let input = self.image(node, 0, label)?;
                let axes = match node.input.get(1).filter(|n| !n.is_empty()) {
                    Some(_) => Some(self.shape(node, 1, label)?),
                    None => a.ints("axes")?,
                };
                let mut axes = axes.unwrap_or_default();
                if axes.iter().any(|x| !(-4..4).contains(x)) {
                    return Err(refuse(format!("axes {axes:?}: an image has axes −4 to 3")));
                }
                axes.iter_mut().for_each(|x| *x = x.rem_euclid(4));
                axes.sort_unstable();
                if axes != [2, 3] {
                    return Err(refuse(format!(
                        "axes {axes:?}: this reads the mean over the rows and columns (a global \
                         average pool)"
                    )));
                }
                let flat = a.int("keepdims", 1)? == 0;
                let name = self.name(node, label)?;
                (Layer::GlobalAvgPool(PlainLayer { name, input: Some(input) }), flat)
            }
            "GlobalAveragePool" => {
                let input = self.image(node, 0, label)?;
                let name = self.name(node, label)?;
                (Layer::GlobalAvgPool(PlainLayer { name, input: Some(input) }), false)
            }
            // MatMul of a matrix by a constant one is a Gemm of transB 0
            // without a bias (its attributes, which MatMul has none of,
            // take their defaults).
            "Gemm" | "MatMul" => {
                let (input, flat) = self.source(node, 0, label)?;
                if !flat {
                    return Err(refuse(format!(
                        "this reads {op} of a matrix [N, F] (after a Flatten of axis 1, a Gemm \
                         or a MatMul)"
                    )));
                }
                let (alpha, beta) = (a.float("alpha", 1.0)?, a.float("beta", 1.0)?);
                if alpha != 1.0 || beta != 1.0 || a.int("transA", 0)? != 0 {
                    return Err(refuse(
                        "alpha, beta or transA: this reads x·Wᵀ + b (PyTorch's Linear)".into(),
                    ));
                }
                let trans_b = a.int("transB", 0)?;
                let (shape, weight) = self
                    .weights(node, 1, label)?
                    .ok_or_else(|| refuse("the weights are missing".into()))?;
                let &[rows, cols] = shape.as_slice() else {
                    return Err(refuse(format!("weights of shape {shape:?}: this reads a matrix")));
                };
                // PyTorch's [out, in]; transB = 0 stores [in, out].
                let (out_features, in_features, weight) = match trans_b {
                    0 => {
                        let mut t = vec![0.0; weight.len()];
                        for (k, &v) in weight.iter().enumerate() {
                            t[(k % cols) * rows + k / cols] = v;
                        }
                        (cols, rows, t)
                    }
                    _ => (rows, cols, weight),
                };
                let bias = if op == "Gemm" { self.weights(node, 2, label)? } else { None };
                if let Some((shape, _)) = &bias
                    && shape.as_slice() != [out_features]
                    && shape.as_slice() != [1, out_features]
                {
                    return Err(refuse(format!(
                        "a bias of shape {shape:?}: this reads [{out_features}] or [1, \
                         {out_features}], one value per output"
                    )));
                }
                let name = self.name(node, label)?;
                self.store(&name, "weight", &[out_features, in_features], weight)?;
                let has_bias = bias.is_some();
                if let Some((_, data)) = bias {
                    self.store(&name, "bias", &[out_features], data)?;
                }
                let layer = Layer::Linear(LinearLayer {
                    name,
                    input: Some(input),
                    in_features: Some(field(in_features, "in_features", label)?),
                    out_features: field(out_features, "out_features", label)?,
                    bias: Some(has_bias),
                });
                (layer, true)
            }
            "Gather" | "Cast" | "Squeeze" | "Unsqueeze" | "Div" | "Shape" => {
                return Err(refuse(format!(
                    "operator {op} of a tensor: this reads {op} of integers (int64 constants of \
                     at most 64 values, or computed from shapes), folded at import"
                )));
            }
            other => {
                return Err(refuse(format!(
                    "operator {other}: this reads {}",
                    OPERATORS.join(", ")
                )));
            }
        })
    }
}
