//! Winograd's transforms in f32 as the kernel applies them: up to
//! [`CHUNK`] consecutive tiles of one channel's plane at a time (of one
//! tile row or of several, so that planes a few tiles wide fill the
//! lanes too), each tile a lane, so that every step of a transform is one
//! operation on the lanes of all of them (vectors the compiler emits for
//! the host's widest ISA: AVX-512 or AVX2 and FMA where it has them).
//!
//! The input transform `Bᵀ_h d B_w` gathers each tile's α_h × α_w window
//! of the (zero-padded) plane into the lanes, then sums along the rows
//! with the nonzero entries of `Bᵀ_w` and down the columns with those of
//! `Bᵀ_h` (an axis of one tap, α = 1, is left as it is), and stores each
//! transform point's lanes as one run of the panel's row for that point
//! and channel. The output transform `Aᵀ_h M A_w` loads each point's run
//! of products, sums down the columns and along the rows, adds the bias,
//! puts each output row's pixels back in order (tile by tile) and stores
//! each tile row's run of them after the activation. The tiles of 3 × 3
//! and 5 × 5 kernels (F(2, 3), F(4, 3), F(6, 3), F(2, 5), F(4, 5)) and the
//! 1-D tiles of 1 × 3, 3 × 1, 1 × 7 and 7 × 1 kernels (F(2, 3), F(4, 3),
//! F(6, 3), F(2, 7)) are compiled for their sizes, every loop unrolled;
//! the others run the same code with their sizes as variables.

// The transforms are written as their formulas, index by index: clearer
// here than iterators over the grids' rows, and the same code once the
// sizes are constants.
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use super::{Axis, MAX_ALPHA, Transform};
use crate::spec::Activation;
use crate::target::Isa;

/// Tiles transformed together: the lanes of one transform step.
pub const CHUNK: usize = 16;

/// The largest output tile side (kernels of at least 2 taps).
const MAX_M: usize = MAX_ALPHA - 1;

/// One value of each of the chunk's tiles.
type Lanes = [f32; CHUNK];

/// An `H` × `W` grid of lanes: α_h × α_w (or the largest α, of which a
/// transform compiled without its sizes uses the first α_h × α_w).
type Grid<const H: usize, const W: usize> = [[Lanes; W]; H];

/// `Σ_k coefficients[k] · source(k)` over the first `len` coefficients,
/// lane by lane, skipping the zero ones.
#[inline(always)]
fn sum<'a>(
    coefficients: &[f32; MAX_ALPHA],
    len: usize,
    source: impl Fn(usize) -> &'a Lanes,
) -> Lanes {
    let mut acc = [0.0; CHUNK];
    for (k, &c) in coefficients.iter().enumerate().take(len) {
        if c != 0.0 {
            let s = source(k);
            for l in 0..CHUNK {
                acc[l] += c * s[l];
            }
        }
    }
    acc
}

/// Applies `activation` to every value of `run` (NaN stays NaN), as
/// [`Activation::apply_f32`] does.
#[inline(always)]
fn activate(run: &mut [f32], activation: Activation) {
    match activation {
        Activation::None => {}
        Activation::Relu => run.iter_mut().for_each(|v| *v = if *v < 0.0 { 0.0 } else { *v }),
        Activation::Relu6 => run.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Activation::LeakyRelu { negative_slope } => {
            run.iter_mut().for_each(|v| *v = if *v < 0.0 { negative_slope * *v } else { *v })
        }
    }
}

