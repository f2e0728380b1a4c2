//! The transforms on AVX-512, for the tiles compiled for their sizes
//! (square, and the 1-D ones whose other axis is the identity): one
//! `zmm` holds a value of each of the chunk's 16 tiles, and the entries of
//! `Bᵀ` and `Aᵀ` are constants, so each sum leaves out its zero terms,
//! adds or subtracts its ±1 ones and takes a fused multiply-add for the
//! others; the rows of `Bᵀ` for the points ±p share the sums of their
//! even and odd terms (`e ± o`), and the columns of `Aᵀ` for ±p their
//! sum and difference: about half the operations of the plain products
//! (whole layers with F(4, 3) 1.08× faster in median, 0.99–1.15×, two
//! runs of `scripts/compare_builds.py` on the six dense 3 × 3 layers).
//!
//! Input rows are loaded as masked vectors (lanes outside the row read as
//! zeros): tiles one pixel wide (r × 1 kernels) take each run of a tile
//! row's pixels as one vector; a chunk of one tile row (m = 2, 4) has each
//! row split into its
//! m column phases by `vpermt2ps`; any other chunk is cut into runs of
//! tiles of one tile row whose windows lie in 32 consecutive pixels, and
//! each window column of a run's lanes is picked out of the two vectors
//! of those pixels by `vpermt2ps` and blended into its lanes (no gathers).
//! The transformed values and the products move as masked loads and
//! stores of the chunk's lanes; an output row's pixels are put back in
//! order by two rounds of `vpermt2ps` (m = 2, 4) or through a buffer
//! (other m), and stored tile row by tile row.

// As in `rows.rs`: the transforms written as their formulas, by index.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::rows::{InputChunk, OutputChunk, Runs, one_row, runs};
use crate::spec::Activation;

/// `Bᵀ` of the transforms compiled for their sizes, for α = 4, 6 and 8 (the
/// same for every m of one α) and 1 (the identity across a 1-D kernel),
/// zero past α: the entries `Axis::new` builds (a test checks), as
/// constants, so that each sum leaves out its zero entries and adds or
/// subtracts its ±1 ones.
const fn bt(a: usize) -> [[f32; 8]; 8] {
    const Z: [f32; 8] = [0.0; 8];
    match a {
        1 => [[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], Z, Z, Z, Z, Z, Z, Z],
        4 => [
            [1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0],
            Z,
            Z,
            Z,
            Z,
        ],
        6 => [
            [4.0, 0.0, -5.0, 0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 4.0, 4.0, -1.0, -1.0, 0.0, 0.0, 0.0],
            [0.0, 4.0, -4.0, -1.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, 1.0, -2.0, -1.0, 0.0, 0.0, 0.0],
            [0.0, 2.0, -1.0, -2.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 4.0, 0.0, -5.0, 0.0, 1.0, 0.0, 0.0],
            Z,
            Z,
        ],
        8 => [
            [4.0, 0.0, -21.0, 0.0, 21.0, 0.0, -4.0, 0.0],
            [0.0, 4.0, 4.0, -17.0, -17.0, 4.0, 4.0, 0.0],
            [0.0, 4.0, -4.0, -17.0, 17.0, 4.0, -4.0, 0.0],
            [0.0, 2.0, 1.0, -10.0, -5.0, 8.0, 4.0, 0.0],
            [0.0, 2.0, -1.0, -10.0, 5.0, 8.0, -4.0, 0.0],
            [0.0, 4.0, 8.0, -5.0, -10.0, 1.0, 2.0, 0.0],
            [0.0, 4.0, -8.0, -5.0, 10.0, 1.0, -2.0, 0.0],
            [0.0, 4.0, 0.0, -21.0, 0.0, 21.0, 0.0, -4.0],
        ],
        _ => panic!("no transform compiled for this α"),
    }
}

