//! Engines: the interchangeable ways convjit can execute a layer, behind one
//! interface so the CLI, the demo and the benchmarks treat them alike.
//!
//! An engine first *prepares* a layer (compiles code, packs the weights) and
//! then runs it any number of times; only [`Prepared::run`] is timed.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::baseline::{Im2col, Naive};
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::kernel::{Epilogue, Kernel, PackedWeights};
pub use crate::prepared::Prepared;
use crate::reference;
use crate::schedule;
use crate::spec::ValidSpec;

/// A way to execute a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Code compiled for the exact shape by [`crate::Compiler`].
    Jit,
    /// The textbook f32 loop nest ([`crate::baseline::Naive`]): a baseline.
    Naive,
    /// im2col + GEMM through the `gemm` crate ([`crate::baseline::Im2col`]):
    /// a baseline.
    Im2col,
    /// The interpreted f64 reference ([`crate::reference`]): the oracle.
    Reference,
}

impl Engine {
    /// Every engine, in the order reports list them.
    pub const ALL: &[Engine] = &[Engine::Jit, Engine::Naive, Engine::Im2col, Engine::Reference];

    /// The fastest engine convjit has: the default of `convjit run`.
    pub fn fastest() -> Engine {
        Engine::Jit
    }

    /// Prepares `spec` with these weights (PyTorch layout) and bias, to run
    /// on one thread.
    pub fn prepare(
        self,
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Box<dyn Prepared>> {
        self.prepare_threaded(spec, weight, bias, 1)
    }

    /// Prepares `spec` with these weights (PyTorch layout) and bias, letting
    /// the engine use up to `threads` threads (1 to
    /// [`schedule::MAX_THREADS`]): the JIT shares each image's rows, channel
    /// blocks or groups ([`schedule::choose_threaded`]), im2col hands them to its GEMM, the naive loops
    /// and the reference use one.
    /// [`Prepared::threads`] says how many a run actually uses.
    pub fn prepare_threaded(
        self,
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
        threads: usize,
    ) -> Result<Box<dyn Prepared>> {
        self.prepare_with(None, spec, weight, bias, threads)
    }

    /// [`Engine::prepare_threaded`], the JIT's code compiled by `compiler`
    /// (with its schedule, [`Compiler::schedule_for`]: its schedule
    /// source's, a tuning cache's, when it holds one) instead of the host's
    /// compiler and the heuristic.
    pub fn prepare_with(
        self,
        compiler: Option<&Compiler>,
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
        threads: usize,
    ) -> Result<Box<dyn Prepared>> {
        self.prepare_epilogue(compiler, spec, weight, bias, threads, Epilogue::Store)
    }

    /// [`Engine::prepare_with`], the layer's outputs stored as `epilogue`
    /// says. [`Epilogue::Sum`] (each run stores `act(conv + b + y)`, `y`
    /// what the output held) is the JIT's: in the kernel's epilogue where
    /// the schedule's kernel has one ([`Epilogue::check`]), else (a
    /// Winograd schedule, a transposed layer with output pixels no tap
    /// reaches) the kernel without its activation runs into a buffer of
    /// the layer's own, then the output is added and activated. The other
    /// engines refuse it.
    pub fn prepare_epilogue(
        self,
        compiler: Option<&Compiler>,
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
        threads: usize,
        epilogue: Epilogue,
    ) -> Result<Box<dyn Prepared>> {
        if epilogue == Epilogue::Sum && self != Engine::Jit {
            return Err(Error::Unsupported(format!("the sum epilogue on the {self} engine")));
        }
        if !(1..=schedule::MAX_THREADS).contains(&threads) {
            return Err(Error::InvalidThreads(threads));
        }
        spec.check_operands(spec.input_len(), weight.len(), bias.map(<[f32]>::len))?;
        match self {
            Engine::Jit => {
                let compiler = &*Compiler::given_or_host(compiler)?;
                let schedule = compiler.schedule_for(spec, threads);
                let after = match epilogue.check(spec, &schedule) {
                    Ok(()) => None,
                    Err(_) => Some(SumAfter {
                        activation: spec.activation(),
                        scratch: Mutex::new(crate::alloc::zeroed_f32(spec.output_len(), SCRATCH)?),
                    }),
                };
                let kernel = match &after {
                    // The same schedule, chosen for the layer as it is.
                    Some(_) => {
                        let plain = without_activation(spec)?;
                        compiler.compile_shared(&plain, &schedule)?
                    }
                    None => compiler.compile_shared_epilogue(spec, &schedule, epilogue)?,
                };
                let weights = kernel.pack(weight, bias)?;
                // Another layer holds it too: this one compiled nothing.
                let shared = Arc::strong_count(&kernel) > 1;
                Ok(Box::new(JitLayer { spec: spec.clone(), kernel, weights, shared, after }))
            }
            Engine::Naive => Ok(Box::new(Naive::new(spec, weight, bias)?)),
            Engine::Im2col => Ok(Box::new(Im2col::new(spec, weight, bias, threads)?)),
            Engine::Reference => Ok(Box::new(ReferenceLayer {
                spec: spec.clone(),
                weight: crate::alloc::copied(weight, "the weights")?,
                bias: bias.map(<[f32]>::to_vec),
            })),
        }
    }
}

/// Every engine's name, as `--engine` takes it: "jit, naive, im2col or
/// reference".
pub fn names() -> String {
    let names: Vec<String> = Engine::ALL.iter().map(Engine::to_string).collect();
    let (last, rest) = names.split_last().expect("engines");
    format!("{} or {last}", rest.join(", "))
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Jit => "jit",
            Engine::Naive => "naive",
            Engine::Im2col => "im2col",
            Engine::Reference => "reference",
        })
    }
}

