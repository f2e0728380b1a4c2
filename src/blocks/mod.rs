//! Blocks: the conv variants people use come as blocks, not single layers.
//!
//! - [`BatchNorm`] (eval mode) and [`Conv::fold`], which folds a BatchNorm
//!   into the conv before it, of any kind (conv_transpose2d too).
//! - [`AcBlock`]: ACNet's asymmetric block, trained as a k×k, a k×1 and a
//!   1×k conv each followed by BatchNorm and summed, deployed as one k×k
//!   conv with bias ([`AcBlock::deploy`]).
//! - [`Dsc`]: the depthwise-separable unit of MobileNet and Xception
//!   (depthwise k×k then pointwise 1×1), run as two kernels or as one fused
//!   kernel that never writes the depthwise output to memory.
//!
//! Every block computes on tensors in DESIGN.md's layouts (NCHW, PyTorch's
//! weight layouts), so a block and its parts can be checked against the
//! reference interpreter.

mod acnet;
pub mod dsc;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

pub use acnet::{AcBlock, Branch, Crop, Training};
pub use dsc::{Dsc, DscMode, PreparedDsc};

use crate::alloc;
use crate::engine::{Engine, Prepared};
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::kernel::Epilogue;
use crate::reference;
use crate::spec::{Activation, Op, ValidSpec};

/// BatchNorm2d in eval mode, with PyTorch's parameter names:
/// `y = (x − running_mean) / √(running_var + eps) · weight + bias`, per
/// channel.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    /// γ, the scale.
    pub weight: Vec<f32>,
    /// β, the shift.
    pub bias: Vec<f32>,
    /// μ.
    pub running_mean: Vec<f32>,
    /// σ².
    pub running_var: Vec<f32>,
    /// ε (PyTorch's default is 1e-5).
    pub eps: f64,
}

/// PyTorch's default ε of BatchNorm2d.
pub const BN_EPS: f64 = 1e-5;

impl BatchNorm {
    /// A BatchNorm from its parameters, checked: four vectors of one
    /// length, variances finite and not negative, ε positive.
    pub fn new(
        weight: Vec<f32>,
        bias: Vec<f32>,
        running_mean: Vec<f32>,
        running_var: Vec<f32>,
        eps: f64,
    ) -> Result<BatchNorm> {
        let c = weight.len();
        for (name, v) in
            [("bias", &bias), ("running_mean", &running_mean), ("running_var", &running_var)]
        {
            if v.len() != c {
                return Err(Error::Block(format!(
                    "batchnorm: {name} has {} values but weight has {c}",
                    v.len()
                )));
            }
        }
        if c == 0 {
            return Err(Error::Block("batchnorm: no channels".into()));
        }
        if let Some(v) = running_var.iter().find(|v| !v.is_finite() || **v < 0.0) {
            return Err(Error::Block(format!(
                "batchnorm: running_var {v} is not a finite value ≥ 0"
            )));
        }
        if !(eps.is_finite() && eps > 0.0) {
            return Err(Error::Block(format!("batchnorm: eps {eps} must be positive")));
        }
        Ok(BatchNorm { weight, bias, running_mean, running_var, eps })
    }

    /// Random statistics as a trained network has them: γ and β about 1 and
    /// 0, μ about 0, σ² between 0.5 and 2.
    pub fn random(channels: usize, seed: u64) -> BatchNorm {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut v = |lo: f32, hi: f32| (0..channels).map(|_| rng.random_range(lo..hi)).collect();
        BatchNorm {
            weight: v(0.5, 1.5),
            bias: v(-0.5, 0.5),
            running_mean: v(-0.5, 0.5),
            running_var: v(0.5, 2.0),
            eps: BN_EPS,
        }
    }

    /// The channels it normalises.
    pub fn channels(&self) -> usize {
        self.weight.len()
    }

    /// Channel `c`'s affine map `x ↦ x · scale + shift`, in f64.
    pub fn affine(&self, c: usize) -> (f64, f64) {
        let scale = f64::from(self.weight[c]) / (f64::from(self.running_var[c]) + self.eps).sqrt();
        (scale, f64::from(self.bias[c]) - f64::from(self.running_mean[c]) * scale)
    }

    /// Applies it in place to an NCHW tensor of `shape`.
    pub fn apply(&self, y: &mut [f32], shape: [usize; 4]) -> Result<()> {
        let [n, c, h, w] = shape;
        if c != self.channels() {
            return Err(Error::Block(format!(
                "batchnorm of {} channels after a tensor of {c}",
                self.channels()
            )));
        }
        if y.len() != n * c * h * w {
            return Err(Error::BufferLength {
                what: "batchnorm input",
                shape: shape.to_vec(),
                expected: n * c * h * w,
                found: y.len(),
            });
        }
        for (i, plane) in y.chunks_mut((h * w).max(1)).enumerate() {
            let (scale, shift) = self.affine(i % c);
            for v in plane {
                *v = (f64::from(*v) * scale + shift) as f32;
            }
        }
        Ok(())
    }
}

