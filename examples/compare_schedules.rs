//! Times schedules against each other on suite layers, interleaved in one
//! process: the measurement behind each heuristic in `docs/schedules.md`.
//!
//! ```text
//! cargo run --release --example compare_schedules -- [--suite FILE] [--layers a,b] [--runs N] [--relative] SCHEDULE...
//! ```
//!
//! Each SCHEDULE is `heuristic` (what `schedule::choose` picks),
//! `heuristic:N` (what `schedule::choose_threaded` picks for N threads),
//! `direct` (what the heuristic picks where Winograd is not an option),
//! `cache:FILE` (the schedule `convjit tune` saved in that tuning cache for
//! one thread; `-` for layers it does not hold), `winograd:M:PANEL[:N]`
//! (Winograd F(M × M, r × r), or the 1-D F(M, r) of a 1 × r or r × 1
//! kernel, in panels of PANEL tiles on N threads, its
//! batched products as the heuristic schedules them; `-` for layers
//! Winograd does not compute), or a JSON object of the
//! schedule fields to change from the heuristic's, e.g.
//! `'{"algorithm":{"width":{"pixel_vectors":12,"row_tile":1,"reduction_unroll":1}}}'`
//! or `'{"copy":"image"}'` (fields of the typed form replace the heuristic's
//! whole), or in the flat form of older schedule files, e.g.
//! `'{"strategy":"width","oc_vectors":1,"pixel_tile":48}'`. A schedule that is
//! illegal for a layer prints `-`. Figures are MACs (`macs_valid`) per TSC
//! tick of the median of 15 runs (or `--runs N`); with `--relative`, each is
//! the median over the rounds of the first schedule's time over this one's
//! in the same round (above 1: faster than the first), which cancels the
//! host's slow spells better than medians taken apart.

use std::path::Path;

use convjit::schedule::{self, LoopNest, Schedule, Winograd};
use convjit::tune::TuningCache;
use convjit::{Compiler, Complexity, ConvSpec, ValidSpec, suite, timing};

/// Interleaved runs per schedule, unless `--runs` says otherwise.
const RUNS: usize = 15;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut layers, mut only, mut variants) = (suite::builtin(), None::<Vec<String>>, Vec::new());
    let mut runs = RUNS;
    let mut relative = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--suite" => {
                let file = args.next().ok_or("--suite needs a file")?;
                layers = ConvSpec::suite_from_json(&std::fs::read_to_string(file)?)?;
            }
            "--relative" => relative = true,
            "--runs" => runs = args.next().ok_or("--runs needs a number")?.parse()?,
            "--layers" => {
                only = Some(
                    args.next()
                        .ok_or("--layers needs names")?
                        .split(',')
                        .map(String::from)
                        .collect(),
                )
            }
            _ => variants.push(arg),
        }
    }
    if variants.is_empty() {
        variants.push("heuristic".into());
    }
    let compiler = Compiler::host()?;
    print!("{:<18}", "layer");
    for v in 0..variants.len() {
        print!(" {:>8}", format!("#{}", v + 1));
    }
    println!();
    for layer in layers {
        let spec = layer.validate()?;
        let name = spec.name().unwrap_or("-").to_string();
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let figures = time_variants(&compiler, &spec, &variants, runs, relative)?;
        print!("{name:<18}");
        for f in figures {
            match f {
                Some(f) => print!(" {f:>8.2}"),
                None => print!(" {:>8}", "-"),
            }
        }
        println!();
    }
    for (v, text) in variants.iter().enumerate() {
        println!("#{}: {text}", v + 1);
    }
    Ok(())
}

