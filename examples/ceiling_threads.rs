//! What two cores of this machine deliver at once: the ceiling microkernel
//! (`src/ceiling.rs`, the widest vector ISA the host has) on one thread,
//! then on two threads at the same time, alternating, 15 rounds.
//!
//! ```text
//! cargo run --release --example ceiling_threads
//! ```
//!
//! Prints the median MACs per TSC tick of one thread alone and of each of
//! two threads together, and their ratio: how much a second thread can add
//! to compute-bound work here at best.

use convjit::ceiling::Meter;
use convjit::{Compiler, Result};

const ROUNDS: usize = 15;

fn main() -> Result<()> {
    let compiler = Compiler::host()?;
    let (mut a, mut b) = (Meter::new(&compiler)?, Meter::new(&compiler)?);
    let (mut alone, mut together) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        alone.push(a.sample().widest);
        let (x, y) = std::thread::scope(|s| {
            let other = s.spawn(|| b.sample().widest);
            let mine = a.sample().widest;
            (mine, other.join().expect("the other thread ran"))
        });
        together.push(x + y);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (one, two) = (median(&mut alone), median(&mut together));
    println!("1 thread:  {one:.2} MACs/tick");
    println!("2 threads: {two:.2} MACs/tick together ({:.2}×)", two / one);
    Ok(())
}
