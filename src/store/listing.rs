//! `herd store versions --json`, as a value: the CLI prints it and
//! `herd serve` answers `GET /v1/versions` with it.

use super::VersionRecord;

/// `{"live": N, "versions": [{"version", "status", "rows", ...}, ...]}`,
/// versions in the order given (newest first from [`super::Store::versions`]).
pub fn versions_json(live: Option<u64>, versions: &[VersionRecord]) -> serde_json::Value {
    serde_json::json!({
        "live": live,
        "versions": versions.iter().map(|r| serde_json::json!({
            "version": r.version,
            "status": r.status.to_string(),
            "rows": r.committed_rows,
            "expected_rows": r.rows,
            "model_version": r.model_version,
            "model_kind": r.model_kind,
            "job": r.job,
            "created": r.created,
            "ttl": r.ttl_secs,
            "hosts": r.hosts,
            "duration_s": r.duration_s,
            "validation": r.validation,
        })).collect::<Vec<_>>(),
    })
}
