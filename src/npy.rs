//! Tensor files: float32 `.npy` in C order, read with their shape checked
//! against what the spec expects, and written (little-endian) atomically.
//!
//! Reading trusts nothing in the file before it is checked, so a hostile or
//! careless file costs neither time nor memory. The file must be a regular
//! one ([`crate::files::open`]). Its prefix (the magic string, a version
//! numpy writes, the header's length) is checked first, the length against
//! [`MAX_HEADER_LEN`] and the file's size, before the header is read. The
//! header is then checked to be one a plain array could have — printable
//! ASCII, nested at most two levels (the dict and the shape's tuple),
//! values no other than strings, `True`, `False` and integers whose
//! product fits 64 bits — before npyz's parser sees it, as that parser
//! takes time exponential in the nesting depth. Only then are the dtype
//! (`'<f4'` or `'>f4'`), the order and the shape checked, and the data read:
//! exactly the bytes the expected shape needs, after the file's size has
//! been found to hold exactly those.

use std::io::{BufReader, Read};
use std::path::Path;

use npyz::{DType, Endianness, NpyFile, NpyHeader, Order, TypeChar, WriterBuilder};

use crate::error::{Error, Result};

/// The longest header read, in bytes: numpy's own default bound
/// (`max_header_size`). A float32 array's header takes about a hundred.
pub const MAX_HEADER_LEN: u64 = 10_000;

/// The deepest a plain array's header nests: the dict, and the shape's
/// tuple in it.
const MAX_HEADER_DEPTH: usize = 2;

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

fn tensor_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::TensorFile { path: path.to_path_buf(), reason: reason.into() }
}

/// Reads a float32 `.npy` file whose shape must be exactly `expected`.
/// `what` names the tensor in errors ("input", "weight", "bias").
/// Little-endian (`'<f4'`) and big-endian (`'>f4'`) files are read alike.
pub fn read_f32(path: &Path, what: &str, expected: &[usize]) -> Result<Vec<f32>> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let (file, size) = crate::files::open(path, what)?;
    let mut reader = BufReader::new(file);
    let not_npy = |reason: String| tensor_error(path, format!("not a valid .npy file ({reason})"));

    // The prefix: magic string, version, header length.
    if size < 8 {
        return Err(not_npy(format!("{size} bytes, shorter than the magic string and version")));
    }
    let mut prefix = vec![0u8; 8];
    reader.read_exact(&mut prefix).map_err(io)?;
    if prefix[..6] != MAGIC[..] {
        return Err(not_npy("it does not start with the .npy magic string".into()));
    }
    let length_bytes = match (prefix[6], prefix[7]) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        (major, minor) => {
            return Err(not_npy(format!("version {major}.{minor}; 1.0, 2.0 and 3.0 are read")));
        }
    };
    let header_start = 8 + length_bytes;
    if size < header_start {
        return Err(not_npy("the file ends inside the header's length".into()));
    }
    let mut length = [0u8; 4];
    reader.read_exact(&mut length[..length_bytes as usize]).map_err(io)?;
    prefix.extend_from_slice(&length[..length_bytes as usize]);
    let header_len = u64::from(u32::from_le_bytes(length));
    if header_len > MAX_HEADER_LEN {
        return Err(not_npy(format!(
            "a header of {header_len} bytes, more than the {MAX_HEADER_LEN} a .npy header may \
             hold"
        )));
    }
    if header_len > size - header_start {
        return Err(not_npy(format!(
            "truncated: the header is {header_len} bytes, the file holds {} after its length",
            size - header_start
        )));
    }

    // The header: checked, then parsed by npyz.
    let mut header = prefix;
    let text_start = header.len();
    header.resize(text_start + header_len as usize, 0);
    reader.read_exact(&mut header[text_start..]).map_err(io)?;
    check_header(&header[text_start..]).map_err(|e| not_npy(format!("the header {e}")))?;
    let header = NpyHeader::from_reader(&header[..])
        .map_err(|e| not_npy(format!("the header: {}", one_line(&e.to_string()))))?;
    match header.dtype() {
        DType::Plain(t)
            if t.type_char() == TypeChar::Float
                && t.size_field() == 4
                && matches!(t.endianness(), Endianness::Little | Endianness::Big) => {}
        other => {
            return Err(tensor_error(
                path,
                format!(
                    "{what} must be float32, '<f4' (little-endian) or '>f4' (big-endian); found \
                     dtype {}",
                    other.descr()
                ),
            ));
        }
    }
    if header.order() != Order::C {
        return Err(tensor_error(path, format!("{what} must be in C order, found Fortran order")));
    }
    let found: Vec<u64> = header.shape().to_vec();
    if found.len() != expected.len() || found.iter().zip(expected).any(|(&f, &e)| f != e as u64) {
        return Err(tensor_error(
            path,
            format!("{what} shape mismatch: expected {expected:?}, found {found:?}"),
        ));
    }

    // The data: exactly what the shape needs, the file's size checked first.
    // The header's dimensions multiply within 64 bits; four bytes each may
    // not, and then no file holds them.
    let data_bytes =
        expected.iter().try_fold(4u64, |n, &d| n.checked_mul(d as u64)).unwrap_or(u64::MAX);
    let held = size - header_start - header_len;
    if held != data_bytes {
        let how = if held < data_bytes { "truncated" } else { "has trailing bytes" };
        return Err(tensor_error(
            path,
            format!(
                "{what} file is {how}: shape {expected:?} needs {data_bytes} data bytes, found \
                 {held}"
            ),
        ));
    }
    let values = NpyFile::with_header(header, (&mut reader).take(data_bytes))
        .data::<f32>()
        .map_err(|e| tensor_error(path, format!("cannot read {what} data: {e}")))?;
    // The file holds every element: they fit in memory's address space.
    let mut data = Vec::with_capacity((data_bytes / 4) as usize);
    for value in values {
        data.push(value.map_err(|e| {
            tensor_error(path, format!("cannot read {what} data (did the file change?): {e}"))
        })?);
    }
    if reader.read(&mut [0u8]).map_err(io)? != 0 {
        return Err(tensor_error(path, format!("{what} file grew while it was read")));
    }
    Ok(data)
}

