//! Hostile and careless input files, in every format convjit reads: spec,
//! schedule, suite and model JSON, `.npy`, safetensors, the tuning cache
//! and the tuning records (`src/files.rs`). Property tests take valid files
//! of each format and mutate them — bits flipped, cut short, length fields
//! that lie, brackets nested up to 10^5 deep, numbers past every integer
//! type — and assert that reading gives a value or a clean error (the
//! tuning cache and the records: what still parses, with warnings), never a
//! panic, in well under a second and a bounded amount of memory. Named
//! tests keep every case that ever failed; a few run the binary end to end
//! on device nodes, FIFOs and the files that once hung it or ran it out of
//! memory.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{check, random_tensor, spec};
use convjit::net::{Graph, Model, Network, Tensors};
use convjit::npy::{read_f32, write_f32};
use convjit::tune::{Entry, Record, RecordLog, TuningCache, Workload, records};
use convjit::{ConvSpec, Error, Schedule, files, schedule};
use proptest::prelude::*;
use proptest::sample::Index;

// ---------------------------------------------------------------------------
// Bounds: time and memory of one read
// ---------------------------------------------------------------------------

/// The system allocator, counting the bytes each thread holds, so that a
/// test can bound the most a read held at once.
struct Counting;

thread_local! {
    /// Bytes this thread allocated and has not freed itself (what another
    /// thread frees is not subtracted here: the count only overstates).
    static HELD: Cell<isize> = const { Cell::new(0) };
    /// The most `HELD` has been since the last reset.
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    // try_with: at a thread's exit its counters may be gone already.
    let _ = HELD.try_with(|held| {
        let now = held.get() + delta;
        held.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call goes to the system allocator unchanged; counting only
// touches const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The longest one read of a small file may take: a hang detector. A read
/// takes milliseconds, however busy the machine; the inputs this suite
/// guards against took from seconds to hours, and grow exponentially with
/// the nesting the mutations draw.
const MAX_TIME: Duration = Duration::from_secs(10);

/// The most memory one read of a small file may hold at once: far above
/// what any of them needs, far below what reading without bounds took.
const MAX_HELD: isize = 32 << 20;

/// Runs `read` on this thread and asserts that it took less than
/// [`MAX_TIME`] and never held [`MAX_HELD`] bytes more than before.
fn bounded<T>(what: &str, read: impl FnOnce() -> T) -> T {
    bounded_by(what, MAX_TIME, read)
}

/// [`bounded`] with a time bound of `limit`.
fn bounded_by<T>(what: &str, limit: Duration, read: impl FnOnce() -> T) -> T {
    let before = HELD.with(Cell::get);
    PEAK.with(|peak| peak.set(before));
    let start = Instant::now();
    let result = read();
    let took = start.elapsed();
    let held = PEAK.with(Cell::get) - before;
    assert!(took < limit, "{what}: took {took:?}");
    assert!(held < MAX_HELD, "{what}: held {held} bytes at once");
    result
}

/// The bounds hold something: a read that holds too much, or takes too
/// long, fails them.
#[test]
fn the_bounds_catch_a_read_past_them() {
    let held = std::panic::catch_unwind(|| bounded("64 MiB", || vec![1u8; 64 << 20].len()));
    assert!(held.is_err(), "64 MiB held passed the memory bound");
    let limit = Duration::from_millis(20);
    let slow =
        std::panic::catch_unwind(|| bounded_by("slow", limit, || std::thread::sleep(2 * limit)));
    assert!(slow.is_err(), "a slow read passed the time bound");
    assert_eq!(bounded("small", || vec![1u8; 1 << 20].len()), 1 << 20);
}

/// Asserts that `result` is a value or a clean error: a message of one
/// line that says something.
fn clean<T>(what: &str, result: Result<T, Error>) {
    if let Err(e) = result {
        let message = e.to_string();
        assert!(!message.trim().is_empty(), "{what}: an empty error: {e:?}");
        assert!(!message.contains('\n'), "{what}: an error of several lines: {message}");
    }
}

/// Asserts that `result` is an error whose message has every fragment.
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, Error>, fragments: &[&str]) {
    match result {
        Ok(value) => panic!("{what}: read {value:?} instead of refusing"),
        Err(e) => {
            let message = e.to_string();
            for fragment in fragments {
                assert!(message.contains(fragment), "{what}: {message:?} lacks {fragment:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Valid files of every format
// ---------------------------------------------------------------------------

const TORCH_TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/torch_tiny");

const SPECS: [&str; 3] = [
    r#"{"op":"conv2d","batch":2,"in_channels":4,"out_channels":6,"height":9,"width":7,"kernel":[3,2],"stride":[2,1],"padding":[1,0,2,1],"dilation":[1,2],"groups":2,"activation":"relu6"}"#,
    r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":4,"height":5,"width":4,"kernel":3,"stride":2,"padding":1,"output_padding":1,"bias":false,"activation":"leaky_relu","negative_slope":0.2}"#,
    r#"{"name":"dw","op":"conv2d","in_channels":8,"out_channels":8,"height":6,"width":6,"kernel":3,"padding":"same","groups":8}"#,
];

/// The layer schedules, caches and records are made for.
fn layer() -> convjit::ValidSpec {
    spec(SPECS[0])
}

fn schedule_json() -> String {
    schedule::choose(&layer()).to_json()
}

fn suite_json() -> String {
    fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/suite/layers.json")).unwrap()
}

fn model_json() -> String {
    fs::read_to_string(Path::new(TORCH_TINY).join("model.json")).unwrap()
}

/// A `.npy` file of shape [2, 3] as convjit writes it (format 1.0).
fn npy_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    write_f32(&path, &NPY_SHAPE, &random_tensor(5, 6)).unwrap();
    fs::read(&path).unwrap()
}

const NPY_SHAPE: [usize; 2] = [2, 3];

/// A `.npy` file (format 1.0) with `header` as its header text, padded as
/// numpy pads it, and `data`.
fn npy_with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut text = header.to_string();
    text.push_str(&" ".repeat((64 - (10 + text.len() + 1) % 64) % 64));
    text.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(text.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn safetensors_file() -> Vec<u8> {
    fs::read(Path::new(TORCH_TINY).join("weights.safetensors")).unwrap()
}

/// A safetensors file of `header` (JSON text) and `data`.
fn safetensors_with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// A tuning cache holding an entry of this machine for [`layer`] and one
/// of another machine.
fn cache_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    let spec = layer();
    let entry = |cpu: Option<&str>| {
        let mut workload = Workload::host(&spec, 1);
        if let Some(cpu) = cpu {
            workload.cpu = cpu.into();
        }
        Entry {
            workload,
            schedule: schedule::choose(&spec),
            macs_per_cycle: 4.5,
            heuristic_macs_per_cycle: 4.0,
            candidates: 12,
            tuned_at: 1_795_896_000,
        }
    };
    let mut cache = TuningCache::load(&path);
    cache.insert(entry(None));
    cache.insert(entry(Some("another CPU")));
    cache.save(&path).unwrap();
    fs::read(&path).unwrap()
}

/// A records file of three lines.
fn records_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    let spec = layer();
    let mut log = RecordLog::open(&path).unwrap();
    for (i, phase) in ["heuristic", "random", "local"].into_iter().enumerate() {
        let record = Record {
            workload: Workload::host(&spec, 1),
            layer: Some("small".into()),
            phase: phase.into(),
            schedule: schedule::choose(&spec),
            started_at_ms: 1_795_896_000_000,
            elapsed_s: 0.25 * i as f64,
            compile_ms: 1.5,
            verify_ms: 0.5,
            measure_ms: 3.0,
            runs: 5,
            cycles: Some(123_456),
            macs_per_cycle: Some(4.5),
            relative: Some(0.9),
            cut: false,
            error: None,
        };
        log.append(&record).unwrap();
    }
    fs::read(&path).unwrap()
}

// ---------------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------------

/// Numbers past what every field holds: i64's and u64's ends and one past,
/// f64's largest and past it, negatives, non-integers.
const NUMBERS: [&str; 15] = [
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-1",
    "0",
    "1e308",
    "-1e308",
    "1e309",
    "340282366920938463463374607431768211456",
    "4294967296",
    "65536",
    "NaN",
    "0.5",
];

/// Nesting depths: around serde_json's limit of 128, past the depth that
/// kept npyz's parser busy for hours (30), and 10^5.
const DEPTHS: [usize; 10] = [1, 2, 3, 20, 30, 127, 128, 129, 1000, 100_000];

/// Bracket pairs, and JSON's dict opener with the closer it needs.
const NESTS: [(&str, &str); 4] = [("[", "]"), ("{\"a\":", "}"), ("(", ",)"), ("{'a':", "}")];

/// A value to put in a file: a number from [`NUMBERS`], a balanced nest of
/// brackets around one, an unbalanced run of openers, or random bytes.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::sample::select(&NUMBERS[..]).prop_map(|n| n.as_bytes().to_vec()),
        (prop::sample::select(&NESTS[..]), prop::sample::select(&DEPTHS[..]), any::<bool>())
            .prop_map(|((open, close), depth, balanced)| {
                let mut text = open.repeat(depth);
                if balanced {
                    text.push('1');
                    text.push_str(&close.repeat(depth));
                }
                text.into_bytes()
            }),
        prop::collection::vec(any::<u8>(), 0..16),
    ]
}

/// One edit of a file's bytes.
#[derive(Clone, Debug)]
enum Edit {
    /// Flips one bit of a byte.
    Flip(Index, u8),
    /// Cuts the file short there.
    Cut(Index),
    /// Inserts bytes there.
    Insert(Index, Vec<u8>),
    /// Replaces the n-th run of digits (counted modulo their number).
    Replace(usize, Vec<u8>),
    /// Repeats a stretch of the file in place, up to 64 bytes of it.
    Repeat(Index, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip(at, bit)),
        1 => any::<Index>().prop_map(Edit::Cut),
        2 => (any::<Index>(), payload()).prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        3 => (any::<usize>(), payload()).prop_map(|(n, bytes)| Edit::Replace(n, bytes)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(at, len)| Edit::Repeat(at, len)),
    ]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(edit(), 1..4)
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let len = bytes.len();
    match edit {
        Edit::Flip(at, bit) if len > 0 => bytes[at.index(len)] ^= 1 << bit,
        Edit::Cut(at) => bytes.truncate(at.index(len + 1)),
        Edit::Insert(at, new) => {
            let at = at.index(len + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Edit::Replace(n, new) => {
            let runs: Vec<(usize, usize)> = digit_runs(bytes);
            if let Some(&(start, end)) = runs.get(n % runs.len().max(1)) {
                bytes.splice(start..end, new.iter().copied());
            }
        }
        Edit::Repeat(at, stretch) if len > 0 => {
            let start = at.index(len);
            let end = (start + stretch).min(len);
            let copy = bytes[start..end].to_vec();
            bytes.splice(start..start, copy);
        }
        _ => {}
    }
}

/// The runs of ASCII digits in `bytes`, as ranges.
fn digit_runs(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

fn edited(base: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for edit in edits {
        apply(&mut bytes, edit);
    }
    bytes
}

/// A value for a length field: the ends of u16, u32 and u64, small ones,
/// any.
fn length() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![0, 1, 0xFFFF, 0xFFFF_FFFF, u64::MAX, 100_000_000, 100_000_001]),
        0u64..20_000,
        any::<u64>(),
    ]
}

/// A file in a folder of its own, removed with it.
struct Scratch {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn scratch(name: &str, bytes: &[u8]) -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    Scratch { _dir: dir, path }
}

// ---------------------------------------------------------------------------
// Every format, mutated
// ---------------------------------------------------------------------------

fn read_spec(path: &Path) -> Result<convjit::ValidSpec, Error> {
    ConvSpec::from_json(&files::read_text(path, files::SPEC)?)?.validate()
}

/// Reads a schedule file and asks whether it is legal for the layer it
/// was made for (a knob's value may overflow a product there).
fn read_schedule(path: &Path) -> Result<Schedule, Error> {
    let schedule = Schedule::from_json(&files::read_text(path, files::SCHEDULE)?)?;
    schedule.legal(&layer())?;
    Ok(schedule)
}

fn read_suite(path: &Path) -> Result<usize, Error> {
    let specs = ConvSpec::suite_from_json(&files::read_text(path, files::SUITE)?)?;
    specs.iter().map(ConvSpec::validate).collect::<Result<Vec<_>, _>>().map(|v| v.len())
}

/// Reads a model file and infers its shapes (a field's value may
/// overflow the shape arithmetic there).
fn read_model(path: &Path) -> Result<Graph, Error> {
    Graph::new(&Model::from_json(&files::read_text(path, files::MODEL)?)?)
}

fn tiny_graph() -> Graph {
    Graph::new(&Model::from_json(&model_json()).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn spec_files(base in 0..SPECS.len(), edits in edits()) {
        let file = scratch("spec.json", &edited(SPECS[base].as_bytes(), &edits));
        clean("spec", bounded("spec", || read_spec(&file.path)));
    }

    #[test]
    fn schedule_files(edits in edits()) {
        let file = scratch("schedule.json", &edited(schedule_json().as_bytes(), &edits));
        clean("schedule", bounded("schedule", || read_schedule(&file.path)));
    }

    #[test]
    fn suite_files(edits in edits()) {
        let file = scratch("suite.json", &edited(suite_json().as_bytes(), &edits));
        clean("suite", bounded("suite", || read_suite(&file.path)));
    }

    #[test]
    fn model_files(edits in edits()) {
        let file = scratch("model.json", &edited(model_json().as_bytes(), &edits));
        clean("model", bounded("model", || read_model(&file.path)));
    }

    /// The header's text edited (its length field kept true, so the
    /// header's checks and npyz's parser see it), then the file's bytes,
    /// then perhaps a lie in the length field.
    #[test]
    fn npy_files(
        header_edits in prop::collection::vec(edit(), 0..4),
        edits in prop::collection::vec(edit(), 0..3),
        version in prop::sample::select(vec![1u8, 2, 3]),
        lie in prop::option::of(length()),
    ) {
        let base = npy_file();
        let header_len = usize::from(u16::from_le_bytes([base[8], base[9]]));
        let header = edited(&base[10..10 + header_len], &header_edits);
        let mut bytes = b"\x93NUMPY".to_vec();
        bytes.extend_from_slice(&[version, 0]);
        if version == 1 {
            bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&base[10 + header_len..]);
        let mut bytes = edited(&bytes, &edits);
        if let (Some(lie), true) = (lie, bytes.len() >= 12) {
            let field = if version == 1 { 8..10 } else { 8..12 };
            let width = field.len();
            bytes[field].copy_from_slice(&lie.to_le_bytes()[..width]);
        }
        let file = scratch("x.npy", &bytes);
        clean("npy", bounded("npy", || read_f32(&file.path, "input", &NPY_SHAPE)));
    }

    /// The header's JSON edited (its length kept true), then the file's
    /// bytes, then perhaps a lie in the length field; what loads is bound
    /// to the model it belongs to.
    #[test]
    fn safetensors_files(
        header_edits in prop::collection::vec(edit(), 0..4),
        edits in prop::collection::vec(edit(), 0..3),
        lie in prop::option::of(length()),
    ) {
        let base = safetensors_file();
        let header_len = u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
        let header = edited(&base[8..8 + header_len], &header_edits);
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&header);
        bytes.extend_from_slice(&base[8 + header_len..]);
        let mut bytes = edited(&bytes, &edits);
        if let (Some(lie), true) = (lie, bytes.len() >= 8) {
            bytes[..8].copy_from_slice(&lie.to_le_bytes());
        }
        let file = scratch("w.safetensors", &bytes);
        let graph = tiny_graph();
        clean("safetensors", bounded("safetensors", || {
            Network::new(graph, Some(&Tensors::load(&file.path)?))
        }));
    }

    /// A cache never fails to load: what does not parse is ignored, so it
    /// holds at most the one entry of this machine it was made with; a
    /// lookup gives a schedule only when it is legal for the layer.
    #[test]
    fn tuning_caches(edits in edits()) {
        let file = scratch("tuning.json", &edited(&cache_file(), &edits));
        let spec = layer();
        let (held, found) = bounded("tuning cache", || {
            let cache = TuningCache::load(&file.path);
            (cache.entries().len(), cache.lookup(&spec, 1))
        });
        prop_assert!(held <= 1, "{held} entries");
        if let Some(schedule) = found {
            prop_assert!(schedule.legal(&spec).is_ok());
        }
    }

    /// A records file always reads: the lines that parse, the others
    /// counted as skipped.
    #[test]
    fn tuning_records(edits in edits()) {
        let bytes = edited(&records_file(), &edits);
        let lines = bytes.split(|&b| b == b'\n').filter(|l| !l.trim_ascii().is_empty()).count();
        let file = scratch("records.jsonl", &bytes);
        let (read, skipped) = bounded("records", || records::read(&file.path)).unwrap();
        prop_assert!(read.len() + skipped <= lines, "{} + {skipped} of {lines}", read.len());
    }
}

// ---------------------------------------------------------------------------
// Named cases: every one that ever failed
// ---------------------------------------------------------------------------

/// A `.npy` header whose shape is `value` nested `depth` levels in
/// `open`/`close`: about a kilobyte at depth 30, which kept npyz's parser
/// (exponential in the depth) busy for over an hour.
fn nested_npy(open: &str, close: &str, depth: usize) -> Vec<u8> {
    let nest = format!("{}1{}", open.repeat(depth), close.repeat(depth));
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {nest}, }}");
    npy_with_header(&header, &[0; 4])
}

