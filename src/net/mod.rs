//! Whole models, run layer by layer (`convjit net`, docs/networks.md).
//!
//! A model goes through four stages, each its own type:
//!
//! 1. [`Model`] (`model.rs`): the JSON file as written — the inputs'
//!    shapes and the layers (conv, batchnorm, activation, dsc, acblock,
//!    add, mul, sub, max_pool, avg_pool, global_avg_pool, linear,
//!    concat, prelu, pixel_shuffle, pixel_unshuffle, upsample, pad,
//!    affine, slice, channel_shuffle, reshape, permute) with PyTorch's names and
//!    defaults; or a built-in (`builtin`). Code that treats kinds
//!    differently matches on [`LayerKind`], never on the file's spelling.
//! 2. [`Graph`] (`graph.rs`): shapes inferred over the whole file before
//!    anything is compiled (`infer.rs`, layer by layer). Every conv a
//!    layer implies becomes a [`ValidSpec`](crate::ValidSpec), so the
//!    spec's validation judges it; whatever does not chain is refused
//!    naming the layer. Each node knows its [`Cost`] (params, MACs under
//!    the three conventions, `cost.rs`).
//! 3. [`Network`] (`weights.rs`): the graph with weights bound — from a
//!    safetensors `state_dict` ([`Tensors`]) under PyTorch's names, each
//!    tensor's dtype and shape checked, or random — as the blocks of
//!    [`crate::blocks`] (a `Conv`, a `BatchNorm`, a `Dsc`, an `AcBlock`).
//! 4. [`PreparedNet`] (`execution.rs`): the network compiled for an
//!    engine, with BatchNorms and activations folded into the convs before
//!    them where nothing else reads the conv's output (`folding.rs`), and
//!    every buffer allocated, shared by steps whose outputs are never
//!    alive at once (`memory.rs`); each step runs an op (`ops.rs`), and
//!    [`PreparedNet::measure`] times each step with the TSC and gives the
//!    [`Report`] (`report.rs`, DESIGN.md contract 5).
//!
//! Nothing here computes a convolution: convs run through
//! [`Engine`]s and blocks, their counts come from
//! [`Complexity`](crate::Complexity). The only loops of this module's own
//! are the cheap elementwise layers (BatchNorm, activation, add) and the
//! pools, in `ops.rs`.

mod builtin;
mod cost;
mod execution;
mod folding;
mod graph;
mod infer;
mod memory;
mod model;
pub mod onnx;
mod ops;
mod report;
mod weights;

pub use builtin::{BUILTINS, builtin, jvet_lf, mobilenet_v2, resnet18};
pub use cost::Cost;
pub use execution::{JitConv, PreparedNet};
pub use graph::{Graph, Node};
pub use infer::Source;
pub use model::{
    AcBlockLayer, ActivationLayer, AddLayer, AffineLayer, AvgPoolLayer, BatchNormLayer,
    BinaryLayer, ChannelShuffleLayer, ConcatLayer, ConvLayer, DscLayer, Function, INPUT, Inputs,
    Layer, LayerKind, LinearLayer, MODEL, MaxPoolLayer, Model, NamedInput, NamedOutput, Output,
    PadLayer, PadSides, PermuteLayer, PlainLayer, PreluLayer, ReshapeLayer, ShuffleLayer,
    ShuffleOrder, SliceLayer, UpsampleLayer, UpsampleMode,
};
pub use report::{CHECK_TOLERANCE, CheckReport, LayerReport, Report, Total, shape_str};
pub use weights::{Network, Tensors};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::blocks::DscMode;
use crate::engine::Engine;
use crate::error::Error;

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
        Options { engine: Engine::Jit, dsc: DscMode::Auto, threads: 1 }
    }
}

/// A reproducible input for a model: `[N, C, H, W]` values uniform in
/// [−1, 1), drawn from `seed`.
pub fn random_input(shape: [usize; 4], seed: u64) -> crate::Result<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = crate::alloc::zeroed_f32(shape.iter().product(), "the model's random input")?;
    x.iter_mut().for_each(|v| *v = rng.random_range(-1.0f32..1.0));
    Ok(x)
}

/// The error `reason` of `layer` (or of the model as a whole: [`MODEL`]).
fn model_error(layer: &str, reason: impl Into<String>) -> Error {
    Error::Model { layer: layer.to_string(), reason: reason.into() }
}

/// `e` (a spec's, a block's, an engine's error) as the layer's; an error
/// that already names a layer is kept.
fn in_layer(layer: &str) -> impl Fn(Error) -> Error + '_ {
    move |e| match e {
        Error::Model { .. } => e,
        other => model_error(layer, other.to_string()),
    }
}
