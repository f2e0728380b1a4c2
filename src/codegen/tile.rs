//! The register-tile microkernel every lowering is made of.
//!
//! A register tile holds `reused × fresh` vector accumulators. One *step*
//! of it loads the `reused` operands once (a vector of weights, a vector of
//! buffered pixels, a broadcast weight), then for each of the `fresh`
//! indices and each reused operand loads a fresh operand (a broadcast pixel,
//! a vector of pixels, a broadcast weight) and multiplies it into its
//! accumulator: `C[r, f] += fresh(f, r) · reused(r)`. A kernel's reduction
//! is a sequence of steps over a list of (input, weight) offsets — taps ×
//! channels — which is what oneDNN calls a batch-reduce GEMM:
//!
//! | instance | reused (r) | fresh (f) | accumulator |
//! |---|---|---|---|
//! | direct | `oc_vectors` weight vectors | pixels, broadcast | `r · F + f` |
//! | depthwise | `oc_vectors` weight vectors | pixels, vectors of 4 channels | `r · F + f` |
//! | width, fused depthwise | one broadcast weight | vectors of 4 pixels | `f` |
//! | fused pointwise | `pw_vectors` buffered pixel vectors | output channels' weights, broadcast | `f · R + r` |
//!
//! Its shape follows the rules measured on Cranelift's x86-64 backend,
//! which the emitters cite by number:
//! 1. Build the ISA with host detection (`cranelift_native`): without FMA
//!    enabled, a vector `fma` becomes library calls.
//! 2. 16 vector registers: 12 to 14 accumulators, the rest for the
//!    operands ([`crate::target::VectorIsa::max_accumulators`]).
//! 3. A broadcast operand is a fresh, single-use load per multiply-add:
//!    Cranelift then emits a broadcast from memory; a broadcast value
//!    reused across FMAs costs a register copy per FMA (its FMA forms tie
//!    the result to a multiplicand) and spills.
//! 4. A single-use load placed right before its FMA folds into the FMA's
//!    memory operand.
//! 5. Loops are tested at the top, and carry the accumulators as block
//!    parameters, never through memory.
//! 6. The reduction is unrolled by hand (Cranelift never unrolls), the
//!    accumulator order reversed on odd steps: that removes the register
//!    moves on the loop's back edge.
//! 7. `opt_level = none` keeps instructions in the order written, which
//!    gave the fastest microkernels.
//! 8. Functions stay small: loops, not full unrolling (straight-line code
//!    costs register-allocation time far beyond its speed).
//! 9. In the innermost loop, carry the operands' pointers as block
//!    parameters and advance them, rather than scaling the loop's index
//!    into every address: the ceiling's tile ran 18% slower with the index
//!    scaled (9.0 against 11.0 MACs per tick).

use cranelift_codegen::ir::Value;

use super::lower::Lower;

/// How an operand reaches its multiply-adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Form {
    /// A whole vector, loaded.
    Vector,
    /// One f32, loaded and broadcast to every lane (rule 3).
    Broadcast,
}

/// Where accumulator `(r, f)` sits in the tile's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Layout {
    /// At `r · fresh + f`.
    ReusedMajor,
    /// At `f · reused + r`.
    FreshMajor,
}

/// One operand of a step: its form, and `at`, the byte offset from `base`
/// of the operand of each index (`r` for the reused operand, `(f, r)` for
/// the fresh one).
pub(super) struct Operand<A> {
    pub base: Value,
    pub form: Form,
    pub at: A,
}

/// The shape of a register tile.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tile {
    /// Reused operands, each loaded once per step.
    pub reused: usize,
    /// Fresh operands per reused one, each loaded for its own FMA.
    pub fresh: usize,
    pub layout: Layout,
}

impl Tile {
    /// The index of accumulator `(r, f)`.
    pub fn index(self, r: usize, f: usize) -> usize {
        match self.layout {
            Layout::ReusedMajor => r * self.fresh + f,
            Layout::FreshMajor => f * self.reused + r,
        }
    }
}

/// The operand at `base + off` bytes, in `form`.
fn load<'a, L: Lower<'a>>(e: &mut L, base: Value, form: Form, off: i64) -> Value {
    match form {
        Form::Vector => {
            let ty = e.vector().ty;
            e.load(ty, base, off)
        }
        Form::Broadcast => e.broadcast(base, off),
    }
}

/// One step of `tile` into `accs`: the reused operands loaded, then for
/// each fresh index — in reverse order when `step` (the count of steps
/// emitted in this reduction so far) is odd (rule 6) — and each reused
/// operand, the fresh operand loaded right before its multiply-add (rules
/// 3 and 4), `fresh · reused + acc`: Cranelift ties the result to the first
/// multiplicand, which is then the single-use one and needs no copy.
pub(super) fn step<'a, L: Lower<'a>>(
    e: &mut L,
    tile: Tile,
    reused: &Operand<impl Fn(usize) -> i64>,
    fresh: &Operand<impl Fn(usize, usize) -> i64>,
    step: &mut usize,
    accs: &mut [Value],
) {
    debug_assert_eq!(accs.len(), tile.reused * tile.fresh);
    let held: Vec<Value> =
        (0..tile.reused).map(|r| load(e, reused.base, reused.form, (reused.at)(r))).collect();
    let forward = step.is_multiple_of(2);
    *step += 1;
    for i in 0..tile.fresh {
        let f = if forward { i } else { tile.fresh - 1 - i };
        for (r, &operand) in held.iter().enumerate() {
            let v = load(e, fresh.base, fresh.form, (fresh.at)(f, r));
            let a = tile.index(r, f);
            accs[a] = e.mul_add(v, operand, accs[a]);
        }
    }
}
