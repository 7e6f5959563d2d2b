//! Another language's LMDB binding and herd share one store: a Python
//! process using the standard `lmdb` package (which bundles the released
//! LMDB 0.9 C library) holds the store open, inside a read transaction,
//! while `herd run` writes and flips, and the other way round: Python writes
//! and flips a version while herd reads it. The Python reader in README.md
//! is run as it stands.
//!
//! Needs python3 with the `lmdb` package (`pip install lmdb`; .ci/run
//! installs it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::*;

fn python(script: &str, args: &[&str]) -> Child {
    let probe = Command::new("python3")
        .args(["-c", "import lmdb"])
        .output()
        .expect("python3 is needed by this test: install python3 and `pip install lmdb`");
    assert!(
        probe.status.success(),
        "the Python `lmdb` package is needed by this test: `pip install lmdb` ({})",
        String::from_utf8_lossy(&probe.stderr)
    );
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python3")
}

struct Talk {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Talk {
    fn new(mut child: Child) -> Talk {
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Talk {
            child,
            input,
            output,
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the Python process ended early");
        line.trim().to_string()
    }

    fn say(&mut self, word: &str) {
        writeln!(self.input, "{word}").unwrap();
        self.input.flush().unwrap();
    }

    fn finish(mut self) {
        drop(self.input);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the Python process failed: {status}");
    }
}

fn small_job() -> Scratch {
    Scratch::new(&JobShape {
        users: 200,
        items: 400,
        dim: 8,
        ..JobShape::default()
    })
}

fn run_job(s: &Scratch) {
    let out = s.herd(&["run", s.job().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// The Python code block of README.md marked `<!-- python-reader -->`.
fn readme_reader() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (_, rest) = readme
        .split_once("<!-- python-reader -->\n```python\n")
        .expect("README.md has a Python reader marked <!-- python-reader -->");
    let (code, _) = rest.split_once("```").unwrap();
    let lines = code.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(
        lines <= 20,
        "the README reader is {lines} lines: keep it short"
    );
    code.to_string()
}

/// Holds the store open in one read transaction until told to go on, then
/// reports what that transaction and a new one see as live.
const HOLDER: &str = r#"
import struct, sys, lmdb
env = lmdb.open(sys.argv[1], readonly=True, max_dbs=4)
old = env.begin()
live = lambda t: struct.unpack(">Q", t.get(b"live", db=env.open_db(b"meta", txn=t)))[0]
print("ready", live(old), flush=True)
sys.stdin.readline()
print("old", live(old), flush=True)
old.abort()
with env.begin() as txn:
    print("new", live(txn), flush=True)
"#;

#[test]
fn a_python_reader_holds_the_store_open_while_herd_writes_and_flips() {
    let s = small_job();
    run_job(&s);
    let store = s.store();
    let mut holder = Talk::new(python(HOLDER, &[store.to_str().unwrap()]));
    assert_eq!(holder.line(), "ready 1");

    // herd begins, commits, validates and flips v2 while Python holds v1.
    run_job(&s);
    holder.say("go");
    assert_eq!(holder.line(), "old 1", "a read transaction's view moved");
    assert_eq!(holder.line(), "new 2", "Python does not see herd's flip");
    holder.finish();

    // The README's reader returns what `herd store get` returns.
    let reader = format!(
        "{}\nimport sys, json\nprint(json.dumps(lookup(sys.argv[1], int(sys.argv[2]))))\n",
        readme_reader()
    );
    for id in ["7", "150"] {
        let out = python(&reader, &[store.to_str().unwrap(), id])
            .wait_with_output()
            .unwrap();
        assert!(out.status.success(), "README reader failed for id {id}");
        let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let herd = json(&s.herd(&["store", "get", id, "--json", "--store", "store"]));
        assert_eq!(py[0], herd["version"], "id {id}: {py} vs {herd}");
        let pairs = py[1].as_array().unwrap();
        let top = herd["top_k"].as_array().unwrap();
        assert_eq!(pairs.len(), top.len(), "id {id}: {py} vs {herd}");
        for (p, t) in pairs.iter().zip(top) {
            assert_eq!(p[0], t["item"], "id {id}: {py} vs {herd}");
            let (a, b) = (p[1].as_f64().unwrap(), t["score"].as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "id {id}: {a} vs {b}"
            );
        }
    }
}

/// Writes version `next` with the documented layout (every entity of the
/// live version copied, then id 7 set to the scores [1.5, 2.5]), flips `live` to it, then keeps the store open inside a
/// read transaction until told to go on.
const WRITER: &str = r#"
import json, struct, sys, time, lmdb
env = lmdb.open(sys.argv[1], max_dbs=16)
meta = env.open_db(b"meta")
with env.begin(write=True) as txn:
    new = struct.unpack(">Q", txn.get(b"next", db=meta))[0]
    old = struct.unpack(">Q", txn.get(b"live", db=meta))[0]
    rec = json.loads(txn.get(b"version/%d" % old, db=meta))
    rec["status"] = "retired"
    txn.put(b"version/%d" % old, json.dumps(rec).encode(), db=meta)
    rec.update(version=new, status="live", model_version="py-1")
    txn.put(b"version/%d" % new, json.dumps(rec).encode(), db=meta)
    db = env.open_db(b"v%d" % new, txn=txn)
    for key, value in list(txn.cursor(db=env.open_db(b"v%d" % old, txn=txn))):
        txn.put(key, value[:4] + struct.pack("<I", new) + value[8:], db=db)
    header = struct.pack("<BBHIII", 1, 0, 2, new, int(time.time()), 3600)
    txn.put(struct.pack(">Q", 7), header + struct.pack("<2f", 1.5, 2.5), db=db)
    txn.put(b"next", struct.pack(">Q", new + 1), db=meta)
    txn.put(b"previous", struct.pack(">Q", old), db=meta)
    txn.put(b"live", struct.pack(">Q", new), db=meta)
held = env.begin()
print("flipped", new, flush=True)
sys.stdin.readline()
held.abort()
"#;

#[test]
fn herd_reads_and_runs_while_a_python_writer_holds_the_store() {
    let s = small_job();
    run_job(&s);
    let store = s.store();
    let mut writer = Talk::new(python(WRITER, &[store.to_str().unwrap()]));
    assert_eq!(writer.line(), "flipped 2");

    let got = json(&s.herd(&["store", "get", "7", "--json", "--store", "store"]));
    assert_eq!(got["version"], 2, "{got}");
    assert_eq!(got["model_version"], "py-1", "{got}");
    assert_eq!(got["scores"], serde_json::json!([1.5, 2.5]), "{got}");
    assert_eq!(got["ttl"], 3600, "{got}");

    // A whole run (begin v3, chunk commits, validate, flip) beside it.
    run_job(&s);
    let got = json(&s.herd(&["store", "get", "7", "--json", "--store", "store"]));
    assert_eq!(got["version"], 3, "{got}");
    writer.say("go");
    writer.finish();
}
