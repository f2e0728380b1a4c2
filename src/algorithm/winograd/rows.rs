//! Winograd's transforms in f32 as the kernel applies them: a tile row of
//! one channel at a time, each step a loop along the row's tiles (which
//! the compiler vectorises), with only the transforms' nonzero entries.
//!
//! The input transform `Bᵀ d B` first splits each of the α input rows a
//! tile row reads into its `m` column phases (column `c` of the padded
//! row in phase `c mod m`), so that entry `j` of every tile's window is
//! phase `j mod m` shifted by `j div m` tiles: both passes (along the
//! rows, then down the columns) are then sums of whole runs of tiles.
//! The output transform `Aᵀ M A` reads each point's products as one run
//! of tiles, and interleaves the `m` columns of each tile on the store.

use std::ops::Range;

use super::Transform;
use crate::spec::Activation;

/// The most tiles of a row transformed in one call: the work buffer holds
/// the phases and the intermediate sums of this many.
pub const CHUNK: usize = 64;

/// A matrix's nonzero entries, by row: `(column, coefficient)`.
#[derive(Clone, Debug, PartialEq)]
struct Sparse(Vec<Vec<(usize, f32)>>);

impl Sparse {
    fn of(matrix: &[f64], rows: usize, cols: usize) -> Sparse {
        Sparse(
            (0..rows)
                .map(|i| {
                    (0..cols)
                        .filter(|&j| matrix[i * cols + j] != 0.0)
                        .map(|j| (j, matrix[i * cols + j] as f32))
                        .collect()
                })
                .collect(),
        )
    }
}

/// `out[t] = Σ c · src(k)[t]` over the terms `(k, c)`, for `t` in `0..n`.
#[inline]
fn combine<'a>(out: &mut [f32], terms: &[(usize, f32)], src: impl Fn(usize) -> &'a [f32]) {
    out.fill(0.0);
    for &(k, c) in terms {
        let src = &src(k)[..out.len()];
        if c == 1.0 {
            out.iter_mut().zip(src).for_each(|(o, &s)| *o += s);
        } else if c == -1.0 {
            out.iter_mut().zip(src).for_each(|(o, &s)| *o -= s);
        } else {
            out.iter_mut().zip(src).for_each(|(o, &s)| *o += c * s);
        }
    }
}

/// The transforms of F(m, r) in f32, applied a tile row at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    m: usize,
    alpha: usize,
    bt: Sparse,
    at: Sparse,
}

impl Rows {
    /// The f32 transforms of `transform`.
    pub fn new(transform: &Transform) -> Rows {
        let (m, alpha) = (transform.m, transform.alpha());
        Rows {
            m,
            alpha,
            bt: Sparse::of(&transform.bt, alpha, alpha),
            at: Sparse::of(&transform.at, m, alpha),
        }
    }

    /// Tiles past its own whose columns a tile's window reaches.
    fn reach(&self) -> usize {
        (self.alpha - 1) / self.m
    }

    /// Floats of the work buffer [`Rows::input`] and [`Rows::output`] need.
    pub fn work_len(&self) -> usize {
        let (m, a) = (self.m, self.alpha);
        let input = a * m * (CHUNK + self.reach()) + a * a * CHUNK;
        let output = m * a * CHUNK + CHUNK;
        input.max(output)
    }

