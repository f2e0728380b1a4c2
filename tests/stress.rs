//! Many kernels compiled, run from several threads at once and dropped, in
//! a loop: the process's resident memory and its executable mappings must
//! return to their level after a warm-up. A kernel owns its code
//! (`jit::Code` frees its module on drop) and its scratch buffers; a leak
//! of either shows here as executable pages or resident memory that grow
//! with every round.
//!
//! Linux only: it reads `/proc/self/statm` and `/proc/self/maps`.
#![cfg(target_os = "linux")]

mod common;

use std::time::Instant;

use common::{check, random_tensor, spec};
use convjit::blocks::Dsc;
use convjit::blocks::dsc::DscKernel;
use convjit::codegen::dsc::DscSchedule;
use convjit::reference::Oracle;
use convjit::schedule::{self, InputCopy, Run, Split};
use convjit::{Activation, Compiler, Kernel, PackedWeights, Schedule, ValidSpec};

/// Layers of every kind, small enough to compile and run in milliseconds,
/// each with the schedule it is compiled with (the heuristic's, or one
/// that splits runs across threads or copies by groups or bands).
fn layers() -> Vec<(ValidSpec, Schedule)> {
    let specs = [
        r#"{"op":"conv2d","in_channels":5,"out_channels":7,"height":9,"width":8,"kernel":3,"padding":1}"#,
        r#"{"op":"conv2d","in_channels":8,"out_channels":8,"height":12,"width":10,"kernel":3,"padding":1,"groups":8}"#,
        r#"{"op":"conv2d","in_channels":6,"out_channels":9,"height":9,"width":9,"kernel":3,"padding":1,"groups":3,"bias":false}"#,
        r#"{"op":"conv2d","in_channels":16,"out_channels":12,"height":7,"width":7,"kernel":1}"#,
        r#"{"op":"conv2d","in_channels":3,"out_channels":8,"height":15,"width":15,"kernel":7,"stride":2,"padding":3}"#,
        r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":12,"width":12,"kernel":3,"padding":2,"dilation":2,"activation":"relu"}"#,
        r#"{"op":"conv2d","in_channels":4,"out_channels":8,"height":10,"width":9,"kernel":[3,1],"padding":[1,0]}"#,
        r#"{"op":"conv_transpose2d","in_channels":6,"out_channels":4,"height":5,"width":6,"kernel":4,"stride":2,"padding":1}"#,
        r#"{"op":"conv_transpose2d","in_channels":6,"out_channels":9,"height":5,"width":5,"kernel":3,"stride":2,"padding":1,"output_padding":1,"groups":3,"bias":false}"#,
        r#"{"op":"conv2d","batch":2,"in_channels":8,"out_channels":16,"height":20,"width":20,"kernel":3,"padding":1,"activation":"relu6"}"#,
    ];
    let mut layers = Vec::new();
    for json in specs {
        let spec = spec(json);
        let heuristic = schedule::choose(&spec);
        layers.push((spec.clone(), heuristic));
        let threaded = Schedule { run: Run::threads(2), ..heuristic };
        let bands = Schedule {
            copy: InputCopy::Bands(2),
            run: Run { threads: 2, split: Split::Rows },
            ..heuristic
        };
        let groups = Schedule {
            copy: InputCopy::Group,
            run: Run { threads: 2, split: Split::Items },
            ..heuristic
        };
        for s in [threaded, bands, groups] {
            if s.legal(&spec).is_ok() && !layers.contains(&(spec.clone(), s)) {
                layers.push((spec.clone(), s));
            }
        }
    }
    layers
}

/// Depthwise-separable blocks for the fused kernel: `(channels, size,
/// stride, output channels)`.
const BLOCKS: &[(usize, usize, usize, usize)] = &[(8, 14, 1, 6), (12, 11, 2, 16), (5, 9, 1, 3)];

/// One layer's operands and its oracle, made once.
struct Case {
    spec: ValidSpec,
    schedule: Schedule,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Option<Vec<f32>>,
    oracle: Oracle,
}

/// One fused block's input and reference output, made once.
struct BlockCase {
    block: Dsc,
    threads: usize,
    x: Vec<f32>,
    expected: Vec<f32>,
}

