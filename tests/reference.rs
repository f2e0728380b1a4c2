//! The reference interpreter, the oracle of every later engine: small cases
//! worked out by hand for each kind of layer, then properties over random
//! specs (the adjoint identity tying conv2d to conv_transpose2d, stride and
//! dilation as sub-sampling and zero-stuffing, and the engine interface).
//!
//! Hand-worked cases use values whose products and sums are exact in f32, so
//! they are compared with tolerance 0.

mod common;

use common::{check, miniature, random_tensor, small_spec, spec};
use convjit::reference::{self, Deviation, compare};
use convjit::{ConvSpec, Engine, Error, Op};
use proptest::prelude::*;

/// Runs the reference and checks the output against `expected` exactly.
fn expect(json: &str, x: &[f32], w: &[f32], b: Option<&[f32]>, expected: &[f32]) {
    let v = spec(json);
    let y = reference::conv(&v, x, w, b).unwrap_or_else(|e| panic!("{json}: {e}"));
    check(json, &v.output_shape(), &y, expected, 0.0);
}

/// 0, 1, 2, ... as f32.
fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32).collect()
}

// ---------------------------------------------------------------------------
// Identities and shifts
// ---------------------------------------------------------------------------

#[test]
fn identity_1x1_reproduces_the_input() {
    let json = r#"{"op":"conv2d","batch":2,"in_channels":3,"out_channels":3,"height":4,"width":5,"kernel":1,"bias":false}"#;
    let x = random_tensor(1, 2 * 3 * 4 * 5);
    // w[oc, ic] = 1 when oc == ic.
    let w = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    expect(json, &x, &w, None, &x);
}

#[test]
fn centred_3x3_identity_with_padding_1_reproduces_the_input() {
    let json = r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":5,"width":4,"kernel":3,"padding":1,"bias":false}"#;
    let x = random_tensor(2, 2 * 5 * 4);
    // w[oc, ic, 1, 1] = 1 when oc == ic, every other tap 0.
    let mut w = vec![0.0; 2 * 2 * 9];
    w[4] = 1.0; // w[0, 0, 1, 1]
    w[3 * 9 + 4] = 1.0; // w[1, 1, 1, 1]
    expect(json, &x, &w, None, &x);
}

