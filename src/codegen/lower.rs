//! The emitting helpers every lowering shares: constants, addresses,
//! loads, broadcasts and stores, top-tested counted loops (rule 5 of
//! [`super::tile`]) and tiled row loops, the multiply-add and the
//! activations.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    BlockArg, Endianness, Function, InstBuilder, MemFlagsData, Type, Value, types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};

use super::Target;
use crate::abi::{GUARD_BOUNDS, GUARD_FAULT, GUARDED};
use crate::spec::Activation;
use crate::target::VectorIsa;

/// Memory flags for every access: in bounds by construction, never aligned
/// (unaligned vector moves cost nothing extra on this CPU).
pub(super) fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// An index (a pixel, a channel, a vector) known when the code is emitted,
/// or computed by it (a loop's counter).
#[derive(Clone, Copy)]
pub(super) enum Index {
    Fixed(usize),
    Variable(Value),
}

/// A builder for `func`, positioned in its entry block, and the entry
/// block's parameters (the function's).
pub(super) fn begin<'a>(
    func: &'a mut Function,
    context: &'a mut FunctionBuilderContext,
    target: Target,
) -> (Base<'a>, Vec<Value>) {
    let mut fb = FunctionBuilder::new(func, context);
    let entry = fb.create_block();
    fb.append_block_params_for_function_params(entry);
    fb.switch_to_block(entry);
    let params = fb.block_params(entry).to_vec();
    (Base { fb, target, checks: None }, params)
}

/// Returns from the function and finishes it.
pub(super) fn finish(base: Base<'_>) {
    let Base { mut fb, target, .. } = base;
    fb.ins().return_(&[]);
    fb.seal_all_blocks();
    fb.finalize(target.frontend);
}

/// What every emitter holds: the builder of its function, the target, and
/// the checked lowering's state when it emits that one: every pointer the
/// emitter forms from another through [`Lower::offset`], [`Lower::scaled`]
/// or [`Lower::at`] belongs to that one's buffer, and every load and store
/// tests its address against its buffer's bounds.
pub(super) struct Base<'a> {
    pub fb: FunctionBuilder<'a>,
    pub target: Target,
    pub checks: Option<Checks>,
}

/// The buffers a kernel addresses, by their index in the guard block (see
/// [`Checks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Buffer {
    Input = 0,
    Weights = 1,
    Bias = 2,
    Output = 3,
    /// The output rows of each phase, as the caller computed them.
    Rows = 4,
}

/// The checked lowering's state: the guard block (`[lo, hi)` byte
/// addresses of each [`Buffer`], then the fault record) and which buffer
/// each pointer value the emitter formed belongs to.
pub(super) struct Checks {
    pub guard: Value,
    pub owners: std::collections::HashMap<Value, Buffer>,
}

impl Checks {
    /// The checks of a function whose pointer parameters are `buffers`.
    pub fn new(guard: Value, buffers: [(Value, Buffer); GUARDED]) -> Checks {
        Checks { guard, owners: buffers.into_iter().collect() }
    }
}

/// The bytes a checked access covers: a constant, or a run-time value.
#[derive(Clone, Copy)]
pub(super) enum Size {
    Bytes(i64),
    Value(Value),
}

/// What [`Lower::bounds_test`] found: whether the access is inside, its
/// address, its buffer, and the guard block.
pub(super) struct Bounds {
    pub inside: Value,
    pub addr: Value,
    pub owner: Buffer,
    pub guard: Value,
}

