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
