//! How close Winograd's F(m × m, 3 × 3) and the 1-D F(m, 3) and F(m, 7)
//! come to the exact convolution in f32, on the suites' 3×3, 1×3, 3×1,
//! 1×7 and 7×1 stride-1 layers: the measurement behind the tile sizes
//! docs/correctness.md allows.
//!
//! ```text
//! cargo run --release --example winograd_accuracy -- [--suite FILE]... [--images N]
//! ```
//!
//! For each conv2d layer with such a kernel, stride 1 and dilation 1 in
//! the suites (default: `suite/layers.json` and `suite/holdout.json`), and
//! for m = 2, 4 and 6 (those whose input tiles are at most 8 pixels), the
//! layer is computed as the Winograd algorithm computes it in f32 (F(m, r)
//! on each axis of more than one tap) — the transformed weights
//! `G_h g G_wᵀ` rounded from f64
//! once, the input tiles transformed in f32, the transformed products
//! summed over the input channels in f32, the output transform in f32 —
//! and compared with the f64 reference on three kinds of data: normal
//! (mean 0, deviation 1, weights scaled by 1/√R), a large mean (inputs
//! 100 + normal) and a large dynamic range (each input normal × 10^u, u
//! uniform in [−3, 3]). Each figure is the largest error over the layer's
//! outputs as a fraction of the tolerance convjit holds every kernel to,
//! `3e-5 · √R · (1 + max|ref|)`, R = (in_channels / groups) · taps: below
//! 1 passes. The direct correlation in f32 (same data) is the first column.

use convjit::algorithm::winograd::Transform;
use convjit::{ConvSpec, ValidSpec, reference};

/// A small, fixed pseudo-random generator: the figures repeat run to run.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut suites = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--suite" => suites.push(args.next().ok_or("--suite needs a file")?),
            _ => return Err(format!("unknown argument {arg}").into()),
        }
    }
    if suites.is_empty() {
        suites = vec!["suite/layers.json".into(), "suite/holdout.json".into()];
    }
    const TILES: [usize; 3] = [2, 4, 6];
    for kernel in [[3, 3], [1, 3], [1, 7]] {
        let growth: Vec<String> = TILES
            .iter()
            .filter(|&&m| m + kernel[1] - 1 <= 8)
            .map(|&m| {
                let t = Transform::for_kernel(m, kernel);
                format!("{} {:.1}", t.name(), t.growth())
            })
            .collect();
        println!("growth of the error bound over direct: {}", growth.join(", "));
    }
    println!(
        "{:<20} {:<10} {:>8} {:>8} {:>8} {:>8}",
        "layer", "data", "direct", "m = 2", "m = 4", "m = 6"
    );
    for file in &suites {
        for layer in ConvSpec::suite_from_json(&std::fs::read_to_string(file)?)? {
            let spec = layer.validate()?;
            let kernel = spec.kernel();
            let shape = matches!(kernel, [3, 3] | [1, 3] | [3, 1] | [1, 7] | [7, 1]);
            let unit = spec.stride() == [1, 1] && spec.dilation() == [1, 1];
            if spec.op() != convjit::spec::Op::Conv2d || !shape || !unit {
                continue;
            }
            let r = kernel[0].max(kernel[1]);
            for data in ["normal", "mean 100", "range 1e6"] {
                let (x, w, b) = operands(&spec, data);
                let want = reference::conv(&spec, &x, &w, Some(&b))?;
                let taps = (spec.in_channels() / spec.groups() * kernel[0] * kernel[1]) as f64;
                let peak = want.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
                let tolerance = 3e-5 * taps.sqrt() * (1.0 + peak);
                let score = |y: &[f32]| {
                    y.iter().zip(&want).map(|(a, b)| f64::from(a - b).abs()).fold(0.0, f64::max)
                        / tolerance
                };
                let direct = score(&direct(&spec, &x, &w, &b));
                let name = spec.name().unwrap_or("-");
                print!("{name:<20} {data:<10} {direct:>8.4}");
                for m in TILES {
                    if m + r - 1 > 8 {
                        print!(" {:>8}", "-");
                        continue;
                    }
                    let t = Transform::for_kernel(m, kernel);
                    print!(" {:>8.4}", score(&winograd(&t, &spec, &x, &w, &b)));
                }
                println!();
            }
        }
    }
    Ok(())
}

