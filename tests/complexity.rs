//! Complexity (DESIGN.md, contract 4): every layer of the built-in suite
//! against numbers worked out by hand, then properties over random specs:
//! ptflops 0.7.5's formula, a brute-force count of the valid taps, FLOPs,
//! parameters and MACs per pixel.
//!
//! ptflops 0.7.5, PyTorch backend (`ptflops/pytorch_ops.py`,
//! `conv_flops_counter_hook`, registered with `transpose=True` for
//! `nn.ConvTranspose*d`): per position kh·kw·C_in·(C_out/groups), times
//! N·prod(output spatial dims) for a convolution or N·prod(input spatial dims)
//! for a transposed one; plus, with a bias, N·prod(output.shape[1:]) =
//! N·C_out·H_out·W_out for both.

mod common;

use common::small_spec;
use convjit::{Complexity, ConvSpec, Op, ValidSpec};
use proptest::prelude::*;

/// The hand-worked report of one suite layer.
struct Expected {
    name: &'static str,
    macs: u64,
    macs_valid: u64,
    macs_ptflops: u64,
    params: u64,
    macs_per_pixel: f64,
}

// Notation: "valid per axis" is the number of (position, tap) pairs along one
// axis whose tap reads a real input pixel (conv2d) or lands inside the output
// (conv_transpose2d); a 2-D tap is valid when both its row and column are, so
// macs_valid = N · C_out · (C_in/g) · rows · columns for conv2d and
// N · C_in · (C_out/g) · rows · columns for conv_transpose2d.
// For a 3×3 kernel, stride 1, padding 1 on n pixels: 3·n − 2 (the first
// position misses its top tap, the last its bottom tap).
const SUITE: &[Expected] = &[
    // conv2d 64→64 3×3 p1 on 56×56 → 56×56.
    // macs = 64·56·56·64·9 = 115,605,504
    // valid per axis 3·56 − 2 = 166: 64·64·166·166 = 4,096·27,556 = 112,869,376
    // ptflops = 9·64·64 · 3,136 + 64·3,136 = 115,605,504 + 200,704 = 115,806,208
    // params = 64·64·9 + 64 = 36,928; per pixel 115,806,208 / 3,136 = 36,928
    Expected {
        name: "resnet50_3x3",
        macs: 115_605_504,
        macs_valid: 112_869_376,
        macs_ptflops: 115_806_208,
        params: 36_928,
        macs_per_pixel: 36_928.0,
    },
    // conv2d 256→64 1×1 on 56×56: no padding, every tap is valid.
    // macs = 64·3,136·256 = 51,380,224; ptflops + 64·3,136 = 51,580,928
    // params = 64·256 + 64 = 16,448; per pixel 51,580,928 / 3,136 = 16,448
    Expected {
        name: "resnet50_1x1",
        macs: 51_380_224,
        macs_valid: 51_380_224,
        macs_ptflops: 51_580_928,
        params: 16_448,
        macs_per_pixel: 16_448.0,
    },
    // conv2d 3→64 7×7 s2 p3 on 224×224 → floor((224 + 6 − 6 − 1)/2) + 1 = 112.
    // macs = 64·112·112·3·49 = 64·12,544·147 = 118,013,952
    // valid per axis: position o reads rows 2o − 3 .. 2o + 3 of 0..224: o = 0
    // keeps 4 taps, o = 1 keeps 6, o = 2..=110 keep 7 (109 positions), o = 111
    // keeps 5 (219..=223): 4 + 6 + 763 + 5 = 778; 64·3·778² = 192·605,284 = 116,214,528
    // ptflops = 118,013,952 + 64·12,544 = 118,013,952 + 802,816 = 118,816,768
    // params = 64·3·49 + 64 = 9,472; per pixel 118,816,768 / 50,176 = 2,368
    Expected {
        name: "resnet_stem_7x7s2",
        macs: 118_013_952,
        macs_valid: 116_214_528,
        macs_ptflops: 118_816_768,
        params: 9_472,
        macs_per_pixel: 2_368.0,
    },
    // conv2d 144→144 3×3 p1 groups 144 on 56×56 (depthwise, 1 channel per group).
    // macs = 144·3,136·1·9 = 4,064,256; valid 144·1·166² = 144·27,556 = 3,968,064
    // ptflops = 9·144·1·3,136 + 144·3,136 = 4,064,256 + 451,584 = 4,515,840
    // params = 144·9 + 144 = 1,440; per pixel 4,515,840 / 3,136 = 1,440
    Expected {
        name: "mbv2_dw3x3",
        macs: 4_064_256,
        macs_valid: 3_968_064,
        macs_ptflops: 4_515_840,
        params: 1_440,
        macs_per_pixel: 1_440.0,
    },
    // The same with stride 2 → 28×28.
    // macs = 144·784·9 = 1,016,064
    // valid per axis: o reads 2o − 1 .. 2o + 1; o = 0 keeps 2, o = 1..=27 keep 3
    // (o = 27 reads 53..=55): 2 + 81 = 83; 144·83² = 144·6,889 = 992,016
    // ptflops = 1,016,064 + 144·784 = 1,016,064 + 112,896 = 1,128,960
    // params 1,440; per pixel 1,128,960 / 3,136 = 360
    Expected {
        name: "mbv2_dw3x3_s2",
        macs: 1_016_064,
        macs_valid: 992_016,
        macs_ptflops: 1_128_960,
        params: 1_440,
        macs_per_pixel: 360.0,
    },
    // conv2d 144→24 1×1 on 56×56.
    // macs = 24·3,136·144 = 10,838,016; ptflops + 24·3,136 = 10,838,016 + 75,264 = 10,913,280
    // params = 24·144 + 24 = 3,480; per pixel 3,480
    Expected {
        name: "mbv2_pw_144to24",
        macs: 10_838_016,
        macs_valid: 10_838_016,
        macs_ptflops: 10_913_280,
        params: 3_480,
        macs_per_pixel: 3_480.0,
    },
    // conv2d 32→192 1×1 on 112×112.
    // macs = 192·12,544·32 = 77,070,336; ptflops + 192·12,544 = 77,070,336 + 2,408,448 = 79,478,784
    // params = 192·32 + 192 = 6,336; per pixel 79,478,784 / 12,544 = 6,336
    Expected {
        name: "mbv2_pw_32to192",
        macs: 77_070_336,
        macs_valid: 77_070_336,
        macs_ptflops: 79_478_784,
        params: 6_336,
        macs_per_pixel: 6_336.0,
    },
    // conv2d 128→128 3×3 p1 groups 32 (4 channels per group) on 56×56.
    // macs = 128·3,136·4·9 = 14,450,688; valid 128·4·166² = 512·27,556 = 14,108,672
    // ptflops = 9·128·4·3,136 + 128·3,136 = 14,450,688 + 401,408 = 14,852,096
    // params = 128·4·9 + 128 = 4,736; per pixel 4,736
    Expected {
        name: "resnext_g32_3x3",
        macs: 14_450_688,
        macs_valid: 14_108_672,
        macs_ptflops: 14_852_096,
        params: 4_736,
        macs_per_pixel: 4_736.0,
    },
    // conv2d 256→256 3×3 p2 d2 on 33×33 → 33×33.
    // macs = 256·1,089·256·9 = 589,824·1,089 = 642,318,336
    // valid per axis: o reads o − 2, o, o + 2 of 0..33: o = 0, 1, 31, 32 keep 2,
    // the other 29 keep 3: 8 + 87 = 95; 256·256·95² = 65,536·9,025 = 591,462,400
    // ptflops = 642,318,336 + 256·1,089 = 642,318,336 + 278,784 = 642,597,120
    // params = 589,824 + 256 = 590,080; per pixel 590,080
    Expected {
        name: "deeplab_dil2_3x3",
        macs: 642_318_336,
        macs_valid: 591_462_400,
        macs_ptflops: 642_597_120,
        params: 590_080,
        macs_per_pixel: 590_080.0,
    },
    // conv2d 64→64 1×3 p[0, 1] on 56×56.
    // macs = 64·3,136·64·3 = 38,535,168; valid: rows 56 (1 tap each), columns 166:
    // 64·64·56·166 = 4,096·9,296 = 38,076,416
    // ptflops = 38,535,168 + 200,704 = 38,735,872; params = 64·64·3 + 64 = 12,352
    Expected {
        name: "acnet_1x3",
        macs: 38_535_168,
        macs_valid: 38_076_416,
        macs_ptflops: 38_735_872,
        params: 12_352,
        macs_per_pixel: 12_352.0,
    },
    // conv2d 64→64 3×1 p[1, 0]: the transpose of the previous, same counts.
    Expected {
        name: "acnet_3x1",
        macs: 38_535_168,
        macs_valid: 38_076_416,
        macs_ptflops: 38_735_872,
        params: 12_352,
        macs_per_pixel: 12_352.0,
    },
    // conv_transpose2d 128→64 4×4 s2 p1 on 32×32 → 31·2 − 2 + 3 + 1 = 64.
    // macs = 128·1,024·64·16 = 134,217,728
    // valid per axis: input i lands on 2i − 1 .. 2i + 2 of 0..64: i = 0 and
    // i = 31 (61..=64) keep 3, the other 30 keep 4: 6 + 120 = 126;
    // 128·64·126² = 8,192·15,876 = 130,056,192
    // ptflops = 16·128·64 · N·H·W (1,024) + 64·64·64 = 134,217,728 + 262,144 = 134,479,872
    // params = 128·64·16 + 64 = 131,136; per pixel 134,479,872 / 1,024 = 131,328
    Expected {
        name: "dcgan_tconv4x4s2",
        macs: 134_217_728,
        macs_valid: 130_056_192,
        macs_ptflops: 134_479_872,
        params: 131_136,
        macs_per_pixel: 131_328.0,
    },
    // conv_transpose2d 128→64 2×2 s2 on 64×64 → 128×128; no crop, every tap lands.
    // macs = 128·4,096·64·4 = 134,217,728
    // ptflops = 134,217,728 + 64·16,384 = 134,217,728 + 1,048,576 = 135,266,304
    // params = 128·64·4 + 64 = 32,832; per pixel 135,266,304 / 4,096 = 33,024
    Expected {
        name: "unet_tconv2x2s2",
        macs: 134_217_728,
        macs_valid: 134_217_728,
        macs_ptflops: 135_266_304,
        params: 32_832,
        macs_per_pixel: 33_024.0,
    },
    // conv2d 64→64 3×3 p1 on 128×128.
    // macs = 64·64·9·16,384 = 603,979,776
    // valid per axis 3·128 − 2 = 382: 4,096·382² = 4,096·145,924 = 597,704,704
    // ptflops = 603,979,776 + 64·16,384 = 603,979,776 + 1,048,576 = 605,028,352
    // params 36,928; per pixel 605,028,352 / 16,384 = 36,928
    Expected {
        name: "jvet_lf_3x3",
        macs: 603_979_776,
        macs_valid: 597_704_704,
        macs_ptflops: 605_028_352,
        params: 36_928,
        macs_per_pixel: 36_928.0,
    },
    // conv2d batch 8, 128→128 3×3 p1 on 28×28.
    // macs = 8·784·128·128·9 = 6,272·147,456 = 924,844,032
    // valid per axis 3·28 − 2 = 82: 8·128·128·82² = 131,072·6,724 = 881,328,128
    // ptflops = 924,844,032 + 8·128·784 = 924,844,032 + 802,816 = 925,646,848
    // params = 147,456 + 128 = 147,584; per pixel 925,646,848 / (8·784) = 147,584
    Expected {
        name: "resnet_3x3_b8",
        macs: 924_844_032,
        macs_valid: 881_328_128,
        macs_ptflops: 925_646_848,
        params: 147_584,
        macs_per_pixel: 147_584.0,
    },
];

