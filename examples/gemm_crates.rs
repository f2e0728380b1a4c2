//! Which GEMM crate should the im2col baseline use? Times `gemm` (sarah-ek)
//! and `matrixmultiply` (bluss) on the GEMMs the suite's layers turn into,
//! single-threaded or with the given number of threads.
//!
//! ```text
//! cargo run --release --example gemm_crates -- 1
//! cargo run --release --example gemm_crates -- 2
//! ```
//!
//! The result is recorded in `docs/baselines.md`. matrixmultiply reads its
//! thread count once per process from `MATMUL_NUM_THREADS`, so this program
//! sets that variable from its argument before the first GEMM.

use std::hint::black_box;
use std::time::{Duration, Instant};

use convjit::{Op, ValidSpec, suite};

/// One row-major product C[m×n] = A[m×k] · B[k×n], made `calls` times
/// per layer (once per group and image), as the im2col engine makes it.
struct Shape {
    layer: String,
    m: usize,
    k: usize,
    n: usize,
    calls: usize,
}

/// The GEMMs of a layer: conv2d multiplies the group's weights
/// [out/g × in/g·kh·kw] by its columns [in/g·kh·kw × ho·wo];
/// conv_transpose2d multiplies the transposed weights [out/g·kh·kw × in/g]
/// by the group's input [in/g × h·w] into columns.
fn shape(spec: &ValidSpec) -> Shape {
    let taps = spec.kernel()[0] * spec.kernel()[1];
    let (m, k, n) = match spec.op() {
        Op::Conv2d => {
            (spec.out_per_group(), spec.in_per_group() * taps, spec.out_height() * spec.out_width())
        }
        Op::ConvTranspose2d => {
            (spec.out_per_group() * taps, spec.in_per_group(), spec.height() * spec.width())
        }
    };
    let layer = spec.name().unwrap_or("?").to_string();
    Shape { layer, m, k, n, calls: spec.groups() * spec.batch() }
}

/// The median wall times of one layer's worth of calls of `f` and of `g`,
/// interleaved so that drift in the machine's speed hits both alike.
fn medians(calls: usize, mut f: impl FnMut(), mut g: impl FnMut()) -> (Duration, Duration) {
    let time = |h: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..calls {
            h();
        }
        start.elapsed()
    };
    time(&mut f);
    time(&mut g);
    let (mut tf, mut tg): (Vec<Duration>, Vec<Duration>) =
        (0..REPEATS).map(|_| (time(&mut f), time(&mut g))).unzip();
    tf.sort();
    tg.sort();
    (tf[REPEATS / 2], tg[REPEATS / 2])
}

const REPEATS: usize = 31;

fn main() {
    let threads: usize = std::env::args().nth(1).map_or(1, |a| a.parse().expect("THREADS"));
    assert!(threads >= 1, "THREADS must be at least 1");
    // SAFETY: no other thread exists yet, so nothing reads the environment
    // concurrently.
    unsafe { std::env::set_var("MATMUL_NUM_THREADS", threads.to_string()) };
    let parallelism =
        if threads == 1 { gemm::Parallelism::None } else { gemm::Parallelism::Rayon(threads) };

    println!("threads: {threads}, median of {REPEATS} runs of each layer's GEMMs");
    println!(
        "{:<18} {:>15} {:>6} {:>10} {:>10} {:>8} {:>8}",
        "layer", "m×k×n", "calls", "gemm µs", "mm µs", "gemm GF", "mm GF"
    );
    let (mut total_gemm, mut total_mm) = (Duration::ZERO, Duration::ZERO);
    for layer in suite::builtin() {
        let s = shape(&layer.validate().expect("suite layers are valid"));
        let (m, k, n) = (s.m, s.k, s.n);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        let mut c_gemm = vec![0.0f32; m * n];
        let mut c_mm = vec![0.0f32; m * n];
        let (t_gemm, t_mm) = medians(
            s.calls,
            || {
                // SAFETY: a, b and c hold m·k, k·n and m·n elements, row-major
                // with the strides given; c aliases neither.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c_gemm.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    )
                };
                black_box(&mut c_gemm);
            },
            || {
                // SAFETY: as above.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        k as isize,
                        1,
                        b.as_ptr(),
                        n as isize,
                        1,
                        0.0,
                        c_mm.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                };
                black_box(&mut c_mm);
            },
        );
        assert_eq!(c_gemm, c_mm, "{}: the crates disagree", s.layer);
        total_gemm += t_gemm;
        total_mm += t_mm;
        let flops = 2.0 * (m * k * n * s.calls) as f64;
        println!(
            "{:<18} {:>15} {:>6} {:>10.0} {:>10.0} {:>8.1} {:>8.1}",
            s.layer,
            format!("{m}×{k}×{n}"),
            s.calls,
            t_gemm.as_secs_f64() * 1e6,
            t_mm.as_secs_f64() * 1e6,
            flops / t_gemm.as_secs_f64() / 1e9,
            flops / t_mm.as_secs_f64() / 1e9,
        );
    }
    println!(
        "{:<18} {:>15} {:>6} {:>10.0} {:>10.0}",
        "total",
        "",
        "",
        total_gemm.as_secs_f64() * 1e6,
        total_mm.as_secs_f64() * 1e6
    );
}
