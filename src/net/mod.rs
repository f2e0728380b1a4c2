//! Whole models, run layer by layer (`convjit net`, docs/networks.md).
//!
//! A model goes through four stages, each its own type:
//!
//! 1. [`Model`] (`model.rs`): the JSON file as written — the input shape
//!    and the layers (conv, batchnorm, activation, dsc, acblock, add,
//!    max_pool, global_avg_pool, linear) with PyTorch's names and
//!    defaults; or a built-in ([`builtin`]).
//! 2. [`Graph`] (`graph.rs`): shapes inferred over the whole file before
//!    anything is compiled. Every conv a layer implies becomes a
//!    [`ValidSpec`](crate::ValidSpec), so the spec's validation judges it;
//!    whatever does not chain is refused naming the layer. Each node knows
//!    its [`Cost`] (params, MACs under the three conventions).
//! 3. [`Network`] (`weights.rs`): the graph with weights bound — from a
//!    safetensors `state_dict` ([`Tensors`]) under PyTorch's names, each
//!    tensor's dtype and shape checked, or random — as the blocks of
//!    [`crate::blocks`] (a `Conv`, a `BatchNorm`, a `Dsc`, an `AcBlock`).
//! 4. [`PreparedNet`] (`run.rs`): the network compiled for an engine, with
//!    BatchNorms and activations folded into the convs before them where
//!    nothing else reads the conv's output, and every buffer allocated;
//!    [`PreparedNet::measure`] times each step with the TSC and gives the
//!    [`Report`] (DESIGN.md contract 5).
//!
//! Nothing here computes a convolution: convs run through
//! [`Engine`](crate::Engine)s and blocks, their counts come from
//! [`Complexity`](crate::Complexity). The only loops of this module's own
//! are the cheap elementwise layers (BatchNorm, activation, add) and the
//! pools.

mod builtin;
mod graph;
mod model;
mod run;
mod weights;

pub use builtin::{BUILTINS, builtin, jvet_lf, mobilenet_v2, resnet18};
pub use graph::{Cost, Graph, Node, Source};
pub use model::{
    AcBlockLayer, ActivationLayer, AddLayer, BatchNormLayer, ConvLayer, DscLayer, INPUT, Layer,
    LinearLayer, MODEL, MaxPoolLayer, Model, PlainLayer,
};
pub use run::{CHECK_TOLERANCE, CheckReport, LayerReport, Options, PreparedNet, Report, Total};
pub use weights::{Network, Tensors};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A reproducible input for a model: `[N, C, H, W]` values uniform in
/// [−1, 1), drawn from `seed`.
pub fn random_input(shape: [usize; 4], seed: u64) -> crate::Result<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut x = crate::alloc::zeroed_f32(shape.iter().product(), "the model's random input")?;
    x.iter_mut().for_each(|v| *v = rng.random_range(-1.0f32..1.0));
    Ok(x)
}