#[test]
fn every_suite_layer_matches_the_hand_count() {
    let suite = convjit::suite::builtin();
    let names: Vec<_> = suite.iter().map(|s| s.name.as_deref().unwrap_or("?")).collect();
    let want: Vec<_> = SUITE.iter().map(|e| e.name).collect();
    assert_eq!(names, want, "the suite changed: add the new layers' hand counts here");
    for (s, e) in suite.iter().zip(SUITE) {
        let c = Complexity::of(&s.validate().unwrap());
        let name = e.name;
        assert_eq!(c.macs, e.macs, "{name}: macs");
        assert_eq!(c.macs_valid, e.macs_valid, "{name}: macs_valid");
        assert_eq!(c.macs_ptflops, e.macs_ptflops, "{name}: macs_ptflops");
        assert_eq!(c.flops, 2 * e.macs, "{name}: flops");
        assert_eq!(c.params, e.params, "{name}: params");
        assert_eq!(c.macs_per_pixel, e.macs_per_pixel, "{name}: macs_per_pixel");
    }
}

#[test]
fn bias_off_drops_bias_from_ptflops_and_params() {
    let with = |bias: bool| {
        let mut s = ConvSpec::new(Op::ConvTranspose2d, 2, 4, 6, (5, 7), [3, 2]);
        s.stride = [2, 3].into();
        s.bias = bias;
        Complexity::of(&s.validate().unwrap())
    };
    let (on, off) = (with(true), with(false));
    // Output 2·(5 − 1) + 2 + 1 = 11 by 3·(7 − 1) + 1 + 1 = 20.
    assert_eq!(on.macs_ptflops - off.macs_ptflops, 2 * 6 * 11 * 20);
    assert_eq!(on.params - off.params, 6);
    assert_eq!((on.macs, on.macs_valid), (off.macs, off.macs_valid));
    // ptflops without bias: 3·2·4·6 per input position, 2·5·7 positions.
    assert_eq!(off.macs_ptflops, 3 * 2 * 4 * 6 * 2 * 5 * 7);
}

