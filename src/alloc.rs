//! Fallible allocation of the buffers whose size comes from the user.
//!
//! A legal spec or model may ask for gigabytes: an output of
//! [`MAX_TENSOR_ELEMENTS`](crate::spec::MAX_TENSOR_ELEMENTS) f32 values is 8
//! GiB, and a transposed conv with a large stride reaches that from a 2×2
//! input. Every buffer whose length follows from the user's shapes (the
//! tensors, the reference's f64 accumulators, input copies, packed weights,
//! column matrices, network activations) is allocated here, so that a
//! refusal is [`Error::Allocation`] naming the buffer and its size, not an
//! abort of the process.
//!
//! Linux overcommits memory: an allocation larger than the free memory
//! usually succeeds, and the process is killed later when its pages are
//! touched. An allocation fails here when it is past the address space
//! (`ulimit -v`, `RLIMIT_AS`) or past what the kernel's overcommit policy
//! admits.

use crate::error::{Error, Result};

/// A vector of `len` copies of `value`, or [`Error::Allocation`] naming
/// `what` (a phrase such as "the output") when the memory is refused.
pub fn filled<T: Clone>(len: usize, value: T, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::Allocation {
        what,
        bytes: len as u128 * std::mem::size_of::<T>() as u128,
    })?;
    v.resize(len, value);
    Ok(v)
}

/// `len` zeros in f32: [`filled`] with 0.0.
pub fn zeroed_f32(len: usize, what: &'static str) -> Result<Vec<f32>> {
    filled(len, 0.0, what)
}

/// `len` zeros in f64: [`filled`] with 0.0.
pub fn zeroed_f64(len: usize, what: &'static str) -> Result<Vec<f64>> {
    filled(len, 0.0, what)
}

/// A copy of `values`, allocated as [`filled`] allocates.
pub fn copied<T: Clone + Default>(values: &[T], what: &'static str) -> Result<Vec<T>> {
    let mut v = filled(values.len(), T::default(), what)?;
    v.clone_from_slice(values);
    Ok(v)
}

/// Address space without access kept on each side of a [`Pages`] buffer
/// (rounded up to whole pages).
#[cfg(unix)]
const GUARD_BYTES: usize = 64 << 10;

/// `len` zeroed floats on pages of their own, between two guard regions
/// of 64 KiB (or whole pages past that) that any access faults on (on
/// Unix: an anonymous mapping, which the kernel zeroes and the thread
/// that first writes it places), rather than a block of the allocator's
/// heap beside other allocations. For the buffers the threads of a run
/// each write (the padded band copies): two such buffers less than 64 KiB
/// apart made the band copies into the upper one 3–8× as slow, whichever
/// thread wrote it (on the AMD EPYC host; 32 KiB apart as slow; 64 KiB
/// apart, or more, as fast as the other's). The floats end within 64
/// bytes of the upper guard (they start on a cache line), so a write
/// past their end by more than that faults rather than reaching another
/// allocation. Each buffer costs three system calls, made when a kernel
/// first runs (and on every run that finds the kernel's buffers in use by
/// another thread's run, which makes its own).
pub(crate) struct Pages {
    ptr: std::ptr::NonNull<f32>,
    len: usize,
    /// The whole mapping, guards included.
    #[cfg(unix)]
    mapping: (*mut libc::c_void, usize),
    /// The vector whose floats these are.
    #[cfg(not(unix))]
    _vec: Vec<f32>,
}

// SAFETY: `Pages` owns its memory alone, as a `Vec<f32>` does.
unsafe impl Send for Pages {}
unsafe impl Sync for Pages {}

