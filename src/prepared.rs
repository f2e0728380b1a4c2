//! [`Prepared`], the face of a layer an engine has prepared: what the
//! engines (`engine`), the baselines and the blocks implement, apart from
//! the [`crate::Engine`] that chooses among them.

use std::time::Duration;

use crate::error::Result;
use crate::kernel::Epilogue;
use crate::schedule;
use crate::spec::ValidSpec;

/// A layer an engine has prepared: weights bound, code ready.
pub trait Prepared {
    /// The spec it computes.
    fn spec(&self) -> &ValidSpec;
    /// The number of threads a run uses (at most).
    fn threads(&self) -> usize;
    /// How long compiling code for the layer took, for engines that compile.
    fn compile_time(&self) -> Option<Duration> {
        None
    }
    /// The schedule of the compiled code, for engines that compile.
    fn schedule(&self) -> Option<schedule::Schedule> {
        None
    }
    /// What a run does with the output's previous contents: nothing
    /// ([`Epilogue::Store`]), or adds them ([`Epilogue::Sum`]).
    fn epilogue(&self) -> Epilogue {
        Epilogue::Store
    }
    /// Computes the output (NCHW) of `input` (NCHW), added to what the
    /// output held when [`Prepared::epilogue`] is [`Epilogue::Sum`]. Both
    /// lengths are checked against the spec before any work.
    fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()>;
}
