//! Weights: named tensors ([`Tensors`], read from a PyTorch `state_dict`
//! saved with `safetensors.torch.save_file`) bound to a [`Graph`]'s layers
//! ([`Network`]).
//!
//! Binding takes each tensor a layer needs under its PyTorch name
//! (`{layer}.weight`, `{bn}.running_var`, ...), checks its dtype and exact
//! shape, and builds the layer's block from it: a [`Conv`], a
//! [`BatchNorm`], a [`Dsc`](crate::blocks::Dsc) with its BatchNorms folded and activations
//! fused, an [`AcBlock`]. Without tensors every layer gets random weights,
//! seeded by its position, from the blocks' own `random` constructors.
//! Every failure names the layer and the tensor.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

use super::graph::{Graph, Node};
use super::infer::Operation;
use super::model::{LayerKind, MODEL};
use super::{in_layer, model_error};
use crate::blocks::{AcBlock, BN_EPS, BatchNorm, Branch, Conv};
use crate::error::{Error, Result, json_message};
use crate::spec::{Activation, ValidSpec};

/// One stored tensor: its dtype as safetensors names it, its shape, and
/// its values when they are f32.
#[derive(Clone, Debug)]
struct Tensor {
    dtype: String,
    shape: Vec<usize>,
    data: Option<Vec<f32>>,
}

/// Named tensors, as a PyTorch `state_dict` holds them.
#[derive(Clone, Debug, Default)]
pub struct Tensors {
    tensors: BTreeMap<String, Tensor>,
    /// The file they came from, for errors.
    origin: Option<PathBuf>,
}

impl Tensors {
    /// No tensors.
    pub fn new() -> Tensors {
        Tensors::default()
    }

