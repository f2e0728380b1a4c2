//! The autotuner: its space, its budget, what it returns, and the files it
//! writes and reads (records and the tuning cache), corrupt ones included.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::{any_spec, check_kernel, random_tensor, spec, with_pixel_tile, with_tile};
use convjit::blocks::Dsc;
use convjit::blocks::dsc::DscKernel;
use convjit::codegen::dsc::DscSchedule;
use convjit::reference::Oracle;
use convjit::schedule::{self, Schedule};
use convjit::target::Isa;
use convjit::tune::dsc::DscSpace;
use convjit::tune::{self, Options, Outcome, RecordLog, Search, TuningCache, records};
use convjit::tune::{KNOBS, Space};
use convjit::{Activation, Compiler, Error, ValidSpec};
use proptest::prelude::*;

/// A small layer: about a million MACs, a run of a fraction of a millisecond.
fn small() -> ValidSpec {
    spec(
        r#"{"name": "small", "op": "conv2d", "in_channels": 16, "out_channels": 24,
            "height": 20, "width": 20, "kernel": 3, "padding": 1}"#,
    )
}

/// Tuning measures time: the tests that tune take turns, so that they do
/// not slow each other down past their budgets.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tune_quietly(spec: &ValidSpec, options: &Options, log: Option<&mut RecordLog>) -> Outcome {
    let compiler = Compiler::host().unwrap();
    tune::tune(&compiler, spec, options, log, &mut |_| {}).expect("tuning succeeds")
}

fn options(budget_ms: u64, search: Search) -> Options {
    Options { budget: Duration::from_millis(budget_ms), search, ..Options::default() }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every member of the space is legal and unique, and a neighbour is a
    /// member that differs in exactly one knob; members drawn at random
    /// compute the right output.
    #[test]
    fn the_space_holds_legal_schedules_that_compute_the_layer(
        spec in any_spec(),
        threads in 1usize..=3,
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 3),
        seed in any::<u64>(),
    ) {
        let space = Space::of(&spec, threads);
        prop_assert!(!space.is_empty(), "{spec}: empty space");
        let mut seen = std::collections::HashSet::new();
        for s in space.members() {
            prop_assert!(s.legal(&spec).is_ok(), "{spec}: {s:?} is illegal");
            prop_assert!(s.run.threads <= threads);
            prop_assert!(seen.insert(*s), "{spec}: {s:?} twice");
        }
        let first = space.members()[picks[0].index(space.len())];
        for n in space.neighbours(&first) {
            prop_assert!(space.contains(&n));
            let (a, b) = (Space::knobs(&first), Space::knobs(&n));
            let changed: Vec<&str> =
                KNOBS.iter().zip(a.iter().zip(&b)).filter(|(_, (x, y))| x != y).map(|(k, _)| *k).collect();
            prop_assert_eq!(changed.len(), 1, "{:?} → {:?}", first, n);
        }
        for pick in &picks {
            check_kernel(&spec, &space.members()[pick.index(space.len())], seed);
        }
    }
}

