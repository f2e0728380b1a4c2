//! [`ConvSpec::validate`]: DESIGN.md contract 1 as a sequence of small
//! checks, each returning the [`Error::InvalidSpec`] that names its field
//! and value. The checks run in a fixed order and the first failure is the
//! one reported, so the order is part of the behaviour: each size on its
//! own, then the groups, the activation, the padding, the output size, and
//! last the tensors' element counts.

use std::fmt;

use super::{Activation, ActivationKind, ConvSpec, Op, Padding, PaddingSpec, Pair, ValidSpec};
use crate::error::{Error, Result};

/// The largest value accepted for any single size, stride, padding, dilation
/// or group count (2^24). Together with [`MAX_TENSOR_ELEMENTS`] it keeps every
/// index computed downstream far from `usize` and `i64` overflow.
pub const MAX_DIM: i64 = 1 << 24;

/// The largest number of elements accepted in the input, weight or output
/// tensor (2^31, i.e. 8 GiB of f32).
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 31;

/// The sizes of a spec, each within its bounds; the later checks relate
/// them to one another.
struct Sizes {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    height: usize,
    width: usize,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    groups: usize,
    output_padding: [usize; 2],
}

impl Sizes {
    /// The span of the dilated kernel, minus one: d·(k−1) per axis. Each
    /// factor is at most [`MAX_DIM`], so the product cannot overflow.
    fn span(&self) -> [usize; 2] {
        [0, 1].map(|axis| self.dilation[axis] * (self.kernel[axis] - 1))
    }
}

impl ConvSpec {
    /// Checks every rule of DESIGN.md contract 1 and returns the checked spec.
    /// The error names the first offending field and its value.
    pub fn validate(&self) -> Result<ValidSpec> {
        let sizes = self.sizes()?;
        check_groups(&sizes)?;
        let activation = activation(self.activation, self.negative_slope)?;
        let padding = padding(&self.padding, self.op, &sizes)?;
        let [out_height, out_width] = match self.op {
            Op::Conv2d => conv_output(&sizes, padding)?,
            Op::ConvTranspose2d => transposed_output(&sizes, padding)?,
        };
        let spec = ValidSpec {
            name: self.name.clone(),
            op: self.op,
            batch: sizes.batch,
            in_channels: sizes.in_channels,
            out_channels: sizes.out_channels,
            height: sizes.height,
            width: sizes.width,
            kernel: sizes.kernel,
            stride: sizes.stride,
            padding,
            dilation: sizes.dilation,
            groups: sizes.groups,
            output_padding: sizes.output_padding,
            bias: self.bias,
            activation,
            out_height,
            out_width,
        };
        check_tensors(&spec)?;
        Ok(spec)
    }

    /// Every size on its own: at least 1 (an output padding at least 0) and
    /// at most [`MAX_DIM`], checked in the order of the fields.
    fn sizes(&self) -> Result<Sizes> {
        Ok(Sizes {
            batch: bounded("batch", self.batch, 1)?,
            in_channels: bounded("in_channels", self.in_channels, 1)?,
            out_channels: bounded("out_channels", self.out_channels, 1)?,
            height: bounded("height", self.height, 1)?,
            width: bounded("width", self.width, 1)?,
            kernel: bounded_pair("kernel", self.kernel, 1)?,
            stride: bounded_pair("stride", self.stride, 1)?,
            dilation: bounded_pair("dilation", self.dilation, 1)?,
            groups: bounded("groups", self.groups, 1)?,
            output_padding: bounded_pair("output_padding", self.output_padding, 0)?,
        })
    }
}

impl TryFrom<ConvSpec> for ValidSpec {
    type Error = Error;
    fn try_from(spec: ConvSpec) -> Result<ValidSpec> {
        spec.validate()
    }
}

/// The groups divide both channel counts.
fn check_groups(sizes: &Sizes) -> Result<()> {
    let groups = sizes.groups;
    for (field, channels) in
        [("in_channels", sizes.in_channels), ("out_channels", sizes.out_channels)]
    {
        if channels % groups != 0 {
            return Err(invalid("groups", groups, format!("must divide {field} ({channels})")));
        }
    }
    Ok(())
}

