//! The interpreted reference: the oracle every engine is checked against.
//!
//! Plain loops straight from PyTorch's definitions, accumulating in f64, for
//! every valid spec. It is written to be obviously correct, not fast:
//! conv2d gathers each output from the input taps it reads; conv_transpose2d
//! scatters each input pixel through the kernel, which is the operator's
//! definition (the adjoint of conv2d), so it shares no index algebra with
//! the compiled kernels that gather.

use rayon::prelude::*;

use crate::alloc;
use crate::error::Result;

/// Which output planes `(image, channel)` to compute.
type Keep<'a> = dyn Fn(usize, usize) -> bool + Sync + 'a;
use crate::algorithm::winograd::Transform;
use crate::schedule::Schedule;
use crate::spec::{Op, ValidSpec};

/// Computes the layer's output (NCHW, f32) from the input (NCHW), the
/// weights in PyTorch's layout and the optional bias.
///
/// Every length is checked against the spec first.
pub fn conv(
    spec: &ValidSpec,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f32>> {
    conv_planes(spec, input, weight, bias, &|_, _| true)
}

/// [`conv`] computed only on the output planes `(image, channel)` that
/// `keep` admits; every other element of the result is 0.
fn conv_planes(
    spec: &ValidSpec,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    keep: &Keep<'_>,
) -> Result<Vec<f32>> {
    spec.check_operands(input.len(), weight.len(), bias.map(<[f32]>::len))?;
    let mut acc = alloc::zeroed_f64(spec.output_len(), "the reference's f64 accumulators")?;
    match spec.op() {
        Op::Conv2d => conv2d(spec, input, weight, &mut acc, keep),
        Op::ConvTranspose2d => conv_transpose2d(spec, input, weight, &mut acc, keep),
    }
    let plane = spec.out_height() * spec.out_width();
    let activation = spec.activation();
    let mut output = alloc::zeroed_f32(acc.len(), "the reference output")?;
    for (i, (y, &sum)) in output.iter_mut().zip(&acc).enumerate() {
        let channel = (i / plane) % spec.out_channels();
        let biased = sum + bias.map_or(0.0, |b| f64::from(b[channel]));
        *y = activation.apply_f64(biased) as f32;
    }
    Ok(output)
}

/// y[n, oc, oh, ow] = Σ_{ic in oc's group, i, j} x[n, ic, oh·s − p + i·d, ow·s − p + j·d] · w[oc, ic, i, j]
///
/// Output planes are independent: they are computed in parallel.
fn conv2d(spec: &ValidSpec, x: &[f32], w: &[f32], y: &mut [f64], keep: &Keep<'_>) {
    let [_, c_in, h, wd] = spec.input_shape();
    let [_, c_out, ho, wo] = spec.output_shape();
    let [kh, kw] = spec.kernel();
    let [sh, sw] = spec.stride();
    let [dh, dw] = spec.dilation();
    let (pt, pl) = (spec.padding().top as isize, spec.padding().left as isize);
    let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
    y.par_chunks_mut(ho * wo).enumerate().for_each(|(p, plane)| {
        let (n, oc) = (p / c_out, p % c_out);
        if !keep(n, oc) {
            return;
        }
        let g = oc / cog;
        for oy in 0..ho {
            for ox in 0..wo {
                let mut sum = 0.0f64;
                for icg in 0..cig {
                    let ic = g * cig + icg;
                    for i in 0..kh {
                        let iy = (oy * sh + i * dh) as isize - pt;
                        if iy < 0 || iy >= h as isize {
                            continue;
                        }
                        for j in 0..kw {
                            let ix = (ox * sw + j * dw) as isize - pl;
                            if ix < 0 || ix >= wd as isize {
                                continue;
                            }
                            let xv = x[((n * c_in + ic) * h + iy as usize) * wd + ix as usize];
                            let wv = w[((oc * cig + icg) * kh + i) * kw + j];
                            sum += f64::from(xv) * f64::from(wv);
                        }
                    }
                }
                plane[oy * wo + ox] = sum;
            }
        }
    });
}

/// For each input pixel x[n, ic, iy, ix] and each tap (i, j) of each output
/// channel oc of its group: y[n, oc, iy·s − p + i·d, ix·s − p + j·d] += x · w[ic, oc − g·cog, i, j],
/// keeping only the products that land inside the (cropped) output.
///
/// Output planes are independent (each scatters from its group's inputs
/// only): they are computed in parallel.
fn conv_transpose2d(spec: &ValidSpec, x: &[f32], w: &[f32], y: &mut [f64], keep: &Keep<'_>) {
    let [_, c_in, h, wd] = spec.input_shape();
    let [_, c_out, ho, wo] = spec.output_shape();
    let [kh, kw] = spec.kernel();
    let [sh, sw] = spec.stride();
    let [dh, dw] = spec.dilation();
    let (pt, pl) = (spec.padding().top as isize, spec.padding().left as isize);
    let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
    y.par_chunks_mut(ho * wo).enumerate().for_each(|(p, plane)| {
        let (n, oc) = (p / c_out, p % c_out);
        if !keep(n, oc) {
            return;
        }
        let (g, ocg) = (oc / cog, oc % cog);
        for ic in g * cig..(g + 1) * cig {
            for iy in 0..h {
                for ix in 0..wd {
                    let xv = f64::from(x[((n * c_in + ic) * h + iy) * wd + ix]);
                    for i in 0..kh {
                        let oy = (iy * sh + i * dh) as isize - pt;
                        if oy < 0 || oy >= ho as isize {
                            continue;
                        }
                        for j in 0..kw {
                            let ox = (ix * sw + j * dw) as isize - pl;
                            if ox < 0 || ox >= wo as isize {
                                continue;
                            }
                            let wv = f64::from(w[((ic * cog + ocg) * kh + i) * kw + j]);
                            plane[oy as usize * wo + ox as usize] += xv * wv;
                        }
                    }
                }
            }
        }
    });
}

/// How far one output tensor is from another.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Deviation {
    /// The largest |actual − expected| over all elements (infinite where one
    /// side is NaN and the other is not, or where infinities differ).
    pub max_abs: f64,
    /// `max_abs` relative to the largest finite |expected|: a normwise
    /// relative error, meaningful also where single outputs cancel to ~0.
    pub max_rel: f64,
    /// The index of the worst element, if any element differs.
    pub worst: Option<usize>,
    /// The largest finite |expected|, which `max_rel` is relative to.
    pub scale: f64,
}

