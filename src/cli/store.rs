//! `herd store ...` and `herd serve`: the store's command-line face.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};

use herd::model::EntityKey;
use herd::store::{Retention, Store, Value};

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    #[arg(long, default_value = "store")]
    store: PathBuf,
    /// Redis protocol address (RESP2/RESP3). A non-loopback address needs
    /// HERD_SERVE_PASSWORD.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6380")]
    resp: String,
    /// HTTP address. A non-loopback address needs HERD_SERVE_PASSWORD.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: String,
    /// The Redis sink's key prefix: `PREFIX:live` and `PREFIX:vN:ID` are
    /// answered as that sink holds them, `PREFIX:ID` as `ID`.
    #[arg(long, default_value = "pred")]
    prefix: String,
    /// Worker threads, 1 to 1024 (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Close a connection after this many seconds without a request (0:
    /// never).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    idle_timeout: u64,
    /// Hold the live version's replies in memory, rendered, when they fit
    /// in MIB (JSON and index): a read of one prediction is then a lookup
    /// and a copy. Rendered again after each flip; 0: read the store.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    preload: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(super) enum ExportFormat {
    Parquet,
    Jsonl,
}

#[derive(Subcommand, Debug)]
pub(super) enum StoreCmd {
    /// List versions, newest first (the live one marked).
    Versions {
        #[arg(long, default_value = "store")]
        store: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Look up one entity's prediction.
    Get {
        id: String,
        #[arg(long, default_value = "store")]
        store: PathBuf,
        #[arg(long)]
        version: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Move readers to version N (roll forward or back).
    Flip {
        #[arg(long, value_name = "N")]
        to: u64,
        #[arg(long, default_value = "store")]
        store: PathBuf,
    },
    /// Drop old versions, keeping the newest K (never the live one or the one
    /// before it); building and failed versions older than the grace period go
    /// whatever K says (building ones only while no run uses the store).
    Gc {
        #[arg(long, value_name = "K")]
        keep: usize,
        /// Age after which building and failed versions are dropped
        /// (`3600`, `30m`, `12h`, `1d`).
        /// `0`: at once.
        #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = herd::config::parse_grace)]
        grace: u64,
        #[arg(long, default_value = "store")]
        store: PathBuf,
    },
    /// Drop version N now (never the live one or the one before it).
    Drop {
        #[arg(value_name = "N")]
        version: u64,
        #[arg(long, default_value = "store")]
        store: PathBuf,
    },
    /// Write a version (default: the live one) to a Parquet or JSON Lines file.
    Export {
        #[arg(long, default_value = "store")]
        store: PathBuf,
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        #[arg(long)]
        format: ExportFormat,
        /// The file to write (`-` for standard output, JSON Lines only).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
}

pub(super) fn store_cmd(cmd: StoreCmd) -> Result<i32> {
    match cmd {
        StoreCmd::Versions { store, json } => store_versions(&store, json),
        StoreCmd::Get {
            id,
            store,
            version,
            json,
        } => store_get(&id, &store, version, json),
        StoreCmd::Flip { to, store } => {
            let s = Store::open_existing(&store)?;
            let before = s.live()?;
            s.flip(to)?;
            println!(
                "live: {} -> {to}",
                before
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "none".into())
            );
            if before != Some(to) {
                for pointer in s.sinks()? {
                    eprintln!(
                        "note: runs of this store also push to {pointer}; this flip moved \
                         LMDB's readers only: set that pointer to {to} for the sink's \
                         readers (for Redis: SET PREFIX:live {to})"
                    );
                }
            }
            Ok(0)
        }
        StoreCmd::Export {
            store,
            version,
            format,
            out,
        } => {
            herd::memory::keep_freed_memory(herd::store::export::KEEP_TRIM_BYTES);
            let s = Store::open_read_only(&store)?;
            let format = match format {
                ExportFormat::Parquet => herd::store::export::Format::Parquet,
                ExportFormat::Jsonl => herd::store::export::Format::Jsonl,
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let done = herd::store::export::export(&s, version, format, &out, now)?;
            warn_if_unfinished(&s, done.version)?;
            let size = match out == std::path::Path::new("-") {
                true => String::new(),
                false => format!(" ({} bytes)", done.bytes),
            };
            eprintln!(
                "exported {} predictions of v{} to {}{size} in {:.2} s ({:.0} entities/s)",
                done.rows,
                done.version,
                out.display(),
                done.seconds,
                done.rows as f64 / done.seconds.max(1e-9)
            );
            Ok(0)
        }
        StoreCmd::Gc { keep, grace, store } => {
            let s = Store::open_existing(&store)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let dropped = s.gc_with(Retention {
                keep,
                grace_secs: grace,
                now,
            })?;
            if dropped.is_empty() {
                println!("nothing to drop");
            } else {
                println!("dropped versions {dropped:?}");
            }
            Ok(0)
        }
        StoreCmd::Drop { version, store } => {
            let s = Store::open_existing(&store)?;
            s.drop_one(version)?;
            println!("dropped version {version}");
            Ok(0)
        }
    }
}

pub(super) fn serve(args: ServeArgs) -> Result<i32> {
    let opts = herd::serve::Options {
        store: args.store,
        resp: args.resp,
        http: args.http,
        prefix: args.prefix,
        password: std::env::var(herd::serve::PASSWORD_VAR).ok(),
        threads: args.threads,
        idle_timeout: match args.idle_timeout {
            0 => herd::serve::NO_IDLE_TIMEOUT,
            secs => std::time::Duration::from_secs(secs),
        },
        preload: args.preload.saturating_mul(1 << 20),
    };
    let store = opts.store.clone();
    let served = herd::serve::run(opts, |bound| {
        let state = match Store::open_read_only(&store).and_then(|s| s.live()) {
            Ok(Some(v)) => format!("live v{v}"),
            Ok(None) => "nothing live yet".to_string(),
            Err(e) => e.to_string(),
        };
        // Tests and scripts read the bound addresses from this line.
        println!(
            "herd serve: resp {} http {} store {} ({state}); at most {} connections",
            bound.resp,
            bound.http,
            store.display(),
            bound.max_connections
        );
    });
    match served {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(e.exit_code())
        }
    }
}

/// `herd store versions`: a table, or the JSON contract.
fn store_versions(store: &Path, json: bool) -> Result<i32> {
    let s = Store::open_read_only(store)?;
    let live = s.live()?;
    let versions = s.versions()?;
    if json {
        let v = herd::store::versions_json(live, &versions);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:>7}  {:<9}  {:>10}  {:<24}  {:<20}  {:<16}  validation",
            "version", "status", "rows", "model_version", "job", "created (UTC)"
        );
        for r in &versions {
            let check = match &r.validation {
                None => "-".to_string(),
                Some(v) if v.passed => "passed".to_string(),
                Some(v) => format!(
                    "failed: {}",
                    v.first_failure().map(|c| c.name.as_str()).unwrap_or("?")
                ),
            };
            println!(
                "{:>7}  {:<9}  {:>10}  {:<24}  {:<20}  {:<16}  {}",
                r.version,
                format!("{:?}", r.status).to_lowercase(),
                r.committed_rows,
                r.model_version,
                r.job,
                herd::ui::fmt_unix(r.created),
                check
            );
        }
        match live {
            Some(v) => println!("live: {v}"),
            None => println!("live: none"),
        }
    }
    Ok(0)
}

