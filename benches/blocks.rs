//! Criterion benchmarks of the depthwise-separable block on MobileNetV2's
//! shapes (`blocks::dsc::MOBILENET_V2`): one group per shape with the
//! fused kernel and the unfused pair (two JIT kernels through the whole
//! intermediate tensor) in it, on one and two threads (`fused/1`,
//! `unfused/2`, ...), throughput in MACs (both convs'
//! `macs_valid`), so criterion reports MAC/s.
//!
//! `cargo bench --bench blocks` runs them all; `cargo bench --bench blocks
//! -- mbv2_dw144_56_s1_pw24` one shape. `cargo run --release --example
//! dsc_fusion` times the same pairs interleaved, in MACs per TSC tick.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use convjit::blocks::dsc::MOBILENET_V2;
use convjit::blocks::{Dsc, DscMode};
use convjit::{Compiler, Complexity};

fn blocks(c: &mut Criterion) {
    let compiler = Compiler::host().expect("host compiler");
    for &shape in MOBILENET_V2 {
        let block = Dsc::mobilenet_v2(shape, 1).expect("a MobileNetV2 block is valid");
        let (dw, pw) = (block.depthwise().spec(), block.pointwise().spec());
        let name = dw.name().unwrap_or("dsc").to_string();
        let x: Vec<f32> =
            (0..dw.input_len()).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let mut y = vec![0.0f32; pw.output_len()];
        let mut group = c.benchmark_group(&name);
        group
            .throughput(Throughput::Elements(
                Complexity::of(dw).macs_valid + Complexity::of(pw).macs_valid,
            ))
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for threads in [1, 2] {
            for mode in [DscMode::Fused, DscMode::Unfused] {
                let prepared = block.prepare(mode, Some(&compiler), threads).expect("prepare");
                group.bench_function(BenchmarkId::new(mode.to_string(), threads), |bench| {
                    bench.iter(|| prepared.run(&x, &mut y).expect("run"))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, blocks);
criterion_main!(benches);
