//! The ops: what one step of a prepared network computes, per kind of
//! node. Convs and blocks run through what their engine prepared; the
//! plain layers (a BatchNorm that did not fold, an activation, an add,
//! the pools) are loops over the tensor here, with PyTorch's semantics.

use super::infer::{BinaryOp, Func, Pad, Pool, Shuffle, Upsample};
use super::model::{ShuffleOrder, UpsampleMode};
use super::weights::DscParams;
use crate::blocks::{BatchNorm, PreparedDsc, Training};
use crate::engine::Prepared;
use crate::error::Result;
use crate::spec::Activation;

/// What one step executes.
pub(crate) enum Exec {
    /// A conv or linear layer (its folded layers included), or an ACNet
    /// block's deploy conv.
    Conv(Box<dyn Prepared>),
    /// A depthwise-separable block on the JIT, fused or as two kernels.
    Dsc(Box<PreparedDsc>),
    /// A conv or a block that adds its second operand (a residual): in
    /// its kernel's epilogue ([`crate::Epilogue::Sum`]: the operand is
    /// copied into the output first), or, for a fused depthwise-separable
    /// kernel (which has no sum epilogue), once it has run.
    Residual {
        step: Box<Exec>,
        adds: Adds,
    },
    /// A depthwise-separable block as written, on the reference engine.
    DscReference(Box<DscParams>),
    /// An ACNet block's three branches.
    AcTraining(Training),
    BatchNorm(BatchNorm),
    Activation(Activation),
    /// The sum of the input and a second operand, then the activation.
    Add(Activation),
    MaxPool(Pool),
    AvgPool {
        pool: Pool,
        count_include_pad: bool,
    },
    GlobalAvgPool,
    Upsample(Upsample),
    Pad(Pad),
    /// The input's channels in this range.
    Slice(std::ops::Range<usize>),
    /// A channel shuffle of this many groups.
    ChannelShuffle(usize),
    /// The input's elements in another shape.
    Reshape,
    /// The input's axes reordered (output axis `k`, input axis `dims[k]`).
    Permute([usize; 4]),
    /// `x · weight + bias`, each one value or one per channel, either
    /// left out.
    Affine {
        weight: Option<Vec<f32>>,
        bias: Option<Vec<f32>>,
    },
    /// Each operand's channels in turn; the operands' channel counts.
    Concat(Vec<usize>),
    Function(Func),
    /// A mul or a sub; `per_channel`: of one value per plane.
    Binary {
        op: BinaryOp,
        per_channel: bool,
    },
    /// PReLU of these slopes (one, or one per channel).
    Prelu(Vec<f32>),
    Shuffle(Shuffle),
}

/// Where a [`Exec::Residual`] step adds its residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Adds {
    /// In the kernel's epilogue, before its activation.
    InKernel,
    /// After the kernel has run (whose activation is then none).
    After,
}

