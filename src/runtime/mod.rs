//! What every compiled op's run shares (the conv [`crate::Kernel`] and the
//! fused block's `DscKernel`): the threads it takes, how it deals its
//! shares out to them, and the buffers it keeps between runs. The calls
//! into the code are `abi`'s; which shares there are (groups, bands, work
//! items, rows) is each op's plan.

mod team;

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;

/// The threads a run uses: `wanted`, but no more than there are `shares`
/// or cores to run them (asked only when more than one is wanted, since
/// asking starts the team of workers).
pub(crate) fn threads(wanted: usize, shares: usize) -> usize {
    let wanted = wanted.min(shares);
    if wanted > 1 { wanted.min(team::most_threads()) } else { 1 }
}

/// The contiguous range of `n` shares that thread `t` of `threads` takes:
/// the threads' ranges tile `0..n` in order, and differ in length by at
/// most one.
pub(crate) fn share(n: usize, t: usize, threads: usize) -> Range<usize> {
    t * n / threads..(t + 1) * n / threads
}

/// `n` shares dealt to threads in contiguous ranges ([`share`]), each
/// thread taking its own from the front; a thread whose range is empty
/// then takes from the back of the range with the most left.
///
/// So each thread keeps to its part of the image from one run to the next
/// (its input and output rows stay in its core's cache: a round-robin
/// deal of the same bands ran 5% slower on two threads), yet a thread
/// that starts late or runs on a slower core (a shared host's vCPUs
/// differ by up to 30% within a run) hands its last shares to the other.
///
/// Shares may be cut into `grain` pieces ([`Shares::pieces`]): a thread
/// then takes whole shares (`grain` pieces) while its range holds more
/// than one, and the last one piece by piece, so that a thread finishing
/// early takes half (with `grain` 2) of the other's last share rather
/// than waiting while the other computes all of it.
pub(crate) struct Shares {
    /// Per thread, the range of pieces it has left: `start` in the low 32
    /// bits, `end` in the high ones.
    ranges: Vec<AtomicU64>,
    /// Pieces per share.
    grain: usize,
}

impl Shares {
    /// `n` shares for `threads` threads. `n` fits 32 bits: rows, bands
    /// and groups of a layer whose tensors fit in memory do.
    pub(crate) fn new(n: usize, threads: usize) -> Shares {
        Shares::pieces(n, 1, threads)
    }

    /// `n` shares of `grain` pieces each for `threads` threads: thread `t`
    /// starts with the pieces of shares [`share`]`(n, t, threads)`.
    pub(crate) fn pieces(n: usize, grain: usize, threads: usize) -> Shares {
        let grain = grain.max(1);
        let pieces = n.checked_mul(grain).filter(|&p| u32::try_from(p).is_ok());
        assert!(pieces.is_some(), "{n} shares of {grain} pieces are past what a range holds");
        let ranges = (0..threads.max(1))
            .map(|t| {
                let r = share(n, t, threads.max(1));
                AtomicU64::new(pack(r.start * grain, r.end * grain))
            })
            .collect();
        Shares { ranges, grain }
    }

    /// The next share for thread `t`, or `None` when every share is taken
    /// (shares of one piece: [`Shares::new`]).
    pub(crate) fn next(&self, t: usize) -> Option<usize> {
        debug_assert_eq!(self.grain, 1, "shares of pieces are taken by next_pieces");
        self.next_pieces(t).map(|pieces| pieces.start)
    }

    /// The next pieces for thread `t` (a whole share, or one piece of a
    /// range's last share: never pieces of two shares), or `None` when
    /// every piece is taken.
    pub(crate) fn next_pieces(&self, t: usize) -> Option<Range<usize>> {
        self.take(t, true).or_else(|| {
            // The range with the most left, from its back, until none has
            // any (a range taken empty meanwhile is passed over).
            loop {
                let (victim, left) = (0..self.ranges.len())
                    .map(|v| {
                        let (start, end) = unpack(self.ranges[v].load(Ordering::Acquire));
                        (v, end.saturating_sub(start))
                    })
                    .max_by_key(|&(_, left)| left)?;
                if left == 0 {
                    return None;
                }
                if let Some(pieces) = self.take(victim, false) {
                    return Some(pieces);
                }
            }
        })
    }

