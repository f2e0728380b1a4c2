//! The baselines the JIT is measured against: the textbook loop nest
//! ([`Naive`]) and im2col + GEMM ([`Im2col`]), the way most frameworks ran
//! convolutions before they had direct kernels.
//!
//! Both compute in f32 with PyTorch's semantics for every valid spec and
//! sit behind [`Prepared`] like every other engine (`Engine::Naive`,
//! `Engine::Im2col`). Neither is tuned: they are what a JIT has to beat,
//! written plainly. `docs/baselines.md` describes them and the choice of
//! GEMM crate.

use std::ops::Range;
use std::sync::Mutex;

use crate::alloc;
use crate::border::Border;
use crate::error::{Error, Result};
use crate::prepared::Prepared;
use crate::spec::{Activation, Op, ValidSpec};

/// The textbook loop nest: rustc-optimised f32 loops, one thread, no hand
/// vectorisation.
///
/// conv2d gathers each output from the input taps it reads, skipping taps in
/// the padding; the bias starts each sum and the activation follows it.
/// conv_transpose2d scatters each input pixel through the kernel (the
/// operator's definition); bias and activation follow in one pass.
pub struct Naive {
    spec: ValidSpec,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Naive {
    /// Binds `weight` (PyTorch's layout) and `bias` to `spec`, checking
    /// their lengths.
    pub fn new(spec: &ValidSpec, weight: &[f32], bias: Option<&[f32]>) -> Result<Naive> {
        spec.check_operands(spec.input_len(), weight.len(), bias.map(<[f32]>::len))?;
        let weight = alloc::copied(weight, "the weights")?;
        Ok(Naive { spec: spec.clone(), weight, bias: bias.map(<[f32]>::to_vec) })
    }
}

impl Prepared for Naive {
    fn spec(&self) -> &ValidSpec {
        &self.spec
    }

    fn threads(&self) -> usize {
        1
    }

    fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        check_buffers(&self.spec, input, output)?;
        let bias = self.bias.as_deref();
        match self.spec.op() {
            Op::Conv2d => naive_conv2d(&self.spec, input, &self.weight, bias, output),
            Op::ConvTranspose2d => {
                naive_conv_transpose2d(&self.spec, input, &self.weight, output);
                epilogue(&self.spec, bias, output);
            }
        }
        Ok(())
    }
}

/// `y[n, oc, oy, ox] = act(b[oc] + Σ_{icg, i, j} x[n, g·cig + icg, oy·s + i·d − p, ox·s + j·d − p] · w[oc, icg, i, j])`,
/// where g is oc's group and taps in the padding are skipped.
fn naive_conv2d(spec: &ValidSpec, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    let [batch, c_in, h, wd] = spec.input_shape();
    let [_, c_out, ho, wo] = spec.output_shape();
    let [kh, kw] = spec.kernel();
    let [rows, cols] = axes(spec, [h, wd]);
    let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
    let activation = spec.activation();
    for n in 0..batch {
        for oc in 0..c_out {
            let g = oc / cog;
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut sum = b.map_or(0.0, |b| b[oc]);
                    for icg in 0..cig {
                        let ic = g * cig + icg;
                        for i in 0..kh {
                            let Some(iy) = rows.tap(oy, i) else { continue };
                            for j in 0..kw {
                                let Some(ix) = cols.tap(ox, j) else { continue };
                                sum += x[((n * c_in + ic) * h + iy) * wd + ix]
                                    * w[((oc * cig + icg) * kh + i) * kw + j];
                            }
                        }
                    }
                    y[((n * c_out + oc) * ho + oy) * wo + ox] = activation.apply_f32(sum);
                }
            }
        }
    }
}