impl Deviation {
    /// Whether every element is within `tolerance · (1 + the largest
    /// |expected|)` of what was expected: relative to the output's size,
    /// and absolute where the whole output is near zero (a single output
    /// that cancels to ~0 has no size of its own to be relative to).
    pub fn within(&self, tolerance: f64) -> bool {
        self.max_abs <= tolerance * (1.0 + self.scale)
    }
}

/// Compares `actual` with `expected` element by element. NaN matches NaN and
/// an infinity matches the same infinity, as IEEE arithmetic propagates them.
pub fn compare(actual: &[f32], expected: &[f32]) -> Deviation {
    assert_eq!(actual.len(), expected.len(), "compare: lengths differ");
    let scale =
        expected.iter().filter(|e| e.is_finite()).fold(0.0f64, |m, &e| m.max(f64::from(e).abs()));
    let mut dev = Deviation { scale, ..Deviation::default() };
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = element_error(a, e);
        if err > dev.max_abs || (err > 0.0 && dev.worst.is_none()) {
            dev.max_abs = err;
            dev.worst = Some(i);
        }
    }
    dev.max_rel = if dev.max_abs == 0.0 { 0.0 } else { dev.max_abs / scale.max(f64::MIN_POSITIVE) };
    dev
}

/// The verdict of checking an engine's output against the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// Distances from the reference output.
    pub deviation: Deviation,
    /// The largest ratio of an element's error to its error bound; at most 1
    /// when the output is within tolerance.
    pub worst_ratio: f64,
    /// The index of the element with the largest ratio.
    pub worst: Option<usize>,
}

