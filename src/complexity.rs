//! Complexity of a layer (DESIGN.md, contract 4): MACs under three
//! conventions, FLOPs, parameters and MACs per input pixel.
//!
//! `docs/complexity.md` states each convention and its source.

use serde::Serialize;

use crate::spec::{Op, ValidSpec};

/// The complexity report of one layer. Every count is exact (u64).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Complexity {
    /// Dense textbook count, padding taps included, no bias.
    /// conv2d: N·Cout·Hout·Wout·(Cin/g)·kh·kw; conv_transpose2d: N·Cin·H·W·(Cout/g)·kh·kw.
    pub macs: u64,
    /// Multiply-adds whose input element is real (not padding) and, for
    /// conv_transpose2d, whose product lands inside the kept output: the work
    /// a kernel must do (benchdnn's convention). MACs/cycle is reported on it.
    pub macs_valid: u64,
    /// What ptflops 0.7.5 (PyTorch backend) reports: kh·kw·Cin·(Cout/g) per
    /// position, times N·Hout·Wout (conv2d) or N·H·W (conv_transpose2d), plus
    /// N·Cout·Hout·Wout when there is a bias.
    pub macs_ptflops: u64,
    /// 2 · `macs`.
    pub flops: u64,
    /// Weights plus bias.
    pub params: u64,
    /// `macs_ptflops` / (N·H·W): the JVET NNVC convention (MACs per pixel of
    /// the input).
    pub macs_per_pixel: f64,
}

impl Complexity {
    /// The report for a spec.
    pub fn of(spec: &ValidSpec) -> Complexity {
        let u = |v: usize| v as u64;
        let n = u(spec.batch());
        let [kh, kw] = spec.kernel();
        let taps = u(kh * kw);
        let (cin, cout) = (u(spec.in_channels()), u(spec.out_channels()));
        let (cig, cog) = (u(spec.in_per_group()), u(spec.out_per_group()));
        let in_pixels = u(spec.height() * spec.width());
        let out_pixels = u(spec.out_height() * spec.out_width());
        let per_position = taps * cin * cog;
        let bias_macs = if spec.has_bias() { n * cout * out_pixels } else { 0 };

        let (macs, positions) = match spec.op() {
            Op::Conv2d => (n * cout * out_pixels * cig * taps, n * out_pixels),
            Op::ConvTranspose2d => (n * cin * in_pixels * cog * taps, n * in_pixels),
        };
        let macs_ptflops = per_position * positions + bias_macs;
        let [vh, vw] = valid_tap_counts(spec);
        let macs_valid = match spec.op() {
            Op::Conv2d => n * cout * cig * vh * vw,
            Op::ConvTranspose2d => n * cin * cog * vh * vw,
        };
        let weights = u(spec.weight_len());
        Complexity {
            macs,
            macs_valid,
            macs_ptflops,
            flops: 2 * macs,
            params: weights + if spec.has_bias() { cout } else { 0 },
            macs_per_pixel: macs_ptflops as f64 / (n * in_pixels) as f64,
        }
    }
}

/// Per axis, the number of (position, tap) pairs that touch a real input
/// element (conv2d) or land inside the output (conv_transpose2d). A tap is
/// valid when both its row and its column are, so the 2-D count is the
/// product of the two.
fn valid_tap_counts(spec: &ValidSpec) -> [u64; 2] {
    let p = spec.padding();
    let axes = [
        (spec.kernel()[0], spec.stride()[0], spec.dilation()[0], p.top),
        (spec.kernel()[1], spec.stride()[1], spec.dilation()[1], p.left),
    ];
    let (positions, limits) = match spec.op() {
        // Positions are output pixels; the tap must read inside the input.
        Op::Conv2d => ([spec.out_height(), spec.out_width()], [spec.height(), spec.width()]),
        // Positions are input pixels; the product must land inside the output.
        Op::ConvTranspose2d => {
            ([spec.height(), spec.width()], [spec.out_height(), spec.out_width()])
        }
    };
    let mut counts = [0u64; 2];
    for (axis, &(k, s, d, pad)) in axes.iter().enumerate() {
        let (k, d, limit) = (k as i64, d as i64, limits[axis] as i64);
        counts[axis] = (0..positions[axis] as i64)
            .map(|pos| {
                // Taps t in 0..k with 0 <= base + t·d < limit.
                let base = pos * s as i64 - pad as i64;
                let first = if base >= 0 { 0 } else { (-base + d - 1) / d };
                let last = if limit - 1 - base >= 0 { (limit - 1 - base) / d } else { -1 };
                (last.min(k - 1) - first + 1).max(0) as u64
            })
            .sum();
    }
    counts
}
