//! Writing output files all or nothing (DESIGN.md contract 3): every file
//! convjit writes (`.npy` outputs, the bench's JSON report and chart, the
//! tuning cache) goes through [`write`](fn@write).
//!
//! What the path names decides how it is written:
//!
//! - **A regular file, or nothing yet**: the bytes go to a temporary file
//!   beside it, which is renamed over it only once complete, so a failure
//!   never leaves a partial file behind and a reader sees the old file or
//!   the new one, never a mix. An existing file keeps its permission bits
//!   (`rwx` for user, group and others; not set-user-ID, set-group-ID or
//!   sticky, since the new file's owner is the writer); a new file gets
//!   0666 minus the umask, as `File::create` gives. The new file is a new
//!   inode: other hard links to the old one keep the old content.
//! - **A symbolic link** is followed to its final target (through a chain
//!   of links, relative ones taken from the link's folder), and the
//!   temporary file is made beside that target and renamed over it: the
//!   link stays a link and points at the new content. A dangling link
//!   creates the file it names, as a shell's `>` does; a loop of links is
//!   an error.
//! - **A character device or a FIFO** (`/dev/null`, `/dev/stdout`, a named
//!   pipe) cannot be replaced without destroying it — as root, renaming
//!   over `/dev/null` would do just that — so it is opened and written
//!   directly. There is no atomicity to keep there: the reader sees the
//!   bytes as they come, and a failure midway leaves what was written. A
//!   FIFO is opened without waiting: one that nobody reads is refused at
//!   once rather than waited on for ever.
//! - **A folder, a block device or a socket** is refused with
//!   [`Error::Output`]: a folder cannot hold the output, and writing a
//!   disk or a socket is never what an output path means.
//!
//! [`check`] makes the same decision without writing, so that a command
//! can refuse an output path before its work rather than after.

use std::fs::{self, File, Metadata};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The most symbolic links followed from one path, as Linux's own limit.
const MAX_LINKS: usize = 40;

/// Writes `path` through `fill`, as the module's documentation says: for a
/// regular file, the file appears only if `fill` and every write succeed.
pub fn write(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    match destination(path)? {
        Destination::Replace { target, mode } => replace(path, &target, mode, fill),
        Destination::Stream => stream(path, fill),
    }
}

/// Checks that [`write`](fn@write) could write `path`, without writing it: that it
/// is not a folder, a block device or a socket, and that the folder a new
/// file would go in exists. Whether the folder may be written is known
/// only by writing it.
pub fn check(path: &Path) -> Result<()> {
    match destination(path)? {
        Destination::Replace { target, .. } => {
            let dir = folder(&target);
            if dir.is_dir() {
                Ok(())
            } else {
                Err(refused(path, format!("the folder {} does not exist", dir.display())))
            }
        }
        Destination::Stream => Ok(()),
    }
}

/// The file a write of `path` replaces: `path` itself, or, when it is a
/// symbolic link, the final target of its chain of links (which need not
/// exist). The tuning cache takes its lock and its backups beside it.
pub fn final_target(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let to = fs::read_link(&current).map_err(|source| io(&current, source))?;
                // A relative link is relative to the folder that holds it;
                // joining an absolute one replaces the folder.
                current = folder(&current).join(to);
            }
            Ok(_) => return Ok(current),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(current),
            Err(e) => return Err(io(&current, e)),
        }
    }
    Err(refused(path, format!("more than {MAX_LINKS} symbolic links in a chain (a loop?)")))
}

/// How `path` is written.
enum Destination {
    /// Through a temporary file renamed over `target`, the path itself or
    /// its links' final target; `mode`: the existing file's permission
    /// bits, to keep.
    Replace { target: PathBuf, mode: Option<u32> },
    /// Opened and written in place (a character device or a FIFO).
    Stream,
}

