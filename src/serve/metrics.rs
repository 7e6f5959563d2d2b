//! Counters for `GET /metrics`, in the Prometheus text format: requests by
//! route and status, RESP commands, latency histograms, connections, and the
//! store's live version and rows. Lock-free: every request adds to atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// HTTP routes, as the `route` label names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Prediction,
    BatchGet,
    Versions,
    Healthz,
    Metrics,
    Other,
}

const ROUTES: [(Route, &str); 6] = [
    (Route::Prediction, "prediction"),
    (Route::BatchGet, "batch_get"),
    (Route::Versions, "versions"),
    (Route::Healthz, "healthz"),
    (Route::Metrics, "metrics"),
    (Route::Other, "other"),
];

/// Status codes counted one by one; any other lands in the last slot ("other").
const STATUSES: [u16; 10] = [200, 400, 401, 404, 405, 413, 415, 500, 503, 0];

/// RESP command kinds, as the `command` label names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Get,
    Mget,
    Exists,
    Ttl,
    Other,
}

const COMMANDS: [(Command, &str); 5] = [
    (Command::Get, "get"),
    (Command::Mget, "mget"),
    (Command::Exists, "exists"),
    (Command::Ttl, "ttl"),
    (Command::Other, "other"),
];

/// Upper bounds of the latency buckets, in seconds (then +Inf).
const BUCKETS: [f64; 13] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Default)]
struct Histogram {
    /// Counts per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut total = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            total += b.load(Relaxed);
            let le = BUCKETS
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {total}");
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let bare = labels.trim_end_matches(',');
        let bare = if bare.is_empty() {
            String::new()
        } else {
            format!("{{{bare}}}")
        };
        let _ = writeln!(out, "{name}_sum{bare} {sum}");
        let _ = writeln!(out, "{name}_count{bare} {total}");
    }
}

#[derive(Default)]
pub(crate) struct Metrics {
    http: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    http_latency: Histogram,
    resp: [AtomicU64; COMMANDS.len()],
    resp_errors: AtomicU64,
    resp_latency: Histogram,
    /// Open connections: RESP, HTTP.
    open: [AtomicU64; 2],
    refused: AtomicU64,
    timed_out: AtomicU64,
    protocol_errors: AtomicU64,
}

/// The store's state when /metrics is asked.
pub(crate) struct StoreState {
    pub live: Option<u64>,
    pub rows: Option<u64>,
    pub available: bool,
}

impl Metrics {
    pub fn http(&self, route: Route, status: u16, took: Duration) {
        let r = ROUTES.iter().position(|(x, _)| *x == route).unwrap_or(5);
        let s = STATUSES
            .iter()
            .position(|&x| x == status)
            .unwrap_or(STATUSES.len() - 1);
        self.http[r][s].fetch_add(1, Relaxed);
        self.http_latency.observe(took);
    }

    pub fn resp(&self, command: Command, error: bool, took: Duration) {
        let c = COMMANDS
            .iter()
            .position(|(x, _)| *x == command)
            .unwrap_or(4);
        self.resp[c].fetch_add(1, Relaxed);
        if error {
            self.resp_errors.fetch_add(1, Relaxed);
        }
        self.resp_latency.observe(took);
    }

    /// A connection opened (`+1`) or closed (`-1`); 0 = RESP, 1 = HTTP.
    pub fn connection(&self, protocol: usize, opened: bool) {
        if opened {
            self.open[protocol].fetch_add(1, Relaxed);
        } else {
            self.open[protocol].fetch_sub(1, Relaxed);
        }
    }

    pub fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    pub fn timed_out(&self) {
        self.timed_out.fetch_add(1, Relaxed);
    }

