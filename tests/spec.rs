//! The spec (DESIGN.md, contract 1): PyTorch's output-size formulas, its
//! defaults, the JSON forms of pairs and padding, the refusal of every
//! invalid class with the offending field named, the limits that keep the
//! index arithmetic far from overflow, `kind()` and the JSON round trip.

mod common;

use common::spec;
use convjit::spec::{MAX_DIM, MAX_TENSOR_ELEMENTS, Padding};
use convjit::{Activation, ConvSpec, Error, Kind, Op, ValidSpec};
use proptest::prelude::*;
use serde_json::{Value, json};

/// PyTorch's `nn.Conv2d` output size along one axis:
/// floor((H + pad_begin + pad_end − d·(k − 1) − 1) / s) + 1, or `None`
/// when the dilated kernel is larger than the padded input.
fn torch_conv2d_size(h: i64, k: i64, s: i64, pb: i64, pe: i64, d: i64) -> Option<i64> {
    let room = h + pb + pe - d * (k - 1) - 1;
    (room >= 0).then(|| room / s + 1)
}

/// PyTorch's `nn.ConvTranspose2d` output size along one axis:
/// (H − 1)·s − pad_begin − pad_end + d·(k − 1) + output_padding + 1.
fn torch_conv_transpose2d_size(h: i64, k: i64, s: i64, pb: i64, pe: i64, d: i64, op: i64) -> i64 {
    (h - 1) * s - pb - pe + d * (k - 1) + op + 1
}

fn pad(top: usize, left: usize, bottom: usize, right: usize) -> Padding {
    Padding { top, left, bottom, right }
}

// ---------------------------------------------------------------------------
// Output sizes
// ---------------------------------------------------------------------------