/// The input tiles of one call of [`Rows::input`].
pub struct InputChunk<'a> {
    /// One channel's plane, `size` = `[h, w]`.
    pub x: &'a [f32],
    /// The plane's height and width.
    pub size: [usize; 2],
    /// Rows and columns of zeros before its first: `[top, left]`.
    pub pad: [usize; 2],
    /// The tiles, at most [`CHUNK`] consecutive ones of the plane's
    /// (numbered row by row, `tile_cols` a row): lane `l` transforms tile
    /// `tiles.start + l`.
    pub tiles: Range<usize>,
    /// Tiles of a tile row.
    pub tile_cols: usize,
    /// Where transform point `ξ`'s values of the tiles go, one after the
    /// other: `out[ξ · stride ..]`.
    pub out: &'a mut [f32],
    /// The distance between two points' runs in `out`.
    pub stride: usize,
    /// How many values each point's run may take: where it is at least
    /// [`CHUNK`], all the lanes may be stored (one vector), those past the
    /// tiles as zeros, for the next call to overwrite.
    pub room: usize,
}

/// The products of one call of [`Rows::output`].
pub struct OutputChunk<'a> {
    /// One output channel's products: point `ξ`'s of the tiles at
    /// `products[ξ · stride ..]`, one after the other.
    pub products: &'a [f32],
    /// The distance between two points' runs.
    pub stride: usize,
    /// How many values each point's run holds from its first: where it is
    /// at least [`CHUNK`], all the lanes are loaded (one vector).
    pub room: usize,
    /// The channel's bias.
    pub bias: f32,
    /// The activation after the bias.
    pub activation: Activation,
    /// The output plane's height and width.
    pub size: [usize; 2],
    /// The tiles, as [`InputChunk::tiles`].
    pub tiles: Range<usize>,
    /// Tiles of a tile row.
    pub tile_cols: usize,
}

/// A run of a chunk's tiles that lie in one tile row.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    /// The lanes of the run's tiles.
    pub lanes: Range<usize>,
    /// Their tile row.
    pub row: usize,
    /// The tile column of the first.
    pub col: usize,
}

/// The chunk's `tiles` (`tile_cols` a tile row) as runs of at most `most`
/// tiles of one tile row, in order (one division for the first tile's
/// place, then steps).
pub fn runs(tiles: &Range<usize>, tile_cols: usize, most: usize) -> impl Iterator<Item = Run> {
    let (start, end) = (tiles.start, tiles.end);
    let (mut row, mut col) = (start / tile_cols, start % tile_cols);
    let mut t = start;
    std::iter::from_fn(move || {
        (t < end).then(|| {
            let len = (tile_cols - col).min(end - t).min(most);
            let run = Run { lanes: t - start..t - start + len, row, col };
            t += len;
            col += len;
            if col == tile_cols {
                (row, col) = (row + 1, 0);
            }
            run
        })
    })
}

/// A chunk's runs of one tile row ([`runs`] of at most [`CHUNK`] tiles),
/// kept for the output rows of its tiles to walk each.
pub struct Runs {
    all: [Run; CHUNK],
    len: usize,
}

impl Runs {
    /// The runs of `tiles` (at most [`CHUNK`]), `tile_cols` a tile row.
    #[inline(always)]
    pub fn new(tiles: &Range<usize>, tile_cols: usize) -> Runs {
        let mut all: [Run; CHUNK] = std::array::from_fn(|_| Run { lanes: 0..0, row: 0, col: 0 });
        let mut len = 0;
        for (slot, run) in all.iter_mut().zip(runs(tiles, tile_cols, CHUNK)) {
            *slot = run;
            len += 1;
        }
        Runs { all, len }
    }

    /// The runs, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Run> {
        self.all[..self.len].iter()
    }
}

/// Whether the chunk's tiles all lie in one tile row.
pub fn one_row(tiles: &Range<usize>, tile_cols: usize) -> bool {
    tiles.is_empty() || tiles.start / tile_cols == (tiles.end - 1) / tile_cols
}

/// The transforms of F(m_h × m_w, r_h × r_w) in f32, applied [`CHUNK`]
/// tiles at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// Outputs of a tile, `[m_h, m_w]`, and its input tile, `[α_h, α_w]`.
    m: [usize; 2],
    alpha: [usize; 2],
    /// `Bᵀ` (α × α) and `Aᵀ` (m × α) down the columns (`h`) and along the
    /// rows (`w`), zero past their sizes.
    bt: [[[f32; MAX_ALPHA]; MAX_ALPHA]; 2],
    at: [[[f32; MAX_ALPHA]; MAX_M]; 2],
    /// The widest vectors the compiled transforms use.
    isa: Isa,
    /// Whether the entries are those `Axis::new` builds on both axes: the
    /// AVX-512 bodies hold them as constants, so another transform of the
    /// same sizes runs the compiled-for-the-ISA ones.
    usual: bool,
}

