//! The convolution spec: its JSON form ([`ConvSpec`]), its validation, and the
//! checked form every later stage works with ([`ValidSpec`]).
//!
//! The JSON form follows PyTorch's `nn.Conv2d` / `nn.ConvTranspose2d` names,
//! defaults and output-size formulas (DESIGN.md, contract 1). Integers are
//! read as signed so that a negative size is reported as a spec error naming
//! its field, not as a JSON type error.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest value accepted for any single size, stride, padding, dilation
/// or group count (2^24). Together with [`MAX_TENSOR_ELEMENTS`] it keeps every
/// index computed downstream far from `usize` and `i64` overflow.
pub const MAX_DIM: i64 = 1 << 24;

/// The largest number of elements accepted in the input, weight or output
/// tensor (2^31, i.e. 8 GiB of f32).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;

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
    /// `"same"` or `"valid"` (conv2d only, as in PyTorch).
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

/// Padding on the four sides, in the order ONNX writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Padding {
    /// Rows added above (conv2d) or cropped from the top (conv_transpose2d).
    pub top: usize,
    /// Columns added on the left, or cropped from the left.
    pub left: usize,
    /// Rows added below, or cropped from the bottom.
    pub bottom: usize,
    /// Columns added on the right, or cropped from the right.
    pub right: usize,
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

/// A spec that passed validation: every size is positive, every tensor fits
/// the documented limits, and the output has at least one pixel.
///
/// Its fields can only be read; the only way to make one is
/// [`ConvSpec::validate`] (or `TryFrom<ConvSpec>`), so nothing downstream
/// re-checks a shape.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidSpec {
    name: Option<String>,
    op: Op,
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: Padding,
    dilation: [usize; 2],
    groups: usize,
    output_padding: [usize; 2],
    bias: bool,
    activation: Activation,
    out_height: usize,
    out_width: usize,
}

fn invalid(field: &'static str, value: impl fmt::Display, reason: impl Into<String>) -> Error {
    Error::InvalidSpec { field, value: value.to_string(), reason: reason.into() }
}

fn pair_str(p: [i64; 2]) -> String {
    format!("[{}, {}]", p[0], p[1])
}

/// Checks that `v` is in `min..=MAX_DIM` and converts it.
fn bounded(field: &'static str, v: i64, min: i64) -> Result<usize> {
    if v < min {
        let what = if min == 0 { "not be negative" } else { "be at least 1" };
        return Err(invalid(field, v, format!("must {what}")));
    }
    if v > MAX_DIM {
        return Err(invalid(field, v, format!("must be at most {MAX_DIM}")));
    }
    Ok(v as usize)
}

fn bounded_pair(field: &'static str, p: Pair, min: i64) -> Result<[usize; 2]> {
    let hw = p.hw();
    let check = |v: i64| bounded(field, v, min).map_err(|_| ());
    match (check(hw[0]), check(hw[1])) {
        (Ok(h), Ok(w)) => Ok([h, w]),
        _ => {
            let what = if min == 0 { "not be negative" } else { "be at least 1" };
            Err(invalid(
                field,
                pair_str(hw),
                format!("each value must {what} and at most {MAX_DIM}"),
            ))
        }
    }
}

impl ConvSpec {
    /// Parses a spec from JSON text.
    pub fn from_json(text: &str) -> Result<ConvSpec> {
        serde_json::from_str(text).map_err(|e| Error::SpecJson(e.to_string()))
    }