#[test]
fn a_single_weight_shifts_the_image() {
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":3,"width":4,"kernel":3,"padding":1,"bias":false}"#;
    // x = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]].
    let x: Vec<f32> = (1..=12).map(|v| v as f32).collect();
    // Tap (0, 0) reads x[oy − 1, ox − 1]: the image moves down and right.
    let mut w = [0.0; 9];
    w[0] = 1.0;
    #[rustfmt::skip]
    let down_right = [
        0.0, 0.0, 0.0, 0.0,
        0.0, 1.0, 2.0, 3.0,
        0.0, 5.0, 6.0, 7.0,
    ];
    expect(json, &x, &w, None, &down_right);
    // Tap (2, 2) reads x[oy + 1, ox + 1]: the image moves up and left.
    let mut w = [0.0; 9];
    w[8] = 1.0;
    #[rustfmt::skip]
    let up_left = [
        6.0, 7.0, 8.0, 0.0,
        10.0, 11.0, 12.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    expect(json, &x, &w, None, &up_left);
    // Tap (1, 0) reads x[oy, ox − 1]: the image moves right only.
    let mut w = [0.0; 9];
    w[3] = 1.0;
    #[rustfmt::skip]
    let right = [
        0.0, 1.0, 2.0, 3.0,
        0.0, 5.0, 6.0, 7.0,
        0.0, 9.0, 10.0, 11.0,
    ];
    expect(json, &x, &w, None, &right);
}

// ---------------------------------------------------------------------------
// Dilation, groups, stride, padding
// ---------------------------------------------------------------------------

#[test]
fn dilation_reads_the_spaced_positions() {
    // x[r, c] = 10·r + c on 6×6; 3×3 kernel dilated by 2 spans 5: output 2×2.
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":6,"width":6,"kernel":3,"dilation":2,"bias":false}"#;
    let x: Vec<f32> = (0..36).map(|i| (10 * (i / 6) + i % 6) as f32).collect();
    // All ones: y[oy, ox] = Σ_{i,j<3} x[oy + 2i, ox + 2j]
    //   = 9·(10·oy + ox) + 3·10·(0 + 2 + 4) + 3·(0 + 2 + 4) = 9·(10·oy + ox) + 198.
    expect(json, &x, &[1.0; 9], None, &[198.0, 207.0, 288.0, 297.0]);
    // Only tap (1, 2): y[oy, ox] = x[oy + 2, ox + 4] = 10·(oy + 2) + ox + 4.
    let mut w = [0.0; 9];
    w[3 + 2] = 1.0;
    expect(json, &x, &w, None, &[24.0, 25.0, 34.0, 35.0]);
    // Dilation [1, 2] with a 2×2 kernel of ones: rows oy, oy + 1; columns ox, ox + 2.
    // Output 5×4; y[0, 0] = x00 + x02 + x10 + x12 = 0 + 2 + 10 + 12 = 24, and each
    // of the four terms grows by 10 per row and 1 per column: y = 24 + 40·oy + 4·ox.
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":6,"width":6,"kernel":2,"dilation":[1,2],"bias":false}"#;
    let want: Vec<f32> = (0..20).map(|i| (24 + 40 * (i / 4) + 4 * (i % 4)) as f32).collect();
    expect(json, &x, &[1.0; 4], None, &want);
}

#[test]
fn groups_combine_only_their_own_channels() {
    // 1×1, 4 → 2 channels in 2 groups: y0 = w0·x0 + w1·x1, y1 = w2·x2 + w3·x3.
    let json = r#"{"op":"conv2d","in_channels":4,"out_channels":2,"height":1,"width":1,"kernel":1,"groups":2,"bias":false}"#;
    expect(json, &[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0, 7.0, 8.0], None, &[17.0, 53.0]);
}

#[test]
fn changing_one_group_leaves_the_other_groups_outputs_untouched() {
    for json in [
        r#"{"op":"conv2d","in_channels":4,"out_channels":6,"height":5,"width":5,"kernel":3,"padding":1,"groups":2}"#,
        r#"{"op":"conv_transpose2d","in_channels":4,"out_channels":6,"height":4,"width":3,"kernel":3,"stride":2,"groups":2}"#,
    ] {
        let v = spec(json);
        let x = random_tensor(3, v.input_len());
        let w = random_tensor(4, v.weight_len());
        let b = random_tensor(5, v.out_channels());
        let y = reference::conv(&v, &x, &w, Some(&b)).unwrap();
        let plane_in = v.height() * v.width();
        let plane_out = v.out_height() * v.out_width();
        for group in 0..2 {
            // Change every input channel of `group` (2 channels each).
            let mut x2 = x.clone();
            for value in &mut x2[group * 2 * plane_in..(group + 1) * 2 * plane_in] {
                *value = -3.0 * *value + 1.0;
            }
            let y2 = reference::conv(&v, &x2, &w, Some(&b)).unwrap();
            // Each group owns 3 output channels.
            let (mine, other) = (group, 1 - group);
            let range = |g: usize| g * 3 * plane_out..(g + 1) * 3 * plane_out;
            check(
                &format!("{json}: outputs of group {other} after changing group {group}"),
                &[3, v.out_height(), v.out_width()],
                &y2[range(other)],
                &y[range(other)],
                0.0,
            );
            let dev = compare(&y2[range(mine)], &y[range(mine)]);
            assert!(dev.max_abs > 0.0, "{json}: outputs of group {mine} did not change");
        }
    }
}

#[test]
fn depthwise_with_channel_multiplier_2() {
    // 2 channels, groups 2, 4 outputs: outputs 0 and 1 read channel 0, 2 and 3 read channel 1.
    // x0 = [[1, 2], [3, 4]], x1 = [[5, 6], [7, 8]]; 2×2 kernels give a 1×1 output.
    let json = r#"{"op":"conv2d","in_channels":2,"out_channels":4,"height":2,"width":2,"kernel":2,"groups":2,"bias":false}"#;
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    #[rustfmt::skip]
    let w = [
        1.0, 0.0, 0.0, 0.0,  // y0 = x0[0, 0] = 1
        0.0, 0.0, 0.0, 1.0,  // y1 = x0[1, 1] = 4
        1.0, 1.0, 1.0, 1.0,  // y2 = 5 + 6 + 7 + 8 = 26
        0.0, 1.0, -1.0, 0.0, // y3 = x1[0, 1] − x1[1, 0] = 6 − 7 = −1
    ];
    expect(json, &x, &w, None, &[1.0, 4.0, 26.0, -1.0]);
    assert_eq!(spec(json).kind(), convjit::Kind::Depthwise);
}

#[test]
fn stride_samples_every_other_position() {
    // 1×1 of weight 1, stride 2 on 5×5 with x[r, c] = 5·r + c: y[i, j] = x[2i, 2j] = 10·i + 2·j.
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":5,"width":5,"kernel":1,"stride":2,"bias":false}"#;
    expect(json, &iota(25), &[1.0], None, &[0.0, 2.0, 4.0, 10.0, 12.0, 14.0, 20.0, 22.0, 24.0]);
    // Stride [2, 3] on 5×7 with x[r, c] = 7·r + c: rows 0, 2, 4, columns 0, 3, 6: y = 14·i + 3·j.
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":5,"width":7,"kernel":1,"stride":[2,3],"bias":false}"#;
    expect(json, &iota(35), &[1.0], None, &[0.0, 3.0, 6.0, 14.0, 17.0, 20.0, 28.0, 31.0, 34.0]);
    // 2×2 of ones, stride 2 on 4×4 = 0..16: sums of the four 2×2 blocks.
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":4,"width":4,"kernel":2,"stride":2,"bias":false}"#;
    // 0+1+4+5 = 10, 2+3+6+7 = 18, 8+9+12+13 = 42, 10+11+14+15 = 50.
    expect(json, &iota(16), &[1.0; 4], None, &[10.0, 18.0, 42.0, 50.0]);
}

#[test]
fn asymmetric_padding_top_left_bottom_right() {
    // [t, l, b, r] = [2, 0, 0, 1] around [[1, 2], [3, 4]] with a 1×1 identity: 4×3.
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":1,"padding":[2,0,0,1],"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 0.0,
        0.0, 0.0, 0.0,
        1.0, 2.0, 0.0,
        3.0, 4.0, 0.0,
    ];
    expect(json, &[1.0, 2.0, 3.0, 4.0], &[1.0], None, &want);
    // [1, 0, 0, 1] with a 2×2 of ones: the padded input is [[0, 0, 0], [1, 2, 0], [3, 4, 0]].
    let json = r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":2,"padding":[1,0,0,1],"bias":false}"#;
    // 0+0+1+2 = 3, 0+0+2+0 = 2, 1+2+3+4 = 10, 2+0+4+0 = 6.
    expect(json, &[1.0, 2.0, 3.0, 4.0], &[1.0; 4], None, &[3.0, 2.0, 10.0, 6.0]);
}

