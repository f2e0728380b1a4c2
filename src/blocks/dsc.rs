//! The depthwise-separable block of MobileNet and Xception: a depthwise
//! k×k conv (one channel per group, any stride, padding and dilation)
//! then a pointwise 1×1 conv, each with an optional BatchNorm (folded into
//! its conv, [`Conv::fold`]) and activation (fused into its kernel).
//!
//! Two ways to run it ([`DscMode`]): two kernels through the whole
//! intermediate tensor (`unfused`), or the fused kernel
//! ([`crate::codegen::dsc`]), which computes the block band by band of
//! output rows: each band's depthwise output goes into a buffer that stays
//! in cache (about 256 KiB) and the pointwise stage reads it from there.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{BatchNorm, Conv};
use crate::abi::{Code, DepthwiseFn, PointwiseFn};
use crate::alloc;
use crate::codegen::Plan;
use crate::codegen::dsc::{self as lowering, Band, DscSchedule, Stage};
use crate::engine::{Engine, Prepared};
use crate::error::{Error, Result};
use crate::jit::Compiler;
use crate::kernel::Epilogue;
use crate::runtime::{self, Kept, Scratch};
use crate::spec::{Activation, Op, ValidSpec};

/// How a depthwise-separable block runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DscMode {
    /// The fused kernel: the depthwise output goes band by band through a
    /// buffer that stays in cache.
    #[default]
    Fused,
    /// Two kernels; the depthwise output is written whole, then read.
    Unfused,
    /// Whichever of the two runs faster on this machine: both are
    /// prepared and timed on the block's shape when it is prepared, and
    /// the faster kept ([`Dsc::prepare`]).
    Auto,
}

impl fmt::Display for DscMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DscMode::Fused => "fused",
            DscMode::Unfused => "unfused",
            DscMode::Auto => "auto",
        })
    }
}

impl FromStr for DscMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<DscMode> {
        match s {
            "fused" => Ok(DscMode::Fused),
            "unfused" => Ok(DscMode::Unfused),
            "auto" => Ok(DscMode::Auto),
            _ => Err(Error::Block(format!("unknown dsc mode {s:?}: give fused, unfused or auto"))),
        }
    }
}

/// The depthwise-separable units of MobileNetV2 (width 1.0, 224×224): the
/// expanded depthwise 3×3 and the projection after it, as
/// `(channels, input size, stride, pointwise output channels)`, one entry
/// per distinct shape. The benchmarks of fusion run on these.
pub const MOBILENET_V2: &[(usize, usize, usize, usize)] = &[
    (32, 112, 1, 16),
    (96, 112, 2, 24),
    (144, 56, 1, 24),
    (144, 56, 2, 32),
    (192, 28, 1, 32),
    (192, 28, 2, 64),
    (384, 14, 1, 64),
    (384, 14, 1, 96),
    (576, 14, 1, 96),
    (576, 14, 2, 160),
    (960, 7, 1, 160),
    (960, 7, 1, 320),
];

/// A depthwise conv and the pointwise conv after it, weights bound.
#[derive(Clone, Debug)]
pub struct Dsc {
    depthwise: Conv,
    pointwise: Conv,
}

impl Dsc {
    /// The block from its two convs (BatchNorms already folded, activations
    /// in their specs): `depthwise` a conv2d with one input and one output
    /// channel per group, `pointwise` a 1×1 conv2d (stride 1, no padding,
    /// one group) on exactly the depthwise's output.
    pub fn new(depthwise: Conv, pointwise: Conv) -> Result<Dsc> {
        let (d, p) = (depthwise.spec(), pointwise.spec());
        if d.op() != Op::Conv2d || d.groups() != d.in_channels() || d.out_channels() != d.groups() {
            return Err(Error::Block(format!(
                "dsc: the depthwise conv must be a conv2d with groups = in_channels = \
                 out_channels, not {d}"
            )));
        }
        let pad = p.padding();
        if p.op() != Op::Conv2d
            || p.kernel() != [1, 1]
            || p.stride() != [1, 1]
            || p.groups() != 1
            || [pad.top, pad.left, pad.bottom, pad.right] != [0; 4]
        {
            return Err(Error::Block(format!(
                "dsc: the pointwise conv must be a 1×1 conv2d, stride 1, no padding, one group, \
                 not {p}"
            )));
        }
        if p.input_shape() != d.output_shape() {
            return Err(Error::Block(format!(
                "dsc: the pointwise conv takes {:?} but the depthwise one gives {:?}",
                p.input_shape(),
                d.output_shape()
            )));
        }
        Ok(Dsc { depthwise, pointwise })
    }