    /// Parses a list of specs (a suite file) from JSON text.
    pub fn suite_from_json(text: &str) -> Result<Vec<ConvSpec>> {
        serde_json::from_str(text).map_err(|e| Error::SpecJson(e.to_string()))
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

    /// Checks every rule of DESIGN.md contract 1 and returns the checked spec.
    /// The error names the first offending field and its value.
    pub fn validate(&self) -> Result<ValidSpec> {
        let batch = bounded("batch", self.batch, 1)?;
        let in_channels = bounded("in_channels", self.in_channels, 1)?;
        let out_channels = bounded("out_channels", self.out_channels, 1)?;
        let height = bounded("height", self.height, 1)?;
        let width = bounded("width", self.width, 1)?;
        let kernel = bounded_pair("kernel", self.kernel, 1)?;
        let stride = bounded_pair("stride", self.stride, 1)?;
        let dilation = bounded_pair("dilation", self.dilation, 1)?;
        let groups = bounded("groups", self.groups, 1)?;
        let output_padding = bounded_pair("output_padding", self.output_padding, 0)?;

        if in_channels % groups != 0 {
            return Err(invalid(
                "groups",
                groups,
                format!("must divide in_channels ({in_channels})"),
            ));
        }
        if out_channels % groups != 0 {
            return Err(invalid(
                "groups",
                groups,
                format!("must divide out_channels ({out_channels})"),
            ));
        }

        let activation = match (self.activation, self.negative_slope) {
            (ActivationKind::LeakyRelu, slope) => {
                let negative_slope = slope.unwrap_or(0.01);
                if !negative_slope.is_finite() {
                    return Err(invalid("negative_slope", negative_slope, "must be finite"));
                }
                Activation::LeakyRelu { negative_slope }
            }
            (_, Some(slope)) => {
                return Err(invalid(
                    "negative_slope",
                    slope,
                    "is only allowed with \"activation\": \"leaky_relu\"",
                ));
            }
            (ActivationKind::None, None) => Activation::None,
            (ActivationKind::Relu, None) => Activation::Relu,
            (ActivationKind::Relu6, None) => Activation::Relu6,
        };

        // The span of the dilated kernel, minus one: d·(k−1).
        let span = [dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)];

        let padding = match &self.padding {
            PaddingSpec::One(p) => {
                let p = bounded("padding", *p, 0)?;
                Padding { top: p, left: p, bottom: p, right: p }
            }
            PaddingSpec::List(list) => {
                let bad = || {
                    let shown: Vec<String> = list.iter().map(i64::to_string).collect();
                    format!("[{}]", shown.join(", "))
                };
                if list.len() != 2 && list.len() != 4 {
                    return Err(invalid(
                        "padding",
                        bad(),
                        "must be one integer, [ph, pw], [top, left, bottom, right], \"same\" or \"valid\"",
                    ));
                }
                if list.iter().any(|&v| !(0..=MAX_DIM).contains(&v)) {
                    return Err(invalid(
                        "padding",
                        bad(),
                        format!("each value must not be negative and at most {MAX_DIM}"),
                    ));
                }
                let v: Vec<usize> = list.iter().map(|&v| v as usize).collect();
                if v.len() == 2 {
                    Padding { top: v[0], left: v[1], bottom: v[0], right: v[1] }
                } else {
                    Padding { top: v[0], left: v[1], bottom: v[2], right: v[3] }
                }
            }
            PaddingSpec::Named(name) => {
                if self.op != Op::Conv2d {
                    return Err(invalid(
                        "padding",
                        format!("\"{name}\""),
                        "string padding is only supported for conv2d (as in PyTorch)",
                    ));
                }
                match name.as_str() {
                    "valid" => Padding { top: 0, left: 0, bottom: 0, right: 0 },
                    "same" => {
                        if stride != [1, 1] {
                            return Err(invalid(
                                "padding",
                                "\"same\"",
                                format!(
                                    "is not supported with stride {} (PyTorch requires stride 1)",
                                    pair_str([stride[0] as i64, stride[1] as i64])
                                ),
                            ));
                        }
                        // PyTorch puts the odd pixel of padding at the bottom/right.
                        Padding {
                            top: span[0] / 2,
                            left: span[1] / 2,
                            bottom: span[0] - span[0] / 2,
                            right: span[1] - span[1] / 2,
                        }
                    }
                    _ => {
                        return Err(invalid(
                            "padding",
                            format!("\"{name}\""),
                            "the only padding names are \"same\" and \"valid\"",
                        ));
                    }
                }
            }
        };

        let (out_height, out_width) = match self.op {
            Op::Conv2d => {
                if output_padding != [0, 0] {
                    return Err(invalid(
                        "output_padding",
                        pair_str([output_padding[0] as i64, output_padding[1] as i64]),
                        "must be 0 for conv2d",
                    ));
                }
                let padded =
                    [height + padding.top + padding.bottom, width + padding.left + padding.right];
                if padded[0] < span[0] + 1 || padded[1] < span[1] + 1 {
                    return Err(invalid(
                        "kernel",
                        pair_str([kernel[0] as i64, kernel[1] as i64]),
                        format!(
                            "with dilation {} spans {}×{}, more than the padded input {}×{}: the output would be empty",
                            pair_str([dilation[0] as i64, dilation[1] as i64]),
                            span[0] + 1,
                            span[1] + 1,
                            padded[0],
                            padded[1]
                        ),
                    ));
                }
                (
                    (padded[0] - span[0] - 1) / stride[0] + 1,
                    (padded[1] - span[1] - 1) / stride[1] + 1,
                )
            }
            Op::ConvTranspose2d => {
                for axis in 0..2 {
                    if output_padding[axis] >= stride[axis]
                        && output_padding[axis] >= dilation[axis]
                    {
                        return Err(invalid(
                            "output_padding",
                            pair_str([output_padding[0] as i64, output_padding[1] as i64]),
                            format!(
                                "must be smaller than either stride {} or dilation {} (PyTorch's rule)",
                                pair_str([stride[0] as i64, stride[1] as i64]),
                                pair_str([dilation[0] as i64, dilation[1] as i64])
                            ),
                        ));
                    }
                }
                // (H − 1)·s − pad_begin − pad_end + d·(k − 1) + output_padding + 1
                let full = [
                    (height - 1) * stride[0] + span[0] + output_padding[0] + 1,
                    (width - 1) * stride[1] + span[1] + output_padding[1] + 1,
                ];
                let crop = [padding.top + padding.bottom, padding.left + padding.right];
                if full[0] <= crop[0] || full[1] <= crop[1] {
                    return Err(invalid(
                        "padding",
                        format!(
                            "[{}, {}, {}, {}]",
                            padding.top, padding.left, padding.bottom, padding.right
                        ),
                        format!("crops the {}×{} transposed output to nothing", full[0], full[1]),
                    ));
                }
                (full[0] - crop[0], full[1] - crop[1])
            }
        };

        let spec = ValidSpec {
            name: self.name.clone(),
            op: self.op,
            batch,
            in_channels,
            out_channels,
            height,
            width,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            output_padding,
            bias: self.bias,
            activation,
            out_height,
            out_width,
        };
        // A transposed output extent can reach about 2^49, so the product of
        // four extents can pass even u128: `None` stands for "beyond 2^128".
        let elements =
            |shape: [usize; 4]| shape.iter().try_fold(1u128, |n, &d| n.checked_mul(d as u128));
        for (field, elements) in [
            ("input", elements(spec.input_shape())),
            ("weight", elements(spec.weight_shape())),
            ("output", elements(spec.output_shape())),
        ] {
            let shown = match elements {
                Some(n) if n <= u128::from(MAX_TENSOR_ELEMENTS) => continue,
                Some(n) => format!("{n} elements"),
                None => "more than 2^128 elements".to_string(),
            };
            return Err(invalid(
                field,
                shown,
                format!("exceeds the limit of {MAX_TENSOR_ELEMENTS} elements per tensor"),
            ));
        }
        Ok(spec)
    }
}

