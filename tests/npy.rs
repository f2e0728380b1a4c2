//! Tensor files (DESIGN.md, contract 2): float32 `.npy` in C order,
//! written little-endian, read little- or big-endian; read back with the
//! shape checked, refused with the file and the reason named, written
//! atomically. Hostile files: `tests/fuzz.rs`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{check, entries, random_tensor};
use convjit::Error;
use convjit::npy::{read_f32, write_f32};

/// A `.npy` file (format 1.0) as numpy writes it: the magic string, the
/// version, the header length, a Python dict literal padded with spaces and
/// ended by a newline so that the data starts at a multiple of 64, the data.
fn npy_bytes(descr: &str, fortran_order: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let order = if fortran_order { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape_text}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    assert_eq!(bytes.len() % 64, 0);
    bytes.extend_from_slice(data);
    bytes
}

fn le_f32(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Asserts that reading `path` as `expected` fails with an error naming the
/// file, whose message contains every one of `fragments`.
fn refused(path: &Path, expected: &[usize], fragments: &[&str]) {
    match read_f32(path, "input", expected) {
        Err(e @ Error::TensorFile { .. }) => {
            let Error::TensorFile { path: named, .. } = &e else { unreachable!() };
            assert_eq!(named, path);
            let message = e.to_string();
            assert!(
                message.contains(&path.display().to_string()),
                "{message}: the file is not named"
            );
            for fragment in fragments {
                assert!(message.contains(fragment), "{message}: lacks {fragment:?}");
            }
        }
        Err(e) => panic!("{}: expected a TensorFile error, got {e:?}", path.display()),
        Ok(data) => panic!("{}: read {} values instead of refusing", path.display(), data.len()),
    }
}

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[test]
fn write_then_read_round_trips() {
    let dir = temp();
    for shape in [vec![2, 3, 4, 5], vec![7], vec![1, 1, 1, 1], vec![3, 1, 2]] {
        let n: usize = shape.iter().product();
        let data = random_tensor(n as u64, n);
        let path = dir.path().join(format!("t{}.npy", shape.len()));
        write_f32(&path, &shape, &data).unwrap();
        let back = read_f32(&path, "input", &shape).unwrap();
        check(&path.display().to_string(), &shape, &back, &data, 0.0);
    }
}

#[test]
fn special_values_round_trip() {
    let dir = temp();
    let path = dir.path().join("special.npy");
    let data = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        f32::MIN_POSITIVE / 8.0, // subnormal
        f32::MAX,
        f32::MIN,
        1.0e-30,
    ];
    write_f32(&path, &[2, 4], &data).unwrap();
    let back = read_f32(&path, "input", &[2, 4]).unwrap();
    check("special values", &[2, 4], &back, &data, 0.0);
    assert!(back[3] == 0.0 && back[3].is_sign_negative(), "−0 lost its sign");
}

#[test]
fn written_files_are_little_endian_float32_in_c_order() {
    let dir = temp();
    let path = dir.path().join("y.npy");
    write_f32(&path, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    // numpy writes (2, 3), npyz (2, 3, ): the same Python tuple.
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(compact.contains("'shape':(2,3)") || compact.contains("'shape':(2,3,)"), "{header}");
    // The data, row by row, each value as 4 little-endian bytes.
    assert_eq!(&bytes[10 + header_len..], le_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).as_slice());
}

#[test]
fn reads_files_written_by_numpy() {
    let dir = temp();
    let path = dir.path().join("numpy.npy");
    let values = [1.5, -2.0, 0.25, 1.0e6, -0.0, 3.0];
    fs::write(&path, npy_bytes("<f4", false, &[1, 2, 3], &le_f32(&values))).unwrap();
    let back = read_f32(&path, "input", &[1, 2, 3]).unwrap();
    check("hand-written <f4", &[1, 2, 3], &back, &values, 0.0);
}

#[test]
fn big_endian_float32_is_read_correctly() {
    // A big-endian file ('>f4', as the dtype error says) reads back its
    // values, never byte-swapped garbage.
    let dir = temp();
    let path = dir.path().join("big.npy");
    let values = [1.5f32, -2.0, 0.25, 7.0];
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    fs::write(&path, npy_bytes(">f4", false, &[4], &data)).unwrap();
    let back = read_f32(&path, "input", &[4]).unwrap();
    check("big-endian >f4", &[4], &back, &values, 0.0);
}

// ---------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------

