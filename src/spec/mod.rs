//! The convolution spec: its JSON form ([`ConvSpec`], here), its validation
//! (`validate.rs`, where the bounds [`MAX_DIM`] and [`MAX_TENSOR_ELEMENTS`]
//! are enforced), the checked form every later stage works with
//! ([`ValidSpec`], `valid.rs`), and what a layer computes apart from its
//! sizes ([`Op`], [`Activation`], [`Kind`], `kind.rs`).
//!
//! The JSON form follows PyTorch's `nn.Conv2d` / `nn.ConvTranspose2d` names,
//! defaults and output-size formulas (DESIGN.md, contract 1). Integers are
//! read as signed so that a negative size is reported as a spec error naming
//! its field, not as a JSON type error.

mod kind;
mod valid;
mod validate;

use serde::{Deserialize, Serialize};

pub use kind::{Activation, ActivationKind, Kind, Op, activation_fields};
pub use valid::{Padding, ValidSpec};
pub use validate::{MAX_DIM, MAX_TENSOR_ELEMENTS};

use crate::error::{Error, Result, json_message};

/// A pair written as one integer (`3`) or as `[h, w]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Pair {
    /// The same value for height and width.
    One(i64),
    /// `[height, width]`.
    Two([i64; 2]),
}

impl Pair {
    /// `[height, width]`, whichever way the pair was written.
    fn hw(self) -> [i64; 2] {
        match self {
            Pair::One(v) => [v, v],
            Pair::Two(p) => p,
        }
    }
}

impl From<[i64; 2]> for Pair {
    fn from(p: [i64; 2]) -> Self {
        Pair::Two(p)
    }
}

/// The padding as written in a spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PaddingSpec {
    /// One integer for all four sides.
    One(i64),
    /// `[ph, pw]` (symmetric), or `[top, left, bottom, right]` (ONNX order).
    List(Vec<i64>),
    /// `"same"` or `"valid"` (conv2d only, as in PyTorch), or ONNX's
    /// `auto_pad` `"same_upper"` or `"same_lower"` (conv2d, any stride).
    Named(String),
}

impl Default for PaddingSpec {
    fn default() -> Self {
        PaddingSpec::One(0)
    }
}

impl From<[i64; 2]> for PaddingSpec {
    fn from(p: [i64; 2]) -> Self {
        PaddingSpec::List(p.to_vec())
    }
}

/// A convolution layer as a user writes it (DESIGN.md, contract 1).
///
/// Call [`ConvSpec::validate`] to obtain the [`ValidSpec`] that the rest of
/// convjit accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    /// An optional label (suites and reports use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `conv2d` or `conv_transpose2d`.
    pub op: Op,
    /// The batch size N (default 1).
    #[serde(default = "one")]
    pub batch: i64,
    /// Input channels.
    pub in_channels: i64,
    /// Output channels.
    pub out_channels: i64,
    /// Input height.
    pub height: i64,
    /// Input width.
    pub width: i64,
    /// Kernel size `kh, kw`.
    pub kernel: Pair,
    /// Stride (default 1).
    #[serde(default = "pair_one")]
    pub stride: Pair,
    /// Padding (default 0).
    #[serde(default)]
    pub padding: PaddingSpec,
    /// Dilation (default 1).
    #[serde(default = "pair_one")]
    pub dilation: Pair,
    /// Groups (default 1).
    #[serde(default = "one")]
    pub groups: i64,
    /// Extra rows and columns added to a transposed conv's output (default 0).
    #[serde(default = "pair_zero")]
    pub output_padding: Pair,
    /// Whether a bias is added (default true).
    #[serde(default = "yes")]
    pub bias: bool,
    /// The activation applied after the bias (default `none`).
    #[serde(default)]
    pub activation: ActivationKind,
    /// The slope of `leaky_relu` (default 0.01); only allowed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_slope: Option<f32>,
}

fn one() -> i64 {
    1
}
fn yes() -> bool {
    true
}
fn pair_one() -> Pair {
    Pair::One(1)
}
fn pair_zero() -> Pair {
    Pair::One(0)
}

impl ConvSpec {
    /// Parses a spec from JSON text.
    pub fn from_json(text: &str) -> Result<ConvSpec> {
        serde_json::from_str(text).map_err(|e| Error::SpecJson(json_message(&e)))
    }

    /// Parses a list of specs (a suite file) from JSON text.
    pub fn suite_from_json(text: &str) -> Result<Vec<ConvSpec>> {
        serde_json::from_str(text).map_err(|e| Error::SpecJson(json_message(&e)))
    }

    /// Serialises the spec as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a ConvSpec always serialises")
    }

    /// A spec of `op` with PyTorch's defaults for everything not given.
    pub fn new(
        op: Op,
        batch: i64,
        in_channels: i64,
        out_channels: i64,
        (height, width): (i64, i64),
        kernel: [i64; 2],
    ) -> ConvSpec {
        ConvSpec {
            name: None,
            op,
            batch,
            in_channels,
            out_channels,
            height,
            width,
            kernel: Pair::Two(kernel),
            stride: pair_one(),
            padding: PaddingSpec::default(),
            dilation: pair_one(),
            groups: 1,
            output_padding: pair_zero(),
            bias: true,
            activation: ActivationKind::None,
            negative_slope: None,
        }
    }
}