/// `Aᵀ` of F(m, α − m + 1), zero past its sizes: row i holds the i-th
/// powers of the finite points `0, 1, −1, 2, −2, 1/2, −1/2` (the first
/// α − 1) and, in the last column, 1 for the last row (the point at
/// infinity), as `Axis::new` builds it (a test checks).
const fn at(m: usize, a: usize) -> [[f32; 8]; 7] {
    const POINTS: [f32; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];
    let mut at = [[0.0f32; 8]; 7];
    let mut i = 0;
    while i < m {
        let mut j = 0;
        while j + 1 < a {
            let mut power = 1.0;
            let mut k = 0;
            while k < i {
                power *= POINTS[j];
                k += 1;
            }
            at[i][j] = power;
            j += 1;
        }
        at[i][a - 1] = if i + 1 == m { 1.0 } else { 0.0 };
        i += 1;
    }
    at
}

/// Runs `$body` with `$j` bound to each of 0, 1, …, up to 7 (or each of
/// the literals listed after `@`) below `$n`, as straight-line code: every
/// index it takes is a literal, so the constant entries it reads are
/// constants to the compiler whatever it unrolls.
macro_rules! unrolled {
    ($n:expr, $j:ident => $body:expr) => {
        unrolled!(@ $n, $j => $body; 0 1 2 3 4 5 6 7)
    };
    (@ $n:expr, $j:ident => $body:expr; $($k:literal)*) => {
        $(
            if $k < $n {
                let $j: usize = $k;
                $body;
            }
        )*
    };
}

/// A sum of terms `c · v` of constant coefficients: a zero term is left
/// out, a ±1 one added or subtracted, any other a fused multiply-add (a
/// term left out would have added `0 · v`: nothing to a finite sum, and a
/// non-finite output is recomputed whatever its terms).
#[derive(Clone, Copy)]
struct Sum(Option<__m512>);

impl Sum {
    const EMPTY: Sum = Sum(None);

    /// The sum with `c · v` added.
    #[inline(always)]
    unsafe fn plus(self, c: f32, v: __m512) -> Sum {
        // SAFETY: the caller has AVX-512F.
        unsafe {
            Sum(Some(match self.0 {
                _ if c == 0.0 => return self,
                None if c == 1.0 => v,
                None => _mm512_mul_ps(_mm512_set1_ps(c), v),
                Some(acc) if c == 1.0 => _mm512_add_ps(acc, v),
                Some(acc) if c == -1.0 => _mm512_sub_ps(acc, v),
                Some(acc) => _mm512_fmadd_ps(_mm512_set1_ps(c), v, acc),
            }))
        }
    }

    #[inline(always)]
    unsafe fn value(self) -> __m512 {
        // SAFETY: the caller has AVX-512F.
        unsafe { self.0.unwrap_or_else(|| _mm512_setzero_ps()) }
    }
}

/// `Σ_j coefficients[j] · v(j)` over `A` terms.
#[inline(always)]
unsafe fn dot<const A: usize>(coefficients: &[f32; 8], v: &impl Fn(usize) -> __m512) -> __m512 {
    // SAFETY: the caller has AVX-512F.
    unsafe {
        let mut sum = Sum::EMPTY;
        unrolled!(A, j => sum = sum.plus(coefficients[j], v(j)));
        sum.value()
    }
}

/// How `Bᵀ` (α = a) is applied. Rows 2k + 1 and 2k + 2 are the points
/// ±p: where their entries agree on the columns of one parity and are
/// opposite on the other (`pair[k]`), they are `e ± o` of the sums of the
/// terms of those columns, `same[k]` and `opposite[k]`: about half the
/// operations of two sums.
struct BtPlan {
    rows: [[f32; 8]; 8],
    pair: [bool; 3],
    same: [[f32; 8]; 3],
    opposite: [[f32; 8]; 3],
}

const fn bt_plan(a: usize) -> BtPlan {
    let rows = bt(a);
    let mut plan = BtPlan { rows, pair: [false; 3], same: [[0.0; 8]; 3], opposite: [[0.0; 8]; 3] };
    let mut k = 0;
    while k + 1 < a / 2 {
        let (r, s) = (rows[2 * k + 1], rows[2 * k + 2]);
        let mut pair = true;
        let mut j = 0;
        while j < a {
            if r[j] == s[j] {
                plan.same[k][j] = r[j];
            } else if r[j] == -s[j] {
                plan.opposite[k][j] = r[j];
            } else {
                pair = false;
            }
            j += 1;
        }
        plan.pair[k] = pair;
        k += 1;
    }
    plan
}

