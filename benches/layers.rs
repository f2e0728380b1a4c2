//! Criterion benchmarks of every built-in suite layer (`suite/layers.json`,
//! the layers of `shared/bench/layers.json`): one group per layer, named
//! after it, with the jit, naive and im2col engines in it and throughput in
//! MACs (`macs_valid`), so criterion reports MAC/s.
//!
//! `cargo bench --bench layers` runs them all; `cargo bench --bench layers --
//! resnet50_3x3` one layer. `convjit bench` reports the same comparison in
//! MACs per TSC cycle against the measured ceiling.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use convjit::{Complexity, Engine, suite};

fn layers(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let mut tensor = |len| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0..1.0)).collect() };
    for spec in suite::builtin() {
        let spec = spec.validate().expect("the built-in suite is valid");
        let name = spec.name().unwrap_or("layer").to_string();
        let (x, w) = (tensor(spec.input_len()), tensor(spec.weight_len()));
        let b = spec.has_bias().then(|| tensor(spec.out_channels()));
        let mut y = vec![0.0f32; spec.output_len()];
        let mut group = c.benchmark_group(&name);
        group
            .throughput(Throughput::Elements(Complexity::of(&spec).macs_valid))
            // The naive engine takes up to seconds per run on the big layers.
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2));
        for engine in [Engine::Jit, Engine::Naive, Engine::Im2col] {
            let layer = engine.prepare(&spec, &w, b.as_deref()).expect("prepare");
            group.bench_function(BenchmarkId::from_parameter(engine), |bench| {
                bench.iter(|| layer.run(&x, &mut y).expect("run"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, layers);
criterion_main!(benches);