/// Input, weights and bias of `spec` for `data`.
fn operands(spec: &ValidSpec, data: &str) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng(0x2545f4914f6cdd1d);
    let [kh, kw] = spec.kernel();
    let r = (spec.in_channels() / spec.groups() * kh * kw) as f64;
    let x = (0..spec.input_len())
        .map(|_| {
            let v = rng.normal();
            (match data {
                "mean 100" => 100.0 + v,
                "range 1e6" => v * 10f64.powf(6.0 * rng.uniform() - 3.0),
                _ => v,
            }) as f32
        })
        .collect();
    let w = (0..spec.weight_len()).map(|_| (rng.normal() / r.sqrt()) as f32).collect();
    let b = (0..spec.out_channels()).map(|_| rng.normal() as f32).collect();
    (x, w, b)
}

/// The input pixel `(c, y, x)` of image `n`, zero outside it.
fn pixel(spec: &ValidSpec, x: &[f32], n: usize, c: usize, y: isize, col: isize) -> f32 {
    let (h, w) = (spec.height() as isize, spec.width() as isize);
    if y < 0 || col < 0 || y >= h || col >= w {
        return 0.0;
    }
    x[((n * spec.in_channels() + c) * spec.height() + y as usize) * spec.width() + col as usize]
}

/// The sizes both computations use: output rows and columns, output
/// channels, input channels and output channels per group, and the
/// padding above and on the left.
struct Dims {
    oh: usize,
    ow: usize,
    k: usize,
    cg: usize,
    kg: usize,
    top: isize,
    left: isize,
}

fn dims(spec: &ValidSpec) -> Dims {
    let pad = spec.padding();
    Dims {
        oh: spec.out_height(),
        ow: spec.out_width(),
        k: spec.out_channels(),
        cg: spec.in_channels() / spec.groups(),
        kg: spec.out_channels() / spec.groups(),
        top: pad.top as isize,
        left: pad.left as isize,
    }
}

/// The direct correlation in f32, channels outer, taps inner.
fn direct(spec: &ValidSpec, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let Dims { oh, ow, k, cg, kg, top, left } = dims(spec);
    let [kh, kw] = spec.kernel();
    let mut y = vec![0.0f32; spec.output_len()];
    for n in 0..spec.batch() {
        for o in 0..k {
            for (i, j) in (0..oh).flat_map(|i| (0..ow).map(move |j| (i, j))) {
                let mut acc = 0.0f32;
                for c in 0..cg {
                    let ci = o / kg * cg + c;
                    for (p, q) in (0..kh).flat_map(|p| (0..kw).map(move |q| (p, q))) {
                        let (row, col) = ((i + p) as isize - top, (j + q) as isize - left);
                        acc +=
                            w[((o * cg + c) * kh + p) * kw + q] * pixel(spec, x, n, ci, row, col);
                    }
                }
                y[((n * k + o) * oh + i) * ow + j] = acc + b[o];
            }
        }
    }
    y
}

/// The layer through `t` in f32, as described at the top.
fn winograd(t: &Transform, spec: &ValidSpec, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let ([mh, mw], [ah, aw], [kh, kw]) = (t.m(), t.alpha(), t.r());
    let Dims { oh, ow, k, cg, kg, top, left } = dims(spec);
    // The transformed weights, from f64 once: U[o][c] is α_h × α_w.
    let u: Vec<Vec<f32>> = w
        .chunks_exact(kh * kw)
        .map(|g| {
            let g: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
            t.kernel(&g).iter().map(|&v| v as f32).collect()
        })
        .collect();
    let mut y = vec![0.0f32; spec.output_len()];
    for n in 0..spec.batch() {
        for (ty, tx) in
            (0..oh.div_ceil(mh)).flat_map(|ty| (0..ow.div_ceil(mw)).map(move |tx| (ty, tx)))
        {
            // The input tiles of every channel, transformed.
            let v: Vec<Vec<f32>> = (0..spec.in_channels())
                .map(|c| {
                    let d: Vec<f32> = (0..ah * aw)
                        .map(|e| {
                            let row = (ty * mh + e / aw) as isize - top;
                            let col = (tx * mw + e % aw) as isize - left;
                            pixel(spec, x, n, c, row, col)
                        })
                        .collect();
                    t.input(&d)
                })
                .collect();
            for o in 0..k {
                let mut products = vec![0.0f32; ah * aw];
                for c in 0..cg {
                    let (uc, vc) = (&u[o * cg + c], &v[o / kg * cg + c]);
                    for (acc, (&p, &q)) in products.iter_mut().zip(uc.iter().zip(vc)) {
                        *acc += p * q;
                    }
                }
                let tile = t.output(&products);
                for i in 0..mh.min(oh - ty * mh) {
                    for j in 0..mw.min(ow - tx * mw) {
                        y[((n * k + o) * oh + ty * mh + i) * ow + tx * mw + j] =
                            tile[i * mw + j] + b[o];
                    }
                }
            }
        }
    }
    y
}