    /// The block with random weights: a depthwise conv of `depthwise`'s
    /// spec, then a pointwise one to `out_channels`, each with a random
    /// BatchNorm folded in and its activation.
    pub fn random(
        depthwise: &ValidSpec,
        out_channels: usize,
        activations: [Activation; 2],
        seed: u64,
    ) -> Result<Dsc> {
        let conv = |spec: ValidSpec, act: Activation, seed: u64| -> Result<Conv> {
            let mut s = spec.to_conv_spec();
            (s.bias, s.activation, s.negative_slope) = (false, Default::default(), None);
            let bn = BatchNorm::random(spec.out_channels(), seed + 1);
            Conv::random(s.validate()?, seed)?.fold(&bn)?.with_activation(act)
        };
        let dw = conv(depthwise.clone(), activations[0], seed)?;
        let mut p = crate::spec::ConvSpec::new(
            Op::Conv2d,
            depthwise.batch() as i64,
            depthwise.out_channels() as i64,
            out_channels as i64,
            (depthwise.out_height() as i64, depthwise.out_width() as i64),
            [1, 1],
        );
        p.name = depthwise.name().map(|n| format!("{n}.pointwise"));
        let pw = conv(p.validate()?, activations[1], seed + 2)?;
        Dsc::new(dw, pw)
    }

    /// The MobileNetV2 unit `(channels, size, stride, out_channels)` (see
    /// [`MOBILENET_V2`]) with random weights: depthwise 3×3 with padding 1
    /// and ReLU6, pointwise without activation (the linear bottleneck),
    /// BatchNorms folded.
    pub fn mobilenet_v2(
        (channels, size, stride, out_channels): (usize, usize, usize, usize),
        seed: u64,
    ) -> Result<Dsc> {
        let (c, hw) = (channels as i64, size as i64);
        let mut dw = crate::spec::ConvSpec::new(Op::Conv2d, 1, c, c, (hw, hw), [3, 3]);
        let s = stride as i64;
        (dw.stride, dw.padding, dw.groups) = ([s, s].into(), [1, 1].into(), c);
        dw.name = Some(format!("mbv2_dw{channels}_{size}_s{stride}_pw{out_channels}"));
        Dsc::random(&dw.validate()?, out_channels, [Activation::Relu6, Activation::None], seed)
    }

    /// The depthwise conv.
    pub fn depthwise(&self) -> &Conv {
        &self.depthwise
    }
    /// The pointwise conv.
    pub fn pointwise(&self) -> &Conv {
        &self.pointwise
    }

    /// The block's output on `input` from the reference interpreter (the
    /// depthwise output rounded to f32 between the two, as both modes
    /// keep it).
    pub fn reference(&self, input: &[f32]) -> Result<Vec<f32>> {
        self.pointwise.reference(&self.depthwise.reference(input)?)
    }

    /// Why the fused kernel cannot compute this block, when it cannot. It
    /// unrolls every depthwise tap, so a kernel past the emitter's limit
    /// runs as the two kernels, which loop over them; so does a block whose
    /// depthwise weights hold ±∞ or NaN, since the fused kernel multiplies
    /// its band copies' zero borders, which such a weight makes NaN, where
    /// the kernels redo those outputs exactly (see `border`).
    pub fn unfusable(&self) -> Option<String> {
        let [kh, kw] = self.depthwise.spec().kernel();
        if kh * kw > crate::codegen::MAX_UNROLLED_TAPS {
            return Some(format!("a {kh}×{kw} depthwise kernel is past the fused kernel's taps"));
        }
        let nonfinite = self.depthwise.weight().iter().any(|w| !w.is_finite());
        nonfinite.then(|| format!("a {kh}×{kw} depthwise kernel has non-finite weights"))
    }