    /// Transforms the tiles `cols` (at most [`CHUNK`] tile columns) of tile
    /// row `row` of one channel's plane `x` (`size` = `[h, w]`, padded by
    /// `pad` = `[top, left]` rows and columns of zeros before its first):
    /// transform point `ξ`'s values of the tiles at `out[ξ · stride ..]`,
    /// one after the other.
    #[allow(clippy::too_many_arguments)]
    pub fn input(
        &self,
        x: &[f32],
        size: [usize; 2],
        pad: [usize; 2],
        row: usize,
        cols: Range<usize>,
        work: &mut [f32],
        out: &mut [f32],
        stride: usize,
    ) {
        let (m, a, n) = (self.m, self.alpha, cols.len());
        assert!(n <= CHUNK && x.len() == size[0] * size[1], "a chunk of a channel's plane");
        let [h, w] = size;
        let run = n + self.reach();
        let (phases, sums) = work.split_at_mut(a * m * run);
        // The α input rows, each split into its m column phases.
        for (i, rows) in phases.chunks_exact_mut(m * run).enumerate() {
            let y = (row * m + i).checked_sub(pad[0]).filter(|&y| y < h);
            let Some(y) = y else {
                rows.fill(0.0);
                continue;
            };
            let line = &x[y * w..(y + 1) * w];
            for (q, phase) in rows.chunks_exact_mut(run).enumerate() {
                for (u, v) in phase.iter_mut().enumerate() {
                    let c = ((cols.start + u) * m + q).checked_sub(pad[1]);
                    *v = c.and_then(|c| line.get(c)).copied().unwrap_or(0.0);
                }
            }
        }
        // Along the rows: sums[i][ξ] = Σ_j Bᵀ[ξ][j] · d[i][j].
        let phases = &*phases;
        for (i, sums) in sums[..a * a * n].chunks_exact_mut(a * n).enumerate() {
            for (terms, sum) in self.bt.0.iter().zip(sums.chunks_exact_mut(n)) {
                let rows = &phases[i * m * run..];
                combine(sum, terms, |j| &rows[(j % m) * run + j / m..]);
            }
        }
        // Down the columns: point (ξy, ξx) = Σ_i Bᵀ[ξy][i] · sums[i][ξx].
        let sums = &sums[..a * a * n];
        for (yi, terms) in self.bt.0.iter().enumerate() {
            for xi in 0..a {
                let out = &mut out[(yi * a + xi) * stride..][..n];
                combine(out, terms, |i| &sums[(i * a + xi) * n..]);
            }
        }
    }