/// `Bᵀ v` (α = `A`) by `plan`.
#[inline(always)]
unsafe fn apply_bt<const A: usize>(plan: &BtPlan, v: impl Fn(usize) -> __m512) -> [__m512; A] {
    // An axis of one tap is the identity, which the callers apply
    // themselves (row 0 would be taken twice here, as first and last).
    assert!(A >= 2, "Bᵀ of a tile of 2 inputs or more");
    // SAFETY: the caller has AVX-512F.
    unsafe {
        let mut out = [_mm512_setzero_ps(); A];
        out[0] = dot::<A>(&plan.rows[0], &v);
        out[A - 1] = dot::<A>(&plan.rows[A - 1], &v);
        unrolled!(@ (A / 2).saturating_sub(1), k => {
            let (r, s) = (2 * k + 1, 2 * k + 2);
            if plan.pair[k] {
                let (e, o) = (dot::<A>(&plan.same[k], &v), dot::<A>(&plan.opposite[k], &v));
                out[r] = _mm512_add_ps(e, o);
                out[s] = _mm512_sub_ps(e, o);
            } else {
                out[r] = dot::<A>(&plan.rows[r], &v);
                out[s] = dot::<A>(&plan.rows[s], &v);
            }
        }; 0 1 2);
        out
    }
}

/// How `Aᵀ` (m × α) is applied. Columns 2k + 1 and 2k + 2 are the points
/// ±p, whose powers agree in the even rows and are opposite in the odd
/// ones (`paired[k]` where every row's are): each row takes `c · (v₁ + v₂)`
/// or `c · (v₁ − v₂)`, the sum and difference made once for every row.
struct AtPlan {
    rows: [[f32; 8]; 7],
    paired: [bool; 3],
}

const fn at_plan(m: usize, a: usize) -> AtPlan {
    let rows = at(m, a);
    let mut paired = [false; 3];
    let mut k = 0;
    while k < (a - 1) / 2 {
        let (p, q) = (2 * k + 1, 2 * k + 2);
        let mut all = true;
        let mut i = 0;
        while i < m {
            all &= rows[i][p] == rows[i][q] || rows[i][p] == -rows[i][q];
            i += 1;
        }
        paired[k] = all;
        k += 1;
    }
    AtPlan { rows, paired }
}

/// `Aᵀ v` (m = `M`, α = `A`) by `plan`.
#[inline(always)]
unsafe fn apply_at<const M: usize, const A: usize>(
    plan: &AtPlan,
    v: impl Fn(usize) -> __m512,
) -> [__m512; M] {
    // As in `apply_bt`: column 0 would be taken twice, as first and last.
    assert!(A >= 2, "Aᵀ of a tile of 2 inputs or more");
    // SAFETY: the caller has AVX-512F.
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut sums = [(zero, zero); 3];
        unrolled!(@ (A - 1) / 2, k => if plan.paired[k] {
            let (p, q) = (v(2 * k + 1), v(2 * k + 2));
            sums[k] = (_mm512_add_ps(p, q), _mm512_sub_ps(p, q));
        }; 0 1 2);
        let mut out = [zero; M];
        unrolled!(@ M, i => {
            let row = &plan.rows[i];
            let mut sum = Sum::EMPTY.plus(row[0], v(0));
            unrolled!(@ (A - 1) / 2, k => {
                let (p, q) = (2 * k + 1, 2 * k + 2);
                if plan.paired[k] {
                    let (plus, minus) = sums[k];
                    sum = sum.plus(row[p], if row[p] == row[q] { plus } else { minus });
                } else {
                    sum = sum.plus(row[p], v(p)).plus(row[q], v(q));
                }
            }; 0 1 2);
            out[i] = sum.plus(row[A - 1], v(A - 1)).value();
        }; 0 1 2 3 4 5 6);
        out
    }
}