#[test]
fn the_space_of_a_suite_layer_spans_every_knob() {
    let layer = spec(
        r#"{"op": "conv2d", "in_channels": 64, "out_channels": 64, "height": 56, "width": 56,
            "kernel": 3, "padding": 1, "groups": 2}"#,
    );
    let space = Space::of(&layer, 2);
    // The row length is a knob of flat planes only (1×1, stride 1, no
    // padding), where the space has the heuristic's schedule too.
    let pointwise = spec(
        r#"{"op": "conv2d", "in_channels": 64, "out_channels": 64, "height": 28, "width": 28,
            "kernel": 1}"#,
    );
    let flat = Space::of(&pointwise, 1);
    assert!(flat.contains(&schedule::choose(&pointwise)));
    // So is its schedule for other planes and group widths: rows the
    // plane divides into, channels fewer than the tile's.
    for (h, w, cog) in [(12, 12, 40), (14, 14, 5), (8, 16, 3), (56, 56, 24)] {
        let layer = spec(&format!(
            r#"{{"op": "conv2d", "in_channels": 48, "out_channels": {cog}, "height": {h},
                "width": {w}, "kernel": 1}}"#
        ));
        let heuristic = schedule::choose(&layer);
        assert!(Space::of(&layer, 1).contains(&heuristic), "{layer}: {}", heuristic.to_json());
    }
    // So is a k×1 layer's direct heuristic schedule (the heuristic's own
    // is Winograd's F(2, 7) on AVX-512), its planes each one row, and the
    // space holds that view for the direct algorithm.
    let columns = spec(
        r#"{"op": "conv2d", "in_channels": 64, "out_channels": 64, "height": 17, "width": 17,
            "kernel": [7, 1], "padding": [3, 0]}"#,
    );
    let one_row = schedule::choose_direct_for(&columns, 1, Isa::host());
    assert_eq!(one_row.algorithm.row_length(), Some(17 * 17), "{}", one_row.to_json());
    assert!(Space::of(&columns, 1).contains(&one_row), "{}", one_row.to_json());
    // Reading the image's rows is a knob (deinterleaved loads on
    // column-strided layers, where the space has the heuristic's schedule
    // of a depthwise one).
    let strided = spec(
        r#"{"op": "conv2d", "in_channels": 32, "out_channels": 32, "height": 56, "width": 56,
            "kernel": 3, "padding": 1, "stride": 2, "groups": 32}"#,
    );
    let strided_space = Space::of(&strided, 1);
    assert!(strided_space.contains(&schedule::choose(&strided)));
    // Merging column phases is a knob on a transposed conv whose kernel is
    // as wide as its stride (where the space has the heuristic's merged
    // schedule).
    let upsampling = spec(
        r#"{"op": "conv_transpose2d", "in_channels": 128, "out_channels": 64, "height": 64,
            "width": 64, "kernel": 2, "stride": 2, "bias": true}"#,
    );
    let upsampling_space = Space::of(&upsampling, 1);
    let merged = schedule::choose(&upsampling);
    assert_eq!(merged.algorithm.merged_columns(), Isa::Avx512.on_host(), "{}", merged.to_json());
    assert!(upsampling_space.contains(&merged), "{}", merged.to_json());
    for (k, knob) in KNOBS.iter().enumerate() {
        // Rows are joined, and the image's read, by AVX-512 tiles only;
        // column phases are merged by AVX2 and AVX-512 tiles.
        if matches!(*knob, "joined" | "image") && !Isa::Avx512.on_host() {
            continue;
        }
        if *knob == "merged_columns" && !Isa::Avx2.on_host() {
            continue;
        }
        let space = match *knob {
            "row_length" => &flat,
            "image" => &strided_space,
            "merged_columns" => &upsampling_space,
            _ => &space,
        };
        let values: std::collections::HashSet<u64> =
            space.members().iter().map(|s| Space::knobs(s)[k]).collect();
        assert!(values.len() > 1, "knob {knob} takes one value only");
    }
    // The heuristic's schedule has neighbours to climb to.
    let heuristic = schedule::choose(&layer);
    assert!(space.contains(&heuristic));
    assert!(space.neighbours(&heuristic).len() > 20);
    // On one thread the split is no knob: a copy change is one step, from
    // a whole-image copy to bands and to a group's.
    let one = Space::of(&layer, 1);
    let image = Schedule {
        copy: schedule::InputCopy::Image,
        run: heuristic.run.split(schedule::Split::Items),
        ..heuristic
    };
    assert!(one.contains(&image));
    let copies: std::collections::HashSet<_> =
        one.neighbours(&image).iter().map(|n| n.copy).collect();
    assert!(copies.contains(&schedule::InputCopy::Bands(4)), "{copies:?}");
    assert!(copies.contains(&schedule::InputCopy::Group), "{copies:?}");
}