#[test]
fn npy_headers_nested_deep_are_refused_at_once() {
    for (open, close) in [("[", "]"), ("(", ",)"), ("{'a': ", "}")] {
        for depth in [3, 20, 30, 200] {
            let file = scratch("deep.npy", &nested_npy(open, close, depth));
            let result = bounded("nested npy", || read_f32(&file.path, "input", &[1]));
            refused(&format!("{open} × {depth}"), result, &["deep.npy", "nests deeper"]);
        }
    }
}

#[test]
fn npy_header_length_0xffffffff_is_refused_before_any_allocation() {
    // 14 bytes: magic, version 2.0, a header length of 4 GiB − 1, two bytes.
    let bytes = b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'";
    let file = scratch("lie.npy", bytes);
    let result = bounded("0xffffffff", || read_f32(&file.path, "input", &[1]));
    refused("0xffffffff", result, &["4294967295", "10000"]);
    // A length within the bound but past the end of the file.
    let file = scratch("short.npy", b"\x93NUMPY\x01\x00\x00\x01{'descr'");
    refused("past the end", read_f32(&file.path, "input", &[1]), &["truncated", "256"]);
}

#[test]
fn npy_versions_and_magic_are_checked() {
    let mut bytes = npy_file();
    bytes[6] = 4;
    let file = scratch("v4.npy", &bytes);
    refused("version 4.0", read_f32(&file.path, "input", &NPY_SHAPE), &["version 4.0"]);
    bytes[6] = 1;
    bytes[0] = b'X';
    let file = scratch("magic.npy", &bytes);
    refused("no magic", read_f32(&file.path, "input", &NPY_SHAPE), &["magic"]);
}

