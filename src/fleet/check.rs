//! `herd hosts check`: start one worker on every host, concurrently, and
//! report what it found: reachable, backend and adapter, round-trip time;
//! for a batch host also its job, node and queue wait. Whatever a host holds
//! (a Slurm allocation) is given back before the check ends.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::{Fleet, Host};
use crate::proto::{FromWorker, ToWorker};
use crate::sched::SlotId;

use super::{FleetEvent, Spawned};

/// How long one host may take to answer before it is reported unreachable.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Default)]
pub struct CheckRow {
    pub host: String,
    pub ok: bool,
    pub transport: String,
    pub host_key: String,
    pub auth: String,
    pub shipped: String,
    pub backend: String,
    pub adapter: String,
    pub slots: u32,
    pub rtt: Option<Duration>,
    /// More about where the worker ran (a batch job's node, queue wait).
    pub detail: Option<String>,
    pub error: Option<String>,
}

/// Checks every host of `fleet` concurrently.
pub async fn check(fleet: &Fleet) -> Vec<CheckRow> {
    let tasks: Vec<_> = fleet
        .hosts
        .iter()
        .cloned()
        .map(|h| tokio::spawn(async move { check_host(&h).await }))
        .collect();
    let mut rows = Vec::new();
    for t in tasks {
        rows.push(t.await.unwrap_or_else(|e| CheckRow {
            error: Some(format!("check panicked: {e}")),
            ..Default::default()
        }));
    }
    rows
}

async fn check_host(h: &Host) -> CheckRow {
    let mut row = CheckRow {
        host: h.name.clone(),
        slots: h.slots,
        ..Default::default()
    };
    let link = match super::start(h, None) {
        Ok(link) => link,
        Err(e) => {
            row.error = Some(e);
            return row;
        }
    };
    // Setting up is bounded by the host's own limits (connect and ship
    // timeouts, a batch host's start_timeout); the probe by CHECK_TIMEOUT.
    let answer = match link.ready().await {
        Ok(_) => match link.start_worker(&[]) {
            Ok(spawned) => probe(h, spawned).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    link.close();
    match answer {
        Ok((backend, adapter, rtt)) => {
            row.ok = true;
            row.backend = backend;
            row.adapter = adapter;
            row.rtt = rtt;
        }
        Err(e) => row.error = Some(e),
    }
    let setup = link.setup();
    row.transport = setup.transport;
    row.host_key = setup.host_key;
    row.auth = setup.auth;
    row.shipped = setup.shipped;
    row.detail = setup.detail;
    if let Some(e) = setup.error {
        // The setup error says more than the worker's exit.
        row.error = Some(e);
    }
    row
}

/// Asks a started worker which backend the host's device gives: (backend,
/// adapter, round-trip time of the probe).
async fn probe(h: &Host, spawned: Spawned) -> Result<(String, String, Option<Duration>), String> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut link = super::attach(SlotId(0), spawned, tx);
    let threads = h.threads.unwrap_or(1);
    let answer = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut sent_at = None;
        let mut stderr = Vec::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                FleetEvent::Message {
                    msg: FromWorker::Hello { .. },
                    ..
                } => {
                    sent_at = Some(Instant::now());
                    link.send(&ToWorker::Probe {
                        device: h.device,
                        threads,
                    })?;
                }
                FleetEvent::Message {
                    msg:
                        FromWorker::Loaded {
                            backend, adapter, ..
                        },
                    ..
                } => return Ok((backend, adapter, sent_at.map(|t| t.elapsed()))),
                FleetEvent::Message {
                    msg: FromWorker::Error { message, .. },
                    ..
                } => return Err(message),
                FleetEvent::Message { .. } => {}
                FleetEvent::Stderr { line, .. } => stderr.push(line),
                FleetEvent::Exited { reason, .. } => {
                    return Err(format!("worker {reason}: {}", stderr.join(" | ")));
                }
            }
        }
        Err("worker closed its output".to_string())
    })
    .await;
    let _ = link.send(&ToWorker::Shutdown);
    link.kill();
    answer.unwrap_or_else(|_| Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())))
}

/// The rows as an aligned table.
pub fn table(rows: &[CheckRow]) -> String {
    let mut out = format!(
        "{:<12} {:<10} {:<22} {:<9} {:<16} {:<10} {:<10} {:<32} {:>5} {:>9}\n",
        "host",
        "reachable",
        "transport",
        "host key",
        "auth",
        "shipped",
        "backend",
        "adapter",
        "slots",
        "rtt"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<12} {:<10} {:<22} {:<9} {:<16} {:<10} {:<10} {:<32} {:>5} {:>9}\n",
            r.host,
            if r.ok { "yes" } else { "NO" },
            r.transport,
            r.host_key,
            r.auth,
            r.shipped,
            r.backend,
            r.adapter,
            r.slots,
            r.rtt
                .map(|d| format!("{:.1}ms", d.as_secs_f64() * 1e3))
                .unwrap_or_else(|| "-".into()),
        ));
        if let Some(d) = &r.detail {
            out.push_str(&format!("  {}: {d}\n", r.host));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("  {}: {e}\n", r.host));
        }
    }
    out
}