impl Exec {
    /// Computes `y` from its operands `xs` — the input (of `shape`)
    /// first, then an add's, a mul's or a sub's `with`, or a concat's
    /// others.
    pub(crate) fn run(&self, xs: &[&[f32]], y: &mut [f32], shape: [usize; 4]) -> Result<()> {
        let (x, with) = (xs[0], xs.get(1).copied());
        match self {
            Exec::Conv(layer) => layer.run(x, y),
            Exec::Dsc(block) => block.run(x, y),
            Exec::Residual { step, adds } => {
                let residual = with.expect("a residual step has its operand");
                match adds {
                    Adds::InKernel => {
                        y.copy_from_slice(residual);
                        step.run(&[x], y, shape)
                    }
                    Adds::After => {
                        step.run(&[x], y, shape)?;
                        Activation::None.apply_sum(y, residual);
                        Ok(())
                    }
                }
            }
            Exec::DscReference(block) => {
                y.copy_from_slice(&block.reference(x)?);
                Ok(())
            }
            Exec::AcTraining(block) => block.run(x, y),
            Exec::BatchNorm(bn) => {
                y.copy_from_slice(x);
                bn.apply(y, shape)
            }
            Exec::Activation(act) => {
                elementwise(*act, y, x, None);
                Ok(())
            }
            Exec::Add(act) => {
                elementwise(*act, y, x, Some(with.expect("an add has its operand")));
                Ok(())
            }
            Exec::MaxPool(pool) => max_pool(pool, x, shape, y),
            Exec::AvgPool { pool, count_include_pad } => {
                avg_pool(pool, *count_include_pad, x, shape, y)
            }
            Exec::Upsample(up) => {
                match up.mode {
                    UpsampleMode::Nearest => nearest(up.factor, x, shape, y),
                    UpsampleMode::Bilinear => bilinear(up, x, shape, y),
                }
                Ok(())
            }
            Exec::Slice(channels) => {
                let plane = shape[2] * shape[3];
                let (from, to) = (channels.start * plane, channels.end * plane);
                for (x, y) in x.chunks(shape[1] * plane).zip(y.chunks_mut(to - from)) {
                    y.copy_from_slice(&x[from..to]);
                }
                Ok(())
            }
            Exec::ChannelShuffle(groups) => {
                // Output channel k·g + j is input channel j·(C/g) + k.
                let plane = shape[2] * shape[3];
                let per = shape[1] / groups;
                for (x, y) in x.chunks(shape[1] * plane).zip(y.chunks_mut(shape[1] * plane)) {
                    for (o, out) in y.chunks_mut(plane).enumerate() {
                        let i = (o % groups) * per + o / groups;
                        out.copy_from_slice(&x[i * plane..(i + 1) * plane]);
                    }
                }
                Ok(())
            }
            Exec::Reshape => {
                y.copy_from_slice(x);
                Ok(())
            }
            Exec::Permute(dims) => {
                permute(x, shape, *dims, y);
                Ok(())
            }
            Exec::Pad(pad) => {
                constant_pad(pad, x, shape, y);
                Ok(())
            }
            Exec::Affine { weight, bias } => {
                affine(weight.as_deref(), bias.as_deref(), x, shape, y);
                Ok(())
            }
            Exec::GlobalAvgPool => {
                global_avg_pool(x, shape, y);
                Ok(())
            }
            Exec::Function(f) => {
                match *f {
                    Func::Sigmoid => map(y, x, sigmoid),
                    Func::Tanh => map(y, x, f32::tanh),
                    Func::HardSwish => map(y, x, |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0),
                    Func::Silu => map(y, x, |x| x * sigmoid(x)),
                    Func::HardSigmoid { alpha, beta } => {
                        map(y, x, |x| (alpha * x + beta).clamp(0.0, 1.0))
                    }
                }
                Ok(())
            }
            Exec::Binary { op, per_channel: false } => {
                let with = with.expect("a binary layer has its operand");
                let pairs = y.iter_mut().zip(x).zip(with);
                match op {
                    BinaryOp::Mul => pairs.for_each(|((y, &a), &b)| *y = a * b),
                    BinaryOp::Sub => pairs.for_each(|((y, &a), &b)| *y = a - b),
                }
                Ok(())
            }
            Exec::Binary { op, per_channel: true } => {
                let with = with.expect("a binary layer has its operand");
                let plane = shape[2] * shape[3];
                for ((y, x), &b) in y.chunks_mut(plane).zip(x.chunks(plane)).zip(with) {
                    let pairs = y.iter_mut().zip(x);
                    match op {
                        BinaryOp::Mul => pairs.for_each(|(y, &a)| *y = a * b),
                        BinaryOp::Sub => pairs.for_each(|(y, &a)| *y = a - b),
                    }
                }
                Ok(())
            }
            Exec::Prelu(slopes) => {
                let plane = shape[2] * shape[3];
                for (k, (y, x)) in y.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
                    let a = slopes[if slopes.len() == 1 { 0 } else { k % shape[1] }];
                    // PyTorch's `x > 0 ? x : a · x`.
                    y.iter_mut().zip(x).for_each(|(y, &x)| *y = if x > 0.0 { x } else { a * x });
                }
                Ok(())
            }
            Exec::Shuffle(shuffle) => {
                pixel_shuffle(shuffle, x, shape, y);
                Ok(())
            }
            Exec::Concat(channels) => {
                // Per batch item, each operand's planes in turn.
                let plane = shape[2] * shape[3];
                let mut out = y.chunks_mut(channels.iter().sum::<usize>() * plane);
                for n in 0..shape[0] {
                    let y = out.next().expect("the output holds every batch item");
                    let mut at = 0;
                    for (x, &c) in xs.iter().zip(channels) {
                        let len = c * plane;
                        y[at..at + len].copy_from_slice(&x[n * len..(n + 1) * len]);
                        at += len;
                    }
                }
                Ok(())
            }
        }
    }
}