    /// The mode [`Dsc::prepare`] runs the block in when asked for `mode`:
    /// unfused, whatever `mode` says, when the block is
    /// [`Dsc::unfusable`].
    pub fn mode_for(&self, mode: DscMode) -> DscMode {
        match (mode, self.unfusable()) {
            (DscMode::Fused | DscMode::Auto, Some(_)) => DscMode::Unfused,
            _ => mode,
        }
    }

    /// Prepares the block to run `mode`, compiled by `compiler` (the
    /// host's when `None`), on up to `threads` threads. A depthwise kernel
    /// of more than [`crate::codegen::MAX_UNROLLED_TAPS`] taps, or with a
    /// non-finite weight, runs unfused whatever `mode` says
    /// ([`PreparedDsc::mode`] tells).
    pub fn prepare(
        &self,
        mode: DscMode,
        compiler: Option<&Compiler>,
        threads: usize,
    ) -> Result<PreparedDsc> {
        self.prepare_epilogue(mode, compiler, threads, Epilogue::Store)
    }

    /// [`Dsc::prepare`], the pointwise conv's outputs stored as `epilogue`
    /// says when the block runs unfused (the fused kernel has no sum
    /// epilogue: [`PreparedDsc::epilogue`] tells which the block has; on
    /// `auto` the fused kernel is timed against the pair with the
    /// epilogue asked for).
    pub fn prepare_epilogue(
        &self,
        mode: DscMode,
        compiler: Option<&Compiler>,
        threads: usize,
        epilogue: Epilogue,
    ) -> Result<PreparedDsc> {
        let compiler = &*Compiler::given_or_host(compiler)?;
        if let (DscMode::Fused | DscMode::Auto, Some(why)) = (mode, self.unfusable()) {
            log::info!("dsc: {why}: the block runs unfused");
        }
        let mode = self.mode_for(mode);
        let inner = match mode {
            DscMode::Auto => {
                let unfused =
                    self.prepare_epilogue(DscMode::Unfused, Some(compiler), threads, epilogue)?;
                // A fused kernel that fails to compile leaves the pair.
                let fused = match self.prepare(DscMode::Fused, Some(compiler), threads) {
                    Ok(fused) => fused,
                    Err(e) => {
                        log::info!("dsc auto: the fused kernel: {e}; the block runs unfused");
                        return Ok(unfused);
                    }
                };
                let (t_fused, t_unfused) = time_pair(&fused, &unfused)?;
                log::info!(
                    "dsc auto: {} fused {t_fused:?}, unfused {t_unfused:?}",
                    self.depthwise.spec()
                );
                return Ok(if t_fused <= t_unfused { fused } else { unfused });
            }
            DscMode::Fused => {
                let schedule =
                    DscSchedule::choose(self.depthwise.spec(), self.pointwise.spec(), threads);
                Inner::Fused(Box::new(DscKernel::compile(compiler, self, &schedule)?))
            }
            DscMode::Unfused => {
                let dw = self.depthwise.prepare(Engine::Jit, Some(compiler), threads)?;
                let pw = self.pointwise.prepare_epilogue(
                    Engine::Jit,
                    Some(compiler),
                    threads,
                    epilogue,
                )?;
                let mid = alloc::zeroed_f32(self.depthwise.spec().output_len(), MID)?;
                let mid = Mutex::new(mid);
                Inner::Unfused { dw, pw, mid }
            }
        };
        Ok(PreparedDsc {
            input: self.depthwise.spec().clone(),
            output: self.pointwise.spec().clone(),
            inner,
        })
    }
}