// What the search decides from its measurements (the fastest schedule
// found, slow ones cut, the budget kept, the confirmation's margin) is
// tested on a model clock in the crate's own tests, where every run's time
// is known; here the tuner runs on the host's clocks, and the tests assert
// only what holds however busy the machine is.

#[test]
fn a_tuned_schedule_is_verified_and_replaces_the_heuristic_only_when_confirmed_faster() {
    let _turn = serial();
    let spec = small();
    let outcome = tune_quietly(&spec, &options(1500, Search::Auto), None);
    assert!(outcome.schedule.legal(&spec).is_ok());
    assert!(outcome.candidates >= 1);
    assert_eq!(outcome.failed, 0);
    assert_eq!(outcome.heuristic, schedule::choose(&spec));
    assert_eq!(outcome.checked_elements, outcome.output_elements);
    // Another schedule replaces the heuristic's only when the validation
    // found it faster by the margin.
    if outcome.schedule == outcome.heuristic {
        assert_eq!(outcome.speedup, 1.0);
    } else {
        assert!(outcome.speedup >= 1.0 + tune::CONFIRM_MARGIN, "{}", outcome.speedup);
    }
    assert!(outcome.heuristic_macs_per_cycle > 0.0);
    assert_eq!(outcome.tuned_macs_per_cycle, outcome.heuristic_macs_per_cycle * outcome.speedup);
    check_kernel(&spec, &outcome.schedule, 7);
}

/// The fused depthwise-separable block is tuned as a conv layer is: a
/// space of legal schedules around the heuristic's, every candidate
/// checked against the reference of the two convs, the heuristic replaced
/// only when confirmed faster; and what it returns computes the block.
#[test]
fn the_fused_block_is_tuned_as_a_layer_is() {
    let _turn = serial();
    let block = Dsc::mobilenet_v2((32, 14, 1, 24), 3).unwrap();
    let (dw, pw) = (block.depthwise().spec(), block.pointwise().spec());
    let heuristic = DscSchedule::choose(dw, pw, 2);
    let space = DscSpace::of(dw, pw, 2);
    assert!(space.members().contains(&heuristic));
    assert!(space.members().iter().all(|s| s.legal().is_ok()));
    assert!(space.members().iter().any(|s| s.threads == 2));
    let neighbours = space.neighbours(&heuristic);
    assert!(!neighbours.is_empty());
    for n in &neighbours {
        let (a, b) = (DscSpace::knobs(n), DscSpace::knobs(&heuristic));
        assert_eq!(a.iter().zip(&b).filter(|(x, y)| x != y).count(), 1, "{n:?}");
    }
    let compiler = Compiler::host().unwrap();
    let options = Options { threads: 2, ..options(1500, Search::Local) };
    let outcome = tune::tune_dsc(&compiler, &block, &options, None, &mut |_| {}).unwrap();
    assert_eq!(outcome.heuristic, heuristic);
    assert_eq!(outcome.space, space.members().len());
    assert!(outcome.candidates > 1, "{}", outcome.candidates);
    assert_eq!(outcome.failed, 0);
    assert_eq!(outcome.checked_elements, outcome.output_elements);
    if outcome.schedule == outcome.heuristic {
        assert_eq!(outcome.speedup, 1.0);
    } else {
        assert!(outcome.speedup >= 1.0 + tune::CONFIRM_MARGIN, "{}", outcome.speedup);
    }
    let kernel = DscKernel::compile(&compiler, &block, &outcome.schedule).unwrap();
    let x = random_tensor(5, dw.input_len());
    let mut y = vec![f32::NAN; pw.output_len()];
    kernel.run(&x, &mut y).unwrap();
    let (d, p) = (block.depthwise(), block.pointwise());
    let oracle = Oracle::new(dw, &x, d.weight(), d.bias())
        .and_then(|o| o.then_pointwise(pw, p.weight(), p.bias()))
        .unwrap();
    let verdict = oracle.verify(&y).unwrap();
    assert!(verdict.passed(), "{:?}: {verdict:?}", outcome.schedule);
}