impl TryFrom<ConvSpec> for ValidSpec {
    type Error = Error;
    fn try_from(spec: ConvSpec) -> Result<ValidSpec> {
        spec.validate()
    }
}

impl ValidSpec {
    /// The optional label.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    /// `conv2d` or `conv_transpose2d`.
    pub fn op(&self) -> Op {
        self.op
    }
    /// N.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
    /// Input height.
    pub fn height(&self) -> usize {
        self.height
    }
    /// Input width.
    pub fn width(&self) -> usize {
        self.width
    }
    /// `[kh, kw]`.
    pub fn kernel(&self) -> [usize; 2] {
        self.kernel
    }
    /// `[sh, sw]`.
    pub fn stride(&self) -> [usize; 2] {
        self.stride
    }
    /// The padding on the four sides.
    pub fn padding(&self) -> Padding {
        self.padding
    }
    /// `[dh, dw]`.
    pub fn dilation(&self) -> [usize; 2] {
        self.dilation
    }
    /// Groups.
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// `[oph, opw]` (always zero for conv2d).
    pub fn output_padding(&self) -> [usize; 2] {
        self.output_padding
    }
    /// Whether a bias is added.
    pub fn has_bias(&self) -> bool {
        self.bias
    }
    /// The fused activation.
    pub fn activation(&self) -> Activation {
        self.activation
    }
    /// Output height.
    pub fn out_height(&self) -> usize {
        self.out_height
    }
    /// Output width.
    pub fn out_width(&self) -> usize {
        self.out_width
    }
    /// Input channels per group.
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }
    /// Output channels per group.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// `[N, C_in, H, W]`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_channels, self.height, self.width]
    }
    /// `[N, C_out, H_out, W_out]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_channels, self.out_height, self.out_width]
    }
    /// PyTorch's weight layout: conv2d `[C_out, C_in/g, kh, kw]`,
    /// conv_transpose2d `[C_in, C_out/g, kh, kw]`.
    pub fn weight_shape(&self) -> [usize; 4] {
        match self.op {
            Op::Conv2d => [self.out_channels, self.in_per_group(), self.kernel[0], self.kernel[1]],
            Op::ConvTranspose2d => {
                [self.in_channels, self.out_per_group(), self.kernel[0], self.kernel[1]]
            }
        }
    }
    /// `[C_out]`, or `None` without bias.
    pub fn bias_shape(&self) -> Option<[usize; 1]> {
        self.bias.then_some([self.out_channels])
    }
    /// Elements of the input tensor.
    pub fn input_len(&self) -> usize {
        self.input_shape().iter().product()
    }
    /// Elements of the weight tensor.
    pub fn weight_len(&self) -> usize {
        self.weight_shape().iter().product()
    }
    /// Elements of the output tensor.
    pub fn output_len(&self) -> usize {
        self.output_shape().iter().product()
    }

    /// Checks the lengths of the operands of one run against the spec: the
    /// input, the weights in PyTorch's layout, and the bias (present exactly
    /// when the spec has one).
    pub fn check_operands(&self, input: usize, weight: usize, bias: Option<usize>) -> Result<()> {
        check_len("input", &self.input_shape(), input)?;
        check_len("weight", &self.weight_shape(), weight)?;
        match (self.bias_shape(), bias) {
            (Some(shape), Some(len)) => check_len("bias", &shape, len),
            (None, None) => Ok(()),
            (Some(_), None) => {
                Err(Error::Bias("the spec has \"bias\": true but no bias was given".into()))
            }
            (None, Some(_)) => {
                Err(Error::Bias("a bias was given but the spec has \"bias\": false".into()))
            }
        }
    }

    /// Checks the length of an output buffer against the spec.
    pub fn check_output(&self, output: usize) -> Result<()> {
        check_len("output", &self.output_shape(), output)
    }

    /// The layer's kind, most specific first: transposed, depthwise, grouped,
    /// pointwise, dilated, asymmetric, strided, standard.
    pub fn kind(&self) -> Kind {
        if self.op == Op::ConvTranspose2d {
            Kind::Transposed
        } else if self.groups > 1 && self.groups == self.in_channels {
            Kind::Depthwise
        } else if self.groups > 1 {
            Kind::Grouped
        } else if self.kernel == [1, 1] {
            Kind::Pointwise
        } else if self.dilation != [1, 1] {
            Kind::Dilated
        } else if self.kernel[0] != self.kernel[1] {
            Kind::Asymmetric
        } else if self.stride != [1, 1] {
            Kind::Strided
        } else {
            Kind::Standard
        }
    }

    /// A short human description: `64→64 3×3 s1 p1 56×56`, with dilation,
    /// groups and batch shown when they are not 1.
    pub fn shape_summary(&self) -> String {
        let mut s = format!(
            "{}→{} {}×{}",
            self.in_channels, self.out_channels, self.kernel[0], self.kernel[1]
        );
        if self.stride != [1, 1] {
            s += &format!(" s{}", axis_str(self.stride));
        }
        let p = self.padding;
        if p.top == p.bottom && p.left == p.right {
            if p.top != 0 || p.left != 0 {
                s += &format!(" p{}", axis_str([p.top, p.left]));
            }
        } else {
            s += &format!(" p{},{},{},{}", p.top, p.left, p.bottom, p.right);
        }
        if self.dilation != [1, 1] {
            s += &format!(" d{}", axis_str(self.dilation));
        }
        if self.groups != 1 {
            s += &format!(" g{}", self.groups);
        }
        if self.output_padding != [0, 0] {
            s += &format!(" op{}", axis_str(self.output_padding));
        }
        s += &format!(" {}×{}", self.height, self.width);
        if self.batch != 1 {
            s += &format!(" n{}", self.batch);
        }
        s
    }

    /// The spec in its JSON form again (normalised: every field explicit,
    /// padding as `[top, left, bottom, right]`).
    pub fn to_conv_spec(&self) -> ConvSpec {
        let i = |v: usize| v as i64;
        let p2 = |p: [usize; 2]| Pair::Two([i(p[0]), i(p[1])]);
        let (activation, negative_slope) = activation_fields(self.activation);
        let p = self.padding;
        ConvSpec {
            name: self.name.clone(),
            op: self.op,
            batch: i(self.batch),
            in_channels: i(self.in_channels),
            out_channels: i(self.out_channels),
            height: i(self.height),
            width: i(self.width),
            kernel: p2(self.kernel),
            stride: p2(self.stride),
            padding: PaddingSpec::List(vec![i(p.top), i(p.left), i(p.bottom), i(p.right)]),
            dilation: p2(self.dilation),
            groups: i(self.groups),
            output_padding: p2(self.output_padding),
            bias: self.bias,
            activation,
            negative_slope,
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

fn check_len(what: &'static str, shape: &[usize], found: usize) -> Result<()> {
    let expected = shape.iter().product();
    if found == expected {
        Ok(())
    } else {
        Err(Error::BufferLength { what, shape: shape.to_vec(), expected, found })
    }
}

fn axis_str(p: [usize; 2]) -> String {
    if p[0] == p[1] { p[0].to_string() } else { format!("{},{}", p[0], p[1]) }
}

impl fmt::Display for ValidSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.shape_summary())
    }
}