    pub fn protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Relaxed);
    }

    pub fn open_connections(&self) -> u64 {
        self.open.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self, store: &StoreState, uptime: Duration) -> String {
        let mut out = String::with_capacity(8 * 1024);
        self.render_http(&mut out);
        self.render_resp(&mut out);
        self.render_connections(&mut out);
        render_store(&mut out, store, uptime);
        out
    }

    fn render_http(&self, out: &mut String) {
        family(
            out,
            "herd_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status code.",
        );
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            for (s, status) in STATUSES.iter().enumerate() {
                let n = self.http[r][s].load(Relaxed);
                if n > 0 {
                    let status = if *status == 0 {
                        "other".to_string()
                    } else {
                        status.to_string()
                    };
                    let _ = writeln!(
                        out,
                        "herd_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        family(
            out,
            "herd_http_request_duration_seconds",
            "histogram",
            "Time from a parsed HTTP request to its response.",
        );
        self.http_latency
            .render(out, "herd_http_request_duration_seconds", "");
    }

    fn render_resp(&self, out: &mut String) {
        family(
            out,
            "herd_resp_commands_total",
            "counter",
            "RESP commands answered, by command.",
        );
        for (c, (_, name)) in COMMANDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "herd_resp_commands_total{{command=\"{name}\"}} {}",
                self.resp[c].load(Relaxed)
            );
        }
        family(
            out,
            "herd_resp_errors_total",
            "counter",
            "RESP commands answered with an error.",
        );
        let _ = writeln!(
            out,
            "herd_resp_errors_total {}",
            self.resp_errors.load(Relaxed)
        );
        family(
            out,
            "herd_resp_command_duration_seconds",
            "histogram",
            "Time from a parsed RESP command to its reply being queued.",
        );
        self.resp_latency
            .render(out, "herd_resp_command_duration_seconds", "");
    }

    fn render_connections(&self, out: &mut String) {
        family(
            out,
            "herd_connections",
            "gauge",
            "Open client connections, by protocol.",
        );
        for (i, p) in ["resp", "http"].iter().enumerate() {
            let _ = writeln!(
                out,
                "herd_connections{{protocol=\"{p}\"}} {}",
                self.open[i].load(Relaxed)
            );
        }
        for (name, help, v) in [
            (
                "herd_connections_refused_total",
                "Connections closed at once because the connection limit was reached.",
                &self.refused,
            ),
            (
                "herd_connections_timed_out_total",
                "Connections closed for idling, a slow request or a reply not taken.",
                &self.timed_out,
            ),
            (
                "herd_protocol_errors_total",
                "Connections closed for a malformed or oversized request.",
                &self.protocol_errors,
            ),
        ] {
            family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
    }
}

/// The `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The store's gauges and the uptime.
fn render_store(out: &mut String, store: &StoreState, uptime: Duration) {
    family(
        out,
        "herd_store_available",
        "gauge",
        "1 when the store exists and opened, else 0.",
    );
    let _ = writeln!(out, "herd_store_available {}", u8::from(store.available));
    if let Some(v) = store.live {
        family(
            out,
            "herd_store_live_version",
            "gauge",
            "The version readers are served.",
        );
        let _ = writeln!(out, "herd_store_live_version {v}");
    }
    if let Some(rows) = store.rows {
        family(
            out,
            "herd_store_live_rows",
            "gauge",
            "Predictions in the live version.",
        );
        let _ = writeln!(out, "herd_store_live_rows {rows}");
    }
    family(
        out,
        "herd_uptime_seconds",
        "gauge",
        "Seconds since herd serve started.",
    );
    let _ = writeln!(out, "herd_uptime_seconds {}", uptime.as_secs());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf() {
        let m = Metrics::default();
        m.http(Route::Prediction, 200, Duration::from_micros(30));
        m.http(Route::Prediction, 404, Duration::from_millis(3));
        m.http(Route::Other, 418, Duration::from_secs(2));
        let text = m.render(
            &StoreState {
                live: Some(3),
                rows: Some(10),
                available: true,
            },
            Duration::from_secs(5),
        );
        assert!(text.contains("herd_http_requests_total{route=\"prediction\",status=\"200\"} 1"));
        assert!(text.contains("herd_http_requests_total{route=\"other\",status=\"other\"} 1"));
        assert!(text.contains("herd_http_request_duration_seconds_bucket{le=\"0.00005\"} 1"));
        assert!(text.contains("herd_http_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("herd_http_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("herd_http_request_duration_seconds_count 3"));
        assert!(text.contains("herd_store_live_version 3"));
        assert!(text.contains("herd_store_live_rows 10"));
    }
}