#[test]
fn wrong_dtypes_are_refused() {
    let dir = temp();
    let f64_path = dir.path().join("double.npy");
    let doubles: Vec<u8> = [1.0f64, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    fs::write(&f64_path, npy_bytes("<f8", false, &[2, 2], &doubles)).unwrap();
    refused(&f64_path, &[2, 2], &["float32", "'<f4'", "'>f4'", "<f8"]);

    let i32_path = dir.path().join("int.npy");
    let ints: Vec<u8> = [1i32, 2, 3, 4].iter().flat_map(|v| v.to_le_bytes()).collect();
    fs::write(&i32_path, npy_bytes("<i4", false, &[2, 2], &ints)).unwrap();
    refused(&i32_path, &[2, 2], &["float32", "<i4"]);

    let f16_path = dir.path().join("half.npy");
    fs::write(&f16_path, npy_bytes("<f2", false, &[2, 2], &[0; 8])).unwrap();
    refused(&f16_path, &[2, 2], &["float32", "<f2"]);
}

#[test]
fn wrong_rank_is_refused_with_both_shapes() {
    let dir = temp();
    let path = dir.path().join("x.npy");
    write_f32(&path, &[2, 3, 4], &random_tensor(1, 24)).unwrap();
    refused(&path, &[2, 3, 4, 1], &["input", "expected [2, 3, 4, 1]", "found [2, 3, 4]"]);
    refused(&path, &[24], &["expected [24]", "found [2, 3, 4]"]);
    refused(&path, &[1, 2, 3, 4], &["expected [1, 2, 3, 4]", "found [2, 3, 4]"]);
}

#[test]
fn wrong_shape_is_refused_with_both_shapes() {
    let dir = temp();
    let path = dir.path().join("w.npy");
    write_f32(&path, &[2, 3, 4, 5], &random_tensor(2, 120)).unwrap();
    // Same element count, different shape: never reinterpreted.
    refused(&path, &[2, 3, 5, 4], &["expected [2, 3, 5, 4]", "found [2, 3, 4, 5]"]);
    refused(&path, &[1, 6, 4, 5], &["expected [1, 6, 4, 5]", "found [2, 3, 4, 5]"]);
    refused(&path, &[2, 3, 4, 6], &["expected [2, 3, 4, 6]", "found [2, 3, 4, 5]"]);
}

#[test]
fn truncated_files_are_refused() {
    let dir = temp();
    let path = dir.path().join("x.npy");
    write_f32(&path, &[2, 8], &random_tensor(3, 16)).unwrap();
    let bytes = fs::read(&path).unwrap();
    // One value short, and one byte short.
    fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    refused(&path, &[2, 8], &["truncated", "64", "60"]);
    fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    refused(&path, &[2, 8], &["truncated"]);
    // No data at all.
    fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
    refused(&path, &[2, 8], &["truncated"]);
    // Cut inside the header.
    fs::write(&path, &bytes[..20]).unwrap();
    refused(&path, &[2, 8], &[]);
}

#[test]
fn trailing_bytes_are_refused() {
    let dir = temp();
    let path = dir.path().join("x.npy");
    write_f32(&path, &[3], &[1.0, 2.0, 3.0]).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&4.0f32.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    refused(&path, &[3], &["trailing", "12", "16"]);
    bytes.push(0);
    fs::write(&path, &bytes).unwrap();
    refused(&path, &[3], &["trailing"]);
}

#[test]
fn files_that_are_not_npy_are_refused() {
    let dir = temp();
    let path = dir.path().join("x.npy");
    for content in [&b"hello, world\n"[..], b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00\xff\xff{'descr'"]
    {
        fs::write(&path, content).unwrap();
        refused(&path, &[1], &[]);
    }
    // A header that is not a dict numpy would write.
    let mut bogus = npy_bytes("<f4", false, &[1], &le_f32(&[1.0]));
    bogus[10] = b'[';
    fs::write(&path, &bogus).unwrap();
    refused(&path, &[1], &[]);
}

#[test]
fn fortran_order_is_refused() {
    let dir = temp();
    let path = dir.path().join("f.npy");
    fs::write(&path, npy_bytes("<f4", true, &[2, 3], &le_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])))
        .unwrap();
    refused(&path, &[2, 3], &["Fortran"]);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let dir = temp();
    let path = dir.path().join("absent.npy");
    match read_f32(&path, "weight", &[1]) {
        Err(e @ Error::Io { .. }) => {
            assert!(e.to_string().contains(&path.display().to_string()), "{e}")
        }
        other => panic!("expected an Io error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Atomic writes
// ---------------------------------------------------------------------------

#[test]
fn a_successful_write_leaves_only_the_file() {
    let dir = temp();
    let path = dir.path().join("out.npy");
    write_f32(&path, &[2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    assert_eq!(entries(dir.path()), ["out.npy"]);
    // Overwriting replaces the content, and still leaves nothing else.
    write_f32(&path, &[3], &[5.0, 6.0, 7.0]).unwrap();
    assert_eq!(entries(dir.path()), ["out.npy"]);
    let back = read_f32(&path, "output", &[3]).unwrap();
    check("overwritten", &[3], &back, &[5.0, 6.0, 7.0], 0.0);
}

#[test]
fn writing_into_a_missing_directory_fails_and_creates_nothing() {
    let dir = temp();
    let path: PathBuf = dir.path().join("missing").join("out.npy");
    match write_f32(&path, &[1], &[1.0]) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("out.npy"), "{e}"),
        other => panic!("expected an Io error, got {other:?}"),
    }
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn writing_below_a_file_fails_and_leaves_it_alone() {
    let dir = temp();
    let file = dir.path().join("plain");
    fs::write(&file, b"not a folder").unwrap();
    assert!(write_f32(&file.join("out.npy"), &[1], &[1.0]).is_err());
    assert_eq!(entries(dir.path()), ["plain"]);
    assert_eq!(fs::read(&file).unwrap(), b"not a folder");
}

#[test]
fn a_failed_rename_leaves_no_temporary_file() {
    // Renaming over a directory fails: the temporary file must go, and the
    // folder be left as it was.
    let dir = temp();
    let target = dir.path().join("out.npy");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("keep"), b"x").unwrap();
    assert!(write_f32(&target, &[1], &[1.0]).is_err());
    assert_eq!(entries(dir.path()), ["out.npy"]);
    assert_eq!(entries(&target), ["keep"]);
}
