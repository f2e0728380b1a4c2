//! What the tuner needs of an op: the [`Tunable`] trait.

use std::fmt;
use std::hash::Hash;

use serde::Serialize;

use super::cache::Workload;
use crate::error::Result;

/// An op the tuner can tune: a space of configs, each compiled, run on the
/// op's own test data and checked against its reference. The op owns its
/// operands, its output and its oracle, so the search, the timing and the
/// confirmation see only configs and compiled code. A convolution layer
/// implements it (`tune/conv.rs`), and so does the fused depthwise-separable
/// block, with its `DscSchedule`, its `DscSpace` and its `DscKernel`
/// (`tune/dsc.rs`).
pub trait Tunable {
    /// A point of the space: plain data, compiled as given, recorded and
    /// cached.
    type Config: Copy + Eq + Hash + fmt::Debug + Serialize;
    /// A config compiled, with the op's weights packed for it: ready to run.
    type Compiled;

    /// The op's name, when it has one.
    fn name(&self) -> Option<&str>;
    /// The op in a few words, naming it when it has no name.
    fn summary(&self) -> String;
    /// What the records and the cache key its results by.
    fn workload(&self) -> Workload;
    /// The multiply-adds of one run that MACs-per-tick figures count.
    fn counted_macs(&self) -> u64;
    /// The config it runs with untuned: evaluated first, and every
    /// candidate is timed against it.
    fn heuristic(&self) -> Self::Config;
    /// Every config the search may try, in a fixed order.
    fn members(&self) -> &[Self::Config];
    /// The members that differ from `config` in one knob.
    fn neighbours(&self, config: &Self::Config) -> Vec<Self::Config>;
    /// The knob values of `config`, in a fixed order: a neighbour differs
    /// from it at one position.
    fn knobs(&self, config: &Self::Config) -> Vec<u64>;
    /// Compiles `config` and packs the op's weights for it.
    fn compile(&self, config: &Self::Config) -> Result<Self::Compiled>;
    /// Fills the output with values no correct run leaves, so that an
    /// element the next run does not write fails [`Tunable::verify`].
    fn poison_output(&mut self);
    /// Runs `compiled` once on the op's test data, into its output.
    fn run(&mut self, compiled: &Self::Compiled) -> Result<()>;
    /// Checks the last run's output against the reference: why it is wrong
    /// (`None` when it is right), or an error when it cannot be checked.
    fn verify(&self) -> Result<Option<String>>;
    /// The output elements [`Tunable::verify`] checks.
    fn checked(&self) -> usize;
    /// The output elements of a run.
    fn output_len(&self) -> usize;
}