/// The mask of the first `n` lanes (n ≤ 16).
#[inline(always)]
fn first(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// The lanes whose column, `cols`, lies inside a row of `w` pixels.
#[inline(always)]
unsafe fn inside(cols: __m512i, w: usize) -> __mmask16 {
    // SAFETY: the caller has AVX-512F.
    unsafe {
        _mm512_cmpge_epi32_mask(cols, _mm512_setzero_si512())
            & _mm512_cmplt_epi32_mask(cols, _mm512_set1_epi32(w as i32))
    }
}

/// Lane l holds l.
#[inline(always)]
unsafe fn iota() -> __m512i {
    // SAFETY: the caller has AVX-512F.
    unsafe { _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) }
}

/// [`Rows::input`] for F(MH × MW, (AH − MH + 1) × (AW − MW + 1)) on
/// AVX-512: square (MH = MW) or 1-D (MH = AH = 1 or MW = AW = 1, the
/// identity across the kernel's single tap).
///
/// # Safety
/// The host has AVX-512F; `chunk` is as [`Rows::input`] checks it.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn input_body<
    const MH: usize,
    const AH: usize,
    const MW: usize,
    const AW: usize,
>(
    c: InputChunk<'_>,
) {
    // SAFETY: the caller guarantees the host has AVX-512F and the
    // operands the function documents.
    unsafe {
        let n = c.tiles.len();
        let [h, w] = c.size;
        assert!(c.out.len() >= (AH * AW - 1) * c.stride + n, "room for every point's run");
        let lanes = first(n);
        // The lane masks are computed in 32 bits: every column they test
        // fits (a spec's sizes and padding are at most 2^24).
        let reach = (c.tile_cols * MW + AW) as i64 + c.pad[1] as i64;
        assert!(w < 1 << 30 && reach < 1 << 30, "columns in 32 bits");
        let mut d = [[_mm512_setzero_ps(); AW]; AH];
        if MW == 1 {
            // Tiles one pixel wide (a kernel of one column): each run's
            // window row is its pixels in order, one masked load into
            // the run's lanes.
            for run in runs(&c.tiles, c.tile_cols, 16) {
                let start = run.col as i64 - c.pad[1] as i64 - run.lanes.start as i64;
                let cols = _mm512_add_epi32(iota(), _mm512_set1_epi32(start as i32));
                let mask = inside(cols, w) & first(run.lanes.end) & !first(run.lanes.start);
                for i in 0..AH {
                    let Some(y) = (run.row * MH + i).checked_sub(c.pad[0]).filter(|&y| y < h)
                    else {
                        continue;
                    };
                    let line = c.x[y * w..(y + 1) * w].as_ptr();
                    // Only the run's lanes inside the row are read.
                    d[i][0] =
                        _mm512_mask_loadu_ps(d[i][0], mask, line.wrapping_offset(start as isize));
                }
            }
        } else if (MW == 2 || MW == 4) && one_row(&c.tiles, c.tile_cols) {
            // One tile row: window column j = s·M + q of every lane is
            // phase q of the pixels from column first + s·M.
            let (row, col) = (c.tiles.start / c.tile_cols, c.tiles.start % c.tile_cols);
            let first_col = (col * MW) as i64 - c.pad[1] as i64;
            for i in 0..AH {
                let Some(y) = (row * MH + i).checked_sub(c.pad[0]).filter(|&y| y < h) else {
                    continue;
                };
                let line = c.x[y * w..(y + 1) * w].as_ptr();
                for set in 0..AW.div_ceil(MW) {
                    let phases = phases::<MW>(line, first_col + (set * MW) as i64, w);
                    for q in 0..MW.min(AW - set * MW) {
                        d[i][set * MW + q] = phases[q];
                    }
                }
            }
        } else {
            // Runs of tiles whose windows lie in 32 consecutive pixels of
            // a tile row: each window row loaded as two masked vectors,
            // and window column j of the run's lanes picked out of them by
            // `vpermt2ps` (lane l of the run: pixel (l − first lane)·M + j).
            let piece = (32 - (AW - MW)) / MW;
            let mut base = [_mm512_setzero_si512(); AW];
            for (j, base) in base.iter_mut().enumerate() {
                let step = _mm512_mullo_epi32(iota(), _mm512_set1_epi32(MW as i32));
                *base = _mm512_add_epi32(step, _mm512_set1_epi32(j as i32));
            }
            for run in runs(&c.tiles, c.tile_cols, piece) {
                let mask = lanes & !first(run.lanes.start);
                let mask = mask & first(run.lanes.end);
                let shift = _mm512_set1_epi32((run.lanes.start * MW) as i32);
                let idx = base.map(|b| _mm512_sub_epi32(b, shift));
                let start = (run.col * MW) as i64 - c.pad[1] as i64;
                for i in 0..AH {
                    let Some(y) = (run.row * MH + i).checked_sub(c.pad[0]).filter(|&y| y < h)
                    else {
                        continue;
                    };
                    let line = c.x[y * w..(y + 1) * w].as_ptr();
                    let [low, high] = [0, 16].map(|k| {
                        let at = start + k;
                        let cols = _mm512_add_epi32(iota(), _mm512_set1_epi32(at as i32));
                        // Only lanes whose column is inside the row are read.
                        _mm512_maskz_loadu_ps(inside(cols, w), line.wrapping_offset(at as isize))
                    });
                    for j in 0..AW {
                        let v = _mm512_permutex2var_ps(low, idx[j], high);
                        d[i][j] = _mm512_mask_blend_ps(mask, d[i][j], v);
                    }
                }
            }
        }
        // Along the rows: t[i][ξ] = Σ_j Bᵀ_w[ξ][j] · d[i][j] (the window
        // itself across a kernel's single tap).
        let mut t = d;
        if AW > 1 {
            let plan = const { bt_plan(AW) };
            for i in 0..AH {
                t[i] = apply_bt::<AW>(&plan, |j| d[i][j]);
            }
        }
        // Down the columns: point (ξy, ξx) = Σ_i Bᵀ_h[ξy][i] · t[i][ξx].
        let out = c.out.as_mut_ptr();
        let plan = const { bt_plan(AH) };
        for xi in 0..AW {
            let column = match AH {
                1 => [t[0][xi]; AH],
                _ => apply_bt::<AH>(&plan, |i| t[i][xi]),
            };
            for (yi, v) in column.into_iter().enumerate() {
                // SAFETY: the run of n values is inside `out` (asserted).
                _mm512_mask_storeu_ps(out.add((yi * AW + xi) * c.stride), lanes, v);
            }
        }
    }
}

