//! The library's one error type.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in convjit, each variant naming what was
/// wrong and the value that made it so.
#[derive(Debug, Error)]
pub enum Error {
    /// A spec field holds a value that PyTorch (or convjit's limits) refuses.
    #[error("invalid spec: {field} = {value}: {reason}")]
    InvalidSpec {
        /// The JSON field.
        field: &'static str,
        /// The value found.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The spec's JSON could not be parsed (syntax, unknown field or op, wrong type).
    #[error("invalid spec JSON: {0}")]
    SpecJson(String),
    /// A tensor file could not be used.
    #[error("{}: {reason}", path.display())]
    TensorFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A buffer handed to the library has the wrong length for the spec.
    #[error("{what}: expected {expected} elements for shape {shape:?}, found {found}")]
    BufferLength {
        /// Which tensor (input, weight, bias, output).
        what: &'static str,
        /// The shape the spec implies.
        shape: Vec<usize>,
        /// Elements expected.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// A bias was given to a spec without one, or none to a spec with one.
    #[error("bias: {0}")]
    Bias(String),
    /// A schedule that cannot compute the spec it was given with.
    #[error("invalid schedule: {field} = {value}: {reason}")]
    InvalidSchedule {
        /// The schedule field.
        field: &'static str,
        /// The value found.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// The schedule's JSON could not be parsed.
    #[error("invalid schedule JSON: {0}")]
    ScheduleJson(String),
    /// A schedule file that cannot be read: not a regular file, too large,
    /// or an I/O error (the cause names the file).
    #[error("cannot read the schedule file: {0}")]
    ScheduleFileUnreadable(#[source] Box<Error>),
    /// A schedule file whose schedule does not parse, or cannot compute the
    /// layer it was given for.
    #[error("schedule file {}: {source}", path.display())]
    ScheduleFile {
        /// The file.
        path: PathBuf,
        /// Why its schedule cannot be used.
        source: Box<Error>,
    },
    /// The host CPU or Cranelift could not compile the kernel.
    #[error("JIT compilation failed: {0}")]
    Jit(String),
    /// Packed weights used with a kernel other than the one that packed them.
    #[error("the packed weights belong to another kernel (spec or schedule differ)")]
    ForeignWeights,
    /// An engine name that convjit does not have.
    #[error("unknown engine {name:?}: give one of {known}")]
    UnknownEngine {
        /// The name given.
        name: String,
        /// The engines there are, as a phrase ("jit, naive, ... or ...").
        known: String,
    },
    /// A vector ISA this host does not have.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A thread count an engine cannot use.
    #[error("invalid thread count {0}: give 1 to 256")]
    InvalidThreads(usize),
    /// An engine's output is past its error bound against the reference: a
    /// bug in that engine.
    #[error(
        "check failed: {engine} on {layer}: output element {element} is {ratio:.2}× past its \
         error bound (docs/correctness.md)"
    )]
    CheckFailed {
        /// The layer.
        layer: String,
        /// The engine.
        engine: String,
        /// The worst element.
        element: usize,
        /// Its error over its bound.
        ratio: f64,
    },
    /// A kernel compiled in the checked lowering tried to access memory
    /// outside one of its buffers: a compiler bug, caught. The access was
    /// not made.
    #[error(
        "checked kernel: an access to the {buffer} at byte offset {offset} is outside its \
         {len} bytes (a compiler bug; the access was not made)"
    )]
    CheckedAccess {
        /// The buffer: input, weights, bias, output or row ranges.
        buffer: &'static str,
        /// The access's address less the buffer's start, in bytes.
        offset: i64,
        /// The buffer's length in bytes.
        len: u64,
    },
    /// A tuning request that cannot be carried out.
    #[error("tuning: {0}")]
    InvalidTuning(String),
    /// A block (BatchNorm, ACNet, depthwise-separable) that cannot be built
    /// from what it was given.
    #[error("{0}")]
    Block(String),
    /// A model file, or its weights, that cannot be run: the layer named.
    #[error("model: layer {layer:?}: {reason}")]
    Model {
        /// The layer's name.
        layer: String,
        /// What is wrong.
        reason: String,
    },
    /// A buffer the work needs could not be allocated (see
    /// [`crate::alloc`]): the layer or model is legal but too large for
    /// the memory the process may have.
    #[error("cannot allocate {what}: {} ({bytes} bytes)", human_bytes(*bytes))]
    Allocation {
        /// The buffer, as a phrase ("the output").
        what: &'static str,
        /// Its size in bytes.
        bytes: u128,
    },
    /// The benchmark chart could not be drawn.
    #[error("plot: {0}")]
    Plot(String),
    /// A file convjit refuses to read: not a regular file, or larger than
    /// its kind of file may be (`crate::files`).
    #[error("{}: {reason}", path.display())]
    InputFile {
        /// The file.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// An output path convjit will not write (a folder, a block device, a
    /// FIFO nobody reads, a missing folder): see [`crate::atomic`].
    #[error("{}: {reason}", path.display())]
    Output {
        /// The path given.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// An I/O error, with the file it concerns.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `Result` with convjit's [`Error`](enum@Error).
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A byte count for people: "4.3 GB", "512 kB", "12 bytes" (decimal
/// units, one decimal).
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [(&str, f64); 5] =
        [("EB", 1e18), ("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)];
    let b = bytes as f64;
    for (unit, size) in UNITS {
        if b >= size {
            return format!("{:.1} {unit}", b / size);
        }
    }
    if b >= 1e3 { format!("{:.1} kB", b / 1e3) } else { format!("{bytes} bytes") }
}

/// What `serde_json` says of a user's JSON, as one line safe to print: it
/// quotes the text it refuses (an unknown field or variant), which may hold
/// newlines or terminal control characters ([`crate::terminal::escape`]).
pub(crate) fn json_message(e: &serde_json::Error) -> String {
    crate::terminal::escape(&e.to_string()).into_owned()
}
