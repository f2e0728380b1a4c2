//! Lowering the fused depthwise-separable kernel: a depthwise k×k conv
//! (multiplier 1) and the pointwise 1×1 conv after it, as two functions
//! that pass the depthwise output through a cache-sized band buffer
//! instead of a whole tensor in memory.
//!
//! The block is computed in bands of `band_rows` output rows, by two
//! functions. The *depthwise function* takes a band's channels in turn: it
//! copies the input rows the band reads from the channel's plane of the
//! image into a small zero-bordered buffer (it stays in L1, as the width
//! strategy's per-group copy does; strided rows are split into column
//! phases there, by `shufps` pairs for stride 2), then computes the
//! channel's rows of the band: register tiles of `dw_rows` rows ×
//! `dw_vectors` vectors of 4 pixels, one weight broadcast per tap reused by
//! the whole tile and the input vectors loaded into the FMAs (the width
//! strategy's microkernel), the activation, and whole-vector stores into
//! the band buffer `[channel][band row][W₄]` (rows rounded up to whole
//! vectors; it stays in L2). The *pointwise function* then runs over the
//! band's rows: register tiles of `pw_outputs` output channels ×
//! `pw_vectors` vectors of pixels, a loop over the input channels unrolled
//! `pw_unroll` times that loads each channel's buffered vectors once and
//! multiplies them by a fresh broadcast of each output channel's weight
//! (rules 3–6 of `codegen::tile`), then the bias, the activation and
//! whole-vector NCHW stores. Compared to two kernels, the intermediate
//! tensor never leaves the cache, and the pointwise stage reads a buffer
//! laid out for it instead of one image plane per input channel.
//!
//! The depthwise function has the C signature `fn(x, w, b, t, copy, first,
//! last, from, to)`: `x` the NCHW image, every channel's weights and bias,
//! `t` the band buffer, `copy` the one-plane copy buffer, `[first, last)`
//! the band's output rows and `[from, to)` the padded input rows they read.
//! The pointwise function is `fn(t, w, b, y, first, last)`: the band
//! buffer, the packed weights and bias (see `blocks::dsc`), the image's
//! NCHW output.
//!
//! As in [`super`], every address is in range by construction: the copy
//! reads only the image rows that hold pixels and writes only the buffer's
//! rows of one band; the plan pads the input for every tap and for the
//! whole vectors read at a row's end; the band buffer holds every row of
//! the largest band in whole vectors; lanes past a row's last pixel are
//! never stored.

mod depthwise;
mod pointwise;
mod schedule;

use cranelift_codegen::ir::{Function, InstBuilder, Value};
use cranelift_frontend::FunctionBuilderContext;

use super::lower::{self, Base, Index, Lower};
use super::{Plan, Target};
use crate::spec::ValidSpec;
pub use schedule::{Band, DscSchedule};

/// Which of the two functions to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// One channel's depthwise output over a band, into the band buffer.
    Depthwise,
    /// Every output channel over a band, from the band buffer.
    Pointwise,
}

/// Emits the body of `func` (whose signature is `abi::DepthwiseFn`'s or `abi::PointwiseFn`'s): `stage` of
/// the block `dw` then `pw`; `plan` is the depthwise plan of
/// [`DscSchedule::depthwise`].
pub fn lower(
    stage: Stage,
    (dw, pw): (&ValidSpec, &ValidSpec),
    schedule: &DscSchedule,
    plan: &Plan,
    target: Target,
    func: &mut Function,
) {
    let mut fctx = FunctionBuilderContext::new();
    let (base, p) = lower::begin(func, &mut fctx, target);
    let mut e = Fused {
        dw,
        pw,
        s: schedule,
        plan,
        band: Band::of(dw, schedule, plan),
        base,
        params: [p[0], p[1], p[2], p[3]],
    };
    match stage {
        Stage::Depthwise => e.depthwise(p[4], [p[5], p[6]], [p[7], p[8]]),
        Stage::Pointwise => e.pointwise(p[4], p[5]),
    }
    lower::finish(e.base);
}

struct Fused<'a> {
    dw: &'a ValidSpec,
    pw: &'a ValidSpec,
    s: &'a DscSchedule,
    plan: &'a Plan,
    band: Band,
    base: Base<'a>,
    /// The four pointer parameters.
    params: [Value; 4],
}

impl<'a> Lower<'a> for Fused<'a> {
    fn base(&mut self) -> &mut Base<'a> {
        &mut self.base
    }
}

impl Fused<'_> {
    /// Runs `tile(v0, n)` over the vectors `0..vectors` of a row in tiles of
    /// `per_tile`: a loop over the first `looped` whole tiles (keeping the
    /// code small: rule 8 of `codegen::tile`), then the rest one by one, emitted
    /// with their first vector known.
    fn vector_tiles(
        &mut self,
        vectors: usize,
        per_tile: usize,
        looped: usize,
        mut tile: impl FnMut(&mut Self, Index, usize),
    ) {
        if looped > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(looped as i64);
            self.counted_loop(zero, end, 1, &[], |e, k, _| {
                let v0 = e.base.fb.ins().imul_imm_s(k, per_tile as i64);
                tile(e, Index::Variable(v0), per_tile);
                vec![]
            });
        }
        for v0 in (looped * per_tile..vectors).step_by(per_tile) {
            tile(self, Index::Fixed(v0), per_tile.min(vectors - v0));
        }
    }

    /// Runs `group(c, n)` over the channels `0..count` in groups of `n`:
    /// a loop over the whole groups, then the rest as one group.
    fn channel_groups(
        &mut self,
        count: usize,
        n: usize,
        mut group: impl FnMut(&mut Self, Index, usize),
    ) {
        let whole = count - count % n;
        if whole > 0 {
            let zero = self.iconst(0);
            let end = self.iconst(whole as i64);
            self.counted_loop(zero, end, n as i64, &[], |e, c, _| {
                group(e, Index::Variable(c), n);
                vec![]
            });
        }
        if whole < count {
            group(self, Index::Fixed(whole), count - whole);
        }
    }
}