/// Dimensions whose product overflows 64 bits made npyz's shape arithmetic
/// overflow (a panic in a build with overflow checks); and numbers past
/// u64, and ones that are not plain integers, are no dimension.
#[test]
fn npy_shapes_past_64_bits_are_refused() {
    for shape in [
        "(4294967296, 4294967296, 4294967296)",
        "(0, 4294967296, 4294967296, 4294967296)",
        "(18446744073709551616,)",
        "(-1,)",
        "(1e3,)",
        "(0x10,)",
        "(1.5,)",
    ] {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let file = scratch("huge.npy", &npy_with_header(&header, &[0; 4]));
        let result = bounded(shape, || read_f32(&file.path, "input", &[1]));
        refused(shape, result, &["huge.npy", "header"]);
    }
    // Dimensions up to the 64-bit bound pass the header's checks.
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967295), }";
    let file = scratch("big.npy", &npy_with_header(header, &[0; 8]));
    refused("2^64 − 2^32", read_f32(&file.path, "input", &[1, 2]), &["shape mismatch"]);
}

/// Only the data the expected shape needs is read: a file whose size says
/// more is refused from its size, unread.
#[test]
fn an_npy_file_larger_than_its_shape_needs_is_refused_unread() {
    let file = scratch("x.npy", &npy_file());
    fs::File::options().write(true).open(&file.path).unwrap().set_len(1 << 40).unwrap();
    let result = bounded("1 TiB npy", || read_f32(&file.path, "input", &NPY_SHAPE));
    refused("1 TiB npy", result, &["trailing bytes", "24"]);
}

