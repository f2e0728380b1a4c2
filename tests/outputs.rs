//! What convjit writes, where the path is not a plain file (`convjit::atomic`):
//! symbolic links are followed and kept, character devices and FIFOs are
//! written in place and never replaced, folders are refused, permission
//! bits are kept; and the tuning cache under concurrent writers (a lock),
//! with every unreadable version kept.
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
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{check, entries, spec};
use convjit::Error;
use convjit::npy::{read_f32, write_f32};
use convjit::schedule;
use convjit::tune::{Entry, TuningCache, Workload};

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
    // A blocking open would wait for a reader forever: the error itself
    // shows the open did not wait.
    let e = write_f32(&fifo, &[2, 2], &DATA).unwrap_err();
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

// ---------------------------------------------------------------------------
// The tuning cache
// ---------------------------------------------------------------------------

/// An entry for a 1×1 conv with `out` output channels: workloads differ by
/// `out`.
fn entry(out: usize) -> Entry {
    let layer = spec(&format!(
        r#"{{"op": "conv2d", "in_channels": 4, "out_channels": {out}, "height": 6, "width": 6, "kernel": 1}}"#
    ));
    Entry {
        workload: Workload::host(&layer, 1),
        schedule: schedule::choose(&layer),
        macs_per_cycle: out as f64,
        heuristic_macs_per_cycle: 1.0,
        candidates: out,
        tuned_at: 1_800_000_000,
    }
}

fn workloads(path: &Path) -> Vec<Workload> {
    TuningCache::load(path).entries().iter().map(|e| e.workload.clone()).collect()
}

/// Regression: two writers each loaded the cache, added their entry and
/// renamed their file over it; the last rename won and the other's entry
/// was lost.
#[test]
fn concurrent_updates_keep_every_entry() {
    const WRITERS: usize = 8;
    const EACH: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    let barrier = std::sync::Barrier::new(WRITERS);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (path, barrier) = (&path, &barrier);
            s.spawn(move || {
                barrier.wait();
                for i in 0..EACH {
                    TuningCache::update(path, entry(1 + w * EACH + i)).unwrap();
                }
            });
        }
    });
    let found = workloads(&path);
    assert_eq!(found.len(), WRITERS * EACH, "entries lost");
    for out in 1..=WRITERS * EACH {
        assert!(found.contains(&entry(out).workload), "the entry of {out} channels is lost");
    }
    assert_eq!(entries(dir.path()), ["tuning.json", "tuning.json.lock"]);
}

/// Regression: the second unreadable cache was moved over the first one's
/// backup, though the documentation says an unreadable file is never
/// overwritten.
#[test]
fn successive_unreadable_caches_are_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tuning.json");
    let garbage: [&[u8]; 3] =
        [b"{ not json", b"[1, 2, 3]", br#"{"format": "other", "version": 1, "entries": []}"#];
    for (n, bad) in garbage.iter().enumerate() {
        fs::write(&path, bad).unwrap();
        TuningCache::update(&path, entry(n + 1)).unwrap();
        assert_eq!(workloads(&path), [entry(n + 1).workload]);
    }
    assert_eq!(fs::read(dir.path().join("tuning.json.bak")).unwrap(), garbage[0]);
    assert_eq!(fs::read(dir.path().join("tuning.json.bak.1")).unwrap(), garbage[1]);
    assert_eq!(fs::read(dir.path().join("tuning.json.bak.2")).unwrap(), garbage[2]);
    // A readable cache is updated in place: no further backup.
    TuningCache::update(&path, entry(9)).unwrap();
    assert_eq!(
        entries(dir.path()),
        [
            "tuning.json",
            "tuning.json.bak",
            "tuning.json.bak.1",
            "tuning.json.bak.2",
            "tuning.json.lock"
        ]
    );
}

/// Regression: a cache reached through a symbolic link was replaced by a
/// regular file, so the file the link named silently stopped being updated.
#[test]
fn a_symlinked_cache_stays_a_link_and_is_updated() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    let target = shared.join("tuning.json");
    let link = dir.path().join("tuning.json");
    symlink(&target, &link).unwrap();
    TuningCache::update(&link, entry(1)).unwrap();
    TuningCache::update(&target, entry(2)).unwrap();
    TuningCache::update(&link, entry(3)).unwrap();
    assert!(is_link(&link));
    assert_eq!(workloads(&target), [1, 2, 3].map(|o| entry(o).workload));
    // One lock for both paths, beside the target; nothing beside the link.
    assert_eq!(entries(&shared), ["tuning.json", "tuning.json.lock"]);
    assert_eq!(entries(dir.path()), ["shared", "tuning.json"]);
    // An unreadable target is kept beside itself, the link still a link.
    fs::write(&target, b"junk").unwrap();
    TuningCache::update(&link, entry(4)).unwrap();
    assert!(is_link(&link));
    assert_eq!(fs::read(shared.join("tuning.json.bak")).unwrap(), b"junk");
    assert_eq!(workloads(&link), [entry(4).workload]);
}

#[test]
fn loading_takes_no_lock_and_reads_a_read_only_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ro");
    let path = folder.join("tuning.json");
    TuningCache::update(&path, entry(1)).unwrap();
    fs::remove_file(folder.join("tuning.json.lock")).unwrap();
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o555)).unwrap();
    let loaded = workloads(&path);
    let compiler = convjit::Compiler::host().unwrap().with_tuning_cache(&path);
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(loaded, [entry(1).workload]);
    let layer = spec(
        r#"{"op": "conv2d", "in_channels": 4, "out_channels": 1, "height": 6, "width": 6, "kernel": 1}"#,
    );
    assert_eq!(compiler.tuned_schedule(&layer, 1), Some(entry(1).schedule));
    // Loading made no lock file (root may write a read-only folder anyway).
    assert_eq!(entries(&folder), ["tuning.json"]);
}

#[test]
fn a_cache_on_dev_null_is_written_in_place() {
    let before = fs::symlink_metadata("/dev/null").unwrap();
    TuningCache::update(Path::new("/dev/null"), entry(1)).unwrap();
    let after = fs::symlink_metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device(), "/dev/null is no longer a device");
    assert_eq!((after.ino(), after.rdev()), (before.ino(), before.rdev()));
    assert!(!PathBuf::from("/dev/null.lock").exists());
    assert!(!PathBuf::from("/dev/null.bak").exists());
}
