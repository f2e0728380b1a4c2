//! Every call into JIT-compiled code, and the memory that code lives in.
//!
//! Each function convjit compiles is declared here once, as a list of
//! parameters from which both its Rust `extern "C"` type and its Cranelift
//! IR signature are made, so that the two cannot disagree. A handle is
//! made from a code address ([`ConvFn::from_code`], ...) and called
//! ([`ConvFn::call`]) only here: the rest of the crate holds handles, and
//! states the lengths that make a call safe where it makes one.
//!
//! | function | emitted by | called by |
//! |---|---|---|
//! | [`ConvFn`] | `codegen::conv` | `Kernel::run` |
//! | [`DepthwiseFn`], [`PointwiseFn`] | `codegen::dsc` | `DscKernel::run` |
//! | [`CeilingFn`] | `codegen::ceiling` | `ceiling::Meter` |
//! | [`TileFn`] | `codegen::wide` | conv kernels' IR; `ceiling::Meter` |

use std::sync::Mutex;

use cranelift_codegen::ir::{AbiParam, Signature, Type, types};
use cranelift_codegen::isa::CallConv;
use cranelift_jit::JITModule;

use crate::error::Error;

/// A parameter of JIT code: its IR type on a target whose pointers are
/// `pointer`.
trait Param {
    fn ir(pointer: Type) -> Type;
}

impl<T> Param for *const T {
    fn ir(pointer: Type) -> Type {
        pointer
    }
}

impl<T> Param for *mut T {
    fn ir(pointer: Type) -> Type {
        pointer
    }
}

impl Param for i64 {
    fn ir(_: Type) -> Type {
        types::I64
    }
}

/// Declares each JIT function: a `Copy` handle around its `extern "C"`
/// type, its IR signature made from the same parameters, the one
/// transmute from a code address, and the call.
macro_rules! jit_functions {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),* $(,)?);)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub(crate) struct $name(unsafe extern "C" fn($($ty),*));

        impl $name {
            /// The IR signature, in `call_conv`, of the function this
            /// handle calls.
            pub(crate) fn signature(pointer: Type, call_conv: CallConv) -> Signature {
                let mut sig = Signature::new(call_conv);
                sig.params.extend([$(AbiParam::new(<$ty as Param>::ir(pointer))),*]);
                sig
            }

            /// The function at `code`.
            ///
            /// # Safety
            /// `code` is the address of a finalized function compiled with
            /// [`Self::signature`] in the host's default calling convention
            /// (`extern "C"`), whose [`Code`] outlives every call.
            pub(crate) unsafe fn from_code(code: *const u8) -> $name {
                // SAFETY: as the caller promises.
                $name(unsafe {
                    std::mem::transmute::<*const u8, unsafe extern "C" fn($($ty),*)>(code)
                })
            }

            /// Calls the function.
            ///
            /// # Safety
            /// Every pointer is valid for every access the code makes with
            /// these arguments (the contract of the module that emitted
            /// it), no other call writes what this one reads or writes, and
            /// the code is alive.
            #[allow(clippy::too_many_arguments)]
            pub(crate) unsafe fn call(self, $($arg: $ty),*) {
                // SAFETY: as the caller promises.
                unsafe { (self.0)($($arg),*) }
            }
        }
    )*};
}

jit_functions! {
    /// A conv kernel (see `codegen::conv`): one padded input image, the
    /// packed weights and bias, the image's NCHW output, the work items
    /// `[begin, end)`, the output rows `[first, last)` of each phase (two
    /// i64 a phase), and the checked lowering's guard block (null for
    /// plain code).
    ConvFn(
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        begin: i64,
        end: i64,
        rows: *const i64,
        guard: *mut Guard,
    );
    /// The fused block's depthwise function (see `codegen::dsc`): the NCHW
    /// image, every channel's weights and bias, the band buffer, the copy
    /// buffer, the band's output rows `[first, last)` and the padded input
    /// rows `[from, to)` they read.
    DepthwiseFn(
        x: *const f32,
        w: *const f32,
        bias: *const f32,
        band: *mut f32,
        copy: *mut f32,
        first: i64,
        last: i64,
        from: i64,
        to: i64,
    );
    /// The fused block's pointwise function: the band buffer, the packed
    /// weights and bias, the image's NCHW output, the band's output rows
    /// `[first, last)`.
    PointwiseFn(
        band: *const f32,
        w: *const f32,
        bias: *const f32,
        y: *mut f32,
        first: i64,
        last: i64,
    );
    /// The ceiling's microkernel (see `codegen::ceiling`): `passes` passes
    /// over its input and weights, the accumulators stored to `out`.
    CeilingFn(x: *const f32, w: *const f32, out: *mut f32, passes: i64);
    /// An assembled register tile (see `codegen::wide`), always in the
    /// System V convention: its input, weights and bias, the block it
    /// stores its accumulators to, and — when it stores its outputs
    /// itself — the output and the channels to store. Called from conv
    /// kernels' IR, and by the ceiling.
    TileFn(x: *const f32, w: *const f32, bias: *const f32, acc: *mut f32, y: *mut f32, lanes: i64);
}