impl DscParams {
    /// The layer's output on `x` through the reference interpreter, as
    /// written: each conv, then its BatchNorm, then its activation.
    pub(crate) fn reference(&self, x: &[f32]) -> Result<Vec<f32>> {
        let mut y = crate::alloc::copied(x, "the layer's input")?;
        for (conv, bn, act) in &self.stages {
            y = conv.reference(&y)?;
            if let Some(bn) = bn {
                bn.apply(&mut y, conv.spec().output_shape())?;
            }
            y.iter_mut().for_each(|v| *v = act.apply_f32(*v));
        }
        Ok(y)
    }
}

/// `y`, of axes `dims` of `x` (of `shape`): output element `[i0, i1, i2,
/// i3]` is the input's whose axis `dims[k]` is at `ik`.
fn permute(x: &[f32], shape: [usize; 4], dims: [usize; 4], y: &mut [f32]) {
    let strides = [shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1];
    let (extent, step) = (dims.map(|d| shape[d]), dims.map(|d| strides[d]));
    let mut out = y.iter_mut();
    for a in 0..extent[0] {
        for b in 0..extent[1] {
            for c in 0..extent[2] {
                let row = a * step[0] + b * step[1] + c * step[2];
                for (d, y) in (0..extent[3]).zip(out.by_ref()) {
                    *y = x[row + d * step[3]];
                }
            }
        }
    }
}

/// `y = act(x)`, or `y = act(x + with)`: [`Activation::apply_f32`] for
/// each element, written once per activation in f32 (which rounds the same)
/// so that each loop compiles to vector code.
fn elementwise(act: Activation, y: &mut [f32], x: &[f32], with: Option<&[f32]>) {
    fn each(f: impl Fn(f32) -> f32, y: &mut [f32], x: &[f32], with: Option<&[f32]>) {
        match with {
            None => y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x)),
            Some(w) => y.iter_mut().zip(x).zip(w).for_each(|((y, &a), &b)| *y = f(a + b)),
        }
    }
    match act {
        Activation::None => each(|v| v, y, x, with),
        // Comparisons that leave NaN as it is, as `apply_f32` does.
        Activation::Relu => each(|v| if v < 0.0 { 0.0 } else { v }, y, x, with),
        Activation::Relu6 => each(|v| v.clamp(0.0, 6.0), y, x, with),
        Activation::LeakyRelu { negative_slope: s } => {
            each(|v| if v < 0.0 { s * v } else { v }, y, x, with)
        }
    }
}

/// `y = f(x)`, element by element (generic, so `f` is inlined): the loop
/// compiled for the host's widest vectors (AVX-512, AVX2, else the
/// baseline's SSE2), chosen when it runs. The copies round alike: Rust
/// contracts no multiply and add into an FMA.
fn map(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the host has AVX-512 F, checked above.
            return unsafe { map_avx512(y, x, f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the host has AVX2, checked above.
            return unsafe { map_avx2(y, x, f) };
        }
    }
    map_plain(y, x, f)
}

