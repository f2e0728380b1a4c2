//! ACNet's asymmetric convolution block (Ding et al., ICCV 2019).
//!
//! Trained as three branches on the same input, summed: a k×k conv, a k×1
//! (vertical) and a 1×k (horizontal) conv, each with the block's stride,
//! dilation and groups, no bias, and its own BatchNorm. The k×1 kernel
//! lines up with the centre column of the k×k one and the 1×k with its
//! centre row, so at deploy time the three fold into one k×k conv: fold
//! each BatchNorm into its conv, add the k×1 kernel into the centre column
//! and the 1×k into the centre row, and sum the biases.
//!
//! Lining up takes padding. The centre column sits `(k / 2) · d` columns
//! into the window, so the vertical conv pads its columns by `p − (k/2)·d`
//! instead of `p`; when that is negative (padding smaller than k / 2) it
//! pads none and *crops* that many columns from each side of its input
//! instead. ACNet's reference code (`CropLayer`) does this for padding 0
//! (it asserts that the row padding it keeps is 0, so k = 5 with padding 1
//! is not in it); convjit generalises it to any padding below k / 2, and
//! to dilation (the centre is `(k/2)·d` in). The horizontal branch does
//! the same to rows.

use super::{BatchNorm, Conv, with_bias};
use crate::alloc;
use crate::engine::{Engine, Prepared};
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::spec::{Activation, Op, PaddingSpec, Pair, ValidSpec};

/// One branch's conv weights (PyTorch layout, no bias) and its BatchNorm.
#[derive(Clone, Debug)]
pub struct Branch {
    /// `[C_out, C_in/g, kh, kw]` for the branch's kernel shape.
    pub weight: Vec<f32>,
    /// The BatchNorm after the conv.
    pub bn: BatchNorm,
}

/// Rows and columns a branch removes from each side of its input before
/// its conv.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Crop {
    /// Rows removed at the top and at the bottom.
    pub rows: usize,
    /// Columns removed at the left and at the right.
    pub cols: usize,
}

/// The block in its training form.
#[derive(Clone, Debug)]
pub struct AcBlock {
    /// The block as one conv: the deploy form's spec.
    spec: ValidSpec,
    /// The k×k, k×1 and 1×k branches, in that order.
    branches: [Branch; 3],
}

impl AcBlock {
    /// The block that `spec` describes as one conv2d (odd square kernel,
    /// symmetric padding; stride, dilation, groups and activation as the
    /// block's; its bias flag is not used: the branches have none, the
    /// deploy form always has one), with the square, vertical and
    /// horizontal branches.
    pub fn new(
        spec: &ValidSpec,
        square: Branch,
        vertical: Branch,
        horizontal: Branch,
    ) -> Result<AcBlock> {
        check_shape(spec)?;
        let block =
            AcBlock { spec: with_bias(spec, true)?, branches: [square, vertical, horizontal] };
        for ((branch, (bspec, _)), name) in block.branches.iter().zip(block.branch_specs()?).zip([
            "square",
            "vertical",
            "horizontal",
        ]) {
            bspec
                .check_operands(bspec.input_len(), branch.weight.len(), None)
                .map_err(|e| Error::Block(format!("acblock: {name} branch: {e}")))?;
            if branch.bn.channels() != spec.out_channels() {
                return Err(Error::Block(format!(
                    "acblock: {name} branch: batchnorm of {} channels for {} output channels",
                    branch.bn.channels(),
                    spec.out_channels()
                )));
            }
        }
        Ok(block)
    }

    /// A block with random weights and BatchNorm statistics.
    pub fn random(spec: &ValidSpec, seed: u64) -> Result<AcBlock> {
        let mut i = 0;
        let branches = AcBlock::branch_specs_of(spec)?.map(|(s, _)| {
            i += 1;
            let conv = Conv::random(s, seed.wrapping_mul(31).wrapping_add(i))?;
            let bn = BatchNorm::random(spec.out_channels(), seed + i);
            Ok::<_, Error>(Branch { weight: conv.weight, bn })
        });
        let [square, vertical, horizontal] = branches;
        let (square, vertical, horizontal) = (square?, vertical?, horizontal?);
        AcBlock::new(spec, square, vertical, horizontal)
    }

    /// The deploy spec: the block as one k×k conv with bias.
    pub fn spec(&self) -> &ValidSpec {
        &self.spec
    }

    /// The branches: square, vertical, horizontal.
    pub fn branches(&self) -> &[Branch; 3] {
        &self.branches
    }

    /// The conv of each branch (no bias, no activation) and the crop of its
    /// input: square, vertical (k×1), horizontal (1×k).
    pub fn branch_specs(&self) -> Result<[(ValidSpec, Crop); 3]> {
        AcBlock::branch_specs_of(&self.spec)
    }