    /// Pieces off the front (`front`) or the back of thread `t`'s range:
    /// up to the edge of their share while more than one share's worth is
    /// left, else one.
    fn take(&self, t: usize, front: bool) -> Option<Range<usize>> {
        let range = &self.ranges[t];
        let mut current = range.load(Ordering::Acquire);
        loop {
            let (start, end) = unpack(current);
            if start >= end {
                return None;
            }
            let whole = end - start > self.grain;
            let (taken, next) = if front {
                let n = if whole { self.grain - start % self.grain } else { 1 };
                (start..start + n, pack(start + n, end))
            } else {
                let n = if whole { (end - 1) % self.grain + 1 } else { 1 };
                (end - n..end, pack(start, end - n))
            };
            match range.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(taken),
                Err(now) => current = now,
            }
        }
    }
}

fn pack(start: usize, end: usize) -> u64 {
    start as u64 | (end as u64) << 32
}

fn unpack(range: u64) -> (usize, usize) {
    ((range & u64::from(u32::MAX)) as usize, (range >> 32) as usize)
}

/// Runs `work(t, buffer)` for every buffer `t`, each on its own thread
/// (as [`on_each`]).
pub(crate) fn on_threads<B: Send>(buffers: &mut [B], work: impl Fn(usize, &mut B) + Sync) {
    match buffers {
        [only] => work(0, only),
        [] => {}
        _ => {
            // Each thread locks only its own buffer: never contended.
            let buffers: Vec<Mutex<&mut B>> = buffers.iter_mut().map(Mutex::new).collect();
            on_each(buffers.len(), |t| {
                let mut buffer = buffers[t].lock().unwrap_or_else(|p| p.into_inner());
                work(t, &mut buffer)
            });
        }
    }
}

