//! What the subcommands share: reading specs and suites, the tuning cache's
//! path, argument checks, and errors on one line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use convjit::schedule::Isa;
use convjit::tune::TuningCache;
use convjit::{Compiler, ConvSpec, ValidSpec, files, net, reference, schedule, suite};

/// The error and its causes, as `{e:#}` gives them, but without a cause
/// its error already ends with (a file's I/O error names its cause).
pub fn reasons(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !text.ends_with(&cause) {
            text = if text.is_empty() { cause } else { format!("{text}: {cause}") };
        }
    }
    text
}

/// clap's reason for refusing the command line, on one line (contract 3):
/// its own message adds the usage and a hint over several lines.
pub fn usage_error(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "no command given (try 'convjit --help')".to_string();
    }
    let text = e.to_string();
    let reason = text.split("\n\n").next().unwrap_or_default();
    let reason = reason.trim().strip_prefix("error:").unwrap_or(reason);
    reason.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The tuning cache file: `--cache`, else the default one in the user's
/// cache directory.
pub fn cache_file(cache: Option<PathBuf>) -> Result<PathBuf> {
    match cache.or_else(TuningCache::default_path) {
        Some(path) => Ok(path),
        None => bail!("this user has no cache directory: give the tuning cache with --cache FILE"),
    }
}

/// The host's compiler, its tiles limited to `--isa` when given (an error
/// when the host does not have that ISA).
pub fn host_compiler(isa: Option<Isa>) -> Result<Compiler> {
    let compiler = Compiler::host()?;
    Ok(match isa {
        Some(isa) => compiler.with_vector_isa(isa).context("--isa")?,
        None => compiler,
    })
}

/// Refuses a `--threads` outside 1 to [`schedule::MAX_THREADS`].
pub fn check_threads(threads: usize) -> Result<()> {
    if !(1..=schedule::MAX_THREADS).contains(&threads) {
        bail!("--threads {threads}: give 1 to {}", schedule::MAX_THREADS);
    }
    Ok(())
}

/// Reads a spec from a file, or from the argument itself when it is JSON.
pub fn load_spec(arg: &str) -> Result<ConvSpec> {
    if arg.trim_start().starts_with('{') {
        if arg.len() as u64 > files::SPEC.limit {
            bail!("--spec: the JSON given is {} bytes, more than a spec may hold", arg.len());
        }
        return Ok(ConvSpec::from_json(arg)?);
    }
    let text =
        files::read_text(Path::new(arg), files::SPEC).context("cannot read the spec file")?;
    if text.trim_start().starts_with('[') {
        bail!(
            "spec file {arg} holds a list of specs: --spec takes one (macs and bench take a list \
             with --suite)"
        );
    }
    ConvSpec::from_json(&text).with_context(|| format!("spec file {arg}"))
}

fn load_suite(path: &Path) -> Result<Vec<ConvSpec>> {
    let text = files::read_text(path, files::SUITE).context("cannot read the suite file")?;
    ConvSpec::suite_from_json(&text).with_context(|| format!("suite file {}", path.display()))
}

/// Validates `spec`, the error naming the layer.
pub fn validate(spec: &ConvSpec) -> Result<ValidSpec> {
    spec.validate().with_context(|| match &spec.name {
        Some(name) => format!("layer {name}"),
        None => "spec".to_string(),
    })
}

/// `--spec` or `--suite` of the commands whose default is the built-in
/// suite (bench, tune).
#[derive(clap::Args)]
pub struct Layers {
    /// The spec: a JSON file, or the JSON text itself.
    #[arg(long, conflicts_with = "suite")]
    spec: Option<String>,
    /// A suite file: a JSON list of specs (default: the built-in suite).
    #[arg(long)]
    suite: Option<PathBuf>,
}

impl Layers {
    /// The layers given, or the built-in suite.
    pub fn load(&self) -> Result<Vec<ValidSpec>> {
        load_layers(self.spec.as_deref(), self.suite.as_deref())
    }
}

/// `builtin:NAME`, or the model file at that path: an ONNX model (a
/// `.onnx` file) with its weights, or a JSON model.
pub fn load_model(model: &str) -> Result<(net::Model, Option<net::Tensors>)> {
    let path = Path::new(model);
    let onnx = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    Ok(match model.strip_prefix("builtin:") {
        Some(name) => (net::builtin(name)?, None),
        None if onnx => {
            let (model, tensors) =
                net::onnx::load(path).with_context(|| format!("ONNX model {model}"))?;
            (model, Some(tensors))
        }
        None => {
            let text =
                files::read_text(path, files::MODEL).context("cannot read the model file")?;
            (net::Model::from_json(&text).with_context(|| format!("model file {model}"))?, None)
        }
    })
}

/// The layers of `--spec`, `--suite`, or the built-in suite.
pub fn load_layers(spec: Option<&str>, suite: Option<&Path>) -> Result<Vec<ValidSpec>> {
    let specs = match (spec, suite) {
        (Some(spec), _) => vec![load_spec(spec)?],
        (None, Some(path)) => load_suite(path)?,
        (None, None) => suite::builtin(),
    };
    specs.iter().map(validate).collect()
}

/// Fails when an output is past its error bound against the reference.
pub fn ensure_passed(spec: &ValidSpec, verdict: &reference::Verdict) -> Result<()> {
    if !verdict.passed() {
        bail!(
            "check failed on {}: output element {} is {:.2}× past its error bound \
             (docs/correctness.md)",
            spec.name().unwrap_or("the layer"),
            verdict.worst.unwrap_or(0),
            verdict.worst_ratio
        );
    }
    Ok(())
}

/// Which algorithm computes `spec` under `schedule`, in words: "Winograd
/// F(4×4, 3×3) in panels of 16 tiles, its products by the width
/// algorithm", or the algorithm's own name ("direct").
pub fn algorithm(spec: &ValidSpec, schedule: &schedule::Schedule) -> String {
    let name = match schedule.algorithm.strategy() {
        schedule::Strategy::Direct => "direct",
        schedule::Strategy::Depthwise => "depthwise",
        schedule::Strategy::Width => "width",
    };
    match schedule.winograd {
        Some(w) => {
            let (f, panel) = (w.transform(spec).name(), w.panel_tiles(spec));
            format!("Winograd {f} in panels of {panel} tiles, its products by the {name} algorithm")
        }
        None => name.to_string(),
    }
}
