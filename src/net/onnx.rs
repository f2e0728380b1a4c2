//! ONNX models in: a `.onnx` file's graph as a [`Model`] and its
//! initializers as [`Tensors`] (docs/networks.md), so that the model runs,
//! counts and checks as a model file with its safetensors weights does.
//!
//! The file is decoded by the `protobuf` crate from the ONNX project's own
//! schema (`proto/onnx.proto`, compiled to Rust by `build.rs`); a file that
//! is not a valid `ModelProto` (truncated, fuzzed, another format) is
//! refused whole. The graph's inputs (those that are no initializer) must
//! be f32 `[N, C, H, W]` of fixed sizes; they become the model's inputs
//! under their ONNX names. It must have one output, the last node's; its
//! nodes, in the file's (topological) order, become the model's layers:
//!
//! | ONNX (default domain, opset 13–21) | layer |
//! |---|---|
//! | Conv (`pads`, `auto_pad` VALID, SAME_UPPER, SAME_LOWER), ConvTranspose (`pads`, VALID; no `output_shape`) | `conv` |
//! | BatchNormalization (inference) | `batchnorm` |
//! | Relu, LeakyRelu, Clip to [0, 6] or [0, ∞) | `activation` |
//! | Add of two computed tensors | `add` |
//! | Concat of images along the channels (axis 1) | `concat` |
//! | PRelu (one slope, or one per channel) | `prelu` |
//! | Sigmoid, Tanh, HardSigmoid, HardSwish | `activation` |
//! | Mul, Sub of two computed tensors | `mul`, `sub` |
//! | DepthToSpace (DCR, CRD), SpaceToDepth | `pixel_shuffle`, `pixel_unshuffle` |
//! | MaxPool (symmetric `pads`, floor, no dilation) | `max_pool` |
//! | GlobalAveragePool | `global_avg_pool` |
//! | Gemm of a matrix (α = β = 1, weights an initializer) | `linear` |
//! | Flatten (axis 1), Reshape to `[N, F]`, Identity, Dropout, Constant | none: an alias, a value |
//!
//! A matrix `[N, F]` (a Flatten's, a Reshape's or a Gemm's output, and what elementwise
//! layers make of it) is held as `[N, F, 1, 1]`: convs and pools refuse
//! it, an Add refuses a matrix and an image, and a Gemm reads only a
//! matrix.
//!
//! A layer takes the node's name (its first output's where it has none);
//! its weights are stored under PyTorch's names for that layer
//! (`{layer}.weight`, `{layer}.running_var`, ...), each initializer taken
//! by one layer at most and decoded only then. Anything else — another
//! operator, domain or opset, a tensor of another type, a shape that is
//! not fixed — is refused in one error naming the node, its operator and
//! the opset, with the operators there are.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use protobuf::Message;

use super::model::{
    ActivationLayer, AddLayer, BatchNormLayer, BinaryLayer, ConcatLayer, ConvLayer, Function,
    INPUT, Inputs, Layer, LinearLayer, MODEL, MaxPoolLayer, Model, NamedInput, PlainLayer,
    PreluLayer, ShuffleLayer, ShuffleOrder,
};
use super::{Tensors, model_error};
use crate::error::{Error, Result};
use crate::files;
use crate::spec::{ActivationKind, Op, PaddingSpec, Pair};

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
pub const OPERATORS: [&str; 25] = [
    "Add",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "ConvTranspose",
    "DepthToSpace",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LeakyRelu",
    "MaxPool",
    "Mul",
    "PRelu",
    "Relu",
    "Reshape",
    "Sigmoid",
    "SpaceToDepth",
    "Sub",
    "Tanh",
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
}