/// Calls the body of `$body` for this transform's sizes in the host's
/// widest ISA: on AVX-512 the intrinsics of `avx512.rs` for the tiles
/// compiled for their sizes (the usual transforms: their entries are
/// constants there), square and 1-D; otherwise `$self.$body::<MH, AH, MW,
/// AW, AH, AW>` compiled for the ISA, or `<0, 0, 0, 0, MAX_ALPHA,
/// MAX_ALPHA>` for the other tiles.
macro_rules! dispatch {
    ($self:ident, $body:ident, $($arg:expr),*) => {{
        macro_rules! compiled {
            ($mh:literal, $ah:literal, $mw:literal, $aw:literal, $nh:expr, $nw:expr) => {
                match $self.isa {
                    // SAFETY: the host has the ISA's features (`Isa::host`).
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 => unsafe {
                        wide::$body::<$mh, $ah, $mw, $aw, $nh, $nw>($self, $($arg),*)
                    },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe {
                        narrow::$body::<$mh, $ah, $mw, $aw, $nh, $nw>($self, $($arg),*)
                    },
                    _ => $self.$body::<$mh, $ah, $mw, $aw, $nh, $nw>($($arg),*),
                }
            };
        }
        macro_rules! sized {
            ($mh:literal, $ah:literal, $mw:literal, $aw:literal) => {
                match $self.isa {
                    // SAFETY: the host has AVX-512F (`Isa::host`).
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx512 if $self.usual => unsafe {
                        super::avx512::$body::<$mh, $ah, $mw, $aw>($($arg),*)
                    },
                    _ => compiled!($mh, $ah, $mw, $aw, $ah, $aw),
                }
            };
        }
        match ($self.m, $self.alpha) {
            ([2, 2], [4, 4]) => sized!(2, 4, 2, 4),
            ([4, 4], [6, 6]) => sized!(4, 6, 4, 6),
            ([6, 6], [8, 8]) => sized!(6, 8, 6, 8),
            ([2, 2], [6, 6]) => sized!(2, 6, 2, 6),
            ([4, 4], [8, 8]) => sized!(4, 8, 4, 8),
            ([1, 2], [1, 4]) => sized!(1, 1, 2, 4),
            ([1, 4], [1, 6]) => sized!(1, 1, 4, 6),
            ([1, 6], [1, 8]) => sized!(1, 1, 6, 8),
            ([1, 2], [1, 8]) => sized!(1, 1, 2, 8),
            ([2, 1], [4, 1]) => sized!(2, 4, 1, 1),
            ([4, 1], [6, 1]) => sized!(4, 6, 1, 1),
            ([6, 1], [8, 1]) => sized!(6, 8, 1, 1),
            ([2, 1], [8, 1]) => sized!(2, 8, 1, 1),
            _ => compiled!(0, 0, 0, 0, MAX_ALPHA, MAX_ALPHA),
        }
    }};
}

/// The transforms compiled for a target feature set: `$name::input_body`
/// and `$name::output_body` call the bodies with it enabled.
macro_rules! compiled_for {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        mod $name {
            use super::{InputChunk, OutputChunk, Rows};

            #[target_feature(enable = $features)]
            pub(super) unsafe fn input_body<
                const MH: usize,
                const AH: usize,
                const MW: usize,
                const AW: usize,
                const NH: usize,
                const NW: usize,
            >(
                rows: &Rows,
                chunk: InputChunk<'_>,
            ) {
                rows.input_body::<MH, AH, MW, AW, NH, NW>(chunk)
            }

            #[target_feature(enable = $features)]
            pub(super) unsafe fn output_body<
                const MH: usize,
                const AH: usize,
                const MW: usize,
                const AW: usize,
                const NH: usize,
                const NW: usize,
            >(
                rows: &Rows,
                chunk: OutputChunk<'_>,
                store: impl FnMut(usize, usize, &[f32]),
                redo: impl FnMut(usize, usize),
            ) {
                rows.output_body::<MH, AH, MW, AW, NH, NW>(chunk, store, redo)
            }
        }
    };
}