/// The guard block of the checked lowering (see `codegen::conv`): the
/// `[lo, hi)` byte addresses of the input, weights, bias, output and row
/// ranges a call may touch, then the fault record the code writes when an
/// access falls outside (the buffer's index plus one, and the address).
/// The emitter addresses it by [`GUARD_BOUNDS`] and [`GUARD_FAULT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Guard {
    bounds: [[u64; 2]; GUARDED],
    fault: [u64; 2],
}

/// The buffers a guard block bounds.
pub(crate) const GUARDED: usize = 5;

/// Bytes, in the guard block, of one buffer's bounds (buffer `i`'s at
/// `i · GUARD_BOUNDS`).
pub(crate) const GUARD_BOUNDS: i32 = std::mem::size_of::<[u64; 2]>() as i32;

/// Byte offset, in the guard block, of the fault record.
pub(crate) const GUARD_FAULT: i32 = std::mem::offset_of!(Guard, fault) as i32;

/// The buffers of a guard block, in its order.
const GUARDED_NAMES: [&str; GUARDED] = ["input", "weights", "bias", "output", "row ranges"];

impl Guard {
    /// The bounds of the buffers, each `(start, length in bytes)`.
    pub(crate) fn new(buffers: [(*const u8, usize); GUARDED]) -> Guard {
        let bounds = buffers.map(|(p, len)| [p as u64, p as u64 + len as u64]);
        Guard { bounds, fault: [0; 2] }
    }

    /// The fault the code recorded, if any.
    pub(crate) fn fault(&self) -> Option<Error> {
        let which = usize::try_from(self.fault[0]).ok()?.checked_sub(1)?;
        let [lo, hi] = *self.bounds.get(which)?;
        Some(Error::CheckedAccess {
            buffer: GUARDED_NAMES[which],
            offset: self.fault[1].wrapping_sub(lo) as i64,
            len: hi - lo,
        })
    }
}

/// Owns the memory of JIT-compiled code, which is freed when it is dropped:
/// whoever holds a handle into the code must hold its `Code` too.
pub(crate) struct Code {
    /// Never used but to free it: the mutex only makes `Code` `Sync` (the
    /// module has interior mutability that threads must not share).
    module: Mutex<Option<JITModule>>,
}

impl Code {
    /// The owner of `module`'s code.
    pub(crate) fn new(module: JITModule) -> Code {
        Code { module: Mutex::new(Some(module)) }
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        let module = self.module.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(module) = module.take() {
            // SAFETY: the owner of `self` holds the only handles into the
            // module's memory, and they die with it.
            unsafe { module.free_memory() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_block_is_laid_out_as_the_emitter_addresses_it() {
        assert_eq!(GUARD_BOUNDS, 16);
        assert_eq!(GUARD_FAULT, GUARDED as i32 * GUARD_BOUNDS);
        assert_eq!(std::mem::size_of::<Guard>(), GUARD_FAULT as usize + 16);
    }

    #[test]
    fn signatures_follow_the_rust_types() {
        let sig = ConvFn::signature(types::I64, CallConv::SystemV);
        let params: Vec<Type> = sig.params.iter().map(|p| p.value_type).collect();
        let p = types::I64;
        assert_eq!(params, [p, p, p, p, types::I64, types::I64, p, p]);
        assert_eq!(PointwiseFn::signature(types::I32, CallConv::SystemV).params.len(), 6);
        assert_eq!(
            DepthwiseFn::signature(types::I32, CallConv::SystemV).params[4].value_type,
            types::I32
        );
        assert!(CeilingFn::signature(types::I64, CallConv::SystemV).returns.is_empty());
    }
}