// ---------------------------------------------------------------------------
// Bias and activations
// ---------------------------------------------------------------------------

/// 1 → 2 channels, 1×1 weights [1, −1], bias [1, −0.5], batch 2 of 1×6:
/// pre-activation channel 0 = x + 1, channel 1 = −x − 0.5.
fn activation_case(activation: &str, expected: &[f32]) {
    let json = format!(
        r#"{{"op":"conv2d","batch":2,"in_channels":1,"out_channels":2,"height":1,"width":6,"kernel":1,{activation}}}"#
    );
    let inf = f32::INFINITY;
    let x = [-3.0, -0.5, 0.0, 2.0, 7.0, f32::NAN, inf, -inf, 0.25, -1.0, 5.5, -7.0];
    expect(&json, &x, &[1.0, -1.0], Some(&[1.0, -0.5]), expected);
}

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

#[test]
fn bias_without_activation() {
    #[rustfmt::skip]
    let pre = [
        -2.0, 0.5, 1.0, 3.0, 8.0, NAN,     // image 0, channel 0
        2.5, 0.0, -0.5, -2.5, -7.5, NAN,   // image 0, channel 1
        INF, -INF, 1.25, 0.0, 6.5, -6.0,   // image 1, channel 0
        -INF, INF, -0.75, 0.5, -6.0, 6.5,  // image 1, channel 1
    ];
    activation_case(r#""activation":"none""#, &pre);
}

#[test]
fn relu_clamps_below_and_propagates_nan() {
    #[rustfmt::skip]
    let want = [
        0.0, 0.5, 1.0, 3.0, 8.0, NAN,
        2.5, 0.0, 0.0, 0.0, 0.0, NAN,
        INF, 0.0, 1.25, 0.0, 6.5, 0.0,
        0.0, INF, 0.0, 0.5, 0.0, 6.5,
    ];
    activation_case(r#""activation":"relu""#, &want);
}

#[test]
fn relu6_clamps_both_sides_and_propagates_nan() {
    #[rustfmt::skip]
    let want = [
        0.0, 0.5, 1.0, 3.0, 6.0, NAN,
        2.5, 0.0, 0.0, 0.0, 0.0, NAN,
        6.0, 0.0, 1.25, 0.0, 6.0, 0.0,
        0.0, 6.0, 0.0, 0.5, 0.0, 6.0,
    ];
    activation_case(r#""activation":"relu6""#, &want);
}

#[test]
fn leaky_relu_scales_negatives_and_propagates_nan() {
    // Slope 0.25: exact in f32.
    #[rustfmt::skip]
    let want = [
        -0.5, 0.5, 1.0, 3.0, 8.0, NAN,
        2.5, 0.0, -0.125, -0.625, -1.875, NAN,
        INF, -INF, 1.25, 0.0, 6.5, -1.5,
        -INF, INF, -0.1875, 0.5, -1.5, 6.5,
    ];
    activation_case(r#""activation":"leaky_relu","negative_slope":0.25"#, &want);
    // The default slope 0.01: the f32 product x·0.01f32 is rounded once, as
    // the reference's exact f64 product is.
    #[rustfmt::skip]
    let pre = [
        -2.0, 0.5, 1.0, 3.0, 8.0, NAN,
        2.5, 0.0, -0.5, -2.5, -7.5, NAN,
        INF, -INF, 1.25, 0.0, 6.5, -6.0,
        -INF, INF, -0.75, 0.5, -6.0, 6.5,
    ];
    let want: Vec<f32> = pre.iter().map(|&v| if v < 0.0 { v * 0.01 } else { v }).collect();
    assert_eq!(want[0], -0.02);
    activation_case(r#""activation":"leaky_relu""#, &want);
}

// ---------------------------------------------------------------------------
// conv_transpose2d: a one-hot input stamps the kernel
// ---------------------------------------------------------------------------

#[test]
fn transposed_one_hot_reproduces_the_kernel() {
    let k3: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let k2 = [1.0, 2.0, 3.0, 4.0];
    // A single pixel: the output is the kernel.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":3,"bias":false}"#;
    expect(json, &[1.0], &k3, None, &k3);

    // Stride 2, one-hot at (1, 0): the kernel lands at rows 2..5, columns 0..3
    // of the (1·2 + 2 + 1) = 5×5 output.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":3,"stride":2,"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0,
        1.0, 2.0, 3.0, 0.0, 0.0,
        4.0, 5.0, 6.0, 0.0, 0.0,
        7.0, 8.0, 9.0, 0.0, 0.0,
    ];
    expect(json, &[0.0, 0.0, 1.0, 0.0], &k3, None, &want);

    // Padding 1 crops one row/column from each side of the 5×5: output 3×3 =
    // rows/columns 1..4 of the uncropped result, whose kernel sits at 0..3.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":3,"stride":2,"padding":1,"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        5.0, 6.0, 0.0,
        8.0, 9.0, 0.0,
        0.0, 0.0, 0.0,
    ];
    expect(json, &[1.0, 0.0, 0.0, 0.0], &k3, None, &want);

    // Dilation 3 spreads a 2×2 kernel over (0 + 3·1 + 1) = 4×4.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":2,"dilation":3,"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        1.0, 0.0, 0.0, 2.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        3.0, 0.0, 0.0, 4.0,
    ];
    expect(json, &[1.0], &k2, None, &want);

    // output_padding 1 adds a row and a column that nothing reaches: (0 + 1 + 1 + 1) = 3×3.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":2,"stride":2,"output_padding":1,"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        1.0, 2.0, 0.0,
        3.0, 4.0, 0.0,
        0.0, 0.0, 0.0,
    ];
    expect(json, &[1.0], &k2, None, &want);

    // All four at once on a one-hot at (1, 1): tap (i, j) lands at uncropped
    // (1·2 + 2·i, 1·2 + 2·j) ∈ {2, 4}², minus the crop of 1: {1, 3}²,
    // inside the (1·2 − 2 + 2 + 1 + 1) = 4×4 output.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":2,"stride":2,"padding":1,"dilation":2,"output_padding":1,"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        0.0, 0.0, 0.0, 0.0,
        0.0, 1.0, 0.0, 2.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 3.0, 0.0, 4.0,
    ];
    expect(json, &[0.0, 0.0, 0.0, 1.0], &k2, None, &want);

    // Asymmetric crop [t, l, b, r] = [1, 0, 0, 2] of the 5×5 stride-2 result
    // of a one-hot at (0, 0): rows 1..5, columns 0..3.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":3,"stride":2,"padding":[1,0,0,2],"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        4.0, 5.0, 6.0,
        7.0, 8.0, 9.0,
        0.0, 0.0, 0.0,
        0.0, 0.0, 0.0,
    ];
    expect(json, &[1.0, 0.0, 0.0, 0.0], &k3, None, &want);
}

