//! Buffers: which steps' outputs share memory.
//!
//! A step's output lives from the step that writes it to the last step
//! that reads it; the model's outputs live to the end. Steps whose values
//! are never alive at once share a buffer, as onnxruntime's memory
//! planner and TVM's storage rewrite share theirs: a model then writes
//! into memory that the layers just before it used, which its caches
//! still hold, instead of into a new buffer per layer. A step never
//! writes a buffer it reads: its operands are alive while it runs.

use std::cmp::Reverse;

/// Where a step's operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// A model input.
    Input(usize),
    /// The output of a step.
    Step(usize),
}

/// The buffers of a run: each step's, and each buffer's length.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Buffers {
    /// Per step, the buffer its output is written to.
    pub(super) of_step: Vec<usize>,
    /// Per buffer, the elements it holds: the most of the steps it serves.
    pub(super) lens: Vec<usize>,
    /// Per buffer, the step of that many elements (the first), to name.
    pub(super) sized_by: Vec<usize>,
}

/// The buffers of steps whose operands are `operands[i]` and whose output
/// has `lens[i]` elements; the outputs of the steps in `kept` (the
/// model's outputs) are never shared. Steps take buffers in order, the
/// free one nearest their size above it (of equal sizes, the one freed
/// last), else the largest free one, grown, else a new one.
pub(super) fn plan(operands: &[Vec<Slot>], lens: &[usize], kept: &[usize]) -> Buffers {
    let steps = lens.len();
    // Per step: the last step that reads its output (itself if none).
    let mut last: Vec<usize> = (0..steps).collect();
    for (i, ops) in operands.iter().enumerate() {
        for op in ops {
            if let Slot::Step(j) = *op {
                last[j] = last[j].max(i);
            }
        }
    }
    for &k in kept {
        last[k] = usize::MAX;
    }
    let mut of_step = vec![0; steps];
    let mut buffer_lens: Vec<usize> = Vec::new();
    let mut sized_by: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    // Per step, in order: the steps whose buffers free after it.
    let mut ending: Vec<Vec<usize>> = vec![Vec::new(); steps];
    for (j, &l) in last.iter().enumerate() {
        if l != usize::MAX {
            ending[l].push(j);
        }
    }
    for i in 0..steps {
        let len = lens[i];
        // Of equal sizes, the one freed last (its memory the most recently
        // used): `free` is in the order the buffers were freed.
        let fits = free.iter().enumerate().filter(|&(_, &b)| buffer_lens[b] >= len);
        let nearest = fits.min_by_key(|&(k, &b)| (buffer_lens[b], Reverse(k))).map(|(k, _)| k);
        let largest = || (0..free.len()).max_by_key(|&k| (buffer_lens[free[k]], k));
        let buffer = match nearest.or_else(largest) {
            Some(k) => free.remove(k),
            None => {
                buffer_lens.push(0);
                sized_by.push(i);
                buffer_lens.len() - 1
            }
        };
        if len > buffer_lens[buffer] {
            (buffer_lens[buffer], sized_by[buffer]) = (len, i);
        }
        of_step[i] = buffer;
        free.extend(ending[i].iter().map(|&j| of_step[j]));
    }
    Buffers { of_step, lens: buffer_lens, sized_by }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain shares two buffers; a skip connection keeps its operand's
    /// alive to the add; a kept output is never reused; no step writes a
    /// buffer it reads.
    #[test]
    fn buffers_are_shared_only_between_values_never_alive_at_once() {
        use Slot::{Input, Step};
        // 0: conv(x); 1: conv(0); 2: conv(1); 3: add(2, 0); 4: conv(3);
        // 5: conv(4), kept; 6: conv(4).
        let operands = vec![
            vec![Input(0)],
            vec![Step(0)],
            vec![Step(1)],
            vec![Step(2), Step(0)],
            vec![Step(3)],
            vec![Step(4)],
            vec![Step(4)],
        ];
        let lens = [100, 50, 100, 100, 30, 10, 20];
        let b = plan(&operands, &lens, &[5]);
        for (i, ops) in operands.iter().enumerate() {
            for op in ops {
                if let Step(j) = *op {
                    assert_ne!(b.of_step[i], b.of_step[j], "step {i} writes what it reads");
                }
            }
            assert!(b.lens[b.of_step[i]] >= lens[i]);
        }
        // Step 0 is alive to step 3, so steps 1 and 2 take two others;
        // step 3 reuses step 1's; step 6 not step 5's (kept).
        assert_eq!(b.of_step[..4], [0, 1, 2, 1]);
        assert_ne!(b.of_step[6], b.of_step[5]);
        assert!(b.lens.len() <= 4, "{b:?}");
    }
}