#[inline(always)]
fn map_plain(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
    y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn map_avx512(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
    map_plain(y, x, f)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn map_avx2(y: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
    map_plain(y, x, f)
}

/// The logistic function `1 / (1 + e^−x)`, in f32: 0 and 1 at the ends,
/// NaN for NaN; through [`exp`], so that a loop of it is vector code.
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// `e^x` in f32 without a call, so that loops of it vectorise. With
/// `x = n·ln 2 + r` and `|r| ≤ ln 2 / 2`: `e^r` by Cephes' `expf`
/// polynomial (within 2 ulp of the exact value), `2^n` built in the
/// exponent bits in two halves (so that results down in the subnormals
/// are made too). ∞ past the largest f32, 0 below the smallest
/// subnormal, NaN for NaN; branch free, each case a select.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const HIGH: f32 = 88.722_84; // ln(f32::MAX)
    const LOW: f32 = -103.972_08; // ln of the smallest subnormal / 2
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5·2^23 shift (no call to `round`).
    const SHIFT: f32 = 12_582_912.0;
    let v = x.clamp(LOW, HIGH);
    let shifted = v * std::f32::consts::LOG2_E + SHIFT;
    let n = shifted - SHIFT;
    let r = v - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e = p * r * r + r + 1.0;
    // n as an integer: the low bits of the shifted sum (no float-to-int
    // conversion, which does not vectorise); NaN gives some n, and NaN.
    let n = shifted.to_bits() as i32 - SHIFT.to_bits() as i32;
    // 2^n = 2^a · 2^b, each half within the normal exponents.

    let a = n >> 1;
    let scale = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = e * scale(a) * scale(n - a);
    let y = if x > HIGH { f32::INFINITY } else { y };
    if x < LOW { 0.0 } else { y }
}

/// A pixel shuffle or unshuffle of `x` (NCHW of `shape`, the input's)
/// into `y`. Of the shuffled tensor's channel `c` and the position `(i, j)`
/// in its `r × r` block, the packed tensor's channel is `c·r² + i·r + j`
/// (`crd`) or `(i·r + j)·C + c` (`dcr`); each row of the spread tensor
/// interleaves `r` rows of the packed one.
fn pixel_shuffle(shuffle: &Shuffle, x: &[f32], shape: [usize; 4], y: &mut [f32]) {
    let r = shuffle.factor;
    // The packed side: channels of `h`×`w`; the spread side: `c` channels
    // of `(h·r)`×`(w·r)`.
    let [n, c_in, h_in, w_in] = shape;
    let (c, h, w) = match shuffle.up {
        true => (c_in / (r * r), h_in, w_in),
        false => (c_in, h_in / r, w_in / r),
    };
    let packed_channel = |c_out: usize, i: usize, j: usize| match shuffle.order {
        ShuffleOrder::Crd => c_out * r * r + i * r + j,
        ShuffleOrder::Dcr => (i * r + j) * c + c_out,
    };
    let (plane, item) = (h * w, c * r * r * h * w);
    for b in 0..n {
        for c_out in 0..c {
            for i in 0..r {
                for j in 0..r {
                    let packed = b * item + packed_channel(c_out, i, j) * plane;
                    let spread = b * item + c_out * r * r * plane;
                    for row in 0..h {
                        let at = |col: usize| spread + ((row * r + i) * w + col) * r + j;
                        let from = packed + row * w;
                        for col in 0..w {
                            if shuffle.up {
                                y[at(col)] = x[from + col];
                            } else {
                                y[from + col] = x[at(col)];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The mean of each plane of `x` (NCHW of `shape`) into `y`, summed in
/// f64.
fn global_avg_pool(x: &[f32], shape: [usize; 4], y: &mut [f32]) {
    let plane = shape[2] * shape[3];
    for (y, x) in y.iter_mut().zip(x.chunks(plane)) {
        // Eight partial sums (vector code), then theirs.
        let mut sums = [0.0f64; 8];
        let chunks = x.chunks_exact(8);
        let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
        for chunk in chunks {
            sums.iter_mut().zip(chunk).for_each(|(s, &v)| *s += f64::from(v));
        }
        *y = ((sums.iter().sum::<f64>() + tail) / plane as f64) as f32;
    }
}

/// The input rows (`axis` 0) or columns (1) of each of a pool's `count`
/// windows on an axis of `size`, inside the input (never empty: the
/// padding is at most half the window).
fn windows(pool: &Pool, axis: usize, size: usize, count: usize) -> Vec<std::ops::Range<usize>> {
    let (kernel, stride, pad) = (pool.kernel[axis], pool.stride[axis], pool.padding[axis]);
    (0..count)
        .map(|o| {
            let start = (o * stride) as isize - pad as isize;
            let end = (start + kernel as isize).min(size as isize) as usize;
            start.max(0) as usize..end
        })
        .collect()
}

/// Average pooling of `x` (NCHW of `shape`) into `y`, as PyTorch's
/// `avg_pool2d` (`ceil_mode` false): each output the sum of its window's
/// inputs over the window's size, or over the inputs it holds when
/// `count_include_pad` is false (the padding adds zeros). Separable: each
/// input row's sums over the column windows, then per output row the sums
/// of its window's rows.
fn avg_pool(
    pool: &Pool,
    count_include_pad: bool,
    x: &[f32],
    shape: [usize; 4],
    y: &mut [f32],
) -> Result<()> {
    let [_, _, h, w] = shape;
    let [.., out_h, out_w] = pool.output(shape);
    let (rows, cols) = (windows(pool, 0, h, out_h), windows(pool, 1, w, out_w));
    let mut sums = crate::alloc::filled(h * out_w, 0.0f32, "the pool's row sums")?;
    let whole = (pool.kernel[0] * pool.kernel[1]) as f32;
    for (x, y) in x.chunks(h * w).zip(y.chunks_mut(out_h * out_w)) {
        for (row, s) in x.chunks(w).zip(sums.chunks_mut(out_w)) {
            for (s, window) in s.iter_mut().zip(&cols) {
                *s = row[window.clone()].iter().sum();
            }
        }
        for (window, out) in rows.iter().zip(y.chunks_mut(out_w)) {
            out.fill(0.0);
            for s in sums.chunks(out_w).skip(window.start).take(window.len()) {
                out.iter_mut().zip(s).for_each(|(o, &v)| *o += v);
            }
            for (o, col) in out.iter_mut().zip(&cols) {
                let count =
                    if count_include_pad { whole } else { (window.len() * col.len()) as f32 };
                *o /= count;
            }
        }
    }
    Ok(())
}

/// Nearest upsampling by whole `factor`s of `x` (NCHW of `shape`) into
/// `y`: output pixel `(i, j)` is input pixel `(i / fh, j / fw)`. Each
/// input row is widened once, then copied to its `fh` output rows.
fn nearest(factor: [usize; 2], x: &[f32], shape: [usize; 4], y: &mut [f32]) {
    let [fh, fw] = factor;
    let w = shape[3];
    let out_w = w * fw;
    for (row, out) in x.chunks(w).zip(y.chunks_mut(out_w * fh)) {
        let (first, rest) = out.split_at_mut(out_w);
        for (o, &v) in first.chunks_mut(fw).zip(row) {
            o.fill(v);
        }
        for copy in rest.chunks_mut(out_w) {
            copy.copy_from_slice(first);
        }
    }
}

/// One axis of a bilinear upsampling from `size` to `out` pixels, as
/// PyTorch's `upsample_bilinear2d` computes it (in f32): for each output
/// pixel, the two input pixels it lies between and their weights.
fn bilinear_axis(size: usize, out: usize, align_corners: bool) -> Vec<(usize, usize, f32, f32)> {
    let scale = match (align_corners, out > 1) {
        (true, true) => (size - 1) as f32 / (out - 1) as f32,
        (true, false) => 0.0,
        (false, _) => size as f32 / out as f32,
    };
    (0..out)
        .map(|o| {
            let src = if align_corners {
                scale * o as f32
            } else {
                (scale * (o as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src as usize).min(size - 1);
            let i1 = if i0 + 1 < size { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear upsampling of `x` (NCHW of `shape`) into `y`, PyTorch's
/// `upsample_bilinear2d` (`align_corners` either way).
fn bilinear(up: &Upsample, x: &[f32], shape: [usize; 4], y: &mut [f32]) {
    let [_, _, h, w] = shape;
    let (out_h, out_w) = (h * up.factor[0], w * up.factor[1]);
    let rows = bilinear_axis(h, out_h, up.align_corners);
    let cols = bilinear_axis(w, out_w, up.align_corners);
    for (x, y) in x.chunks(h * w).zip(y.chunks_mut(out_h * out_w)) {
        for (&(r0, r1, a0, a1), out) in rows.iter().zip(y.chunks_mut(out_w)) {
            let (top, bottom) = (&x[r0 * w..][..w], &x[r1 * w..][..w]);
            for (o, &(c0, c1, b0, b1)) in out.iter_mut().zip(&cols) {
                *o = a0 * (b0 * top[c0] + b1 * top[c1]) + a1 * (b0 * bottom[c0] + b1 * bottom[c1]);
            }
        }
    }
}

/// `x` (NCHW of `shape`) inside borders of `pad.value` into `y`.
fn constant_pad(pad: &Pad, x: &[f32], shape: [usize; 4], y: &mut [f32]) {
    let [_, _, h, w] = shape;
    let [top, bottom, left, right] = pad.sides;
    let out_w = left + w + right;
    let plane = (top + h + bottom) * out_w;
    for (x, y) in x.chunks(h * w).zip(y.chunks_mut(plane)) {
        y.fill(pad.value);
        for (row, out) in x.chunks(w).zip(y[top * out_w..].chunks_mut(out_w)) {
            out[left..left + w].copy_from_slice(row);
        }
    }
}

/// `x · weight + bias` (NCHW of `shape`) into `y`, each one value or one
/// per channel: a product alone where there is no bias, a sum alone where
/// there is no weight, each rounded as its own operation.
fn affine(
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    x: &[f32],
    shape: [usize; 4],
    y: &mut [f32],
) {
    let plane = shape[2] * shape[3];
    let of = |v: &[f32], k: usize| v[if v.len() == 1 { 0 } else { k % shape[1] }];
    for (k, (y, x)) in y.chunks_mut(plane).zip(x.chunks(plane)).enumerate() {
        let pairs = y.iter_mut().zip(x);
        match (weight.map(|v| of(v, k)), bias.map(|v| of(v, k))) {
            (Some(a), Some(b)) => pairs.for_each(|(y, &x)| *y = x * a + b),
            (Some(a), None) => pairs.for_each(|(y, &x)| *y = x * a),
            (None, Some(b)) => pairs.for_each(|(y, &x)| *y = x + b),
            (None, None) => y.copy_from_slice(x),
        }
    }
}

/// Max pooling of `x` (NCHW of `shape`) into `y`: each output the largest
/// input of its window, the padding never chosen (PyTorch's −∞); NaN wins,
/// and of equal values (0 and −0) the first in row-major order, as in
/// PyTorch. Separable: each input row's maxima over the column windows
/// first — the windows inside the row one tap at a time over them all (the
/// loop the compiler vectorises), those clipped at its ends one by one —
/// then, per output row, the element-wise maxima of its window's rows
/// (contiguous, vector code), in order.
fn max_pool(pool: &Pool, x: &[f32], shape: [usize; 4], y: &mut [f32]) -> Result<()> {
    let [_, _, h, w] = shape;
    let (kernel, stride, pad) = (pool.kernel, pool.stride, pool.padding);
    let [.., out_h, out_w] = pool.output(shape);
    let (rows, cols) = (windows(pool, 0, h, out_h), windows(pool, 1, w, out_w));
    // The output columns whose window is whole: `start..`, one of at least
    // `pad` columns in; `..end`, one that ends inside the row.
    let start = pad[1].div_ceil(stride[1]).min(out_w);
    let end = match (w + pad[1]).checked_sub(kernel[1]) {
        Some(last) => (last / stride[1] + 1).clamp(start, out_w),
        None => start,
    };
    let inner = start..end;
    let inner_taps = if inner.is_empty() { 0 } else { kernel[1] };
    let larger = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    let mut maxima = crate::alloc::filled(h * out_w, f32::NEG_INFINITY, "the pool's row maxima")?;
    for (x, y) in x.chunks(h * w).zip(y.chunks_mut(out_h * out_w)) {
        for (row, m) in x.chunks(w).zip(maxima.chunks_mut(out_w)) {
            for ox in (0..inner.start).chain(inner.end..out_w) {
                m[ox] = row[cols[ox].clone()].iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
            }
            let m = &mut m[inner.clone()];
            m.fill(f32::NEG_INFINITY);
            for tap in 0..inner_taps {
                let first = inner.start * stride[1] + tap - pad[1];
                let column = row[first..].iter().step_by(stride[1]);
                m.iter_mut().zip(column).for_each(|(m, &v)| *m = larger(*m, v));
            }
        }
        for (window, out) in rows.iter().zip(y.chunks_mut(out_w)) {
            out.fill(f32::NEG_INFINITY);
            for m in maxima.chunks(out_w).skip(window.start).take(window.len()) {
                out.iter_mut().zip(m).for_each(|(o, &v)| *o = larger(*o, v));
            }
        }
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The loop compiled for the host's widest vectors gives the bits the
    /// baseline's does, for every function of `map`.
    #[test]
    fn the_vector_loops_round_as_the_plain_one() {
        let x: Vec<f32> = (0..4099).map(|i| ((i as f32) * 0.7311).sin() * 40.0).collect();
        let functions: [fn(f32) -> f32; 3] =
            [sigmoid, |x| x * sigmoid(x), |x| x * (x + 3.0).clamp(0.0, 6.0) / 6.0];
        for f in functions {
            let (mut fast, mut plain) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            map(&mut fast, &x, f);
            map_plain(&mut plain, &x, f);
            assert!(fast.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }

    /// The vector `exp` is within 2 ulp of the exact value (f64's, rounded)
    /// over the whole range, subnormal results within their absolute
    /// spacing; ∞, 0 and NaN at the ends; sigmoid within 3 ulp.
    #[test]
    fn exp_and_sigmoid_are_within_a_few_ulp() {
        let ulps = |a: f32, b: f32| (a.to_bits() as i64 - b.to_bits() as i64).abs();
        let mut x = -110.0f32;
        while x < 90.0 {
            let want = f64::from(x).exp() as f32;
            let got = exp(x);
            if want.is_infinite() {
                assert_eq!(got, want, "exp({x})");
            } else if want.is_normal() {
                assert!(ulps(got, want) <= 2, "exp({x}) = {got}, exact {want}");
            } else {
                assert!(
                    (got - want).abs() <= 2.0 * f32::from_bits(1),
                    "exp({x}) = {got}, exact {want}"
                );
            }
            let want = (1.0 / (1.0 + (-f64::from(x)).exp())) as f32;
            let got = sigmoid(x);
            assert!(
                ulps(got, want) <= 3 || (got - want).abs() <= f32::MIN_POSITIVE,
                "sigmoid({x}) = {got}, exact {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan() && sigmoid(f32::NAN).is_nan());
        assert_eq!((sigmoid(f32::INFINITY), sigmoid(f32::NEG_INFINITY)), (1.0, 0.0));
        assert_eq!(exp(0.0), 1.0);
    }

    /// The elementwise loops give exactly [`Activation::apply_f32`], of
    /// `x` and of `x + with`, on the values where activations differ:
    /// signed zeros, NaN, infinities, subnormals, the bounds of ReLU6.
    #[test]
    fn elementwise_loops_round_as_apply_f32() {
        let values = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            6.0,
            6.5,
            -6.5,
            1e-40,
            -1e-40,
            3.4e38,
            -3.4e38,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.1,
            -0.3,
        ];
        let with: Vec<f32> = values.iter().rev().copied().collect();
        let activations = [
            Activation::None,
            Activation::Relu,
            Activation::Relu6,
            Activation::LeakyRelu { negative_slope: 0.01 },
            Activation::LeakyRelu { negative_slope: -3.0 },
        ];
        for act in activations {
            for other in [None, Some(&with[..])] {
                let mut y = vec![0.0; values.len()];
                elementwise(act, &mut y, &values, other);
                for (i, &got) in y.iter().enumerate() {
                    let v = other.map_or(values[i], |w| values[i] + w[i]);
                    let want = act.apply_f32(v);
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "{act} of {v}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