/// The medians of `a`'s and `b`'s times on one input of the block's
/// shape (deterministic values), over runs interleaved after a warm-up
/// of each, so that a slow spell of the machine weighs on both.
fn time_pair(a: &PreparedDsc, b: &PreparedDsc) -> Result<(Duration, Duration)> {
    const RUNS: usize = 5;
    let x: Vec<f32> = (0..a.input.input_len()).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
    let mut y = alloc::zeroed_f32(a.output.output_len(), "the block's output")?;
    a.run(&x, &mut y)?;
    b.run(&x, &mut y)?;
    let (mut ta, mut tb) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        let start = std::time::Instant::now();
        a.run(&x, &mut y)?;
        ta.push(start.elapsed());
        let start = std::time::Instant::now();
        b.run(&x, &mut y)?;
        tb.push(start.elapsed());
    }
    ta.sort_unstable();
    tb.sort_unstable();
    Ok((ta[RUNS / 2], tb[RUNS / 2]))
}

/// The unfused block's intermediate tensor, for errors.
const MID: &str = "the depthwise output";

/// A depthwise-separable block ready to run.
pub struct PreparedDsc {
    input: ValidSpec,
    output: ValidSpec,
    inner: Inner,
}

enum Inner {
    Fused(Box<DscKernel>),
    Unfused { dw: Box<dyn Prepared>, pw: Box<dyn Prepared>, mid: Mutex<Vec<f32>> },
}

impl PreparedDsc {
    /// How it runs.
    pub fn mode(&self) -> DscMode {
        match self.inner {
            Inner::Fused(_) => DscMode::Fused,
            Inner::Unfused { .. } => DscMode::Unfused,
        }
    }

    /// What a run does with the output's previous contents (see
    /// [`Dsc::prepare_epilogue`]).
    pub fn epilogue(&self) -> Epilogue {
        match &self.inner {
            Inner::Fused(_) => Epilogue::Store,
            Inner::Unfused { pw, .. } => pw.epilogue(),
        }
    }

    /// The depthwise conv's spec (whose input the block takes).
    pub fn depthwise_spec(&self) -> &ValidSpec {
        &self.input
    }
    /// The pointwise conv's spec (whose output the block gives).
    pub fn pointwise_spec(&self) -> &ValidSpec {
        &self.output
    }

    /// Time spent compiling its code.
    pub fn compile_time(&self) -> Duration {
        match &self.inner {
            Inner::Fused(k) => k.compile_time,
            Inner::Unfused { dw, pw, .. } => {
                dw.compile_time().unwrap_or_default() + pw.compile_time().unwrap_or_default()
            }
        }
    }

    /// The output (NCHW) of `input` (NCHW); both lengths are checked first.
    pub fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        match &self.inner {
            Inner::Fused(k) => k.run(input, output),
            Inner::Unfused { dw, pw, mid } => {
                self.output.check_output(output.len())?;
                let mut guard = mid.try_lock();
                let mut local;
                let mid: &mut Vec<f32> = match guard.as_deref_mut() {
                    Ok(m) => m,
                    Err(_) => {
                        local = alloc::zeroed_f32(self.input.output_len(), MID)?;
                        &mut local
                    }
                };
                dw.run(input, mid)?;
                pw.run(mid, output)
            }
        }
    }
}

/// The fused depthwise-separable kernel with its packed weights.
pub struct DscKernel {
    dw: ValidSpec,
    pw: ValidSpec,
    schedule: DscSchedule,
    /// The depthwise plan: the padded input rows of each band.
    plan: Plan,
    band: Band,
    _code: [Code; 2],
    depthwise: DepthwiseFn,
    pointwise: PointwiseFn,
    compile_time: Duration,
    /// Depthwise weights `[channel][tap]` and bias `[channel]`.
    w_dw: Vec<f32>,
    b_dw: Vec<f32>,
    /// Pointwise weights `[block][C][outputs]` and bias by output channel.
    w_pw: Vec<f32>,
    b_pw: Vec<f32>,
    /// Per thread: one channel's band copy and the band buffer, kept
    /// between runs.
    buffers: Kept<(Scratch, Scratch)>,
}

