//! Schedule resolution (`convjit::source`): a given schedule with the
//! request's threads, else the compiler's schedule source, else the
//! heuristic for the request's threads; each with its origin.

mod common;

use std::sync::Arc;

use common::{spec, with_pixel_tile};
use convjit::schedule::{self, Algorithm, Depthwise, InputCopy, Run, Schedule, Split};
use convjit::source::{Given, Origin, Request, ScheduleSource};
use convjit::{Compiler, Error, ValidSpec};

/// 7.1 M MACs and 16 output rows: worth two threads, and the heuristic's
/// bands depend on the thread count; 48 output channels, computed direct
/// (not through Winograd, whose tile is the products').
const LAYER: &str = r#"{"op":"conv2d","in_channels":64,"out_channels":48,"height":16,"width":16,"kernel":3,"padding":1}"#;

/// A source holding one schedule, for one thread only.
struct OneThread(Schedule);

impl ScheduleSource for OneThread {
    fn schedule(&self, _: &ValidSpec, threads: usize) -> Option<Schedule> {
        (threads == 1).then_some(self.0)
    }

    fn describe(&self) -> String {
        "the test's source".to_string()
    }
}

fn request(threads: Option<usize>) -> Request {
    Request { given: None, threads }
}

#[test]
fn without_a_source_the_heuristic_for_the_requested_threads() {
    let layer = spec(LAYER);
    let compiler = Compiler::host().unwrap();
    for (threads, want) in [
        (None, schedule::choose(&layer)),
        (Some(1), schedule::choose(&layer)),
        (Some(2), schedule::choose_threaded(&layer, 2)),
    ] {
        let resolved = compiler.resolve(&layer, &request(threads)).unwrap();
        assert_eq!(resolved.schedule, want, "{threads:?}");
        assert_eq!(resolved.origin, Origin::Heuristic { missed: None });
        assert_eq!(resolved.origin.to_string(), "heuristic");
        assert_eq!(compiler.schedule_for(&layer, threads.unwrap_or(1)), want);
    }
    for threads in [0, schedule::MAX_THREADS + 1] {
        let refused = compiler.resolve(&layer, &request(Some(threads)));
        assert!(matches!(refused, Err(Error::InvalidThreads(t)) if t == threads), "{refused:?}");
    }
}

#[test]
fn a_source_is_asked_before_the_heuristic() {
    let layer = spec(LAYER);
    let held = with_pixel_tile(schedule::choose(&layer), 5);
    let compiler = Compiler::host().unwrap().with_source(Arc::new(OneThread(held)));
    let resolved = compiler.resolve(&layer, &request(None)).unwrap();
    assert_eq!(resolved.schedule, held);
    assert_eq!(resolved.origin.to_string(), "tuned, from the test's source");
    assert_eq!(compiler.schedule_for(&layer, 1), held);
    assert_eq!(compiler.tuned_schedule(&layer, 1), Some(held));

    let resolved = compiler.resolve(&layer, &request(Some(2))).unwrap();
    assert_eq!(resolved.schedule, schedule::choose_threaded(&layer, 2));
    assert_eq!(
        resolved.origin.to_string(),
        "heuristic: the test's source holds no schedule for this layer"
    );
    assert_eq!(compiler.schedule_for(&layer, 2), resolved.schedule);
}

#[test]
fn a_given_schedule_wins_and_takes_the_requested_threads_only() {
    let layer = spec(LAYER);
    let held = with_pixel_tile(schedule::choose(&layer), 5);
    let compiler = Compiler::host().unwrap().with_source(Arc::new(OneThread(held)));
    let file = with_pixel_tile(schedule::choose(&layer), 3);
    let given = Given::new(file, &layer, "a file").unwrap();
    for threads in [None, Some(1), Some(3)] {
        let request = Request { given: Some(given.clone()), threads };
        let resolved = compiler.resolve(&layer, &request).unwrap();
        // The file's bands of 4 rows stay: nothing is re-derived for the count.
        let want = Schedule {
            run: Run { threads: threads.unwrap_or(file.run.threads), ..file.run },
            ..file
        };
        assert_eq!(resolved.schedule, want, "{threads:?}");
        assert_eq!(resolved.origin, Origin::Given("a file".to_string()));
        assert_eq!(resolved.origin.to_string(), "from a file");
    }
    // Threads that the given schedule cannot take are refused, naming the field.
    let groups = Schedule { copy: InputCopy::Group, run: file.run.split(Split::Rows), ..file };
    let request =
        Request { given: Some(Given::new(groups, &layer, "groups").unwrap()), threads: Some(2) };
    let refused = compiler.resolve(&layer, &request);
    assert!(matches!(refused, Err(Error::InvalidSchedule { field: "split", .. })), "{refused:?}");
    let request = Request { given: Some(given), threads: Some(0) };
    let refused = compiler.resolve(&layer, &request);
    assert!(matches!(refused, Err(Error::InvalidSchedule { field: "threads", .. })), "{refused:?}");
    // A schedule the layer cannot use is refused when it is given.
    let tile = file.tile();
    let depthwise = Schedule { algorithm: Algorithm::Depthwise(Depthwise { tile }), ..file };
    assert!(Given::new(depthwise, &layer, "depthwise").is_err());
}

#[test]
fn a_schedule_file_is_read_checked_and_named() {
    let layer = spec(LAYER);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.json");
    let file = with_pixel_tile(schedule::choose(&layer), 3);
    std::fs::write(&path, file.to_json()).unwrap();
    let given = Given::load(&path, &layer).unwrap();
    assert_eq!(*given.schedule(), file);
    let resolved = Compiler::host()
        .unwrap()
        .resolve(&layer, &Request { given: Some(given.clone()), threads: None });
    assert_eq!(resolved.unwrap().origin.to_string(), format!("from {}", path.display()));
    let renamed = Request { given: Some(given.named("--schedule")), threads: None };
    let resolved = Compiler::host().unwrap().resolve(&layer, &renamed).unwrap();
    assert_eq!(resolved.origin.to_string(), "from --schedule");

    let shown = path.display().to_string();
    std::fs::write(&path, "{").unwrap();
    let e = Given::load(&path, &layer).unwrap_err().to_string();
    assert!(e.starts_with(&format!("schedule file {shown}: invalid schedule JSON")), "{e}");
    let huge = with_pixel_tile(file, 99);
    std::fs::write(&path, huge.to_json()).unwrap();
    let e = Given::load(&path, &layer).unwrap_err().to_string();
    assert!(e.starts_with(&format!("schedule file {shown}: invalid schedule: pixel_tile")), "{e}");
    let missing = dir.path().join("missing.json");
    let e = Given::load(&missing, &layer).unwrap_err().to_string();
    assert!(e.starts_with("cannot read the schedule file: ") && e.contains("missing.json"), "{e}");
}