/// A big-endian file reads back its values; the dtype error says what is
/// read.
#[test]
fn big_endian_npy_reads_back_its_values() {
    let values = [1.5f32, -2.0, 0.25, 7.0, f32::MIN_POSITIVE, -0.0];
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    let header = "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }";
    let file = scratch("big.npy", &npy_with_header(header, &data));
    let back = read_f32(&file.path, "input", &[2, 3]).unwrap();
    check("big-endian", &[2, 3], &back, &values, 0.0);
    assert!(back[5].is_sign_negative());
    let header = "{'descr': '>f8', 'fortran_order': False, 'shape': (2, 3), }";
    let file = scratch("double.npy", &npy_with_header(header, &[0; 48]));
    refused("'>f8'", read_f32(&file.path, "input", &[2, 3]), &["'<f4'", "'>f4'", "'>f8'"]);
}

/// Device nodes, FIFOs, directories and links to them are refused by
/// every reader before it opens them (a FIFO would block the open); the
/// tuning cache is ignored instead.
#[test]
fn files_that_are_not_regular_are_refused_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo runs");
    assert!(made.success());
    let link = dir.path().join("link");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let cases = [
        (PathBuf::from("/dev/zero"), "a character device"),
        (fifo, "a FIFO"),
        (dir.path().to_path_buf(), "a directory"),
        (link, "a character device"),
    ];
    for (path, kind) in &cases {
        let what = path.display().to_string();
        let expect = [what.as_str(), *kind, "not a regular file"];
        for kind in [files::SPEC, files::SCHEDULE, files::SUITE, files::MODEL] {
            refused(&what, bounded(&what, || files::read_text(path, kind)), &expect);
        }
        refused(&what, bounded(&what, || read_f32(path, "input", &[1])), &expect);
        refused(&what, bounded(&what, || Tensors::load(path)), &expect);
        refused(&what, bounded(&what, || records::read(path)), &expect);
        let cache = bounded(&what, || TuningCache::load(path));
        assert!(cache.entries().is_empty(), "{what}");
    }
}

