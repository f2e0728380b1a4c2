//! Winograd's minimal filtering F(m × m, r × r): an r × r correlation's
//! m × m outputs from an α × α input tile (α = m + r − 1) with α²
//! multiplications instead of m²·r², as
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! summed over input channels before the output transform `Aᵀ … A`, so a
//! layer's multiplications become α² matrix products (one per transform
//! point) of the transformed weights by the transformed input tiles.
//!
//! This folder holds the transforms ([`Transform`]), built exactly (in
//! rationals) from interpolation points by the Toom–Cook construction, and
//! the growth of their rounding error over direct convolution
//! ([`Transform::growth`]), which decides which tile sizes stay inside a
//! layer's tolerance (docs/correctness.md).

mod ratio;
mod transform;

pub use transform::{Element, Transform};