#[test]
fn counts_near_the_tensor_limits_do_not_overflow() {
    // 2^24 input channels on one pixel, padded by 2047 on each side, into
    // 2^7 outputs through a 1×1 kernel: weight 2^31 elements (the limit),
    // output 2^7·4,095² = 2,146,435,200 (just under 2^31); macs ≈ 2^55.
    let json = r#"{"op":"conv2d","in_channels":16777216,"out_channels":128,"height":1,"width":1,"kernel":1,"padding":2047}"#;
    let v = common::spec(json);
    let c = Complexity::of(&v);
    let (hw, cin, cout) = (4095u128 * 4095, 1u128 << 24, 128u128);
    assert_eq!(u128::from(c.macs), cout * hw * cin);
    assert_eq!(u128::from(c.macs_ptflops), cin * cout * hw + cout * hw);
    assert_eq!(u128::from(c.flops), 2 * cout * hw * cin);
    // Only the one real pixel is ever read.
    assert_eq!(u128::from(c.macs_valid), cout * cin);
    assert_eq!(u128::from(c.params), cout * cin + cout);
}

/// What ptflops 0.7.5 reports for the layer, computed in u128.
fn ptflops(v: &ValidSpec) -> u128 {
    let u = |x: usize| x as u128;
    let [kh, kw] = v.kernel();
    let per_position = u(kh * kw) * u(v.in_channels()) * u(v.out_channels() / v.groups());
    let positions = match v.op() {
        Op::Conv2d => u(v.batch() * v.out_height() * v.out_width()),
        Op::ConvTranspose2d => u(v.batch() * v.height() * v.width()),
    };
    let bias = if v.has_bias() {
        u(v.batch() * v.out_channels() * v.out_height() * v.out_width())
    } else {
        0
    };
    per_position * positions + bias
}