/// Each case: the spec, its `[H_out, W_out]` worked out by hand from PyTorch's
/// formulas (shown in the comment), and the resolved padding `[t, l, b, r]`.
#[test]
fn output_sizes_follow_pytorch_formulas() {
    let cases: &[(&str, [usize; 2], [usize; 4])] = &[
        // 1. ResNet 3×3: (56 + 1 + 1 − 1·2 − 1)/1 + 1 = 56.
        (
            r#"{"op":"conv2d","in_channels":64,"out_channels":64,"height":56,"width":56,"kernel":3,"padding":1}"#,
            [56, 56],
            [1, 1, 1, 1],
        ),
        // 2. ResNet stem 7×7 s2 p3: floor((224 + 6 − 6 − 1)/2) + 1 = 111 + 1 = 112.
        (
            r#"{"op":"conv2d","in_channels":3,"out_channels":64,"height":224,"width":224,"kernel":7,"stride":2,"padding":3}"#,
            [112, 112],
            [3, 3, 3, 3],
        ),
        // 3. 3×3 s2 p1 on 56: floor((56 + 2 − 2 − 1)/2) + 1 = 27 + 1 = 28.
        (
            r#"{"op":"conv2d","in_channels":8,"out_channels":8,"height":56,"width":56,"kernel":[3,3],"stride":[2,2],"padding":[1,1]}"#,
            [28, 28],
            [1, 1, 1, 1],
        ),
        // 4. DeepLab 3×3 d2 p2 on 33: (33 + 4 − 2·2 − 1)/1 + 1 = 33.
        (
            r#"{"op":"conv2d","in_channels":4,"out_channels":4,"height":33,"width":33,"kernel":3,"padding":2,"dilation":2}"#,
            [33, 33],
            [2, 2, 2, 2],
        ),
        // 5. Per-axis everything: H: floor((10 + 2 − 2 − 1)/2) + 1 = 4 + 1 = 5;
        //    W: floor((7 + 0 − 1 − 1)/3) + 1 = 1 + 1 = 2.
        (
            r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":10,"width":7,"kernel":[3,2],"stride":[2,3],"padding":[1,0]}"#,
            [5, 2],
            [1, 0, 1, 0],
        ),
        // 6. ONNX-order padding [t, l, b, r] = [1, 2, 0, 3] on 8×9, 3×3:
        //    H: 8 + 1 + 0 − 2 − 1 + 1 = 7; W: 9 + 2 + 3 − 2 − 1 + 1 = 12.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":8,"width":9,"kernel":3,"padding":[1,2,0,3]}"#,
            [7, 12],
            [1, 2, 0, 3],
        ),
        // 7. "valid" is padding 0: 5 − 2 − 1 + 1 = 3.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":5,"width":5,"kernel":3,"padding":"valid"}"#,
            [3, 3],
            [0, 0, 0, 0],
        ),
        // 8. "same" with an odd kernel: total 1·(3 − 1) = 2, split 1 / 1.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":7,"width":6,"kernel":3,"padding":"same"}"#,
            [7, 6],
            [1, 1, 1, 1],
        ),
        // 9. "same" with an even kernel: total 1·(4 − 1) = 3; PyTorch puts
        //    3 // 2 = 1 at the top/left and the odd pixel, 2, at the bottom/right.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":7,"width":6,"kernel":4,"padding":"same"}"#,
            [7, 6],
            [1, 1, 2, 2],
        ),
        // 10. "same" with dilation, per axis: H total 3·(2 − 1) = 3 → 1 / 2;
        //     W total 2·(5 − 1) = 8 → 4 / 4.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":5,"width":4,"kernel":[2,5],"dilation":[3,2],"padding":"same"}"#,
            [5, 4],
            [1, 4, 2, 4],
        ),
        // 11. 1×1 s2 on 7: floor((7 − 1)/2) + 1 = 4.
        (
            r#"{"op":"conv2d","in_channels":3,"out_channels":5,"height":7,"width":7,"kernel":1,"stride":2}"#,
            [4, 4],
            [0, 0, 0, 0],
        ),
        // 12. Kernel as large as the input: 5 − 4 − 1 + 1 = 1.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":5,"width":5,"kernel":5}"#,
            [1, 1],
            [0, 0, 0, 0],
        ),
        // 13. Dilated kernel exactly spanning the input: 7 − 3·2 − 1 + 1 = 1.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":7,"width":7,"kernel":3,"dilation":3}"#,
            [1, 1],
            [0, 0, 0, 0],
        ),
        // 14. Stride larger than the input: floor((3 − 1)/5) + 1 = 1.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":3,"width":3,"kernel":1,"stride":5}"#,
            [1, 1],
            [0, 0, 0, 0],
        ),
        // 15. Padding larger than the kernel: (2 + 3 + 3 − 2 − 1)/1 + 1 = 6.
        (
            r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":2,"width":2,"kernel":3,"padding":3}"#,
            [6, 6],
            [3, 3, 3, 3],
        ),
        // 16. DCGAN 4×4 s2 p1 on 32: 31·2 − 1 − 1 + 1·3 + 0 + 1 = 64.
        (
            r#"{"op":"conv_transpose2d","in_channels":128,"out_channels":64,"height":32,"width":32,"kernel":4,"stride":2,"padding":1}"#,
            [64, 64],
            [1, 1, 1, 1],
        ),
        // 17. U-Net 2×2 s2 on 64: 63·2 − 0 + 1 + 0 + 1 = 128.
        (
            r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":2,"height":64,"width":64,"kernel":2,"stride":2}"#,
            [128, 128],
            [0, 0, 0, 0],
        ),
        // 18. output_padding: 6·2 − 1 − 1 + 2 + 1 + 1 = 14.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":7,"width":7,"kernel":3,"stride":2,"padding":1,"output_padding":1}"#,
            [14, 14],
            [1, 1, 1, 1],
        ),
        // 19. Dilation: 4·1 − 0 + 2·2 + 0 + 1 = 9.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":5,"width":5,"kernel":3,"dilation":2}"#,
            [9, 9],
            [0, 0, 0, 0],
        ),
        // 20. output_padding 1 with stride 1 is legal when the dilation is 2
        //     (1 < 2): 3·1 − 1 − 1 + 2·2 + 1 + 1 = 7.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":4,"width":4,"kernel":3,"dilation":2,"padding":1,"output_padding":1}"#,
            [7, 7],
            [1, 1, 1, 1],
        ),
        // 21. ONNX-order crop [0, 1, 2, 0] on 4×5, 3×3 s2:
        //     H: 3·2 − 0 − 2 + 2 + 0 + 1 = 7; W: 4·2 − 1 − 0 + 2 + 0 + 1 = 10.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":4,"width":5,"kernel":3,"stride":2,"padding":[0,1,2,0]}"#,
            [7, 10],
            [0, 1, 2, 0],
        ),
        // 22. A single pixel through a 1×1 kernel: 0 + 0 + 0 + 1 = 1.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":1}"#,
            [1, 1],
            [0, 0, 0, 0],
        ),
        // 23. Stride 3, output_padding 2 (< 3): 2·3 + 1 + 2 + 1 = 10.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":3,"width":3,"kernel":2,"stride":3,"output_padding":2}"#,
            [10, 10],
            [0, 0, 0, 0],
        ),
        // 24. Per-axis everything, padding [ph, pw] = [1, 2]:
        //     H: 5·3 − 1 − 1 + 4 + 2 + 1 = 20; W: 5·3 − 2 − 2 + 4 + 0 + 1 = 16.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":6,"width":6,"kernel":5,"stride":3,"padding":[1,2],"output_padding":[2,0]}"#,
            [20, 16],
            [1, 2, 1, 2],
        ),
        // 25. Cropping down to one pixel: 0·2 − 1 − 1 + 2 + 0 + 1 = 1.
        (
            r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":3,"stride":2,"padding":1}"#,
            [1, 1],
            [1, 1, 1, 1],
        ),
    ];
    assert!(cases.len() >= 20);
    for &(json, [ho, wo], [t, l, b, r]) in cases {
        let v = spec(json);
        assert_eq!([v.out_height(), v.out_width()], [ho, wo], "{json}");
        assert_eq!(v.padding(), pad(t, l, b, r), "{json}");
        assert_eq!(v.output_shape(), [v.batch(), v.out_channels(), ho, wo], "{json}");

        // The hand-worked sizes agree with the formulas written as code.
        let i = |u: usize| u as i64;
        let p = v.padding();
        let ([kh, kw], [sh, sw]) = (v.kernel().map(i), v.stride().map(i));
        let ([dh, dw], [oph, opw]) = (v.dilation().map(i), v.output_padding().map(i));
        let (h, w) = (i(v.height()), i(v.width()));
        let formula = match v.op() {
            Op::Conv2d => [
                torch_conv2d_size(h, kh, sh, i(p.top), i(p.bottom), dh).unwrap(),
                torch_conv2d_size(w, kw, sw, i(p.left), i(p.right), dw).unwrap(),
            ],
            Op::ConvTranspose2d => [
                torch_conv_transpose2d_size(h, kh, sh, i(p.top), i(p.bottom), dh, oph),
                torch_conv_transpose2d_size(w, kw, sw, i(p.left), i(p.right), dw, opw),
            ],
        };
        assert_eq!(formula, [ho as i64, wo as i64], "{json}");
    }
}

