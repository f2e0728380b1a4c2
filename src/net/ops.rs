//! The ops: what one step of a prepared network computes, per kind of
//! node. Convs and blocks run through what their engine prepared; the
//! plain layers (a BatchNorm that did not fold, an activation, an add,
//! the pools) are loops over the tensor here, with PyTorch's semantics.

use super::infer::Pool;
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
    /// A depthwise-separable block as written, on the reference engine.
    DscReference(Box<DscParams>),
    /// An ACNet block's three branches.
    AcTraining(Training),
    BatchNorm(BatchNorm),
    Activation(Activation),
    /// The sum of the input and a second operand, then the activation.
    Add(Activation),
    MaxPool(Pool),
    GlobalAvgPool,
}

impl Exec {
    /// Computes `y` from `x` (of `shape`) and, for an add, `with`.
    pub(crate) fn run(
        &self,
        x: &[f32],
        with: Option<&[f32]>,
        y: &mut [f32],
        shape: [usize; 4],
    ) -> Result<()> {
        match self {
            Exec::Conv(layer) => layer.run(x, y),
            Exec::Dsc(block) => block.run(x, y),
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
                y.iter_mut().zip(x).for_each(|(y, &x)| *y = act.apply_f32(x));
                Ok(())
            }
            Exec::Add(activation) => {
                let with = with.expect("an add has its operand");
                for ((y, &a), &b) in y.iter_mut().zip(x).zip(with) {
                    *y = activation.apply_f32(a + b);
                }
                Ok(())
            }
            Exec::MaxPool(pool) => max_pool(pool, x, shape, y),
            Exec::GlobalAvgPool => {
                global_avg_pool(x, shape, y);
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

/// The mean of each plane of `x` (NCHW of `shape`) into `y`, summed in
/// f64.
fn global_avg_pool(x: &[f32], shape: [usize; 4], y: &mut [f32]) {
    let plane = shape[2] * shape[3];
    for (y, x) in y.iter_mut().zip(x.chunks(plane)) {
        *y = (x.iter().map(|&v| f64::from(v)).sum::<f64>() / plane as f64) as f32;
    }
}

/// Max pooling of `x` (NCHW of `shape`) into `y`: each output the largest
/// input of its window, the padding never chosen (PyTorch's −∞); NaN wins,
/// as in PyTorch. Separable: each input row's maxima over the column
/// windows first, then the maxima of those over the row windows.
fn max_pool(pool: &Pool, x: &[f32], shape: [usize; 4], y: &mut [f32]) -> Result<()> {
    let [_, _, h, w] = shape;
    let (kernel, stride, pad) = (pool.kernel, pool.stride, pool.padding);
    let out_w = (w + 2 * pad[1] - kernel[1]) / stride[1] + 1;
    let out_h = (h + 2 * pad[0] - kernel[0]) / stride[0] + 1;
    // The input rows or columns of window `o` on an axis, inside the input.
    let window = |o: usize, axis: usize, size: usize| {
        let start = (o * stride[axis]) as isize - pad[axis] as isize;
        let end = (start + kernel[axis] as isize).min(size as isize) as usize;
        start.max(0) as usize..end
    };
    let larger = |m: f32, v: f32| if v > m || v.is_nan() { v } else { m };
    let mut rows = crate::alloc::filled(h * out_w, f32::NEG_INFINITY, "the pool's row maxima")?;
    for (x, y) in x.chunks(h * w).zip(y.chunks_mut(out_h * out_w)) {
        for (row, maxima) in x.chunks(w).zip(rows.chunks_mut(out_w)) {
            for (ox, m) in maxima.iter_mut().enumerate() {
                *m = row[window(ox, 1, w)].iter().fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
            }
        }
        for (oy, out) in y.chunks_mut(out_w).enumerate() {
            out.fill(f32::NEG_INFINITY);
            for maxima in
                rows.chunks(out_w).skip(window(oy, 0, h).start).take(window(oy, 0, h).len())
            {
                out.iter_mut().zip(maxima).for_each(|(o, &v)| *o = larger(*o, v));
            }
        }
    }
    Ok(())
}
