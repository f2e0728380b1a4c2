//! Generates the ONNX protobuf messages (`proto/onnx.proto`, the ONNX
//! project's own schema) as Rust, in pure Rust: no `protoc` needed.

fn main() {
    protobuf_codegen::Codegen::new()
        .pure()
        .includes(["proto"])
        .input("proto/onnx.proto")
        .cargo_out_dir("onnx")
        .run_from_script();
}