compiled_for!(wide, "avx512f,avx2,fma");
compiled_for!(narrow, "avx2,fma");

/// `v` unless it is 0 (this transform's own size, a variable): `own`.
#[inline(always)]
const fn or(v: usize, own: usize) -> usize {
    if v == 0 { own } else { v }
}

impl Rows {
    /// The f32 transforms of `transform` on vectors of at most `isa`
    /// (those of them the host has): a compiler held to a narrower ISA
    /// runs no wider code here either.
    pub fn new(transform: &Transform, isa: Isa) -> Rows {
        let mut bt = [[[0.0; MAX_ALPHA]; MAX_ALPHA]; 2];
        let mut at = [[[0.0; MAX_ALPHA]; MAX_M]; 2];
        for (axis, t) in [&transform.h, &transform.w].into_iter().enumerate() {
            let (m, alpha) = (t.m, t.alpha());
            for i in 0..alpha {
                for j in 0..alpha {
                    bt[axis][i][j] = t.bt[i * alpha + j] as f32;
                }
            }
            for i in 0..m {
                for j in 0..alpha {
                    at[axis][i][j] = t.at[i * alpha + j] as f32;
                }
            }
        }
        let usual = [&transform.h, &transform.w].iter().all(|t| **t == Axis::new(t.m, t.r));
        let (m, alpha) = (transform.m(), transform.alpha());
        Rows { m, alpha, bt, at, isa: isa.min(Isa::host()), usual }
    }

    /// Transforms the chunk's tiles of one channel's plane (see
    /// [`InputChunk`]).
    pub fn input(&self, chunk: InputChunk<'_>) {
        assert!(chunk.tiles.len() <= CHUNK && chunk.tile_cols > 0, "a chunk of tiles");
        assert_eq!(chunk.x.len(), chunk.size[0] * chunk.size[1], "a channel's plane");
        dispatch!(self, input_body, chunk)
    }

    /// Transforms one output channel's products of the chunk's tiles
    /// back (see [`OutputChunk`]), adds the bias and, for the outputs that
    /// lie inside the plane, stores each output row's run of finite ones
    /// activated by `store(row, first column, run)`, then calls
    /// `redo(row, column)` for each one that is not finite before the
    /// activation (the caller recomputes it).
    pub fn output(
        &self,
        chunk: OutputChunk<'_>,
        store: impl FnMut(usize, usize, &[f32]),
        redo: impl FnMut(usize, usize),
    ) {
        assert!(chunk.tiles.len() <= CHUNK && chunk.tile_cols > 0, "a chunk of tiles");
        dispatch!(self, output_body, chunk, store, redo)
    }