impl Verdict {
    /// Whether every element is within its bound.
    pub fn passed(&self) -> bool {
        self.worst_ratio <= 1.0
    }

    /// Why the output failed, when it did: its worst element and how far
    /// past its bound.
    pub fn failure(&self) -> Option<String> {
        (!self.passed()).then(|| {
            format!(
                "output element {} is {:.2}× past its error bound",
                self.worst.unwrap_or(0),
                self.worst_ratio
            )
        })
    }
}

/// Checks an f32 output against the reference with a tolerance that scales
/// with the reduction length (documented in `docs/correctness.md`): one
/// [`Oracle`] for one output.
pub fn verify(
    spec: &ValidSpec,
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    actual: &[f32],
) -> Result<Verdict> {
    spec.check_output(actual.len())?;
    Oracle::new(spec, input, weight, bias)?.verify(actual)
}

/// The reference output of one layer on one input, with the error bound of
/// every element: computed once, it checks any number of engines' outputs.
///
/// An output is a sum of K = (C_in/g)·kh·kw products plus the bias, summed
/// in f32 in any order, with or without fused multiply-add. The classic bound
/// for such a sum is |ŷ − y| ≤ γ_n · (Σ|x·w| + |b|) with γ_n = n·u/(1 − n·u),
/// u = 2^-24, n = K + 2 (one more term for the bias, one for products
/// rounded before the add when there is no FMA). The activation is
/// 1-Lipschitz, so the bound survives it; the reference's own rounding to
/// f32 adds u·|y|. Σ|x·w| is computed exactly as the reference on |x| and
/// |w|. NaN must match NaN, infinities must match.
#[derive(Clone, Debug)]
pub struct Oracle {
    shape: [usize; 4],
    expected: Vec<f32>,
    bound: Vec<f64>,
    /// The `(image, channel)` planes checked, by `image · C_out + channel`;
    /// `None` checks every element.
    planes: Option<Vec<bool>>,
}

