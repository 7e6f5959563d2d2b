//! The attempts of a run as a Chrome trace (`{"traceEvents": [...]}`), so a
//! finished run opens in Perfetto or `chrome://tracing`: one process per host,
//! one thread per worker slot, one complete (`X`) event per attempt.
//! Pure: builds a JSON value, writes nothing.

use serde_json::{Value, json};

use crate::run::Event;
use crate::sched::Snapshot;
use crate::ui::state::{attempt_state_word, slot_labels};

/// The trace of `snapshot`'s attempts; host names come from the `Started`
/// event (`host{id}` when `started` is another event). Times are microseconds
/// of run time; a running attempt ends at the snapshot's `now`.
pub fn trace_json(started: &Event, snapshot: &Snapshot) -> Value {
    let names: Vec<(u32, String)> = match started {
        Event::Started { hosts, .. } => hosts.iter().map(|h| (h.host, h.name.clone())).collect(),
        _ => Vec::new(),
    };
    let host_name = |host: u32| {
        names
            .iter()
            .find(|(id, _)| *id == host)
            .map_or_else(|| format!("host{host}"), |(_, n)| n.clone())
    };
    let labels = slot_labels(&snapshot.attempts, host_name);

    let mut events = Vec::new();
    let mut hosts_named: Vec<u32> = Vec::new();
    for (slot, (host, label)) in &labels {
        if !hosts_named.contains(host) {
            hosts_named.push(*host);
            events.push(json!({
                "ph": "M", "name": "process_name", "pid": host, "tid": 0,
                "args": {"name": host_name(*host)},
            }));
        }
        events.push(json!({
            "ph": "M", "name": "thread_name", "pid": host, "tid": slot.0,
            "args": {"name": label},
        }));
    }
    for a in &snapshot.attempts {
        let end = a.end.unwrap_or(snapshot.now).max(a.start);
        let state = attempt_state_word(a.state);
        let mut name = format!("chunk {}", a.chunk);
        if a.backup {
            name.push_str(" (backup)");
        }
        events.push(json!({
            "ph": "X",
            "name": name,
            "cat": state,
            "pid": a.host,
            "tid": a.slot.0,
            "ts": a.start.as_micros() as u64,
            "dur": (end - a.start).as_micros() as u64,
            "args": {
                "chunk": a.chunk,
                "attempt": a.attempt,
                "rows": a.rows.end.saturating_sub(a.rows.start),
                "first_row": a.rows.start,
                "rows_done": a.rows_done,
                "state": state,
                "backup": a.backup,
                "split": a.split,
                "slowness": if a.slowness.is_finite() { json!(a.slowness) } else { Value::Null },
            },
        }));
    }
    json!({ "traceEvents": events, "displayTimeUnit": "ms" })
}
