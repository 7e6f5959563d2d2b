//! Sinks through a real run in this process: a sink receives the validated
//! version in key order before LMDB flips and hears of the flip after it;
//! a sink whose push fails makes the run fail naming it, and nothing flips.

mod common;

use std::sync::{Arc, Mutex};

use common::{HERD, JobShape, Scratch};
use herd::run::{self, Options};
use herd::store::sink::Sink;
use herd::store::{Status, Store, ValueRef, VersionRecord};

/// What a sink saw, in order.
#[derive(Debug, Default)]
struct Seen {
    calls: Vec<String>,
    keys: Vec<Vec<u8>>,
    /// The store's live version when `end` and `flip` were called.
    live_at_end: Option<Option<u64>>,
    live_at_flip: Option<Option<u64>>,
}

struct Recording {
    store: std::path::PathBuf,
    seen: Arc<Mutex<Seen>>,
    /// Refuse the put of this many-th prediction.
    fail_at: Option<usize>,
}

impl Recording {
    fn live(&self) -> Option<u64> {
        Store::open_existing(&self.store).unwrap().live().unwrap()
    }
}

impl Sink for Recording {
    fn name(&self) -> String {
        "recording test-sink".into()
    }

    fn begin(&mut self, version: &VersionRecord) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap();
        seen.calls.push(format!("begin v{}", version.version));
        Ok(())
    }

    fn put(&mut self, key: &[u8], value: ValueRef<'_>) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap();
        if self.fail_at == Some(seen.keys.len()) {
            return Err("the server went away".into());
        }
        assert!(value.count() > 0);
        seen.keys.push(key.to_vec());
        Ok(())
    }

    fn end(&mut self) -> Result<(), String> {
        let live = self.live();
        let mut seen = self.seen.lock().unwrap();
        seen.calls.push("end".into());
        seen.live_at_end = Some(live);
        Ok(())
    }

    fn flip(&mut self, version: u64) -> Result<(), String> {
        let live = self.live();
        let mut seen = self.seen.lock().unwrap();
        seen.calls.push(format!("flip v{version}"));
        seen.live_at_flip = Some(live);
        Ok(())
    }
}

fn run_with(s: &Scratch, sink: Recording) -> Result<run::Report, run::Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (events, _keep_events) = tokio::sync::mpsc::unbounded_channel();
        let (_controls, controls_rx) = tokio::sync::mpsc::unbounded_channel();
        let opts = Options {
            job: s.job(),
            sinks: vec![Box::new(sink)],
            ..Options::default()
        };
        run::run(opts, events, controls_rx).await
    })
}

#[test]
fn a_sink_gets_the_validated_version_before_the_flip_and_a_failed_push_flips_nothing() {
    // The run starts its local workers from the herd binary, not this test.
    // SAFETY: the only test of this process, before any thread is started.
    unsafe { std::env::set_var(herd::fleet::local::WORKER_EXE_ENV, HERD) };
    let shape = JobShape {
        users: 300,
        ..JobShape::default()
    };
    let s = Scratch::new(&shape);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = Recording {
        store: s.store(),
        seen: seen.clone(),
        fail_at: None,
    };
    let report = run_with(&s, sink).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.flipped);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.calls, ["begin v1", "end", "flip v1"]);
    assert_eq!(seen.live_at_end, Some(None), "pushed after the flip");
    assert_eq!(seen.live_at_flip, Some(Some(1)), "told before LMDB flipped");
    assert_eq!(seen.keys.len(), shape.users as usize);
    assert!(
        seen.keys.windows(2).all(|w| w[0] < w[1]),
        "not in key order"
    );
    drop(seen);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let failing = Recording {
        store: s.store(),
        seen: seen.clone(),
        fail_at: Some(10),
    };
    let e = run_with(&s, failing).expect_err("a failed push must fail the run");
    assert_eq!(e.exit_code(), 1);
    let message = e.to_string();
    assert!(message.contains("recording test-sink"), "{message}");
    assert!(message.contains("the server went away"), "{message}");
    let store = Store::open_existing(&s.store()).unwrap();
    assert_eq!(store.live().unwrap(), Some(1), "nothing flips");
    assert_eq!(store.record(2).unwrap().status, Status::Validated);
    assert!(
        !seen
            .lock()
            .unwrap()
            .calls
            .iter()
            .any(|c| c.starts_with("flip"))
    );
}