fn destination(path: &Path) -> Result<Destination> {
    // `metadata` follows links, through /proc's too (`/proc/self/fd/1`
    // names a pipe no path leads to): the kind is the final target's.
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Destination::Replace { target: final_target(path)?, mode: None });
        }
        Err(e) => return Err(io(path, e)),
    };
    let kind = meta.file_type();
    if kind.is_file() {
        let target = final_target(path)?;
        // A link /proc resolves itself (a deleted file's, say) may name no
        // path that leads to the file: replacing that path would write the
        // output somewhere else.
        match fs::metadata(&target) {
            Ok(found) if same_file(&found, &meta) => {}
            _ => {
                return Err(refused(
                    path,
                    format!("the link's target {} cannot be replaced", target.display()),
                ));
            }
        }
        return Ok(Destination::Replace { target, mode: permission_bits(&meta) });
    }
    if kind.is_dir() {
        return Err(refused(path, "is a folder: give a file name".to_string()));
    }
    match special(&meta) {
        Special::Writable => Ok(Destination::Stream),
        Special::Refused(what) => Err(refused(
            path,
            format!("is {what}: convjit writes regular files, character devices and FIFOs"),
        )),
    }
}

/// Writes through a temporary file beside `target`, renamed over it.
fn replace(
    path: &Path,
    target: &Path,
    mode: Option<u32>,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".convjit-").suffix(".tmp");
    // The temporary file is made 0666 minus the umask, as `File::create`
    // makes a file (tempfile's default is 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(folder(target)).map_err(|e| io(path, e))?;
    if let Some(mode) = mode {
        set_mode(tmp.as_file(), mode).map_err(|e| io(path, e))?;
    }
    {
        let mut buffered = BufWriter::new(tmp.as_file_mut());
        fill(&mut buffered).map_err(|e| io(path, e))?;
        buffered.flush().map_err(|e| io(path, e))?;
    }
    tmp.persist(target).map_err(|e| io(path, e.error))?;
    Ok(())
}

/// Opens `path`, a character device or a FIFO, and writes it in place.
fn stream(path: &Path, fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let mut file = open_stream(path)?;
    let mut buffered = BufWriter::new(&mut file);
    fill(&mut buffered).map_err(|e| io(path, e))?;
    buffered.flush().map_err(|e| io(path, e))
}

/// Opens a character device or a FIFO for writing without waiting for a
/// reader (a FIFO nobody reads is refused), then lets writes wait as usual.
#[cfg(unix)]
fn open_stream(path: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                refused(path, "is a FIFO that nobody reads: start its reader first".to_string())
            } else {
                io(path, e)
            }
        })?;
    // SAFETY: F_GETFL and F_SETFL on a descriptor the `File` owns and keeps
    // open; they change only its status flags.
    let cleared = unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) >= 0
    };
    if !cleared {
        return Err(io(path, std::io::Error::last_os_error()));
    }
    Ok(file)
}

#[cfg(not(unix))]
fn open_stream(path: &Path) -> Result<File> {
    fs::OpenOptions::new().write(true).open(path).map_err(|e| io(path, e))
}

/// What a path that is neither a file nor a folder is.
enum Special {
    /// A character device or a FIFO: written in place.
    Writable,
    /// Anything else, named.
    Refused(&'static str),
}

#[cfg(unix)]
fn special(meta: &Metadata) -> Special {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_char_device() || kind.is_fifo() {
        Special::Writable
    } else if kind.is_block_device() {
        Special::Refused("a block device")
    } else if kind.is_socket() {
        Special::Refused("a socket")
    } else {
        Special::Refused("not a regular file")
    }
}

#[cfg(not(unix))]
fn special(_: &Metadata) -> Special {
    Special::Refused("not a regular file")
}

#[cfg(unix)]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(a: &Metadata, b: &Metadata) -> bool {
    a.is_file() && b.is_file()
}

/// The permission bits a replaced file keeps (none off Unix).
#[cfg(unix)]
fn permission_bits(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn permission_bits(_: &Metadata) -> Option<u32> {
    None
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &File, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// The folder that holds `path` (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

fn refused(path: &Path, reason: String) -> Error {
    Error::Output { path: path.to_path_buf(), reason }
}