#[test]
fn transposed_channels_and_groups() {
    // 1 → 2 channels: output channel oc is the kernel w[0, oc].
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":2,"height":1,"width":1,"kernel":2,"bias":false}"#;
    let w: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    expect(json, &[1.0], &w, None, &w);
    // 2 → 4 channels in 2 groups, 1×1: w[ic, ocg] = [[1, 2], [3, 4]]; input
    // channel 1 feeds only output channels 2 and 3.
    let json = r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":4,"height":1,"width":1,"kernel":1,"groups":2,"bias":false}"#;
    expect(json, &[0.0, 1.0], &[1.0, 2.0, 3.0, 4.0], None, &[0.0, 0.0, 3.0, 4.0]);
    expect(json, &[1.0, 0.0], &[1.0, 2.0, 3.0, 4.0], None, &[1.0, 2.0, 0.0, 0.0]);
    // Both, with a bias on every output channel.
    let json = r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":4,"height":1,"width":1,"kernel":1,"groups":2}"#;
    expect(
        json,
        &[2.0, -1.0],
        &[1.0, 2.0, 3.0, 4.0],
        Some(&[0.5, 0.25, 1.0, -1.0]),
        &[2.5, 4.25, -2.0, -5.0],
    );
}

#[test]
fn overlapping_transposed_taps_accumulate() {
    // Stride 1, 2×2 ones on a 2×2 input [[1, 2], [3, 4]]: the 3×3 output
    // sums the overlapping stamps.
    let json = r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":2,"bias":false}"#;
    #[rustfmt::skip]
    let want = [
        1.0, 3.0, 2.0,
        4.0, 10.0, 6.0,
        3.0, 7.0, 4.0,
    ];
    expect(json, &[1.0, 2.0, 3.0, 4.0], &[1.0; 4], None, &want);
}

