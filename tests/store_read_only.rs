//! A store on a read-only mount: `herd store get`, `versions`, `export` and
//! `herd serve` read it as it is, and a command that writes says why it
//! cannot. The mount is made read-only in a mount namespace of the test's
//! own (`unshare -m`, which needs root, as CI runs the tests).

mod serve_common;
mod store_common;

use std::path::Path;
use std::process::Command;

use herd::model::{EntityIds, Predictions};
use herd::store::Store;
use serve_common::*;
use store_common::new_version;

const ENTITIES: u64 = 300;

/// Remounts `$1` read-only (bind) in this mount namespace, then runs the
/// rest of the script.
const READ_ONLY: &str = r#"mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 90
"#;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test mounts a store read-only in a mount namespace of its own \
         (unshare -m): run it as root, as .ci/run does"
    );
}

/// A store at `dir/store` with v1 live: top-2 lists of ids 0..ENTITIES.
fn make_store(dir: &Path) {
    let store = Store::open(&dir.join("store")).unwrap();
    let v = new_version(&store, "ro", ENTITIES);
    let mut offsets = vec![0u32];
    let (mut items, mut scores) = (Vec::new(), Vec::new());
    for i in 0..ENTITIES as u32 {
        items.extend([i, i + 1]);
        scores.extend([2.0, 1.0]);
        offsets.push(items.len() as u32);
    }
    let now = now();
    let preds = Predictions::TopK {
        offsets,
        items,
        scores,
    };
    publish(
        &store,
        v,
        &EntityIds::Int((0..ENTITIES).collect()),
        &preds,
        now,
    );
}

#[test]
fn store_commands_read_a_store_on_a_read_only_mount() {
    require_root();
    let (dir, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_store(dir.path());
    let want_42 = store_get_json(&dir.path().join("store"), "42", None);
    let script = format!(
        r#"{READ_ONLY}S="$1/store"; H="$2"; O="$3"
touch "$S/probe" 2>/dev/null && exit 91
"$H" store versions --store "$S" > "$O/versions.txt" || exit 11
"$H" store get 42 --json --store "$S" > "$O/get.json" || exit 12
"$H" store export --store "$S" --format jsonl --out "$O/all.jsonl" || exit 13
"$H" store flip --to 1 --store "$S" 2> "$O/flip.err"; echo $? > "$O/flip.rc"
exit 0"#
    );
    let status = Command::new("unshare")
        .args(["-m", "sh", "-c", &script, "sh"])
        .arg(dir.path())
        .arg(HERD)
        .arg(out.path())
        .status()
        .expect("run unshare (util-linux)");
    assert!(
        status.success(),
        "the script under a read-only mount: {status:?}"
    );
    let read = |name: &str| std::fs::read_to_string(out.path().join(name)).unwrap();
    assert!(
        read("versions.txt").contains("live"),
        "{}",
        read("versions.txt")
    );
    assert_eq!(read("get.json").trim_end(), want_42);
    assert_eq!(read("all.jsonl").lines().count(), ENTITIES as usize);
    // Writing is refused, and the message says where reads still work.
    assert_eq!(read("flip.rc").trim(), "1");
    let err = read("flip.err");
    assert!(err.contains("read-only file system"), "{err}");
    assert!(err.contains("herd serve"), "{err}");
    assert_eq!(err.matches("Read-only file system").count(), 1, "{err}");
}

#[test]
fn herd_serve_reads_a_store_on_a_read_only_mount() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    make_store(dir.path());
    let store = dir.path().join("store");
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"])
        .arg(format!(
            r#"{READ_ONLY}exec "$2" serve --store "$1/store" --resp 127.0.0.1:0 --http 127.0.0.1:0 --preload 16"#
        ))
        .arg("sh")
        .arg(dir.path())
        .arg(HERD)
        .env_remove("HERD_SERVE_PASSWORD");
    let server = Server::spawn(cmd);
    let mut c = RespClient::connect(server.resp);
    assert_eq!(
        c.call(&["GET", "42"]).text(),
        store_get_json(&store, "42", None)
    );
    let mut h = HttpClient::connect(server.http);
    let reply = h.get("/v1/predictions/7");
    assert_eq!(reply.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&reply.body),
        store_get_json(&store, "7", None)
    );
}