/// y[n, g·cog + ocg, iy·s + i·d − p, ix·s + j·d − p] += x[n, ic, iy, ix] · w[ic, ocg, i, j]
/// for every input pixel and tap, keeping the products that land inside
/// the (cropped) output; g is ic's group. No bias, no activation.
fn naive_conv_transpose2d(spec: &ValidSpec, x: &[f32], w: &[f32], y: &mut [f32]) {
    let [batch, c_in, h, wd] = spec.input_shape();
    let [_, c_out, ho, wo] = spec.output_shape();
    let [kh, kw] = spec.kernel();
    let [rows, cols] = axes(spec, [ho, wo]);
    let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
    y.fill(0.0);
    for n in 0..batch {
        for ic in 0..c_in {
            let g = ic / cig;
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = x[((n * c_in + ic) * h + iy) * wd + ix];
                    for ocg in 0..cog {
                        let oc = g * cog + ocg;
                        for i in 0..kh {
                            let Some(oy) = rows.tap(iy, i) else { continue };
                            for j in 0..kw {
                                let Some(ox) = cols.tap(ix, j) else { continue };
                                y[((n * c_out + oc) * ho + oy) * wo + ox] +=
                                    xv * w[((ic * cog + ocg) * kh + i) * kw + j];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// im2col + GEMM, per image and per group, through the `gemm` crate.
///
/// conv2d copies the group's receptive fields into a column matrix
/// [in/g·kh·kw × ho·wo] (zeros for taps in the padding) and multiplies the
/// group's weights [out/g × in/g·kh·kw] by it, straight into the output
/// planes. A 1×1 kernel with stride 1 and no padding skips the copy: the
/// input is its own column matrix (as Caffe does). conv_transpose2d
/// multiplies the transposed weights [out/g·kh·kw × in/g] by the group's
/// input [in/g × h·w] into columns and scatters them into the output
/// (col2im). Bias and activation follow in one pass over the output.
///
/// Depthwise layers go through the same path, one tiny GEMM per channel:
/// that is the honest baseline, and it is slow.
///
/// The column buffer is allocated when the layer is prepared and reused by
/// every run; a run that finds it in use by another thread allocates its
/// own.
pub struct Im2col {
    spec: ValidSpec,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// conv2d's column matrix holds zeros for the padding: the outputs a
    /// non-finite weight meets them in are redone exactly (see `border`).
    border: Option<Border>,
    threads: usize,
    columns: Mutex<Vec<f32>>,
}

impl Im2col {
    /// Binds `weight` (PyTorch's layout) and `bias` to `spec`, checking
    /// their lengths, and lets the GEMM use up to `threads` threads (at
    /// least 1), no more than rayon's pool has.
    pub fn new(
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
        threads: usize,
    ) -> Result<Im2col> {
        if !(1..=crate::schedule::MAX_THREADS).contains(&threads) {
            return Err(Error::InvalidThreads(threads));
        }
        spec.check_operands(spec.input_len(), weight.len(), bias.map(<[f32]>::len))?;
        // Asking rayon starts its pool: only when it is to be used.
        let threads = if threads > 1 { threads.min(rayon::current_num_threads()) } else { 1 };
        Ok(Im2col {
            spec: spec.clone(),
            weight: alloc::copied(weight, "the weights")?,
            bias: bias.map(<[f32]>::to_vec),
            border: match spec.op() {
                Op::Conv2d => Border::new(spec, weight, bias)?,
                Op::ConvTranspose2d => None, // col2im multiplies real pixels only
            },
            threads,
            columns: Mutex::new(alloc::zeroed_f32(columns_len(spec), COLUMNS)?),
        })
    }

    /// conv2d: for each image and group, im2col then
    /// y_g[out/g × ho·wo] = w_g[out/g × in/g·kh·kw] · columns.
    fn conv2d(&self, x: &[f32], y: &mut [f32], columns: &mut [f32]) {
        let s = &self.spec;
        let [batch, c_in, h, wd] = s.input_shape();
        let [_, c_out, ho, wo] = s.output_shape();
        let (cig, cog) = (s.in_per_group(), s.out_per_group());
        let reduction = cig * s.kernel()[0] * s.kernel()[1];
        let pixels = ho * wo;
        let p = s.padding();
        let input_is_columns = s.kernel() == [1, 1]
            && s.stride() == [1, 1]
            && [p.top, p.left, p.bottom, p.right] == [0; 4];
        for n in 0..batch {
            for g in 0..s.groups() {
                let image = &x[(n * c_in + g * cig) * h * wd..][..cig * h * wd];
                let columns: &[f32] = if input_is_columns {
                    image
                } else {
                    im2col(s, image, columns);
                    columns
                };
                matmul(
                    [cog, reduction, pixels],
                    (&self.weight[g * cog * reduction..][..cog * reduction], Layout::RowMajor),
                    columns,
                    &mut y[(n * c_out + g * cog) * pixels..][..cog * pixels],
                    self.threads,
                );
            }
        }
    }

    /// conv_transpose2d: for each image and group,
    /// columns[out/g·kh·kw × h·w] = w_gᵀ · x_g[in/g × h·w], then col2im.
    fn conv_transpose2d(&self, x: &[f32], y: &mut [f32], columns: &mut [f32]) {
        let s = &self.spec;
        let [batch, c_in, h, wd] = s.input_shape();
        let [_, c_out, ho, wo] = s.output_shape();
        let (cig, cog) = (s.in_per_group(), s.out_per_group());
        let rows = cog * s.kernel()[0] * s.kernel()[1];
        y.fill(0.0);
        for n in 0..batch {
            for g in 0..s.groups() {
                // w_g is [in/g × out/g·kh·kw] row-major: its transpose is
                // the GEMM's left operand.
                matmul(
                    [rows, cig, h * wd],
                    (&self.weight[g * cig * rows..][..cig * rows], Layout::Transposed),
                    &x[(n * c_in + g * cig) * h * wd..][..cig * h * wd],
                    columns,
                    self.threads,
                );
                col2im(s, columns, &mut y[(n * c_out + g * cog) * ho * wo..][..cog * ho * wo]);
            }
        }
    }
}

impl Prepared for Im2col {
    fn spec(&self) -> &ValidSpec {
        &self.spec
    }

    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        check_buffers(&self.spec, input, output)?;
        let mut cached = self.columns.try_lock().ok();
        let mut local;
        let columns: &mut Vec<f32> = match cached.as_deref_mut() {
            Some(columns) => columns,
            None => {
                local = alloc::zeroed_f32(columns_len(&self.spec), COLUMNS)?;
                &mut local
            }
        };
        match self.spec.op() {
            Op::Conv2d => self.conv2d(input, output, columns),
            Op::ConvTranspose2d => self.conv_transpose2d(input, output, columns),
        }
        epilogue(&self.spec, self.bias.as_deref(), output);
        if let Some(border) = &self.border {
            border.apply(input, output, None);
        }
        Ok(())
    }
}

/// The column matrix, for errors.
const COLUMNS: &str = "the im2col column matrix";

/// The length of the column matrix of one image and group: the product of
/// a weight's and a tensor's sizes, so up to about 2^62 for a legal spec;
/// `usize::MAX` (refused by the allocation) past that.
fn columns_len(spec: &ValidSpec) -> usize {
    let taps = spec.kernel()[0] * spec.kernel()[1];
    let [rows, pixels] = match spec.op() {
        Op::Conv2d => [spec.in_per_group() * taps, spec.out_height() * spec.out_width()],
        Op::ConvTranspose2d => [spec.out_per_group() * taps, spec.height() * spec.width()],
    };
    rows.saturating_mul(pixels)
}

/// columns[(icg·kh + i)·kw + j][oy·wo + ox] = image[icg, oy·s + i·d − p, ox·s + j·d − p],
/// or 0 where that lies in the padding. `image` holds one group's input
/// channels of one image.
fn im2col(spec: &ValidSpec, image: &[f32], columns: &mut [f32]) {
    let (h, wd) = (spec.height(), spec.width());
    let (ho, wo) = (spec.out_height(), spec.out_width());
    let [kh, kw] = spec.kernel();
    let [rows_axis, cols_axis] = axes(spec, [h, wd]);
    let stride = spec.stride()[1];
    let mut rows = columns.chunks_exact_mut(ho * wo);
    for channel in image.chunks_exact(h * wd) {
        for i in 0..kh {
            for j in 0..kw {
                let row = rows.next().expect("one column row per channel and tap");
                for (oy, out) in row.chunks_exact_mut(wo).enumerate() {
                    let Some(iy) = rows_axis.tap(oy, i) else {
                        out.fill(0.0);
                        continue;
                    };
                    // The pixels whose tap lies inside the line read it
                    // with the stride; those left and right are padding.
                    let inside = cols_axis.inside(j, wo);
                    out[..inside.start].fill(0.0);
                    out[inside.end..].fill(0.0);
                    if let Some(first) = cols_axis.tap(inside.start, j) {
                        let line = &channel[iy * wd..][first..wd];
                        for (v, &x) in out[inside].iter_mut().zip(line.iter().step_by(stride)) {
                            *v = x;
                        }
                    }
                }
            }
        }
    }
}

/// out[ocg, iy·s + i·d − p, ix·s + j·d − p] += columns[(ocg·kh + i)·kw + j][iy·w + ix]
/// for the positions inside the (cropped) output. `out` holds one group's
/// output channels of one image.
fn col2im(spec: &ValidSpec, columns: &[f32], out: &mut [f32]) {
    let (h, wd) = (spec.height(), spec.width());
    let (ho, wo) = (spec.out_height(), spec.out_width());
    let [kh, kw] = spec.kernel();
    let [rows_axis, cols_axis] = axes(spec, [ho, wo]);
    let stride = spec.stride()[1];
    let mut rows = columns.chunks_exact(h * wd);
    for plane in out.chunks_exact_mut(ho * wo) {
        for i in 0..kh {
            for j in 0..kw {
                let row = rows.next().expect("one column row per channel and tap");
                for (iy, line) in row.chunks_exact(wd).enumerate() {
                    let Some(oy) = rows_axis.tap(iy, i) else { continue };
                    let inside = cols_axis.inside(j, wd);
                    let Some(first) = cols_axis.tap(inside.start, j) else { continue };
                    let out = &mut plane[oy * wo..][first..wo];
                    for (y, &v) in out.iter_mut().step_by(stride).zip(&line[inside]) {
                        *y += v;
                    }
                }
            }
        }
    }
}

/// How a GEMM's left operand lies in its slice.
#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Element (r, c) of an m×k matrix at r·k + c.
    RowMajor,
    /// Element (r, c) of an m×k matrix at c·m + r: a row-major k×m matrix
    /// read as its transpose.
    Transposed,
}

/// c[m×n] = a[m×k] · b[k×n], overwriting `c`; `b` and `c` are row-major.
/// The GEMM may use up to `threads` threads.
///
/// # Panics
/// If a slice's length is not the product of its dimensions (a bug in the
/// caller, checked because the GEMM crate reads raw pointers).
fn matmul(
    [m, k, n]: [usize; 3],
    (a, layout): (&[f32], Layout),
    b: &[f32],
    c: &mut [f32],
    threads: usize,
) {
    assert!(
        a.len() == m * k && b.len() == k * n && c.len() == m * n,
        "GEMM operands of {m}×{k}·{k}×{n}: lengths {}, {}, {}",
        a.len(),
        b.len(),
        c.len()
    );
    let (a_row, a_col) = match layout {
        Layout::RowMajor => (k as isize, 1),
        Layout::Transposed => (1, m as isize),
    };
    let parallelism =
        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: with the strides given, `a` is read at r·a_row + q·a_col for
    // r < m, q < k, at most (m − 1)·k + k − 1 = m·k − 1 in either layout;
    // `b` at q·n + col < k·n; `c` written at r·n + col < m·n. The lengths
    // were asserted above, and `c`, borrowed mutably, aliases neither input.
    // With `read_dst` false and alpha 0, `c` is only written.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_col,
            a_row,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// `y = act(y + b[channel])` over the whole output; nothing to do without
/// bias and activation.
fn epilogue(spec: &ValidSpec, bias: Option<&[f32]>, y: &mut [f32]) {
    let activation = spec.activation();
    if bias.is_none() && activation == Activation::None {
        return;
    }
    let channels = spec.out_channels();
    for (index, plane) in y.chunks_exact_mut(spec.out_height() * spec.out_width()).enumerate() {
        let b = bias.map_or(0.0, |b| b[index % channels]);
        for v in plane {
            *v = activation.apply_f32(*v + b);
        }
    }
}

/// One spatial axis of a layer, seen from the side that gathers (conv2d's
/// output, conv_transpose2d's input) towards the side of length `len` it
/// reads or scatters to.
#[derive(Clone, Copy, Debug)]
struct Axis {
    stride: usize,
    dilation: usize,
    pad: usize,
    len: usize,
}

impl Axis {
    /// The position `o·stride + k·dilation − pad` that position `o` meets
    /// through kernel tap `k`, if it lies in `0..len`.
    fn tap(self, o: usize, k: usize) -> Option<usize> {
        (o * self.stride + k * self.dilation).checked_sub(self.pad).filter(|&p| p < self.len)
    }

    /// The positions `o < count` whose tap `k` lies inside: those with
    /// pad − k·dilation ≤ o·stride < len + pad − k·dilation.
    fn inside(self, k: usize, count: usize) -> Range<usize> {
        let offset = k * self.dilation;
        let start = self.pad.saturating_sub(offset).div_ceil(self.stride).min(count);
        let end = (self.len + self.pad).saturating_sub(offset).div_ceil(self.stride).min(count);
        start..end.max(start)
    }
}

/// The height and width axes of `spec`, towards a tensor of `len` = [rows, columns]:
/// the input for conv2d, the output for conv_transpose2d.
fn axes(spec: &ValidSpec, len: [usize; 2]) -> [Axis; 2] {
    let p = spec.padding();
    let axis = |a: usize, pad| Axis {
        stride: spec.stride()[a],
        dilation: spec.dilation()[a],
        pad,
        len: len[a],
    };
    [axis(0, p.top), axis(1, p.left)]
}

/// Checks the input and output lengths of one run against the spec.
fn check_buffers(spec: &ValidSpec, input: &[f32], output: &[f32]) -> Result<()> {
    spec.check_input(input.len())?;
    spec.check_output(output.len())
}
