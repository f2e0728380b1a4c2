//! What every compiled op's run shares (the conv [`crate::Kernel`] and the
//! fused block's `DscKernel`): the threads it takes, how it deals its
//! shares out to them, and the buffers it keeps between runs. The calls
//! into the code are `abi`'s; which shares there are (groups, bands, work
//! items, rows) is each op's plan.

use std::ops::Range;
use std::sync::Mutex;

use crate::error::Result;

/// The threads a run uses: `wanted`, but no more than there are `shares`
/// or threads in rayon's pool (asked only when more than one is wanted,
/// since asking starts the pool).
pub(crate) fn threads(wanted: usize, shares: usize) -> usize {
    let wanted = wanted.min(shares);
    if wanted > 1 { wanted.min(rayon::current_num_threads()) } else { 1 }
}

/// The contiguous range of `n` shares that thread `t` of `threads` takes:
/// the threads' ranges tile `0..n` in order, and differ in length by at
/// most one.
pub(crate) fn share(n: usize, t: usize, threads: usize) -> Range<usize> {
    t * n / threads..(t + 1) * n / threads
}

/// Runs `work(t, buffer)` for every buffer `t`, on as many threads of
/// rayon's pool (the calling thread takes buffer 0).
pub(crate) fn on_threads<B: Send>(buffers: &mut [B], work: impl Fn(usize, &mut B) + Sync) {
    match buffers {
        [only] => work(0, only),
        [first, rest @ ..] => rayon::in_place_scope(|s| {
            for (t, buffer) in rest.iter_mut().enumerate() {
                let work = &work;
                s.spawn(move |_| work(t + 1, buffer));
            }
            work(0, first);
        }),
        [] => {}
    }
}

/// Runs `work(t)` for every thread `t` of `threads`, on rayon's pool (the
/// calling thread takes thread 0; one thread runs on it alone).
pub(crate) fn on_each(threads: usize, work: impl Fn(usize) + Sync) {
    if threads <= 1 {
        return work(0);
    }
    rayon::in_place_scope(|s| {
        let work = &work;
        for t in 1..threads {
            s.spawn(move |_| work(t));
        }
        work(0);
    });
}

/// Buffers an op keeps between runs (zeroed once: a padded copy's borders
/// stay zero, as only its interior is ever written), one per thread that
/// needs its own.
pub(crate) struct Kept<T>(Mutex<Vec<T>>);

impl<T> Default for Kept<T> {
    fn default() -> Kept<T> {
        Kept(Mutex::new(Vec::new()))
    }
}

impl<T> Kept<T> {
    /// Runs `f` on at least `needed` buffers: the kept ones, with as many
    /// more made by `make` as are missing; or, when another run (on another
    /// thread) is using them, on buffers made for this run alone.
    pub(crate) fn with<R>(
        &self,
        needed: usize,
        mut make: impl FnMut() -> Result<T>,
        f: impl FnOnce(&mut [T]) -> Result<R>,
    ) -> Result<R> {
        let mut kept = self.0.try_lock().ok();
        let mut local = Vec::new();
        let buffers: &mut Vec<T> = kept.as_deref_mut().unwrap_or(&mut local);
        while buffers.len() < needed {
            buffers.push(make()?);
        }
        f(buffers)
    }
}

/// Floats in a cache line (64 bytes).
const LINE_FLOATS: usize = 16;

/// A zeroed buffer for a padded copy that shares no cache line with any
/// other allocation: the threads of a run each write their own, and small
/// ones side by side on the heap would otherwise bounce lines between
/// cores (two threads ran small depthwise layers at half the speed of one).
pub(crate) struct Scratch {
    /// The buffer with a cache line of margin on each side.
    data: Vec<f32>,
}

impl Scratch {
    /// A zeroed buffer of `len` floats (at least 1), named `what` if the
    /// memory is refused.
    pub(crate) fn zeroed(len: usize, what: &'static str) -> Result<Scratch> {
        let len = len.max(1).saturating_add(2 * LINE_FLOATS);
        Ok(Scratch { data: crate::alloc::zeroed_f32(len, what)? })
    }

    pub(crate) fn get_mut(&mut self) -> &mut [f32] {
        let end = self.data.len() - LINE_FLOATS;
        &mut self.data[LINE_FLOATS..end]
    }

    pub(crate) fn as_ptr(&self) -> *const f32 {
        self.data[LINE_FLOATS..].as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.data[LINE_FLOATS..].as_mut_ptr()
    }
}