    /// [`Rows::input`] for tiles of `MH` × `MW` outputs and `AH` × `AW`
    /// inputs (0: this transform's own, as variables), on grids of `NH` ×
    /// `NW`.
    #[inline(always)]
    fn input_body<
        const MH: usize,
        const AH: usize,
        const MW: usize,
        const AW: usize,
        const NH: usize,
        const NW: usize,
    >(
        &self,
        c: InputChunk<'_>,
    ) {
        let [mh, mw] = [or(MH, self.m[0]), or(MW, self.m[1])];
        let [ah, aw] = [or(AH, self.alpha[0]), or(AW, self.alpha[1])];
        let n = c.tiles.len();
        let [h, w] = c.size;
        let mut d: Grid<NH, NW> = [[[0.0; CHUNK]; NW]; NH];
        for run in runs(&c.tiles, c.tile_cols, CHUNK) {
            // Each tile's window, column j of the run's lane `lanes.start + l`
            // at plane column `first + l·m_w + j`.
            let first = (run.col * mw) as isize - c.pad[1] as isize;
            let len = run.lanes.len();
            let inside = first >= 0 && first as usize + (len - 1) * mw + aw <= w;
            for (i, d) in d.iter_mut().enumerate().take(ah) {
                let Some(y) = (run.row * mh + i).checked_sub(c.pad[0]).filter(|&y| y < h) else {
                    continue;
                };
                let line = &c.x[y * w..(y + 1) * w];
                for (k, l) in run.lanes.clone().enumerate() {
                    let at = first + (k * mw) as isize;
                    if inside {
                        let window = &line[at as usize..][..aw];
                        for j in 0..aw {
                            d[j][l] = window[j];
                        }
                    } else {
                        for j in 0..aw {
                            let col = at + j as isize;
                            if col >= 0 && (col as usize) < w {
                                d[j][l] = line[col as usize];
                            }
                        }
                    }
                }
            }
        }
        // Along the rows: t[i][ξ] = Σ_j Bᵀ_w[ξ][j] · d[i][j] (the window
        // itself across a kernel's single tap).
        let mut t: Grid<NH, NW> = [[[0.0; CHUNK]; NW]; NH];
        if aw == 1 {
            t = d;
        } else {
            for i in 0..ah {
                for xi in 0..aw {
                    t[i][xi] = sum(&self.bt[1][xi], aw, |j| &d[i][j]);
                }
            }
        }
        // Down the columns: point (ξy, ξx) = Σ_i Bᵀ_h[ξy][i] · t[i][ξx].
        for yi in 0..ah {
            for xi in 0..aw {
                let v = if ah == 1 { t[0][xi] } else { sum(&self.bt[0][yi], ah, |i| &t[i][xi]) };
                let out = &mut c.out[(yi * aw + xi) * c.stride..];
                if c.room >= CHUNK {
                    out[..CHUNK].copy_from_slice(&v);
                } else {
                    out[..n].copy_from_slice(&v[..n]);
                }
            }
        }
    }

