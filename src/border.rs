//! Non-finite weights over padding.
//!
//! convjit's semantics, like oneDNN's (PyTorch's default CPU path): a tap
//! that meets the padding, or for conv_transpose2d no input pixel, is not
//! multiplied at all; an output is the bias plus the products of real input
//! pixels and their weights. The reference and the naive engine compute
//! exactly that. Engines that multiply the zeros of a padded copy — the JIT,
//! and im2col's conv2d — agree with it while every weight is finite
//! (`0 · w = 0`), but a weight of ±∞ or NaN makes `0 · w` NaN. So when a
//! layer's weights hold one, such an engine recomputes, after its own run,
//! the outputs some tap of which meets the padding, in the output channels
//! with a non-finite weight, tap by tap as the naive loop does. Finite
//! weights, the common case, cost nothing: [`Border::new`] returns `None`.

use crate::error::Result;
use crate::spec::{Op, ValidSpec};

/// What an engine needs to redo the outputs of non-finite weights that
/// meet padding.
#[derive(Clone, Debug)]
pub(crate) struct Border {
    spec: ValidSpec,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// Output channels with a non-finite weight.
    channels: Vec<usize>,
    /// Output rows some tap of which may meet the padding: `[0, a)` and
    /// `[b, out)`; every other row's taps all meet real pixels.
    rows: [usize; 2],
    /// The same for the columns.
    cols: [usize; 2],
}

impl Border {
    /// The border work of `spec` with these weights (PyTorch's layout), or
    /// `None` when every weight is finite or no tap meets padding. It keeps
    /// a copy of the weights, allocated fallibly.
    pub(crate) fn new(
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Option<Border>> {
        let taps = spec.kernel()[0] * spec.kernel()[1];
        let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
        let channels: Vec<usize> = (0..spec.out_channels())
            .filter(|&oc| {
                let (g, ocg) = (oc / cog, oc % cog);
                (0..cig).any(|icg| {
                    let first = match spec.op() {
                        // [C_out, C_in/g, kh, kw]
                        Op::Conv2d => (oc * cig + icg) * taps,
                        // [C_in, C_out/g, kh, kw]
                        Op::ConvTranspose2d => ((g * cig + icg) * cog + ocg) * taps,
                    };
                    weight[first..first + taps].iter().any(|v| !v.is_finite())
                })
            })
            .collect();
        if channels.is_empty() {
            return Ok(None);
        }
        let rows = border(spec, 0);
        let cols = border(spec, 1);
        let [oh, ow] = [spec.out_height(), spec.out_width()];
        if rows == [0, oh] && cols == [0, ow] {
            return Ok(None); // no tap meets padding anywhere
        }
        Ok(Some(Border {
            spec: spec.clone(),
            weight: crate::alloc::copied(weight, "the weights kept for the border outputs")?,
            bias: bias.map(<[f32]>::to_vec),
            channels,
            rows,
            cols,
        }))
    }

    /// Recomputes, in `y`, every output of the flagged channels that lies
    /// in a border row or column, from the input `x` (the engine's own run
    /// has written `y`; both lengths were checked). With the sum epilogue,
    /// `previous` holds what those outputs held before the run
    /// ([`Border::outputs`]), added before the activation.
    pub(crate) fn apply(&self, x: &[f32], y: &mut [f32], previous: Option<&[f32]>) {
        let s = &self.spec;
        let bias = self.bias.as_deref();
        for (k, at) in self.positions().enumerate() {
            let sum = exact_sum(s, &self.weight, bias, x, at);
            let sum = previous.map_or(sum, |p| sum + p[k]);
            y[self.index(at)] = s.activation().apply_f32(sum);
        }
    }

    /// The values `y` holds at the outputs [`Border::apply`] recomputes, in
    /// its order: what a sum epilogue adds to them.
    pub(crate) fn outputs(&self, y: &[f32]) -> Result<Vec<f32>> {
        let mut kept = crate::alloc::zeroed_f32(self.positions().count(), "the border's outputs")?;
        for (slot, at) in kept.iter_mut().zip(self.positions()) {
            *slot = y[self.index(at)];
        }
        Ok(kept)
    }

    /// The outputs of the flagged channels that lie in a border row or
    /// column, `[image, channel, row, column]`.
    fn positions(&self) -> impl Iterator<Item = [usize; 4]> + '_ {
        let [batch, _, oh, ow] = self.spec.output_shape();
        let inside = |o: usize, [a, b]: [usize; 2]| o >= a && o < b;
        (0..batch).flat_map(move |n| {
            self.channels.iter().flat_map(move |&oc| {
                (0..oh).flat_map(move |oy| {
                    (0..ow)
                        .filter(move |&ox| !(inside(oy, self.rows) && inside(ox, self.cols)))
                        .map(move |ox| [n, oc, oy, ox])
                })
            })
        })
    }

