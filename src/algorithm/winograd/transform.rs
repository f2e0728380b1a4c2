//! The transforms of F(m, r), from interpolation points.
//!
//! The linear convolution `c = u ∗ g` of `u` (m taps) and `g` (r taps) is
//! the polynomial product `c(x) = u(x)·g(x)`, of degree α − 1: evaluated
//! at α − 1 points and at infinity (the leading coefficient), it is
//! `V_α c = (V_m u) ⊙ (V_r g)`, with `V_k` the α × k matrix whose row
//! for point p is `[1, p, …, p^(k−1)]` and whose row for infinity picks
//! the last coefficient. So `c = V_α⁻¹ diag(V_r g) V_m u`, and the
//! correlation `y = Σ_j g_j d_(k+j)` this layer computes, the transpose
//! of that map, is `y = V_mᵀ [(V_r g) ⊙ (V_α⁻ᵀ d)]`:
//! `Aᵀ = V_mᵀ`, `G = V_r`, `Bᵀ = V_α⁻ᵀ`. Each row of `Bᵀ` is then scaled
//! to the smallest integers and the same row of `G` divided by as much,
//! which leaves the product unchanged (Lavin and Gray's matrices for
//! F(2, 3) and F(4, 3), up to the order and signs of the points).

use super::ratio::{Ratio, gcd};

/// A rational matrix, row-major.
#[derive(Clone, Debug, PartialEq)]
struct Matrix {
    rows: usize,
    cols: usize,
    at: Vec<Ratio>,
}

impl Matrix {
    fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> Ratio) -> Matrix {
        let at = (0..rows * cols).map(|i| f(i / cols, i % cols)).collect();
        Matrix { rows, cols, at }
    }

    fn get(&self, i: usize, j: usize) -> Ratio {
        self.at[i * self.cols + j]
    }

    fn transpose(&self) -> Matrix {
        Matrix::from_fn(self.cols, self.rows, |i, j| self.get(j, i))
    }

    /// The inverse of a square matrix (Gauss–Jordan; the Vandermonde
    /// matrices of distinct points are invertible).
    fn inverse(&self) -> Matrix {
        let n = self.rows;
        let mut a = self.clone();
        let mut inv = Matrix::from_fn(n, n, |i, j| if i == j { Ratio::ONE } else { Ratio::ZERO });
        for col in 0..n {
            let pivot = (col..n).find(|&r| !a.get(r, col).is_zero()).expect("distinct points");
            for k in 0..n {
                a.at.swap(col * n + k, pivot * n + k);
                inv.at.swap(col * n + k, pivot * n + k);
            }
            let p = a.get(col, col);
            for k in 0..n {
                a.at[col * n + k] = a.get(col, k) / p;
                inv.at[col * n + k] = inv.get(col, k) / p;
            }
            for r in (0..n).filter(|&r| r != col) {
                let f = a.get(r, col);
                if f.is_zero() {
                    continue;
                }
                for k in 0..n {
                    a.at[r * n + k] = a.get(r, k) - f * a.get(col, k);
                    inv.at[r * n + k] = inv.get(r, k) - f * inv.get(col, k);
                }
            }
        }
        inv
    }

    fn to_f64(&self) -> Vec<f64> {
        self.at.iter().map(|r| r.to_f64()).collect()
    }
}

/// The first `n` interpolation points of the usual sequence `0, 1, −1, 2,
/// −2, 1/2, −1/2, 3, −3, 1/3, −1/3, …`: small magnitudes, and reciprocal
/// pairs, keep the transforms' entries and their rounding error small.
fn points(n: usize) -> Vec<Ratio> {
    let mut points = vec![Ratio::ZERO];
    let mut k = 1;
    while points.len() < n {
        points.extend([Ratio::int(k), Ratio::int(-k)]);
        if k > 1 {
            points.extend([Ratio::new(1, k), Ratio::new(-1, k)]);
        }
        k += 1;
    }
    points.truncate(n);
    points
}