/// The schedule `text` names for `spec` (`None`: a cache without it).
fn variant(spec: &ValidSpec, text: &str) -> Result<Option<Schedule>, Box<dyn std::error::Error>> {
    let heuristic = schedule::choose(spec);
    if text == "heuristic" {
        return Ok(Some(heuristic));
    }
    if text == "direct" {
        return Ok(Some(schedule::choose_direct_for(spec, 1, schedule::Isa::host())));
    }
    if let Some(threads) = text.strip_prefix("heuristic:") {
        return Ok(Some(schedule::choose_threaded(spec, threads.parse()?)));
    }
    if let Some(file) = text.strip_prefix("cache:") {
        return Ok(TuningCache::load(Path::new(file)).lookup(spec, 1));
    }
    if let Some(rest) = text.strip_prefix("winograd:") {
        let knobs: Vec<usize> = rest.split(':').map(str::parse).collect::<Result<_, _>>()?;
        let (config, threads) = match knobs[..] {
            [output_tile, panel] => (Winograd { output_tile, panel }, 1),
            [output_tile, panel, threads] => (Winograd { output_tile, panel }, threads),
            _ => return Err(format!("{text}: not winograd:M:PANEL[:N]").into()),
        };
        return Ok(schedule::winograd_with(spec, config, threads, schedule::Isa::host()));
    }
    let changes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)?;
    // Fields of the flat form change the heuristic's flat view; the typed
    // form's fields replace its own.
    let mut value = match changes.keys().any(|k| FLAT.contains(&k.as_str())) {
        true => flat(&heuristic),
        false => serde_json::to_value(heuristic)?,
    };
    for (k, v) in changes {
        value[k] = v;
    }
    Ok(Some(Schedule::from_json(&value.to_string())?))
}

/// The fields only the flat form of a schedule has.
const FLAT: [&str; 8] = [
    "strategy",
    "oc_vectors",
    "pixel_tile",
    "row_tile",
    "reduction_unroll",
    "loop_order",
    "col_block",
    "interleave",
];

/// `s` in the flat form older schedule files have (which
/// `Schedule::from_json` still reads), so that the commands recorded in the
/// docs with flat fields still run.
fn flat(s: &Schedule) -> serde_json::Value {
    let (loop_order, col_block) = match s.loop_nest {
        LoopNest::ChannelsOuter => ("channels_outer", None),
        LoopNest::RowsOuter => ("rows_outer", None),
        LoopNest::ColumnBlocks(b) => ("rows_outer", Some(b)),
    };
    serde_json::json!({
        "strategy": s.strategy(),
        "oc_vectors": s.oc_vectors(),
        "pixel_tile": s.pixel_tile(),
        "row_tile": s.row_tile(),
        "reduction_unroll": s.reduction_unroll(),
        "loop_order": loop_order,
        "col_block": col_block,
        "interleave": s.interleave(),
        "threads": s.run.threads,
        "split": s.run.split,
        "copy": s.copy,
    })
}

fn time_variants(
    compiler: &Compiler,
    spec: &ValidSpec,
    variants: &[String],
    runs: usize,
    relative: bool,
) -> Result<Vec<Option<f64>>, Box<dyn std::error::Error>> {
    let x = vec![0.5f32; spec.input_len()];
    let w = vec![0.01f32; spec.weight_len()];
    let b = spec.has_bias().then(|| vec![0.1f32; spec.out_channels()]);
    let mut y = vec![0.0f32; spec.output_len()];
    let macs = Complexity::of(spec).macs_valid;
    let mut kernels = Vec::new();
    for text in variants {
        let Some(schedule) = variant(spec, text)?.filter(|s| s.legal(spec).is_ok()) else {
            kernels.push(None);
            continue;
        };
        let kernel = compiler.compile_with(spec, &schedule)?;
        let packed = kernel.pack(&w, b.as_deref())?;
        kernel.run(&x, &packed, &mut y)?; // warm-up
        kernels.push(Some((kernel, packed, Vec::with_capacity(runs))));
    }
    // Interleaved, so that a slow moment of the host hits every variant;
    // the order rotates each round, so none always runs first.
    for round in 0..runs.max(1) {
        let n = kernels.len();
        for k in 0..n {
            if let Some((kernel, packed, cycles)) = &mut kernels[(k + round) % n] {
                let (result, m) = timing::measure(|| kernel.run(&x, packed, &mut y));
                result?;
                cycles.push(m.cycles);
            }
        }
    }
    let first: Option<Vec<u64>> = kernels.first().and_then(|k| k.as_ref()).map(|k| k.2.clone());
    if relative && first.is_none() {
        // Nothing to be relative to on this layer.
        return Ok(vec![None; kernels.len()]);
    }
    Ok(kernels
        .into_iter()
        .map(|k| {
            k.map(|(_, _, cycles)| match (&first, relative) {
                // The first variant's time over this one's, round by round.
                (Some(base), true) => median(
                    base.iter().zip(&cycles).map(|(&b, &c)| b as f64 / c.max(1) as f64).collect(),
                ),
                _ => macs as f64 / median(cycles.iter().map(|&c| c as f64).collect()).max(1.0),
            })
        })
        .collect())
}

/// The median (of an even count, the mean of the two middle values).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}
