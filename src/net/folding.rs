//! Folding: on the JIT, the layers a conv's kernel (or an add's loop)
//! computes besides its own work, so that they cost no step
//! (docs/networks.md, "How a model runs").
//!
//! A BatchNorm folds into the conv (or linear layer) right before it when
//! nothing else reads that conv's output and the conv has no activation;
//! an activation that alone reads a conv's (or its folded BatchNorm's)
//! output is fused into the conv's kernel (a PReLU of one slope too, as
//! the leaky ReLU it is), and one that alone reads an
//! add's (a residual's `relu(x + f(x))`) into the add's loop. A
//! depthwise-separable block folds its own BatchNorms and activations
//! ([`DscParams::folded`]). A residual add folds into the conv (or the
//! depthwise-separable block) that computes one of its operands, when
//! nothing else reads that operand, the conv has no activation of its own
//! and the other operand is computed before it: the conv's kernel adds the
//! other operand in its epilogue ([`crate::Epilogue::Sum`]), and the add's
//! activation, or one that alone reads the add, is the conv's (a block
//! takes the add only without one). The folded layers keep their report
//! rows, with no time of their own. The reference engine folds nothing: it
//! runs the model as written.

use super::in_layer;
use super::infer::{Operation, Source};
use super::weights::{DscParams, Network, Params};
use crate::blocks::{Conv, Dsc};
use crate::error::Result;
use crate::spec::Activation;

/// Which nodes fold into which: per node, the node (a conv, an add) whose
/// step computes it, when it is not computed on its own.
pub(crate) fn plan(network: &Network) -> Vec<Option<usize>> {
    let graph = &network.graph;
    let readers = graph.readers();
    let nodes = graph.nodes();
    let mut folded: Vec<Option<usize>> = vec![None; nodes.len()];
    // Per conv node: whether its kernel has taken a BatchNorm, an activation.
    let mut has_bn = vec![false; nodes.len()];
    let mut has_act = vec![false; nodes.len()];
    // Per conv or block node: whether its kernel has taken an add.
    let mut has_sum = vec![false; nodes.len()];
    // A conv or a linear layer (the nodes bound to a `Conv`) without an
    // activation of its own.
    let is_conv = |j: usize| matches!(&network.params[j], Params::Conv(c) if c.spec().activation() == Activation::None);
    // An add without an activation of its own.
    let is_add =
        |j: usize| matches!(nodes[j].op, Operation::Add { activation: Activation::None, .. });
    // A depthwise-separable block whose pointwise conv has no activation.
    let is_block = |j: usize| matches!(&network.params[j], Params::Dsc(d) if d.stages[1].2 == Activation::None);
    // The step computing node `j`'s value, and whether it comes before `c`'s.
    let before = |folded: &[Option<usize>], s: Source, c: usize| match s {
        Source::Input(_) => true,
        Source::Node(j) => folded[j].unwrap_or(j) < c,
    };
    for (i, node) in nodes.iter().enumerate() {
        if let Operation::Add { with, activation } = node.op {
            // Into the conv of either operand, the other computed first.
            for (own, other) in [(node.input(), with), (with, node.input())] {
                let Source::Node(j) = own else { continue };
                let c = folded[j].unwrap_or(j);
                let into = readers[j] == 1
                    && !has_act[c]
                    && !has_sum[c]
                    && (is_conv(c) || (is_block(c) && activation == Activation::None))
                    && before(&folded, other, c);
                if into {
                    folded[i] = Some(c);
                    // One add a kernel; a block takes no activation after it.
                    has_sum[c] = true;
                    has_act[c] = activation != Activation::None || is_block(c);
                    break;
                }
            }
            continue;
        }
        let Source::Node(j) = node.input() else { continue };
        if readers[j] != 1 {
            continue;
        }
        match node.op {
            Operation::BatchNorm(_) if is_conv(j) && folded[j].is_none() && !has_bn[j] => {
                folded[i] = Some(j);
                has_bn[j] = true;
            }
            Operation::Activation(_) | Operation::Prelu(1) => {
                let into = folded[j].or((is_conv(j) || is_add(j)).then_some(j));
                if let Some(c) = into.filter(|&c| !has_act[c]) {
                    folded[i] = Some(c);
                    has_act[c] = true;
                }
            }
            _ => {}
        }
    }
    folded
}

/// The activation of the add at node `i`: its own, or the one `plan`
/// folds into it.
pub(crate) fn add_activation(network: &Network, plan: &[Option<usize>], i: usize) -> Activation {
    let nodes = network.graph.nodes();
    let folded = (i + 1..nodes.len()).find(|&k| plan[k] == Some(i));
    match (&nodes[i].op, folded.map(|k| &nodes[k].op)) {
        (_, Some(Operation::Activation(act))) => *act,
        (_, Some(Operation::Prelu(_))) => {
            let k = folded.expect("a folded node");
            match &network.params[k] {
                Params::Prelu(slopes) => Activation::LeakyRelu { negative_slope: slopes[0] },
                _ => unreachable!("a PReLU's parameters are its slopes"),
            }
        }
        (Operation::Add { activation, .. }, _) => *activation,
        _ => unreachable!("only adds have an add's activation"),
    }
}

/// Per node: the operand the conv (or block) there adds in its epilogue —
/// the other operand of the add that `plan` folds into it (one at most) —
/// if one does.
pub(crate) fn residuals(network: &Network, plan: &[Option<usize>]) -> Vec<Option<Source>> {
    let nodes = network.graph.nodes();
    let mut residuals = vec![None; nodes.len()];
    for (k, node) in nodes.iter().enumerate() {
        let (Some(c), Operation::Add { with, .. }) = (plan[k], &node.op) else { continue };
        let chain = |s: Source| matches!(s, Source::Node(j) if j == c || plan[j] == Some(c));
        residuals[c] = Some(if chain(node.input()) { *with } else { node.input() });
    }
    residuals
}

/// `conv`, node `i`'s, with every node that `plan` folds into it applied in
/// order: a BatchNorm folded into its weights, an activation fused.
pub(crate) fn fold_into(
    network: &Network,
    plan: &[Option<usize>],
    i: usize,
    conv: &Conv,
) -> Result<Conv> {
    let nodes = network.graph.nodes();
    let mut conv = conv.try_clone().map_err(in_layer(nodes[i].name()))?;
    for (k, other) in nodes.iter().enumerate().skip(i + 1) {
        if plan[k] != Some(i) {
            continue;
        }
        conv = match (&other.op, &network.params[k]) {
            (Operation::BatchNorm(_), Params::BatchNorm(bn)) => conv.fold(bn),
            (Operation::Activation(act), _) => conv.with_activation(*act),
            // One slope: a leaky ReLU (which differs from PyTorch's PReLU
            // only in the sign of a zero).
            (Operation::Prelu(_), Params::Prelu(slopes)) => {
                conv.with_activation(Activation::LeakyRelu { negative_slope: slopes[0] })
            }
            // A residual: its activation follows the sum.
            (Operation::Add { activation, .. }, _) => conv.with_activation(*activation),
            _ => unreachable!("only BatchNorms, activations and adds fold"),
        }
        .map_err(in_layer(other.name()))?;
    }
    Ok(conv)
}

impl DscParams {
    /// The block to compile: each BatchNorm folded, each activation fused.
    pub(crate) fn folded(&self) -> Result<Dsc> {
        let [dw, pw] = self.stages.each_ref().map(|(conv, bn, act)| match bn {
            Some(bn) => conv.fold(bn)?.with_activation(*act),
            None => conv.with_activation(*act),
        });
        Dsc::new(dw?, pw?)
    }
}
