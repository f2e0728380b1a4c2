//! `convjit ir`: the schedule, the Cranelift IR and the machine code of a
//! layer's kernel.

use std::path::PathBuf;

use anyhow::Result;

use convjit::source::{Given, Request};

use super::common::{load_spec, validate};

#[derive(clap::Args)]
pub struct Args {
    /// The spec: a JSON file, or the JSON text itself.
    #[arg(long)]
    spec: String,
    /// A schedule JSON file (default: the heuristic's).
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// Also print the machine code.
    #[arg(long)]
    asm: bool,
    /// The widest vector ISA of the jit's register tiles: avx512, avx2 or
    /// sse (default: the widest the host has).
    #[arg(long)]
    isa: Option<convjit::schedule::Isa>,
}

pub fn main(args: &Args) -> Result<()> {
    let spec = validate(&load_spec(&args.spec)?)?;
    let given = match &args.schedule {
        Some(path) => Some(Given::load(path, &spec)?),
        None => None,
    };
    let compiler = super::common::host_compiler(args.isa)?;
    let schedule = compiler.resolve(&spec, &Request { given, threads: None })?.schedule;
    let listing = compiler.listing(&spec, &schedule, args.asm)?;
    println!("; {spec}");
    println!("; schedule: {}", schedule.to_json());
    if schedule.winograd.is_some() {
        println!(
            "; algorithm: {}; the code below computes its batched products, {}, between the \
             input and output transforms",
            super::common::algorithm(&spec, &schedule),
            schedule.lowered(&spec).as_ref(),
        );
    }
    println!("{}", listing.ir);
    if let Some(asm) = listing.asm {
        println!("; machine code");
        println!("{asm}");
        // The assembled tiles the IR calls (its user functions u1:0, u1:1, …).
        for (i, (name, code)) in listing.tiles.iter().enumerate() {
            println!("; {name} = u1:{i}: the assembled {} register tile", schedule.isa);
            print!("{code}");
        }
    }
    Ok(())
}