/// `V_k` for `points` and infinity: α × k.
fn vandermonde(points: &[Ratio], k: usize) -> Matrix {
    let alpha = points.len() + 1;
    Matrix::from_fn(alpha, k, |i, j| match points.get(i) {
        Some(&p) => (0..j).fold(Ratio::ONE, |acc, _| acc * p),
        None if j == k - 1 => Ratio::ONE,
        None => Ratio::ZERO,
    })
}

/// The exact transforms of F(m, r).
struct Exact {
    at: Matrix,
    g: Matrix,
    bt: Matrix,
}

fn exact(m: usize, r: usize) -> Exact {
    let alpha = m + r - 1;
    let p = points(alpha - 1);
    let at = vandermonde(&p, m).transpose();
    let mut g = vandermonde(&p, r);
    let mut bt = vandermonde(&p, alpha).inverse().transpose();
    // Row i of Bᵀ to its smallest integers, its first nonzero positive;
    // row i of G divided by the same factor.
    for i in 0..alpha {
        let row = &bt.at[i * alpha..(i + 1) * alpha];
        let lcm = row.iter().fold(1i128, |l, x| l / gcd(l, x.denom()) * x.denom());
        let nums = row.iter().fold(0i128, |acc, x| gcd(acc, x.numer() * (lcm / x.denom())));
        let first = row.iter().find(|x| !x.is_zero()).map_or(1, |x| x.numer().signum());
        let s = Ratio::new(lcm * first, nums.max(1));
        for k in 0..alpha {
            bt.at[i * alpha + k] = bt.get(i, k) * s;
        }
        for k in 0..r {
            g.at[i * r + k] = g.get(i, k) / s;
        }
    }
    Exact { at, g, bt }
}

/// The transforms of Winograd's F(m, r) along one axis of the image, in
/// f64 (exact in binary for the points used up to α = 8: their
/// denominators are powers of 2 and 3; G's entries are rounded).
/// F(1, 1) is the identity: the axis of a kernel's single tap.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// Outputs of a tile along this axis.
    pub m: usize,
    /// Kernel taps along this axis.
    pub r: usize,
    /// `Aᵀ`: m × α, row-major.
    pub at: Vec<f64>,
    /// `G`: α × r, row-major.
    pub g: Vec<f64>,
    /// `Bᵀ`: α × α, row-major, each row the smallest integers.
    pub bt: Vec<f64>,
}

impl Axis {
    /// F(m, r) from the first α − 1 points of `0, ±1, ±2, ±1/2, ±3, ±1/3,
    /// …` and infinity. `m` and `r` at least 1, m at most 7, α = m + r − 1
    /// at most 8 (F(6, 3), F(4, 5), F(2, 7): the tiles the tests check).
    pub fn new(m: usize, r: usize) -> Axis {
        assert!(
            m >= 1 && r >= 1 && m <= 7 && r <= 8 && m + r - 1 <= 8,
            "F({m}, {r}) is not built here"
        );
        let e = exact(m, r);
        Axis { m, r, at: e.at.to_f64(), g: e.g.to_f64(), bt: e.bt.to_f64() }
    }

    /// The input tile's side, `m + r − 1`.
    pub fn alpha(&self) -> usize {
        self.m + self.r - 1
    }

    /// This axis with every entry's magnitude.
    fn magnitudes(&self) -> Axis {
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect();
        Axis { at: abs(&self.at), g: abs(&self.g), bt: abs(&self.bt), ..*self }
    }
}

/// The transforms of Winograd's F(m_h × m_w, r_h × r_w): one [`Axis`] down
/// the columns (`h`) and one along the rows (`w`). A square kernel has the
/// same on both; a 1 × r or r × 1 kernel the identity F(1, 1) on its
/// single tap's axis, so that a tile is one row of m outputs (or one
/// column) and the 1-D F(m, r) does its work.
#[derive(Clone, Debug, PartialEq)]
pub struct Transform {
    /// Down the columns: F(m_h, r_h).
    pub h: Axis,
    /// Along the rows: F(m_w, r_w).
    pub w: Axis,
}

