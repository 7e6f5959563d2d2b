//! The run report: the scheduler's final snapshot (which counts what every
//! host and slot did) plus what the fleet said about each host.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sched::{HostId, SlotId, Snapshot};

use super::coordinator::Coordinator;
use super::event::{
    AttemptReport, HostReport, MAX_SKIPPED_LISTED, Report, SkippedEntity, SlotReport,
};

/// What every slot did and the timeline of every attempt, from `snap`.
fn slots_and_timeline(c: &Coordinator, snap: &Snapshot) -> (Vec<SlotReport>, Vec<AttemptReport>) {
    let costs = &c.p.costs;
    let host_name = |h: HostId| c.workers.hosts[h as usize].cfg.name.clone();
    let mut slots: BTreeMap<SlotId, SlotReport> = c
        .workers
        .slots
        .iter()
        .map(|(id, s)| {
            let report = SlotReport {
                slot: id.0,
                host: host_name(s.host),
                ..Default::default()
            };
            (*id, report)
        })
        .collect();
    let mut timeline = Vec::with_capacity(snap.attempts.len());
    for a in &snap.attempts {
        let end = a.end.unwrap_or(snap.now);
        let computed = a.rows.start..(a.rows.start + a.rows_done).min(a.rows.end);
        if let Some(s) = slots.get_mut(&a.slot) {
            s.attempts += 1;
            s.rows += computed.end - computed.start;
            s.cost += costs.cost(computed.clone());
            s.busy_s += end.saturating_sub(a.start).as_secs_f64();
        }
        timeline.push(AttemptReport {
            attempt: a.attempt,
            chunk: a.chunk,
            slot: a.slot.0,
            host: host_name(a.host),
            start_s: a.start.as_secs_f64(),
            end_s: a.end.map(|e| e.as_secs_f64()),
            rows: [a.rows.start, a.rows.end],
            rows_done: a.rows_done,
            state: format!("{:?}", a.state).to_lowercase(),
            backup: a.backup,
            split: a.split,
        });
    }
    let slots = slots
        .into_values()
        .map(|mut s| {
            if s.busy_s > 0.0 {
                s.cost_per_s = s.cost as f64 / s.busy_s;
            }
            s
        })
        .collect();
    (slots, timeline)
}

/// One row per host: the scheduler's counts, its slots' attempts and busy
/// time, what its workers run on and what was shipped to it.
fn hosts(c: &Coordinator, snap: &Snapshot, slots: &[SlotReport], hours: f64) -> Vec<HostReport> {
    c.workers
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let view = snap.hosts.iter().find(|v| v.host == i as HostId);
            let mine = slots.iter().filter(|s| s.host == h.cfg.name);
            let (attempts, busy_s) =
                mine.fold((0, 0.0), |(a, b), s| (a + s.attempts, b + s.busy_s));
            HostReport {
                name: h.cfg.name.clone(),
                backend: h.backend.clone(),
                adapter: h.adapter.clone(),
                slots: h.cfg.slots,
                rows: view.map_or(0, |v| v.rows_done),
                chunks: view.map_or(0, |v| v.chunks_done),
                attempts,
                failures: view.map_or(0, |v| v.failures),
                shipped_bytes: h.link.as_ref().map_or(0, |l| l.shipped_bytes()),
                busy_s,
                cost: h.cfg.cost_per_hour * hours,
                input_bytes: h.input_bytes,
                attempts_read_ahead: h.attempts_read_ahead,
                peak_rss_bytes: h.peak_rss_bytes,
            }
        })
        .collect()
}

/// The report of the run so far (not flipped, no validation yet).
pub(super) fn build(c: &Coordinator, snap: &Snapshot, duration: Duration) -> Report {
    let (slots, timeline) = slots_and_timeline(c, snap);
    let hosts = hosts(c, snap, &slots, duration.as_secs_f64() / 3600.0);
    let scoring_s = match (c.first_launch, c.all_committed) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => 0.0,
    };
    Report {
        job: c.p.job.name.clone(),
        version: c.version,
        flipped: false,
        rows: snap.rows_done,
        chunks: snap.chunks_done,
        attempts: snap.attempts.len() as u64,
        backups: snap.backups,
        splits: snap.splits,
        retries: c.retries,
        duration_s: duration.as_secs_f64(),
        cost: hosts.iter().map(|h| h.cost).sum(),
        hosts,
        validation: Default::default(),
        scoring_s,
        slots,
        timeline,
        error: None,
        live_version: c.live_before,
        input_bytes_coordinator: c.input_bytes_coordinator,
        input_bytes_workers: c.workers.hosts.iter().map(|h| h.input_bytes).sum(),
        peak_rss_bytes: crate::worker::peak_rss_bytes(),
        skipped: c.p.skipped.len() as u64,
        skipped_entities: c
            .p
            .skipped
            .iter()
            .take(MAX_SKIPPED_LISTED)
            .map(|v| SkippedEntity {
                id: c.p.index.ids.key(v.row as usize).into_text(),
                row: v.row,
                column: v.column.clone(),
                value: v.what.clone(),
            })
            .collect(),
    }
}