/// The `M` column phases of the 16·M pixels of a row from column `start`
/// (M = 1, 2 or 4): phase q's lane l is the pixel at `start + l·M + q`, 0
/// outside the row `line` of `w` pixels. Loaded as M masked vectors (the
/// lanes outside the row are not read) and split by `vpermt2ps` (and, for
/// M = 4, `vshuff32x4`).
#[inline(always)]
unsafe fn phases<const M: usize>(line: *const f32, start: i64, w: usize) -> [__m512; M] {
    // SAFETY: the loads read only the lanes inside the row.
    unsafe {
        let mut u = [_mm512_setzero_ps(); M];
        for (k, u) in u.iter_mut().enumerate() {
            let at = start + 16 * k as i64;
            let cols = _mm512_add_epi32(iota(), _mm512_set1_epi32(at as i32));
            *u = _mm512_maskz_loadu_ps(inside(cols, w), line.wrapping_offset(at as isize));
        }
        // Lane t of `idx(q)` picks element t·M + q of two vectors.
        let idx = |q: usize| {
            let mut idx = [0i32; 16];
            for (t, i) in idx.iter_mut().enumerate() {
                *i = ((t * M + q) % 32) as i32;
            }
            _mm512_loadu_si512(idx.as_ptr().cast())
        };
        let mut out = [_mm512_setzero_ps(); M];
        for (q, out) in out.iter_mut().enumerate() {
            *out = match M {
                1 => u[0],
                2 => _mm512_permutex2var_ps(u[0], idx(q), u[1 % M]),
                _ => {
                    // Tiles 0–7 from the first two vectors, 8–15 from the
                    // last two, each in its lower half.
                    let low = _mm512_permutex2var_ps(u[0], idx(q), u[1 % M]);
                    let high = _mm512_permutex2var_ps(u[2 % M], idx(q), u[3 % M]);
                    _mm512_shuffle_f32x4::<0b0100_0100>(low, high)
                }
            };
        }
        out
    }
}