    /// [`Rows::output`] for tiles of `MH` × `MW` outputs and `AH` × `AW`
    /// inputs (0: this transform's own, as variables), on grids of `NH` ×
    /// `NW`.
    #[inline(always)]
    fn output_body<
        const MH: usize,
        const AH: usize,
        const MW: usize,
        const AW: usize,
        const NH: usize,
        const NW: usize,
    >(
        &self,
        c: OutputChunk<'_>,
        mut store: impl FnMut(usize, usize, &[f32]),
        mut redo: impl FnMut(usize, usize),
    ) {
        let [mh, mw] = [or(MH, self.m[0]), or(MW, self.m[1])];
        let [ah, aw] = [or(AH, self.alpha[0]), or(AW, self.alpha[1])];
        let n = c.tiles.len();
        let [oh, ow] = c.size;
        let mut p: Grid<NH, NW> = [[[0.0; CHUNK]; NW]; NH];
        for yi in 0..ah {
            for xi in 0..aw {
                let products = &c.products[(yi * aw + xi) * c.stride..];
                if c.room >= CHUNK {
                    p[yi][xi].copy_from_slice(&products[..CHUNK]);
                } else {
                    p[yi][xi][..n].copy_from_slice(&products[..n]);
                }
            }
        }
        // Down the columns: s[i][ξx] = Σ_ξy Aᵀ_h[i][ξy] · p[ξy][ξx] (m_h ≤
        // NH; the products themselves across a kernel's single tap).
        let mut s: Grid<NH, NW> = [[[0.0; CHUNK]; NW]; NH];
        if ah == 1 {
            s = p;
        } else {
            for i in 0..mh {
                for xi in 0..aw {
                    s[i][xi] = sum(&self.at[0][i], ah, |yi| &p[yi][xi]);
                }
            }
        }
        let mut line = [0.0f32; CHUNK * MAX_M];
        let all = Runs::new(&c.tiles, c.tile_cols);
        let top = all.iter().next().map_or(0, |run| run.row);
        for i in 0..mh.min(oh.saturating_sub(top * mh)) {
            // Along the rows, each tile's m_w pixels put back in order.
            for j in 0..mw {
                let o = if aw == 1 { s[i][0] } else { sum(&self.at[1][j], aw, |xi| &s[i][xi]) };
                for l in 0..n {
                    line[l * mw + j] = o[l] + c.bias;
                }
            }
            for run in all.iter() {
                let (row, first) = (run.row * mh + i, run.col * mw);
                if row >= oh {
                    break;
                }
                let width = (run.lanes.len() * mw).min(ow.saturating_sub(first));
                let run = &mut line[run.lanes.start * mw..][..width];
                let finite = run.iter().fold(true, |f, v| f & v.is_finite());
                // Which are not finite before the activation (ReLU makes −∞ 0).
                let mut redone = [false; CHUNK * MAX_M];
                if !finite {
                    run.iter().zip(&mut redone).for_each(|(v, r)| *r = !v.is_finite());
                }
                activate(run, c.activation);
                store(row, first, run);
                if !finite {
                    let columns = redone.iter().enumerate().filter(|(_, r)| **r);
                    columns.for_each(|(k, _)| redo(row, first + k));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic value in [-1, 1) for index `i`.
    fn value(i: usize) -> f32 {
        let h = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        h as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// The tiles compiled for their sizes, square and 1-D, and some that
    /// are not (F(3, 2), F(1×3, 1×2), F(2×2, 3×5)), in every ISA the host
    /// has.
    fn sizes() -> impl Iterator<Item = (Transform, Isa)> {
        let square = [(2, 3), (4, 3), (6, 3), (2, 5), (4, 5), (3, 2)];
        let square = square.map(|(m, r)| Transform::new(m, r));
        let other = [(4, [1, 3]), (6, [1, 3]), (2, [1, 7]), (4, [3, 1]), (6, [3, 1])];
        let other = other.into_iter().chain([(2, [7, 1]), (3, [1, 2]), (2, [3, 5])]);
        let all: Vec<Transform> =
            square.into_iter().chain(other.map(|(m, k)| Transform::for_kernel(m, k))).collect();
        all.into_iter().flat_map(|t| Isa::available().map(move |isa| (t.clone(), isa)))
    }

    /// Plane sizes: wider than a chunk's tiles, a few tiles wide (chunks
    /// span tile rows), one tile (of a kernel of `r` taps, padded by 2 and
    /// 3 at least: at least one output).
    fn planes([mh, mw]: [usize; 2], r: [usize; 2]) -> [[usize; 2]; 4] {
        let one = r.map(|r| r.saturating_sub(2).max(1));
        [[7, 11 + 16 * mw], [13, 13], [2 * mh + 3, 5], one]
    }

    /// Every tile of a padded plane, transformed in chunks of 16, 7 and 3
    /// consecutive tiles, is the tile transformed by `Transform::input` (in
    /// f64, to f32's rounding).
    #[test]
    fn input_rows_are_the_tiles_transformed() {
        for (t, isa) in sizes() {
            let rows = Rows::new(&t, isa);
            let ([mh, mw], [ah, aw], [rh, rw]) = (t.m(), t.alpha(), t.r());
            let name = t.name();
            for [h, w] in planes(t.m(), t.r()) {
                let [top, left] = [1, 2];
                let x: Vec<f32> = (0..h * w).map(value).collect();
                let tile_rows = (h + 2 - rh + 1).div_ceil(mh);
                let tile_cols = (w + 3 - rw + 1).div_ceil(mw);
                let count = tile_rows * tile_cols;
                let stride = count + 3;
                for len in [CHUNK, 7, 3] {
                    let mut out = vec![f32::NAN; ah * aw * stride];
                    for start in (0..count).step_by(len) {
                        let tiles = start..(start + len).min(count);
                        rows.input(InputChunk {
                            x: &x,
                            size: [h, w],
                            pad: [top, left],
                            tiles,
                            tile_cols,
                            out: &mut out[start..],
                            stride,
                            room: stride - start,
                        });
                    }
                    for tile in 0..count {
                        let (row, tc) = (tile / tile_cols, tile % tile_cols);
                        let d: Vec<f64> = (0..ah * aw)
                            .map(|k| {
                                let (yy, xx) = (
                                    (row * mh + k / aw) as i64 - top as i64,
                                    (tc * mw + k % aw) as i64 - left as i64,
                                );
                                let inside =
                                    (0..h as i64).contains(&yy) && (0..w as i64).contains(&xx);
                                if inside {
                                    f64::from(x[yy as usize * w + xx as usize])
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        let want = t.input(&d);
                        // Two passes of at most α terms in f32: within
                        // γ_2α of the sums of magnitudes.
                        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
                        let magnitude = t.magnitudes().input(&abs(&d));
                        let gamma = 2.0 * ah.max(aw) as f64 * f64::from(f32::EPSILON);
                        for (xi, &v) in want.iter().enumerate() {
                            let got = f64::from(out[xi * stride + tile]);
                            assert!(
                                (got - v).abs() <= gamma * magnitude[xi],
                                "{name} {isa:?} {h}×{w} by {len}, tile {row} {tc}, point {xi}: \
                                 {got} for {v} (magnitude {})",
                                magnitude[xi]
                            );
                        }
                    }
                }
            }
        }
    }

    /// Products transformed back in chunks of 16, 7 and 3 consecutive
    /// tiles are `Transform::output` of each tile, plus the bias,
    /// activated, cropped to the plane.
    #[test]
    fn output_rows_are_the_tiles_transformed_back() {
        for (t, isa) in sizes() {
            let rows = Rows::new(&t, isa);
            let ([mh, mw], [ah, aw]) = (t.m(), t.alpha());
            let name = t.name();
            for [oh, ow] in planes(t.m(), t.r()).into_iter().chain([[2 * mh + 1, 16 * mw - 1]]) {
                let (tile_rows, tile_cols) = (oh.div_ceil(mh), ow.div_ceil(mw));
                let count = tile_rows * tile_cols;
                let stride = count + 2;
                let products: Vec<f32> = (0..ah * aw * stride).map(value).collect();
                for (len, activation) in
                    [(CHUNK, Activation::None), (7, Activation::Relu), (3, Activation::None)]
                {
                    let mut y = vec![f32::NAN; oh * ow];
                    for start in (0..count).step_by(len) {
                        let store = |i: usize, j: usize, run: &[f32]| {
                            y[i * ow + j..][..run.len()].copy_from_slice(run)
                        };
                        let redo = |i: usize, j: usize| panic!("({i}, {j}) is finite");
                        let chunk = OutputChunk {
                            products: &products[start..],
                            stride,
                            room: stride - start,
                            bias: 0.25,
                            activation,
                            size: [oh, ow],
                            tiles: start..(start + len).min(count),
                            tile_cols,
                        };
                        rows.output(chunk, store, redo);
                    }
                    for tile in 0..count {
                        let (row, tc) = (tile / tile_cols, tile % tile_cols);
                        let p: Vec<f64> =
                            (0..ah * aw).map(|k| f64::from(products[k * stride + tile])).collect();
                        let want = t.output(&p);
                        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
                        let magnitude = t.magnitudes().output(&abs(&p));
                        let magnitude: Vec<f64> = magnitude.iter().map(|v| v + 0.25).collect();
                        for (k, &want) in want.iter().enumerate() {
                            let (yy, xx) = (row * mh + k / mw, tc * mw + k % mw);
                            if yy >= oh || xx >= ow {
                                continue;
                            }
                            let v = activation.apply_f64(want + 0.25);
                            let got = f64::from(y[yy * ow + xx]);
                            // Two passes of at most α terms and the bias.
                            let terms = 2 * ah.max(aw) + 1;
                            let bound = terms as f64 * f64::from(f32::EPSILON) * magnitude[k];
                            assert!(
                                (got - v).abs() <= bound,
                                "{name} {isa:?} {oh}×{ow} by {len}: {yy} {xx}: {got} for {v}"
                            );
                        }
                    }
                    assert!(y.iter().all(|v| !v.is_nan()), "every output stored");
                }
            }
        }
    }

    /// A transform of the usual sizes with other entries is applied with
    /// its own (the AVX-512 bodies hold the usual ones as constants): a
    /// square one's input transform, a 1-D one's output transform.
    #[test]
    fn other_entries_of_the_usual_sizes_are_their_own() {
        let mut column = Transform::for_kernel(6, [3, 1]);
        column.h.at.iter_mut().skip(2).step_by(3).for_each(|v| *v *= 2.0);
        let products: Vec<f32> = (0..8).map(value).collect();
        for isa in Isa::available() {
            let rows = Rows::new(&column, isa);
            let mut y = [f32::NAN; 6];
            let chunk = OutputChunk {
                products: &products,
                stride: 1,
                room: 1,
                bias: 0.0,
                activation: Activation::None,
                size: [6, 1],
                tiles: 0..1,
                tile_cols: 1,
            };
            let store =
                |i: usize, j: usize, run: &[f32]| y[i + j..][..run.len()].copy_from_slice(run);
            rows.output(chunk, store, |i, j| panic!("({i}, {j}) is finite"));
            let want = column.output(&products.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
            for (i, (&got, want)) in y.iter().zip(want).enumerate() {
                assert!((f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()), "{isa:?} {i}");
            }
        }
        let mut t = Transform::new(4, 3);
        let a = t.h.alpha();
        t.h.bt.iter_mut().take(a).for_each(|v| *v *= 2.0);
        let x: Vec<f32> = (0..a * a).map(value).collect();
        for isa in Isa::available() {
            let rows = Rows::new(&t, isa);
            let mut out = vec![f32::NAN; a * a];
            rows.input(InputChunk {
                x: &x,
                size: [a, a],
                pad: [0, 0],
                tiles: 0..1,
                tile_cols: 1,
                out: &mut out,
                stride: 1,
                room: 1,
            });
            let want = t.input(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
            for (xi, (&got, want)) in out.iter().zip(want).enumerate() {
                assert!((f64::from(got) - want).abs() <= 1e-5 * (1.0 + want.abs()), "{isa:?} {xi}");
            }
        }
    }

    /// A chunk's tiles cut into runs of one tile row.
    #[test]
    fn runs_cut_at_tile_rows() {
        let all: Vec<Run> = runs(&(3..14), 4, CHUNK).collect();
        let want = [(0..1, 0, 3), (1..5, 1, 0), (5..9, 2, 0), (9..11, 3, 0)];
        let want: Vec<Run> =
            want.into_iter().map(|(lanes, row, col)| Run { lanes, row, col }).collect();
        assert_eq!(all, want);
        let short: Vec<Run> = runs(&(0..5), 8, 2).collect();
        assert_eq!(short.iter().map(|r| r.lanes.clone()).collect::<Vec<_>>(), [0..2, 2..4, 4..5]);
        assert!(one_row(&(4..8), 4) && !one_row(&(3..5), 4) && one_row(&(2..2), 4));
        // Runs cut short of a row's end step on along it.
        let stepped: Vec<(usize, usize, usize)> =
            runs(&(5..20), 6, 4).map(|r| (r.lanes.len(), r.row, r.col)).collect();
        assert_eq!(stepped, [(1, 0, 5), (4, 1, 0), (2, 1, 4), (4, 2, 0), (2, 2, 4), (2, 3, 0)]);
        let kept: Vec<Run> = Runs::new(&(3..14), 4).iter().cloned().collect();
        assert_eq!(kept, all);
    }
}