// ---------------------------------------------------------------------------
// Batches and operand checks
// ---------------------------------------------------------------------------

#[test]
fn each_image_of_a_batch_is_independent() {
    for json in [
        r#"{"op":"conv2d","batch":2,"in_channels":4,"out_channels":6,"height":7,"width":6,"kernel":3,"stride":2,"padding":[1,0,2,1],"dilation":[1,2],"groups":2,"activation":"relu"}"#,
        r#"{"op":"conv_transpose2d","batch":2,"in_channels":3,"out_channels":2,"height":4,"width":5,"kernel":[3,2],"stride":[2,3],"padding":[1,0,0,1],"output_padding":[1,2],"activation":"leaky_relu"}"#,
    ] {
        let pair = spec(json);
        let mut one = pair.to_conv_spec();
        one.batch = 1;
        let one = one.validate().unwrap();
        let x = random_tensor(10, pair.input_len());
        let w = random_tensor(11, pair.weight_len());
        let b = random_tensor(12, pair.out_channels());
        let both = reference::conv(&pair, &x, &w, Some(&b)).unwrap();
        let (x0, x1) = x.split_at(one.input_len());
        let y0 = reference::conv(&one, x0, &w, Some(&b)).unwrap();
        let y1 = reference::conv(&one, x1, &w, Some(&b)).unwrap();
        let (both0, both1) = both.split_at(one.output_len());
        check(&format!("{json}: image 0"), &one.output_shape(), both0, &y0, 0.0);
        check(&format!("{json}: image 1"), &one.output_shape(), both1, &y1, 0.0);
        assert!(compare(&y0, &y1).max_abs > 0.0, "{json}: different images gave equal outputs");
    }
}

