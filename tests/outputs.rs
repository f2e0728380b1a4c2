//! What convjit writes, where the path is not a plain file (`convjit::atomic`):
//! symbolic links are followed and kept, character devices and FIFOs are
//! written in place and never replaced, folders are refused, permission
//! bits are kept.
//!
//! Device nodes: the tests write `/dev/null` only through the code under
//! test and assert that it is still the same character device afterwards;
//! FIFOs and links are made in temporary folders.
#![cfg(unix)]

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{check, entries};
use convjit::Error;
use convjit::npy::{read_f32, write_f32};

const DATA: [f32; 4] = [1.0, -2.0, 3.5, 0.25];

/// The bytes `write_f32` makes of `DATA`, as it writes them to a plain file.
fn npy_of_data() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.npy");
    write_f32(&path, &[2, 2], &DATA).unwrap();
    fs::read(&path).unwrap()
}

fn assert_holds_data(path: &Path) {
    let back = read_f32(path, "output", &[2, 2]).unwrap();
    check(&path.display().to_string(), &[2, 2], &back, &DATA, 0.0);
}

fn mkfifo(path: &Path) {
    let name = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    let made = unsafe { libc::mkfifo(name.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

fn is_fifo(path: &Path) -> bool {
    fs::symlink_metadata(path).unwrap().file_type().is_fifo()
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).unwrap().file_type().is_symlink()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------
// Symbolic links
// ---------------------------------------------------------------------------

#[test]
fn a_symlink_to_a_file_stays_a_link_to_the_new_content() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    let target = dir.path().join("real").join("y.npy");
    fs::write(&target, b"old").unwrap();
    // An absolute link, and a relative one to it (a chain of two).
    let absolute = dir.path().join("abs.npy");
    symlink(&target, &absolute).unwrap();
    let relative = dir.path().join("rel.npy");
    symlink("abs.npy", &relative).unwrap();

    write_f32(&absolute, &[2, 2], &DATA).unwrap();
    assert!(is_link(&absolute));
    assert_holds_data(&target);

    fs::write(&target, b"old").unwrap();
    write_f32(&relative, &[2, 2], &DATA).unwrap();
    assert!(is_link(&relative) && is_link(&absolute));
    assert_eq!(fs::read_link(&relative).unwrap(), Path::new("abs.npy"));
    assert_holds_data(&target);
    // The temporary file was made beside the target and renamed over it:
    // nothing else is left in either folder.
    assert_eq!(entries(&dir.path().join("real")), ["y.npy"]);
    assert_eq!(entries(dir.path()), ["abs.npy", "real", "rel.npy"]);
}

#[test]
fn a_dangling_symlink_creates_its_target_and_stays() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("y.npy");
    symlink("made.npy", &link).unwrap();
    write_f32(&link, &[2, 2], &DATA).unwrap();
    assert!(is_link(&link));
    assert_holds_data(&dir.path().join("made.npy"));

    // A link into a missing folder: an error naming the path, the link kept.
    let lost = dir.path().join("lost.npy");
    symlink("nowhere/y.npy", &lost).unwrap();
    let e = write_f32(&lost, &[2, 2], &DATA).unwrap_err();
    assert!(e.to_string().contains("lost.npy"), "{e}");
    assert!(is_link(&lost));
    assert_eq!(entries(dir.path()), ["lost.npy", "made.npy", "y.npy"]);
}

#[test]
fn a_symlink_loop_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.npy"), dir.path().join("b.npy"));
    symlink("b.npy", &a).unwrap();
    symlink("a.npy", &b).unwrap();
    let e = write_f32(&a, &[2, 2], &DATA).unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("a.npy"), "{e}");
    assert!(convjit::atomic::check(&a).is_err());
    assert!(is_link(&a) && is_link(&b));
    assert_eq!(entries(dir.path()), ["a.npy", "b.npy"]);
}

// ---------------------------------------------------------------------------
// Devices, FIFOs and folders
// ---------------------------------------------------------------------------

/// Regression: as root, writing an output to `/dev/null` renamed a regular
/// file over the device node.
#[test]
fn dev_null_is_written_in_place_and_stays_a_character_device() {
    let null = Path::new("/dev/null");
    let before = fs::symlink_metadata(null).unwrap();
    assert!(before.file_type().is_char_device());
    write_f32(null, &[2, 2], &DATA).unwrap();
    convjit::atomic::check(null).unwrap();
    let after = fs::symlink_metadata(null).unwrap();
    assert!(after.file_type().is_char_device(), "/dev/null is no longer a device");
    assert_eq!((after.ino(), after.rdev()), (before.ino(), before.rdev()));
    // Through a link too: the link stays, the device is written.
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("sink.npy");
    symlink(null, &link).unwrap();
    write_f32(&link, &[2, 2], &DATA).unwrap();
    assert!(is_link(&link));
    assert!(fs::symlink_metadata(null).unwrap().file_type().is_char_device());
    assert_eq!(entries(dir.path()), ["sink.npy"]);
}

