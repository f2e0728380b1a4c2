//! convjit: a shape-specialising JIT compiler for convolution layers.
//!
//! A layer is described by a [`ConvSpec`] (PyTorch's names and semantics),
//! validated into a [`ValidSpec`], and executed by an [`Engine`]. The
//! [`reference`](mod@reference) interpreter is the oracle every engine is checked against;
//! [`Complexity`] counts its work under the conventions the field uses.
//! `ARCHITECTURE.md` at the repository root maps the modules.

#![deny(missing_docs)]

mod abi;
pub mod algorithm;
pub mod alloc;
pub mod atomic;
pub mod baseline;
pub mod bench;
pub mod blocks;
mod border;
pub mod ceiling;
pub mod codegen;
pub mod complexity;
pub(crate) mod copy;
mod data;
pub mod engine;
pub mod error;
pub mod files;
pub mod geometry;
pub mod jit;
pub mod kernel;
pub mod machine;
pub mod net;
pub mod npy;
mod prepared;
pub mod reference;
mod runtime;
pub mod schedule;
pub mod source;
pub mod spec;
pub mod stats;
pub mod suite;
pub mod target;
pub mod terminal;
pub mod timing;
pub mod tune;

pub use complexity::Complexity;
pub use engine::{Engine, Prepared};
pub use error::{Error, Result};
pub use jit::Compiler;
pub use kernel::{Epilogue, Kernel, PackedWeights, RunStats};
pub use schedule::Schedule;
pub use spec::{Activation, ConvSpec, Kind, Op, ValidSpec};