#[test]
fn shapes_follow_pytorch_layouts() {
    let conv = spec(
        r#"{"op":"conv2d","batch":3,"in_channels":6,"out_channels":4,"height":5,"width":7,"kernel":[3,1],"groups":2}"#,
    );
    assert_eq!(conv.input_shape(), [3, 6, 5, 7]);
    assert_eq!(conv.weight_shape(), [4, 3, 3, 1]); // [C_out, C_in/g, kh, kw]
    assert_eq!(conv.bias_shape(), Some([4]));
    assert_eq!(conv.output_shape(), [3, 4, 3, 7]);
    assert_eq!(
        (conv.input_len(), conv.weight_len(), conv.output_len()),
        (3 * 6 * 5 * 7, 4 * 3 * 3, 3 * 4 * 3 * 7)
    );
    assert_eq!((conv.in_per_group(), conv.out_per_group()), (3, 2));

    let tconv = spec(
        r#"{"op":"conv_transpose2d","in_channels":6,"out_channels":4,"height":5,"width":7,"kernel":[3,1],"groups":2,"bias":false}"#,
    );
    assert_eq!(tconv.weight_shape(), [6, 2, 3, 1]); // [C_in, C_out/g, kh, kw]
    assert_eq!(tconv.bias_shape(), None);
    assert_eq!(tconv.output_shape(), [1, 4, 7, 7]);
}