/// A file past its kind's bound is refused from its size, unread (sparse
/// files: nothing is stored), the cache ignored.
#[test]
fn files_past_their_bound_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    let sparse = |name: &str, len: u64| {
        let path = dir.path().join(name);
        fs::File::create(&path).unwrap().set_len(len).unwrap();
        path
    };
    for kind in [files::SPEC, files::SCHEDULE, files::SUITE, files::MODEL] {
        let path = sparse(kind.what, kind.limit + 1);
        let size = (kind.limit + 1).to_string();
        let result = bounded(kind.what, || files::read_text(&path, kind));
        refused(kind.what, result, &[kind.what, "holds at most", &size]);
        // At the bound, it is read (and then not valid JSON).
        let path = sparse(kind.what, kind.limit);
        assert!(bounded(kind.what, || files::read_text(&path, kind)).is_ok());
    }
    let path = sparse("records", files::RECORDS.limit + 1);
    refused("records", bounded("records", || records::read(&path)), &["holds at most 1 GiB"]);
    let path = sparse("tuning.json", files::TUNING_CACHE.limit + 1);
    assert!(bounded("cache", || TuningCache::load(&path)).entries().is_empty());
}

/// JSON nested 10^5 deep is refused in every JSON format, where it is
/// parsed into a value of any shape by serde_json's depth limit (128): an
/// error, or a cache or a record skipped.
#[test]
fn json_nested_100000_deep_is_refused_in_every_format() {
    let deep = "recursion limit";
    for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
        let nest = format!("{}1{}", open.repeat(100_000), close.repeat(100_000));
        // A kernel is one integer or two: any JSON value is read first.
        let spec = SPECS[0].replace("\"kernel\":[3,2]", &format!("\"kernel\":{nest}"));
        assert_ne!(spec, SPECS[0]);
        let file = scratch("spec.json", spec.as_bytes());
        refused("spec", bounded("spec", || read_spec(&file.path)), &[deep]);
        let file = scratch("suite.json", format!("[{spec}]").as_bytes());
        refused("suite", bounded("suite", || read_suite(&file.path)), &[deep]);
        // Layers are read as JSON values first.
        let model =
            model_json().replacen("\"out_channels\": 8", &format!("\"out_channels\": {nest}"), 1);
        let file = scratch("model.json", model.as_bytes());
        refused("model", bounded("model", || read_model(&file.path)), &[deep]);
        // Schedules are read as JSON values first (to tell the typed form
        // from the flat form of older files).
        let schedule = schedule_json().replacen("\"threads\":1", &format!("\"threads\":{nest}"), 1);
        assert_ne!(schedule, schedule_json());
        let file = scratch("schedule.json", schedule.as_bytes());
        refused("schedule", bounded("schedule", || read_schedule(&file.path)), &[deep]);
        let header =
            format!("{{\"x\":{{\"dtype\":\"F32\",\"shape\":{nest},\"data_offsets\":[0,4]}}}}");
        let file = scratch("w.safetensors", &safetensors_with_header(&header, &[0; 4]));
        let result = bounded("safetensors", || Tensors::load(&file.path));
        refused("safetensors", result, &["w.safetensors", "header"]);
        // Entries are read as JSON values first.
        let cache = String::from_utf8(cache_file()).unwrap().replacen("4.5", &nest, 1);
        let file = scratch("tuning.json", cache.as_bytes());
        let spec = layer();
        assert_eq!(bounded("cache", || TuningCache::load(&file.path).lookup(&spec, 1)), None);
        let mut lines = records_file();
        lines.extend_from_slice(nest.as_bytes());
        lines.push(b'\n');
        let file = scratch("records.jsonl", &lines);
        let (read, skipped) = bounded("records", || records::read(&file.path)).unwrap();
        assert_eq!((read.len(), skipped), (3, 1));
    }
}