/// [`Rows::output`] for F(MH × MW, (AH − MH + 1) × (AW − MW + 1)) on
/// AVX-512, square or 1-D as [`input_body`].
///
/// # Safety
/// The host has AVX-512F; `chunk` is as [`Rows::output`] checks it.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn output_body<
    const MH: usize,
    const AH: usize,
    const MW: usize,
    const AW: usize,
>(
    c: OutputChunk<'_>,
    mut store: impl FnMut(usize, usize, &[f32]),
    mut redo: impl FnMut(usize, usize),
) {
    // SAFETY: the caller guarantees the host has AVX-512F and the
    // operands the function documents.
    unsafe {
        let n = c.tiles.len();
        let [oh, ow] = c.size;
        assert!(c.products.len() >= (AH * AW - 1) * c.stride + n, "every point's run");
        let lanes = first(n);
        let products = c.products.as_ptr();
        let mut p = [[_mm512_setzero_ps(); AW]; AH];
        for yi in 0..AH {
            for xi in 0..AW {
                // SAFETY: the run of n values is inside `products` (asserted).
                p[yi][xi] = _mm512_maskz_loadu_ps(lanes, products.add((yi * AW + xi) * c.stride));
            }
        }
        // Down the columns: s[i][ξx] = Σ_ξy Aᵀ_h[i][ξy] · p[ξy][ξx] (the
        // products themselves across a kernel's single tap).
        let mut s = [[_mm512_setzero_ps(); AW]; MH];
        let plan = const { at_plan(MH, AH) };
        for xi in 0..AW {
            let column = match AH {
                1 => [p[0][xi]; MH],
                _ => apply_at::<MH, AH>(&plan, |yi| p[yi][xi]),
            };
            for (i, v) in column.into_iter().enumerate() {
                s[i][xi] = v;
            }
        }
        let (zero, bias) = (_mm512_setzero_ps(), _mm512_set1_ps(c.bias));
        let all = Runs::new(&c.tiles, c.tile_cols);
        let top = all.iter().next().map_or(0, |run| run.row);
        let mut line = [0.0f32; 16 * 8];
        let plan = const { at_plan(MW, AW) };
        for i in 0..MH.min(oh.saturating_sub(top * MH)) {
            // Along the rows: o[j] = Σ_ξx Aᵀ_w[j][ξx] · s[i][ξx], plus the bias.
            let mut o = match AW {
                1 => [s[i][0]; MW],
                _ => apply_at::<MW, AW>(&plan, |xi| s[i][xi]),
            };
            // Per column of the tiles, the tiles whose value is finite
            // before the activation (0 · v is 0 exactly for finite v).
            let mut finite = [lanes; MW];
            for j in 0..MW {
                o[j] = _mm512_add_ps(o[j], bias);
                finite[j] = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_mul_ps(o[j], zero), zero);
            }
            for v in &mut o {
                *v = activate(*v, c.activation);
            }
            interleave::<MW>(&o, &mut line);
            let all_finite = finite.iter().all(|&f| f & lanes == lanes);
            // Each tile row's run of the line, cropped to the plane.
            for run in all.iter() {
                let (row, first_col) = (run.row * MH + i, run.col * MW);
                if row >= oh {
                    break;
                }
                let width = (run.lanes.len() * MW).min(ow.saturating_sub(first_col));
                let at = run.lanes.start * MW;
                store(row, first_col, &line[at..at + width]);
                if !all_finite {
                    for k in at..at + width {
                        if finite[k % MW] & (1 << (k / MW)) == 0 {
                            redo(row, first_col + k - at);
                        }
                    }
                }
            }
        }
    }
}