impl Pages {
    /// `len` zeros (at least one), or [`Error::Allocation`] naming `what`.
    #[cfg(unix)]
    pub(crate) fn zeroed(len: usize, what: &'static str) -> Result<Pages> {
        let len = len.max(1);
        let refused = Error::Allocation { what, bytes: len as u128 * 4 };
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let page = page.max(1);
        let guard = GUARD_BYTES.next_multiple_of(page);
        // The floats' bytes, to a whole cache line, and the pages holding them.
        let Some(lines) = len.checked_mul(4).and_then(|b| b.checked_next_multiple_of(64)) else {
            return Err(refused);
        };
        let data = lines.checked_next_multiple_of(page);
        let Some((data, total)) = data.and_then(|d| Some((d, d.checked_add(2 * guard)?))) else {
            return Err(refused);
        };
        // SAFETY: a new private anonymous mapping with no access: no
        // address is given, no file, and nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(refused);
        }
        let inner = base.cast::<u8>().wrapping_add(guard).cast::<libc::c_void>();
        // SAFETY: `inner..inner + data` lies inside the mapping just made.
        let opened = unsafe { libc::mprotect(inner, data, libc::PROT_READ | libc::PROT_WRITE) };
        // The floats at the end of the opened pages.
        let floats = inner.cast::<u8>().wrapping_add(data - lines).cast::<f32>();
        let ptr = std::ptr::NonNull::new(floats);
        match ptr.filter(|_| opened == 0) {
            Some(ptr) => Ok(Pages { ptr, len, mapping: (base, total) }),
            None => {
                // SAFETY: the mapping just made, which nothing refers to.
                unsafe { libc::munmap(base, total) };
                Err(refused)
            }
        }
    }

    /// `len` zeros (at least one), or [`Error::Allocation`] naming `what`:
    /// a vector where there are no anonymous mappings.
    #[cfg(not(unix))]
    pub(crate) fn zeroed(len: usize, what: &'static str) -> Result<Pages> {
        let mut vec = zeroed_f32(len.max(1), what)?;
        let ptr = std::ptr::NonNull::new(vec.as_mut_ptr()).expect("a vector's pointer");
        Ok(Pages { ptr, len: vec.len(), _vec: vec })
    }

    /// The floats.
    pub(crate) fn as_slice(&self) -> &[f32] {
        // SAFETY: `len` floats at `ptr`, inside the opened pages, zeroed
        // when mapped, owned here.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The floats, to write.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as `as_slice`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(unix)]
impl Drop for Pages {
    fn drop(&mut self) {
        let (base, total) = self.mapping;
        // SAFETY: the mapping `zeroed` made, unmapped once; no reference
        // into it outlives `self`.
        unsafe { libc::munmap(base, total) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_zeroed_writable_and_apart() {
        let mut buffers: Vec<Pages> =
            [1, 0, 1000, 70_000].iter().map(|&n| Pages::zeroed(n, "a buffer").unwrap()).collect();
        for (b, &n) in buffers.iter_mut().zip(&[1, 1, 1000, 70_000]) {
            assert_eq!(b.as_slice().len(), n);
            assert!(b.as_slice().iter().all(|&v| v == 0.0));
            b.as_mut_slice().fill(1.5);
            assert!(b.as_slice().iter().all(|&v| v == 1.5));
        }
        // Each buffer's floats are 64 KiB or more from any other's.
        if cfg!(not(unix)) {
            return;
        }
        let mut spans: Vec<(usize, usize)> = buffers
            .iter()
            .map(|b| (b.as_slice().as_ptr() as usize, b.as_slice().as_ptr() as usize + 4 * b.len))
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(pair[1].0 - pair[0].1 >= 64 << 10, "{pair:?}");
        }
    }

    #[test]
    fn pages_past_the_address_space_are_refused() {
        // Past what a size holds, and past the address space (256 TiB).
        for len in [usize::MAX / 2, 1 << 46] {
            let e = Pages::zeroed(len, "the padded input copy").err().unwrap().to_string();
            assert!(e.contains("cannot allocate the padded input copy"), "{e}");
        }
    }

    /// The floats end within a cache line of the upper guard, and both
    /// guards are mapped without access, 64 KiB at least.
    #[cfg(target_os = "linux")]
    #[test]
    fn pages_lie_between_guards_without_access() {
        let pages = Pages::zeroed(70_000, "a buffer").unwrap();
        let (start, end) =
            (pages.as_slice().as_ptr() as usize, pages.as_slice().as_ptr() as usize + 4 * 70_000);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let regions: Vec<(usize, usize, String)> = maps
            .lines()
            .map(|line| {
                let (range, rest) = line.split_once(' ').unwrap();
                let (a, b) = range.split_once('-').unwrap();
                let perms = rest.split(' ').next().unwrap().to_string();
                (
                    usize::from_str_radix(a, 16).unwrap(),
                    usize::from_str_radix(b, 16).unwrap(),
                    perms,
                )
            })
            .collect();
        let open = regions.iter().find(|r| r.0 <= start && end <= r.1).expect("the floats' pages");
        assert!(open.2.starts_with("rw"), "{open:?}");
        assert!(open.1 - end < 64, "the floats end {} bytes before the guard", open.1 - end);
        let below = regions.iter().find(|r| r.1 == open.0).expect("the lower guard");
        let above = regions.iter().find(|r| r.0 == open.1).expect("the upper guard");
        for guard in [below, above] {
            assert!(guard.2.starts_with("---") && guard.1 - guard.0 >= 64 << 10, "{guard:?}");
        }
    }
}