/// serde quotes the name it does not know; a name holding a newline or a
/// terminal escape comes back escaped on one line, in every JSON format.
#[test]
fn unknown_names_with_control_characters_are_quoted_escaped_on_one_line() {
    let odd = "con\\nv\\u001b[2J2d";
    let escaped = ["\\n", "\\u{1b}"];
    let spec = SPECS[0].replace("\"conv2d\"", &format!("\"{odd}\""));
    assert_ne!(spec, SPECS[0]);
    let file = scratch("spec.json", spec.as_bytes());
    refused("spec", read_spec(&file.path), &escaped);
    clean("spec", read_spec(&file.path));
    let file = scratch("suite.json", format!("[{spec}]").as_bytes());
    refused("suite", read_suite(&file.path), &escaped);
    clean("suite", read_suite(&file.path));
    let model = model_json().replacen("\"conv_transpose2d\"", &format!("\"{odd}\""), 1);
    assert_ne!(model, model_json());
    let file = scratch("model.json", model.as_bytes());
    refused("model", read_model(&file.path), &escaped);
    clean("model", read_model(&file.path));
    let schedule = schedule_json();
    let key = format!("\"{odd}\":1,");
    let schedule = schedule.replacen('{', &format!("{{{key}"), 1);
    let file = scratch("schedule.json", schedule.as_bytes());
    refused("schedule", read_schedule(&file.path), &escaped);
    clean("schedule", read_schedule(&file.path));
}

