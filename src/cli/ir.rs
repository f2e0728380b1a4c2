//! `convjit ir`: the schedule, the Cranelift IR and the machine code of a
//! layer's kernel.

use std::path::PathBuf;

use anyhow::Result;

use convjit::Compiler;
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
}

pub fn main(args: &Args) -> Result<()> {
    let spec = validate(&load_spec(&args.spec)?)?;
    let given = match &args.schedule {
        Some(path) => Some(Given::load(path, &spec)?),
        None => None,
    };
    let compiler = Compiler::host()?;
    let schedule = compiler.resolve(&spec, &Request { given, threads: None })?.schedule;
    let listing = compiler.listing(&spec, &schedule, args.asm)?;
    println!("; {spec}");
    println!("; schedule: {}", schedule.to_json());
    println!("{}", listing.ir);
    if let Some(asm) = listing.asm {
        println!("; machine code");
        println!("{asm}");
    }
    Ok(())
}
