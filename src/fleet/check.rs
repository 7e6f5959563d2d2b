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

/// The rows as an aligned table: each column as wide as its widest cell
/// (an adapter string can be long: a GPU's name, or the CPU path with its
/// tuned sparse limit).
pub fn table(rows: &[CheckRow]) -> String {
    let header = [
        "host",
        "reachable",
        "transport",
        "host key",
        "auth",
        "shipped",
        "backend",
        "adapter",
        "slots",
        "rtt",
    ];
    let cells: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                r.host.clone(),
                (if r.ok { "yes" } else { "NO" }).to_string(),
                r.transport.clone(),
                r.host_key.clone(),
                r.auth.clone(),
                r.shipped.clone(),
                r.backend.clone(),
                r.adapter.clone(),
                r.slots.to_string(),
                r.rtt
                    .map(|d| format!("{:.1}ms", d.as_secs_f64() * 1e3))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    // Counts (slots, rtt) align right, the rest left.
    let line = |cells: &[&str]| {
        let mut line = String::new();
        for (k, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if k > 0 {
                line.push(' ');
            }
            match k {
                8 | 9 => line.push_str(&format!("{cell:>w$}")),
                _ => line.push_str(&format!("{cell:<w$}")),
            }
        }
        line.push('\n');
        line
    };
    let mut out = line(&header);
    for (r, row) in rows.iter().zip(&cells) {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
        if let Some(d) = &r.detail {
            out.push_str(&format!("  {}: {d}\n", r.host));
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("  {}: {e}\n", r.host));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, adapter: &str, error: Option<&str>) -> CheckRow {
        CheckRow {
            host: host.into(),
            ok: error.is_none(),
            transport: "local".into(),
            host_key: "-".into(),
            auth: "-".into(),
            shipped: "-".into(),
            backend: "cpu".into(),
            adapter: adapter.into(),
            slots: 2,
            rtt: error.is_none().then(|| Duration::from_micros(6_600)),
            detail: None,
            error: error.map(str::to_string),
        }
    }

    #[test]
    fn columns_are_as_wide_as_their_widest_cell() {
        let long = "native CPU avx512, 2 threads, sparse relu layers at <= 7/16 non-zero";
        let text = table(&[
            row("a", long, None),
            row("a-longer-host-name", "llvmpipe", Some("worker exited")),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        // The slots column starts at the same place on every line, past
        // the longest adapter.
        let header_slots = lines[0].find("slots").unwrap();
        assert!(
            header_slots > lines[1].find(long).unwrap() + long.len(),
            "{text}"
        );
        for line in [lines[1], lines[2]] {
            assert_eq!(&line[header_slots..header_slots + 5], "    2", "{text}");
        }
        assert!(lines[1].ends_with("6.6ms"), "{text}");
        assert!(lines[2].starts_with("a-longer-host-name NO "), "{text}");
        assert!(lines[2].ends_with(" -"), "{text}");
        assert_eq!(lines[3], "  a-longer-host-name: worker exited");
    }
}
