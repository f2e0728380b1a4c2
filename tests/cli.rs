//! The `convjit` binary end to end (DESIGN.md, contract 3): `run` agrees
//! with the library, `macs` reports what `Complexity` computes, `demo` covers
//! the suite, and every failure exits non-zero with one line on stderr and
//! no output file (nor temporary file) left behind.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

use common::{check, entries, random_tensor, spec};
use convjit::npy::{read_f32, write_f32};
use convjit::schedule::{Algorithm, Direct, Layout, Tile};
use convjit::{Complexity, ConvSpec, ValidSpec, reference};
use serde_json::Value;

fn convjit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the convjit binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn succeeded(what: &str, out: &Output) {
    assert!(out.status.success(), "{what}: {}\nstderr: {}", out.status, stderr(out));
}

/// Asserts a failure: non-zero exit, exactly one line on stderr (the
/// "convjit: error:" reason, containing `reason`), nothing on stdout.
fn failed(what: &str, out: &Output, reason: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: succeeded\nstdout: {}", stdout(out));
    assert!(out.status.code().is_some_and(|c| c != 0), "{what}: {}", out.status);
    assert_eq!(err.lines().count(), 1, "{what}: stderr is not one line:\n{err}");
    assert!(err.ends_with('\n'), "{what}: stderr line is not terminated: {err:?}");
    assert!(err.starts_with("convjit: error: "), "{what}: {err}");
    assert!(err.contains(reason), "{what}: stderr lacks {reason:?}: {err}");
    assert!(out.stdout.is_empty(), "{what}: printed on stdout: {}", stdout(out));
}

/// A folder holding a spec file and its input, weight and (when the spec has
/// one) bias, as `.npy` files made through the library.
struct Case {
    dir: tempfile::TempDir,
    spec: ValidSpec,
    json: String,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
}