/// Numbers too large for their field are serde's errors, in the schedule
/// (unsigned fields) and the model (signed ones); upper bounds on the
/// values that fit are the validations' job.
#[test]
fn numbers_too_large_for_their_field_are_json_errors() {
    let schedule = schedule_json();
    for number in ["18446744073709551616", "-1", "1e308", "0.5"] {
        let text = schedule.replacen("\"threads\":1", &format!("\"threads\":{number}"), 1);
        assert_ne!(text, schedule);
        match Schedule::from_json(&text) {
            Err(Error::ScheduleJson(message)) => {
                assert!(message.contains("invalid"), "{number}: {message}")
            }
            other => panic!("{number}: {other:?}"),
        }
    }
    let model = model_json();
    for number in ["9223372036854775808", "18446744073709551616", "1e308", "0.5"] {
        let text = model.replace("\"out_channels\": 8", &format!("\"out_channels\": {number}"));
        assert_ne!(text, model);
        match Model::from_json(&text) {
            Err(e @ Error::Model { .. }) => assert!(e.to_string().contains("invalid"), "{e}"),
            other => panic!("{number}: {other:?}"),
        }
    }
}

/// Safetensors: a length of u64::MAX, one past the format's cap, one past
/// the file, and tensors declaring a terabyte in a small file are refused
/// before anything of that size is allocated or read.
#[test]
fn safetensors_lengths_that_lie_are_refused_unread() {
    let base = safetensors_file();
    for (lie, fragment) in
        [(u64::MAX, "100000000"), (100_000_001, "100000000"), (base.len() as u64, "truncated")]
    {
        let mut bytes = base.clone();
        bytes[..8].copy_from_slice(&lie.to_le_bytes());
        let file = scratch("w.safetensors", &bytes);
        let result = bounded("length", || Tensors::load(&file.path));
        refused(&lie.to_string(), result, &["w.safetensors", fragment]);
    }
    let header =
        r#"{"x":{"dtype":"F32","shape":[262144,1048576],"data_offsets":[0,1099511627776]}}"#;
    let file = scratch("w.safetensors", &safetensors_with_header(header, &[0; 16]));
    let result = bounded("a terabyte", || Tensors::load(&file.path));
    refused("a terabyte", result, &["1099511627776", "16"]);
    // The same, with the file stretched (sparse) to what the header says:
    // read, as it is legal, but here only a small one.
    let header = r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let file = scratch("w.safetensors", &safetensors_with_header(header, &[0; 12]));
    refused("12 of 16", Tensors::load(&file.path), &["declares 16", "holds 12"]);
    fs::File::options().write(true).open(&file.path).unwrap().set_len(1 << 40).unwrap();
    let result = bounded("1 TiB", || Tensors::load(&file.path));
    refused("1 TiB", result, &["declares 16"]);
}

/// A records line longer than [`records::MAX_LINE`] is skipped unheld; the
/// lines around it are read.
#[test]
fn an_overlong_records_line_is_skipped() {
    let base = records_file();
    let mut bytes = base.clone();
    bytes.extend(std::iter::repeat_n(b'x', 4 * records::MAX_LINE));
    bytes.push(b'\n');
    bytes.extend_from_slice(&base);
    let file = scratch("records.jsonl", &bytes);
    let (read, skipped) = records::read(&file.path).unwrap();
    assert_eq!((read.len(), skipped), (6, 1));
}

// ---------------------------------------------------------------------------
// The binary, end to end
// ---------------------------------------------------------------------------

/// The address space the binary may use in the runs below that must fail:
/// reading an unbounded input exhausts it and aborts.
const ADDRESS_SPACE_KIB: u64 = 1 << 20;

/// Runs the binary with `args` under [`ADDRESS_SPACE_KIB`] (when `limit`),
/// killing it past 20 seconds; returns its output and how long it ran.
fn convjit(args: &[&str], limit: bool) -> (Output, Duration) {
    let binary = env!("CARGO_BIN_EXE_convjit");
    let mut command = if limit {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""))
            .arg(binary);
        sh
    } else {
        Command::new(binary)
    };
    let start = Instant::now();
    let mut child = command
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the convjit binary runs");
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("convjit {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    (child.wait_with_output().unwrap(), took)
}

/// Asserts the failure contract: exit status 1, one line on stderr naming
/// the reason (with every fragment), nothing on stdout, and no hang: these
/// runs take milliseconds (measured: 0.00 s each); the bound only tells a
/// hang (the inputs took from seconds to hours) from a busy machine.
fn fails(what: &str, (out, took): (Output, Duration), fragments: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {}\nstderr: {err}", out.status);
    assert_eq!(err.lines().count(), 1, "{what}: stderr is not one line:\n{err}");
    assert!(err.starts_with("convjit: error: "), "{what}: {err}");
    for fragment in fragments {
        assert!(err.contains(fragment), "{what}: stderr lacks {fragment:?}: {err}");
    }
    assert!(out.stdout.is_empty(), "{what}: printed {}", String::from_utf8_lossy(&out.stdout));
    assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
}