    /// Reads a `.safetensors` file. A file that is not valid safetensors is
    /// refused naming the file; tensors of other dtypes than F32 are kept
    /// as such and refused only when a layer needs them.
    ///
    /// Nothing is read on trust: the file must be a regular one, its
    /// header's length at most the format's cap (100 MB) and within the
    /// file, and the data the header declares exactly what the file holds
    /// after it, all checked before the data is read; the tensors are then
    /// read one at a time.
    pub fn load(path: &Path) -> Result<Tensors> {
        let io = |source| Error::Io { path: path.to_path_buf(), source };
        let invalid = |reason: String| Error::TensorFile {
            path: path.to_path_buf(),
            reason: format!("not a valid safetensors file ({reason})"),
        };
        let (file, size) = crate::files::open(path, "safetensors weights")?;
        let mut reader = BufReader::new(file);
        if size < 8 {
            return Err(invalid(format!("{size} bytes, shorter than the header's length")));
        }
        let mut length = [0u8; 8];
        reader.read_exact(&mut length).map_err(io)?;
        let header_len = u64::from_le_bytes(length);
        if header_len > MAX_SAFETENSORS_HEADER {
            return Err(invalid(format!(
                "a header of {header_len} bytes, more than the format's {MAX_SAFETENSORS_HEADER}"
            )));
        }
        if header_len > size - 8 {
            return Err(invalid(format!(
                "truncated: the header is {header_len} bytes, the file holds {} after its length",
                size - 8
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        reader.read_exact(&mut header).map_err(io)?;
        // The format's own reader checks the header: JSON, tensors in
        // contiguous ranges, each range the size of its dtype and shape.
        let metadata: Metadata = serde_json::from_slice(&header)
            .map_err(|e| invalid(format!("its header: {}", json_message(&e))))?;
        drop(header);
        let declared = metadata.data_len() as u64;
        let held = size - 8 - header_len;
        if declared != held {
            return Err(invalid(format!(
                "its header declares {declared} bytes of tensor data, the file holds {held}"
            )));
        }
        let names = metadata.tensors();
        let mut ordered: Vec<(&String, &TensorInfo)> = names.iter().map(|(n, t)| (n, *t)).collect();
        ordered.sort_by_key(|(_, info)| info.data_offsets);
        let mut tensors = BTreeMap::new();
        for (name, info) in ordered {
            let (start, end) = info.data_offsets;
            let mut bytes = vec![0u8; end - start];
            reader.read_exact(&mut bytes).map_err(|e| {
                invalid(format!("tensor {name} could not be read (did the file change?): {e}"))
            })?;
            let data = (info.dtype == Dtype::F32).then(|| {
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            });
            let tensor = Tensor { dtype: info.dtype.to_string(), shape: info.shape.clone(), data };
            tensors.insert(name.clone(), tensor);
        }
        if reader.read(&mut [0u8]).map_err(io)? != 0 {
            return Err(invalid("the file grew while it was read".into()));
        }
        Ok(Tensors { tensors, origin: Some(path.to_path_buf()) })
    }

    /// Adds (or replaces) an f32 tensor of `shape`; the length is checked
    /// (a shape whose product of sizes overflows describes no tensor).
    pub fn insert(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Result<()> {
        let Some(expected) = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) else {
            return Err(model_error(
                MODEL,
                format!("tensor {name} has shape {shape:?}: its element count overflows"),
            ));
        };
        if data.len() != expected {
            return Err(Error::BufferLength {
                what: "tensor",
                shape: shape.to_vec(),
                expected,
                found: data.len(),
            });
        }
        let tensor = Tensor { dtype: "F32".into(), shape: shape.to_vec(), data: Some(data) };
        self.tensors.insert(name.to_string(), tensor);
        Ok(())
    }

    /// The names of the tensors, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Tensor `name`'s shape and values, when it is there and f32.
    pub fn get(&self, name: &str) -> Option<(&[usize], &[f32])> {
        let t = self.tensors.get(name)?;
        Some((&t.shape, t.data.as_deref()?))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// What one node runs with: its weights, bound.
#[derive(Clone, Debug)]
pub(crate) enum Params {
    /// A conv or a linear layer.
    Conv(Conv),
    BatchNorm(BatchNorm),
    /// Each conv with its BatchNorm and activation, as the model states
    /// them (the JIT folds them, the reference does not).
    Dsc(DscParams),
    AcBlock(AcBlock),
    /// A PReLU's slopes, one or one per channel.
    Prelu(Vec<f32>),
    /// An affine layer's weight and bias, each one value or one per
    /// channel, when it has them.
    Affine {
        weight: Option<Vec<f32>>,
        bias: Option<Vec<f32>>,
    },
    /// Nothing to bind.
    None,
}

/// A depthwise-separable layer's parameters as the model states them: for
/// the depthwise and the pointwise conv, the conv, its BatchNorm (when the
/// layer has them) and its activation. The JIT compiles them folded
/// ([`DscParams::folded`], in `folding.rs`).
#[derive(Clone, Debug)]
pub(crate) struct DscParams {
    pub(super) stages: [(Conv, Option<BatchNorm>, Activation); 2],
}

impl DscParams {
    /// A copy, its weights allocated fallibly ([`Conv::try_clone`]).
    pub(crate) fn try_clone(&self) -> Result<DscParams> {
        let [(dw, dw_bn, dw_act), (pw, pw_bn, pw_act)] = &self.stages;
        Ok(DscParams {
            stages: [
                (dw.try_clone()?, dw_bn.clone(), *dw_act),
                (pw.try_clone()?, pw_bn.clone(), *pw_act),
            ],
        })
    }
}

/// A graph with its weights bound, ready to prepare on an engine
/// ([`Network::prepare`]).
#[derive(Clone, Debug)]
pub struct Network {
    pub(crate) graph: Graph,
    pub(crate) params: Vec<Params>,
    unused: Vec<String>,
}

/// Where binding takes tensors from: the given ones, noting each name
/// taken, or random values.
struct Supply<'a> {
    tensors: Option<&'a Tensors>,
    used: BTreeSet<String>,
}

impl Supply<'_> {
    /// The tensor `name` of exactly `shape`, the layer's error otherwise.
    fn take(
        &mut self,
        tensors: &Tensors,
        layer: &str,
        name: &str,
        shape: &[usize],
    ) -> Result<Vec<f32>> {
        let err = |reason: String| model_error(layer, reason);
        let Some(t) = tensors.tensors.get(name) else {
            let from =
                tensors.origin.as_ref().map_or(String::new(), |p| format!(" in {}", p.display()));
            return Err(err(format!("tensor {name} is missing{from}")));
        };
        self.used.insert(name.to_string());
        let Some(data) = &t.data else {
            return Err(err(format!("tensor {name} is {}, expected F32", t.dtype)));
        };
        if t.shape != shape {
            return Err(err(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape)));
        }
        crate::alloc::copied(data, "a copy of the tensor").map_err(in_layer(layer))
    }

    /// The conv `spec` with weight `{prefix}.weight` (of `shape`, when
    /// given: a linear layer's `[out, in]`) and, when it has one, bias
    /// `{prefix}.bias`; random from `seed` without tensors.
    fn conv(
        &mut self,
        layer: &str,
        prefix: &str,
        spec: &ValidSpec,
        shape: Option<&[usize]>,
        seed: u64,
    ) -> Result<Conv> {
        let Some(tensors) = self.tensors else {
            return Conv::random(spec.clone(), seed).map_err(in_layer(layer));
        };
        let w_shape = shape.map_or_else(|| spec.weight_shape().to_vec(), <[usize]>::to_vec);
        let weight = self.take(tensors, layer, &format!("{prefix}.weight"), &w_shape)?;
        let bias = if spec.has_bias() {
            Some(self.take(tensors, layer, &format!("{prefix}.bias"), &[spec.out_channels()])?)
        } else {
            None
        };
        Conv::new(spec.clone(), weight, bias).map_err(in_layer(layer))
    }

    /// The BatchNorm `{prefix}.*` of `channels` and ε `eps`; random from
    /// `seed` without tensors.
    fn batchnorm(
        &mut self,
        layer: &str,
        prefix: &str,
        channels: usize,
        eps: f64,
        seed: u64,
    ) -> Result<BatchNorm> {
        let Some(tensors) = self.tensors else {
            return Ok(BatchNorm { eps, ..BatchNorm::random(channels, seed) });
        };
        let mut part =
            |what: &str| self.take(tensors, layer, &format!("{prefix}.{what}"), &[channels]);
        let (weight, bias) = (part("weight")?, part("bias")?);
        let (mean, var) = (part("running_mean")?, part("running_var")?);
        BatchNorm::new(weight, bias, mean, var, eps)
            .map_err(|e| model_error(layer, format!("{prefix}: {e}")))
    }
}

impl Network {
    /// Binds `tensors` to the graph's layers, or random weights when
    /// `None`. Tensors no layer uses are reported in one warning
    /// (`num_batches_tracked` excepted) and listed by
    /// [`Network::unused_tensors`].
    pub fn new(graph: Graph, tensors: Option<&Tensors>) -> Result<Network> {
        let mut supply = Supply { tensors, used: BTreeSet::new() };
        let params = (graph.nodes().iter().enumerate())
            .map(|(i, node)| bind(node, &mut supply, SEED + 1000 * i as u64))
            .collect::<Result<_>>()?;
        let used = supply.used;
        let unused: Vec<String> = tensors
            .map(|t| {
                t.names()
                    .filter(|n| !used.contains(*n) && !n.ends_with(".num_batches_tracked"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !unused.is_empty() {
            log::warn!(
                "{} tensor{} no layer of {} uses: {}",
                unused.len(),
                if unused.len() == 1 { "" } else { "s" },
                graph.name(),
                unused.join(", ")
            );
        }
        Ok(Network { graph, params, unused })
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The tensors no layer used (`num_batches_tracked` aside).
    pub fn unused_tensors(&self) -> &[String] {
        &self.unused
    }
}

/// The longest safetensors header read, in bytes: the format's own cap.
const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// The seed of the first layer's random weights; each layer's is apart.
const SEED: u64 = 0x5eed_0000;

/// One node's parameters from `supply`, or random from `seed`.
fn bind(node: &Node, supply: &mut Supply<'_>, seed: u64) -> Result<Params> {
    let name = node.name();
    Ok(match &node.op {
        Operation::Conv(spec) if node.kind() == LayerKind::Linear => {
            let [out, c, h, w] = spec.weight_shape();
            Params::Conv(supply.conv(name, name, spec, Some(&[out, c * h * w]), seed)?)
        }
        Operation::Conv(spec) => Params::Conv(supply.conv(name, name, spec, None, seed)?),
        Operation::BatchNorm(eps) => {
            Params::BatchNorm(supply.batchnorm(name, name, node.input_shape()[1], *eps, seed)?)
        }
        Operation::Dsc(op) => {
            let (batchnorm, activations, t) = (op.batchnorm, op.activations, &op.tensors);
            let mut stage = |spec: &ValidSpec, conv: &str, bn: &str, act, seed: u64| {
                let c = supply.conv(name, conv, spec, None, seed)?;
                let norm = match batchnorm {
                    true => {
                        Some(supply.batchnorm(name, bn, spec.out_channels(), BN_EPS, seed + 1)?)
                    }
                    false => None,
                };
                Ok::<_, Error>((c, norm, act))
            };
            let dw = stage(&op.depthwise, &t.depthwise, &t.depthwise_bn, activations[0], seed)?;
            let pw = stage(&op.pointwise, &t.pointwise, &t.pointwise_bn, activations[1], seed + 2)?;
            let params = DscParams { stages: [dw, pw] };
            // Refuses what is no depthwise-separable block before any run.
            params.folded().map_err(in_layer(name))?;
            Params::Dsc(params)
        }
        Operation::AcBlock { spec, .. } => {
            let Some(tensors) = supply.tensors else {
                return Ok(Params::AcBlock(AcBlock::random(spec, seed).map_err(in_layer(name))?));
            };
            let (cout, cig, k) = (spec.out_channels(), spec.in_per_group(), spec.kernel()[0]);
            let mut branch = |conv: &str, bn: &str, shape: [usize; 4]| -> Result<Branch> {
                let weight =
                    supply.take(tensors, name, &format!("{name}.{conv}.weight"), &shape)?;
                let bn = supply.batchnorm(name, &format!("{name}.{bn}"), cout, BN_EPS, 0)?;
                Ok(Branch { weight, bn })
            };
            let square = branch("square_conv", "square_bn", [cout, cig, k, k])?;
            let vertical = branch("ver_conv", "ver_bn", [cout, cig, k, 1])?;
            let horizontal = branch("hor_conv", "hor_bn", [cout, cig, 1, k])?;
            let block = AcBlock::new(spec, square, vertical, horizontal);
            Params::AcBlock(block.map_err(in_layer(name))?)
        }
        Operation::Activation(_)
        | Operation::Add { .. }
        | Operation::MaxPool(_)
        | Operation::AvgPool { .. }
        | Operation::Upsample(_)
        | Operation::Pad(_)
        | Operation::Slice { .. }
        | Operation::ChannelShuffle(_)
        | Operation::Reshape
        | Operation::Permute(_)
        | Operation::GlobalAvgPool
        | Operation::Shuffle(_)
        | Operation::Function(_)
        | Operation::Binary { .. }
        | Operation::Concat { .. } => Params::None,
        Operation::Prelu(count) => {
            let slopes = match supply.tensors {
                Some(tensors) => {
                    supply.take(tensors, name, &format!("{name}.weight"), &[*count])?
                }
                // PyTorch's initial 0.25, spread so that channels differ.
                None => {
                    let mut rng = StdRng::seed_from_u64(seed);
                    (0..*count).map(|_| rng.random_range(0.05f32..0.45)).collect()
                }
            };
            if let Some(bad) = slopes.iter().find(|a| !a.is_finite()) {
                return Err(model_error(name, format!("a slope of {bad}: slopes must be finite")));
            }
            Params::Prelu(slopes)
        }
        Operation::Affine { count, weight, bias } => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut part = |present: bool, field: &str, random: std::ops::Range<f32>| {
                if !present {
                    return Ok(None);
                }
                let values = match supply.tensors {
                    Some(tensors) => {
                        supply.take(tensors, name, &format!("{name}.{field}"), &[*count])?
                    }
                    None => (0..*count).map(|_| rng.random_range(random.clone())).collect(),
                };
                if let Some(bad) = values.iter().find(|a| !a.is_finite()) {
                    return Err(model_error(
                        name,
                        format!("a {field} of {bad}: it must be finite"),
                    ));
                }
                Ok(Some(values))
            };
            let weight = part(*weight, "weight", 0.5..1.5)?;
            let bias = part(*bias, "bias", -0.5..0.5)?;
            Params::Affine { weight, bias }
        }
    })
}