/// Runs `work(t)` for every thread `t` of `threads` and returns when all
/// have: the calling thread takes thread 0 (and runs alone when
/// `threads` is 1), the process's team of workers the others
/// (`team`), or rayon's pool while the team is busy with another run.
pub(crate) fn on_each(threads: usize, work: impl Fn(usize) + Sync) {
    if threads <= 1 {
        return work(0);
    }
    if team::run(threads, &work) {
        return;
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

/// A zeroed buffer for a padded copy, on pages of its own
/// ([`crate::alloc::Pages`]): the threads of a run each write their own,
/// and buffers side by side on the heap bounced lines between cores (two
/// threads ran small depthwise layers at half the speed of one) and made
/// the second thread's band copies several times as slow as the first's.
pub(crate) struct Scratch {
    data: crate::alloc::Pages,
}

impl Scratch {
    /// A zeroed buffer of `len` floats (at least 1), named `what` if the
    /// memory is refused.
    pub(crate) fn zeroed(len: usize, what: &'static str) -> Result<Scratch> {
        Ok(Scratch { data: crate::alloc::Pages::zeroed(len, what)? })
    }

    pub(crate) fn get_mut(&mut self) -> &mut [f32] {
        self.data.as_mut_slice()
    }

    pub(crate) fn as_ptr(&self) -> *const f32 {
        self.data.as_slice().as_ptr()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut f32 {
        self.data.as_mut_slice().as_mut_ptr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts, per share, how often `take` handed it out.
    fn counts(n: usize) -> Vec<AtomicUsize> {
        (0..n).map(|_| AtomicUsize::new(0)).collect()
    }

    #[test]
    fn one_thread_takes_its_own_shares_in_order_then_the_others_from_their_backs() {
        let shares = Shares::new(10, 3); // ranges 0..3, 3..6, 6..10
        let order: Vec<usize> = std::iter::from_fn(|| shares.next(0)).collect();
        // Its own, then the back of the range with the most left (6..10).
        assert_eq!(order[..4], [0, 1, 2, 9]);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(shares.next(1), None);
        assert_eq!(shares.next(2), None);
    }

    #[test]
    fn threads_of_unequal_speed_take_every_share_exactly_once() {
        for (n, threads) in [(0, 2), (1, 2), (7, 2), (14, 2), (33, 4), (1000, 3)] {
            let shares = Shares::new(n, threads);
            let taken = counts(n);
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (shares, taken) = (&shares, &taken);
                    s.spawn(move || {
                        while let Some(i) = shares.next(t) {
                            taken[i].fetch_add(1, Ordering::Relaxed);
                            // Thread 0 slow: the others take from its back.
                            if t == 0 {
                                std::thread::sleep(std::time::Duration::from_micros(50));
                            }
                        }
                    });
                }
            });
            let taken: Vec<usize> = taken.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            assert_eq!(taken, vec![1; n], "{n} shares on {threads} threads");
        }
    }

    #[test]
    fn a_range_is_taken_in_whole_shares_and_its_last_share_in_pieces() {
        let shares = Shares::pieces(5, 2, 2); // shares 0..2 and 2..5: pieces 0..4, 4..10
        let own: Vec<Range<usize>> = std::iter::from_fn(|| shares.take(1, true)).collect();
        assert_eq!(own, [4..6, 6..8, 8..9, 9..10]);
        // Thread 0's range, from its back: a whole share while it has more
        // than one, so thread 0's last share is then taken piece by piece.
        assert_eq!(shares.next_pieces(1), Some(2..4));
        assert_eq!(shares.next_pieces(0), Some(0..1));
        assert_eq!(shares.next_pieces(1), Some(1..2));
        assert_eq!(shares.next_pieces(0), None);
        // From the back: whole shares while more than one is left.
        let shares = Shares::pieces(3, 3, 1); // pieces 0..9
        let back: Vec<Range<usize>> = std::iter::from_fn(|| shares.take(0, false)).collect();
        assert_eq!(back, [6..9, 3..6, 2..3, 1..2, 0..1]);
    }

    #[test]
    fn pieces_are_taken_exactly_once_and_never_across_two_shares() {
        for (n, grain, threads) in
            [(0, 2, 2), (1, 2, 2), (7, 2, 2), (14, 2, 2), (9, 4, 3), (100, 3, 2)]
        {
            let shares = Shares::pieces(n, grain, threads);
            let taken = counts(n * grain);
            std::thread::scope(|s| {
                for t in 0..threads {
                    let (shares, taken) = (&shares, &taken);
                    s.spawn(move || {
                        while let Some(pieces) = shares.next_pieces(t) {
                            assert!(!pieces.is_empty());
                            let share = pieces.start / grain;
                            assert_eq!((pieces.end - 1) / grain, share, "{pieces:?} of {grain}");
                            for i in pieces {
                                taken[i].fetch_add(1, Ordering::Relaxed);
                            }
                            if t == 0 {
                                std::thread::sleep(std::time::Duration::from_micros(50));
                            }
                        }
                    });
                }
            });
            let taken: Vec<usize> = taken.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            assert_eq!(taken, vec![1; n * grain], "{n} shares of {grain} on {threads} threads");
        }
    }

    #[test]
    fn every_thread_of_a_run_runs_once_and_the_run_waits_for_all() {
        for threads in [1, 2, 3, 8] {
            let runs = counts(threads);
            on_each(threads, |t| {
                std::thread::sleep(std::time::Duration::from_millis(if t == 0 { 0 } else { 5 }));
                runs[t].fetch_add(1, Ordering::Relaxed);
            });
            let runs: Vec<usize> = runs.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            assert_eq!(runs, vec![1; threads], "{threads} threads");
        }
    }

    #[test]
    fn runs_from_several_threads_at_once_each_complete() {
        // One takes the team, the others rayon's pool, in any order.
        std::thread::scope(|s| {
            for caller in 0..4 {
                s.spawn(move || {
                    for round in 0..50 {
                        let mut buffers = vec![0usize; 2];
                        on_threads(&mut buffers, |t, b| *b = caller * 1000 + round * 10 + t);
                        let expected: Vec<usize> =
                            (0..2).map(|t| caller * 1000 + round * 10 + t).collect();
                        assert_eq!(buffers, expected);
                    }
                });
            }
        });
    }

    #[test]
    fn a_share_that_panics_fails_its_run_and_leaves_the_team_working() {
        if team::most_threads() < 2 {
            return; // a one-core host: no worker to panic on
        }
        let panicked = std::panic::catch_unwind(|| {
            on_each(2, |t| {
                if t == 1 {
                    panic!("share 1 fails");
                }
            })
        });
        assert!(panicked.is_err());
        let runs = counts(2);
        on_each(2, |t| {
            runs[t].fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(runs.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(), [1, 1]);
    }
}