/// The activation: a leaky ReLU's slope defaults to 0.01 and must be
/// finite, and a slope is only allowed with a leaky ReLU.
fn activation(kind: ActivationKind, negative_slope: Option<f32>) -> Result<Activation> {
    Ok(match (kind, negative_slope) {
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
    })
}

/// The padding on the four sides, from any of its written forms.
fn padding(written: &PaddingSpec, op: Op, sizes: &Sizes) -> Result<Padding> {
    match written {
        PaddingSpec::One(p) => {
            let p = bounded("padding", *p, 0)?;
            Ok(Padding { top: p, left: p, bottom: p, right: p })
        }
        PaddingSpec::List(list) => padding_list(list),
        PaddingSpec::Named(name) => named_padding(name, op, sizes),
    }
}

/// `[ph, pw]` or `[top, left, bottom, right]`, each value in `0..=MAX_DIM`.
fn padding_list(list: &[i64]) -> Result<Padding> {
    let shown = || {
        let values: Vec<String> = list.iter().map(i64::to_string).collect();
        format!("[{}]", values.join(", "))
    };
    if list.len() != 2 && list.len() != 4 {
        return Err(invalid(
            "padding",
            shown(),
            "must be one integer, [ph, pw], [top, left, bottom, right], \"same\" or \"valid\"",
        ));
    }
    if list.iter().any(|&v| !(0..=MAX_DIM).contains(&v)) {
        return Err(invalid(
            "padding",
            shown(),
            format!("each value must not be negative and at most {MAX_DIM}"),
        ));
    }
    let v: Vec<usize> = list.iter().map(|&v| v as usize).collect();
    Ok(if v.len() == 2 {
        Padding { top: v[0], left: v[1], bottom: v[0], right: v[1] }
    } else {
        Padding { top: v[0], left: v[1], bottom: v[2], right: v[3] }
    })
}

/// `"valid"` or `"same"`, for conv2d only and `"same"` at stride 1 only,
/// as in PyTorch.
fn named_padding(name: &str, op: Op, sizes: &Sizes) -> Result<Padding> {
    if op != Op::Conv2d {
        return Err(invalid(
            "padding",
            format!("\"{name}\""),
            "string padding is only supported for conv2d (as in PyTorch)",
        ));
    }
    match name {
        "valid" => Ok(Padding { top: 0, left: 0, bottom: 0, right: 0 }),
        "same" => {
            if sizes.stride != [1, 1] {
                return Err(invalid(
                    "padding",
                    "\"same\"",
                    format!(
                        "is not supported with stride {} (PyTorch requires stride 1)",
                        pair_str(sizes.stride)
                    ),
                ));
            }
            // PyTorch puts the odd pixel of padding at the bottom/right.
            let span = sizes.span();
            Ok(Padding {
                top: span[0] / 2,
                left: span[1] / 2,
                bottom: span[0] - span[0] / 2,
                right: span[1] - span[1] / 2,
            })
        }
        // ONNX's auto_pad, at any stride: on each axis what makes the
        // output ceil(size / stride), the odd pixel after (upper) or
        // before (lower).
        "same_upper" | "same_lower" => {
            let (span, size) = (sizes.span(), [sizes.height, sizes.width]);
            let total = [0, 1].map(|axis| {
                let out = size[axis].div_ceil(sizes.stride[axis]);
                ((out - 1) * sizes.stride[axis] + span[axis] + 1).saturating_sub(size[axis])
            });
            let before = total.map(|t| if name == "same_upper" { t / 2 } else { t - t / 2 });
            Ok(Padding {
                top: before[0],
                left: before[1],
                bottom: total[0] - before[0],
                right: total[1] - before[1],
            })
        }
        _ => Err(invalid(
            "padding",
            format!("\"{name}\""),
            "the padding names are \"same\", \"valid\", \"same_upper\" and \"same_lower\"",
        )),
    }
}