#[test]
fn a_fifo_is_written_in_place_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.npy");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            fs::File::open(&fifo).unwrap().read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    // The writer does not wait for a reader: until the thread has opened
    // its end, the FIFO is refused; then written.
    let started = Instant::now();
    loop {
        match write_f32(&fifo, &[2, 2], &DATA) {
            Ok(()) => break,
            Err(Error::Output { reason, .. }) if started.elapsed() < Duration::from_secs(20) => {
                assert!(reason.contains("nobody reads"), "{reason}");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("writing the FIFO: {e}"),
        }
    }
    assert_eq!(reader.join().unwrap(), npy_of_data());
    assert!(is_fifo(&fifo));
    assert_eq!(entries(dir.path()), ["pipe.npy"]);
}

#[test]
fn a_fifo_nobody_reads_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.npy");
    mkfifo(&fifo);
    let started = Instant::now();
    let e = write_f32(&fifo, &[2, 2], &DATA).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
    assert!(matches!(&e, Error::Output { reason, .. } if reason.contains("nobody reads")), "{e}");
    assert!(e.to_string().contains("pipe.npy"), "{e}");
    assert!(is_fifo(&fifo));
    assert_eq!(entries(dir.path()), ["pipe.npy"]);
}

#[test]
fn a_folder_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("out.npy");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("keep"), b"x").unwrap();
    for e in [
        write_f32(&folder, &[2, 2], &DATA).unwrap_err(),
        convjit::atomic::check(&folder).unwrap_err(),
    ] {
        assert!(matches!(&e, Error::Output { reason, .. } if reason.contains("folder")), "{e}");
        assert!(e.to_string().contains("out.npy"), "{e}");
    }
    // Through a link as well.
    let link = dir.path().join("link.npy");
    symlink("out.npy", &link).unwrap();
    assert!(matches!(write_f32(&link, &[2, 2], &DATA), Err(Error::Output { .. })));
    assert_eq!(entries(dir.path()), ["link.npy", "out.npy"]);
    assert_eq!(entries(&folder), ["keep"]);
}

#[test]
fn check_refuses_a_missing_folder_and_passes_what_write_writes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere").join("y.npy");
    let e = convjit::atomic::check(&missing).unwrap_err();
    assert!(e.to_string().contains("y.npy") && e.to_string().contains("does not exist"), "{e}");
    let new = dir.path().join("y.npy");
    convjit::atomic::check(&new).unwrap();
    let link = dir.path().join("link.npy");
    symlink("y.npy", &link).unwrap();
    convjit::atomic::check(&link).unwrap();
    write_f32(&link, &[2, 2], &DATA).unwrap();
    convjit::atomic::check(&new).unwrap();
    // Checking writes nothing.
    assert_eq!(entries(dir.path()), ["link.npy", "y.npy"]);
}

// ---------------------------------------------------------------------------
// Permission bits
// ---------------------------------------------------------------------------

/// Regression: every output became 0600 (the temporary file's mode),
/// whatever the umask and whatever the replaced file's mode.
#[test]
fn an_existing_file_keeps_its_mode_and_a_new_one_gets_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    // What `File::create` makes here, under this process's umask.
    let created = dir.path().join("created");
    fs::File::create(&created).unwrap();
    let new = dir.path().join("new.npy");
    write_f32(&new, &[2, 2], &DATA).unwrap();
    assert_eq!(mode(&new), mode(&created));

    for kept in [0o640, 0o604, 0o444, 0o755] {
        let path = dir.path().join(format!("{kept:o}.npy"));
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(kept)).unwrap();
        write_f32(&path, &[2, 2], &DATA).unwrap();
        assert_eq!(mode(&path), kept, "{}", path.display());
        assert_holds_data(&path);
    }
    // Set-user-ID and the like are not carried to a file of another owner.
    let setuid = dir.path().join("setuid.npy");
    fs::write(&setuid, b"old").unwrap();
    fs::set_permissions(&setuid, fs::Permissions::from_mode(0o4755)).unwrap();
    write_f32(&setuid, &[2, 2], &DATA).unwrap();
    assert_eq!(mode(&setuid), 0o755);
    // Through a link, the target's mode is kept.
    let target = dir.path().join("640.npy");
    let link = dir.path().join("link.npy");
    symlink(&target, &link).unwrap();
    write_f32(&link, &[2, 2], &DATA).unwrap();
    assert_eq!(mode(&target), 0o640);
}
