//! Writes the Cranelift IR of many kernels into one file, so that two
//! builds can be compared byte for byte: a restructuring of the emitters
//! that must not change the code they emit shows it with `cmp`.
//!
//! ```text
//! cargo run --release --example ir_snapshot -- OUT.ir [SUITE.json]...
//! cargo run --release --example ir_snapshot -- --replay OLD.ir OUT.ir [SUITE.json]...
//! ```
//!
//! The layers are the built-in suite's and each SUITE file's (default:
//! `suite/holdout.json`); each is listed under the heuristic's schedule and
//! about 25 members of its tuning space (for two threads), then the first
//! six layers once more in the checked lowering.
//!
//! `--replay` takes the layers and schedules from an older snapshot's
//! headers instead (its schedules read as schedule files are, so older
//! forms migrate), and writes the headers as they were: when a change
//! reshapes the schedules or the space, `cmp OLD.ir OUT.ir` still compares
//! the code emitted for the same decisions.

use convjit::tune::Space;
use convjit::{Compiler, ConvSpec, Schedule, schedule, suite};

/// Members of a layer's space listed, at most (evenly spaced).
const SAMPLES: usize = 25;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let replay = match args.first().map(String::as_str) {
        Some("--replay") if args.len() >= 3 => {
            args.remove(0);
            Some(std::fs::read_to_string(args.remove(0))?)
        }
        _ => None,
    };
    let usage = "usage: ir_snapshot [--replay OLD.ir] OUT.ir [SUITE.json]...";
    let out = args.first().cloned().ok_or(usage)?;
    let mut files: Vec<String> = args.into_iter().skip(1).collect();
    if files.is_empty() {
        files.push("suite/holdout.json".to_string());
    }
    let mut specs: Vec<ConvSpec> = suite::builtin();
    for file in &files {
        specs.extend(serde_json::from_str::<Vec<ConvSpec>>(&std::fs::read_to_string(file)?)?);
    }
    let compiler = Compiler::host()?;
    let checked = compiler.clone().checked();
    // Each kernel: its header, whether it is checked, its layer, its schedule.
    let mut kernels: Vec<(String, bool, usize, Schedule)> = Vec::new();
    match &replay {
        Some(old) => {
            for line in old.lines().filter_map(|l| l.strip_prefix("== ")) {
                let (checked, rest) = match line.strip_prefix("checked ") {
                    Some(rest) => (true, rest),
                    None => (false, line),
                };
                let (i, json) = rest.split_once(' ').ok_or("a header without a schedule")?;
                let s = Schedule::from_json(json)?;
                kernels.push((format!("== {line}"), checked, i.parse()?, s));
            }
        }
        None => {
            for (i, spec) in specs.iter().enumerate() {
                let spec = spec.validate()?;
                let members = Space::of(&spec, 2).members().to_vec();
                let step = (members.len() / SAMPLES).max(1);
                let mut schedules: Vec<_> = members.into_iter().step_by(step).collect();
                schedules.push(schedule::choose(&spec));
                for s in schedules {
                    kernels.push((format!("== {i} {}", s.to_json()), false, i, s));
                }
            }
            for (i, spec) in specs.iter().take(6).enumerate() {
                let s = schedule::choose(&spec.validate()?);
                kernels.push((format!("== checked {i} {}", s.to_json()), true, i, s));
            }
        }
    }
    let mut text = String::new();
    for (header, is_checked, i, s) in &kernels {
        let spec = specs.get(*i).ok_or("a layer the suites do not have")?.validate()?;
        let compiler = if *is_checked { &checked } else { &compiler };
        let listing = compiler.listing(&spec, s, false)?;
        text.push_str(&format!("{header}\n{}\n", listing.ir));
    }
    std::fs::write(&out, text)?;
    println!("{} kernels' IR written to {out}", kernels.len());
    Ok(())
}