/// A conv2d's output `[height, width]`: no output padding, and a dilated
/// kernel that fits the padded input, so that the output is not empty.
fn conv_output(sizes: &Sizes, padding: Padding) -> Result<[usize; 2]> {
    if sizes.output_padding != [0, 0] {
        return Err(invalid(
            "output_padding",
            pair_str(sizes.output_padding),
            "must be 0 for conv2d",
        ));
    }
    let span = sizes.span();
    let padded =
        [sizes.height + padding.top + padding.bottom, sizes.width + padding.left + padding.right];
    if padded[0] < span[0] + 1 || padded[1] < span[1] + 1 {
        return Err(invalid(
            "kernel",
            pair_str(sizes.kernel),
            format!(
                "with dilation {} spans {}×{}, more than the padded input {}×{}: the output would be empty",
                pair_str(sizes.dilation),
                span[0] + 1,
                span[1] + 1,
                padded[0],
                padded[1]
            ),
        ));
    }
    Ok([0, 1].map(|axis| (padded[axis] - span[axis] - 1) / sizes.stride[axis] + 1))
}

/// A transposed conv's output `[height, width]`: an output padding below
/// the stride or the dilation (PyTorch's rule), and a padding that does not
/// crop the whole output.
fn transposed_output(sizes: &Sizes, padding: Padding) -> Result<[usize; 2]> {
    let (stride, dilation, output_padding) = (sizes.stride, sizes.dilation, sizes.output_padding);
    for axis in 0..2 {
        if output_padding[axis] >= stride[axis] && output_padding[axis] >= dilation[axis] {
            return Err(invalid(
                "output_padding",
                pair_str(output_padding),
                format!(
                    "must be smaller than either stride {} or dilation {} (PyTorch's rule)",
                    pair_str(stride),
                    pair_str(dilation)
                ),
            ));
        }
    }
    // (H − 1)·s − pad_begin − pad_end + d·(k − 1) + output_padding + 1
    let span = sizes.span();
    let full = [
        (sizes.height - 1) * stride[0] + span[0] + output_padding[0] + 1,
        (sizes.width - 1) * stride[1] + span[1] + output_padding[1] + 1,
    ];
    let crop = [padding.top + padding.bottom, padding.left + padding.right];
    if full[0] <= crop[0] || full[1] <= crop[1] {
        return Err(invalid(
            "padding",
            format!("[{}, {}, {}, {}]", padding.top, padding.left, padding.bottom, padding.right),
            format!("crops the {}×{} transposed output to nothing", full[0], full[1]),
        ));
    }
    Ok([full[0] - crop[0], full[1] - crop[1]])
}

/// The input, weight and output each hold at most [`MAX_TENSOR_ELEMENTS`].
fn check_tensors(spec: &ValidSpec) -> Result<()> {
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
    Ok(())
}

fn invalid(field: &'static str, value: impl fmt::Display, reason: impl Into<String>) -> Error {
    Error::InvalidSpec { field, value: value.to_string(), reason: reason.into() }
}

fn pair_str(p: [impl fmt::Display; 2]) -> String {
    format!("[{}, {}]", p[0], p[1])
}

/// What a value below `min` must be instead, in words.
fn at_least(min: i64) -> &'static str {
    if min == 0 { "not be negative" } else { "be at least 1" }
}

/// Checks that `v` is in `min..=MAX_DIM` and converts it.
fn bounded(field: &'static str, v: i64, min: i64) -> Result<usize> {
    if v < min {
        return Err(invalid(field, v, format!("must {}", at_least(min))));
    }
    if v > MAX_DIM {
        return Err(invalid(field, v, format!("must be at most {MAX_DIM}")));
    }
    Ok(v as usize)
}

/// Checks that both values of `p` are in `min..=MAX_DIM` and converts them;
/// the error shows the pair.
fn bounded_pair(field: &'static str, p: Pair, min: i64) -> Result<[usize; 2]> {
    let hw = p.hw();
    if hw.iter().all(|v| (min..=MAX_DIM).contains(v)) {
        return Ok(hw.map(|v| v as usize));
    }
    Err(invalid(
        field,
        pair_str(hw),
        format!("each value must {} and at most {MAX_DIM}", at_least(min)),
    ))
}
