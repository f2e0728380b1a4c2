//! Code generation: from a planned layer to Cranelift IR.
//!
//! - `tile`: the register-tile microkernel every lowering is made of, and
//!   the rules it follows;
//! - `lower`: the emitting helpers they share (addresses, checked loads
//!   and stores, loops, the activations);
//! - [`conv`]: a conv layer (every kind and strategy) over its [`Plan`];
//! - [`dsc`]: the fused depthwise-separable block's two functions;
//! - [`ceiling`]: the tile alone, for the measured ceiling;
//! - [`wide`]: the register tiles of the ISAs wider than Cranelift's
//!   vectors, assembled, and their audit.
//!
//! [`Target`] is what every emitter is told of the machine: the vector ISA
//! of [`crate::target`], FMA, and whether to emit the checked lowering.

pub mod ceiling;
pub mod conv;
pub mod dsc;
mod lower;
pub mod plan;
mod tile;
pub mod wide;

pub use conv::{MAX_UNROLLED_TAPS, lower};
pub use plan::Plan;

use crate::target::VectorIsa;

/// What the target offers the emitter.
#[derive(Clone, Copy)]
pub struct Target {
    /// The pointer type and calling convention, as the frontend needs them.
    pub frontend: cranelift_codegen::isa::TargetFrontendConfig,
    /// The vector ISA to write (see [`crate::target`]).
    pub vector: VectorIsa,
    /// Whether fused multiply-add is available; without it each FMA is a
    /// multiply and an add (one more rounding).
    pub has_fma: bool,
    /// Whether to emit the checked lowering: every load and store tested
    /// against the bounds of its buffer (see [`conv`](mod@conv)).
    pub checked: bool,
}