impl Oracle {
    /// Runs the reference (twice: on the operands and on their magnitudes).
    pub fn new(
        spec: &ValidSpec,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Oracle> {
        Oracle::build(spec, input, weight, bias, None)
    }

    /// An oracle for the output planes `(image, channel)` listed: the
    /// reference runs on those planes only (every pixel of each), and
    /// [`Oracle::verify`] checks only their elements. For layers whose full
    /// reference takes seconds, a few planes still cover every pixel
    /// position (borders, tails, row splits) of every channel block chosen.
    pub fn of_planes(
        spec: &ValidSpec,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        planes: &[(usize, usize)],
    ) -> Result<Oracle> {
        let (images, channels) = (spec.batch(), spec.out_channels());
        let mut keep = alloc::filled(images * channels, false, "the oracle's list of planes")?;
        for &(n, c) in planes {
            if n >= images || c >= channels {
                return Err(crate::error::Error::InvalidTuning(format!(
                    "oracle plane (image {n}, channel {c}) outside the output's {images} images \
                     × {channels} channels"
                )));
            }
            keep[n * channels + c] = true;
        }
        Oracle::build(spec, input, weight, bias, Some(keep))
    }

    fn build(
        spec: &ValidSpec,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        planes: Option<Vec<bool>>,
    ) -> Result<Oracle> {
        let channels = spec.out_channels();
        let keep = |n: usize, c: usize| planes.as_ref().is_none_or(|p| p[n * channels + c]);
        let expected = conv_planes(spec, input, weight, bias, &keep)?;
        let abs = |v: &[f32], what| -> Result<Vec<f32>> {
            let mut a = alloc::copied(v, what)?;
            a.iter_mut().for_each(|x| *x = x.abs());
            Ok(a)
        };
        let magnitude_spec = {
            let mut s = spec.to_conv_spec();
            s.bias = false;
            s.activation = crate::spec::ActivationKind::None;
            s.negative_slope = None;
            s.validate()?
        };
        let (input_abs, weight_abs) =
            (abs(input, "the input's magnitudes")?, abs(weight, "the weights' magnitudes")?);
        let magnitude = conv_planes(&magnitude_spec, &input_abs, &weight_abs, None, &keep)?;
        drop((input_abs, weight_abs));
        let n = (spec.in_per_group() * spec.kernel()[0] * spec.kernel()[1] + 2) as f64;
        let u = f64::from(f32::EPSILON) / 2.0;
        let gamma = n * u / (1.0 - n * u);
        let plane = spec.out_height() * spec.out_width();
        let mut bound = alloc::zeroed_f64(expected.len(), "the error bounds")?;
        for (i, (bound, (&e, &m))) in
            bound.iter_mut().zip(expected.iter().zip(&magnitude)).enumerate()
        {
            let b = bias.map_or(0.0, |b| f64::from(b[(i / plane) % spec.out_channels()]).abs());
            *bound = gamma * (f64::from(m) + b) + u * f64::from(e).abs();
        }
        Ok(Oracle { shape: spec.output_shape(), expected, bound, planes })
    }

    /// The oracle of `spec` computed as `schedule` computes it: through
    /// Winograd's transforms ([`Oracle::winograd`]) when it says so, else
    /// directly ([`Oracle::new`]); `None` (an engine that does not
    /// compile) is direct.
    pub fn for_schedule(
        spec: &ValidSpec,
        schedule: Option<&Schedule>,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Oracle> {
        let oracle = Oracle::new(spec, input, weight, bias)?;
        match schedule.and_then(|s| s.winograd) {
            Some(w) => {
                w.legal(spec)?;
                oracle.widened(spec, &w.transform(spec), input, weight, bias)
            }
            None => Ok(oracle),
        }
    }

    /// The oracle of a conv2d computed through Winograd's F(m_h × m_w,
    /// r_h × r_w) (`transform`, the layer's kernel r_h × r_w, stride and
    /// dilation 1): each element's bound is the larger of the direct one
    /// ([`Oracle::new`]: an output the transforms leave non-finite is
    /// recomputed directly) and the componentwise bound of the bilinear
    /// algorithm,
    ///
    /// ```text
    /// γ_n · ( |Aᵀ_h| [ Σ_c (|G_h| |g_c| |G_wᵀ|) ⊙ (|Bᵀ_h| |d_c| |B_w|) ] |A_w| + |b| ) + u·|y|
    /// ```
    ///
    /// over each tile `d` of the zero-padded input, with
    /// `n = C_in/groups + 2(α_h + α_w) + 4`: the sum over the channels,
    /// the input and the output transform's passes of at most α_w and α_h
    /// terms, the transformed weights' rounding (from f64), the product and
    /// the bias.
    /// Non-finite inputs and weights count as 0 in it: the outputs they
    /// reach are recomputed directly. `docs/correctness.md` derives it.
    pub fn winograd(
        spec: &ValidSpec,
        transform: &Transform,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Oracle> {
        Oracle::new(spec, input, weight, bias)?.widened(spec, transform, input, weight, bias)
    }

    /// This oracle with the bounds of its checked planes raised to
    /// Winograd's where those are larger ([`Oracle::winograd`]).
    pub fn widened(
        mut self,
        spec: &ValidSpec,
        transform: &Transform,
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Oracle> {
        let oracle = &mut self;
        let ([mh, mw], [ah, aw], r) = (transform.m(), transform.alpha(), transform.r());
        let pad = spec.padding();
        if spec.op() != Op::Conv2d
            || spec.kernel() != r
            || spec.stride() != [1, 1]
            || spec.dilation() != [1, 1]
            || spec.output_shape() != oracle.shape
        {
            return Err(crate::error::Error::InvalidSchedule {
                field: "winograd",
                value: transform.name(),
                reason: format!(
                    "computes a {}×{} conv2d of stride 1 and dilation 1, not {spec}",
                    r[0], r[1]
                ),
            });
        }
        // The transforms' magnitudes, and the operands' (finite ones).
        let magnitudes = transform.magnitudes();
        let finite = |v: f32| if v.is_finite() { f64::from(v).abs() } else { 0.0 };
        let [batch, c_in, h, w] = spec.input_shape();
        let [_, c_out, oh, ow] = spec.output_shape();
        let (cig, cog) = (spec.in_per_group(), spec.out_per_group());
        let terms = (cig + 2 * (ah + aw) + 4) as f64;
        let u = f64::from(f32::EPSILON) / 2.0;
        let gamma = terms * u / (1.0 - terms * u);
        let kernels: Vec<Vec<f64>> = weight
            .chunks_exact(r[0] * r[1])
            .map(|g| magnitudes.kernel(&g.iter().map(|&v| finite(v)).collect::<Vec<_>>()))
            .collect();
        let mut tiles = vec![vec![0.0; ah * aw]; cig];
        let mut d = vec![0.0; ah * aw];
        for n in 0..batch {
            for group in 0..spec.groups() {
                for ty in 0..oh.div_ceil(mh) {
                    for tx in 0..ow.div_ceil(mw) {
                        for (c, tile) in tiles.iter_mut().enumerate() {
                            let plane = &input[(n * c_in + group * cig + c) * h * w..][..h * w];
                            for (k, d) in d.iter_mut().enumerate() {
                                let y = (ty * mh + k / aw).checked_sub(pad.top).filter(|&y| y < h);
                                let x = (tx * mw + k % aw).checked_sub(pad.left).filter(|&x| x < w);
                                *d = match (y, x) {
                                    (Some(y), Some(x)) => finite(plane[y * w + x]),
                                    _ => 0.0,
                                };
                            }
                            *tile = magnitudes.input(&d);
                        }
                        for k in group * cog..(group + 1) * cog {
                            let checked = oracle.planes.as_ref().is_none_or(|p| p[n * c_out + k]);
                            if !checked {
                                continue;
                            }
                            let mut sum = vec![0.0; ah * aw];
                            for (c, tile) in tiles.iter().enumerate() {
                                let kernel = &kernels[k * cig + c];
                                for ((s, &u), &v) in sum.iter_mut().zip(kernel).zip(tile) {
                                    *s += u * v;
                                }
                            }
                            let y = magnitudes.output(&sum);
                            let b = bias.map_or(0.0, |b| finite(b[k]));
                            for (i, row) in y.chunks_exact(mw).enumerate() {
                                for (j, &y) in row.iter().enumerate() {
                                    let (oy, ox) = (ty * mh + i, tx * mw + j);
                                    if oy >= oh || ox >= ow {
                                        continue;
                                    }
                                    let at = ((n * c_out + k) * oh + oy) * ow + ox;
                                    let e = f64::from(oracle.expected[at]).abs();
                                    let bound = gamma * (y + b) + u * e;
                                    let kept = &mut oracle.bound[at];
                                    // NaN stays: the element must match exactly.
                                    if bound > *kept {
                                        *kept = bound;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(self)
    }

    /// The oracle of a pointwise conv2d (1×1, stride 1, no padding, one
    /// group) `spec` that takes this oracle's output as its input: the
    /// pointwise reference runs on this one's expected output `e`, and each
    /// element's bound is the pointwise bound on `e` plus the errors this
    /// one allows carried through the pointwise weights. The engine's
    /// intermediate `ê` is within `bound` of `e`, so its pointwise output
    /// is off the reference's by at most `Σ_c |w[o, c]| · bound[c, p]` plus
    /// its own rounding, whose bound grows by `γ · Σ_c |w| · bound` with
    /// `|ê|` in place of `|e|`: the carried term is taken `1 + γ` times,
    /// with a margin for its f64 sum. It is how a fused block (depthwise
    /// then pointwise, the intermediate kept in f32) is checked. Both must
    /// check every element.
    pub fn then_pointwise(
        &self,
        spec: &ValidSpec,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<Oracle> {
        let pad = spec.padding();
        let pointwise = spec.op() == crate::spec::Op::Conv2d
            && spec.kernel() == [1, 1]
            && spec.stride() == [1, 1]
            && spec.groups() == 1
            && [pad.top, pad.left, pad.bottom, pad.right] == [0; 4];
        if !pointwise || spec.input_shape() != self.shape || self.planes.is_some() {
            return Err(crate::error::Error::Block(format!(
                "a chained oracle needs a pointwise conv on the whole of the first output \
                 ({:?}), not {spec}",
                self.shape
            )));
        }
        let mut second = Oracle::new(spec, &self.expected, weight, bias)?;
        let [n, cout, h, w] = spec.output_shape();
        let (cin, plane) = (spec.in_channels(), h * w);
        // γ of the pointwise sum (as `build` takes it), and a relative
        // margin for the carried sums' own f64 rounding (at most cin
        // terms), far above it.
        let terms = (cin + 2) as f64;
        let u = f64::from(f32::EPSILON) / 2.0;
        let carry = (1.0 + terms * u / (1.0 - terms * u)) * (1.0 + 1e-6);
        for img in 0..n {
            for oc in 0..cout {
                let row = &weight[oc * cin..(oc + 1) * cin];
                let bounds = &mut second.bound[(img * cout + oc) * plane..][..plane];
                for (c, &wc) in row.iter().enumerate() {
                    let carried = &self.bound[(img * cin + c) * plane..][..plane];
                    let wc = f64::from(wc).abs() * carry;
                    bounds.iter_mut().zip(carried).for_each(|(b, &e)| *b += wc * e);
                }
            }
        }
        Ok(second)
    }

    /// How many output elements [`Oracle::verify`] checks.
    pub fn checked(&self) -> usize {
        let plane = self.shape[2] * self.shape[3];
        self.planes
            .as_ref()
            .map_or(self.expected.len(), |p| p.iter().filter(|&&k| k).count() * plane)
    }

    /// The reference output, rounded to f32.
    pub fn expected(&self) -> &[f32] {
        &self.expected
    }

    /// Each element's error bound (meaningful in the planes checked).
    pub fn bounds(&self) -> &[f64] {
        &self.bound
    }

    /// Checks `actual` (of the output's length) element by element.
    pub fn verify(&self, actual: &[f32]) -> Result<Verdict> {
        if actual.len() != self.expected.len() {
            return Err(crate::error::Error::BufferLength {
                what: "output",
                shape: self.shape.to_vec(),
                expected: self.expected.len(),
                found: actual.len(),
            });
        }
        let plane = self.shape[2] * self.shape[3];
        let checked = |i: usize| self.planes.as_ref().is_none_or(|p| p[i / plane]);
        let deviation = match &self.planes {
            None => compare(actual, &self.expected),
            Some(_) => {
                let pick = |v: &[f32]| -> Result<Vec<f32>> {
                    let mut picked = alloc::zeroed_f32(self.checked(), "the checked outputs")?;
                    let chosen = v.iter().enumerate().filter(|&(i, _)| checked(i));
                    picked.iter_mut().zip(chosen).for_each(|(p, (_, &x))| *p = x);
                    Ok(picked)
                };
                compare(&pick(actual)?, &pick(&self.expected)?)
            }
        };
        let mut verdict = Verdict { deviation, worst_ratio: 0.0, worst: None };
        for (i, ((&a, &e), &bound)) in actual
            .iter()
            .zip(&self.expected)
            .zip(&self.bound)
            .enumerate()
            .filter(|&(i, _)| checked(i))
        {
            let err = element_error(a, e);
            let ratio = if err == 0.0 {
                0.0
            } else if bound > 0.0 {
                err / bound
            } else {
                f64::INFINITY
            };
            if ratio > verdict.worst_ratio {
                verdict.worst_ratio = ratio;
                verdict.worst = Some(i);
            }
        }
        Ok(verdict)
    }
}

/// |a − e|, with NaN matching NaN and an infinity matching itself; any other
/// mismatch involving NaN or infinity is infinitely wrong.
fn element_error(a: f32, e: f32) -> f64 {
    if a.is_nan() || e.is_nan() {
        if a.is_nan() && e.is_nan() { 0.0 } else { f64::INFINITY }
    } else if a.is_infinite() || e.is_infinite() {
        if a == e { 0.0 } else { f64::INFINITY }
    } else {
        (f64::from(a) - f64::from(e)).abs()
    }
}
