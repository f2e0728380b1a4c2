//! Writes the Cranelift IR of many kernels into one file, so that two
//! builds can be compared byte for byte: a restructuring of the emitters
//! that must not change the code they emit shows it with `cmp`.
//!
//! ```text
//! cargo run --release --example ir_snapshot -- OUT.ir [SUITE.json]...
//! ```
//!
//! The layers are the built-in suite's and each SUITE file's (default:
//! `suite/holdout.json`); each is listed under the heuristic's schedule and
//! about 25 members of its tuning space (for two threads), then the first
//! six layers once more in the checked lowering.

use convjit::tune::Space;
use convjit::{Compiler, ConvSpec, schedule, suite};

/// Members of a layer's space listed, at most (evenly spaced).
const SAMPLES: usize = 25;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or("usage: ir_snapshot OUT.ir [SUITE.json]...")?;
    let mut files: Vec<String> = args.collect();
    if files.is_empty() {
        files.push("suite/holdout.json".to_string());
    }
    let mut specs: Vec<ConvSpec> = suite::builtin();
    for file in &files {
        specs.extend(serde_json::from_str::<Vec<ConvSpec>>(&std::fs::read_to_string(file)?)?);
    }
    let compiler = Compiler::host()?;
    let checked = compiler.clone().checked();
    let mut text = String::new();
    let mut kernels = 0;
    for (i, spec) in specs.iter().enumerate() {
        let spec = spec.validate()?;
        let members = Space::of(&spec, 2).members().to_vec();
        let step = (members.len() / SAMPLES).max(1);
        let mut schedules: Vec<_> = members.into_iter().step_by(step).collect();
        schedules.push(schedule::choose(&spec));
        for s in &schedules {
            let listing = compiler.listing(&spec, s, false)?;
            text.push_str(&format!("== {i} {}\n{}\n", s.to_json(), listing.ir));
            kernels += 1;
        }
    }
    for (i, spec) in specs.iter().take(6).enumerate() {
        let spec = spec.validate()?;
        let s = schedule::choose(&spec);
        let listing = checked.listing(&spec, &s, false)?;
        text.push_str(&format!("== checked {i} {}\n{}\n", s.to_json(), listing.ir));
        kernels += 1;
    }
    std::fs::write(&out, text)?;
    println!("{kernels} kernels' IR written to {out}");
    Ok(())
}