/// `herd store get ID`: an integer id first, then the id as a string.
fn store_get(id: &str, store: &Path, version: Option<u64>, json: bool) -> Result<i32> {
    let s = Store::open_read_only(store)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut found = None;
    if let Ok(n) = id.parse::<u64>() {
        found = s.get(&EntityKey::Int(n), version, now)?;
    }
    if found.is_none() {
        found = s.get(&EntityKey::Str(id.to_string()), version, now)?;
    }
    let Some(p) = found else {
        let which = match version {
            Some(v) => format!("version {v}"),
            None => "the live version".to_string(),
        };
        eprintln!(
            "error: no prediction for id '{id}' in {which} of {}",
            store.display()
        );
        return Ok(1);
    };
    if version.is_some() {
        warn_if_unfinished(&s, p.version)?;
    }
    if json {
        println!("{}", serde_json::to_string(&p.to_json())?);
    } else {
        println!(
            "id {}  version {}  model {}  timestamp {}  ttl {}s{}",
            p.id,
            p.version,
            p.model_version,
            p.timestamp,
            p.ttl,
            if p.stale { "  STALE" } else { "" }
        );
        match &p.value {
            Value::Scores(s) => println!("scores: {s:?}"),
            Value::TopK(pairs) => {
                for (rank, (item, score)) in pairs.iter().enumerate() {
                    println!("{:>4}. item {item:<10} {score:.5}", rank + 1);
                }
            }
        }
    }
    Ok(0)
}

/// Warns on standard error when `version` is not a finished, validated
/// one: its predictions may be partial (building) or were refused by the
/// gate (failed).
fn warn_if_unfinished(store: &Store, version: u64) -> Result<()> {
    let rec = store.record(version)?;
    match rec.status {
        herd::store::Status::Building => eprintln!(
            "warning: version {version} is still building ({} of {} rows committed), \
             not validated: what it holds is partial",
            rec.committed_rows, rec.rows
        ),
        herd::store::Status::Failed => eprintln!(
            "warning: version {version} failed validation: the gate refused what it holds"
        ),
        _ => {}
    }
    Ok(())
}
