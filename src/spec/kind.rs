//! What a layer computes, apart from its sizes: the operator ([`Op`]), the
//! fused activation ([`ActivationKind`] as written, [`Activation`] as
//! checked), and the layer's [`Kind`], the class reports and the schedule
//! heuristic sort it into.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ValidSpec;

/// The two operators convjit compiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `torch.nn.Conv2d`.
    Conv2d,
    /// `torch.nn.ConvTranspose2d` (deconvolution, fractionally strided conv).
    ConvTranspose2d,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Conv2d => "conv2d",
            Op::ConvTranspose2d => "conv_transpose2d",
        })
    }
}

/// The activation fused after the bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationKind {
    /// Identity.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
    /// `x` if `x >= 0`, else `negative_slope * x`.
    LeakyRelu,
}

/// A checked activation, with its parameter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`; NaN stays NaN.
    Relu,
    /// `min(max(x, 0), 6)`; NaN stays NaN.
    Relu6,
    /// `x` if `x >= 0`, else `negative_slope * x`.
    LeakyRelu {
        /// The slope for negative inputs (PyTorch's default is 0.01).
        negative_slope: f32,
    },
}

impl Activation {
    /// Applies the activation in f64, propagating NaN as PyTorch does.
    pub fn apply_f64(self, x: f64) -> f64 {
        match self {
            Activation::None => x,
            Activation::Relu => {
                if x < 0.0 {
                    0.0
                } else {
                    x
                }
            }
            // `clamp` returns NaN for NaN.
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::LeakyRelu { negative_slope } => {
                if x < 0.0 {
                    f64::from(negative_slope) * x
                } else {
                    x
                }
            }
        }
    }

    /// Applies the activation in f32: exactly [`Activation::apply_f64`]
    /// rounded to f32, NaN included. Its one product, slope · x, is exact in
    /// f64 for f32 operands (24 + 24 significant bits), so the rounding gives
    /// the correctly rounded f32 product.
    pub fn apply_f32(self, x: f32) -> f32 {
        self.apply_f64(f64::from(x)) as f32
    }

    /// `y = act(y + with)`, element by element: [`Activation::apply_f32`]
    /// of each sum, written once per activation in f32 (which rounds the
    /// same) so that each loop compiles to vector code.
    pub fn apply_sum(self, y: &mut [f32], with: &[f32]) {
        fn each(y: &mut [f32], with: &[f32], f: impl Fn(f32) -> f32) {
            y.iter_mut().zip(with).for_each(|(y, &b)| *y = f(*y + b));
        }
        match self {
            Activation::None => each(y, with, |v| v),
            // Comparisons that leave NaN as it is, as `apply_f64` does.
            Activation::Relu => each(y, with, |v| if v < 0.0 { 0.0 } else { v }),
            Activation::Relu6 => each(y, with, |v| v.clamp(0.0, 6.0)),
            Activation::LeakyRelu { negative_slope: s } => {
                each(y, with, |v| if v < 0.0 { s * v } else { v })
            }
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::None => f.write_str("none"),
            Activation::Relu => f.write_str("relu"),
            Activation::Relu6 => f.write_str("relu6"),
            Activation::LeakyRelu { negative_slope } => write!(f, "leaky_relu({negative_slope})"),
        }
    }
}

/// The JSON fields (`activation`, `negative_slope`) of an activation.
pub fn activation_fields(activation: Activation) -> (ActivationKind, Option<f32>) {
    match activation {
        Activation::None => (ActivationKind::None, None),
        Activation::Relu => (ActivationKind::Relu, None),
        Activation::Relu6 => (ActivationKind::Relu6, None),
        Activation::LeakyRelu { negative_slope } => {
            (ActivationKind::LeakyRelu, Some(negative_slope))
        }
    }
}

/// What kind of layer a spec is, for reports and for choosing a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A transposed convolution.
    Transposed,
    /// One input and `out/in` output channels per group, groups = in_channels > 1.
    Depthwise,
    /// Groups > 1 that is not depthwise.
    Grouped,
    /// A 1×1 kernel.
    Pointwise,
    /// Dilation above 1.
    Dilated,
    /// A kernel that is not square (k×1, 1×k, ...).
    Asymmetric,
    /// Stride above 1.
    Strided,
    /// Everything else: a dense square kernel, stride 1.
    Standard,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Transposed => "transposed",
            Kind::Depthwise => "depthwise",
            Kind::Grouped => "grouped",
            Kind::Pointwise => "pointwise",
            Kind::Dilated => "dilated",
            Kind::Asymmetric => "asymmetric",
            Kind::Strided => "strided",
            Kind::Standard => "standard",
        })
    }
}

impl ValidSpec {
    /// The layer's kind, most specific first: transposed, depthwise, grouped,
    /// pointwise, dilated, asymmetric, strided, standard.
    pub fn kind(&self) -> Kind {
        let (groups, kernel) = (self.groups(), self.kernel());
        if self.op() == Op::ConvTranspose2d {
            Kind::Transposed
        } else if groups > 1 && groups == self.in_channels() {
            Kind::Depthwise
        } else if groups > 1 {
            Kind::Grouped
        } else if kernel == [1, 1] {
            Kind::Pointwise
        } else if self.dilation() != [1, 1] {
            Kind::Dilated
        } else if kernel[0] != kernel[1] {
            Kind::Asymmetric
        } else if self.stride() != [1, 1] {
            Kind::Strided
        } else {
            Kind::Standard
        }
    }
}
