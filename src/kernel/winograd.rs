//! A kernel computed through Winograd's minimal filtering
//! ([`crate::algorithm::winograd`]): the layer's output is cut into m_h ×
//! m_w tiles (m × m, or 1 × m and m × 1 for 1-D kernels), and the tiles of
//! the batch, in order, into panels; threads share panels. For each panel,
//! on its thread's buffer:
//!
//! 1. each input channel's tiles are transformed (`Bᵀ d B`) into the
//!    panel's transformed input, `α_h·α_w·C_in` rows of the panel's tiles;
//! 2. the kernel's compiled code — the batched products, a grouped 1×1
//!    layer ([`Winograd::gemm`]) — multiplies them by the weights
//!    transformed at pack time (`G_h g G_wᵀ`, in f64, rounded once);
//! 3. each output channel's products are transformed back (`Aᵀ_h M A_w`),
//!    the bias added and the activation applied, and the outputs inside
//!    the image stored.
//!
//! An output the transforms leave non-finite is recomputed exactly
//! ([`crate::border::exact`]): a non-finite input or weight spreads over
//! the outputs of its tile that any nonzero entry of the transforms
//! reaches, often as ∞ − ∞, and the transformed values can overflow where the
//! direct sum does not, while every output must be what the direct sum
//! gives (NaN where it is NaN, ±∞ where it is, finite where it is). Where
//! every output is finite this costs one test a value.

use std::ops::Range;
use std::sync::Mutex;

use super::{Kernel, PackedWeights};
use crate::algorithm::winograd::rows::{CHUNK, InputChunk, OutputChunk};
use crate::algorithm::winograd::{Rows, Tiles, Transform, Winograd};
use crate::alloc;
use crate::error::{Error, Result};
use crate::runtime::{self, Scratch};
use crate::schedule::Run;
use crate::spec::ValidSpec;
use crate::target::Isa;

/// What a Winograd kernel knows of its layer beyond the compiled products.
#[derive(Clone, Debug)]
pub(crate) struct Layer {
    transform: Transform,
    rows: Rows,
    tiles: Tiles,
    /// Tiles per panel.
    panel: usize,
    /// Panels of the batch.
    pub(super) panels: usize,
    /// The batched products' layer ([`Winograd::gemm`]).
    gemm: ValidSpec,
}

/// What a Winograd kernel's packed weights hold beyond the transformed
/// weights the compiled products read: the layer's weights and bias as
/// given, the bias added after the output transform, both read by the
/// outputs recomputed exactly.
#[derive(Clone, Debug)]
pub(crate) struct Weights {
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
}

impl Layer {
    /// The Winograd layer of `spec` under `config` (legal for it), its
    /// transforms on vectors of at most `isa` (the compiler's).
    pub(crate) fn new(spec: &ValidSpec, config: Winograd, isa: Isa) -> Result<Layer> {
        config.legal(spec)?;
        let transform = config.transform(spec);
        Ok(Layer {
            rows: Rows::new(&transform, isa),
            transform,
            tiles: config.tiles(spec),
            panel: config.panel_tiles(spec),
            panels: config.panels(spec),
            gemm: config.gemm(spec)?,
        })
    }

    /// Transform points: α_h·α_w.
    fn points(&self) -> usize {
        self.transform.points()
    }

    /// Floats of one thread's buffer: the panel's transformed input and
    /// products.
    fn buffer_len(&self, spec: &ValidSpec) -> usize {
        self.points() * (spec.in_channels() + spec.out_channels()) * self.panel
    }

    /// The layer's weights (PyTorch's `[C_out, C_in/groups, r_h, r_w]`)
    /// transformed, `G_h g G_wᵀ` in f64 rounded to f32, in the layout of the
    /// batched products' weights: output channel `ξ·C_out + k`.
    fn transform_weights(&self, spec: &ValidSpec, weight: &[f32]) -> Result<Vec<f32>> {
        let (c_out, cig) = (spec.out_channels(), spec.in_per_group());
        let taps = spec.kernel()[0] * spec.kernel()[1];
        let mut u = alloc::zeroed_f32(self.points() * c_out * cig, "the transformed weights")?;
        let (mut g, mut t) = (vec![0.0; taps], vec![0.0; self.points()]);
        for (k, kernels) in weight.chunks_exact(cig * taps).enumerate() {
            for (c, kernel) in kernels.chunks_exact(taps).enumerate() {
                g.iter_mut().zip(kernel).for_each(|(g, &w)| *g = f64::from(w));
                self.transform.kernel_into(&g, &mut t);
                for (xi, &v) in t.iter().enumerate() {
                    u[(xi * c_out + k) * cig + c] = v as f32;
                }
            }
        }
        Ok(u)
    }
}