/// Specs larger than `small_spec` (no tensors are made): up to 64 channels
/// per group, 8 groups, 7×7 kernels, 80×80 inputs.
fn medium_spec() -> impl Strategy<Value = ValidSpec> {
    (
        (any::<bool>(), 1i64..=4, 1i64..=8, 1i64..=64, 1i64..=64),
        ([1i64..=7, 1i64..=7], [1i64..=4, 1i64..=4], [1i64..=4, 1i64..=4]),
        ([0i64..=4, 0i64..=4, 0i64..=4, 0i64..=4], [1i64..=80, 1i64..=80], [0i64..=3, 0i64..=3]),
        any::<bool>(),
    )
        .prop_filter_map(
            "invalid",
            |((transposed, n, g, cig, cog), (k, s, d), (p, hw, op), bias)| {
                let op_kind = if transposed { Op::ConvTranspose2d } else { Op::Conv2d };
                let mut spec = ConvSpec::new(op_kind, n, g * cig, g * cog, (hw[0], hw[1]), k);
                spec.stride = s.into();
                spec.dilation = d.into();
                spec.padding = convjit::spec::PaddingSpec::List(p.to_vec());
                spec.groups = g;
                spec.output_padding = if transposed { op } else { [0, 0] }.into();
                spec.bias = bias;
                spec.validate().ok()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Every count against its formula: ptflops 0.7.5, the dense count, FLOPs,
    /// params and MACs per pixel.
    #[test]
    fn counts_follow_their_formulas(v in medium_spec()) {
        let c = Complexity::of(&v);
        let u = |x: usize| x as u128;
        let [kh, kw] = v.kernel();
        let taps = u(kh * kw);
        prop_assert_eq!(u128::from(c.macs_ptflops), ptflops(&v), "{}", v);
        let macs = match v.op() {
            Op::Conv2d => u(v.output_len()) * u(v.in_per_group()) * taps,
            Op::ConvTranspose2d => u(v.input_len()) * u(v.out_per_group()) * taps,
        };
        prop_assert_eq!(u128::from(c.macs), macs, "{}", v);
        prop_assert_eq!(c.flops, 2 * c.macs);
        prop_assert!(c.macs_valid <= c.macs, "{}", v);
        let bias = if v.has_bias() { u(v.out_channels()) } else { 0 };
        prop_assert_eq!(u128::from(c.params), u(v.weight_len()) + bias);
        let pixels = (v.batch() * v.height() * v.width()) as f64;
        prop_assert_eq!(c.macs_per_pixel, c.macs_ptflops as f64 / pixels);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// macs_valid counts, one by one, the multiply-adds of conv2d whose tap
    /// reads a real input pixel, and of conv_transpose2d whose product lands
    /// inside the kept output; macs counts them all.
    #[test]
    fn macs_valid_matches_a_brute_force_count(v in small_spec()) {
        let [kh, kw] = v.kernel();
        let [sh, sw] = v.stride();
        let [dh, dw] = v.dilation();
        let p = v.padding();
        let (pt, pl) = (p.top as i64, p.left as i64);
        let (mut valid, mut all) = (0u64, 0u64);
        let (positions, limits, per_position_channels) = match v.op() {
            // Each output pixel of each output channel reads (C_in/g)·kh·kw taps.
            Op::Conv2d => (
                [v.out_height(), v.out_width()],
                [v.height() as i64, v.width() as i64],
                v.out_channels() * v.in_per_group(),
            ),
            // Each input pixel of each input channel writes (C_out/g)·kh·kw products.
            Op::ConvTranspose2d => (
                [v.height(), v.width()],
                [v.out_height() as i64, v.out_width() as i64],
                v.in_channels() * v.out_per_group(),
            ),
        };
        for _ in 0..v.batch() {
            for _ in 0..per_position_channels {
                for y in 0..positions[0] {
                    for x in 0..positions[1] {
                        for i in 0..kh {
                            for j in 0..kw {
                                all += 1;
                                let row = (y * sh + i * dh) as i64 - pt;
                                let col = (x * sw + j * dw) as i64 - pl;
                                if (0..limits[0]).contains(&row) && (0..limits[1]).contains(&col) {
                                    valid += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        let c = Complexity::of(&v);
        prop_assert_eq!(c.macs_valid, valid, "{}", v);
        prop_assert_eq!(c.macs, all, "{}", v);
    }
}