impl DscKernel {
    /// Compiles `block` with `schedule` (checked first) and packs its
    /// weights. A depthwise kernel of more than
    /// [`crate::codegen::MAX_UNROLLED_TAPS`] taps is refused.
    pub fn compile(compiler: &Compiler, block: &Dsc, schedule: &DscSchedule) -> Result<DscKernel> {
        schedule.legal()?;
        let [kh, kw] = block.depthwise.spec().kernel();
        if kh * kw > crate::codegen::MAX_UNROLLED_TAPS {
            return Err(Error::Block(format!(
                "dsc: the fused kernel unrolls its depthwise taps, at most {}; a {kh}×{kw} \
                 kernel runs unfused",
                crate::codegen::MAX_UNROLLED_TAPS
            )));
        }
        let start = Instant::now();
        let (dw, pw) = (block.depthwise.spec().clone(), block.pointwise.spec().clone());
        // The depthwise stage is the width algorithm's copy and tiles: its
        // schedule passes the same checks as any layer's.
        let depthwise = schedule.depthwise();
        depthwise.legal(&dw)?;
        let plan = Plan::new(&dw, &depthwise);
        let isa = compiler.isa();
        let (pointer, call_conv) = (isa.pointer_type(), isa.default_call_conv());
        let stage = |stage: Stage, signature| -> Result<(Code, *const u8)> {
            compiler.define(signature, |func, target, _| {
                lowering::lower(stage, (&dw, &pw), schedule, &plan, target, func);
                Ok(())
            })
        };
        let (dw_code, depthwise) =
            stage(Stage::Depthwise, DepthwiseFn::signature(pointer, call_conv))?;
        let (pw_code, pointwise) =
            stage(Stage::Pointwise, PointwiseFn::signature(pointer, call_conv))?;
        // SAFETY: each function was compiled with its handle's signature in
        // the ISA's default calling convention; the codes own them.
        let (depthwise, pointwise) =
            unsafe { (DepthwiseFn::from_code(depthwise), PointwiseFn::from_code(pointwise)) };
        let compile_time = start.elapsed();
        let (w_dw, b_dw) = pack_depthwise(&block.depthwise)?;
        let outputs = schedule.pw_outputs.min(pw.out_channels());
        let (w_pw, b_pw) = pack_pointwise(&block.pointwise, outputs)?;
        log::info!("compiled the fused {dw} + {pw} in {compile_time:?}");
        Ok(DscKernel {
            band: Band::of(&dw, schedule, &plan),
            dw,
            pw,
            schedule: *schedule,
            plan,
            _code: [dw_code, pw_code],
            depthwise,
            pointwise,
            compile_time,
            w_dw,
            b_dw,
            w_pw,
            b_pw,
            buffers: Kept::default(),
        })
    }

    /// The schedule it was compiled with.
    pub fn schedule(&self) -> &DscSchedule {
        &self.schedule
    }

    /// The block's output (NCHW) of `input` (NCHW), lengths checked first,
    /// on the schedule's threads.
    pub fn run(&self, input: &[f32], output: &mut [f32]) -> Result<()> {
        self.run_on(self.schedule.threads, input, output)
    }

    /// [`DscKernel::run`] on up to `threads` threads instead of the
    /// schedule's (the code does not depend on them).
    pub fn run_on(&self, threads: usize, input: &[f32], output: &mut [f32]) -> Result<()> {
        self.dw.check_input(input.len())?;
        self.pw.check_output(output.len())?;
        let threads = runtime::threads(threads, self.band.parts);
        let copy = if self.plan.bands.is_some() { self.plan.plane_len() } else { 0 };
        let make = || {
            Ok((
                Scratch::zeroed(copy, "the fused block's band copy")?,
                Scratch::zeroed(self.band.buffer_len(), "the fused block's band buffer")?,
            ))
        };
        self.buffers.with(threads, make, |buffers| {
            self.run_images(input, output, &mut buffers[..threads]);
            Ok(())
        })
    }

