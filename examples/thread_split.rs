//! How should the JIT's threads share an image: by work items (channel
//! blocks) or by rows? Times every suite layer with the heuristic schedule
//! and a whole-image copy on one thread and on two threads with each split,
//! interleaved, in one process, and marks the split `schedule::choose`
//! picks.
//!
//! ```text
//! cargo run --release --example thread_split
//! ```
//!
//! The result is recorded in `docs/schedules.md`. Figures are MACs
//! (`macs_valid`) per TSC tick of the median of 15 runs.

use convjit::schedule::{self, InputCopy, Schedule, Split};
use convjit::{Compiler, Complexity, suite, timing};

const RUNS: usize = 15;

fn main() -> convjit::Result<()> {
    let compiler = Compiler::host()?;
    println!(
        "{:<18} {:>9} {:>13} {:>12}  chosen",
        "layer", "1 thread", "2, by items", "2, by rows"
    );
    for layer in suite::builtin() {
        let spec = layer.validate()?;
        let x = vec![0.5f32; spec.input_len()];
        let w = vec![0.01f32; spec.weight_len()];
        let b = spec.has_bias().then(|| vec![0.1f32; spec.out_channels()]);
        let mut y = vec![0.0f32; spec.output_len()];
        let macs = Complexity::of(&spec).macs_valid;
        let heuristic = schedule::choose(&spec);
        let variants = [(1, heuristic.split), (2, Split::Items), (2, Split::Rows)];
        let mut kernels = Vec::new();
        for (threads, split) in variants {
            // With a whole-image copy, so that the split is the only difference.
            let schedule = Schedule { threads, split, copy: InputCopy::Image, ..heuristic };
            let kernel = compiler.compile_with(&spec, &schedule)?;
            let packed = kernel.pack(&w, b.as_deref())?;
            kernel.run(&x, &packed, &mut y)?; // warm-up
            kernels.push((kernel, packed, Vec::with_capacity(RUNS)));
        }
        // Interleaved, so that a slow moment of the host hits every variant.
        for _ in 0..RUNS {
            for (kernel, packed, cycles) in &mut kernels {
                let (result, m) = timing::measure(|| kernel.run(&x, packed, &mut y));
                result?;
                cycles.push(m.cycles);
            }
        }
        let figures: Vec<f64> = kernels
            .iter_mut()
            .map(|(_, _, cycles)| {
                cycles.sort_unstable();
                macs as f64 / cycles[RUNS / 2].max(1) as f64
            })
            .collect();
        println!(
            "{:<18} {:>9.2} {:>13.2} {:>12.2}  {:?}",
            spec.name().unwrap_or("-"),
            figures[0],
            figures[1],
            figures[2],
            heuristic.split
        );
    }
    Ok(())
}
