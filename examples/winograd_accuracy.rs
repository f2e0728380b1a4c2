//! How close Winograd's F(m × m, 3 × 3) comes to the exact convolution in
//! f32, on the suite's 3×3 stride-1 layers: the measurement behind the
//! tile sizes docs/correctness.md allows.
//!
//! ```text
//! cargo run --release --example winograd_accuracy -- [--suite FILE]... [--images N]
//! ```
//!
//! For each conv2d layer with a 3×3 kernel, stride 1 and dilation 1 in
//! the suites (default: `suite/layers.json` and `suite/holdout.json`), and
//! for m = 2, 4 and 6, the layer is computed as the Winograd algorithm
//! computes it in f32 — the transformed weights `G g Gᵀ` rounded from f64
//! once, the input tiles transformed in f32, the transformed products
//! summed over the input channels in f32, the output transform in f32 —
//! and compared with the f64 reference on three kinds of data: normal
//! (mean 0, deviation 1, weights scaled by 1/√R), a large mean (inputs
//! 100 + normal) and a large dynamic range (each input normal × 10^u, u
//! uniform in [−3, 3]). Each figure is the largest error over the layer's
//! outputs as a fraction of the tolerance convjit holds every kernel to,
//! `3e-5 · √R · (1 + max|ref|)`, R = (in_channels / groups) · 9: below 1
//! passes. The direct correlation in f32 (same data) is the first column.

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
    let transforms: Vec<Transform> = [2, 4, 6].map(|m| Transform::new(m, 3)).into();
    println!(
        "growth of the error bound over direct: F(2,3) {:.1}, F(4,3) {:.1}, F(6,3) {:.1}",
        transforms[0].growth(),
        transforms[1].growth(),
        transforms[2].growth()
    );
    println!(
        "{:<20} {:<10} {:>8} {:>8} {:>8} {:>8}",
        "layer", "data", "direct", "F(2,3)", "F(4,3)", "F(6,3)"
    );
    for file in &suites {
        for layer in ConvSpec::suite_from_json(&std::fs::read_to_string(file)?)? {
            let spec = layer.validate()?;
            let three =
                spec.kernel() == [3, 3] && spec.stride() == [1, 1] && spec.dilation() == [1, 1];
            if spec.op() != convjit::spec::Op::Conv2d || !three {
                continue;
            }
            for data in ["normal", "mean 100", "range 1e6"] {
                let (x, w, b) = operands(&spec, data);
                let want = reference::conv(&spec, &x, &w, Some(&b))?;
                let r = (spec.in_channels() / spec.groups() * 9) as f64;
                let peak = want.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
                let tolerance = 3e-5 * r.sqrt() * (1.0 + peak);
                let score = |y: &[f32]| {
                    y.iter().zip(&want).map(|(a, b)| f64::from(a - b).abs()).fold(0.0, f64::max)
                        / tolerance
                };
                let direct = score(&direct(&spec, &x, &w, &b));
                let name = spec.name().unwrap_or("-");
                print!("{name:<20} {data:<10} {direct:>8.4}");
                for t in &transforms {
                    print!(" {:>8.4}", score(&winograd(t, &spec, &x, &w, &b)));
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
    let r = (spec.in_channels() / spec.groups() * 9) as f64;
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
    let mut y = vec![0.0f32; spec.output_len()];
    for n in 0..spec.batch() {
        for o in 0..k {
            for (i, j) in (0..oh).flat_map(|i| (0..ow).map(move |j| (i, j))) {
                let mut acc = 0.0f32;
                for c in 0..cg {
                    let ci = o / kg * cg + c;
                    for (p, q) in (0..3).flat_map(|p| (0..3).map(move |q| (p, q))) {
                        let (row, col) = ((i + p) as isize - top, (j + q) as isize - left);
                        acc += w[((o * cg + c) * 3 + p) * 3 + q] * pixel(spec, x, n, ci, row, col);
                    }
                }
                y[((n * k + o) * oh + i) * ow + j] = acc + b[o];
            }
        }
    }
    y
}

/// The layer through F(m, 3) in f32, as described at the top.
fn winograd(t: &Transform, spec: &ValidSpec, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
    let (m, a) = (t.m, t.alpha());
    let Dims { oh, ow, k, cg, kg, top, left } = dims(spec);
    // The transformed weights, from f64 once: U[o][c] is α × α.
    let u: Vec<Vec<f32>> = w
        .chunks_exact(9)
        .map(|g| {
            let g: Vec<f64> = g.iter().map(|&v| f64::from(v)).collect();
            t.kernel(&g).iter().map(|&v| v as f32).collect()
        })
        .collect();
    let mut y = vec![0.0f32; spec.output_len()];
    for n in 0..spec.batch() {
        for (ty, tx) in
            (0..oh.div_ceil(m)).flat_map(|ty| (0..ow.div_ceil(m)).map(move |tx| (ty, tx)))
        {
            // The input tiles of every channel, transformed.
            let v: Vec<Vec<f32>> = (0..spec.in_channels())
                .map(|c| {
                    let d: Vec<f32> = (0..a * a)
                        .map(|e| {
                            let row = (ty * m + e / a) as isize - top;
                            let col = (tx * m + e % a) as isize - left;
                            pixel(spec, x, n, c, row, col)
                        })
                        .collect();
                    t.input(&d)
                })
                .collect();
            for o in 0..k {
                let mut products = vec![0.0f32; a * a];
                for c in 0..cg {
                    let (uc, vc) = (&u[o * cg + c], &v[o / kg * cg + c]);
                    for (acc, (&p, &q)) in products.iter_mut().zip(uc.iter().zip(vc)) {
                        *acc += p * q;
                    }
                }
                let tile = t.output(&products);
                for i in 0..m.min(oh - ty * m) {
                    for j in 0..m.min(ow - tx * m) {
                        y[((n * k + o) * oh + ty * m + i) * ow + tx * m + j] =
                            tile[i * m + j] + b[o];
                    }
                }
            }
        }
    }
    y
}