/// A folder with a valid spec file, its input, weight and bias, and a
/// FIFO; every run writes y.npy there.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let v = spec(SPECS[0]);
        fs::write(dir.path().join("spec.json"), SPECS[0]).unwrap();
        write_f32(&dir.path().join("x.npy"), &v.input_shape(), &random_tensor(1, v.input_len()))
            .unwrap();
        let w = random_tensor(2, v.weight_len());
        write_f32(&dir.path().join("w.npy"), &v.weight_shape(), &w).unwrap();
        let b = random_tensor(3, v.out_channels());
        write_f32(&dir.path().join("b.npy"), &[v.out_channels()], &b).unwrap();
        let made = Command::new("mkfifo").arg(dir.path().join("fifo")).status().unwrap();
        assert!(made.success());
        Case { dir }
    }

    fn p(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    /// `convjit run` with `replace` (an option and its file) in place of
    /// the valid one.
    fn run(&self, replace: (&str, &str), extra: &[&str], limit: bool) -> (Output, Duration) {
        let mut files = vec![
            ("--spec", self.p("spec.json")),
            ("--input", self.p("x.npy")),
            ("--weight", self.p("w.npy")),
            ("--bias", self.p("b.npy")),
        ];
        for (option, file) in &mut files {
            if *option == replace.0 {
                *file = replace.1.to_string();
            }
        }
        let y = self.p("y.npy");
        let mut args = vec!["run", "--output", y.as_str()];
        for (option, file) in &files {
            args.extend([*option, file.as_str()]);
        }
        args.extend(extra);
        convjit(&args, limit)
    }

    /// Asserts that no output was written.
    fn untouched(&self, what: &str) {
        assert!(!self.dir.path().join("y.npy").exists(), "{what}: an output was written");
    }
}

#[test]
fn cli_dev_zero_as_any_input_fails_in_one_line() {
    let case = Case::new();
    for option in ["--spec", "--input", "--weight", "--bias"] {
        fails(option, case.run((option, "/dev/zero"), &[], true), &["/dev/zero", "character"]);
        case.untouched(option);
    }
    let spec = case.p("spec.json");
    let runs: [&[&str]; 6] = [
        &["macs", "--spec", "/dev/zero"],
        &["macs", "--suite", "/dev/zero"],
        &["ir", "--spec", &spec, "--schedule", "/dev/zero"],
        &["net", "--model", "/dev/zero"],
        &["net", "--model", "builtin:jvet_lf", "--weights", "/dev/zero"],
        &["net", "--model", "builtin:jvet_lf", "--input", "/dev/zero"],
    ];
    for args in runs {
        fails(&args.join(" "), convjit(args, true), &["/dev/zero", "not a regular file"]);
    }
}

#[test]
fn cli_a_fifo_as_spec_or_input_fails_without_waiting_for_a_writer() {
    let case = Case::new();
    let fifo = case.p("fifo");
    for option in ["--spec", "--input"] {
        fails(option, case.run((option, &fifo), &[], false), &["fifo", "a FIFO"]);
        case.untouched(option);
    }
}

#[test]
fn cli_a_deep_nested_npy_fails_at_once() {
    let case = Case::new();
    let v = spec(SPECS[0]);
    let nested = case.p("nested.npy");
    let mut bytes = nested_npy("[", "]", 30);
    bytes.truncate(bytes.len() - 4);
    bytes.extend(std::iter::repeat_n(0, 4 * v.input_len()));
    fs::write(&nested, bytes).unwrap();
    fails("nested", case.run(("--input", &nested), &[], true), &["nested.npy", "nests deeper"]);
    case.untouched("nested");
}

#[test]
fn cli_an_npy_header_length_of_0xffffffff_fails_in_a_memory_limit() {
    let case = Case::new();
    let lie = case.p("lie.npy");
    fs::write(&lie, b"\x93NUMPY\x02\x00\xff\xff\xff\xff{'").unwrap();
    fails("0xffffffff", case.run(("--input", &lie), &[], true), &["lie.npy", "4294967295"]);
    case.untouched("0xffffffff");
}

/// A tuning cache that is a device is ignored with a warning: the run
/// succeeds on the heuristic's schedule.
#[test]
fn cli_a_tuning_cache_that_is_a_device_is_ignored() {
    let case = Case::new();
    let (out, _) = case.run(("", ""), &["--tuned", "--cache", "/dev/zero", "--stats"], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {err}", out.status);
    assert!(err.contains("/dev/zero") && err.contains("not a regular file"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("heuristic"));
    assert!(case.dir.path().join("y.npy").exists());
}
