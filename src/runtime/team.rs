//! The threads a multi-threaded run shares its work with: one team of
//! workers for the process, each spinning for a while after its share of
//! a run before it parks.
//!
//! Why not rayon's pool for this: its idle workers park within
//! microseconds, and waking a parked worker (a futex wake, and in a
//! virtual machine the halted vCPU scheduled again by the host) took
//! 25–50 µs on the hosts measured, during which the calling thread works
//! alone; the woken core then ran its share 5% slower than the caller
//! ran its own. A layer of 1 ms on two threads lost 5–8% to the two. A
//! runtime keeps its workers spinning between the runs of a network's
//! layers for the same reason (OpenMP's wait policy, onnxruntime's
//! spinning thread pool).
//!
//! One run uses the team at a time: a run that finds it busy (another
//! thread of the process running a kernel meanwhile) takes rayon's pool
//! instead, so concurrent callers are never serialised behind each other.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// How long a worker spins for its next share before it parks: long
/// enough to bridge the gaps between the runs of a network's layers or a
/// benchmark's repetitions, short enough that an idle process gives its
/// cores back at once.
const SPIN: Duration = Duration::from_millis(2);

/// The caller's work, as [`run`] hands it to the workers.
type Work<'a> = &'a (dyn Fn(usize) + Sync);

/// A run's work as the workers see it: the address of the caller's
/// reference to its closure, with no lifetime. Sound because the caller
/// does not return (nor unwind) before every worker it asked has finished
/// with it ([`run`]).
#[derive(Clone, Copy)]
struct Job {
    work: *const Work<'static>,
    /// The workers taking part: worker `i < helpers` runs share `i + 1`.
    helpers: usize,
}

// SAFETY: the closure behind `work` is `Sync`, and it outlives every use
// (see `Job`).
unsafe impl Send for Job {}

struct Team {
    /// Held by the run using the team.
    busy: Mutex<()>,
    /// Bumped by every run: a worker that sees it change takes the job.
    epoch: AtomicU64,
    /// The current run's epoch and job.
    job: Mutex<(u64, Option<Job>)>,
    /// Workers of the current run that have not finished their share.
    pending: AtomicUsize,
    /// Workers the current run wants (the first ones).
    helpers: AtomicUsize,
    /// Whether a share of the current run panicked.
    panicked: AtomicBool,
    /// Per worker: whether it is parked (or about to be), so must be
    /// unparked, and its thread.
    parked: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
}

/// The process's team: one worker fewer than the cores (the caller runs
/// a share too), started at the first run that wants more than one
/// thread.
fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        let workers = cores.saturating_sub(1);
        let team: &'static Team = Box::leak(Box::new(Team {
            busy: Mutex::new(()),
            epoch: AtomicU64::new(0),
            job: Mutex::new((0, None)),
            pending: AtomicUsize::new(0),
            helpers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            parked: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
        }));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let spawned = thread::Builder::new()
                .name(format!("convjit-worker-{}", i + 1))
                .spawn(move || team.work(i));
            match spawned {
                Ok(handle) => threads.push(handle.thread().clone()),
                // Fewer workers than cores: runs take the ones there are.
                Err(_) => break,
            }
        }
        let _ = team.threads.set(threads);
        team
    })
}

/// The most threads a run on the team may use: the workers and the caller.
pub(crate) fn most_threads() -> usize {
    team().threads.get().map_or(0, Vec::len) + 1
}