/// One conv layer with its weights in PyTorch's layout.
#[derive(Clone, Debug)]
pub struct Conv {
    spec: ValidSpec,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Conv {
    /// A conv from its spec and weights; the lengths are checked.
    pub fn new(spec: ValidSpec, weight: Vec<f32>, bias: Option<Vec<f32>>) -> Result<Conv> {
        spec.check_operands(spec.input_len(), weight.len(), bias.as_ref().map(Vec::len))?;
        Ok(Conv { spec, weight, bias })
    }

    /// A conv with random weights (and bias, when the spec has one) in
    /// [−1, 1) scaled by 1/√fan-in, as PyTorch initialises them.
    pub fn random(spec: ValidSpec, seed: u64) -> Result<Conv> {
        let mut rng = StdRng::seed_from_u64(seed);
        let fan_in = spec.in_per_group() * spec.kernel()[0] * spec.kernel()[1];
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let mut v = |len: usize, what| -> Result<Vec<f32>> {
            let mut v = alloc::zeroed_f32(len, what)?;
            v.iter_mut().for_each(|x| *x = rng.random_range(-bound..bound));
            Ok(v)
        };
        let weight = v(spec.weight_len(), "the random weights")?;
        let bias = match spec.has_bias() {
            true => Some(v(spec.out_channels(), "the random bias")?),
            false => None,
        };
        Ok(Conv { spec, weight, bias })
    }

    /// The spec.
    pub fn spec(&self) -> &ValidSpec {
        &self.spec
    }
    /// The weights, in PyTorch's layout.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }
    /// The bias, when the spec has one.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// This conv followed by `bn` (eval mode) as one conv with a bias, for
    /// both ops: `w' = w · γ/√(σ² + ε)` per output channel and
    /// `b' = (b − μ) · γ/√(σ² + ε) + β`, computed in f64. The activation
    /// stays (it must be `none`: a BatchNorm after an activation does not
    /// fold).
    pub fn fold(&self, bn: &BatchNorm) -> Result<Conv> {
        let spec = &self.spec;
        if bn.channels() != spec.out_channels() {
            return Err(Error::Block(format!(
                "batchnorm of {} channels after a conv of {} output channels",
                bn.channels(),
                spec.out_channels()
            )));
        }
        if spec.activation() != Activation::None {
            return Err(Error::Block(format!(
                "a batchnorm after the conv's {} activation does not fold into it",
                spec.activation()
            )));
        }
        let taps = spec.kernel()[0] * spec.kernel()[1];
        let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
        // The output channel of each run of `taps` weights.
        let out_channel = |run: usize| match spec.op() {
            // [C_out, C_in/g, kh, kw]
            Op::Conv2d => run / cig,
            // [C_in, C_out/g, kh, kw]: input channel ci is in group ci / cig.
            Op::ConvTranspose2d => (run / cog) / cig * cog + run % cog,
        };
        let mut weight = alloc::copied(&self.weight, "the folded weights")?;
        for (run, w) in weight.chunks_mut(taps).enumerate() {
            let (scale, _) = bn.affine(out_channel(run));
            w.iter_mut().for_each(|v| *v = (f64::from(*v) * scale) as f32);
        }
        let bias = (0..spec.out_channels())
            .map(|c| {
                let (scale, shift) = bn.affine(c);
                let b = self.bias.as_ref().map_or(0.0, |b| f64::from(b[c]));
                (b * scale + shift) as f32
            })
            .collect();
        Conv::new(with_bias(spec, true)?, weight, Some(bias))
    }

    /// This conv with `activation` fused in place of its own.
    pub fn with_activation(&self, activation: Activation) -> Result<Conv> {
        let mut s = self.spec.to_conv_spec();
        (s.activation, s.negative_slope) = crate::spec::activation_fields(activation);
        Ok(Conv { spec: s.validate()?, ..self.try_clone()? })
    }

    /// A copy, its weights allocated fallibly ([`crate::alloc`]): `clone`
    /// aborts the process when the memory is refused.
    pub fn try_clone(&self) -> Result<Conv> {
        let weight = alloc::copied(&self.weight, "a copy of the conv's weights")?;
        Ok(Conv { spec: self.spec.clone(), weight, bias: self.bias.clone() })
    }

    /// Prepares it to run on `engine` (compiled by `compiler` when given).
    pub fn prepare(
        &self,
        engine: Engine,
        compiler: Option<&Compiler>,
        threads: usize,
    ) -> Result<Box<dyn Prepared>> {
        self.prepare_epilogue(engine, compiler, threads, Epilogue::Store)
    }

    /// [`Conv::prepare`], its outputs stored as `epilogue` says
    /// ([`Engine::prepare_epilogue`]).
    pub fn prepare_epilogue(
        &self,
        engine: Engine,
        compiler: Option<&Compiler>,
        threads: usize,
        epilogue: Epilogue,
    ) -> Result<Box<dyn Prepared>> {
        let (spec, w, b) = (&self.spec, &self.weight, self.bias.as_deref());
        engine.prepare_epilogue(compiler, spec, w, b, threads, epilogue)
    }

    /// Its output on `input`, from the reference interpreter.
    pub fn reference(&self, input: &[f32]) -> Result<Vec<f32>> {
        reference::conv(&self.spec, input, &self.weight, self.bias.as_deref())
    }
}

/// `spec` with its bias on or off.
fn with_bias(spec: &ValidSpec, bias: bool) -> Result<ValidSpec> {
    let mut s = spec.to_conv_spec();
    s.bias = bias;
    s.validate()
}