/// Compiles every case, runs each compiled kernel from `threads` threads
/// at once (each thread over every kernel, from its own starting point),
/// checks every output, and drops the kernels. Returns the number of
/// kernels compiled.
fn round(compiler: &Compiler, cases: &[Case], blocks: &[BlockCase], threads: usize) -> usize {
    let kernels: Vec<(Kernel, PackedWeights)> = cases
        .iter()
        .map(|c| {
            let kernel = compiler.compile_with(&c.spec, &c.schedule).expect("compile");
            let packed = kernel.pack(&c.w, c.b.as_deref()).expect("pack");
            (kernel, packed)
        })
        .collect();
    let fused: Vec<DscKernel> = blocks
        .iter()
        .map(|c| {
            let (dw, pw) = (c.block.depthwise().spec(), c.block.pointwise().spec());
            let schedule = DscSchedule::choose(dw, pw, c.threads);
            DscKernel::compile(compiler, &c.block, &schedule).expect("compile the fused block")
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (kernels, fused) = (&kernels, &fused);
            s.spawn(move || {
                for i in 0..cases.len() {
                    let i = (i + t * 5) % cases.len();
                    let (case, (kernel, packed)) = (&cases[i], &kernels[i]);
                    let mut y = vec![f32::NAN; case.spec.output_len()];
                    kernel.run(&case.x, packed, &mut y).expect("run");
                    let verdict = case.oracle.verify(&y).expect("verify");
                    assert!(
                        verdict.passed(),
                        "{} with {:?}: {verdict:?}",
                        case.spec,
                        case.schedule
                    );
                }
                for (c, kernel) in blocks.iter().zip(fused) {
                    let mut y = vec![f32::NAN; c.expected.len()];
                    kernel.run(&c.x, &mut y).expect("run the fused block");
                    let shape = c.block.pointwise().spec().output_shape();
                    check("fused block", &shape, &y, &c.expected, 1e-5);
                }
            });
        }
    });
    kernels.len() + fused.len()
}

/// Resident memory, in bytes (`/proc/self/statm`'s second field, in pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("rss");
    // SAFETY: sysconf only reads a system constant.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// The executable mappings of the process: how many, and their bytes.
/// Adjacent mappings of one permission may merge into one, so the bytes
/// are the measure that cannot hide a leak of code pages.
fn executable_mappings() -> (usize, u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let mut count = 0;
    let mut bytes = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if !perms.contains('x') {
            continue;
        }
        let (start, end) = range.split_once('-').expect("a range");
        let parse = |v| u64::from_str_radix(v, 16).expect("a hex address");
        count += 1;
        bytes += parse(end) - parse(start);
    }
    (count, bytes)
}

/// Rounds after the warm-up, at least (43 kernels each, about 0.2 s in
/// the dev profile); more when a round's code is too small for a leak of
/// it to show past `RSS_SLACK`.
const ROUNDS: usize = 32;

/// Rounds at most: a round whose kernels hold so little that more would be
/// needed fails the test as unable to see a leak.
const MAX_ROUNDS: u64 = 128;

/// Resident memory the loop may add: what the allocator keeps of freed
/// buffers (glibc's per-thread arenas, which a round's new threads reuse
/// but do not shrink); measured: under 100 KiB. A leak of every kernel's
/// code and buffers would add far more: one round's kernels hold about
/// 16 KiB of code pages each, some 600 KiB a round resident, so 32 rounds
/// would leak about 19 MiB. The test measures that figure and runs enough
/// rounds that the leak would pass this bound three times over.
const RSS_SLACK: u64 = 6 << 20;

/// Executable mappings the loop may add: none are expected, a few allow
/// for a library mapped lazily (the first use of a libc routine).
const MAPPING_SLACK: usize = 4;