#[test]
fn omitted_fields_take_pytorch_defaults() {
    let v =
        spec(r#"{"op":"conv2d","in_channels":3,"out_channels":8,"height":9,"width":9,"kernel":3}"#);
    assert_eq!(v.batch(), 1);
    assert_eq!(v.stride(), [1, 1]);
    assert_eq!(v.padding(), pad(0, 0, 0, 0));
    assert_eq!(v.dilation(), [1, 1]);
    assert_eq!(v.groups(), 1);
    assert_eq!(v.output_padding(), [0, 0]);
    assert!(v.has_bias());
    assert_eq!(v.activation(), Activation::None);
    assert_eq!(v.name(), None);
    assert_eq!([v.out_height(), v.out_width()], [7, 7]);

    let t = spec(
        r#"{"op":"conv_transpose2d","in_channels":3,"out_channels":8,"height":9,"width":9,"kernel":3}"#,
    );
    assert_eq!((t.batch(), t.stride(), t.dilation(), t.groups()), (1, [1, 1], [1, 1], 1));
    assert_eq!((t.output_padding(), t.padding()), ([0, 0], pad(0, 0, 0, 0)));
    assert!(t.has_bias());

    // The Rust constructor has the same defaults as the JSON form.
    let built = ConvSpec::new(Op::Conv2d, 1, 3, 8, (9, 9), [3, 3]).validate().unwrap();
    assert_eq!(built, v);
}

#[test]
fn leaky_relu_slope_defaults_to_pytorch_value() {
    let base = r#""op":"conv2d","in_channels":1,"out_channels":1,"height":3,"width":3,"kernel":1"#;
    let v = spec(&format!(r#"{{{base},"activation":"leaky_relu"}}"#));
    assert_eq!(v.activation(), Activation::LeakyRelu { negative_slope: 0.01 });
    let v = spec(&format!(r#"{{{base},"activation":"leaky_relu","negative_slope":0.2}}"#));
    assert_eq!(v.activation(), Activation::LeakyRelu { negative_slope: 0.2 });
    for (name, want) in
        [("none", Activation::None), ("relu", Activation::Relu), ("relu6", Activation::Relu6)]
    {
        let v = spec(&format!(r#"{{{base},"activation":"{name}"}}"#));
        assert_eq!(v.activation(), want, "{name}");
    }
    let v = spec(&format!(r#"{{{base},"bias":false}}"#));
    assert!(!v.has_bias());
}

#[test]
fn a_pair_may_be_written_as_one_integer() {
    let one = spec(
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":2,"height":6,"width":6,
            "kernel":3,"stride":2,"padding":1,"dilation":2,"output_padding":1}"#,
    );
    let two = spec(
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":2,"height":6,"width":6,
            "kernel":[3,3],"stride":[2,2],"padding":[1,1],"dilation":[2,2],"output_padding":[1,1]}"#,
    );
    assert_eq!(one, two);
    assert_eq!(one.kernel(), [3, 3]);
    assert_eq!(one.stride(), [2, 2]);
    assert_eq!(one.dilation(), [2, 2]);
    assert_eq!(one.output_padding(), [1, 1]);
    assert_eq!(one.padding(), pad(1, 1, 1, 1));
    // [ph, pw] is symmetric, the same as [ph, pw, ph, pw].
    let four = spec(
        r#"{"op":"conv_transpose2d","in_channels":2,"out_channels":2,"height":6,"width":6,
            "kernel":3,"stride":2,"padding":[1,1,1,1],"dilation":2,"output_padding":1}"#,
    );
    assert_eq!(one, four);
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

fn conv_base() -> Value {
    json!({"op": "conv2d", "batch": 2, "in_channels": 4, "out_channels": 6,
           "height": 8, "width": 9, "kernel": 3, "padding": 1, "groups": 2})
}

fn tconv_base() -> Value {
    json!({"op": "conv_transpose2d", "batch": 2, "in_channels": 4, "out_channels": 6,
           "height": 5, "width": 4, "kernel": 3, "stride": 2, "padding": 1, "groups": 2})
}

/// `base` with `key` set to `value` (or removed when `value` is null).
fn with(base: Value, changes: &[(&str, Value)]) -> String {
    let mut base = base;
    let object = base.as_object_mut().unwrap();
    for (key, value) in changes {
        if value.is_null() {
            object.remove(*key);
        } else {
            object.insert(key.to_string(), value.clone());
        }
    }
    base.to_string()
}

fn parse_and_validate(json: &str) -> convjit::Result<ValidSpec> {
    ConvSpec::from_json(json)?.validate()
}

/// Asserts that `json` is refused by validation with an error naming `field`.
fn refused(json: &str, field: &str) {
    match parse_and_validate(json) {
        Err(e @ Error::InvalidSpec { field: named, .. }) => {
            assert_eq!(named, field, "{json}: wrong field named in: {e}");
            let message = e.to_string();
            assert!(message.contains(field), "{json}: message does not name {field}: {message}");
            assert!(!message.contains('\n'), "{json}: message spans lines: {message}");
        }
        Err(e) => panic!("{json}: expected InvalidSpec naming {field}, got {e:?}"),
        Ok(v) => panic!("{json}: expected a refusal naming {field}, got {v}"),
    }
}

/// Asserts that `json` is refused at the JSON level, with `mention` in the message.
fn refused_json(json: &str, mention: &str) {
    match parse_and_validate(json) {
        Err(Error::SpecJson(message)) => {
            assert!(message.contains(mention), "{json}: message lacks {mention:?}: {message}")
        }
        Err(e) => panic!("{json}: expected Error::SpecJson, got {e:?}"),
        Ok(v) => panic!("{json}: expected a JSON-level refusal, got {v}"),
    }
}

#[test]
fn the_bases_are_valid() {
    spec(&conv_base().to_string());
    spec(&tconv_base().to_string());
}

#[test]
fn sizes_below_one_are_refused() {
    for base in [conv_base(), tconv_base()] {
        for field in ["batch", "in_channels", "out_channels", "height", "width", "groups"] {
            for bad in [0, -1, -7, i64::MIN] {
                refused(&with(base.clone(), &[(field, json!(bad))]), field);
            }
        }
        for field in ["kernel", "stride", "dilation"] {
            for bad in
                [json!(0), json!(-1), json!([0, 1]), json!([1, 0]), json!([2, -3]), json!(i64::MIN)]
            {
                refused(&with(base.clone(), &[(field, bad)]), field);
            }
        }
    }
}

#[test]
fn negative_padding_and_output_padding_are_refused() {
    for base in [conv_base(), tconv_base()] {
        for bad in
            [json!(-1), json!([-1, 0]), json!([0, -2]), json!([0, 0, 0, -1]), json!([-1, 0, 0, 0])]
        {
            refused(&with(base.clone(), &[("padding", bad)]), "padding");
        }
        for bad in [json!(-1), json!([0, -1]), json!([-1, 0])] {
            refused(&with(base.clone(), &[("output_padding", bad)]), "output_padding");
        }
    }
}

#[test]
fn groups_must_divide_both_channel_counts() {
    for base in [conv_base(), tconv_base()] {
        // 4 in, 6 out: 3 divides 6 but not 4.
        refused(&with(base.clone(), &[("groups", json!(3))]), "groups");
        // 4 divides 4 in but not 6 out.
        refused(&with(base.clone(), &[("groups", json!(4))]), "groups");
        // More groups than channels.
        refused(&with(base.clone(), &[("groups", json!(8))]), "groups");
        refused(
            &with(
                base.clone(),
                &[("in_channels", json!(6)), ("out_channels", json!(4)), ("groups", json!(4))],
            ),
            "groups",
        );
    }
}

#[test]
fn conv2d_with_an_empty_output_is_refused() {
    let base =
        json!({"op": "conv2d", "in_channels": 1, "out_channels": 1, "height": 4, "width": 4});
    // A 5×5 kernel on a 4×4 input.
    refused(&with(base.clone(), &[("kernel", json!(5))]), "kernel");
    // Only along the width.
    refused(&with(base.clone(), &[("kernel", json!([3, 5]))]), "kernel");
    // Dilated: span 3·(3 − 1) + 1 = 7 > 4 + 1 + 1 = 6.
    refused(
        &with(base.clone(), &[("kernel", json!(3)), ("dilation", json!(3)), ("padding", json!(1))]),
        "kernel",
    );
    // A 3×1 kernel dilated by 3 spans 7 rows: 4 rows padded by 2 + 1 fit it
    // exactly, once; padded by 2 + 0 they do not.
    let fits = spec(&with(
        base.clone(),
        &[("kernel", json!([3, 1])), ("dilation", json!(3)), ("padding", json!([2, 0, 1, 0]))],
    ));
    assert_eq!([fits.out_height(), fits.out_width()], [1, 4]);
    refused(
        &with(
            base,
            &[("kernel", json!([3, 1])), ("dilation", json!(3)), ("padding", json!([2, 0, 0, 0]))],
        ),
        "kernel",
    );
}

#[test]
fn conv_transpose2d_cropped_to_nothing_is_refused() {
    let base = json!({"op": "conv_transpose2d", "in_channels": 1, "out_channels": 1, "height": 1, "width": 1});
    // Full output 1×1, cropped by 1 + 1.
    refused(&with(base.clone(), &[("kernel", json!(1)), ("padding", json!(1))]), "padding");
    // Full output 3 wide, cropped by 3 on the right alone.
    refused(
        &with(base.clone(), &[("kernel", json!(3)), ("padding", json!([0, 0, 0, 3]))]),
        "padding",
    );
    // Full output 3 tall, cropped by 2 + 1.
    refused(
        &with(base.clone(), &[("kernel", json!(3)), ("padding", json!([2, 0, 1, 0]))]),
        "padding",
    );
    // One pixel left: accepted.
    let v = spec(&with(base, &[("kernel", json!(3)), ("padding", json!([1, 0, 1, 0]))]));
    assert_eq!([v.out_height(), v.out_width()], [1, 3]);
}

#[test]
fn output_padding_must_be_smaller_than_stride_or_dilation() {
    let base = json!({"op": "conv_transpose2d", "in_channels": 1, "out_channels": 1,
                      "height": 4, "width": 4, "kernel": 3});
    // op = s, d = 1.
    refused(
        &with(base.clone(), &[("stride", json!(2)), ("output_padding", json!(2))]),
        "output_padding",
    );
    // op > s, d = 1, on one axis only.
    refused(
        &with(base.clone(), &[("stride", json!(2)), ("output_padding", json!([0, 3]))]),
        "output_padding",
    );
    // Stride 1 and dilation 1 allow no output_padding.
    refused(&with(base.clone(), &[("output_padding", json!(1))]), "output_padding");
    // op = s = d.
    refused(
        &with(
            base.clone(),
            &[("stride", json!(2)), ("dilation", json!(2)), ("output_padding", json!(2))],
        ),
        "output_padding",
    );
    // op < d while op ≥ s: PyTorch accepts it, and so does convjit.
    let v = spec(&with(
        base.clone(),
        &[("stride", json!(2)), ("dilation", json!(3)), ("output_padding", json!(2))],
    ));
    assert_eq!(v.output_padding(), [2, 2]);
    // op < s while op ≥ d.
    let v = spec(&with(base, &[("stride", json!(3)), ("output_padding", json!([2, 1]))]));
    assert_eq!(v.output_padding(), [2, 1]);
}

#[test]
fn conv2d_refuses_output_padding() {
    refused(&with(conv_base(), &[("output_padding", json!(1))]), "output_padding");
    refused(
        &with(conv_base(), &[("output_padding", json!([0, 1])), ("stride", json!(2))]),
        "output_padding",
    );
    // An explicit zero is the default and fine.
    spec(&with(conv_base(), &[("output_padding", json!([0, 0]))]));
}

#[test]
fn named_padding_is_checked() {
    // "same" needs stride 1 (PyTorch's rule), on either axis.
    refused(&with(conv_base(), &[("padding", json!("same")), ("stride", json!(2))]), "padding");
    refused(
        &with(conv_base(), &[("padding", json!("same")), ("stride", json!([1, 2]))]),
        "padding",
    );
    // String padding exists only for conv2d.
    refused(&with(tconv_base(), &[("padding", json!("same")), ("stride", json!(1))]), "padding");
    refused(&with(tconv_base(), &[("padding", json!("valid"))]), "padding");
    // Only two names exist, spelled in lower case.
    for name in ["full", "SAME", "", "causal"] {
        refused(&with(conv_base(), &[("padding", json!(name))]), "padding");
    }
}

#[test]
fn padding_lists_must_have_two_or_four_values() {
    for bad in [json!([]), json!([1]), json!([1, 1, 1]), json!([1, 1, 1, 1, 1])] {
        refused(&with(conv_base(), &[("padding", bad.clone())]), "padding");
        refused(&with(tconv_base(), &[("padding", bad)]), "padding");
    }
}

#[test]
fn negative_slope_needs_leaky_relu() {
    refused(&with(conv_base(), &[("negative_slope", json!(0.1))]), "negative_slope");
    refused(
        &with(conv_base(), &[("negative_slope", json!(0.1)), ("activation", json!("relu"))]),
        "negative_slope",
    );
    refused(
        &with(conv_base(), &[("negative_slope", json!(0.1)), ("activation", json!("relu6"))]),
        "negative_slope",
    );
    refused(
        &with(conv_base(), &[("negative_slope", json!(0.1)), ("activation", json!("none"))]),
        "negative_slope",
    );
    // JSON has no NaN, but a spec built in Rust can carry one.
    let mut s = ConvSpec::new(Op::Conv2d, 1, 1, 1, (3, 3), [1, 1]);
    s.activation = convjit::spec::ActivationKind::LeakyRelu;
    s.negative_slope = Some(f32::NAN);
    assert!(matches!(s.validate(), Err(Error::InvalidSpec { field: "negative_slope", .. })));
    s.negative_slope = Some(f32::INFINITY);
    assert!(matches!(s.validate(), Err(Error::InvalidSpec { field: "negative_slope", .. })));
}

#[test]
fn json_level_problems_are_refused() {
    // Unknown fields, including PyTorch arguments convjit does not support.
    refused_json(&with(conv_base(), &[("padding_mode", json!("zeros"))]), "padding_mode");
    refused_json(&with(conv_base(), &[("kernel_size", json!(3))]), "kernel_size");
    // Unknown ops and activations.
    refused_json(&with(conv_base(), &[("op", json!("conv3d"))]), "conv3d");
    refused_json(&with(conv_base(), &[("op", json!("Conv2d"))]), "Conv2d");
    refused_json(&with(conv_base(), &[("activation", json!("gelu"))]), "gelu");
    // Missing required fields.
    for field in ["op", "in_channels", "out_channels", "height", "width", "kernel"] {
        refused_json(&with(conv_base(), &[(field, Value::Null)]), field);
    }
    // Wrong types and shapes of values.
    refused_json(&with(conv_base(), &[("kernel", json!([3, 3, 3]))]), "");
    refused_json(&with(conv_base(), &[("kernel", json!([3]))]), "");
    refused_json(&with(conv_base(), &[("kernel", json!(2.5))]), "");
    refused_json(&with(conv_base(), &[("height", json!("8"))]), "");
    refused_json(&with(conv_base(), &[("bias", json!(1))]), "");
    refused_json(&with(conv_base(), &[("padding", json!(1.5))]), "");
    refused_json("", "");
    refused_json("[]", "");
    refused_json(r#"{"op":"conv2d""#, "");
}

// ---------------------------------------------------------------------------
// Limits: absurd sizes are errors, never panics or overflows.
// ---------------------------------------------------------------------------

#[test]
fn values_beyond_max_dim_are_refused() {
    let over = MAX_DIM + 1;
    for field in ["batch", "in_channels", "out_channels", "height", "width", "groups"] {
        refused(&with(conv_base(), &[(field, json!(over))]), field);
        refused(&with(conv_base(), &[(field, json!(i64::MAX))]), field);
    }
    for field in ["kernel", "stride", "dilation"] {
        refused(&with(conv_base(), &[(field, json!(over))]), field);
        refused(&with(conv_base(), &[(field, json!([1, i64::MAX]))]), field);
    }
    refused(&with(conv_base(), &[("padding", json!(over))]), "padding");
    refused(&with(conv_base(), &[("padding", json!([0, 0, i64::MAX, 0]))]), "padding");
    refused(&with(tconv_base(), &[("output_padding", json!(i64::MAX))]), "output_padding");
    // A value past i64 is a JSON-level error.
    refused_json(&with(conv_base(), &[("height", json!(u64::MAX))]), "");
}

#[test]
fn max_dim_itself_is_accepted() {
    let v = spec(&format!(
        r#"{{"op":"conv2d","in_channels":1,"out_channels":1,"height":{MAX_DIM},"width":1,"kernel":1}}"#
    ));
    assert_eq!(v.out_height(), 1 << 24);
}

#[test]
fn tensors_beyond_max_tensor_elements_are_refused() {
    // The brief's example: 2^24 channels of 2^24 × 2^24 pixels (2^72 elements).
    let json = format!(
        r#"{{"op":"conv2d","in_channels":{MAX_DIM},"out_channels":1,"height":{MAX_DIM},"width":{MAX_DIM},"kernel":1}}"#
    );
    refused(&json, "input");
    // Input: 2^7 · 2^12 · 2^12 = 2^31 is the limit itself; one more column exceeds it.
    assert_eq!(MAX_TENSOR_ELEMENTS, 1 << 31);
    let at_limit = spec(
        r#"{"op":"conv2d","in_channels":128,"out_channels":1,"height":4096,"width":4096,"kernel":1}"#,
    );
    assert_eq!(at_limit.input_len() as u64, MAX_TENSOR_ELEMENTS);
    refused(
        r#"{"op":"conv2d","in_channels":128,"out_channels":1,"height":4096,"width":4097,"kernel":1}"#,
        "input",
    );
    // Weight: 2^16 · 2^16 · 1 · 1 = 2^32.
    refused(
        r#"{"op":"conv2d","in_channels":65536,"out_channels":65536,"height":1,"width":1,"kernel":1}"#,
        "weight",
    );
    refused(
        r#"{"op":"conv_transpose2d","in_channels":65536,"out_channels":65536,"height":1,"width":1,"kernel":1}"#,
        "weight",
    );
    // Output: 2^15 × 2^15 input (2^30) upsampled by 2 to 65535² ≈ 2^32.
    refused(
        r#"{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":32768,"width":32768,"kernel":1,"stride":2}"#,
        "output",
    );
    // Output: a tiny weight with huge stride and dilation: (8 − 1)·2^24 + 2^24·1 + 1 ≈ 2^27 per axis.
    refused(
        &format!(
            r#"{{"op":"conv_transpose2d","in_channels":1,"out_channels":1,"height":8,"width":8,"kernel":2,"stride":{MAX_DIM},"dilation":{MAX_DIM}}}"#
        ),
        "output",
    );
    // conv2d whose dilated kernel (span ≈ 2^48) dwarfs a padded input of 2^25 + 1.
    refused(
        &format!(
            r#"{{"op":"conv2d","in_channels":1,"out_channels":1,"height":1,"width":1,"kernel":{MAX_DIM},"dilation":{MAX_DIM},"padding":{MAX_DIM}}}"#
        ),
        "kernel",
    );
}

/// Regression, bug 1: validation multiplied out the extents of all three
/// tensors in u128 before checking any of them. With every field at MAX_DIM
/// the transposed output has about 2^24 · 2^24 · 2^49 · 2^49 = 2^146
/// elements, so the product overflowed, a panic in debug builds, instead of
/// the spec being refused.
#[test]
fn bug_1_tensor_sizes_beyond_u128_are_refused_not_overflowed() {
    let json = format!(
        r#"{{"op":"conv_transpose2d","batch":{m},"in_channels":{m},"out_channels":{m},"height":{m},"width":{m},
            "kernel":{m},"stride":{m},"dilation":{m},"padding":{m},"groups":{m},"output_padding":{o}}}"#,
        m = MAX_DIM,
        o = MAX_DIM - 1
    );
    // The input (2^96 elements) is the first tensor over the limit.
    refused(&json, "input");
}

/// Field values from the extremes, mostly legal ones so that many drawn specs
/// reach the tensor-size checks: validation must answer every one without
/// panicking or overflowing.
fn extreme() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => prop::sample::select(vec![1, 2, 3, 1 << 12, MAX_DIM - 1, MAX_DIM]),
        1 => prop::sample::select(vec![i64::MIN, -(1 << 40), -1, 0, MAX_DIM + 1, 1 << 40, i64::MAX]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn validation_never_panics_on_extreme_values(
        transposed in any::<bool>(),
        sizes in prop::collection::vec(extreme(), 17),
        four in any::<bool>(),
    ) {
        let s = ConvSpec {
            name: None,
            op: if transposed { Op::ConvTranspose2d } else { Op::Conv2d },
            batch: sizes[0],
            in_channels: sizes[1],
            out_channels: sizes[2],
            height: sizes[3],
            width: sizes[4],
            kernel: [sizes[5], sizes[6]].into(),
            stride: [sizes[7], sizes[8]].into(),
            padding: if four {
                convjit::spec::PaddingSpec::List(sizes[9..13].to_vec())
            } else {
                [sizes[9], sizes[10]].into()
            },
            dilation: [sizes[13], sizes[14]].into(),
            groups: sizes[15],
            output_padding: [sizes[16].saturating_sub(1); 2].into(),
            bias: true,
            activation: Default::default(),
            negative_slope: None,
        };
        match s.validate() {
            Ok(v) => {
                for len in [v.input_len(), v.weight_len(), v.output_len()] {
                    prop_assert!(len >= 1 && len as u64 <= MAX_TENSOR_ELEMENTS);
                }
                for size in [v.batch(), v.in_channels(), v.out_channels(), v.height(), v.width(), v.groups()] {
                    prop_assert!(size >= 1 && size as i64 <= MAX_DIM);
                }
            }
            Err(Error::InvalidSpec { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error kind: {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Random specs against the formulas
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Over random small specs, validation accepts exactly the specs whose
    /// PyTorch output size is at least 1 (and whose output_padding obeys
    /// PyTorch's rule), with exactly that size; otherwise it names a field
    /// that is at fault.
    #[test]
    fn output_size_and_validity_match_pytorch(
        transposed in any::<bool>(),
        hw in [1i64..12, 1i64..12],
        k in [1i64..6, 1i64..6],
        s in [1i64..4, 1i64..4],
        d in [1i64..4, 1i64..4],
        p in [0i64..4, 0i64..4, 0i64..4, 0i64..4],
        op in [0i64..3, 0i64..3],
        (groups, cig, cog) in (1i64..4, 1i64..3, 1i64..3),
    ) {
        let op = if transposed { op } else { [0, 0] };
        let json = json!({
            "op": if transposed { "conv_transpose2d" } else { "conv2d" },
            "in_channels": groups * cig, "out_channels": groups * cog, "groups": groups,
            "height": hw[0], "width": hw[1], "kernel": k, "stride": s, "dilation": d,
            "padding": p, "output_padding": op,
        })
        .to_string();
        // Axis 0 pads with top/bottom (p[0], p[2]), axis 1 with left/right (p[1], p[3]).
        let mut faults: Vec<&str> = Vec::new();
        let mut size = [0i64; 2];
        for axis in 0..2 {
            let (begin, end) = (p[axis], p[axis + 2]);
            if transposed {
                if op[axis] >= s[axis] && op[axis] >= d[axis] {
                    faults.push("output_padding");
                }
                size[axis] = torch_conv_transpose2d_size(hw[axis], k[axis], s[axis], begin, end, d[axis], op[axis]);
                if size[axis] < 1 {
                    faults.push("padding");
                }
            } else {
                match torch_conv2d_size(hw[axis], k[axis], s[axis], begin, end, d[axis]) {
                    Some(n) => size[axis] = n,
                    None => faults.push("kernel"),
                }
            }
        }
        match parse_and_validate(&json) {
            Ok(v) => {
                prop_assert!(faults.is_empty(), "{json}: accepted despite {faults:?}");
                prop_assert_eq!([v.out_height() as i64, v.out_width() as i64], size, "{}", json);
                prop_assert_eq!(v.padding(), pad(p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize));
            }
            Err(Error::InvalidSpec { field, .. }) => {
                prop_assert!(faults.contains(&field), "{json}: refused naming {field}, faults {faults:?}");
            }
            Err(e) => prop_assert!(false, "{json}: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// kind() and the JSON round trip
// ---------------------------------------------------------------------------

#[test]
fn kind_classifies_most_specific_first() {
    let kind = |extra: &str| {
        spec(&format!(r#"{{"in_channels":4,"out_channels":8,"height":9,"width":9,{extra}}}"#))
            .kind()
    };
    let cases = [
        // Transposed wins over everything, groups included.
        (r#""op":"conv_transpose2d","kernel":3,"groups":4"#, Kind::Transposed),
        (r#""op":"conv_transpose2d","kernel":1"#, Kind::Transposed),
        // groups == in_channels > 1 is depthwise, with a channel multiplier too.
        (r#""op":"conv2d","kernel":3,"groups":4"#, Kind::Depthwise),
        (r#""op":"conv2d","kernel":1,"groups":4,"stride":2"#, Kind::Depthwise),
        // Other groups > 1 are grouped, even 1×1 or dilated.
        (r#""op":"conv2d","kernel":3,"groups":2"#, Kind::Grouped),
        (r#""op":"conv2d","kernel":1,"groups":2"#, Kind::Grouped),
        (r#""op":"conv2d","kernel":3,"groups":2,"dilation":2"#, Kind::Grouped),
        // 1×1 is pointwise whatever the stride or dilation.
        (r#""op":"conv2d","kernel":1"#, Kind::Pointwise),
        (r#""op":"conv2d","kernel":1,"stride":2,"dilation":3"#, Kind::Pointwise),
        // Then dilation, then a non-square kernel, then stride.
        (r#""op":"conv2d","kernel":3,"dilation":2,"stride":2"#, Kind::Dilated),
        (r#""op":"conv2d","kernel":[3,1],"dilation":[2,1]"#, Kind::Dilated),
        (r#""op":"conv2d","kernel":[1,3],"stride":2"#, Kind::Asymmetric),
        (r#""op":"conv2d","kernel":[5,3]"#, Kind::Asymmetric),
        (r#""op":"conv2d","kernel":3,"stride":2"#, Kind::Strided),
        (r#""op":"conv2d","kernel":3,"stride":[1,2]"#, Kind::Strided),
        (r#""op":"conv2d","kernel":3"#, Kind::Standard),
        (r#""op":"conv2d","kernel":7"#, Kind::Standard),
    ];
    for (extra, want) in cases {
        assert_eq!(kind(extra), want, "{extra}");
    }
    // A single channel with groups 1 is not depthwise.
    let single =
        spec(r#"{"op":"conv2d","in_channels":1,"out_channels":1,"height":5,"width":5,"kernel":3}"#);
    assert_eq!(single.kind(), Kind::Standard);
}

#[test]
fn builtin_suite_layers_have_the_kinds_their_names_say() {
    let want = [
        ("resnet50_3x3", Kind::Standard),
        ("resnet50_1x1", Kind::Pointwise),
        ("resnet_stem_7x7s2", Kind::Strided),
        ("mbv2_dw3x3", Kind::Depthwise),
        ("mbv2_dw3x3_s2", Kind::Depthwise),
        ("mbv2_pw_144to24", Kind::Pointwise),
        ("mbv2_pw_32to192", Kind::Pointwise),
        ("resnext_g32_3x3", Kind::Grouped),
        ("deeplab_dil2_3x3", Kind::Dilated),
        ("acnet_1x3", Kind::Asymmetric),
        ("acnet_3x1", Kind::Asymmetric),
        ("dcgan_tconv4x4s2", Kind::Transposed),
        ("unet_tconv2x2s2", Kind::Transposed),
        ("jvet_lf_3x3", Kind::Standard),
        ("resnet_3x3_b8", Kind::Standard),
    ];
    let suite = convjit::suite::builtin();
    assert_eq!(suite.len(), want.len());
    for (s, (name, kind)) in suite.iter().zip(want) {
        let v = s.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.name(), Some(name));
        assert_eq!(v.kind(), kind, "{name}");
    }
}

#[test]
fn to_conv_spec_round_trips_through_json() {
    let specs = [
        r#"{"name":"a","op":"conv2d","in_channels":4,"out_channels":6,"height":8,"width":9,"kernel":[3,2],"padding":"same","dilation":[2,1],"groups":2,"bias":false}"#,
        r#"{"op":"conv2d","batch":3,"in_channels":3,"out_channels":5,"height":11,"width":7,"kernel":4,"stride":[2,3],"padding":[1,2,0,3],"activation":"relu6"}"#,
        r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":5,"width":5,"kernel":3,"padding":"valid","activation":"leaky_relu"}"#,
        r#"{"op":"conv2d","in_channels":2,"out_channels":2,"height":5,"width":5,"kernel":3,"activation":"leaky_relu","negative_slope":0.3}"#,
        r#"{"name":"t","op":"conv_transpose2d","in_channels":4,"out_channels":2,"height":5,"width":6,"kernel":[3,4],"stride":[2,3],"padding":[1,0,2,1],"dilation":[1,2],"groups":2,"output_padding":[1,2],"activation":"relu"}"#,
    ];
    for json in specs {
        let v = spec(json);
        let normal = v.to_conv_spec();
        // Normalised: padding as [top, left, bottom, right], pairs explicit.
        assert_eq!(
            normal.padding,
            convjit::spec::PaddingSpec::List(vec![
                v.padding().top as i64,
                v.padding().left as i64,
                v.padding().bottom as i64,
                v.padding().right as i64
            ]),
            "{json}"
        );
        assert_eq!(normal.validate().unwrap(), v, "{json}");
        let text = normal.to_json();
        for key in [
            "op",
            "batch",
            "kernel",
            "stride",
            "padding",
            "dilation",
            "groups",
            "output_padding",
            "bias",
        ] {
            assert!(text.contains(&format!("\"{key}\"")), "{json}: {text} lacks {key}");
        }
        let back = ConvSpec::from_json(&text).unwrap();
        assert_eq!(back, normal, "{json}");
        assert_eq!(back.validate().unwrap(), v, "{json}");
    }
    // The raw form round-trips as written, too.
    let raw = ConvSpec::from_json(specs[1]).unwrap();
    assert_eq!(ConvSpec::from_json(&raw.to_json()).unwrap(), raw);
}

#[test]
fn every_builtin_layer_round_trips() {
    for s in convjit::suite::builtin() {
        let v = s.validate().unwrap();
        let back = ConvSpec::from_json(&v.to_conv_spec().to_json()).unwrap().validate().unwrap();
        assert_eq!(back, v);
        assert_eq!(ValidSpec::try_from(s).unwrap(), v);
    }
}