/// `activation` on each lane (NaN stays NaN), as
/// `Activation::apply_f32` computes it.
#[inline(always)]
unsafe fn activate(v: __m512, activation: Activation) -> __m512 {
    // SAFETY: the caller guarantees the host has AVX-512F and the
    // operands the function documents.
    unsafe {
        let zero = _mm512_setzero_ps();
        match activation {
            Activation::None => v,
            // maxps returns its second operand when either is NaN (or both 0).
            Activation::Relu => _mm512_max_ps(zero, v),
            Activation::Relu6 => _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(zero, v)),
            Activation::LeakyRelu { negative_slope } => {
                let negative = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
                _mm512_mask_mul_ps(v, negative, v, _mm512_set1_ps(negative_slope))
            }
        }
    }
}

/// Puts an output row's pixels in order: `o[j]` holds column `j` of each
/// tile, the row is tile after tile.
#[inline(always)]
unsafe fn interleave<const M: usize>(o: &[__m512; M], line: &mut [f32; 128]) {
    // SAFETY: the caller guarantees the host has AVX-512F and the
    // operands the function documents.
    unsafe {
        let out = line.as_mut_ptr();
        // Lane 2t takes `a`'s lane `base + t`, lane 2t + 1 `b`'s.
        let pairs = |base: i32| {
            let mut idx = [0i32; 16];
            for t in 0..8 {
                idx[2 * t] = base + t as i32;
                idx[2 * t + 1] = 16 + base + t as i32;
            }
            _mm512_loadu_si512(idx.as_ptr().cast())
        };
        match M {
            1 => _mm512_storeu_ps(out, o[0]),
            2 => {
                _mm512_storeu_ps(out, _mm512_permutex2var_ps(o[0], pairs(0), o[1 % M]));
                _mm512_storeu_ps(out.add(16), _mm512_permutex2var_ps(o[0], pairs(8), o[1 % M]));
            }
            4 => {
                let (lo, hi) = (pairs(0), pairs(8));
                let (e_lo, e_hi) = (
                    _mm512_permutex2var_ps(o[0], lo, o[2 % M]),
                    _mm512_permutex2var_ps(o[0], hi, o[2 % M]),
                );
                let (f_lo, f_hi) = (
                    _mm512_permutex2var_ps(o[1 % M], lo, o[3 % M]),
                    _mm512_permutex2var_ps(o[1 % M], hi, o[3 % M]),
                );
                _mm512_storeu_ps(out, _mm512_permutex2var_ps(e_lo, lo, f_lo));
                _mm512_storeu_ps(out.add(16), _mm512_permutex2var_ps(e_lo, hi, f_lo));
                _mm512_storeu_ps(out.add(32), _mm512_permutex2var_ps(e_hi, lo, f_hi));
                _mm512_storeu_ps(out.add(48), _mm512_permutex2var_ps(e_hi, hi, f_hi));
            }
            _ => {
                let mut columns = [[0.0f32; 16]; 8];
                for j in 0..M {
                    _mm512_storeu_ps(columns[j].as_mut_ptr(), o[j]);
                }
                for l in 0..16 {
                    for j in 0..M {
                        line[l * M + j] = columns[j][l];
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Axis;
    use super::{at, bt};

    /// The constant entries are those `Axis::new` builds, for every
    /// transform compiled for its sizes (and the identity).
    #[test]
    fn the_constant_entries_are_the_transforms() {
        for (m, r) in [(1, 1), (2, 3), (4, 3), (6, 3), (2, 5), (4, 5), (2, 7)] {
            let t = Axis::new(m, r);
            let a = t.alpha();
            let (bt, at) = (bt(a), at(m, a));
            for i in 0..8 {
                for j in 0..8 {
                    let want = if i < a && j < a { t.bt[i * a + j] as f32 } else { 0.0 };
                    assert_eq!(bt[i][j], want, "F({m}, {r}) Bᵀ[{i}][{j}]");
                    if i < 7 {
                        let want = if i < m && j < a { t.at[i * a + j] as f32 } else { 0.0 };
                        assert_eq!(at[i][j], want, "F({m}, {r}) Aᵀ[{i}][{j}]");
                    }
                }
            }
        }
    }
}