/// A block the fused kernel does not compute (a depthwise kernel past its
/// unrolled taps) is refused before anything is compiled.
#[test]
fn a_block_without_a_fused_kernel_is_not_tuned() {
    let dw = spec(
        r#"{"op": "conv2d", "in_channels": 4, "out_channels": 4, "groups": 4, "height": 12,
            "width": 12, "kernel": 9, "padding": 4}"#,
    );
    let block = Dsc::random(&dw, 6, [Activation::Relu6, Activation::None], 4).unwrap();
    let compiler = Compiler::host().unwrap();
    let refused = tune::tune_dsc(&compiler, &block, &options(500, Search::Auto), None, &mut |_| {});
    match refused {
        Err(Error::Block(why)) => assert!(why.contains("no fused kernel"), "{why}"),
        other => panic!("{:?}", other.map(|o| o.schedule)),
    }
}

#[test]
fn a_budget_below_one_evaluation_or_past_the_clock() {
    let _turn = serial();
    let spec = spec(
        r#"{"op": "conv2d", "in_channels": 32, "out_channels": 32, "height": 28, "width": 28,
            "kernel": 3, "padding": 1}"#,
    );
    // A budget below one evaluation still evaluates the heuristic's.
    let outcome = tune_quietly(&spec, &options(1, Search::Auto), None);
    assert_eq!((outcome.candidates, outcome.schedule), (1, outcome.heuristic));
    // One that time cannot hold is refused.
    let compiler = Compiler::host().unwrap();
    let huge = Options { budget: Duration::MAX, ..Options::default() };
    assert!(tune::tune(&compiler, &spec, &huge, None, &mut |_| {}).is_err());
}

#[test]
fn exhaustive_search_takes_the_space_in_order() {
    let _turn = serial();
    // A 1×1 depthwise layer on a 3×3 image: a few dozen schedules.
    let spec = spec(
        r#"{"op": "conv2d", "in_channels": 4, "out_channels": 4, "height": 3, "width": 3,
            "kernel": 1, "groups": 4}"#,
    );
    let space = Space::of(&spec, 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    let mut log = RecordLog::open(&path).unwrap();
    let outcome = tune_quietly(&spec, &options(2000, Search::Exhaustive), Some(&mut log));
    assert_eq!(outcome.search, Search::Exhaustive);
    let (records, skipped) = records::read(&path).unwrap();
    assert_eq!(skipped, 0);
    let tried: Vec<Schedule> =
        records.iter().filter(|r| !r.phase.starts_with("confirm")).map(|r| r.schedule).collect();
    assert_eq!(tried[0], outcome.heuristic);
    assert_eq!(outcome.candidates, tried.len());
    // After the heuristic's, the members in order (the heuristic's own
    // place skipped), as many as the budget held.
    let members: Vec<Schedule> =
        space.members().iter().copied().filter(|s| *s != outcome.heuristic).collect();
    assert_eq!(tried[1..], members[..tried.len() - 1]);
    assert!(records.iter().all(|r| r.error.is_none()));
}

#[test]
fn records_hold_every_candidate_and_survive_a_torn_line() {
    let _turn = serial();
    let spec = small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    // An earlier run cut short mid-line, and a line of something else.
    std::fs::write(&path, b"not json at all\n{\"workload\": {\"spec\"").unwrap();
    let mut log = RecordLog::open(&path).unwrap();
    let outcome = tune_quietly(&spec, &options(700, Search::Local), Some(&mut log));
    drop(log);
    let (records, skipped) = records::read(&path).unwrap();
    assert_eq!(skipped, 2);
    let evaluated = records.iter().filter(|r| !r.phase.starts_with("confirm")).count();
    assert_eq!(evaluated, outcome.candidates);
    assert_eq!(records[0].phase, "heuristic");
    assert_eq!(records[0].relative, Some(1.0));
    for r in &records {
        assert_eq!(r.workload, tune::Workload::host(&spec, 1));
        assert_eq!(r.layer.as_deref(), Some("small"));
        assert!(r.schedule.legal(&spec).is_ok());
        assert!(r.elapsed_s <= outcome.seconds);
        if r.error.is_none() {
            assert!(r.macs_per_cycle.is_some_and(|m| m > 0.0) && r.runs > 0);
        }
    }
    // Binary garbage is skipped too.
    std::fs::write(&path, [0xff, 0xfe, b'\n', b'{', b'\n']).unwrap();
    assert_eq!(records::read(&path).unwrap(), (vec![], 2));
}