impl Transform {
    /// F(m × m, r × r) ([`Axis::new`] on both axes).
    pub fn new(m: usize, r: usize) -> Transform {
        Transform { h: Axis::new(m, r), w: Axis::new(m, r) }
    }

    /// F(m_h × m_w, r_h × r_w) for an `[r_h, r_w]` kernel: F(m, r) on each
    /// axis of more than one tap, the identity on the others.
    pub fn for_kernel(m: usize, kernel: [usize; 2]) -> Transform {
        let axis = |r: usize| if r > 1 { Axis::new(m, r) } else { Axis::new(1, 1) };
        Transform { h: axis(kernel[0]), w: axis(kernel[1]) }
    }

    /// Outputs of a tile: `[m_h, m_w]`.
    pub fn m(&self) -> [usize; 2] {
        [self.h.m, self.w.m]
    }

    /// Kernel taps: `[r_h, r_w]`.
    pub fn r(&self) -> [usize; 2] {
        [self.h.r, self.w.r]
    }

    /// The input tile: `[α_h, α_w]`.
    pub fn alpha(&self) -> [usize; 2] {
        [self.h.alpha(), self.w.alpha()]
    }

    /// Transform points: `α_h · α_w`.
    pub fn points(&self) -> usize {
        self.h.alpha() * self.w.alpha()
    }

    /// `F(4×4, 3×3)`, `F(1×4, 1×3)`: the transform's name.
    pub fn name(&self) -> String {
        let ([mh, mw], [rh, rw]) = (self.m(), self.r());
        format!("F({mh}×{mw}, {rh}×{rw})")
    }

    /// `G_h g G_wᵀ`: an `r_h × r_w` kernel (row-major) transformed, `α_h ×
    /// α_w`, in f64 (weights are transformed once, then rounded).
    pub fn kernel(&self, g: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; self.points()];
        self.kernel_into(g, &mut out);
        out
    }

    /// [`Transform::kernel`] into `out` (`α_h × α_w`), allocating nothing:
    /// a layer's weights are transformed kernel by kernel.
    pub fn kernel_into(&self, g: &[f64], out: &mut [f64]) {
        let ([ah, aw], [rh, rw]) = (self.alpha(), self.r());
        assert_eq!(g.len(), rh * rw, "a kernel of {}", self.name());
        let mut lx = [0.0; 64];
        sandwich_into(&self.h.g, g, &self.w.g, [ah, rh], [aw, rw], &mut lx[..ah * rw], out);
    }

    /// `Bᵀ_h d B_w`: an `α_h × α_w` input tile transformed, in `T`.
    pub fn input<T: Element>(&self, d: &[T]) -> Vec<T> {
        let [ah, aw] = self.alpha();
        assert_eq!(d.len(), ah * aw, "an input tile of {}", self.name());
        sandwich(&T::matrix(&self.h.bt), d, &T::matrix(&self.w.bt), [ah, ah], [aw, aw])
    }

    /// `Aᵀ_h M A_w`: the `m_h × m_w` outputs of a tile from its `α_h × α_w`
    /// transformed products (summed over channels), in `T`.
    pub fn output<T: Element>(&self, products: &[T]) -> Vec<T> {
        let ([mh, mw], [ah, aw]) = (self.m(), self.alpha());
        assert_eq!(products.len(), ah * aw, "the products of a tile of {}", self.name());
        sandwich(&T::matrix(&self.h.at), products, &T::matrix(&self.w.at), [mh, ah], [mw, aw])
    }

    /// The `m_h × m_w` outputs of one `α_h × α_w` input tile `d` correlated
    /// with one `r_h × r_w` kernel `g` (row-major), through the transforms.
    pub fn tile(&self, d: &[f64], g: &[f64]) -> Vec<f64> {
        let (u, v) = (self.kernel(g), self.input(d));
        let uv: Vec<f64> = u.iter().zip(&v).map(|(x, y)| x * y).collect();
        self.output(&uv)
    }

    /// This transform with every entry's magnitude: the matrices of the
    /// componentwise error bound.
    pub fn magnitudes(&self) -> Transform {
        Transform { h: self.h.magnitudes(), w: self.w.magnitudes() }
    }

    /// How much larger the rounding error of a tile computed through the
    /// transforms can be than the direct correlation's: the largest
    /// output of `|Aᵀ_h| [(|G_h| J |G_wᵀ|) ⊙ (|Bᵀ_h| J |B_w|)] |A_w|` (J all
    /// ones), the componentwise bound's sum of magnitudes when every input
    /// and weight has magnitude 1, over the direct correlation's `r_h r_w`.
    pub fn growth(&self) -> f64 {
        let abs = self.magnitudes();
        let ([ah, aw], [rh, rw]) = (self.alpha(), self.r());
        let u = abs.kernel(&vec![1.0; rh * rw]);
        let v = abs.input(&vec![1.0; ah * aw]);
        let uv: Vec<f64> = u.iter().zip(&v).map(|(x, y)| x * y).collect();
        let y = abs.output(&uv);
        y.iter().fold(0.0f64, |acc, &x| acc.max(x)) / (rh * rw) as f64
    }
}