/// Checks that `text`, a `.npy` header, is one a plain array's could be:
/// printable ASCII (spaces and line ends aside), no more than
/// [`MAX_HEADER_DEPTH`] levels of brackets, and outside strings (which hold
/// no backslash) nothing but punctuation, `True`, `False` and decimal
/// integers whose product, zeros counted as ones,
/// fits 64 bits: so every shape and stride npyz derives from it fits too.
/// The error completes "the header …".
fn check_header(text: &[u8]) -> std::result::Result<(), String> {
    let (mut depth, mut quote, mut product) = (0usize, None, 1u64);
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if c == b'\\' || !(0x20..0x7f).contains(&c) {
                return Err(format!("holds byte {c:#04x} in a string, at {i}"));
            }
            i += 1;
            continue;
        }
        match c {
            b'\'' | b'"' => quote = Some(c),
            b'{' | b'(' | b'[' => {
                depth += 1;
                if depth > MAX_HEADER_DEPTH {
                    return Err(format!(
                        "nests deeper than a plain array's {MAX_HEADER_DEPTH} levels, at byte {i}"
                    ));
                }
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            b':' | b',' | b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if c.is_ascii_alphanumeric() || c == b'_' => {
                let end = text[i..]
                    .iter()
                    .position(|b| !b.is_ascii_alphanumeric() && *b != b'_')
                    .map_or(text.len(), |n| i + n);
                let word = std::str::from_utf8(&text[i..end]).expect("ASCII");
                if c.is_ascii_digit() {
                    let value: u64 = word
                        .parse()
                        .map_err(|_| format!("holds {word:?}, which is no dimension"))?;
                    product = product.checked_mul(value.max(1)).ok_or_else(|| {
                        format!("holds dimensions multiplying past 2^64 ({word})")
                    })?;
                } else if word != "True" && word != "False" {
                    return Err(format!("holds {word:?}, which no plain array's header holds"));
                }
                i = end;
                continue;
            }
            _ => return Err(format!("holds byte {c:#04x}, at {i}, which a plain header does not")),
        }
        i += 1;
    }
    match quote {
        Some(_) => Err("ends inside a string".into()),
        None => Ok(()),
    }
}

/// npyz's parse errors, which draw the header and a caret over several
/// lines, on one: the first line, and what was expected.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim);
    let first = lines.next().unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ");
    match lines.find_map(|l| l.strip_prefix("= ")) {
        Some(expected) => format!("{first} ({expected})"),
        None => first,
    }
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