#[test]
fn the_cache_round_trips_and_the_compiler_uses_it() {
    let _turn = serial();
    let other = spec(
        r#"{"op": "conv2d", "in_channels": 3, "out_channels": 5, "height": 9, "width": 9, "kernel": 3}"#,
    );
    let spec = small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("tuning.json");
    let outcome = tune_quietly(&spec, &options(500, Search::Local), None);
    // A different schedule than the heuristic's, so that using it shows.
    let mut entry = outcome.entry(&spec, 1);
    entry.schedule = with_tile(schedule::choose(&spec), 5, 2);
    TuningCache::update(&path, entry.clone()).unwrap();
    let cache = TuningCache::load(&path);
    assert_eq!(cache.entries(), &[entry.clone()]);
    assert_eq!(cache.lookup(&spec, 1), Some(entry.schedule));
    assert_eq!(cache.lookup(&spec, 2), None, "tuned for one thread only");
    // Same shape, another name: the same workload.
    let mut renamed = spec.to_conv_spec();
    renamed.name = Some("other".into());
    assert_eq!(cache.lookup(&renamed.validate().unwrap(), 1), Some(entry.schedule));

    let compiler = Compiler::host().unwrap().with_tuning_cache(&path);
    assert_eq!(compiler.tuned_schedule(&spec, 1), Some(entry.schedule));
    assert_eq!(compiler.schedule_for(&spec, 1), entry.schedule);
    assert_eq!(compiler.compile(&spec).unwrap().schedule(), &entry.schedule);
    assert_eq!(compiler.schedule_for(&other, 1), schedule::choose(&other));
    let jit = convjit::Engine::Jit
        .prepare_with(
            Some(&compiler),
            &spec,
            &random_tensor(1, spec.weight_len()),
            Some(&[0.0; 24]),
            1,
        )
        .unwrap();
    assert_eq!(jit.schedule(), Some(entry.schedule));

    // A second entry replaces the first of the same workload, and keeps others.
    let mut newer = entry.clone();
    newer.schedule = schedule::choose(&spec);
    TuningCache::update(&path, newer.clone()).unwrap();
    TuningCache::update(&path, outcome.entry(&other, 1)).unwrap();
    let cache = TuningCache::load(&path);
    assert_eq!(cache.entries().len(), 2);
    assert_eq!(cache.lookup(&spec, 1), Some(newer.schedule));
}