impl FromStr for Engine {
    type Err = Error;
    fn from_str(s: &str) -> Result<Engine> {
        Engine::ALL
            .iter()
            .copied()
            .find(|e| e.to_string() == s)
            .ok_or_else(|| Error::UnknownEngine { name: s.to_string(), known: names() })
    }
}

struct ReferenceLayer {
    spec: ValidSpec,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Prepared for ReferenceLayer {
    fn spec(&self) -> &ValidSpec {
        &self.spec
    }
    fn threads(&self) -> usize {
        1
    }
    fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        self.spec.check_output(output.len())?;
        let y = reference::conv(&self.spec, input, &self.weight, self.bias.as_deref())?;
        output.copy_from_slice(&y);
        Ok(())
    }
}

struct JitLayer {
    /// The layer's own spec (the kernel's may bear another layer's name).
    spec: ValidSpec,
    /// Shared with the other layers of its spec and schedule that one
    /// compiler prepared.
    kernel: Arc<Kernel>,
    weights: PackedWeights,
    /// Whether the kernel was another layer's already.
    shared: bool,
    /// For the sum epilogue on a kernel without one: the kernel computes
    /// the layer without its activation, which is applied after the sum.
    after: Option<SumAfter>,
}

/// How a [`JitLayer`] adds what its output held when its kernel cannot:
/// the kernel runs into `scratch`, then the output is `activation(output
/// + scratch)`.
struct SumAfter {
    activation: crate::spec::Activation,
    /// The kernel's output, of the layer's output length, allocated when
    /// the layer is prepared (a concurrent run makes its own).
    scratch: Mutex<Vec<f32>>,
}

/// The buffer a [`SumAfter`] layer's kernel writes, for errors.
const SCRATCH: &str = "the conv's output before the sum";

/// `spec` without its activation.
fn without_activation(spec: &ValidSpec) -> Result<ValidSpec> {
    let mut plain = spec.to_conv_spec();
    (plain.activation, plain.negative_slope) =
        crate::spec::activation_fields(crate::spec::Activation::None);
    plain.validate()
}

impl Prepared for JitLayer {
    fn spec(&self) -> &ValidSpec {
        &self.spec
    }
    fn threads(&self) -> usize {
        self.kernel.threads()
    }
    fn compile_time(&self) -> Option<Duration> {
        Some(if self.shared { Duration::ZERO } else { self.kernel.compile_time() })
    }
    fn schedule(&self) -> Option<schedule::Schedule> {
        Some(*self.kernel.schedule())
    }
    fn epilogue(&self) -> Epilogue {
        if self.after.is_some() { Epilogue::Sum } else { self.kernel.epilogue() }
    }
    fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        let Some(after) = &self.after else {
            return self.kernel.run(input, &self.weights, output);
        };
        self.spec.check_output(output.len())?;
        let mut guard = match after.scratch.try_lock() {
            Ok(kept) => Some(kept),
            // A run that panicked left it, of the output's length still.
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let mut local;
        let scratch = match guard.as_deref_mut() {
            Some(kept) => kept,
            // A concurrent run holds it: one of this run's own.
            None => {
                local = crate::alloc::zeroed_f32(output.len(), SCRATCH)?;
                &mut local
            }
        };
        self.kernel.run(input, &self.weights, scratch)?;
        after.activation.apply_sum(output, scratch);
        Ok(())
    }
}
