//! [`ValidSpec`], the checked form of a spec: its accessors, the tensor
//! shapes it implies, the length checks of a run's buffers, and its short
//! human description.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Activation, ConvSpec, Op, PaddingSpec, Pair, activation_fields};
use crate::error::{Error, Result};

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

/// A spec that passed validation: every size is positive, every tensor fits
/// the documented limits, and the output has at least one pixel.
///
/// Its fields can only be read; the only way to make one is
/// [`ConvSpec::validate`] (or `TryFrom<ConvSpec>`), so nothing downstream
/// re-checks a shape. The fields are visible inside `crate::spec` only so
/// that the validation (`validate.rs`) can build one; nothing else there
/// does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValidSpec {
    pub(super) name: Option<String>,
    pub(super) op: Op,
    pub(super) batch: usize,
    pub(super) in_channels: usize,
    pub(super) out_channels: usize,
    pub(super) height: usize,
    pub(super) width: usize,
    pub(super) kernel: [usize; 2],
    pub(super) stride: [usize; 2],
    pub(super) padding: Padding,
    pub(super) dilation: [usize; 2],
    pub(super) groups: usize,
    pub(super) output_padding: [usize; 2],
    pub(super) bias: bool,
    pub(super) activation: Activation,
    pub(super) out_height: usize,
    pub(super) out_width: usize,
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

    /// Checks the length of an input buffer (of a run whose weights and
    /// bias are already bound) against the spec.
    pub fn check_input(&self, input: usize) -> Result<()> {
        check_len("input", &self.input_shape(), input)
    }

    /// Checks the length of an output buffer against the spec.
    pub fn check_output(&self, output: usize) -> Result<()> {
        check_len("output", &self.output_shape(), output)
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

    /// Whether the input and output planes are the same pixels in the same
    /// order (a 1×1 conv2d of stride 1 without padding), so that the layer
    /// may be computed on its planes cut into rows of any length that
    /// divides them ([`ValidSpec::as_rows`]).
    pub fn plane_is_flat(&self) -> bool {
        let p = self.padding;
        self.op == Op::Conv2d
            && self.kernel == [1, 1]
            && self.stride == [1, 1]
            && [p.top, p.left, p.bottom, p.right] == [0; 4]
    }

    /// Whether each output row is computed from input rows of its own
    /// width at the same columns' offsets (a conv2d of stride 1 whose
    /// output rows are as wide as its input rows), so that the width
    /// algorithm may join its rows into runs
    /// ([`crate::algorithm::Width::joined`]).
    pub fn rows_join(&self) -> bool {
        self.op == Op::Conv2d && self.stride == [1, 1] && self.out_width() == self.width()
    }

    /// Whether each output column is computed from its own input column
    /// alone (a k×1 conv2d of stride 1 without columns of padding), so
    /// that the layer may be computed on each plane as one row, its
    /// kernel's taps a row of pixels apart ([`ValidSpec::as_rows`]).
    pub fn columns_are_flat(&self) -> bool {
        self.op == Op::Conv2d
            && self.kernel[1] == 1
            && self.stride == [1, 1]
            && self.padding.left == 0
            && self.padding.right == 0
    }

    /// The same layer on its planes cut into rows of `len` pixels: the
    /// same tensors in memory, element for element. When
    /// [`ValidSpec::plane_is_flat`], `len` may be any length that divides
    /// the pixels of a plane. When [`ValidSpec::columns_are_flat`], `len`
    /// may be a whole input plane (`H·W`): the layer is then a 1×k conv2d
    /// on one row of `H·W` pixels (and `H_out·W` outputs), its taps
    /// dilated to `dilation·W` and its padding `top·W` and `bottom·W`
    /// pixels at the row's ends — the same weights in memory, `[C_out]
    /// [C_in/groups][k][1]` read as `[C_out][C_in/groups][1][k]`. `None`
    /// otherwise.
    pub fn as_rows(&self, len: usize) -> Option<ValidSpec> {
        let pixels = self.height.checked_mul(self.width)?;
        if !self.plane_is_flat() {
            return self.as_one_row(len, pixels);
        }
        if len == 0 || !pixels.is_multiple_of(len) {
            return None;
        }
        let rows = pixels / len;
        Some(ValidSpec {
            height: rows,
            width: len,
            out_height: rows,
            out_width: len,
            ..self.clone()
        })
    }

    /// The row length that computes each plane of a k×1 layer (`k` > 1)
    /// whose columns are flat as one row ([`ValidSpec::as_rows`]): `H·W`.
    pub fn one_row_length(&self) -> Option<usize> {
        let len = self.height.checked_mul(self.width)?;
        (self.kernel[0] > 1 && self.as_rows(len).is_some()).then_some(len)
    }

    /// The one-row form of a layer whose columns are flat (see
    /// [`ValidSpec::as_rows`]), for `len` the `pixels` of a plane.
    fn as_one_row(&self, len: usize, pixels: usize) -> Option<ValidSpec> {
        if !self.columns_are_flat() || len != pixels || self.height == 1 {
            return None;
        }
        let w = self.width;
        Some(ValidSpec {
            height: 1,
            width: pixels,
            out_height: 1,
            out_width: self.out_height.checked_mul(w)?,
            kernel: [1, self.kernel[0]],
            dilation: [1, self.dilation[0].checked_mul(w)?],
            padding: Padding {
                top: 0,
                left: self.padding.top.checked_mul(w)?,
                bottom: 0,
                right: self.padding.bottom.checked_mul(w)?,
            },
            ..self.clone()
        })
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
