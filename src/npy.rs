//! Tensor files: float32 `.npy` (little-endian, C order), read with their
//! shape checked against what the spec expects and written atomically.

use std::path::Path;

use npyz::{DType, NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};

use crate::error::{Error, Result};

fn tensor_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::TensorFile { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads a float32 `.npy` file whose shape must be exactly `expected`.
/// `what` names the tensor in errors ("input", "weight", "bias").
pub fn read_f32(path: &Path, what: &str, expected: &[usize]) -> Result<Vec<f32>> {
    let bytes =
        std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut rest: &[u8] = &bytes;
    let header = NpyHeader::from_reader(&mut rest)
        .map_err(|e| tensor_error(path, format!("not a valid .npy file ({e})")))?;
    let file = NpyFile::with_header(header, rest);
    match file.dtype() {
        DType::Plain(t) if t.type_char() == TypeChar::Float && t.size_field() == 4 => {}
        other => {
            return Err(tensor_error(
                path,
                format!("{what} must be float32 ('<f4'), found dtype {}", other.descr()),
            ));
        }
    }
    if file.order() != Order::C {
        return Err(tensor_error(path, format!("{what} must be in C order, found Fortran order")));
    }
    let found: Vec<usize> = file.shape().iter().map(|&d| d as usize).collect();
    if found != expected {
        return Err(tensor_error(
            path,
            format!("{what} shape mismatch: expected {expected:?}, found {found:?}"),
        ));
    }
    let elements: usize = expected.iter().product();
    let data_bytes = elements * 4;
    if rest.len() != data_bytes {
        let how = if rest.len() < data_bytes { "truncated" } else { "has trailing bytes" };
        return Err(tensor_error(
            path,
            format!(
                "{what} file is {how}: shape {expected:?} needs {data_bytes} data bytes, found {}",
                rest.len()
            ),
        ));
    }
    file.into_vec::<f32>().map_err(|e| tensor_error(path, format!("cannot read {what} data: {e}")))
}

/// Writes `data` as a float32 `.npy` file of `shape`, atomically: the bytes
/// go to a temporary file in the same folder which is renamed over `path`
/// only once complete, so a failure never leaves a partial file behind.
pub fn write_f32(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    assert_eq!(shape.iter().product::<usize>(), data.len(), "shape and data disagree");
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    crate::atomic::write(path, |file| {
        let mut writer =
            npyz::WriteOptions::new().default_dtype().shape(&shape).writer(file).begin_nd()?;
        writer.extend(data.iter().copied())?;
        writer.finish()
    })
}