/// What the import has seen so far.
struct Import<'a> {
    opset: i64,
    /// The model's batch, N of its input.
    batch: i64,
    values: BTreeMap<String, Value<'a>>,
    /// The tensors taken as a layer's weights: each is taken once, so the
    /// weights hold no more than the file does.
    taken: BTreeSet<String>,
    layers: Vec<Layer>,
    names: BTreeSet<String>,
    tensors: Tensors,
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
        taken: BTreeSet::new(),
        layers: Vec::new(),
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
        import.values.insert(name.clone(), Value::Computed { layer: name.clone(), flat: false });
        named.push(NamedInput { name, shape });
    }
    import.batch = named[0].shape[0];
    for (i, node) in graph.node.iter().enumerate() {
        import.node(node, i)?;
    }
    let [output] = graph.output.as_slice() else {
        return Err(refuse(format!(
            "the graph has {} outputs; this reads one",
            graph.output.len()
        )));
    };
    let last = import.layers.last().map(Layer::name);
    match import.values.get(output.name()) {
        Some(Value::Computed { layer, .. }) if Some(layer.as_str()) == last => {}
        _ => {
            return Err(refuse(format!(
                "the graph's output {} is not its last layer's: this reads models whose last \
                 layer (Identity, Dropout and Flatten aside) computes the output",
                output.name()
            )));
        }
    }
    let model = Model { name, input: Inputs::Named(named), layers: import.layers };
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
        [Some(n), Some(c), Some(h), Some(w)] => Ok([*n, *c, *h, *w]),
        _ => Err(refuse(format!(
            "shape {dims:?}: this reads an [N, C, H, W] input of fixed sizes (a dynamic size \
             such as a batch named by a parameter is refused)"
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
        match op {
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
            "Reshape" => {
                // A flatten written as a reshape to [N, F]: [0, -1] or
                // [N, -1] (PyTorch's `x.view(x.size(0), -1)`), or F given
                // (the Gemm after it checks it against C·H·W).
                let (layer, _) = self.source(node, 0, &label)?;
                let shape = self.shape(node, 1, &label)?;
                let zero =
                    if attributes.int("allowzero", 0)? == 0 { Some(self.batch) } else { None };
                let batch = |n: i64| n == self.batch || (n == 0 && zero.is_some()) || n == -1;
                match shape.as_slice() {
                    &[n, f] if batch(n) && (f == -1 || f > 0) && !(n == -1 && f == -1) => {}
                    other => {
                        return Err(refuse(format!(
                            "shape {other:?}: this reads Reshape to a matrix [N, F] ([0, -1], \
                             [N, -1] or [N, F], N = {})",
                            self.batch
                        )));
                    }
                }
                self.values.insert(output, Value::Computed { layer, flat: true });
            }
            _ => {
                let (layer, flat) = self.layer(node, &attributes, &label)?;
                let name = layer.name().to_string();
                self.values.insert(output, Value::Computed { layer: name, flat });
                self.layers.push(layer);
            }
        }
        Ok(())
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

    /// Input `i` of `node`, a tensor of the file, taken as a layer's
    /// weights (absent: `None`): each tensor is taken once.
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
            Value::Tensor(t) => {
                if !self.taken.insert(t.name().to_string()) {
                    return Err(model_error(
                        label,
                        format!(
                            "input {i} is the tensor {}, another layer's weights too: this \
                             reads each tensor as one layer's",
                            t.name()
                        ),
                    ));
                }
                tensor_values(t, label).map(Some)
            }
            Value::Computed { .. } => Err(model_error(
                label,
                format!("input {i} is computed; this reads it as an initializer or a Constant"),
            )),
        }
    }

    /// Input `i` of `node`, a shape of the file (int64 values).
    fn shape(&self, node: &NodeProto, i: usize, label: &str) -> Result<Vec<i64>> {
        let refuse = |reason: String| model_error(label, reason);
        let Value::Tensor(t) = self.input(node, i, label)? else {
            return Err(refuse(format!("input {i} is computed; this reads a constant shape")));
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
                if transposed && a.get("output_shape", AttributeType::INTS)?.is_some() {
                    return Err(refuse(
                        "output_shape: this reads ConvTranspose by its pads".into(),
                    ));
                }
                let output_padding =
                    if transposed { Some(Pair::Two(a.pair("output_padding", 0)?)) } else { None };
                let (stride, dilation) = (a.pair("strides", 1)?, a.pair("dilations", 1)?);
                // SAME_UPPER and SAME_LOWER: padding the input's size gives,
                // resolved by the shape inference.
                let padding = match a.string("auto_pad")?.as_deref() {
                    Some(same @ ("SAME_UPPER" | "SAME_LOWER")) if !transposed => {
                        PaddingSpec::Named(same.to_lowercase())
                    }
                    _ => PaddingSpec::List(a.pads()?.to_vec()),
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
                let (input, flat) = self.source(node, 0, label)?;
                let (with, with_flat) = self.source(node, 1, label)?;
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
            "MaxPool" => {
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
                let stride = a.pair("strides", 1)?;
                let name = self.name(node, label)?;
                let layer = Layer::MaxPool(MaxPoolLayer {
                    name,
                    input: Some(input),
                    kernel: Pair::Two([kh, kw]),
                    stride: Some(Pair::Two(stride)),
                    padding: Some(Pair::Two([t, l])),
                });
                (layer, false)
            }
            "GlobalAveragePool" => {
                let input = self.image(node, 0, label)?;
                let name = self.name(node, label)?;
                (Layer::GlobalAvgPool(PlainLayer { name, input: Some(input) }), false)
            }
            "Gemm" => {
                let (input, flat) = self.source(node, 0, label)?;
                if !flat {
                    return Err(refuse(
                        "this reads Gemm of a matrix [N, F] (after a Flatten of axis 1 or a \
                         Gemm)"
                            .into(),
                    ));
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
                let bias = self.weights(node, 2, label)?;
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
            other => {
                return Err(refuse(format!(
                    "operator {other}: this reads {}",
                    OPERATORS.join(", ")
                )));
            }
        })
    }
}