/// The output tensor, written by the threads of a run at disjoint
/// elements through its pointer (never through overlapping references).
struct Output {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the threads write disjoint elements (the outputs of the tiles of
// their own panels, each tile in one panel, each panel on one thread) and
// read none.
unsafe impl Sync for Output {}

impl Output {
    /// Writes `run` from element `i` on (in bounds: asserted).
    fn write(&self, i: usize, run: &[f32]) {
        assert!(i <= self.len && run.len() <= self.len - i, "outputs inside the tensor");
        // SAFETY: in bounds; no reference to these elements exists, and
        // `run` is not among them (it is the caller's own buffer).
        unsafe { std::ptr::copy_nonoverlapping(run.as_ptr(), self.ptr.add(i), run.len()) }
    }
}

/// A chunk of at most [`CHUNK`] consecutive tiles of one image: image
/// `n`, its tiles `tiles` (numbered row by row), at position `pos` of
/// their panel.
struct Segment {
    n: usize,
    tiles: Range<usize>,
    pos: usize,
}

impl Layer {
    /// The chunks of at most [`CHUNK`] tiles of one image that panel `p`
    /// holds, in order: a chunk may span tile rows, so that images a few
    /// tiles wide fill the transforms' lanes too.
    fn segments(&self, p: usize) -> Vec<Segment> {
        let Tiles { rows, cols, count } = self.tiles;
        let (first, last) = (p * self.panel, ((p + 1) * self.panel).min(count));
        let mut out = Vec::new();
        let mut t = first;
        while t < last {
            let (n, within) = (t / (rows * cols), t % (rows * cols));
            let len = (rows * cols - within).min(last - t).min(CHUNK);
            out.push(Segment { n, tiles: within..within + len, pos: t - first });
            t += len;
        }
        out
    }
}

impl Kernel {
    /// Packs the weights of a Winograd kernel: transformed, then packed as
    /// the compiled products read them.
    pub(super) fn pack_winograd(
        &self,
        layer: &Layer,
        weight: &[f32],
        bias: Option<&[f32]>,
    ) -> Result<PackedWeights> {
        let spec = &self.spec;
        let u = layer.transform_weights(spec, weight)?;
        let mut packed = self.pack_layer(&layer.gemm, &u, None)?;
        drop(u);
        packed.winograd = Some(Box::new(Weights {
            weight: alloc::copied(weight, "the weights kept for outputs recomputed exactly")?,
            bias: bias.map(<[f32]>::to_vec),
        }));
        Ok(packed)
    }

    /// [`Kernel::run`] of a Winograd kernel (lengths and the weights'
    /// kernel checked): panels shared among `run.threads` threads.
    pub(super) fn run_winograd(
        &self,
        layer: &Layer,
        run: &Run,
        input: &[f32],
        weights: &PackedWeights,
        output: &mut [f32],
    ) -> Result<()> {
        let Some(extra) = weights.winograd.as_deref() else {
            return Err(Error::ForeignWeights);
        };
        let threads = runtime::threads(run.threads, layer.panels);
        let faults: Mutex<Option<Error>> = Mutex::new(None);
        let out = Output { ptr: output.as_mut_ptr(), len: output.len() };
        let copies = if self.plan.needs_copy { threads } else { 0 };
        let copy = || Scratch::zeroed(self.plan.copy_len(), "the padded input copy");
        let buffer = || Scratch::zeroed(layer.buffer_len(&self.spec), "the Winograd panel");
        self.scratch.with(copies, copy, |copies| {
            self.panels.with(threads, buffer, |buffers| {
                let mut copies = copies.iter_mut().map(Some).chain(std::iter::repeat_with(|| None));
                let mut pairs: Vec<_> =
                    buffers[..threads].iter_mut().map(|b| (b, copies.next().flatten())).collect();
                let shares = runtime::Shares::new(layer.panels, threads);
                runtime::on_threads(&mut pairs, |t, (buffer, copy)| {
                    while let Some(p) = shares.next(t) {
                        let copy =
                            copy.as_deref_mut().map(std::slice::from_mut).unwrap_or_default();
                        self.panel(layer, p, input, weights, extra, &out, buffer, copy, &faults);
                    }
                });
                Ok(())
            })
        })?;
        match faults.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(fault) => Err(fault),
            None => Ok(()),
        }
    }

    /// Panel `p`: its tiles transformed into `buffer`, multiplied by the
    /// compiled products (whose padded copy, if it makes one, is `copy`),
    /// and transformed back into the output.
    #[allow(clippy::too_many_arguments)]
    fn panel(
        &self,
        layer: &Layer,
        p: usize,
        x: &[f32],
        weights: &PackedWeights,
        extra: &Weights,
        out: &Output,
        buffer: &mut Scratch,
        copy: &mut [Scratch],
        faults: &Mutex<Option<Error>>,
    ) {
        let spec = &self.spec;
        let [_, c_in, h, w] = spec.input_shape();
        let [_, c_out, oh, ow] = spec.output_shape();
        let (points, panel) = (layer.points(), layer.panel);
        let pad = spec.padding();
        let (transformed, products) = buffer.get_mut().split_at_mut(points * c_in * panel);
        let segments = layer.segments(p);
        for s in &segments {
            for c in 0..c_in {
                layer.rows.input(InputChunk {
                    x: &x[(s.n * c_in + c) * h * w..][..h * w],
                    size: [h, w],
                    pad: [pad.top, pad.left],
                    tiles: s.tiles.clone(),
                    tile_cols: layer.tiles.cols,
                    out: &mut transformed[c * panel + s.pos..],
                    stride: c_in * panel,
                    room: panel - s.pos,
                });
            }
        }
        self.run_images(&Run::default(), 1, transformed, weights, products, copy, faults);
        for s in &segments {
            for k in 0..c_out {
                let plane = (s.n * c_out + k) * oh * ow;
                let chunk = OutputChunk {
                    products: &products[k * panel + s.pos..],
                    stride: c_out * panel,
                    room: panel - s.pos,
                    bias: extra.bias.as_ref().map_or(0.0, |b| b[k]),
                    activation: spec.activation(),
                    size: [oh, ow],
                    tiles: s.tiles.clone(),
                    tile_cols: layer.tiles.cols,
                };
                let store = |i: usize, j: usize, run: &[f32]| out.write(plane + i * ow + j, run);
                let redo = |i: usize, j: usize| {
                    let bias = extra.bias.as_deref();
                    let v = crate::border::exact(spec, &extra.weight, bias, x, [s.n, k, i, j]);
                    out.write(plane + i * ow + j, &[v]);
                };
                layer.rows.output(chunk, store, redo);
            }
        }
    }
}