    /// Every image, its bands dealt out to one thread a pair of buffers.
    fn run_images(&self, input: &[f32], output: &mut [f32], buffers: &mut [(Scratch, Scratch)]) {
        let (dw, threads) = (&self.dw, buffers.len());
        let (image_in, image_out) =
            (dw.input_len() / dw.batch(), self.pw.output_len() / self.pw.batch());
        let parts = self.band.parts;
        for (x, y) in input.chunks(image_in).zip(output.chunks_mut(image_out)) {
            let out = Out(y.as_mut_ptr());
            let out = &out; // shared whole: its field alone is not `Sync`
            let shares = runtime::Shares::new(parts, threads);
            let work = |t: usize, (copy, band): &mut (Scratch, Scratch)| {
                while let Some(b) = shares.next(t) {
                    let rows = self.band.rows_of(dw.out_height(), b);
                    let (lo, hi) = (rows.start as i64, rows.end as i64);
                    let copy_rows = self.plan.band_rows(b);
                    // SAFETY: the function was generated for this plan and
                    // schedule. For every channel it reads the input rows
                    // of padded rows `band_rows(b)` that hold pixels, inside
                    // this image (whose length was checked), and writes
                    // those padded rows into the copy buffer, which holds a
                    // band's `Bands::rows` stored rows of one plane (it reads
                    // the image's plane directly when the plan needs no
                    // copy); it reads the channel's weights and bias (the
                    // lengths `pack_depthwise` made) and writes the band's
                    // rows of the channel's plane of the band buffer, which
                    // holds `band.buffer_len()` floats. Each thread has its
                    // own buffers.
                    unsafe {
                        self.depthwise.call(
                            x.as_ptr(),
                            self.w_dw.as_ptr(),
                            self.b_dw.as_ptr(),
                            band.as_mut_ptr(),
                            copy.as_mut_ptr(),
                            lo,
                            hi,
                            copy_rows.start as i64,
                            copy_rows.end as i64,
                        )
                    };
                    // SAFETY: the pointwise function reads the band buffer
                    // the depthwise calls just filled, the packed weights
                    // and bias (`pack_pointwise`'s lengths), and writes the
                    // band's output rows inside this image's output, whose
                    // length was checked; the threads' bands are disjoint.
                    unsafe {
                        self.pointwise.call(
                            band.as_ptr(),
                            self.w_pw.as_ptr(),
                            self.b_pw.as_ptr(),
                            out.0,
                            lo,
                            hi,
                        )
                    };
                }
            };
            runtime::on_threads(buffers, work);
        }
    }
}

/// The output of one image, which the threads of a run write in disjoint
/// rows.
struct Out(*mut f32);

// SAFETY: only the compiled code dereferences the pointer, each thread in
// its own rows (see `DscKernel::run`).
unsafe impl Sync for Out {}

/// Depthwise weights in PyTorch's layout (`[channel][tap]`) and the bias,
/// zero without one.
fn pack_depthwise(conv: &Conv) -> Result<(Vec<f32>, Vec<f32>)> {
    let channels = conv.spec().out_channels();
    let what = "the fused block's depthwise weights";
    let bias = match conv.bias() {
        Some(bias) => alloc::copied(bias, what)?,
        None => alloc::zeroed_f32(channels, what)?,
    };
    Ok((alloc::copied(conv.weight(), what)?, bias))
}

/// Pointwise weights as `[output block][input channel][outputs]` and the
/// bias by output channel, zero past the last output channel.
fn pack_pointwise(conv: &Conv, outputs: usize) -> Result<(Vec<f32>, Vec<f32>)> {
    let spec = conv.spec();
    let (cin, cout) = (spec.in_channels(), spec.out_channels());
    let blocks = cout.div_ceil(outputs);
    let what = "the fused block's pointwise weights";
    let mut w = alloc::zeroed_f32(blocks * cin * outputs, what)?;
    let mut b = alloc::zeroed_f32(blocks * outputs, what)?;
    for oc in 0..cout {
        let (block, k) = (oc / outputs, oc % outputs);
        for c in 0..cin {
            w[(block * cin + c) * outputs + k] = conv.weight()[oc * cin + c];
        }
        b[oc] = conv.bias().map_or(0.0, |bias| bias[oc]);
    }
    Ok((w, b))
}