    /// The branches' convs and crops of the block that `spec` describes
    /// (see [`AcBlock::new`]), without weights: what shape inference and
    /// counting need.
    pub fn branch_specs_of(spec: &ValidSpec) -> Result<[(ValidSpec, Crop); 3]> {
        check_shape(spec)?;
        let s = spec;
        let (k, p, d) = (s.kernel()[0], s.padding(), s.dilation());
        // Padding (≥ 0) or crop (< 0) of the axis across a 1-wide kernel.
        let across = |pad: usize, dil: usize| pad as i64 - (k / 2 * dil) as i64;
        let (cols, rows) = (across(p.left, d[1]), across(p.top, d[0]));
        let branch = |kernel: [i64; 2], pad: [i64; 2], crop: Crop| -> Result<(ValidSpec, Crop)> {
            let mut c = s.to_conv_spec();
            c.name = None;
            c.kernel = Pair::Two(kernel);
            c.padding = PaddingSpec::from([pad[0].max(0), pad[1].max(0)]);
            c.height -= 2 * crop.rows as i64;
            c.width -= 2 * crop.cols as i64;
            c.bias = false;
            c.activation = crate::spec::ActivationKind::None;
            c.negative_slope = None;
            let spec = c.validate().map_err(|e| Error::Block(format!("acblock branch: {e}")))?;
            if spec.output_shape() != s.output_shape() {
                return Err(Error::Block(format!(
                    "acblock: a {}×{} branch's output {:?} differs from the square one's {:?}",
                    kernel[0],
                    kernel[1],
                    spec.output_shape(),
                    s.output_shape()
                )));
            }
            Ok((spec, crop))
        };
        let k = k as i64;
        let crop = |v: i64| (-v).max(0) as usize;
        Ok([
            branch([k, k], [p.top as i64, p.left as i64], Crop::default())?,
            branch([k, 1], [p.top as i64, cols], Crop { rows: 0, cols: crop(cols) })?,
            branch([1, k], [rows, p.left as i64], Crop { rows: crop(rows), cols: 0 })?,
        ])
    }

    /// The deploy form: one k×k conv with bias, the BatchNorms folded and
    /// the asymmetric kernels added into the centre column and row.
    pub fn deploy(&self) -> Result<Conv> {
        let specs = self.branch_specs()?;
        let folded: Vec<Conv> = self
            .branches
            .iter()
            .zip(&specs)
            .map(|(b, (spec, _))| {
                let weight = alloc::copied(&b.weight, "a branch's weights")?;
                Conv::new(spec.clone(), weight, None)?.fold(&b.bn)
            })
            .collect::<Result<_>>()?;
        let k = self.spec.kernel()[0];
        let mut weight = alloc::copied(&folded[0].weight, "the deployed weights")?;
        // Each run of k taps: one (output channel, input channel) pair.
        for (pair, w) in weight.chunks_mut(k * k).enumerate() {
            for i in 0..k {
                w[i * k + k / 2] += folded[1].weight[pair * k + i];
                w[k / 2 * k + i] += folded[2].weight[pair * k + i];
            }
        }
        let bias = (0..self.spec.out_channels())
            .map(|c| folded.iter().map(|f| f.bias().map_or(0.0, |b| b[c])).sum())
            .collect();
        Conv::new(self.spec.clone(), weight, Some(bias))
    }

    /// The training form (BatchNorm in eval mode) prepared on `engine`.
    pub fn training(
        &self,
        engine: Engine,
        compiler: Option<&Compiler>,
        threads: usize,
    ) -> Result<Training> {
        let mut branches = Vec::new();
        for (b, (spec, crop)) in self.branches.iter().zip(self.branch_specs()?) {
            let layer = engine.prepare_with(compiler, &spec, &b.weight, None, threads)?;
            branches.push((layer, crop, b.bn.clone()));
        }
        Ok(Training { spec: self.spec.clone(), branches })
    }
}

/// Refuses a block shape that has no centre row and column to fold into.
fn check_shape(spec: &ValidSpec) -> Result<()> {
    let [k, kw] = spec.kernel();
    let p = spec.padding();
    if spec.op() != Op::Conv2d || k != kw || k % 2 == 0 || k < 3 {
        return Err(Error::Block(format!(
            "acblock: needs a conv2d with an odd square kernel of at least 3, not {} {k}×{kw}",
            spec.op()
        )));
    }
    if p.top != p.bottom || p.left != p.right {
        return Err(Error::Block("acblock: needs symmetric padding".into()));
    }
    Ok(())
}

/// The training form of an [`AcBlock`], ready to run.
pub struct Training {
    spec: ValidSpec,
    branches: Vec<(Box<dyn Prepared>, Crop, BatchNorm)>,
}

impl Training {
    /// The output of the block on `input`: each branch's conv on its
    /// (cropped) input, its BatchNorm, the sum, the activation.
    pub fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        let spec = &self.spec;
        spec.check_input(input.len())?;
        spec.check_output(output.len())?;
        output.fill(0.0);
        let mut y = alloc::zeroed_f32(output.len(), "a branch's output")?;
        for (layer, crop, bn) in &self.branches {
            let cropped;
            let x = if *crop == Crop::default() {
                input
            } else {
                cropped = crop_nchw(input, spec.input_shape(), *crop)?;
                &cropped
            };
            layer.run(x, &mut y)?;
            bn.apply(&mut y, spec.output_shape())?;
            output.iter_mut().zip(&y).for_each(|(o, v)| *o += v);
        }
        if spec.activation() != Activation::None {
            output.iter_mut().for_each(|v| *v = spec.activation().apply_f32(*v));
        }
        Ok(())
    }
}

/// `x` (NCHW of `shape`) without `crop.rows` rows at the top and bottom and
/// `crop.cols` columns at the left and right of every plane.
pub fn crop_nchw(x: &[f32], shape: [usize; 4], crop: Crop) -> Result<Vec<f32>> {
    let [_, _, h, w] = shape;
    let (rows, cols) = (crop.rows..h - crop.rows, crop.cols..w - crop.cols);
    let planes = x.len() / (h * w).max(1);
    let mut y = alloc::zeroed_f32(planes * rows.len() * cols.len(), "a branch's cropped input")?;
    let kept = x.chunks(h * w).flat_map(|plane| {
        let cols = cols.clone();
        rows.clone().flat_map(move |r| plane[r * w + cols.start..r * w + cols.end].iter())
    });
    y.iter_mut().zip(kept).for_each(|(y, &x)| *y = x);
    Ok(y)
}
