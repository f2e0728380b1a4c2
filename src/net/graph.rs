//! The model as a whole: a [`Model`] checked before anything is compiled
//! or any tensor read, into a [`Graph`] of nodes that know what they read,
//! the shape they give and what they cost.
//!
//! Here: the layers' names, what each reads (its `input`, an add's
//! `with`), and the size of every tensor. Each layer's own shapes and
//! counts are [`super::infer`]'s and [`super::cost`]'s.

use std::collections::HashMap;

use super::cost::Cost;
use super::infer::{Operation, Source, infer};
use super::model::{INPUT, Layer, LayerKind, MODEL, Model};
use super::{in_layer, model_error};
use crate::error::Result;
use crate::spec::{MAX_DIM, MAX_TENSOR_ELEMENTS};

/// One layer of a [`Graph`].
#[derive(Clone, Debug)]
pub struct Node {
    pub(crate) name: String,
    pub(crate) kind: LayerKind,
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
    /// The layer's kind.
    pub fn kind(&self) -> LayerKind {
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
    /// The other operand of an `add`, a `mul` or a `sub`.
    pub fn with(&self) -> Option<Source> {
        match self.op {
            Operation::Add { with, .. } | Operation::Binary { with, .. } => Some(with),
            _ => None,
        }
    }
    /// Everything it reads, its input first (an add's `with`, a concat's
    /// other operands after it).
    pub fn operands(&self) -> Vec<Source> {
        let mut operands = vec![self.input];
        match &self.op {
            Operation::Add { with, .. } | Operation::Binary { with, .. } => operands.push(*with),
            Operation::Concat { others, .. } => operands.extend(others),
            _ => {}
        }
        operands
    }
}

/// A model whose shapes chain: every node's input exists, comes earlier
/// and fits it.
#[derive(Clone, Debug)]
pub struct Graph {
    name: String,
    /// Each input's name and shape.
    inputs: Vec<(String, [usize; 4])>,
    nodes: Vec<Node>,
    /// Each output's name and the node that gives it, in order (at least
    /// one).
    outputs: Vec<(String, usize)>,
}

impl Graph {
    /// Infers every layer's shapes and costs, in order; refuses what does
    /// not chain, naming the layer.
    pub fn new(model: &Model) -> Result<Graph> {
        let listed = model.input.list();
        if listed.is_empty() {
            return Err(model_error(MODEL, "the model has no input"));
        }
        let mut inputs: Vec<(String, [usize; 4])> = Vec::new();
        for (name, shape) in listed {
            if shape.iter().any(|&d| !(1..=MAX_DIM).contains(&d)) {
                return Err(model_error(
                    MODEL,
                    format!(
                        "input {name:?} {shape:?}: every size must be at least 1 and at most \
                         {MAX_DIM}"
                    ),
                ));
            }
            if name.is_empty() || inputs.iter().any(|(n, _)| n == name) {
                return Err(model_error(
                    MODEL,
                    format!("input {name:?}: inputs need names, each its own"),
                ));
            }
            let shape = shape.map(|d| d as usize);
            check_size(MODEL, &format!("input {name:?}"), shape)?;
            inputs.push((name.to_string(), shape));
        }
        if model.layers.is_empty() {
            return Err(model_error(MODEL, "the model has no layers"));
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, layer) in model.layers.iter().enumerate() {
            let name = layer.name();
            if name.is_empty() || name == INPUT || inputs.iter().any(|(n, _)| n == name) {
                return Err(model_error(
                    if name.is_empty() { "" } else { name },
                    format!("a layer's name must not be empty, {INPUT:?} nor an input's"),
                ));
            }
            if index.insert(name, i).is_some() {
                return Err(model_error(name, "two layers have this name"));
            }
        }
        let mut graph =
            Graph { name: model.name.clone(), inputs, nodes: Vec::new(), outputs: Vec::new() };
        for (i, layer) in model.layers.iter().enumerate() {
            let name = layer.name();
            let resolve = |what: &str, target: Option<&str>| -> Result<Source> {
                let input = |t: &str| graph.inputs.iter().position(|(n, _)| n == t);
                match target {
                    None if i == 0 => Ok(Source::Input(0)),
                    None => Ok(Source::Node(i - 1)),
                    Some(t) if input(t).is_some() => Ok(Source::Input(input(t).unwrap_or(0))),
                    // The model's input by its default name, when it has one.
                    Some(INPUT) if graph.inputs.len() == 1 => Ok(Source::Input(0)),
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
            if let Layer::Concat(concat) = layer
                && concat.inputs.is_empty()
            {
                return Err(model_error(name, "a concat reads at least one tensor (inputs)"));
            }
            let source = resolve("input", layer.input())?;
            let what = if layer.kind() == LayerKind::Concat { "input" } else { "with" };
            let others = (layer.others().into_iter())
                .map(|other| {
                    let source = resolve(what, Some(other))?;
                    Ok((source, graph.shape_of(source)))
                })
                .collect::<Result<Vec<_>>>()?;
            let shape = graph.shape_of(source);
            let (op, output_shape, cost) = infer(layer, shape, &others).map_err(in_layer(name))?;
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
        for output in &model.outputs {
            let (name, layer) = (output.name(), output.layer());
            let Some(&node) = index.get(layer) else {
                return Err(model_error(
                    MODEL,
                    format!("output {name:?}: no layer is named {layer:?}"),
                ));
            };
            if name.is_empty() || graph.outputs.iter().any(|(n, _)| n == name) {
                return Err(model_error(
                    MODEL,
                    format!("output {name:?}: outputs need names, each its own"),
                ));
            }
            graph.outputs.push((name.to_string(), node));
        }
        if graph.outputs.is_empty() {
            let last = graph.nodes.len() - 1;
            graph.outputs.push((graph.nodes[last].name.clone(), last));
        }
        Ok(graph)
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The shape of the model's first input (its only one, mostly).
    pub fn input_shape(&self) -> [usize; 4] {
        self.inputs[0].1
    }
    /// Each input's name and shape, in order.
    pub fn inputs(&self) -> &[(String, [usize; 4])] {
        &self.inputs
    }
    /// The shape of the model's first output (its only one, mostly: the
    /// last layer's unless the model lists its outputs).
    pub fn output_shape(&self) -> [usize; 4] {
        self.nodes[self.outputs[0].1].output_shape
    }
    /// Each output's name and shape, in order.
    pub fn outputs(&self) -> Vec<(&str, [usize; 4])> {
        self.outputs.iter().map(|(name, i)| (name.as_str(), self.nodes[*i].output_shape)).collect()
    }
    /// The node each output is, in order.
    pub(crate) fn output_nodes(&self) -> impl Iterator<Item = usize> + '_ {
        self.outputs.iter().map(|&(_, i)| i)
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
            Source::Input(k) => self.inputs[k].1,
            Source::Node(i) => self.nodes[i].output_shape,
        }
    }
    /// How many times each node's output is read: by nodes (as any
    /// operand), and once more where it is one of the model's outputs.
    pub(crate) fn readers(&self) -> Vec<usize> {
        let mut readers = vec![0; self.nodes.len()];
        for i in self.output_nodes() {
            readers[i] += 1;
        }
        for node in &self.nodes {
            for source in node.operands() {
                if let Source::Node(j) = source {
                    readers[j] += 1;
                }
            }
        }
        readers
    }
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
