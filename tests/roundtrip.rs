//! Every float convjit writes reads back bit-identical: the tuning cache,
//! the tuning records, spec and model files, and the JSON reports of
//! `bench`, `tune`, `net` and `macs`. The writer prints the shortest
//! decimal that identifies the float and the reader rounds correctly, so a
//! value that makes the round trip is the value that was written — which
//! the cache's exact comparisons and the reports' derived figures rely on.

mod common;

use common::spec;
use convjit::bench::{self, Machine};
use convjit::ceiling::Ceiling;
use convjit::net::{CheckReport, LayerKind, LayerReport, Model, Report as NetReport, Total};
use convjit::schedule;
use convjit::tune::{self, Entry, Record, RecordLog, TimeSplit, TuningCache, Workload, records};
use convjit::{Complexity, ConvSpec, Engine};
use proptest::prelude::*;
use serde::Serialize;
use serde_json::Value;

/// Finite doubles of every kind: any bit pattern (every exponent, the
/// subnormals, both zeros), and the classes proptest draws on purpose.
fn finite() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as class;
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        class::POSITIVE | class::NEGATIVE | class::NORMAL | class::SUBNORMAL | class::ZERO,
    ]
    .prop_filter("finite", |v| v.is_finite())
}

/// Finite singles, the same way.
fn finite_f32() -> impl Strategy<Value = f32> {
    use proptest::num::f32 as class;
    prop_oneof![
        any::<u32>().prop_map(f32::from_bits),
        class::POSITIVE | class::NEGATIVE | class::NORMAL | class::SUBNORMAL | class::ZERO,
    ]
    .prop_filter("finite", |v| v.is_finite())
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

/// Asserts that `read` holds what `written` holds, every float to the bit
/// (`Value`'s own equality takes 0.0 for −0.0).
fn assert_identical(written: &Value, read: &Value, at: &str) {
    match (written, read) {
        (Value::Number(w), Value::Number(r)) if w.is_f64() => {
            assert!(r.is_f64(), "{at}: {w} read back as {r}");
            let (w, r) = (w.as_f64().unwrap(), r.as_f64().unwrap());
            assert!(same(w, r), "{at}: {w:e} read back as {r:e}");
        }
        (Value::Array(w), Value::Array(r)) => {
            assert_eq!(w.len(), r.len(), "{at}");
            for (i, (w, r)) in w.iter().zip(r).enumerate() {
                assert_identical(w, r, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(w), Value::Object(r)) => {
            assert!(w.keys().eq(r.keys()), "{at}: keys {:?} ≠ {:?}", w.keys(), r.keys());
            for (key, w) in w {
                assert_identical(w, &r[key], &format!("{at}.{key}"));
            }
        }
        _ => assert_eq!(written, read, "{at}"),
    }
}

/// Writes `report` as the CLI does and reads it back as a JSON reader
/// would: every float survives.
fn report_round_trips(report: &impl Serialize) {
    let written = serde_json::to_value(report).unwrap();
    let text = serde_json::to_string_pretty(report).unwrap();
    let read: Value = serde_json::from_str(&text).unwrap();
    assert_identical(&written, &read, "report");
}

fn layer() -> convjit::ValidSpec {
    spec(
        r#"{"name": "small", "op": "conv2d", "in_channels": 16, "out_channels": 24,
            "height": 20, "width": 20, "kernel": 3, "padding": 1}"#,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn tuning_cache_entries(tuned in finite(), heuristic in finite(), at in any::<u64>()) {
        let spec = layer();
        let entry = Entry {
            workload: Workload::host(&spec, 1),
            schedule: schedule::choose(&spec),
            macs_per_cycle: tuned,
            heuristic_macs_per_cycle: heuristic,
            candidates: 17,
            tuned_at: at,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tuning.json");
        TuningCache::update(&path, entry.clone()).unwrap();
        let read = TuningCache::load(&path).entries().to_vec();
        prop_assert_eq!(read.len(), 1);
        prop_assert!(same(read[0].macs_per_cycle, tuned), "{:e} → {:e}", tuned, read[0].macs_per_cycle);
        prop_assert!(same(read[0].heuristic_macs_per_cycle, heuristic));
        prop_assert_eq!(&read[0], &entry);
    }

    #[test]
    fn tuning_records(floats in proptest::array::uniform6(finite())) {
        let spec = layer();
        let [elapsed_s, compile_ms, verify_ms, measure_ms, macs_per_cycle, relative] = floats;
        let record = Record {
            workload: Workload::host(&spec, 1),
            layer: Some("small".into()),
            phase: "random".into(),
            schedule: schedule::choose(&spec),
            started_at_ms: 1,
            elapsed_s,
            compile_ms,
            verify_ms,
            measure_ms,
            runs: 3,
            cycles: Some(12345),
            macs_per_cycle: Some(macs_per_cycle),
            relative: Some(relative),
            cut: false,
            error: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        RecordLog::open(&path).unwrap().append(&record).unwrap();
        let (read, skipped) = records::read(&path).unwrap();
        prop_assert_eq!(skipped, 0);
        let r = &read[0];
        let back = [r.elapsed_s, r.compile_ms, r.verify_ms, r.measure_ms,
            r.macs_per_cycle.unwrap(), r.relative.unwrap()];
        for (w, r) in floats.iter().zip(back) {
            prop_assert!(same(*w, r), "{:e} → {:e}", w, r);
        }
    }

    #[test]
    fn spec_and_model_files(slope in finite_f32(), eps in finite()) {
        let mut conv = layer().to_conv_spec();
        conv.activation = convjit::spec::ActivationKind::LeakyRelu;
        conv.negative_slope = Some(slope);
        let read = ConvSpec::from_json(&conv.to_json()).unwrap();
        prop_assert_eq!(read.negative_slope.map(f32::to_bits), Some(slope.to_bits()));

        let model = Model::from_json(&format!(
            r#"{{"name": "m", "input": [1, 3, 8, 8], "layers": [
                {{"kind": "conv", "name": "c", "out_channels": 4, "kernel": 3,
                  "activation": "leaky_relu", "negative_slope": {}}},
                {{"kind": "batchnorm", "name": "bn", "eps": {}}}]}}"#,
            serde_json::to_string(&slope).unwrap(),
            serde_json::to_string(&eps).unwrap(),
        ))
        .unwrap();
        let read = Model::from_json(&model.to_json()).unwrap();
        let (convjit::net::Layer::Conv(c), convjit::net::Layer::Batchnorm(bn)) =
            (&read.layers[0], &read.layers[1])
        else {
            panic!("{read:?}");
        };
        prop_assert_eq!(c.negative_slope.map(f32::to_bits), Some(slope.to_bits()));
        prop_assert_eq!(bn.eps.map(f64::to_bits), Some(eps.to_bits()));
    }

    #[test]
    fn bench_tune_net_and_macs_reports(f in proptest::array::uniform16(finite())) {
        let spec = layer();
        let row = bench::Outcome {
            layer: "small".into(),
            kind: "standard".into(),
            engine: Engine::Jit,
            threads: 1,
            schedule: Some(schedule::choose(&spec)),
            runs: 10,
            median_s: f[0],
            min_s: f[1],
            max_s: f[2],
            spread: f[3],
            median_cycles: 99,
            macs_valid: 3_456_000,
            macs_per_cycle: f[4],
            gflops: f[5],
            pct_of_ceiling: f[6],
            layer_ceiling: f[7],
            compile_ms: f[8],
            prepare_ms: f[9],
            jit_speedup: Some(f[10]),
            max_rel_error: Some(f[11]),
        };
        let ceiling = Ceiling {
            macs_per_cycle: f[12],
            best_macs_per_cycle: f[13],
            worst_macs_per_cycle: f[14],
        };
        report_round_trips(&bench::Report {
            machine: Machine { cpu: "cpu".into(), isa: "x86_64".into(), tsc_hz: f[15] },
            clock: convjit::timing::CLOCK,
            ceiling_macs_per_cycle: f[0],
            ceiling,
            ceiling_isa: convjit::schedule::Isa::Avx512,
            ceiling_f32x4: Ceiling { macs_per_cycle: f[1], ..ceiling },
            threads: 1,
            results: vec![row],
        });

        let heuristic = schedule::choose(&spec);
        report_round_trips(&tune::Outcome {
            layer: "small".into(),
            search: tune::Search::Local,
            space: 100,
            candidates: 10,
            failed: 0,
            cut: 2,
            checked_elements: 9600,
            output_elements: 9600,
            seconds: f[0],
            time: TimeSplit {
                reference_s: f[1],
                compile_s: f[2],
                verify_s: f[3],
                measure_s: f[4],
                confirm_s: f[5],
            },
            heuristic,
            heuristic_macs_per_cycle: f[6],
            schedule: heuristic,
            tuned_macs_per_cycle: f[7],
            speedup: f[8],
        });

        report_round_trips(&NetReport {
            model: "m".into(),
            input: [1, 3, 8, 8],
            output_shape: [1, 4, 8, 8],
            engine: Engine::Jit,
            dsc: Default::default(),
            threads: 1,
            runs: 3,
            compile_s: f[9],
            layers: vec![LayerReport {
                name: "c".into(),
                kind: LayerKind::Conv,
                output_shape: [1, 4, 8, 8],
                params: 112,
                macs: 6912,
                macs_valid: 6000,
                macs_ptflops: 6912,
                median_s: f[10],
                median_cycles: 1000,
                macs_per_cycle: Some(f[11]),
                folded_into: None,
            }],
            total: Total {
                params: 112,
                macs: 6912,
                macs_valid: 6000,
                macs_ptflops: 6912,
                kmac_per_pixel: f[12],
                median_s: f[13],
                median_cycles: 1000,
                macs_per_cycle: f[14],
            },
            check: Some(CheckReport { max_abs: f[15], max_rel: f[0], tolerance: f[1], passed: true }),
        });

        let complexity = Complexity { macs_per_pixel: f[2], ..Complexity::of(&spec) };
        report_round_trips(&complexity);
    }
}

/// The test above is not vacuous: a float parsed without correct rounding
/// comes back changed, and the comparison sees it.
#[test]
fn the_comparison_sees_one_ulp() {
    let written = serde_json::json!({"a": [1.0, {"b": 10.201221761441763}]});
    let read = serde_json::json!({"a": [1.0, {"b": 10.201221761441765}]});
    let caught = std::panic::catch_unwind(|| assert_identical(&written, &read, "r"));
    assert!(caught.is_err());
    let zero = std::panic::catch_unwind(|| {
        assert_identical(&serde_json::json!(0.0), &serde_json::json!(-0.0), "z")
    });
    assert!(zero.is_err());
}