impl Case {
    fn new(json: &str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let v = spec(json);
        let x = random_tensor(1, v.input_len());
        let w = random_tensor(2, v.weight_len());
        let b = v.has_bias().then(|| random_tensor(3, v.out_channels()));
        fs::write(dir.path().join("spec.json"), json).unwrap();
        write_f32(&dir.path().join("x.npy"), &v.input_shape(), &x).unwrap();
        write_f32(&dir.path().join("w.npy"), &v.weight_shape(), &w).unwrap();
        if let Some(b) = &b {
            write_f32(&dir.path().join("b.npy"), &[b.len()], b).unwrap();
        }
        Case { dir, spec: v, json: json.to_string(), x, w, b }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// The folder's files before any run.
    fn inputs(&self) -> Vec<String> {
        let mut names = vec!["spec.json".to_string(), "w.npy".to_string(), "x.npy".to_string()];
        if self.b.is_some() {
            names.push("b.npy".to_string());
        }
        names.sort();
        names
    }

    /// `convjit run` on this case's files with `extra` arguments, writing y.npy.
    fn run(&self, spec_arg: &str, extra: &[&str]) -> Output {
        let args = self.run_args(spec_arg, extra);
        convjit(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The arguments of [`Case::run`].
    fn run_args(&self, spec_arg: &str, extra: &[&str]) -> Vec<String> {
        let (x, w, y) = (self.p("x.npy"), self.p("w.npy"), self.p("y.npy"));
        let mut args =
            vec!["run", "--spec", spec_arg, "--input", &x, "--weight", &w, "--output", &y]
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>();
        if self.b.is_some() {
            args.extend(["--bias".to_string(), self.p("b.npy")]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    }

    fn expected(&self) -> Vec<f32> {
        reference::conv(&self.spec, &self.x, &self.w, self.b.as_deref()).unwrap()
    }
}

const CONV: &str = r#"{"op":"conv2d","batch":2,"in_channels":4,"out_channels":6,"height":9,"width":7,"kernel":[3,2],"stride":[2,1],"padding":[1,0,2,1],"dilation":[1,2],"groups":2,"activation":"relu6"}"#;
const TCONV: &str = r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":4,"height":5,"width":4,"kernel":3,"stride":2,"padding":1,"output_padding":1,"bias":false,"activation":"leaky_relu","negative_slope":0.2}"#;

// ---------------------------------------------------------------------------
// run
// ---------------------------------------------------------------------------

#[test]
fn run_with_the_reference_engine_writes_the_reference_output() {
    for json in [CONV, TCONV] {
        let case = Case::new(json);
        // The spec inline and from a file.
        for spec_arg in [case.json.clone(), case.p("spec.json")] {
            let out = case.run(&spec_arg, &["--engine", "reference"]);
            succeeded(json, &out);
            assert!(out.stderr.is_empty(), "{json}: {}", stderr(&out));
            let y = read_f32(&case.path("y.npy"), "output", &case.spec.output_shape()).unwrap();
            check(json, &case.spec.output_shape(), &y, &case.expected(), 0.0);
            let mut want = case.inputs();
            want.push("y.npy".to_string());
            want.sort();
            assert_eq!(entries(case.dir.path()), want, "{json}: stray files");
            fs::remove_file(case.path("y.npy")).unwrap();
        }
    }
}

#[test]
fn run_with_the_baseline_engines_passes_the_check() {
    for json in [CONV, TCONV] {
        let case = Case::new(json);
        for engine in ["naive", "im2col"] {
            let out = case.run(&case.json, &["--engine", engine, "--check"]);
            succeeded(&format!("{engine} on {json}"), &out);
            assert!(stdout(&out).contains("check: max abs error"), "{engine}: {}", stdout(&out));
            let y = read_f32(&case.path("y.npy"), "output", &case.spec.output_shape()).unwrap();
            let verdict =
                reference::verify(&case.spec, &case.x, &case.w, case.b.as_deref(), &y).unwrap();
            assert!(verdict.passed(), "{engine} on {json}: {verdict:?}");
            fs::remove_file(case.path("y.npy")).unwrap();
        }
    }
}

#[test]
fn run_replaces_an_existing_output() {
    let case = Case::new(TCONV);
    fs::write(case.path("y.npy"), b"old").unwrap();
    succeeded("run", &case.run(&case.json, &["--engine", "reference"]));
    let y = read_f32(&case.path("y.npy"), "output", &case.spec.output_shape()).unwrap();
    check("replaced output", &case.spec.output_shape(), &y, &case.expected(), 0.0);
}

// ---------------------------------------------------------------------------
// macs
// ---------------------------------------------------------------------------

/// Asserts that one JSON row of `convjit macs --json` reports `v`.
fn macs_row_matches(row: &Value, v: &ValidSpec) {
    let c = Complexity::of(v);
    let u = |key: &str| row[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {row}"));
    assert_eq!(u("macs"), c.macs, "{v}");
    assert_eq!(u("macs_valid"), c.macs_valid, "{v}");
    assert_eq!(u("macs_ptflops"), c.macs_ptflops, "{v}");
    assert_eq!(u("flops"), c.flops, "{v}");
    assert_eq!(u("params"), c.params, "{v}");
    assert_eq!(row["macs_per_pixel"].as_f64(), Some(c.macs_per_pixel), "{v}");
    assert_eq!(row["kmac_per_pixel"].as_f64(), Some(c.macs_per_pixel / 1000.0), "{v}");
    assert_eq!(row["op"], v.op().to_string());
    assert_eq!(row["kind"], v.kind().to_string());
    let shape: Vec<usize> = row["output_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(shape, v.output_shape());
    match v.name() {
        Some(name) => assert_eq!(row["name"], name),
        None => assert!(row.get("name").is_none()),
    }
}

#[test]
fn macs_json_for_a_spec_file_and_inline_json() {
    for json in [CONV, TCONV] {
        let case = Case::new(json);
        let inline = convjit(&["macs", "--spec", json, "--json"]);
        let file = convjit(&["macs", "--spec", &case.p("spec.json"), "--json"]);
        succeeded(json, &inline);
        succeeded(json, &file);
        assert_eq!(stdout(&inline), stdout(&file));
        let row: Value = serde_json::from_str(&stdout(&inline)).unwrap();
        macs_row_matches(&row, &case.spec);
    }
    // A named layer keeps its name.
    let named = r#"{"name":"my_layer","op":"conv2d","in_channels":2,"out_channels":2,"height":4,"width":4,"kernel":3}"#;
    let out = convjit(&["macs", "--spec", named, "--json"]);
    succeeded(named, &out);
    macs_row_matches(&serde_json::from_str(&stdout(&out)).unwrap(), &spec(named));
}

fn suite_path() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/suite/layers.json").to_string()
}

#[test]
fn macs_suite_reports_every_layer() {
    let suite = convjit::suite::builtin();
    let out = convjit(&["macs", "--suite", &suite_path(), "--json"]);
    succeeded("macs --suite --json", &out);
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), suite.len());
    for (row, s) in rows.iter().zip(&suite) {
        macs_row_matches(row, &s.validate().unwrap());
    }
    // The table: a header, then one row per layer in order.
    let out = convjit(&["macs", "--suite", &suite_path()]);
    succeeded("macs --suite", &out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + suite.len(), "{text}");
    for (line, s) in lines[1..].iter().zip(&suite) {
        let v = s.validate().unwrap();
        assert!(line.starts_with(v.name().unwrap()), "{line}");
        assert!(line.contains(&Complexity::of(&v).macs_valid.to_string()), "{line}");
    }
}

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

#[test]
fn demo_prints_one_row_per_suite_layer() {
    let start = Instant::now();
    let out = convjit(&["demo"]);
    let took = start.elapsed();
    succeeded("demo", &out);
    let text = stdout(&out);
    let names: Vec<String> = convjit::suite::builtin()
        .into_iter()
        .map(|s| s.name.expect("suite layers are named"))
        .collect();
    // The rows are the lines that start with a layer name, in suite order.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| names.iter().any(|n| l.split_whitespace().next() == Some(n)))
        .collect();
    assert_eq!(rows.len(), names.len(), "{text}");
    for (row, name) in rows.iter().zip(&names) {
        assert_eq!(row.split_whitespace().next(), Some(name.as_str()), "{text}");
    }
    eprintln!("demo took {took:.1?}");
}

// ---------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------

/// Runs a failing `run`, then checks that the folder holds exactly what it
/// held before: no output file, no temporary file.
fn run_fails(case: &Case, what: &str, out: Output, reason: &str) {
    failed(what, &out, reason);
    assert_eq!(entries(case.dir.path()), case.inputs(), "{what}: files left behind");
}

#[test]
fn an_invalid_spec_fails_cleanly() {
    let case = Case::new(CONV);
    let bad = CONV.replace(r#""groups":2"#, r#""groups":3"#);
    run_fails(&case, "invalid spec", case.run(&bad, &["--engine", "reference"]), "groups");
    let unknown = CONV.replace(r#""groups":2"#, r#""groups":2,"padding_mode":"zeros""#);
    run_fails(
        &case,
        "unknown field",
        case.run(&unknown, &["--engine", "reference"]),
        "padding_mode",
    );
    run_fails(&case, "broken JSON", case.run("{\"op\":", &["--engine", "reference"]), "spec");
    // A spec file that is not valid JSON.
    fs::write(case.path("spec.json"), "{ not json").unwrap();
    run_fails(
        &case,
        "bad spec file",
        case.run(&case.p("spec.json"), &["--engine", "reference"]),
        "spec.json",
    );
}

#[test]
fn missing_files_fail_cleanly() {
    let case = Case::new(CONV);
    run_fails(&case, "missing spec file", case.run(&case.p("absent.json"), &[]), "absent.json");
    for name in ["x.npy", "w.npy", "b.npy"] {
        let saved = fs::read(case.path(name)).unwrap();
        fs::remove_file(case.path(name)).unwrap();
        let out = case.run(&case.json, &["--engine", "reference"]);
        fs::write(case.path(name), saved).unwrap();
        run_fails(&case, &format!("missing {name}"), out, name);
    }
}

#[test]
fn tensors_that_do_not_match_the_spec_fail_cleanly() {
    let case = Case::new(CONV);
    let [n, c, h, w] = case.spec.input_shape();
    // Same element count, other shape: never reinterpreted.
    write_f32(&case.path("x.npy"), &[n, c, w, h], &case.x).unwrap();
    let want = format!("expected {:?}", case.spec.input_shape());
    run_fails(&case, "input shape", case.run(&case.json, &["--engine", "reference"]), &want);
    write_f32(&case.path("x.npy"), &case.spec.input_shape(), &case.x).unwrap();
    // Wrong weight shape, wrong bias length.
    write_f32(&case.path("w.npy"), &[case.w.len()], &case.w).unwrap();
    run_fails(&case, "weight shape", case.run(&case.json, &["--engine", "reference"]), "weight");
    write_f32(&case.path("w.npy"), &case.spec.weight_shape(), &case.w).unwrap();
    write_f32(&case.path("b.npy"), &[2], &[1.0, 2.0]).unwrap();
    run_fails(&case, "bias shape", case.run(&case.json, &["--engine", "reference"]), "bias");
    // Not .npy at all, and a header the parser reports over several lines:
    // still one line on stderr.
    fs::write(case.path("b.npy"), "hello\n").unwrap();
    run_fails(&case, "bias not npy", case.run(&case.json, &["--engine", "reference"]), "b.npy");
    write_f32(&case.path("b.npy"), &[6], &[0.0; 6]).unwrap();
    let mut bytes = fs::read(case.path("b.npy")).unwrap();
    assert_eq!(bytes[10], b'{');
    bytes[10] = b'[';
    fs::write(case.path("b.npy"), bytes).unwrap();
    run_fails(&case, "bias header", case.run(&case.json, &["--engine", "reference"]), "b.npy");
    // float64 weights.
    let case = Case::new(TCONV);
    let doubles: Vec<f64> = case.w.iter().map(|&v| f64::from(v)).collect();
    let shape = case.spec.weight_shape();
    let mut bytes = Vec::new();
    {
        use npyz::WriterBuilder;
        let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(&mut bytes)
            .begin_nd()
            .unwrap();
        writer.extend(doubles.iter().copied()).unwrap();
        writer.finish().unwrap();
    }
    fs::write(case.path("w.npy"), bytes).unwrap();
    run_fails(&case, "float64 weights", case.run(&case.json, &["--engine", "reference"]), "<f8");
}

#[test]
fn bias_must_match_the_spec() {
    // The spec has a bias but none is given.
    let case = Case::new(CONV);
    let (x, w, y) = (case.p("x.npy"), case.p("w.npy"), case.p("y.npy"));
    let out = convjit(&[
        "run",
        "--spec",
        CONV,
        "--input",
        &x,
        "--weight",
        &w,
        "--output",
        &y,
        "--engine",
        "reference",
    ]);
    run_fails(&case, "missing bias", out, "bias");
    // The spec has none but one is given.
    let case = Case::new(TCONV);
    write_f32(&case.path("b.npy"), &[4], &[1.0; 4]).unwrap();
    let (x, w, b, y) = (case.p("x.npy"), case.p("w.npy"), case.p("b.npy"), case.p("y.npy"));
    let out = convjit(&[
        "run",
        "--spec",
        TCONV,
        "--input",
        &x,
        "--weight",
        &w,
        "--bias",
        &b,
        "--output",
        &y,
        "--engine",
        "reference",
    ]);
    failed("unexpected bias", &out, "bias");
    let mut want = case.inputs();
    want.push("b.npy".to_string());
    want.sort();
    assert_eq!(entries(case.dir.path()), want, "unexpected bias: files left behind");
}

/// Regression, bug 2: clap's own errors (an unknown engine, a missing
/// argument) printed three to six lines on stderr (the reason, the usage, a
/// hint), where contract 3 allows one.
#[test]
fn bug_2_usage_errors_print_one_line() {
    let case = Case::new(CONV);
    run_fails(&case, "bad engine", case.run(&case.json, &["--engine", "warp-drive"]), "warp-drive");
    let out = convjit(&["run", "--spec", CONV, "--input", &case.p("x.npy")]);
    run_fails(&case, "missing arguments", out, "--weight");
    run_fails(&case, "unknown subcommand", convjit(&["launch"]), "launch");
    run_fails(&case, "no subcommand", convjit(&[]), "convjit");
    run_fails(&case, "unknown flag", convjit(&["macs", "--spec", CONV, "--jsn"]), "--jsn");
    run_fails(&case, "demo engine", convjit(&["demo", "--engine", "nope"]), "nope");
    // Help and version are not errors: they print on stdout and succeed.
    let help = convjit(&["--help"]);
    succeeded("--help", &help);
    assert!(stdout(&help).contains("macs"), "{}", stdout(&help));
    succeeded("--version", &convjit(&["--version"]));
}

#[test]
fn a_failed_run_keeps_a_previous_output() {
    let case = Case::new(CONV);
    fs::write(case.path("y.npy"), b"previous").unwrap();
    let bad = CONV.replace(r#""groups":2"#, r#""groups":3"#);
    let out = case.run(&bad, &["--engine", "reference"]);
    failed("invalid spec over an old output", &out, "groups");
    assert_eq!(fs::read(case.path("y.npy")).unwrap(), b"previous");
    // A late failure too: the weight file is unreadable.
    fs::write(case.path("w.npy"), b"junk").unwrap();
    let out = case.run(&case.json, &["--engine", "reference"]);
    failed("bad weight over an old output", &out, "w.npy");
    assert_eq!(fs::read(case.path("y.npy")).unwrap(), b"previous");
    let mut want = case.inputs();
    want.push("y.npy".to_string());
    want.sort();
    assert_eq!(entries(case.dir.path()), want);
}

#[test]
fn an_output_in_a_missing_folder_fails_cleanly() {
    let case = Case::new(TCONV);
    let (x, w) = (case.p("x.npy"), case.p("w.npy"));
    let y = case.path("nowhere").join("y.npy");
    let out = convjit(&[
        "run",
        "--spec",
        TCONV,
        "--input",
        &x,
        "--weight",
        &w,
        "--output",
        y.to_str().unwrap(),
        "--engine",
        "reference",
    ]);
    run_fails(&case, "missing output folder", out, "y.npy");
}

#[test]
fn macs_failures_print_one_line() {
    let case = Case::new(CONV);
    let bad = CONV.replace(r#""groups":2"#, r#""groups":3"#);
    run_fails(&case, "macs invalid spec", convjit(&["macs", "--spec", &bad, "--json"]), "groups");
    run_fails(
        &case,
        "macs missing suite",
        convjit(&["macs", "--suite", &case.p("none.json")]),
        "none.json",
    );
    // A suite with one invalid layer names it.
    let mut layers: Vec<ConvSpec> = convjit::suite::builtin();
    layers[3].groups = 5;
    fs::write(case.path("suite.json"), serde_json::to_string(&layers).unwrap()).unwrap();
    let out = convjit(&["macs", "--suite", &case.p("suite.json")]);
    failed("macs suite with a bad layer", &out, layers[3].name.as_deref().unwrap());
}

// ---------------------------------------------------------------------------
// the jit engine, --check, --stats, --schedule, ir
// ---------------------------------------------------------------------------

#[test]
fn run_defaults_to_the_jit_and_checks_and_reports_stats() {
    for json in [CONV, TCONV] {
        let case = Case::new(json);
        let out = case.run(&case.json, &["--check", "--stats"]);
        succeeded(json, &out);
        let text = stdout(&out);
        for field in
            ["schedule:", "compile time:", "cycles:", "MACs/cycle:", "check: max abs error"]
        {
            assert!(text.contains(field), "{json}: no {field:?} in\n{text}");
        }
        let y = read_f32(&case.path("y.npy"), "output", &case.spec.output_shape()).unwrap();
        let verdict =
            reference::verify(&case.spec, &case.x, &case.w, case.b.as_deref(), &y).unwrap();
        assert!(verdict.passed(), "{json}: {verdict:?}");
    }
}

#[test]
fn run_checked_compiles_the_checked_lowering_and_refuses_other_engines() {
    for json in [CONV, TCONV] {
        let case = Case::new(json);
        let out = case.run(&case.json, &["--checked", "--check", "--threads", "2"]);
        succeeded(json, &out);
        let y = read_f32(&case.path("y.npy"), "output", &case.spec.output_shape()).unwrap();
        let verdict =
            reference::verify(&case.spec, &case.x, &case.w, case.b.as_deref(), &y).unwrap();
        assert!(verdict.passed(), "{json}: {verdict:?}");
    }
    let case = Case::new(CONV);
    let out = case.run(&case.json, &["--checked", "--engine", "naive"]);
    run_fails(&case, "--checked on naive", out, "--checked");
}

#[test]
fn run_takes_a_thread_count() {
    let case = Case::new(CONV);
    for engine in ["jit", "im2col"] {
        let out = case.run(&case.json, &["--engine", engine, "--threads", "2", "--check"]);
        succeeded(engine, &out);
    }
    // Too little work to share: the heuristic for two threads takes one.
    let out = case.run(&case.json, &["--stats", "--threads", "2"]);
    succeeded("--stats --threads 2", &out);
    let threaded = convjit::schedule::choose_threaded(&case.spec, 2);
    assert_eq!(threaded.run.threads, 1);
    let line = format!("schedule:      {} (heuristic)", threaded.to_json());
    assert!(stdout(&out).contains(&line), "{}", stdout(&out));
    // A schedule file's threads give way to --threads.
    let file = case.path("schedule.json");
    fs::write(&file, convjit::schedule::choose(&case.spec).to_json()).unwrap();
    let args = ["--stats", "--threads", "2", "--schedule", file.to_str().unwrap(), "--check"];
    let out = case.run(&case.json, &args);
    succeeded("--schedule with --threads 2", &out);
    assert!(stdout(&out).contains("\"threads\":2"), "{}", stdout(&out));
    assert!(stdout(&out).contains("(from --schedule)"), "{}", stdout(&out));
    let fresh = Case::new(CONV);
    let out = fresh.run(&fresh.json, &["--threads", "0"]);
    run_fails(&fresh, "--threads 0", out, "threads");
}

/// A layer with enough work for two threads (9.4 M MACs) and 16 output
/// rows, where the heuristic for two threads copies bands of 2 rows, and
/// the one for one thread bands of 4.
const SHARED: &str = r#"{"op":"conv2d","in_channels":64,"out_channels":64,"height":16,"width":16,"kernel":3,"padding":1}"#;

/// `run --threads 2` took the one-thread heuristic and overwrote its
/// `threads`, while the library (`Engine::prepare_threaded`) took the
/// heuristic for two threads: the CLI and the library ran different
/// schedules for one request. Both now take the library's
/// (`convjit::source`).
#[test]
fn bug_run_threads_takes_the_heuristic_for_that_many_threads() {
    let case = Case::new(SHARED);
    let threaded = convjit::schedule::choose_threaded(&case.spec, 2);
    let overwritten = convjit::Schedule {
        run: convjit::schedule::Run::threads(2),
        ..convjit::schedule::choose(&case.spec)
    };
    assert_ne!(threaded, overwritten, "the layer no longer tells the two apart");
    let out = case.run(&case.json, &["--threads", "2", "--stats", "--check"]);
    succeeded("run --threads 2", &out);
    let line = format!("schedule:      {} (heuristic)", threaded.to_json());
    assert!(stdout(&out).contains(&line), "{}", stdout(&out));
    let prepared =
        convjit::Engine::Jit.prepare_threaded(&case.spec, &case.w, case.b.as_deref(), 2).unwrap();
    assert_eq!(prepared.schedule(), Some(threaded));
}

#[test]
fn run_and_ir_take_a_schedule_file() {
    let case = Case::new(CONV);
    let good = case.path("good.json");
    fs::write(&good, r#"{"algorithm":{"direct":{"tile":{"oc_vectors":2,"pixel_tile":3,"row_tile":1},"reduction_unroll":2}},"loop_nest":"channels_outer"}"#).unwrap();
    // The same schedule in the flat form files had before schedules were
    // typed: migrated as it is read.
    let flat = case.path("flat.json");
    fs::write(&flat, r#"{"strategy":"direct","oc_vectors":2,"pixel_tile":3,"reduction_unroll":2,"loop_order":"channels_outer"}"#).unwrap();
    for file in [&good, &flat] {
        let out = case.run(&case.json, &["--check", "--schedule", file.to_str().unwrap()]);
        succeeded("schedule file", &out);
        let y = read_f32(&case.path("y.npy"), "output", &case.spec.output_shape()).unwrap();
        assert!(
            reference::verify(&case.spec, &case.x, &case.w, case.b.as_deref(), &y)
                .unwrap()
                .passed()
        );
    }
    // A flat schedule the typed form cannot hold is refused, naming the field.
    let unmigratable = case.path("unmigratable.json");
    fs::write(&unmigratable, r#"{"strategy":"width","oc_vectors":2,"pixel_tile":4,"reduction_unroll":1,"loop_order":"rows_outer"}"#).unwrap();
    let out = case.run(&case.json, &["--schedule", unmigratable.to_str().unwrap()]);
    failed("a flat schedule with no typed form", &out, "oc_vectors");

    let out = convjit(&["ir", "--spec", &case.json, "--schedule", good.to_str().unwrap(), "--asm"]);
    succeeded("ir", &out);
    let text = stdout(&out);
    assert!(text.contains(r#""oc_vectors":2"#), "{text}");
    assert!(text.contains("function "), "no IR in\n{text}");
    assert!(text.contains("; machine code"), "no machine code in\n{text}");

    // An illegal schedule: depthwise on a layer with two input channels per group.
    fs::remove_file(case.path("y.npy")).unwrap();
    let bad = case.path("bad.json");
    fs::write(&bad, r#"{"algorithm":{"depthwise":{"tile":{"oc_vectors":1,"pixel_tile":4,"row_tile":1}}},"loop_nest":"rows_outer"}"#).unwrap();
    let out = case.run(&case.json, &["--schedule", bad.to_str().unwrap()]);
    failed("illegal schedule", &out, "algorithm = depthwise");
    assert!(!case.path("y.npy").exists(), "an output was left behind");
    let out = convjit(&["ir", "--spec", &case.json, "--schedule", bad.to_str().unwrap()]);
    failed("ir with an illegal schedule", &out, "algorithm = depthwise");
}

/// A `col_block` of 2^64 − 1 passed `Schedule::legal`, wrapped to 0 when
/// rounded up to whole pixel tiles, and the compiler divided by it: a
/// panic from `run --schedule`, `ir --schedule`, and `run --tuned` on a
/// cache holding it. Now the schedule file is refused in one line naming
/// the field, and the cache entry is ignored (reading a cache never fails).
#[test]
fn bug_a_col_block_of_u64_max_fails_cleanly() {
    let case = Case::new(CONV);
    let huge = u64::MAX.to_string();
    let file = case.path("huge.json");
    let typed = format!(
        r#"{{"algorithm":{{"direct":{{"tile":{{"oc_vectors":1,"pixel_tile":4,"row_tile":1}},"reduction_unroll":1}}}},"loop_nest":{{"column_blocks":{huge}}}}}"#
    );
    let flat = format!(
        r#"{{"strategy":"direct","oc_vectors":1,"pixel_tile":4,"reduction_unroll":1,"loop_order":"rows_outer","col_block":{huge}}}"#
    );
    let reason = format!("loop_nest = column blocks of {huge}");
    for json in [typed, flat] {
        fs::write(&file, json).unwrap();
        let out = case.run(&case.json, &["--schedule", file.to_str().unwrap()]);
        failed("run --schedule", &out, &reason);
        assert!(!case.path("y.npy").exists(), "an output was left behind");
        let out = convjit(&["ir", "--spec", &case.json, "--schedule", file.to_str().unwrap()]);
        failed("ir --schedule", &out, &reason);
    }

    let cache = case.path("tuning.json");
    let schedule = convjit::Schedule {
        loop_nest: convjit::schedule::LoopNest::ColumnBlocks(usize::MAX),
        ..convjit::schedule::choose(&case.spec)
    };
    let entry = convjit::tune::Entry {
        workload: convjit::tune::Workload::host(&case.spec, 1),
        schedule,
        macs_per_cycle: 1.0,
        heuristic_macs_per_cycle: 1.0,
        candidates: 1,
        tuned_at: 0,
    };
    convjit::tune::TuningCache::update(&cache, entry).unwrap();
    let out = case.run(&case.json, &["--tuned", "--cache", cache.to_str().unwrap(), "--check"]);
    succeeded("run --tuned over a cache entry with col_block 2^64 - 1", &out);
    assert!(stderr(&out).contains("loop_nest"), "no warning: {}", stderr(&out));
    let y = read_f32(&case.path("y.npy"), "output", &case.spec.output_shape()).unwrap();
    check("run --tuned", &case.spec.output_shape(), &y, &case.expected(), 1e-5);
}

// ---------------------------------------------------------------------------
// bench
// ---------------------------------------------------------------------------

/// A two-layer suite small enough to bench in a test: a padded conv2d with
/// bias and a transposed conv without.
const BENCH_SUITE: &str = r#"[
  {"name": "small_conv", "op": "conv2d", "batch": 1, "in_channels": 6, "out_channels": 8,
   "height": 9, "width": 7, "kernel": 3, "padding": 1, "activation": "relu"},
  {"name": "small_tconv", "op": "conv_transpose2d", "batch": 2, "in_channels": 4,
   "out_channels": 6, "height": 5, "width": 5, "kernel": 4, "stride": 2, "padding": 1,
   "groups": 2, "bias": false}
]"#;

fn number(row: &Value, key: &str) -> f64 {
    row[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {row}"))
}

/// Asserts that a reported figure is the one derived from the others, to
/// the bit: JSON numbers round-trip exactly, and the test derives it as the
/// code does.
fn derived(row: &Value, key: &str, expected: f64) {
    let found = number(row, key);
    assert_eq!(found.to_bits(), expected.to_bits(), "{key}: {found} ≠ {expected}");
}

#[test]
fn bench_json_has_every_field_for_every_layer_and_engine() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.json");
    fs::write(&suite, BENCH_SUITE).unwrap();
    let svg = dir.path().join("chart.svg");
    let out = convjit(&[
        "bench",
        "--suite",
        suite.to_str().unwrap(),
        "--engines",
        "jit,naive,im2col",
        "--min-time",
        "0",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    succeeded("bench --json --plot", &out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(!report["machine"]["cpu"].as_str().unwrap().is_empty());
    assert!(report["machine"]["isa"].as_str().unwrap().contains(std::env::consts::ARCH));
    assert!(number(&report["machine"], "tsc_hz") > 1e6);
    let ceiling = number(&report, "ceiling_macs_per_cycle");
    assert!(ceiling > 0.0);
    assert_eq!(report["threads"], 1);

    let specs = ConvSpec::suite_from_json(BENCH_SUITE).unwrap();
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), specs.len() * 3);
    for (rows, spec) in results.chunks(3).zip(&specs) {
        let spec = spec.validate().unwrap();
        let jit_median = number(&rows[0], "median_s");
        for (row, engine) in rows.iter().zip(["jit", "naive", "im2col"]) {
            assert_eq!(row["layer"], spec.name().unwrap(), "{row}");
            assert_eq!(row["engine"], engine, "{row}");
            assert_eq!(row["macs_valid"], Complexity::of(&spec).macs_valid, "{row}");
            let median = number(row, "median_s");
            assert!(median > 0.0, "{row}");
            assert!(number(row, "min_s") <= median && median <= number(row, "max_s"), "{row}");
            // --min-time 0: the fewest timed runs, the cap's.
            assert!(number(row, "runs") >= 3.0, "{row}");
            let mpc = number(row, "macs_per_cycle");
            assert!(mpc > 0.0, "{row}");
            // Against the ceiling sampled between this layer's rounds.
            let here = number(row, "layer_ceiling");
            assert!(here > 0.0, "{row}");
            derived(row, "pct_of_ceiling", 100.0 * mpc / here);
            let gflops = 2.0 * number(row, "macs_valid") / median / 1e9;
            derived(row, "gflops", gflops);
            let (compile, prepare) = (number(row, "compile_ms"), number(row, "prepare_ms"));
            if engine == "jit" {
                assert!(compile > 0.0 && compile <= prepare, "{row}");
            } else {
                assert_eq!(compile, 0.0, "{row}");
            }
            assert!(number(row, "max_rel_error") < 1e-5, "{row}");
            if engine == "jit" {
                assert!(row["jit_speedup"].is_null(), "{row}");
            } else {
                derived(row, "jit_speedup", median / jit_median);
            }
        }
    }
    let chart = fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg"), "{}", &chart[..chart.len().min(200)]);
    for text in ["small_conv", "small_tconv", "jit", "naive", "im2col", "ceiling"] {
        assert!(chart.contains(text), "the chart lacks {text:?}");
    }
}

#[test]
fn bench_table_lists_every_engine_and_the_speedups() {
    let spec = r#"{"name": "tiny", "op": "conv2d", "batch": 1, "in_channels": 3,
        "out_channels": 5, "height": 6, "width": 6, "kernel": 3, "groups": 1}"#;
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("report.json");
    let out = convjit(&[
        "bench",
        "--spec",
        spec,
        "--min-time",
        "0",
        "--threads",
        "2",
        "--json-out",
        saved.to_str().unwrap(),
    ]);
    succeeded("bench --spec --json-out", &out);
    let report: Value = serde_json::from_str(&fs::read_to_string(&saved).unwrap()).unwrap();
    assert_eq!(report["threads"], 2);
    assert_eq!(report["results"].as_array().unwrap().len(), 3);
    let text = stdout(&out);
    assert!(text.contains("ceiling"), "{text}");
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            ["jit", "naive", "im2col"].iter().any(|e| l.split_whitespace().any(|w| w == *e))
        })
        .filter(|l| !l.starts_with("jit × over") && !l.starts_with("layer"))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(rows[0].starts_with("tiny"), "{text}");
    assert!(text.contains("jit × over naive:") && text.contains("jit × over im2col:"), "{text}");
}

#[test]
fn bench_failures_print_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let spec = r#"{"op": "conv2d", "in_channels": 2, "out_channels": 2, "height": 4, "width": 4, "kernel": 1}"#;
    let out = convjit(&["bench", "--spec", spec, "--engines", "jit,gpu"]);
    failed("unknown engine", &out, "gpu");
    // The error names the engines there are.
    failed("unknown engine", &out, "give one of jit, naive, im2col or reference");
    let out = convjit(&["bench", "--spec", spec, "--threads", "0"]);
    failed("zero threads", &out, "thread");
    let out = convjit(&["bench", "--spec", spec, "--min-time=-1"]);
    failed("negative min-time", &out, "min-time");
    // Five times 10^19 seconds overflowed a Duration: a panic.
    let out = convjit(&["bench", "--spec", spec, "--min-time", "1e19"]);
    failed("huge min-time", &out, "min-time");
    let out = convjit(&["bench", "--spec", r#"{"op": "conv2d"}"#]);
    failed("invalid spec", &out, "spec");
    let out = convjit(&["bench", "--spec", &suite_path()]);
    failed("a suite given as --spec", &out, "--suite");
    let chart = dir.path().join("nowhere").join("chart.svg");
    let out =
        convjit(&["bench", "--spec", spec, "--min-time", "0", "--plot", chart.to_str().unwrap()]);
    failed("plot in a missing folder", &out, "chart.svg");
    assert!(entries(dir.path()).is_empty(), "files left behind: {:?}", entries(dir.path()));
}

/// A reader that stops reading early (`convjit ir … | head`) ends the
/// program quietly, not with a panic.
#[test]
#[cfg(unix)]
fn a_closed_pipe_is_not_a_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let spec = r#"{"op":"conv2d","in_channels":64,"out_channels":64,"height":56,"width":56,"kernel":3,"padding":1}"#;
    let mut child = Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(["ir", "--asm", "--spec", spec])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap(); // then closed
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

// ---------------------------------------------------------------------------
// tune
// ---------------------------------------------------------------------------

#[test]
fn tune_reports_saves_and_run_and_bench_use_the_result() {
    let case = Case::new(CONV);
    let (cache, records) = (case.p("cache/tuning.json"), case.p("records.jsonl"));
    let spec_file = case.p("spec.json");
    let args = ["tune", "--spec", &spec_file, "--budget", "0.6", "--cache", &cache];
    let out = convjit(&[&args[..], &["--records", &records, "--json"]].concat());
    succeeded("tune --json", &out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let result = &report["results"][0];
    for key in ["heuristic_macs_per_cycle", "tuned_macs_per_cycle", "seconds"] {
        assert!(number(result, key) > 0.0, "{key} in {result}");
    }
    let speedup = number(result, "speedup");
    assert!(speedup == 1.0 || speedup >= 1.0 + convjit::tune::CONFIRM_MARGIN, "{result}");
    assert!(result["candidates"].as_u64().unwrap() >= 1, "{result}");
    let schedule: convjit::Schedule = serde_json::from_value(result["schedule"].clone()).unwrap();
    assert!(schedule.legal(&case.spec).is_ok());
    let lines = fs::read_to_string(&records).unwrap().lines().count() as u64;
    assert!(lines >= result["candidates"].as_u64().unwrap());
    let saved = convjit::tune::TuningCache::load(std::path::Path::new(&cache));
    assert_eq!(saved.lookup(&case.spec, 1), Some(schedule));

    // The human table, with the best schedule as JSON.
    let out = convjit(&[&args[..], &["--strategy", "random"]].concat());
    succeeded("tune", &out);
    let text = stdout(&out);
    assert!(text.contains("heuristic") && text.contains("\"algorithm\":"), "{text}");

    let out = case.run(&case.json, &["--tuned", "--cache", &cache, "--stats", "--check"]);
    succeeded("run --tuned", &out);
    assert!(stdout(&out).contains("(tuned, from"), "{}", stdout(&out));
    let out = case.run(&case.json, &["--tuned", "--cache", &case.p("absent.json"), "--stats"]);
    succeeded("run --tuned without an entry", &out);
    assert!(stdout(&out).contains("(heuristic:"), "{}", stdout(&out));
    // An entry this layer cannot use (edited by hand) is ignored, warned of.
    let edited = case.p("edited.json");
    let mut entry = saved.entries()[0].clone();
    entry.schedule.algorithm = Algorithm::Direct(Direct {
        tile: Tile { oc_vectors: 1, pixel_tile: 99, row_tile: 1 },
        reduction_unroll: 1,
        layout: Layout::Nchw,
        row_length: None,
        merged_columns: false,
    });
    convjit::tune::TuningCache::update(std::path::Path::new(&edited), entry).unwrap();
    let out = case.run(&case.json, &["--tuned", "--cache", &edited, "--stats", "--check"]);
    succeeded("run --tuned with an unusable entry", &out);
    assert!(stdout(&out).contains("(heuristic:"), "{}", stdout(&out));
    assert!(stderr(&out).contains("pixel_tile"), "{}", stderr(&out));

    let out = convjit(&[
        "bench",
        "--spec",
        &spec_file,
        "--engines",
        "jit",
        "--min-time",
        "0.02",
        "--tuned",
        "--cache",
        &cache,
        "--json",
    ]);
    succeeded("bench --tuned", &out);
    let bench: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // The second tune replaced the first one's entry.
    let cached = convjit::tune::TuningCache::load(std::path::Path::new(&cache));
    let cached = serde_json::to_value(cached.lookup(&case.spec, 1).unwrap()).unwrap();
    assert_eq!(bench["results"][0]["schedule"], cached);
    assert!(stderr(&out).contains("1 of 1 layers tuned"), "{}", stderr(&out));
}

#[test]
fn tune_survives_a_corrupt_cache_and_refuses_bad_options() {
    let case = Case::new(TCONV);
    let cache = case.p("tuning.json");
    fs::write(&cache, "{\"format\": \"convjit-tuning-cache\", \"version\": 1, \"entr").unwrap();
    let spec_file = case.p("spec.json");
    let out = convjit(&["tune", "--spec", &spec_file, "--budget", "0.3", "--cache", &cache]);
    succeeded("tune over a corrupt cache", &out);
    assert!(stderr(&out).contains("not a convjit tuning cache"), "{}", stderr(&out));
    let saved: Value = serde_json::from_str(&fs::read_to_string(&cache).unwrap()).unwrap();
    assert_eq!(saved["entries"].as_array().unwrap().len(), 1);
    assert!(entries(case.dir.path()).iter().all(|e| !e.ends_with(".tmp")), "a temporary file");

    for (args, reason) in [
        (&["--budget", "0"][..], "--budget"),
        (&["--budget=-1"][..], "--budget"),
        (&["--budget", "nan"][..], "--budget"),
        (&["--strategy", "anneal"][..], "anneal"),
        (&["--threads", "0"][..], "threads"),
        (&["--records", "/nonexistent/dir/r.jsonl"][..], "/nonexistent/dir/r.jsonl"),
        // Not a regular file: a FIFO blocked the tuner once its buffer filled.
        (&["--records", "/dev/null"][..], "not a regular file"),
    ] {
        let out = convjit(&[&["tune", "--spec", &spec_file, "--no-cache"][..], args].concat());
        failed(&format!("tune {args:?}"), &out, reason);
    }
}

// ---------------------------------------------------------------------------
// net
// ---------------------------------------------------------------------------

/// The keys of contract 5's `convjit net --json`, per layer and in total.
const NET_LAYER_KEYS: &[&str] = &[
    "name",
    "kind",
    "output_shape",
    "params",
    "macs",
    "macs_valid",
    "macs_ptflops",
    "median_s",
    "macs_per_cycle",
];
const NET_TOTAL_KEYS: &[&str] =
    &["params", "macs", "macs_valid", "macs_ptflops", "kmac_per_pixel", "median_s"];

#[test]
fn net_json_is_contract_5_and_the_check_passes() {
    let out = convjit(&["net", "--model", "builtin:jvet_lf", "--json", "--check", "--runs", "1"]);
    succeeded("net --json --check", &out);
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["model"], "jvet_lf");
    assert_eq!(report["input"], serde_json::json!([1, 3, 128, 128]));
    let graph = convjit::net::Graph::new(&convjit::net::jvet_lf()).unwrap();
    let layers = report["layers"].as_array().unwrap();
    assert_eq!(layers.len(), graph.nodes().len());
    for (row, node) in layers.iter().zip(graph.nodes()) {
        for key in NET_LAYER_KEYS {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
        assert_eq!(row["name"], node.name());
        assert_eq!(row["kind"], node.kind().as_str());
        assert_eq!(row["macs"], node.cost().macs);
        assert_eq!(row["macs_ptflops"], node.cost().macs_ptflops);
        let shape: Vec<usize> = serde_json::from_value(row["output_shape"].clone()).unwrap();
        assert_eq!(shape, node.output_shape());
        // jvet_lf's ReLUs fold into the convs before them, its residual
        // add into the tail conv's epilogue: no step, no time.
        if node.kind() == convjit::net::LayerKind::Activation {
            assert_eq!(number(row, "median_s"), 0.0, "{row}");
            assert!(
                row["folded_into"].as_str().is_some_and(|c| row["name"] == format!("{c}.relu"))
            );
        } else if node.kind() == convjit::net::LayerKind::Add {
            assert_eq!(number(row, "median_s"), 0.0, "{row}");
            assert_eq!(row["folded_into"], "tail", "{row}");
        } else {
            assert!(number(row, "median_s") > 0.0, "{row}");
        }
        if node.kind() == convjit::net::LayerKind::Conv {
            assert!(number(row, "macs_per_cycle") > 0.0, "{row}");
        } else {
            assert!(row["macs_per_cycle"].is_null(), "{row}");
        }
    }
    let total = &report["total"];
    for key in NET_TOTAL_KEYS {
        assert!(total.get(key).is_some(), "{key} missing in {total}");
    }
    assert_eq!(total["macs"], graph.total().macs);
    assert_eq!(total["macs_valid"], graph.total().macs_valid);
    derived(total, "kmac_per_pixel", graph.total().macs_ptflops as f64 / (128.0 * 128.0) / 1000.0);
    assert_eq!(report["check"]["passed"], true, "{}", report["check"]);
    assert!(number(&report["check"], "max_rel") <= 1e-4);
}

#[test]
fn net_table_has_a_row_per_layer_the_totals_and_what_is_counted() {
    let out = convjit(&["net", "--model", "builtin:mobilenetv2", "--runs", "1"]);
    succeeded("net table", &out);
    let text = stdout(&out);
    let graph = convjit::net::Graph::new(&convjit::net::mobilenet_v2()).unwrap();
    let names: Vec<&str> = graph.nodes().iter().map(|n| n.name()).collect();
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| names.iter().any(|n| l.split_whitespace().next() == Some(n)))
        .collect();
    assert_eq!(rows.len(), names.len(), "{text}");
    for (row, name) in rows.iter().zip(&names) {
        assert_eq!(row.split_whitespace().next(), Some(*name), "{text}");
    }
    let total = text.lines().find(|l| l.starts_with("total ")).expect("a totals line");
    assert!(total.contains(&graph.total().macs.to_string()), "{total}");
    assert!(text.lines().any(|l| l.starts_with("macs: dense multiply-adds")), "{text}");
    assert!(text.contains("features.0.1") && text.contains("(folded)"), "{text}");
}

#[test]
fn net_print_model_round_trips_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["resnet18", "mobilenetv2", "jvet_lf"] {
        let builtin = format!("builtin:{name}");
        let out = convjit(&["net", "--model", &builtin, "--print-model"]);
        succeeded("--print-model", &out);
        let model = convjit::net::Model::from_json(&stdout(&out)).unwrap();
        assert_eq!(model, convjit::net::builtin(name).unwrap());
        let file = dir.path().join(format!("{name}.json"));
        fs::write(&file, stdout(&out)).unwrap();
        let again = convjit(&["net", "--model", file.to_str().unwrap(), "--print-model"]);
        succeeded("--print-model of the printed model", &again);
        assert_eq!(stdout(&again), stdout(&out));
    }
    // The file runs as the built-in: the same output, bit for bit.
    let file = dir.path().join("jvet_lf.json");
    let (y1, y2) = (dir.path().join("y1.npy"), dir.path().join("y2.npy"));
    for (model, y) in [("builtin:jvet_lf", &y1), (file.to_str().unwrap(), &y2)] {
        let out =
            convjit(&["net", "--model", model, "--runs", "1", "--output", y.to_str().unwrap()]);
        succeeded(model, &out);
    }
    let shape = [1, 3, 128, 128];
    let a = read_f32(&y1, "output", &shape).unwrap();
    assert_eq!(a, read_f32(&y2, "output", &shape).unwrap());
    assert!(a.iter().all(|v| v.is_finite()));
}

/// Writes f32 tensors as a safetensors file.
fn write_safetensors(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b);
            (name.to_string(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

const NET_MODEL: &str = r#"{"name": "small", "input": [1, 2, 5, 5], "layers": [
  {"kind": "conv", "name": "c", "out_channels": 3, "kernel": 3, "padding": 1},
  {"kind": "activation", "name": "r", "activation": "relu"}]}"#;

#[test]
fn net_takes_weights_and_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("small.json");
    fs::write(&model, NET_MODEL).unwrap();
    let model = model.to_str().unwrap();
    let weights = dir.path().join("w.safetensors");
    let w = weights.to_str().unwrap();
    let weight = ("c.weight", vec![3, 2, 3, 3], random_tensor(1, 54));
    let bias = ("c.bias", vec![3], vec![0.5, -0.5, 0.25]);
    // Every tensor, and one no layer uses: a warning, not an error.
    let extra = ("unused.weight", vec![2], vec![1.0, 2.0]);
    write_safetensors(&weights, &[weight.clone(), bias.clone(), extra]);
    let y = dir.path().join("y.npy");
    let out = convjit(&[
        "net",
        "--model",
        model,
        "--weights",
        w,
        "--output",
        y.to_str().unwrap(),
        "--check",
    ]);
    succeeded("net --weights", &out);
    assert!(stderr(&out).contains("unused.weight"), "{}", stderr(&out));
    // The output is the conv of those weights on the default input, ReLU'd.
    let spec = spec(
        r#"{"op":"conv2d","in_channels":2,"out_channels":3,"height":5,"width":5,"kernel":3,"padding":1,"activation":"relu"}"#,
    );
    let x = convjit::net::random_input([1, 2, 5, 5], 1).unwrap();
    let expected = reference::conv(&spec, &x, &weight.2, Some(&bias.2)).unwrap();
    let found = read_f32(&y, "output", &[1, 3, 5, 5]).unwrap();
    check("net --weights", &[1, 3, 5, 5], &found, &expected, 1e-5);
    // A missing tensor: one line naming the layer and the tensor.
    write_safetensors(&weights, &[weight]);
    let out = convjit(&["net", "--model", model, "--weights", w]);
    failed("missing tensor", &out, r#"layer "c": tensor c.bias is missing"#);
    // Not a safetensors file.
    fs::write(&weights, b"not a safetensors file").unwrap();
    failed(
        "corrupt weights",
        &convjit(&["net", "--model", model, "--weights", w]),
        "w.safetensors",
    );
}

#[test]
fn net_refuses_bad_options_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("small.json");
    fs::write(&model, NET_MODEL).unwrap();
    let model = model.to_str().unwrap();
    for (args, reason) in [
        (&["--dsc", "half"][..], "half"),
        (&["--engine", "naive"][..], "jit or the reference"),
        (&["--threads", "0"][..], "threads"),
        (&["--runs", "0"][..], "--runs"),
        (&["--output", "/nonexistent/dir/y.npy"][..], "/nonexistent/dir"),
    ] {
        let out = convjit(&[&["net", "--model", model][..], args].concat());
        failed(&format!("net {args:?}"), &out, reason);
    }
    failed("unknown builtin", &convjit(&["net", "--model", "builtin:vgg"]), "vgg");
    failed("missing model", &convjit(&["net", "--model", "absent.json"]), "absent.json");
    let bad = NET_MODEL.replace(r#""padding": 1"#, r#""padding": 1, "pad": 1"#);
    fs::write(dir.path().join("bad.json"), bad).unwrap();
    let out = convjit(&["net", "--model", dir.path().join("bad.json").to_str().unwrap()]);
    failed("unknown field", &out, r#"layer "c": unknown field `pad`"#);
    assert_eq!(entries(dir.path()), ["bad.json", "small.json"]);
}

/// A max_pool padding of 2^63 − 2 wrapped in the shape inference and
/// `convjit net` wrote a wrong output with exit status 0; 2^63 − 1
/// panicked. Both now fail in one line naming the layer, the field and the
/// value, and write nothing.
#[test]
fn bug_net_max_pool_padding_near_2_63_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for padding in [i64::MAX - 1, i64::MAX] {
        let model = format!(
            r#"{{"name": "m", "input": [1, 1, 8, 8], "layers": [
                {{"kind": "max_pool", "name": "pool", "kernel": 3, "padding": {padding}}}]}}"#
        );
        let file = dir.path().join("model.json");
        fs::write(&file, model).unwrap();
        let y = dir.path().join("y.npy");
        let out = convjit(&[
            "net",
            "--model",
            file.to_str().unwrap(),
            "--output",
            y.to_str().unwrap(),
            "--runs",
            "1",
        ]);
        failed("net", &out, &format!(r#"layer "pool": max_pool padding [{padding}, {padding}]"#));
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(entries(dir.path()), ["model.json"]);
    }
}

// ---------------------------------------------------------------------------
// Legal work too large for the memory
// ---------------------------------------------------------------------------

/// The address space the commands below may use: 1 GiB.
#[cfg(target_os = "linux")]
const MEMORY_LIMIT: u64 = 1 << 30;

/// `convjit` with `args` under an address-space limit of `bytes`
/// (`RLIMIT_AS`). Linux overcommits: without a limit a buffer of gigabytes
/// is granted and the process is killed later, when it touches the pages;
/// under one, the allocation itself is refused, as on a host without the
/// memory.
#[cfg(target_os = "linux")]
fn convjit_limited(args: &[String], bytes: u64) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(env!("CARGO_BIN_EXE_convjit"));
    command.args(args).env_remove("RUST_LOG");
    // SAFETY: between fork and exec the closure calls only setrlimit, which
    // is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    command.output().expect("the convjit binary runs")
}

/// Runs `args` under [`MEMORY_LIMIT`] and asserts a clean refusal: exit
/// status 1 (not SIGABRT's 134), one line naming `reason`, within seconds.
#[cfg(target_os = "linux")]
fn refused_for_memory(what: &str, args: &[String], reason: &str) {
    let start = Instant::now();
    let out = convjit_limited(args, MEMORY_LIMIT);
    let took = start.elapsed();
    failed(what, &out, reason);
    assert_eq!(out.status.code(), Some(1), "{what}: {}", out.status);
    assert!(took.as_secs_f64() < 10.0, "{what}: took {took:?}");
}

/// A conv_transpose2d of stride 32768 on a 2×2 input is legal and asks for
/// a 32770×32770 output, 4.3 GB: the process aborted on the allocation.
/// It is now refused, before anything is compiled, in one line naming the
/// output and its size.
#[cfg(target_os = "linux")]
#[test]
fn bug_a_transposed_conv_of_stride_32768_fails_cleanly_for_memory() {
    let case = Case::new(
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":2,"stride":32768}"#,
    );
    assert_eq!(case.spec.output_shape(), [1, 1, 32770, 32770]);
    let bytes = 32770u64 * 32770 * 4;
    let reason = format!("cannot allocate the output: 4.3 GB ({bytes} bytes)");
    refused_for_memory("stride 32768", &case.run_args(&case.json, &[]), &reason);
    assert_eq!(entries(case.dir.path()), case.inputs(), "files left behind");
}

/// A conv2d whose output is legal (padding 16384 around one pixel: 32769²
/// elements) but past the memory, on every engine; and a legal output
/// whose reference run (`--engine reference`, f64 accumulators of twice
/// its size) is past it.
#[cfg(target_os = "linux")]
#[test]
fn legal_layers_past_the_memory_fail_cleanly() {
    let case = Case::new(
        r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":1,"padding":16384}"#,
    );
    let bytes = 32769u64 * 32769 * 4;
    let reason = format!("cannot allocate the output: 4.3 GB ({bytes} bytes)");
    for engine in ["jit", "naive", "im2col", "reference"] {
        let args = case.run_args(&case.json, &["--engine", engine, "--check"]);
        refused_for_memory(engine, &args, &reason);
    }
    assert_eq!(entries(case.dir.path()), case.inputs(), "files left behind");

    // 128 × 1023 × 1023 outputs: 536 MB of f32, 1.07 GB of f64.
    let case = Case::new(
        r#"{"op":"conv2d","in_channels":1,"out_channels":128,"height":1,"width":1,"kernel":1,"padding":511}"#,
    );
    let args = case.run_args(&case.json, &["--engine", "reference"]);
    refused_for_memory(
        "reference",
        &args,
        "cannot allocate the reference's f64 accumulators: 1.1 GB",
    );
    assert_eq!(entries(case.dir.path()), case.inputs(), "files left behind");
}

/// A model whose activations are legal but past the memory fails naming
/// the layer, before any kernel is compiled.
#[cfg(target_os = "linux")]
#[test]
fn a_model_past_the_memory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.json");
    fs::write(
        &model,
        r#"{"name": "m", "input": [1, 1, 1, 1], "layers": [
            {"kind": "conv", "name": "c", "out_channels": 1, "kernel": 1, "padding": 16384}]}"#,
    )
    .unwrap();
    let args = ["net", "--model", model.to_str().unwrap(), "--runs", "1"].map(str::to_string);
    refused_for_memory(
        "net",
        &args,
        r#"model: layer "c": cannot allocate the layer's output: 4.3 GB"#,
    );
}

// ---------------------------------------------------------------------------
// Output paths, OS errors, names on the terminal
// ---------------------------------------------------------------------------

/// `convjit run` of `case`, writing `output`, on the reference engine
/// unless `extra` names another.
fn run_to(case: &Case, output: &str, extra: &[&str]) -> Output {
    let (x, w, b) = (case.p("x.npy"), case.p("w.npy"), case.p("b.npy"));
    let mut args = vec!["run", "--spec", &case.json, "--input", &x, "--weight", &w];
    args.extend(["--output", output]);
    if !extra.contains(&"--engine") {
        args.extend(["--engine", "reference"]);
    }
    if case.b.is_some() {
        args.extend(["--bias", b.as_str()]);
    }
    args.extend(extra);
    convjit(&args)
}

/// Regression: as root, `--output /dev/null` replaced the device node with
/// a regular file; a symbolic link was replaced rather than followed.
#[test]
fn run_writes_through_links_and_devices() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
    let case = Case::new(TCONV);
    let out = run_to(&case, &case.p("y.npy"), &[]);
    succeeded("run", &out);
    let expected = fs::read(case.path("y.npy")).unwrap();
    fs::remove_file(case.path("y.npy")).unwrap();

    let before = fs::symlink_metadata("/dev/null").unwrap();
    succeeded("--output /dev/null", &run_to(&case, "/dev/null", &[]));
    let after = fs::symlink_metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device(), "/dev/null is no longer a device");
    assert_eq!((after.ino(), after.rdev()), (before.ino(), before.rdev()));

    // Standard output, directly and through a link: the bytes come out there.
    let links = tempfile::tempdir().unwrap();
    let to_stdout = links.path().join("stdout.npy");
    symlink("/proc/self/fd/1", &to_stdout).unwrap();
    for path in ["/proc/self/fd/1", to_stdout.to_str().unwrap()] {
        let out = run_to(&case, path, &[]);
        succeeded(path, &out);
        assert!(out.stdout == expected, "{path}: stdout is not the output file");
    }
    // A link to a file: the link stays, its target is written.
    let link = links.path().join("y.npy");
    symlink(case.path("target.npy"), &link).unwrap();
    succeeded("through a link", &run_to(&case, link.to_str().unwrap(), &[]));
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read(case.path("target.npy")).unwrap(), expected);
    assert_eq!(entries(links.path()), ["stdout.npy", "y.npy"]);
}

/// Regression: `convjit run` found out that its output folder was missing
/// only after the run (and its --stats lines); it now refuses first, as
/// `net` and `bench` do, through the same check.
#[test]
fn run_refuses_its_output_before_the_work() {
    let case = Case::new(
        r#"{"op":"conv2d","in_channels":32,"out_channels":32,"height":40,"width":40,"kernel":3,"padding":1}"#,
    );
    let nowhere = case.p("nowhere/y.npy");
    for engine in ["jit", "reference"] {
        let out = run_to(&case, &nowhere, &["--engine", engine, "--stats", "--check"]);
        // `failed` asserts that nothing reached stdout: no stats line.
        run_fails(&case, &format!("{engine}: missing folder"), out, "does not exist");
    }
    let out = run_to(&case, case.dir.path().to_str().unwrap(), &["--stats"]);
    run_fails(&case, "a folder as the output", out, "is a folder");
}

/// A name holding an escape sequence and a carriage return.
const RAW_NAME: &str = r"red\u001b[31m\rname";
/// How convjit prints it.
const SHOWN_NAME: &str = r"red\u{1b}[31m\rname";

/// Asserts that neither stream holds an ESC or CR byte.
fn no_control_bytes(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !bytes.iter().any(|&b| b == 0x1b || b == b'\r'),
            "{what}: a raw control character on {stream}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

/// Regression: names from spec, suite and model files and file paths were
/// printed raw in tables and errors, so an escape sequence in one drove the
/// terminal.
#[test]
fn control_characters_in_names_are_escaped_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!(
        r#"{{"name": "{RAW_NAME}", "op": "conv2d", "in_channels": 2, "out_channels": 2, "height": 4, "width": 4, "kernel": 1}}"#
    );
    let shown = |what: &str, out: &Output, text: &str| {
        no_control_bytes(what, out);
        assert!(text.contains(SHOWN_NAME), "{what}: the name is not shown escaped: {text}");
    };
    let out = convjit(&["macs", "--spec", &spec]);
    succeeded("macs", &out);
    shown("macs", &out, &stdout(&out));
    // JSON keeps serde's escaping.
    let out = convjit(&["macs", "--spec", &spec, "--json"]);
    succeeded("macs --json", &out);
    no_control_bytes("macs --json", &out);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["name"], "red\x1b[31m\rname");
    let out = convjit(&["bench", "--spec", &spec, "--engines", "jit", "--min-time", "0"]);
    succeeded("bench", &out);
    shown("bench", &out, &stdout(&out));
    let out = convjit(&["tune", "--spec", &spec, "--budget", "0.3", "--no-cache"]);
    succeeded("tune", &out);
    shown("tune", &out, &stdout(&out));
    let model = NET_MODEL
        .replace(r#""name": "small""#, &format!(r#""name": "{RAW_NAME}""#))
        .replace(r#""name": "c""#, &format!(r#""name": "c{RAW_NAME}""#));
    fs::write(dir.path().join("model.json"), model).unwrap();
    let out = convjit(&[
        "net",
        "--model",
        dir.path().join("model.json").to_str().unwrap(),
        "--runs",
        "1",
    ]);
    succeeded("net", &out);
    shown("net", &out, &stdout(&out));
    assert!(stdout(&out).contains(&format!("c{SHOWN_NAME}")), "{}", stdout(&out));

    // Errors: a layer's name, a file's path.
    let bad = spec.replace(r#""kernel": 1"#, r#""kernel": 0"#);
    let out = convjit(&["macs", "--spec", &bad]);
    failed("invalid layer", &out, "kernel");
    shown("invalid layer", &out, &stderr(&out));
    let path = dir.path().join("red\x1b[31m\rname.json");
    let out = convjit(&["macs", "--suite", path.to_str().unwrap()]);
    failed("missing suite", &out, "(os error 2)");
    shown("missing suite", &out, &stderr(&out));
    // A warning quoting a path, and the --stats line naming the cache.
    fs::write(&path, "junk").unwrap();
    let case = Case::new(CONV);
    let out = case.run(&case.json, &["--tuned", "--cache", path.to_str().unwrap(), "--stats"]);
    succeeded("run --tuned --stats", &out);
    shown("run --stats", &out, &stdout(&out));
    shown("the cache's warning", &out, &stderr(&out));
}

/// Asserts a one-line failure that names `path` and holds `os_error` once.
fn os_error_once(what: &str, out: &Output, path: &str, os_error: &str) {
    failed(what, out, path);
    let err = stderr(out);
    assert_eq!(err.matches(os_error).count(), 1, "{what}: {os_error:?} not exactly once: {err}");
}

/// Regression: an OS error was printed twice in one message (`Error::Io`'s
/// message holds it, and the chain printed it again as its cause).
#[test]
fn os_errors_are_printed_once() {
    let case = Case::new(CONV);
    let (x, missing) = (case.p("x.npy"), case.p("absent.npy"));
    let saved = fs::read(&x).unwrap();
    fs::remove_file(&x).unwrap();
    let out = case.run(&case.json, &["--engine", "reference"]);
    fs::write(&x, saved).unwrap();
    os_error_once("missing input", &out, &x, "(os error 2)");
    // An output below a file: the OS says the folder is not one.
    let below = format!("{x}/y.npy");
    let out = run_to(&case, &below, &[]);
    os_error_once("output below a file", &out, &below, "(os error 20)");
    assert_eq!(entries(case.dir.path()), case.inputs());
    let out = convjit(&["net", "--model", "builtin:jvet_lf", "--weights", &missing]);
    os_error_once("missing weights", &out, "absent.npy", "(os error 2)");
    let records = format!("{x}/records.jsonl");
    let out = convjit(&["tune", "--spec", CONV, "--no-cache", "--records", &records]);
    os_error_once("records below a file", &out, &records, "(os error 20)");
}

/// A Winograd schedule file runs, `--check` holds it to its transforms'
/// bound, `--stats` prints it, and `ir` says which algorithm the code is
/// part of.
#[test]
fn a_winograd_schedule_runs_checked_and_says_so() {
    let case = Case::new(SHARED);
    let config = convjit::schedule::Winograd { output_tile: 4, panel: 10 };
    let products = config.gemm(&case.spec).unwrap();
    let schedule =
        convjit::Schedule { winograd: Some(config), ..convjit::schedule::choose(&products) };
    let file = case.path("schedule.json");
    fs::write(&file, schedule.to_json()).unwrap();
    let file = file.to_str().unwrap();
    let out = case.run(&case.json, &["--schedule", file, "--threads", "2", "--check", "--stats"]);
    succeeded("a Winograd schedule", &out);
    assert!(
        stdout(&out).contains(r#""winograd":{"output_tile":4,"panel":10}"#),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("algorithm:     Winograd F(4×4, 3×3) in panels of 10 tiles"),
        "{}",
        stdout(&out)
    );
    let out = convjit(&["ir", "--spec", &case.json, "--schedule", file]);
    succeeded("ir of a Winograd schedule", &out);
    assert!(stdout(&out).contains("; algorithm: Winograd F(4×4, 3×3)"), "{}", stdout(&out));
}

/// `macs` with nothing to count names the three ways to give it something
/// (not `--spec` alone, though `--suite` and `--model` work too), and
/// refuses two of them at once.
#[test]
fn macs_names_what_it_counts() {
    let out = convjit(&["macs"]);
    failed("macs of nothing", &out, "<--spec <SPEC>|--suite <SUITE>|--model");
    let spec = r#"{"op": "conv2d", "in_channels": 2, "out_channels": 2, "height": 4, "width": 4, "kernel": 1}"#;
    let out = convjit(&["macs", "--spec", spec, "--model", "builtin:jvet_lf"]);
    failed("macs of two", &out, "cannot be used with");
}