    /// The NCHW index of output `[image, channel, row, column]`.
    fn index(&self, [n, oc, oy, ox]: [usize; 4]) -> usize {
        let [_, c_out, oh, ow] = self.spec.output_shape();
        ((n * c_out + oc) * oh + oy) * ow + ox
    }
}

/// Output `[image, channel, row, column]` of `spec` from its real taps
/// only, summed in f32 tap by tap as the naive loop does: how engines
/// whose own computation leaves an output non-finite where this one may
/// not (a padded copy's zeros times an infinite weight; a Winograd tile
/// that a non-finite input spreads over) recompute it.
pub(crate) fn exact(
    s: &ValidSpec,
    weight: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    at: [usize; 4],
) -> f32 {
    s.activation().apply_f32(exact_sum(s, weight, bias, x, at))
}

/// [`exact`] before the activation.
fn exact_sum(
    s: &ValidSpec,
    weight: &[f32],
    bias: Option<&[f32]>,
    x: &[f32],
    [n, oc, oy, ox]: [usize; 4],
) -> f32 {
    let [_, c_in, h, wd] = s.input_shape();
    let [kh, kw] = s.kernel();
    let (cig, cog) = (s.in_per_group(), s.out_per_group());
    let (g, ocg) = (oc / cog, oc % cog);
    let p = s.padding();
    let (pad, stride, dilation) = ([p.top, p.left], s.stride(), s.dilation());
    let mut sum = bias.map_or(0.0, |b| b[oc]);
    for icg in 0..cig {
        let ic = g * cig + icg;
        for i in 0..kh {
            let Some(iy) = source(s.op(), oy, i, stride[0], dilation[0], pad[0], h) else {
                continue;
            };
            for j in 0..kw {
                let Some(ix) = source(s.op(), ox, j, stride[1], dilation[1], pad[1], wd) else {
                    continue;
                };
                let w = match s.op() {
                    Op::Conv2d => weight[((oc * cig + icg) * kh + i) * kw + j],
                    Op::ConvTranspose2d => weight[((ic * cog + ocg) * kh + i) * kw + j],
                };
                sum += x[((n * c_in + ic) * h + iy) * wd + ix] * w;
            }
        }
    }
    sum
}

/// The input position that output `o` reads through tap `k` along one
/// axis, if there is a real one: conv2d's `o·s + k·d − p`, conv_transpose2d's
/// `t` with `t·s + k·d − p = o`.
fn source(op: Op, o: usize, k: usize, s: usize, d: usize, p: usize, len: usize) -> Option<usize> {
    let (o, k, s, d, p) = (o as i64, k as i64, s as i64, d as i64, p as i64);
    let t = match op {
        Op::Conv2d => o * s + k * d - p,
        Op::ConvTranspose2d => {
            let num = o + p - k * d;
            if num.rem_euclid(s) != 0 {
                return None;
            }
            num.div_euclid(s)
        }
    };
    (0..len as i64).contains(&t).then_some(t as usize)
}

/// The border of one axis (0 rows, 1 columns) as `[a, b]`: the outputs
/// below `a` and from `b` on may have a tap outside the input; those in
/// between have none.
fn border(spec: &ValidSpec, axis: usize) -> [usize; 2] {
    let p = spec.padding();
    let pad = [p.top, p.left][axis] as i64;
    let (s, d, k) =
        (spec.stride()[axis] as i64, spec.dilation()[axis] as i64, spec.kernel()[axis] as i64);
    let (len, out) = match axis {
        0 => (spec.height() as i64, spec.out_height() as i64),
        _ => (spec.width() as i64, spec.out_width() as i64),
    };
    let (a, b) = match spec.op() {
        // Tap 0 is before the input while o·s < p; the last tap is past it
        // once o·s − p + (k − 1)·d ≥ len.
        Op::Conv2d => {
            ((pad + s - 1).div_euclid(s), (len + pad - (k - 1) * d + s - 1).div_euclid(s))
        }
        // Tap i reads t = (o + p − i·d) / s: below 0 while o < i·d − p (at
        // worst the last tap), at n or more once o ≥ n·s + i·d − p (at
        // worst tap 0).
        Op::ConvTranspose2d => ((k - 1) * d - pad, len * s - pad),
    };
    let clamp = |v: i64| v.clamp(0, out) as usize;
    let (a, b) = (clamp(a), clamp(b));
    [a, b.max(a)]
}