/// Runs `work(t)` for every `t` in `0..threads` on the team (the caller
/// runs `t = 0`), returning only once every share has finished; `false`
/// without running anything if the team is busy with another run or has
/// too few workers.
pub(crate) fn run(threads: usize, work: Work<'_>) -> bool {
    let team = team();
    let helpers = threads.saturating_sub(1);
    if helpers > team.threads.get().map_or(0, Vec::len) {
        return false;
    }
    let _busy = match team.busy.try_lock() {
        Ok(guard) => guard,
        // A share of an earlier run panicked: the team itself is sound.
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return false,
    };
    // `Finish` below waits for every helper to be done with `work` before
    // this frame is left, panicking or not.
    let erased = (&work as *const Work<'_>).cast::<Work<'static>>();
    team.panicked.store(false, Ordering::Relaxed);
    team.pending.store(helpers, Ordering::SeqCst);
    team.helpers.store(helpers, Ordering::SeqCst);
    {
        let mut job = team.job.lock().unwrap_or_else(|p| p.into_inner());
        let epoch = team.epoch.load(Ordering::Relaxed) + 1;
        *job = (epoch, Some(Job { work: erased, helpers }));
        team.epoch.store(epoch, Ordering::SeqCst);
    }
    let threads = team.threads.get().map_or(&[][..], Vec::as_slice);
    for (parked, thread) in team.parked.iter().zip(threads).take(helpers) {
        if parked.load(Ordering::SeqCst) {
            thread.unpark();
        }
    }
    struct Finish<'a>(&'a Team);
    impl Drop for Finish<'_> {
        fn drop(&mut self) {
            let mut spins = 0u32;
            while self.0.pending.load(Ordering::Acquire) != 0 {
                wait(&mut spins);
            }
        }
    }
    let finish = Finish(team);
    work(0);
    drop(finish);
    if team.panicked.load(Ordering::Relaxed) {
        panic!("a share of a multi-threaded run panicked on a convjit worker");
    }
    true
}

/// One step of waiting for another thread: a few pause instructions,
/// then yielding the core to any thread that wants it.
fn wait(spins: &mut u32) {
    if *spins < 64 {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        thread::yield_now();
    }
}

impl Team {
    /// Worker `i`'s loop: wait for a run (spinning, then parked), take
    /// share `i + 1` if the run wants it, and wait again.
    fn work(&self, i: usize) {
        let mut seen = 0;
        // Since the worker last ran a share (or was started): runs that
        // do not want it do not keep it spinning.
        let mut start = Instant::now();
        loop {
            let mut spins = 0u32;
            loop {
                if self.epoch.load(Ordering::Acquire) != seen {
                    break;
                }
                if start.elapsed() < SPIN {
                    wait(&mut spins);
                    continue;
                }
                // Parked until a run unparks it: the run bumps the epoch
                // before it reads `parked`, the worker sets `parked`
                // before it reads the epoch again, so one of them sees
                // the other's write.
                self.parked[i].store(true, Ordering::SeqCst);
                if self.epoch.load(Ordering::SeqCst) == seen {
                    thread::park();
                }
                self.parked[i].store(false, Ordering::SeqCst);
            }
            // A run of fewer helpers: passed over without the lock (its
            // helpers are published before its epoch; one read after a
            // newer run's was posted is that run's, whose epoch then
            // differs from the one noted here, so it is looked at again).
            let epoch = self.epoch.load(Ordering::Acquire);
            if i >= self.helpers.load(Ordering::Acquire) {
                seen = epoch;
                continue;
            }
            // The epoch read with the job, so that each run's job is taken
            // at most once (a run posts its job only once the last run's
            // helpers have all finished, so none misses its own).
            let (epoch, job) = *self.job.lock().unwrap_or_else(|p| p.into_inner());
            seen = epoch;
            let Some(job) = job.filter(|job| i < job.helpers) else { continue };
            // Counted done however the share ends, even if dropping a
            // panic's payload panics.
            struct Done<'a>(&'a AtomicUsize);
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::Release);
                }
            }
            let _done = Done(&self.pending);
            // SAFETY: the run that posted `job` waits for `pending` to
            // reach zero before its reference to its closure, and the
            // closure, go away.
            let work: Work<'_> = unsafe { *job.work };
            if panic::catch_unwind(AssertUnwindSafe(|| work(i + 1))).is_err() {
                self.panicked.store(true, Ordering::Relaxed);
            }
            drop(_done);
            start = Instant::now();
        }
    }
}