#[test]
fn kernels_compiled_run_and_dropped_in_a_loop_leak_nothing() {
    let start = Instant::now();
    let compiler = Compiler::host().expect("host compiler");
    let cases: Vec<Case> = layers()
        .into_iter()
        .enumerate()
        .map(|(i, (spec, schedule))| {
            let x = random_tensor(i as u64, spec.input_len());
            let w = random_tensor(100 + i as u64, spec.weight_len());
            let b = spec.has_bias().then(|| random_tensor(200 + i as u64, spec.out_channels()));
            let oracle = Oracle::new(&spec, &x, &w, b.as_deref()).expect("oracle");
            Case { spec, schedule, x, w, b, oracle }
        })
        .collect();
    let blocks: Vec<BlockCase> = BLOCKS
        .iter()
        .enumerate()
        .map(|(i, &(c, size, s, cout))| {
            let mut dw = convjit::ConvSpec::new(
                convjit::Op::Conv2d,
                1,
                c as i64,
                c as i64,
                (size as i64, size as i64),
                [3, 3],
            );
            (dw.stride, dw.padding, dw.groups) = ([s as i64; 2].into(), [1, 1].into(), c as i64);
            let dw = dw.validate().expect("depthwise spec");
            let acts = [Activation::Relu6, Activation::None];
            let block = Dsc::random(&dw, cout, acts, i as u64).expect("block");
            let x = random_tensor(300 + i as u64, dw.input_len());
            let expected = block.reference(&x).expect("reference");
            BlockCase { block, threads: 1 + i % 2, x, expected }
        })
        .collect();
    let threads = 3;

    // Warm-up: rayon's pool, the allocator's arenas, lazily mapped code.
    for _ in 0..2 {
        round(&compiler, &cases, &blocks, threads);
    }
    let (rss_before, (maps_before, exec_before)) = (resident_bytes(), executable_mappings());

    // What one round's kernels hold while they are alive: the size of a
    // leak per round.
    let alive: Vec<(Kernel, PackedWeights)> = cases
        .iter()
        .map(|c| {
            let kernel = compiler.compile_with(&c.spec, &c.schedule).expect("compile");
            let packed = kernel.pack(&c.w, c.b.as_deref()).expect("pack");
            let mut y = vec![0.0; c.spec.output_len()];
            kernel.run(&c.x, &packed, &mut y).expect("run");
            (kernel, packed)
        })
        .collect();
    let exec_alive = executable_mappings().1 - exec_before;
    let rss_alive = resident_bytes().saturating_sub(rss_before);
    drop(alive);

    // Enough rounds that leaking each round's kernels — their code, or
    // their buffers — would pass the resident bound three times over,
    // however small a round is (but no more than MAX_ROUNDS). A round
    // leaked keeps at least its code, whose pages every kernel wrote and
    // ran, so they are resident: that is the size of a leak per round. The
    // resident growth of the alive round is not: its kernels may reuse
    // pages the warm-up freed, already resident (it read 0 KiB in some
    // runs, and 576 KiB, the code's size, in others).
    let per_round = exec_alive.max(1);
    let rounds = ((3 * RSS_SLACK) / per_round + 1).clamp(ROUNDS as u64, MAX_ROUNDS) as usize;
    let mut compiled = 0;
    for _ in 0..rounds {
        compiled += round(&compiler, &cases, &blocks, threads);
    }
    let (rss_after, (maps_after, exec_after)) = (resident_bytes(), executable_mappings());
    let took = start.elapsed();
    eprintln!(
        "{compiled} kernels in {rounds} rounds, {took:.1?}: resident {} → {} KiB; executable \
         mappings {maps_before} → {maps_after}, {} → {} KiB; one round's kernels alive held {} KiB \
         of code and {} KiB resident",
        rss_before >> 10,
        rss_after >> 10,
        exec_before >> 10,
        exec_after >> 10,
        exec_alive >> 10,
        rss_alive >> 10,
    );

    // The measures can see a leak: a round's kernels alive hold code pages,
    // and the loop made enough rounds that leaking them would pass the
    // resident bound.
    assert!(exec_alive > 0, "compiled kernels hold no executable pages");
    assert!(
        rounds as u64 * per_round > 3 * RSS_SLACK,
        "the loop is too short to tell a leak from allocator slack: {rounds} rounds of {} KiB",
        per_round >> 10
    );
    assert!(
        exec_after <= exec_before,
        "executable mappings grew from {exec_before} to {exec_after} bytes: code pages leaked"
    );
    assert!(
        maps_after <= maps_before + MAPPING_SLACK,
        "executable mappings grew from {maps_before} to {maps_after}"
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "resident memory grew by {} KiB over {compiled} kernels",
        (rss_after - rss_before) >> 10
    );
}