#[test]
fn operands_of_the_wrong_length_are_refused() {
    let v =
        spec(r#"{"op":"conv2d","in_channels":2,"out_channels":3,"height":4,"width":4,"kernel":3}"#);
    let (x, w, b) = (vec![0.0; v.input_len()], vec![0.0; v.weight_len()], vec![0.0; 3]);
    let short = |n: usize| vec![0.0; n - 1];
    assert!(matches!(
        reference::conv(&v, &short(x.len()), &w, Some(&b)),
        Err(Error::BufferLength { what: "input", expected: 32, found: 31, .. })
    ));
    assert!(matches!(
        reference::conv(&v, &x, &short(w.len()), Some(&b)),
        Err(Error::BufferLength { what: "weight", expected: 54, found: 53, .. })
    ));
    assert!(matches!(
        reference::conv(&v, &x, &w, Some(&[0.0; 4])),
        Err(Error::BufferLength { what: "bias", expected: 3, found: 4, .. })
    ));
    assert!(matches!(reference::conv(&v, &x, &w, None), Err(Error::Bias(_))));
    let nb = spec(
        r#"{"op":"conv2d","in_channels":2,"out_channels":3,"height":4,"width":4,"kernel":3,"bias":false}"#,
    );
    assert!(matches!(reference::conv(&nb, &x, &w, Some(&b)), Err(Error::Bias(_))));
}

#[test]
fn compare_reports_the_worst_element() {
    let expected = [1.0, -4.0, 2.0, 0.0];
    assert_eq!(
        compare(&expected, &expected),
        Deviation { max_abs: 0.0, max_rel: 0.0, worst: None, scale: 4.0 }
    );
    let dev = compare(&[1.0, -4.5, 2.25, 0.0], &expected);
    assert_eq!(dev.worst, Some(1));
    assert_eq!(dev.max_abs, 0.5);
    // Within 0.1 · (1 + 4) but not 0.05 · 5; an output near zero is held
    // to the tolerance absolutely.
    assert!(dev.within(0.1) && !dev.within(0.05));
    let tiny = compare(&[1.1e-4], &[1.0e-4]);
    assert!(tiny.max_rel > 0.09 && tiny.within(1e-4));
    assert_eq!(dev.max_rel, 0.5 / 4.0);
    // NaN meets only NaN; an infinity only the same infinity.
    assert_eq!(compare(&[NAN, INF], &[NAN, INF]).max_abs, 0.0);
    let dev = compare(&[1.0, 0.0], &[1.0, NAN]);
    assert_eq!((dev.max_abs, dev.worst), (f64::INFINITY, Some(1)));
    let dev = compare(&[-INF, 0.0], &[INF, 0.0]);
    assert_eq!((dev.max_abs, dev.worst), (f64::INFINITY, Some(0)));
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// Σ a_i·b_i in f64.
fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum()
}

fn abs(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.abs()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// ⟨conv2d(x; w), y⟩ = ⟨x, conv_transpose2d(y; w)⟩: conv_transpose2d is
    /// the adjoint of conv2d with the same weights, kernel, stride, padding,
    /// dilation and groups, once output_padding restores the conv2d input size.
    /// The two references share no index algebra (one gathers, one scatters).
    #[test]
    fn conv_transpose2d_is_the_adjoint_of_conv2d(
        batch in 1i64..=2,
        (groups, cig, cog) in (1i64..=3, 1i64..=3, 1i64..=3),
        k in [1i64..=4, 1i64..=4],
        s in [1i64..=3, 1i64..=3],
        d in [1i64..=3, 1i64..=3],
        p in [0i64..=3, 0i64..=3, 0i64..=3, 0i64..=3],
        extra in [0i64..=6, 0i64..=6],
        seed in any::<u64>(),
    ) {
        // The input: from the smallest size the dilated kernel fits in, up.
        let size = |a: usize| (d[a] * (k[a] - 1) + 1 - p[a] - p[a + 2]).max(1) + extra[a];
        let mut c = ConvSpec::new(Op::Conv2d, batch, groups * cig, groups * cog, (size(0), size(1)), k);
        c.stride = s.into();
        c.dilation = d.into();
        c.padding = convjit::spec::PaddingSpec::List(p.to_vec());
        c.groups = groups;
        c.bias = false;
        let conv = c.validate().unwrap();

        // The transposed conv maps conv's output space back to its input space.
        let (ho, wo) = (conv.out_height() as i64, conv.out_width() as i64);
        let back = |a: usize, out: i64, input: i64| {
            // output_padding = H − ((H_out − 1)·s − pt − pb + d·(k − 1) + 1), which is < s.
            let op = input - ((out - 1) * s[a] - p[a] - p[a + 2] + d[a] * (k[a] - 1) + 1);
            prop_assert!((0..s[a]).contains(&op), "output_padding {} for stride {}", op, s[a]);
            Ok(op)
        };
        let op = [back(0, ho, size(0))?, back(1, wo, size(1))?];
        let mut t = c.clone();
        t.op = Op::ConvTranspose2d;
        t.in_channels = c.out_channels;
        t.out_channels = c.in_channels;
        t.height = ho;
        t.width = wo;
        t.output_padding = op.into();
        let tconv = t.validate().unwrap();
        prop_assert_eq!(tconv.output_shape(), conv.input_shape());
        prop_assert_eq!(tconv.input_shape(), conv.output_shape());
        prop_assert_eq!(tconv.weight_shape(), conv.weight_shape());

        let x = random_tensor(seed, conv.input_len());
        let w = random_tensor(seed ^ 1, conv.weight_len());
        let y = random_tensor(seed ^ 2, conv.output_len());
        let conv_x = reference::conv(&conv, &x, &w, None).unwrap();
        let tconv_y = reference::conv(&tconv, &y, &w, None).unwrap();
        let lhs = dot(&conv_x, &y);
        let rhs = dot(&x, &tconv_y);

        // Both sides are sums of the same products y_i·x_j·w; call T the sum of
        // their magnitudes, Σ|y|·conv2d(|x|; |w|). Each output element is
        // accumulated in f64 (error ~1e-14 relative) and rounded once to f32,
        // off by at most u = 2^−24 of the sum of its terms' magnitudes; so each
        // inner product is within u·T of the exact value, and the two sides
        // within 2u·T of each other. The tolerance is twice that, 4u·T, for the
        // f64 sums and the rounding of T itself.
        let t_sum = dot(&reference::conv(&conv, &abs(&x), &abs(&w), None).unwrap(), &abs(&y));
        let tolerance = 4.0 * 2f64.powi(-24) * t_sum;
        prop_assert!(
            (lhs - rhs).abs() <= tolerance,
            "⟨conv2d(x), y⟩ = {lhs}, ⟨x, conv_transpose2d(y)⟩ = {rhs}: |difference| {:.3e} > {tolerance:.3e} \
             (conv {conv}, transposed {tconv})",
            (lhs - rhs).abs()
        );
    }

    /// conv2d with stride s is the stride-1 conv2d sampled every s-th row and column.
    #[test]
    fn stride_is_subsampling(v in small_spec(), seed in any::<u64>()) {
        prop_assume!(v.op() == Op::Conv2d && v.stride() != [1, 1]);
        let mut dense = v.to_conv_spec();
        dense.stride = [1, 1].into();
        let dense = dense.validate().unwrap();
        let x = random_tensor(seed, v.input_len());
        let w = random_tensor(seed ^ 1, v.weight_len());
        let b = v.has_bias().then(|| random_tensor(seed ^ 2, v.out_channels()));
        let strided = reference::conv(&v, &x, &w, b.as_deref()).unwrap();
        let full = reference::conv(&dense, &x, &w, b.as_deref()).unwrap();
        let [n, c, ho, wo] = v.output_shape();
        let [_, _, fh, fw] = dense.output_shape();
        let [sh, sw] = v.stride();
        let mut sampled = Vec::with_capacity(v.output_len());
        for plane in 0..n * c {
            for oy in 0..ho {
                for ox in 0..wo {
                    sampled.push(full[(plane * fh + oy * sh) * fw + ox * sw]);
                }
            }
        }
        check(&format!("{v}"), &v.output_shape(), &strided, &sampled, 0.0);
    }

    /// A kernel dilated by d is the dense kernel of size d·(k − 1) + 1 with
    /// zeros between its taps, for both ops.
    #[test]
    fn dilation_is_a_zero_stuffed_kernel(v in small_spec(), seed in any::<u64>()) {
        prop_assume!(v.dilation() != [1, 1]);
        let [kh, kw] = v.kernel();
        let [dh, dw] = v.dilation();
        let (sh, sw) = (dh * (kh - 1) + 1, dw * (kw - 1) + 1);
        let mut stuffed = v.to_conv_spec();
        stuffed.kernel = [sh as i64, sw as i64].into();
        stuffed.dilation = [1, 1].into();
        // Dropping the dilation may make a transposed output_padding illegal.
        let Ok(stuffed) = stuffed.validate() else { return Ok(()); };
        prop_assert_eq!(stuffed.output_shape(), v.output_shape());
        let x = random_tensor(seed, v.input_len());
        let w = random_tensor(seed ^ 1, v.weight_len());
        let b = v.has_bias().then(|| random_tensor(seed ^ 2, v.out_channels()));
        let planes = v.weight_len() / (kh * kw);
        let mut ws = vec![0.0; planes * sh * sw];
        for plane in 0..planes {
            for i in 0..kh {
                for j in 0..kw {
                    ws[(plane * sh + i * dh) * sw + j * dw] = w[(plane * kh + i) * kw + j];
                }
            }
        }
        let dilated = reference::conv(&v, &x, &w, b.as_deref()).unwrap();
        let dense = reference::conv(&stuffed, &x, &ws, b.as_deref()).unwrap();
        check(&format!("{v}"), &v.output_shape(), &dilated, &dense, 0.0);
    }

    /// Every engine writes exactly output_len values, agrees with the
    /// reference, and refuses buffers of the wrong length; compare() of an
    /// output with itself is zero, NaN included.
    #[test]
    fn engines_fill_output_len_and_match_the_reference(v in small_spec(), seed in any::<u64>(), nan in any::<bool>()) {
        let mut x = random_tensor(seed, v.input_len());
        if nan {
            let at = seed as usize % x.len();
            x[at] = f32::NAN;
        }
        let w = random_tensor(seed ^ 1, v.weight_len());
        let b = v.has_bias().then(|| random_tensor(seed ^ 2, v.out_channels()));
        let want = reference::conv(&v, &x, &w, b.as_deref()).unwrap();
        prop_assert_eq!(want.len(), v.output_len());
        let scale = want.iter().filter(|e| e.is_finite()).fold(0.0f64, |m, &e| m.max(f64::from(e).abs()));
        prop_assert_eq!(compare(&want, &want), Deviation { max_abs: 0.0, max_rel: 0.0, worst: None, scale });
        prop_assert_eq!(compare(&want, &want.clone()).max_abs, 0.0);

        for &engine in Engine::ALL {
            let layer = engine.prepare(&v, &w, b.as_deref()).unwrap();
            prop_assert_eq!(layer.spec(), &v);
            // A sentinel shows every element was written.
            let mut y = vec![12345.0f32; v.output_len()];
            layer.run(&x, &mut y).unwrap();
            if engine == Engine::Reference {
                check(&format!("{engine} on {v}"), &v.output_shape(), &y, &want, 0.0);
            } else {
                // f32 accumulation in any order: the reduction-length bound.
                let verdict = reference::verify(&v, &x, &w, b.as_deref(), &y).unwrap();
                prop_assert!(verdict.passed(), "{engine} on {v}: {verdict:?}");
            }

            let mut long = vec![0.0; v.output_len() + 1];
            let refused = layer.run(&x, &mut long);
            prop_assert!(matches!(refused, Err(Error::BufferLength { what: "output", .. })), "{:?}", refused);
            let mut short = vec![0.0; v.output_len() - 1];
            let refused = layer.run(&x, &mut short);
            prop_assert!(matches!(refused, Err(Error::BufferLength { what: "output", .. })), "{:?}", refused);
            let refused = layer.run(&x[1..], &mut y);
            prop_assert!(matches!(refused, Err(Error::BufferLength { what: "input", .. })), "{:?}", refused);
            let refused = engine.prepare(&v, &w[1..], b.as_deref());
            prop_assert!(matches!(refused, Err(Error::BufferLength { what: "weight", .. })), "weight");
        }
    }
}

#[test]
fn engine_names_parse() {
    for &engine in Engine::ALL {
        assert_eq!(engine.to_string().parse::<Engine>().unwrap(), engine);
    }
    assert!(
        matches!("jit!".parse::<Engine>(), Err(Error::UnknownEngine { name, .. }) if name == "jit!")
    );
    assert!(Engine::ALL.contains(&Engine::fastest()));
}

/// The suite's specs are all valid and the reference runs on a shrunken copy
/// of each (same kernel, stride, padding, dilation, groups; fewer channels
/// and pixels) within the tensor sizes the spec promises.
#[test]
fn reference_runs_every_suite_kind_in_miniature() {
    for s in convjit::suite::builtin() {
        let v = miniature(&s, 2, 9);
        let x = random_tensor(1, v.input_len());
        let w = random_tensor(2, v.weight_len());
        let b = random_tensor(3, v.out_channels());
        let y = reference::conv(&v, &x, &w, Some(&b)).unwrap();
        assert_eq!(y.len(), v.output_len());
        assert!(y.iter().all(|e| e.is_finite()), "{v}");
    }
}