/// The floating-point types the transforms are applied in.
pub trait Element:
    Copy + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self>
{
    /// A transform's matrix in this type.
    fn matrix(m: &[f64]) -> Vec<Self>;
}

impl Element for f64 {
    fn matrix(m: &[f64]) -> Vec<f64> {
        m.to_vec()
    }
}

impl Element for f32 {
    fn matrix(m: &[f64]) -> Vec<f32> {
        m.iter().map(|&v| v as f32).collect()
    }
}

/// `L x Rᵀ` for `L` (`rows × inner`), `x` (`inner × width`) and `R`
/// (`cols × width`), the products of each entry summed in order.
fn sandwich<T: Element>(
    left: &[T],
    x: &[T],
    right: &[T],
    [rows, inner]: [usize; 2],
    [cols, width]: [usize; 2],
) -> Vec<T> {
    let mut lx = vec![T::default(); rows * width];
    let mut out = vec![T::default(); rows * cols];
    sandwich_into(left, x, right, [rows, inner], [cols, width], &mut lx, &mut out);
    out
}

/// [`sandwich`] into `out` (`rows × cols`), with `lx` (`rows × width`)
/// for the intermediate product.
fn sandwich_into<T: Element>(
    l: &[T],
    x: &[T],
    r: &[T],
    [rows, inner]: [usize; 2],
    [cols, width]: [usize; 2],
    lx: &mut [T],
    out: &mut [T],
) {
    for i in 0..rows {
        for k in 0..width {
            let mut acc = T::default();
            for j in 0..inner {
                acc = acc + l[i * inner + j] * x[j * width + k];
            }
            lx[i * width + k] = acc;
        }
    }
    for i in 0..rows {
        for k in 0..cols {
            let mut acc = T::default();
            for j in 0..width {
                acc = acc + lx[i * width + j] * r[k * width + j];
            }
            out[i * cols + k] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VARIANTS: [(usize, usize); 7] = [(2, 3), (4, 3), (6, 3), (2, 5), (4, 5), (2, 7), (1, 3)];

    /// In exact arithmetic, `Aᵀ [(G g) ⊙ (Bᵀ d)]` is the correlation of `d`
    /// with `g` for every input and kernel (checked on unit vectors, so on
    /// all of them by linearity).
    #[test]
    fn the_transforms_compute_the_correlation_exactly() {
        for (m, r) in VARIANTS {
            let e = exact(m, r);
            let alpha = m + r - 1;
            for j in 0..r {
                for i in 0..alpha {
                    let gg: Vec<Ratio> = (0..alpha).map(|p| e.g.get(p, j)).collect();
                    let bd: Vec<Ratio> = (0..alpha).map(|p| e.bt.get(p, i)).collect();
                    for k in 0..m {
                        let y = (0..alpha)
                            .fold(Ratio::ZERO, |acc, p| acc + e.at.get(k, p) * gg[p] * bd[p]);
                        let want = if k + j == i { Ratio::ONE } else { Ratio::ZERO };
                        assert_eq!(y, want, "F({m}, {r}): output {k}, tap {j}, input {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn bt_rows_are_integers_and_f_2_3_is_the_usual_one() {
        for (m, r) in VARIANTS {
            let t = Axis::new(m, r);
            assert!(t.bt.iter().all(|x| x.fract() == 0.0), "F({m}, {r}): {:?}", t.bt);
        }
        let identity = Axis::new(1, 1);
        assert_eq!((identity.at, identity.g, identity.bt), (vec![1.], vec![1.], vec![1.]));
        let column = Transform::for_kernel(6, [3, 1]);
        assert_eq!(
            (column.name(), column.alpha(), column.points()),
            ("F(6×1, 3×1)".into(), [8, 1], 8)
        );
        let t = Axis::new(2, 3);
        let bt = [1., 0., -1., 0., 0., 1., 1., 0., 0., 1., -1., 0., 0., 1., 0., -1.];
        assert_eq!(t.bt, bt);
        assert_eq!(t.at, [1., 1., 1., 0., 0., 1., -1., 1.]);
    }

    /// In f64, a 2-D tile through the transforms matches the direct
    /// correlation to near the unit roundoff, on pseudo-random data.
    #[test]
    fn a_tile_matches_the_direct_correlation() {
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        };
        // Square tiles, the 1-D forms (1 × r and r × 1) and a rectangle.
        let square = VARIANTS.map(|(m, r)| Transform::new(m, r));
        let other = [(4, [1, 3]), (6, [3, 1]), (2, [1, 7]), (2, [7, 1]), (2, [3, 5])];
        let other = other.map(|(m, kernel)| Transform::for_kernel(m, kernel));
        for t in square.into_iter().chain(other) {
            let ([mh, mw], [ah, aw], [rh, rw]) = (t.m(), t.alpha(), t.r());
            for _ in 0..20 {
                let d: Vec<f64> = (0..ah * aw).map(|_| next()).collect();
                let g: Vec<f64> = (0..rh * rw).map(|_| next()).collect();
                let y = t.tile(&d, &g);
                for (i, k) in (0..mh).flat_map(|i| (0..mw).map(move |k| (i, k))) {
                    let direct: f64 = (0..rh)
                        .flat_map(|p| (0..rw).map(move |q| (p, q)))
                        .map(|(p, q)| g[p * rw + q] * d[(i + p) * aw + k + q])
                        .sum();
                    let bound = 1e-13 * t.growth() * (rh * rw) as f64;
                    let name = t.name();
                    assert!((y[i * mw + k] - direct).abs() <= bound, "{name} at ({i}, {k})");
                }
            }
        }
    }

    /// The error growth rises with the tile: F(2, 3) < F(4, 3) < F(6, 3),
    /// each above the direct correlation's 1, square and 1-D.
    #[test]
    fn growth_rises_with_the_tile() {
        let growth = |m| Transform::new(m, 3).growth();
        assert!(1.0 < growth(2) && growth(2) < growth(4) && growth(4) < growth(6));
        let line = |m| Transform::for_kernel(m, [1, 3]).growth();
        assert!(1.0 < line(2) && line(2) < line(4) && line(4) < line(6));
        // A 1-D tile grows as one axis of the square one.
        assert!(line(4) < growth(4));
    }
}
