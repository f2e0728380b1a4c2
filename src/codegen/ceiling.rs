//! The ceiling's microkernel (see [`crate::ceiling`]): the register tile of
//! `codegen::tile` at its best shape, alone — one weight vector reused by
//! `accumulators` fresh broadcasts of the input per step — over data that
//! stays in L1, so that nothing but the FMA pipes limits it.
//!
//! The function has the C signature `fn(x, w, out, passes)`: `passes` times
//! over `steps` steps (`x` holds `accumulators` floats per step, `w` one
//! vector per step), then the accumulators are stored to `out`, one vector
//! each, so none of the work is dead.

use cranelift_codegen::ir::{Function, Value};

use super::Target;
use super::lower::{self, Base, Lower};
use super::tile::{self, Form, Layout, Operand, Tile};

/// The microkernel's shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Accumulators of the register tile, one fresh broadcast each per step.
    pub accumulators: usize,
    /// Steps per iteration of the loop over the steps.
    pub unroll: usize,
    /// Steps per pass over the data (a multiple of `unroll`).
    pub steps: usize,
}

/// Emits the body of `func` (whose signature is `abi::CeilingFn`'s): a loop over
/// the passes around a loop over the steps, `shape.unroll` steps per
/// iteration.
pub fn lower(shape: Shape, target: Target, func: &mut Function) {
    let mut fctx = cranelift_frontend::FunctionBuilderContext::new();
    let (base, p) = lower::begin(func, &mut fctx, target);
    let mut e = Ceiling { base };
    let [x, w, out, passes] = [p[0], p[1], p[2], p[3]];
    let vector_bytes = target.vector.bytes() as i64;
    let tile = Tile { reused: 1, fresh: shape.accumulators, layout: Layout::ReusedMajor };
    let zero = e.splat_const(0.0);
    let accs = vec![zero; shape.accumulators];
    let first = e.iconst(0);
    let accs = e.counted_loop(first, passes, 1, &accs, |e, _, carried| {
        let (first, steps) = (e.iconst(0), e.iconst(shape.steps as i64));
        // The pointers advance with the loop, carried beside the
        // accumulators (rule 9 of `codegen::tile`): the loop's index scaled
        // into each address measured 18% slower (medians of 9.0 against
        // 11.0 MACs per tick, `convjit bench` against the previous build,
        // interleaved).
        let carried: Vec<Value> = [x, w].iter().chain(carried).copied().collect();
        let done = e.counted_loop(first, steps, shape.unroll as i64, &carried, |e, _, carried| {
            let (x, w) = (carried[0], carried[1]);
            let mut accs = carried[2..].to_vec();
            let mut step = 0;
            for u in 0..shape.unroll {
                let u = u as i64;
                let weights = Operand { base: w, form: Form::Vector, at: |_| u * vector_bytes };
                let pixels = Operand {
                    base: x,
                    form: Form::Broadcast,
                    at: |f: usize, _| (u * shape.accumulators as i64 + f as i64) * 4,
                };
                tile::step(e, tile, &weights, &pixels, &mut step, &mut accs);
            }
            let unroll = shape.unroll as i64;
            let x = e.offset(x, unroll * shape.accumulators as i64 * 4);
            let w = e.offset(w, unroll * vector_bytes);
            [x, w].into_iter().chain(accs).collect()
        });
        done[2..].to_vec()
    });
    for (j, &a) in accs.iter().enumerate() {
        e.store(a, out, j as i64 * vector_bytes);
    }
    lower::finish(e.base);
}

struct Ceiling<'a> {
    base: Base<'a>,
}

impl<'a> Lower<'a> for Ceiling<'a> {
    fn base(&mut self) -> &mut Base<'a> {
        &mut self.base
    }
}
