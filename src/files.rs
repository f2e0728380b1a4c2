//! Reading the files convjit is given, within bounds.
//!
//! Every file convjit reads goes through [`open`]: the path must name a
//! regular file once symbolic links are followed. A FIFO, a device node
//! (`/dev/zero`), a socket or a directory is refused before it is opened,
//! so a read can neither block on a FIFO nor run on forever. A file is then
//! read only up to the most bytes its format can legitimately hold
//! ([`Kind`]), and a larger one is refused from its size alone, without
//! reading it. The formats with a length of their own bound it themselves:
//! a `.npy` file ([`crate::npy`]) is its header (at most
//! [`crate::npy::MAX_HEADER_LEN`] bytes) plus exactly the data the expected
//! shape needs, and a safetensors file ([`crate::net::Tensors::load`]) is
//! its header (at most 100 MB, the format's own cap) plus the data its
//! header declares, checked against the file's size before any is read.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// A kind of file read whole: its name in errors, and the most bytes it
/// may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    /// What the file is, as errors name it ("spec", "model").
    pub what: &'static str,
    /// The most bytes a file of this kind may hold.
    pub limit: u64,
}

const MIB: u64 = 1 << 20;

/// A spec file (`--spec`): one layer, a few hundred bytes.
pub const SPEC: Kind = Kind { what: "spec", limit: MIB };
/// A schedule file (`--schedule`): a dozen fields.
pub const SCHEDULE: Kind = Kind { what: "schedule", limit: MIB };
/// A suite file (`--suite`): a list of specs.
pub const SUITE: Kind = Kind { what: "suite", limit: 16 * MIB };
/// A model file (`convjit net --model`): a list of layers.
pub const MODEL: Kind = Kind { what: "model", limit: 16 * MIB };
/// An ONNX model with its weights: protobuf's limit on one message (2 GiB).
pub const ONNX: Kind = Kind { what: "ONNX model", limit: 2 << 30 };
/// The tuning cache: one entry of about a kilobyte per tuned workload.
pub const TUNING_CACHE: Kind = Kind { what: "tuning cache", limit: 64 * MIB };
/// A tuning records file, one line per candidate ever evaluated; it is read
/// a line at a time, so its bound is on the file, not on memory at once.
pub const RECORDS: Kind = Kind { what: "records", limit: 1 << 30 };

/// Opens `path` for reading after checking that it names a regular file
/// (symbolic links followed), and returns it with its size. `what` names
/// the file's role in the error ("spec", "input").
pub fn open(path: &Path, what: &str) -> Result<(File, u64)> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    // Judged before opening: opening a FIFO blocks until a writer comes,
    // and opening a device may act on it.
    regular(path, what, &std::fs::metadata(path).map_err(io)?)?;
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        // Should a FIFO take the file's place meanwhile, the open does not
        // wait for a writer; on a regular file the flag changes nothing.
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    // The file opened is the one that counts.
    let metadata = file.metadata().map_err(io)?;
    regular(path, what, &metadata)?;
    Ok((file, metadata.len()))
}

/// Reads the whole of `path`, a file of `kind`: refused unless it is a
/// regular file of at most `kind.limit` bytes.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>> {
    let (file, size) = open(path, kind.what)?;
    if size > kind.limit {
        return Err(too_large(path, kind, Some(size)));
    }
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(kind.limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > kind.limit {
        // It grew while it was read.
        return Err(too_large(path, kind, None));
    }
    Ok(bytes)
}

/// Reads the whole of `path` as UTF-8 text, as [`read`] does.
pub fn read_text(path: &Path, kind: Kind) -> Result<String> {
    String::from_utf8(read(path, kind)?).map_err(|e| Error::InputFile {
        path: path.to_path_buf(),
        reason: format!(
            "not UTF-8 text (byte {} is not valid UTF-8): not a {} file",
            e.utf8_error().valid_up_to(),
            kind.what
        ),
    })
}

/// The refusal of a file larger than `kind` allows (`size`, when known).
pub(crate) fn too_large(path: &Path, kind: Kind, size: Option<u64>) -> Error {
    let found = match size {
        Some(size) => format!("this one is {size} bytes, refused unread"),
        None => "this one grew past that while it was read".to_string(),
    };
    Error::InputFile {
        path: path.to_path_buf(),
        reason: format!("a {} file holds at most {}; {found}", kind.what, bytes(kind.limit)),
    }
}

/// `n` bytes for people: in MiB or GiB when it is a whole number of them.
fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
        n if n >= MIB && n % MIB == 0 => format!("{} MiB", n >> 20),
        n => format!("{n} bytes"),
    }
}

/// Refuses what is not a regular file, naming what it is.
fn regular(path: &Path, what: &str, metadata: &Metadata) -> Result<()> {
    let kind = metadata.file_type();
    if kind.is_file() {
        return Ok(());
    }
    let found = if kind.is_dir() { "a directory" } else { special(&kind) };
    Err(Error::InputFile {
        path: path.to_path_buf(),
        reason: format!("{found}, not a regular file: the {what} must be read from a file"),
    })
}

#[cfg(unix)]
fn special(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special(_: &std::fs::FileType) -> &'static str {
    "a special file"
}
