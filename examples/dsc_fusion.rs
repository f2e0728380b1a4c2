//! Times the fused depthwise-separable kernel against the unfused pair
//! (two JIT kernels through the whole intermediate tensor) on MobileNetV2's
//! depthwise-separable shapes, in one process, in paired rounds.
//!
//! ```text
//! cargo run --release --example dsc_fusion -- [--runs N] [--threads N] [--tune SECONDS] [--shape C,SIZE,STRIDE,OUT]... [SCHEDULE-JSON]
//! ```
//!
//! `--tune SECONDS` first tunes each block's fused kernel for that long
//! (`tune::tune_dsc`, on up to `--threads` threads) and times the tuned
//! schedule; it prints the tuner's confirmed speedup over the heuristic's.
//!
//! `--shape` replaces the MobileNetV2 shapes with others: a depthwise 3×3
//! over C channels of SIZE² with STRIDE, then a pointwise conv to OUT.
//!
//! SCHEDULE-JSON changes fields of the fused kernel's heuristic schedule,
//! e.g. `'{"band_rows":14}'`. Figures are MACs (both convs' `macs_valid`) per
//! TSC tick of the median run, and the median over rounds of the unfused
//! time over the fused time in the same round (above 1: fusion is faster).

use convjit::blocks::dsc::{DscKernel, MOBILENET_V2};
use convjit::blocks::{Dsc, DscMode};
use convjit::codegen::dsc::DscSchedule;
use convjit::tune::{self, Options, Search};
use convjit::{Compiler, Complexity, timing};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut runs, mut threads, mut overrides) = (31usize, 1usize, None::<serde_json::Value>);
    let mut tune_s = None::<f64>;
    let mut shapes = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().ok_or("--runs needs a number")?.parse()?,
            "--threads" => threads = args.next().ok_or("--threads needs a number")?.parse()?,
            "--tune" => tune_s = Some(args.next().ok_or("--tune needs seconds")?.parse()?),
            "--shape" => {
                let text = args.next().ok_or("--shape needs C,SIZE,STRIDE,OUT")?;
                let v: Vec<usize> = text.split(',').map(str::parse).collect::<Result<_, _>>()?;
                let [c, size, stride, out] = v[..] else {
                    return Err("--shape needs four numbers: C,SIZE,STRIDE,OUT".into());
                };
                shapes.push((c, size, stride, out));
            }
            json => overrides = Some(serde_json::from_str(json)?),
        }
    }
    let compiler = Compiler::host()?;
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>7}{}",
        "block (dw 3×3 → pw)",
        "MMACs",
        "unfused",
        "fused",
        "ratio",
        if tune_s.is_some() { "  tuned over heuristic" } else { "" }
    );
    if runs == 0 {
        return Err("--runs: give at least 1".into());
    }
    if shapes.is_empty() {
        shapes = MOBILENET_V2.to_vec();
    }
    for shape in shapes {
        let (c, size, stride, cout) = shape;
        let block = Dsc::mobilenet_v2(shape, 1)?;
        let dw = block.depthwise().spec().clone();
        let mut schedule = DscSchedule::choose(&dw, block.pointwise().spec(), threads);
        if let Some(o) = &overrides {
            let mut v = serde_json::to_value(schedule)?;
            for (k, x) in o.as_object().ok_or("the schedule overrides must be an object")? {
                v[k] = x.clone();
            }
            schedule = serde_json::from_value(v)?;
        }
        let mut tuned = String::new();
        if let Some(seconds) = tune_s {
            let budget = std::time::Duration::from_secs_f64(seconds);
            let options = Options { budget, search: Search::Auto, threads, seed: 1 };
            let outcome = tune::tune_dsc(&compiler, &block, &options, None, &mut |_| {})?;
            schedule = outcome.schedule;
            tuned = format!("  {:.2}× ({} candidates)", outcome.speedup, outcome.candidates);
        }
        let fused = DscKernel::compile(&compiler, &block, &schedule)?;
        let unfused = block.prepare(DscMode::Unfused, Some(&compiler), threads)?;
        let x = vec![0.5f32; dw.input_len()];
        let mut y = vec![0.0f32; block.pointwise().spec().output_len()];
        let (mut tf, mut tu, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..runs + 2 {
            let mut time = |fused_run: bool| -> Result<u64, convjit::Error> {
                let (r, m) = timing::measure(|| {
                    if fused_run { fused.run(&x, &mut y) } else { unfused.run(&x, &mut y) }
                });
                r?;
                Ok(m.cycles)
            };
            let (f, u) = if round % 2 == 0 {
                let f = time(true)?;
                (f, time(false)?)
            } else {
                let u = time(false)?;
                (time(true)?, u)
            };
            if round >= 2 {
                tf.push(f);
                tu.push(u);
                ratios.push(u as f64 / f as f64);
            }
        }
        let macs =
            Complexity::of(&dw).macs_valid + Complexity::of(block.pointwise().spec()).macs_valid;
        let median = |v: &mut Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        ratios.sort_by(f64::total_cmp);
        println!(
            "{:<24} {:>9.2} {:>9.2} {:>9.2} {:>6.2}×{tuned}",
            format!("{c}ch {size}² s{stride} → {cout}"),
            macs as f64 / 1e6,
            macs as f64 / median(&mut tu) as f64,
            macs as f64 / median(&mut tf) as f64,
            ratios[ratios.len() / 2]
        );
    }
    Ok(())
}
