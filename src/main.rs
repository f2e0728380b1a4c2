//! The `convjit` command line (DESIGN.md, contract 3): parses the command
//! and hands it to its subcommand's module under `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use convjit::terminal;

/// convjit: a shape-specialising JIT compiler for convolution layers.
#[derive(Parser)]
#[command(name = "convjit", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each one's doc comment is its `--help` text.
#[derive(Subcommand)]
enum Command {
    /// Runs one layer on tensors from .npy files and writes the output.
    Run(cli::run::Args),
    /// Prints the schedule, the Cranelift IR and optionally the machine code
    /// of a layer's kernel.
    Ir(cli::ir::Args),
    /// Prints the complexity report of a layer or of a suite.
    Macs(cli::macs::Args),
    /// Benchmarks engines on a layer or a suite (default: the built-in
    /// suite) against the ceiling sampled throughout the run.
    Bench(cli::bench::Args),
    /// Searches the schedule space of a layer or a suite (default: the
    /// built-in suite) for the fastest schedule, verifying every candidate,
    /// and saves the best in the tuning cache.
    Tune(cli::tune::Args),
    /// Runs a whole model layer by layer (docs/networks.md): every layer's
    /// shape, parameters, MACs and median time, and the totals.
    Net(cli::net::Args),
    /// The main job on a built-in example: runs the built-in layer suite on
    /// random data and prints one row per layer.
    Demo(cli::demo::Args),
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away
    // (`convjit ir … | head`) instead of panicking in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE, before any
    // other thread exists, affects nothing else.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    init_logger();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print on stdout and succeed.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("convjit: error: {}", terminal::escape(&cli::common::usage_error(&e)));
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let outcome = match cli.command {
        Command::Run(args) => cli::run::main(args),
        Command::Ir(args) => cli::ir::main(&args),
        Command::Macs(args) => cli::macs::main(&args),
        Command::Bench(args) => cli::bench::main(args),
        Command::Tune(args) => cli::tune::main(args),
        Command::Net(args) => cli::net::main(args),
        Command::Demo(args) => cli::demo::main(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let reasons = cli::common::reasons(&e).replace('\n', " ");
            eprintln!("convjit: error: {}", terminal::escape(&reasons));
            ExitCode::FAILURE
        }
    }
}

/// env_logger's own layout, with the message escaped: warnings quote names
/// and paths (convjit::terminal).
fn init_logger() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            use std::io::Write;
            let style = buf.default_level_style(record.level());
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {}",
                buf.timestamp(),
                record.level(),
                record.target(),
                terminal::escape(&record.args().to_string())
            )
        })
        .init();
}