/// An emitter: what it holds in its [`Base`], and the helpers it emits with.
pub(super) trait Lower<'a>: Sized {
    /// The emitter's builder, target and checks.
    fn base(&mut self) -> &mut Base<'a>;

    /// The builder of the function being emitted.
    fn fb(&mut self) -> &mut FunctionBuilder<'a> {
        &mut self.base().fb
    }

    /// Whether fused multiply-add is available.
    fn has_fma(&mut self) -> bool {
        self.base().target.has_fma
    }

    /// The vector ISA written.
    fn vector(&mut self) -> VectorIsa {
        self.base().target.vector
    }

    /// Records that `derived` points into the buffer `base` points into.
    fn derive(&mut self, base: Value, derived: Value) -> Value {
        if let Some(checks) = self.base().checks.as_mut()
            && let Some(&owner) = checks.owners.get(&base)
        {
            checks.owners.insert(derived, owner);
        }
        derived
    }

    /// An i64 constant.
    fn iconst(&mut self, v: i64) -> Value {
        self.fb().ins().iconst(types::I64, v)
    }

    /// `base + off` bytes.
    fn offset(&mut self, base: Value, off: i64) -> Value {
        if off == 0 {
            return base;
        }
        let derived = self.fb().ins().iadd_imm_s(base, off);
        self.derive(base, derived)
    }

    /// `base + index · scale` bytes.
    fn scaled(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let step = self.fb().ins().imul_imm_s(index, scale);
        let derived = self.fb().ins().iadd(base, step);
        self.derive(base, derived)
    }

    /// `base` advanced by `index` steps of `step` bytes.
    fn at(&mut self, base: Value, index: Index, step: i64) -> Value {
        match index {
            Index::Fixed(i) => self.offset(base, i as i64 * step),
            Index::Variable(i) => self.scaled(base, i, step),
        }
    }

    /// A load of `ty` at `base + off` bytes.
    fn load(&mut self, ty: Type, base: Value, off: i64) -> Value {
        if self.base().checks.is_some() {
            return self.checked(ty, base, off, None).expect("a load gives a value");
        }
        self.raw_load(ty, base, off)
    }

    /// A load with no check.
    fn raw_load(&mut self, ty: Type, base: Value, off: i64) -> Value {
        match i32::try_from(off) {
            Ok(o) => self.fb().ins().load(ty, flags(), base, o),
            Err(_) => {
                let addr = self.fb().ins().iadd_imm_s(base, off);
                self.fb().ins().load(ty, flags(), addr, 0)
            }
        }
    }

    /// The f32 at `base + off` bytes in every lane of a vector.
    fn broadcast(&mut self, base: Value, off: i64) -> Value {
        let s = self.load(types::F32, base, off);
        let ty = self.vector().ty;
        self.fb().ins().splat(ty, s)
    }

    /// The first `lanes` lanes of `v` at `base + off` bytes, lane `l` at
    /// `l · lane_bytes` from there: one vector store when that is the whole
    /// vector, side by side; else lane by lane.
    fn store_lanes(&mut self, v: Value, base: Value, off: i64, lanes: usize, lane_bytes: i64) {
        if lanes == self.vector().lanes && lane_bytes == 4 {
            return self.store(v, base, off);
        }
        for l in 0..lanes {
            let s = self.fb().ins().extractlane(v, l as u8);
            self.store(s, base, off + l as i64 * lane_bytes);
        }
    }

    /// The loads [`Lower::store_lanes`] stores to: a vector of the first
    /// `lanes` f32 at `base + off` bytes, lane `l` at `l · lane_bytes` from
    /// there, zeros in the lanes past them.
    fn load_lanes(&mut self, base: Value, off: i64, lanes: usize, lane_bytes: i64) -> Value {
        let ty = self.vector().ty;
        if lanes == self.vector().lanes && lane_bytes == 4 {
            return self.load(ty, base, off);
        }
        let mut v = self.splat_const(0.0);
        for l in 0..lanes {
            let s = self.load(types::F32, base, off + l as i64 * lane_bytes);
            v = self.fb().ins().insertlane(v, s, l as u8);
        }
        v
    }

    /// A store of `v` at `base + off` bytes.
    fn store(&mut self, v: Value, base: Value, off: i64) {
        if self.base().checks.is_some() {
            let ty = self.fb().func.dfg.value_type(v);
            self.checked(ty, base, off, Some(v));
            return;
        }
        self.raw_store(v, base, off);
    }

    /// The checked lowering's access of `ty` at `base + off`: a load (when
    /// `value` is `None`, giving what it read) or a store of `value`, done
    /// only if its bytes lie inside the bounds of `base`'s buffer. An access
    /// outside them is not done: it writes the buffer and the address into
    /// the guard block's fault record (for `Kernel::run` to report), and a
    /// load gives zeros. A pointer of no known buffer is an emitter bug,
    /// caught when the code is emitted.
    fn checked(&mut self, ty: Type, base: Value, off: i64, value: Option<Value>) -> Option<Value> {
        let size = Size::Bytes(i64::from(ty.bytes()));
        let Bounds { inside, addr, owner, guard } = self.bounds_test(base, off, size);
        let flags = MemFlagsData::new().with_notrap();
        let fb = self.fb();
        let access = fb.create_block();
        let fault = fb.create_block();
        let done = fb.create_block();
        let result = value.is_none().then(|| fb.append_block_param(done, ty));
        fb.ins().brif(inside, access, &[], fault, &[]);

        fb.switch_to_block(access);
        let read = match value {
            None => Some(self.raw_load(ty, addr, 0)),
            Some(v) => {
                self.raw_store(v, addr, 0);
                None
            }
        };
        let fb = self.fb();
        let args: Vec<BlockArg> = read.into_iter().map(BlockArg::Value).collect();
        fb.ins().jump(done, &args);

        fb.switch_to_block(fault);
        let which = fb.ins().iconst(types::I64, owner as i64 + 1);
        fb.ins().store(flags, which, guard, GUARD_FAULT);
        fb.ins().store(flags, addr, guard, GUARD_FAULT + 8);
        let zero = value.is_none().then(|| {
            if ty.is_vector() {
                let z = fb.ins().f32const(0.0);
                fb.ins().splat(ty, z)
            } else if ty == types::F32 {
                fb.ins().f32const(0.0)
            } else {
                fb.ins().iconst(ty, 0)
            }
        });
        let args: Vec<BlockArg> = zero.into_iter().map(BlockArg::Value).collect();
        fb.ins().jump(done, &args);

        fb.switch_to_block(done);
        result
    }

    /// The checked lowering's test of `size` bytes (a run-time value) at
    /// `base + off`: a
    /// non-zero i8 when they lie inside the bounds of `base`'s buffer;
    /// otherwise zero, with the buffer and the address written into the
    /// guard block's fault record (as [`Lower::checked`] does). For an
    /// access the IR does not make itself: an assembled tile's reads.
    fn checked_span(&mut self, base: Value, off: i64, size: Value) -> Value {
        let Bounds { inside, addr, owner, guard } = self.bounds_test(base, off, Size::Value(size));
        let flags = MemFlagsData::new().with_notrap();
        let fb = self.fb();
        let fault = fb.create_block();
        let done = fb.create_block();
        fb.ins().brif(inside, done, &[], fault, &[]);
        fb.switch_to_block(fault);
        let which = fb.ins().iconst(types::I64, owner as i64 + 1);
        fb.ins().store(flags, which, guard, GUARD_FAULT);
        fb.ins().store(flags, addr, guard, GUARD_FAULT + 8);
        fb.ins().jump(done, &[]);
        fb.switch_to_block(done);
        inside
    }

    /// The test of the checked lowering: whether `size` bytes at `base +
    /// off` lie inside the bounds the guard block gives `base`'s buffer
    /// (`addr − lo ≤ (hi − lo) − size` and the buffer holds `size` bytes:
    /// no sum that can wrap, since an address below `lo` makes `addr − lo`
    /// huge, and fails). A pointer of no known buffer is an emitter bug,
    /// caught when the code is emitted.
    fn bounds_test(&mut self, base: Value, off: i64, size: Size) -> Bounds {
        let checks = self.base().checks.as_ref().expect("the checked lowering");
        let guard = checks.guard;
        let owner = *checks.owners.get(&base).expect("every address is formed from a buffer's");
        let bounds = owner as i32 * GUARD_BOUNDS;
        let fb = self.fb();
        let flags = MemFlagsData::new().with_notrap();
        let lo = fb.ins().load(types::I64, flags, guard, bounds);
        let hi = fb.ins().load(types::I64, flags, guard, bounds + 8);
        let addr = fb.ins().iadd_imm_s(base, off);
        let span = fb.ins().isub(hi, lo);
        let from_start = fb.ins().isub(addr, lo);
        let (room, holds) = match size {
            Size::Bytes(size) => (
                fb.ins().iadd_imm_s(span, -size),
                fb.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, span, size),
            ),
            Size::Value(size) => (
                fb.ins().isub(span, size),
                fb.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, span, size),
            ),
        };
        let fits = fb.ins().icmp(IntCC::UnsignedLessThanOrEqual, from_start, room);
        let inside = fb.ins().band(holds, fits);
        Bounds { inside, addr, owner, guard }
    }

    /// A store with no check.
    fn raw_store(&mut self, v: Value, base: Value, off: i64) {
        match i32::try_from(off) {
            Ok(o) => {
                self.fb().ins().store(flags(), v, base, o);
            }
            Err(_) => {
                let addr = self.fb().ins().iadd_imm_s(base, off);
                self.fb().ins().store(flags(), v, addr, 0);
            }
        }
    }

    /// A top-tested counted loop `for i in (start..end).step_by(step)` that
    /// carries `carried` values; `body` returns their next values.
    fn counted_loop(
        &mut self,
        start: Value,
        end: Value,
        step: i64,
        carried: &[Value],
        mut body: impl FnMut(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        let header = self.fb().create_block();
        let body_block = self.fb().create_block();
        let exit = self.fb().create_block();
        let i = self.fb().append_block_param(header, types::I64);
        let mut header_vals = Vec::with_capacity(carried.len());
        let mut exit_vals = Vec::with_capacity(carried.len());
        for &c in carried {
            let ty = self.fb().func.dfg.value_type(c);
            header_vals.push(self.fb().append_block_param(header, ty));
            exit_vals.push(self.fb().append_block_param(exit, ty));
        }
        let args = |first: Value, rest: &[Value]| -> Vec<BlockArg> {
            std::iter::once(first).chain(rest.iter().copied()).map(BlockArg::Value).collect()
        };
        self.fb().ins().jump(header, &args(start, carried));

        self.fb().switch_to_block(header);
        let more = self.fb().ins().icmp(IntCC::SignedLessThan, i, end);
        let to_exit: Vec<BlockArg> = header_vals.iter().copied().map(BlockArg::Value).collect();
        self.fb().ins().brif(more, body_block, &[], exit, &to_exit);

        self.fb().switch_to_block(body_block);
        let next = body(self, i, &header_vals);
        let i_next = self.fb().ins().iadd_imm_s(i, step);
        self.fb().ins().jump(header, &args(i_next, &next));

        self.fb().switch_to_block(exit);
        exit_vals
    }

    /// Runs `body(r, rows)` over the rows `[first, last)` in tiles of
    /// `tile` rows, then one at a time for the rest.
    fn row_tiles(
        &mut self,
        first: Value,
        last: Value,
        tile: usize,
        mut body: impl FnMut(&mut Self, Value, usize),
    ) {
        if tile <= 1 {
            self.counted_loop(first, last, 1, &[], |e, r, _| {
                body(e, r, 1);
                vec![]
            });
            return;
        }
        let n = self.fb().ins().isub(last, first);
        let rest = self.fb().ins().urem_imm_u(n, tile as i64);
        let tiled = self.fb().ins().isub(last, rest);
        self.counted_loop(first, tiled, tile as i64, &[], |e, r, _| {
            body(e, r, tile);
            vec![]
        });
        self.counted_loop(tiled, last, 1, &[], |e, r, _| {
            body(e, r, 1);
            vec![]
        });
    }

    /// `a · b + acc`, fused when the target has FMA.
    fn mul_add(&mut self, a: Value, b: Value, acc: Value) -> Value {
        if self.has_fma() {
            self.fb().ins().fma(a, b, acc)
        } else {
            let m = self.fb().ins().fmul(a, b);
            self.fb().ins().fadd(m, acc)
        }
    }

    /// `c` in every lane.
    fn splat_const(&mut self, c: f32) -> Value {
        let s = self.fb().ins().f32const(c);
        let ty = self.vector().ty;
        self.fb().ins().splat(ty, s)
    }

    /// `activation` of every lane of `a`, NaN propagated as PyTorch does
    /// (and as [`Activation::apply_f64`] states it). ReLU and the clamp of
    /// ReLU6 are written as `bitselect(fcmp(lt, ..), ..)` in the operand
    /// order Cranelift's x64 backend lowers to one `maxps` / `minps`
    /// (whose NaN rule returns the second operand: `a`): `fmax` / `fmin`
    /// lower to a dozen instructions each, which cost more than a 3×3
    /// depthwise tap loop.
    fn activation(&mut self, a: Value, activation: Activation) -> Value {
        match activation {
            Activation::None => a,
            Activation::Relu => {
                let zero = self.splat_const(0.0);
                self.select_below(a, zero, zero, a)
            }
            Activation::Relu6 => {
                let zero = self.splat_const(0.0);
                let low = self.select_below(a, zero, zero, a);
                let six = self.splat_const(6.0);
                self.select_below(six, low, six, low)
            }
            Activation::LeakyRelu { negative_slope } => {
                let zero = self.splat_const(0.0);
                let slope = self.splat_const(negative_slope);
                let scaled = self.fb().ins().fmul(a, slope);
                self.select_below(a, zero, scaled, a)
            }
        }
    }

    /// Per lane: `if x < y { then } else { otherwise }` (false for NaN).
    fn select_below(&mut self, x: Value, y: Value, then: Value, otherwise: Value) -> Value {
        let below = self.fb().ins().fcmp(FloatCC::LessThan, x, y);
        let flags = MemFlagsData::new().with_endianness(Endianness::Little);
        let ty = self.vector().ty;
        let mask = self.fb().ins().bitcast(ty, flags, below);
        self.fb().ins().bitselect(mask, then, otherwise)
    }
}