    /// Transforms one output channel's products of the tiles `cols` (at
    /// most [`CHUNK`]) of tile row `row` back — point `ξ`'s at
    /// `products[ξ · stride ..]`, one after the other —, adds `bias`,
    /// applies `activation` and stores, by `store(row, column, value)`,
    /// the outputs that lie inside the channel's plane (`size` =
    /// `[out_height, out_width]`). Returns whether some output stored is
    /// not finite.
    #[allow(clippy::too_many_arguments)]
    pub fn output(
        &self,
        products: &[f32],
        stride: usize,
        bias: f32,
        activation: Activation,
        mut store: impl FnMut(usize, usize, f32),
        size: [usize; 2],
        row: usize,
        cols: Range<usize>,
        work: &mut [f32],
    ) -> bool {
        let (m, a, n) = (self.m, self.alpha, cols.len());
        assert!(n <= CHUNK, "a chunk of a tile row");
        let [oh, ow] = size;
        let (sums, out) = work.split_at_mut(m * a * n);
        // Down the columns: sums[i][ξx] = Σ_ξy Aᵀ[i][ξy] · products[ξy][ξx].
        for (terms, sums) in self.at.0.iter().zip(sums.chunks_exact_mut(a * n)) {
            for (xi, sum) in sums.chunks_exact_mut(n).enumerate() {
                combine(sum, terms, |yi| &products[(yi * a + xi) * stride..]);
            }
        }
        let sums = &*sums;
        let out = &mut out[..n];
        let mut finite = true;
        for i in 0..m.min(oh.saturating_sub(row * m)) {
            for (j, terms) in self.at.0.iter().enumerate() {
                // Along the rows: Σ_ξx Aᵀ[j][ξx] · sums[i][ξx].
                combine(out, terms, |xi| &sums[(i * a + xi) * n..]);
                for (t, &v) in out.iter().enumerate() {
                    let col = (cols.start + t) * m + j;
                    if col >= ow {
                        break;
                    }
                    let v = activation.apply_f32(v + bias);
                    finite &= v.is_finite();
                    store(row * m + i, col, v);
                }
            }
        }
        !finite
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

    /// Every tile of a padded plane, transformed by rows, is the tile
    /// transformed by `Transform::input` (in f64, to f32's rounding).
    #[test]
    fn input_rows_are_the_tiles_transformed() {
        for (m, r) in [(2, 3), (4, 3), (6, 3), (2, 5), (3, 2)] {
            let t = Transform::new(m, r);
            let rows = Rows::new(&t);
            let a = t.alpha();
            let ([h, w], [top, left]) = ([7, 11], [1, 2]);
            let x: Vec<f32> = (0..h * w).map(value).collect();
            let (tile_rows, tile_cols) = ((h + 2 - r + 1).div_ceil(m), (w + 3 - r + 1).div_ceil(m));
            let mut work = vec![0.0; rows.work_len()];
            for row in 0..tile_rows {
                let cols = 1..tile_cols;
                let stride = cols.len() + 3;
                let mut out = vec![f32::NAN; a * a * stride];
                rows.input(&x, [h, w], [top, left], row, cols.clone(), &mut work, &mut out, stride);
                for (t_i, tc) in cols.enumerate() {
                    let d: Vec<f64> = (0..a * a)
                        .map(|k| {
                            let (yy, xx) = (
                                (row * m + k / a) as i64 - top as i64,
                                (tc * m + k % a) as i64 - left as i64,
                            );
                            let inside = (0..h as i64).contains(&yy) && (0..w as i64).contains(&xx);
                            if inside { f64::from(x[yy as usize * w + xx as usize]) } else { 0.0 }
                        })
                        .collect();
                    let want = t.input(&d);
                    for (xi, &v) in want.iter().enumerate() {
                        let got = f64::from(out[xi * stride + t_i]);
                        assert!(
                            (got - v).abs() <= 1e-5 * (1.0 + v.abs()),
                            "F({m},{r}) {row} {tc} {xi}"
                        );
                    }
                }
            }
        }
    }

    /// Products transformed back by rows are `Transform::output` of each
    /// tile, plus the bias, activated, cropped to the plane.
    #[test]
    fn output_rows_are_the_tiles_transformed_back() {
        for (m, r) in [(2, 3), (4, 3), (6, 3), (2, 5)] {
            let t = Transform::new(m, r);
            let rows = Rows::new(&t);
            let a = t.alpha();
            let [oh, ow] = [2 * m + 1, 3 * m - 1];
            let (tile_rows, tile_cols) = (oh.div_ceil(m), ow.div_ceil(m));
            let stride = tile_cols + 2;
            let products: Vec<f32> = (0..a * a * stride).map(value).collect();
            let mut work = vec![0.0; rows.work_len()];
            for activation in [Activation::None, Activation::Relu] {
                let mut y = vec![f32::NAN; oh * ow];
                for row in 0..tile_rows {
                    let store = |i: usize, j: usize, v: f32| y[i * ow + j] = v;
                    let bad = rows.output(
                        &products,
                        stride,
                        0.25,
                        activation,
                        store,
                        [oh, ow],
                        row,
                        0..tile_cols,
                        &mut work,
                    );
                    assert!(!bad);
                }
                for tc in 0..tile_cols {
                    let p: Vec<f64> =
                        (0..a * a).map(|k| f64::from(products[k * stride + tc])).collect();
                    let want = t.output(&p);
                    for row in 0..tile_rows {
                        for (k, &want) in want.iter().enumerate() {
                            let (yy, xx) = (row * m + k / m, tc * m + k % m);
                            if yy >= oh || xx >= ow {
                                continue;
                            }
                            let v = activation.apply_f64(want + 0.25);
                            let got = f64::from(y[yy * ow + xx]);
                            assert!(
                                (got - v).abs() <= 1e-5 * (1.0 + v.abs()),
                                "F({m},{r}) {yy} {xx}"
                            );
                        }
                    }
                }
                assert!(y.iter().all(|v| !v.is_nan()), "every output stored");
            }
        }
    }
}
