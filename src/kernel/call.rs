//! One call of a conv kernel's code: the pointers it takes, the output rows
//! of each phase it computes, and, for the checked lowering, the guard
//! block and where a fault is reported.

use std::ops::Range;
use std::sync::Mutex;

use crate::abi::{ConvFn, Guard};
use crate::codegen::Plan;
use crate::error::Error;
use crate::geometry::MAX_PHASES;

/// One call of the compiled code on one image: the pointers it takes, which
/// threads of one run share.
#[derive(Clone, Copy)]
pub(super) struct Call<'a> {
    pub(super) function: ConvFn,
    /// The plan the code was compiled for: the output rows of each part.
    pub(super) plan: &'a Plan,
    /// The output rows of every phase, `[first, last)` as the code reads
    /// them: computed once per kernel, for the calls on whole phases (the many
    /// calls of a run by groups make no more of them).
    pub(super) whole: &'a [i64],
    pub(super) x: *const f32,
    pub(super) w: *const f32,
    pub(super) b: *const f32,
    pub(super) y: *mut f32,
    /// The start and length (bytes) of the buffers `x`, `w`, `b` and `y`
    /// point into, for the checked lowering's guard block (`x` may point
    /// before its band's buffer).
    pub(super) buffers: [(*const u8, usize); 4],
    /// For checked code: where a call reports an access out of bounds.
    pub(super) faults: Option<*const Mutex<Option<Error>>>,
}

// SAFETY: the pointers are only dereferenced by `Call::share`, whose callers
// give concurrent calls disjoint shares (see `Kernel::run`); `faults` points
// to a mutex that outlives every call of the run.
unsafe impl Send for Call<'_> {}
unsafe impl Sync for Call<'_> {}

/// Writes the output rows of each phase of `plan` for parts `span` of
/// `parts` into `ranges` as the code reads them (`[first, last)`, two i64
/// a phase); returns how many it wrote.
pub(super) fn fill_ranges(
    plan: &Plan,
    span: Range<usize>,
    parts: usize,
    ranges: &mut [i64],
) -> usize {
    let mut n = 0;
    for (range, slot) in plan.part_rows(span, parts).zip(ranges.chunks_exact_mut(2)) {
        slot.copy_from_slice(&[range.start as i64, range.end as i64]);
        n += 2;
    }
    n
}

/// The guard block's bounds of `len` floats at `p`.
pub(super) fn floats(p: *const f32, len: usize) -> (*const u8, usize) {
    (p.cast(), len * 4)
}

impl<'a> Call<'a> {
    /// This call reading its input at `x`, in the buffer of `len` elements
    /// at `buffer` (a padded copy).
    pub(super) fn reading(self, x: *const f32, buffer: *const f32, len: usize) -> Call<'a> {
        let mut buffers = self.buffers;
        buffers[0] = floats(buffer, len);
        Call { x, buffers, ..self }
    }

    /// Runs the work items `items` of the image, on parts `span` of `parts`
    /// slices of its output rows. Checked code gets a guard block of the
    /// call's buffers; an access it found outside them is reported to the
    /// run's `faults`.
    ///
    /// # Safety
    /// The pointers must be valid for the lengths the plan implies (see
    /// `Kernel::run`), `span.end <= parts`, and no other call may run an
    /// overlapping share at the same time.
    pub(super) unsafe fn share(self, items: Range<usize>, span: Range<usize>, parts: usize) {
        let (begin, end) = (items.start as i64, items.end as i64);
        // The output rows of each phase, `[first, last)`: the code reads
        // two i64 per phase of the plan (at most `MAX_PHASES`, or it would
        // not have compiled).
        let mut part_ranges: [i64; 2 * MAX_PHASES];
        let ranges = if parts == 1 {
            self.whole
        } else {
            part_ranges = [0; 2 * MAX_PHASES];
            let n = fill_ranges(self.plan, span, parts, &mut part_ranges);
            &part_ranges[..n]
        };
        let rows = ranges.as_ptr();
        let Some(faults) = self.faults else {
            // SAFETY: as the caller promises; plain code ignores the guard.
            let guard = std::ptr::null_mut();
            unsafe { self.function.call(self.x, self.w, self.b, self.y, begin, end, rows, guard) };
            return;
        };
        let [x, w, b, y] = self.buffers;
        let mut guard = Guard::new([x, w, b, y, (rows.cast(), 8 * ranges.len())]);
        // SAFETY: as the caller promises; checked code reads and writes the
        // guard block, which lives on this stack frame for the call.
        unsafe { self.function.call(self.x, self.w, self.b, self.y, begin, end, rows, &mut guard) };
        if let Some(fault) = guard.fault() {
            // SAFETY: `faults` outlives the run's calls (see `Call`).
            let faults = unsafe { &*faults };
            let mut first = faults.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(fault);
        }
    }
}
