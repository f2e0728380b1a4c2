//! What a layer costs: parameters and multiply-adds under the three
//! conventions of docs/networks.md ("What is counted"). The convs' counts
//! are their [`Complexity`]; the rest is ptflops' module hooks, one
//! function per kind of module, which shape inference
//! ([`super::infer`]) adds up per layer.

use serde::Serialize;

use crate::complexity::Complexity;
use crate::spec::{Activation, ValidSpec};

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

impl Cost {
    /// A conv (or a linear layer): its [`Complexity`], ptflops' conv and
    /// linear hooks included.
    pub(crate) fn conv(spec: &ValidSpec) -> Cost {
        Complexity::of(spec).into()
    }

    /// An affine BatchNorm giving `shape`: γ and β, and 2·numel for
    /// ptflops.
    pub(crate) fn batchnorm(shape: [usize; 4]) -> Cost {
        Cost { params: 2 * shape[1] as u64, macs_ptflops: 2 * numel(shape), ..Cost::default() }
    }

    /// An activation module giving `shape`: numel for ptflops, nothing for
    /// the identity, which is no module.
    pub(crate) fn activation(shape: [usize; 4], activation: Activation) -> Cost {
        let ptflops = if activation == Activation::None { 0 } else { numel(shape) };
        Cost { macs_ptflops: ptflops, ..Cost::default() }
    }

    /// A pool reading `input`: numel of its input for ptflops.
    pub(crate) fn pool(input: [usize; 4]) -> Cost {
        Cost { macs_ptflops: numel(input), ..Cost::default() }
    }
}

fn numel(shape: [usize; 4]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}