#[test]
fn corrupt_and_foreign_caches_are_ignored_not_fatal() {
    let _turn = serial();
    let spec = small();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    let entry = tune::Entry {
        schedule: with_pixel_tile(schedule::choose(&spec), 5),
        ..tune_quietly(&spec, &options(300, Search::Random), None).entry(&spec, 1)
    };

    for (n, garbage) in [
        &b"{ not json"[..],
        b"",
        b"[1, 2, 3]",
        &[0xff, 0x00, 0x12][..],
        br#"{"format": "something-else", "version": 1, "entries": []}"#,
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&path, garbage).unwrap();
        let cache = TuningCache::load(&path);
        assert!(cache.entries().is_empty());
        assert_eq!(
            Compiler::host().unwrap().with_tuning_cache(&path).schedule_for(&spec, 1),
            schedule::choose(&spec)
        );
        // Saving a result keeps the unreadable file under the next free
        // backup name, then writes a valid one.
        TuningCache::update(&path, entry.clone()).unwrap();
        assert_eq!(TuningCache::load(&path).lookup(&spec, 1), Some(entry.schedule));
        let backup =
            if n == 0 { "tuning.json.bak".to_string() } else { format!("tuning.json.bak.{n}") };
        assert_eq!(std::fs::read(dir.path().join(backup)).unwrap(), garbage);
    }

    // Entries of another CPU, another version, or that no longer parse are
    // ignored, and kept when the file is written again.
    let mut foreign = entry.clone();
    foreign.workload.cpu = "Some Other CPU".into();
    let mut old = entry.clone();
    old.workload.convjit = "0.0.1".into();
    let text = serde_json::json!({
        "format": "convjit-tuning-cache", "version": 1,
        "entries": [foreign, old, {"workload": 3, "schedule": "fast"}],
    });
    std::fs::write(&path, text.to_string()).unwrap();
    let cache = TuningCache::load(&path);
    assert!(cache.entries().is_empty());
    assert_eq!(cache.lookup(&spec, 1), None);
    TuningCache::update(&path, entry.clone()).unwrap();
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved["entries"].as_array().unwrap().len(), 4);
    assert_eq!(TuningCache::load(&path).lookup(&spec, 1), Some(entry.schedule));

    // A schedule this layer cannot use (edited by hand) is not used.
    let mut illegal = entry.clone();
    illegal.schedule = with_pixel_tile(illegal.schedule, 99);
    TuningCache::update(&path, illegal).unwrap();
    assert_eq!(TuningCache::load(&path).lookup(&spec, 1), None);
    assert_eq!(
        Compiler::host().unwrap().with_tuning_cache(&path).schedule_for(&spec, 1),
        schedule::choose(&spec)
    );

    // A missing file is an empty cache; a directory is an unreadable one.
    assert!(TuningCache::load(&dir.path().join("absent.json")).entries().is_empty());
    assert!(TuningCache::load(dir.path()).entries().is_empty());
}

#[test]
fn threads_are_a_knob_when_more_are_allowed() {
    let _turn = serial();
    let spec = spec(
        r#"{"op": "conv2d", "in_channels": 64, "out_channels": 64, "height": 28, "width": 28,
            "kernel": 3, "padding": 1}"#,
    );
    let space = Space::of(&spec, 2);
    assert!(space.members().iter().any(|s| s.run.threads == 1));
    assert!(
        space.members().iter().any(|s| s.run.threads == 2 && s.run.split == schedule::Split::Items)
    );
    let outcome = tune_quietly(&spec, &Options { threads: 2, ..options(600, Search::Local) }, None);
    assert_eq!(outcome.heuristic, schedule::choose_threaded(&spec, 2));
    assert!(outcome.schedule.run.threads <= 2);
    check_kernel(&spec, &outcome.schedule, 3);
    let compiler = Compiler::host().unwrap();
    let refused = tune::tune(
        &compiler,
        &spec,
        &Options { threads: 0, ..Options::default() },
        None,
        &mut |_| {},
    );
    assert!(refused.is_err());
}

