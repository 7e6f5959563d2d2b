//! `herd serve` over HTTP/1.1: every route on one keep-alive connection,
//! answers equal to the CLI's, errors with reasons, and Prometheus metrics.

mod serve_common;
mod store_common;

use std::path::PathBuf;
use std::process::Command;

use herd::model::{EntityIds, Predictions};
use herd::store::Store;
use serve_common::*;
use store_common::new_version;

/// A store with string ids (`user-0` ..) whose scores are [i, -i], two
/// versions, v2 live.
fn string_id_store(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("store");
    let store = Store::open(&path).unwrap();
    let now = now();
    for seed in [1.0f32, 2.0] {
        let v = new_version(&store, "http", 50);
        let ids: Vec<String> = (0..50).map(|i| format!("user-{i}")).collect();
        let values = (0..50)
            .flat_map(|i| [seed * i as f32, -(i as f32)])
            .collect();
        let preds = Predictions::Scores { width: 2, values };
        publish(&store, v, &EntityIds::Str(ids), &preds, now);
    }
    path
}

#[test]
fn every_route_on_one_keep_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let store = string_id_store(dir.path());
    let server = Server::start(&store, None, &[]);
    let mut h = HttpClient::connect(server.http);

    let r = h.get("/v1/predictions/user-7");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        store_get_json(&store, "user-7", None)
    );
    let r = h.get("/v1/predictions/user-7?version=1");
    assert_eq!(r.json()["version"], 1);
    assert_eq!(r.json()["scores"], serde_json::json!([7.0, -7.0]));
    // An id is literal: the Redis sink's key shapes are RESP's alone.
    assert_eq!(h.get("/v1/predictions/pred:v1:user-7").status, 404);

    let r = h.get("/v1/predictions/nobody");
    assert_eq!(r.status, 404);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("'nobody'") && msg.contains("live version (2)"),
        "{msg}"
    );
    let r = h.get("/v1/predictions/user-1?version=9");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("no version 9"));
    assert_eq!(h.get("/v1/predictions/user-1?version=two").status, 400);

    let r = h.request(
        "POST",
        "/v1/predictions:batchGet",
        Some(r#"{"ids": ["user-3", "nobody", "user-4"]}"#),
    );
    assert_eq!(r.status, 200);
    let preds = r.json()["predictions"].as_array().unwrap().clone();
    assert_eq!(preds.len(), 3);
    assert_eq!(preds[0]["id"], "user-3");
    assert!(preds[1].is_null());
    assert_eq!(preds[2]["scores"], serde_json::json!([8.0, -4.0]));
    let r = h.request(
        "POST",
        "/v1/predictions:batchGet",
        Some(r#"{"ids": ["user-3"], "version": 1}"#),
    );
    assert_eq!(r.json()["predictions"][0]["version"], 1);
    let r = h.request(
        "POST",
        "/v1/predictions:batchGet",
        Some(r#"{"ids": [true]}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("ids[0]"));
    let r = h.request("POST", "/v1/predictions:batchGet", Some("[1, 2]"));
    assert_eq!(r.status, 400);
    assert_eq!(h.get("/v1/predictions:batchGet").status, 405);

    let r = h.get("/v1/versions");
    assert_eq!(r.status, 200);
    let cli = Command::new(HERD)
        .args(["store", "versions", "--json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    let cli: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(r.json(), cli);
    assert_eq!(r.json()["live"], 2);

    let r = h.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["live"], 2);
    assert_eq!(r.json()["rows"], 50);
    assert_eq!(h.get("/nowhere").status, 404);
    assert_eq!(h.request("DELETE", "/v1/versions", None).status, 405);

    let r = h.get("/metrics");
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    for line in [
        "herd_http_requests_total{route=\"prediction\",status=\"200\"} 2",
        "herd_http_requests_total{route=\"prediction\",status=\"404\"} 3",
        "herd_http_requests_total{route=\"batch_get\",status=\"400\"} 2",
        "herd_store_live_version 2",
        "herd_store_live_rows 50",
        "herd_connections{protocol=\"http\"} 1",
        "# TYPE herd_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("herd_http_request_duration_seconds_count "))
        .unwrap();
    assert_eq!(count, "15", "{text}");
}

#[test]
fn ids_with_reserved_characters_are_percent_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open(&path).unwrap();
    let v = new_version(&store, "odd", 1);
    let preds = Predictions::Scores {
        width: 1,
        values: vec![0.5],
    };
    let ids = EntityIds::Str(vec!["a/b c?".to_string()]);
    publish(&store, v, &ids, &preds, 0);
    let server = Server::start(&path, None, &[]);
    let mut h = HttpClient::connect(server.http);
    let r = h.get("/v1/predictions/a%2Fb%20c%3F");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "a/b c?");
    // Its timestamp (0) plus its ttl is long past: served, marked stale.
    assert_eq!(r.json()["stale"], true);
    assert_eq!(h.get("/v1/predictions/a%2").status, 400);
}

/// A string-id store holding ids shaped like RESP keys, `v1:user-5` ..
/// `pred:live`, and `user-1`; one version, live.
fn key_shaped_store(dir: &std::path::Path) -> (PathBuf, Vec<&'static str>) {
    let ids = vec![
        "v1:user-5",
        "pred:v1:user-6",
        "pred:user-7",
        "pred:live",
        "user-1",
    ];
    let path = dir.join("store");
    let store = Store::open(&path).unwrap();
    let v = new_version(&store, "shapes", ids.len() as u64);
    let preds = Predictions::Scores {
        width: 1,
        values: (0..ids.len()).map(|i| i as f32).collect(),
    };
    let entity_ids = EntityIds::Str(ids.iter().map(|s| s.to_string()).collect());
    publish(&store, v, &entity_ids, &preds, 0);
    (path, ids)
}

#[test]
fn http_ids_are_literal_even_when_shaped_like_resp_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (store, ids) = key_shaped_store(dir.path());
    let server = Server::start(&store, None, &[]);
    let mut h = HttpClient::connect(server.http);
    for (i, id) in ids.iter().enumerate() {
        let escaped = id.replace(':', "%3A");
        for path in [
            format!("/v1/predictions/{id}"),
            format!("/v1/predictions/{escaped}"),
        ] {
            let r = h.get(&path);
            assert_eq!(
                r.status,
                200,
                "{path}: {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(
                String::from_utf8(r.body).unwrap(),
                store_get_json(&store, id, None),
                "{path}"
            );
        }
        let r = h.request(
            "POST",
            "/v1/predictions:batchGet",
            Some(&format!(r#"{{"ids": ["{id}"]}}"#)),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["predictions"][0]["id"], *id);
        assert_eq!(r.json()["predictions"][0]["scores"][0], i as f64);
    }
    // `v1:user-1` is not version 1's `user-1`: no such entity.
    let r = h.request(
        "POST",
        "/v1/predictions:batchGet",
        Some(r#"{"ids": ["v1:user-1"]}"#),
    );
    assert_eq!(r.status, 200);
    assert!(r.json()["predictions"][0].is_null(), "{}", r.json());
}

#[test]
fn not_found_names_the_version_read_and_missing_versions_are_404_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = string_id_store(dir.path());
    let server = Server::start(&store, None, &[]);
    let mut h = HttpClient::connect(server.http);
    let r = h.get("/v1/predictions/v1:99999");
    assert_eq!(r.status, 404);
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        msg.contains("'v1:99999'") && msg.contains("the live version (2)"),
        "{msg}"
    );
    let r = h.get("/v1/predictions/nobody?version=1");
    let msg = r.json()["error"].as_str().unwrap().to_string();
    assert!(msg.contains("in version 1"), "{msg}");

    let single = h.get("/v1/predictions/user-1?version=999");
    assert_eq!(single.status, 404);
    let single = single.json()["error"].as_str().unwrap().to_string();
    assert!(single.contains("no version 999 in the store"), "{single}");
    for (body, version) in [
        (r#"{"ids": ["user-1"], "version": 999}"#, 999),
        (r#"{"ids": [42], "version": 999}"#, 999),
        (r#"{"ids": [], "version": 999}"#, 999),
        (r#"{"ids": ["user-1"], "version": 0}"#, 0),
    ] {
        let r = h.request("POST", "/v1/predictions:batchGet", Some(body));
        assert_eq!(r.status, 404, "{body}");
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert_eq!(msg, single.replace("999", &version.to_string()), "{body}");
    }
}