#[test]
fn big_layers_are_verified_on_sampled_planes() {
    let layer = spec(
        r#"{"op": "conv2d", "batch": 3, "in_channels": 64, "out_channels": 80, "height": 40,
            "width": 40, "kernel": 3, "padding": 1}"#,
    );
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let planes = tune::oracle_planes(&layer, 1, &mut rng).expect("past the full-oracle size");
    let channels: std::collections::HashSet<usize> = planes.iter().map(|p| p.1).collect();
    let images: std::collections::HashSet<usize> = planes.iter().map(|p| p.0).collect();
    assert_eq!(images, [0, 2].into());
    for c in (0..12).chain(68..80) {
        assert!(channels.contains(&c), "channel {c} unchecked");
    }
    assert!(channels.len() >= 24 && channels.len() < 80);
    let small_layer = small();
    assert_eq!(tune::oracle_planes(&small_layer, 1, &mut rng), None);
    // With threads sharing channel blocks, the channels where their shares
    // meet are checked; so is every group's tail.
    let grouped = spec(
        r#"{"op": "conv2d", "in_channels": 64, "out_channels": 96, "height": 64, "width": 64,
            "kernel": 3, "padding": 1, "groups": 8}"#,
    );
    let shared = tune::oracle_planes(&grouped, 3, &mut rng).unwrap();
    let checked: std::collections::HashSet<usize> = shared.iter().map(|p| p.1).collect();
    for c in [47, 48, 31, 32, 64, 11, 12, 83, 84] {
        assert!(checked.contains(&c), "channel {c} unchecked");
    }

    // An oracle of planes checks exactly those planes.
    let x = random_tensor(1, layer.input_len());
    let w = random_tensor(2, layer.weight_len());
    let b = random_tensor(3, 80);
    let oracle = convjit::reference::Oracle::of_planes(&layer, &x, &w, Some(&b), &planes).unwrap();
    let full = convjit::reference::conv(&layer, &x, &w, Some(&b)).unwrap();
    let mut y = full.clone();
    assert!(oracle.verify(&y).unwrap().passed());
    assert_eq!(oracle.checked(), planes.len() * 40 * 40);
    let plane = 40 * 40;
    let unchecked = (0..3 * 80).find(|p| !planes.contains(&(p / 80, p % 80))).unwrap();
    y[unchecked * plane] += 1.0;
    assert!(oracle.verify(&y).unwrap().passed(), "an unchecked plane is not checked");
    let (n, c) = planes[planes.len() / 2];
    y[(n * 80 + c) * plane + 7] += 1.0;
    assert!(!oracle.verify(&y).unwrap().passed(), "a checked plane is checked");
    assert!(convjit::reference::Oracle::of_planes(&layer, &x, &w, Some(&b), &[(3, 0)]).is_err());
}

/// A dense 3×3 layer's space holds Winograd's variants — every output
/// tile the transforms are built for, each verified like any member — with
/// the heuristic's among them where it takes Winograd; they are
/// neighbours of one another and of no direct member. So do 1 × 3 and
/// 7 × 1 layers' spaces, with the 1-D transforms.
#[test]
fn the_space_holds_winograd_variants() {
    let layers = [("3", "1", vec![2, 3, 4, 5, 6]), ("[1, 3]", "[0, 1]", vec![2, 3, 4, 5, 6])];
    for (kernel, padding, want) in layers.into_iter().chain([("[7, 1]", "[3, 0]", vec![2])]) {
        let layer = spec(&format!(
            r#"{{"op": "conv2d", "in_channels": 64, "out_channels": 64, "height": 28,
                "width": 28, "kernel": {kernel}, "padding": {padding}}}"#
        ));
        let space = Space::of(&layer, 2);
        let winograd: Vec<Schedule> =
            space.members().iter().filter(|s| s.winograd.is_some()).copied().collect();
        let tiles: std::collections::BTreeSet<usize> =
            winograd.iter().filter_map(|s| s.winograd.map(|w| w.output_tile)).collect();
        assert_eq!(tiles.into_iter().collect::<Vec<_>>(), want, "{kernel}");
        let heuristic = schedule::choose(&layer);
        assert_eq!(heuristic.winograd.is_some(), Isa::Avx512.on_host(), "{}", heuristic.to_json());
        assert!(space.contains(&heuristic), "{}", heuristic.to_json());
        let neighbours = space.neighbours(&winograd[0]);
        assert!(!neighbours.is_empty());
        assert!(neighbours.iter().all(|s| s.winograd.is_some()));
        check_kernel(&layer, &winograd[winograd.len() - 1], 7);
    }
}
