//! The worker binary and the model on the allocation's nodes: with
//! `ship = "sbcast"` into a node-local content-addressed cache
//! (`<node_cache>/herd-<uid>/bin/<sha256>/herd`,
//! `.../models/` as [`ModelLayout`] places the model and the files it reads
//! beside it, such as an ONNX model's external data), each file sent with
//! `sbcast` under a temporary name only when some node lacks it, checked
//! with sha256 on every node and moved into place; with `ship = "shared"`
//! used where they are (the model's companions beside it, as in the job).
//! Either way the binary's sha256 is checked on the node again before each
//! worker starts ([`super::command::verified_worker`]), and the worker
//! checks the model's when it loads it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::command::{self, COMMAND_TIMEOUT, slurm_says};
use crate::config::{Ship, SlurmHost};
use crate::fleet::ModelFile;
use crate::fleet::cache::{CHECK_FOLDER, ModelLayout, file_sha256};

/// `sbcast` must move at least this many bytes per second on average (plus
/// [`COMMAND_TIMEOUT`]), or it is abandoned.
pub const MIN_SBCAST_BYTES_PER_S: u64 = 1 << 20;
/// Temporary files older than this many minutes (left by a coordinator that
/// died mid-copy) are removed by the next probe.
const STALE_MINUTES: u32 = 60;
/// The name of the shipped binary inside its content-addressed folder.
const BINARY_NAME: &str = "herd";

/// Where the workers find their files on the nodes, and what shipping did.
#[derive(Clone, Debug, Default)]
pub struct Shipped {
    pub binary: String,
    pub binary_sha: String,
    pub model: Option<String>,
    pub bytes: u64,
    pub sent_files: u32,
    pub cached_files: u32,
}

/// Makes the binary and the model available on every node of allocation
/// `job` (`nodes` of them).
pub async fn ship(
    job: &str,
    nodes: u32,
    s: &SlurmHost,
    binary: &Path,
    model: Option<&ModelFile>,
) -> Result<Shipped, String> {
    let binary_sha = file_sha256(binary)
        .await
        .map_err(|e| format!("cannot read the worker binary '{}': {e}", binary.display()))?;
    if s.ship == Ship::Shared {
        let absolute = |p: &Path| {
            std::path::absolute(p)
                .map(|p| p.display().to_string())
                .map_err(|e| format!("'{}': {e}", p.display()))
        };
        return Ok(Shipped {
            binary: absolute(binary)?,
            binary_sha,
            model: model.map(|m| absolute(&m.path)).transpose()?,
            ..Shipped::default()
        });
    }
    let layout = model.map(ModelLayout::of).unwrap_or_default();
    let probe = probe(job, nodes, s, &binary_sha, &layout).await?;
    let mut shipped = Shipped {
        binary: format!("{}/bin/{binary_sha}/{BINARY_NAME}", probe.cache),
        binary_sha: binary_sha.clone(),
        ..Shipped::default()
    };
    let mut files = vec![(
        binary.to_path_buf(),
        shipped.binary.clone(),
        binary_sha,
        "0700",
        probe.binary_everywhere,
    )];
    for (part, everywhere) in layout.files.into_iter().zip(probe.model_everywhere) {
        let dest = format!("{}/models/{}", probe.cache, part.under_models);
        shipped.model.get_or_insert_with(|| dest.clone());
        files.push((part.local, dest, part.sha, "0600", everywhere));
    }
    for (local, dest, sha, mode, cached) in files {
        if cached {
            shipped.cached_files += 1;
            continue;
        }
        shipped.bytes += broadcast(job, nodes, &local, &dest, &sha, mode).await?;
        shipped.sent_files += 1;
    }
    Ok(shipped)
}

/// The probe's findings over every node.
#[derive(Debug)]
struct Probe {
    cache: String,
    binary_everywhere: bool,
    /// For each of the model's files, in [`ModelLayout::files`]' order:
    /// whether every node holds it.
    model_everywhere: Vec<bool>,
}

/// The program of the probe step, run once per node with arguments
/// `NODE_CACHE BINARY_SHA N FOLDER... FILE...` (N folders, then the model's
/// files, both below `models/`): makes the cache folders (mode 0700),
/// refuses them when they are links, another user's or writable by others,
/// removes stale temporary files and prints one line,
/// `herd-cache NODE BINARY_SHA MODEL_SHAS CACHE`: MODEL_SHAS the sha256 of
/// each file found, comma-separated (`none` for a file it lacks, `-` when
/// no file was asked about).
fn probe_program() -> String {
    format!(
        "umask 077\n\
         c=\"$1/herd-$(id -u)\"; b=\"$2\"; n=\"$3\"; shift 3\n\
         mkdir -p \"$c/bin/$b\" \"$c/models\" || exit 3\n\
         for d in \"$c\" \"$c/bin\" \"$c/bin/$b\" \"$c/models\"; do {CHECK_FOLDER}; done\n\
         while [ \"$n\" -gt 0 ]; do d=\"$c/models/$1\"; mkdir -p \"$d\" || exit 3; {CHECK_FOLDER}; shift; n=$((n - 1)); done\n\
         find \"$c\" -name '*.tmp.*' -type f -mmin +{STALE_MINUTES} -exec rm -f {{}} + 2>/dev/null\n\
         h=$(sha256sum < \"$c/bin/$b/{BINARY_NAME}\" 2>/dev/null); h=${{h%% *}}\n\
         m=''; for f in \"$@\"; do x=$(sha256sum < \"$c/models/$f\" 2>/dev/null); x=${{x%% *}}; m=\"$m${{m:+,}}${{x:-none}}\"; done\n\
         printf 'herd-cache %s %s %s %s\\n' \"$(hostname)\" \"${{h:-none}}\" \"${{m:--}}\" \"$c\"\n"
    )
}

async fn probe(
    job: &str,
    nodes: u32,
    s: &SlurmHost,
    binary_sha: &str,
    layout: &ModelLayout,
) -> Result<Probe, String> {
    let mut program = vec![
        "/bin/sh".to_string(),
        "-c".into(),
        probe_program(),
        "herd-probe".into(),
        s.node_cache.display().to_string(),
        binary_sha.into(),
        layout.folders.len().to_string(),
    ];
    program.extend(layout.folders.iter().cloned());
    program.extend(layout.files.iter().map(|f| f.under_models.clone()));
    let argv = command::per_node_argv(job, nodes, &program);
    let out = command::run(&argv, COMMAND_TIMEOUT).await?;
    if !out.ok {
        return Err(format!(
            "the cache probe on the nodes failed ({}): {}",
            out.status,
            slurm_says(&out.stderr)
        ));
    }
    let model_shas: Vec<&str> = layout.files.iter().map(|f| f.sha.as_str()).collect();
    parse_probe(&out.stdout, nodes, binary_sha, &model_shas)
}

fn parse_probe(
    out: &str,
    nodes: u32,
    binary_sha: &str,
    model_shas: &[&str],
) -> Result<Probe, String> {
    let mut cache: Option<String> = None;
    let (mut seen, mut binary) = (0, 0);
    let mut model = vec![0u32; model_shas.len()];
    for line in out.lines().filter_map(|l| l.strip_prefix("herd-cache ")) {
        let mut words = line.splitn(4, ' ');
        let (Some(_node), Some(b), Some(m), Some(c)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!("the cache probe printed '{line}'"));
        };
        let found: Vec<&str> = if m == "-" {
            Vec::new()
        } else {
            m.split(',').collect()
        };
        if found.len() != model_shas.len() {
            return Err(format!(
                "the cache probe printed {} model hashes for {} files: '{line}'",
                found.len(),
                model_shas.len()
            ));
        }
        match &cache {
            None => cache = Some(c.to_string()),
            Some(first) if first != c => {
                return Err(format!(
                    "the nodes' cache folders differ ('{first}', '{c}'); expected the same \
                     path on every node"
                ));
            }
            Some(_) => {}
        }
        seen += 1;
        binary += u32::from(b == binary_sha);
        for ((count, want), got) in model.iter_mut().zip(model_shas).zip(found) {
            *count += u32::from(*want == got);
        }
    }
    let cache = cache.ok_or_else(|| format!("the cache probe printed nothing: {out:?}"))?;
    if seen < nodes {
        return Err(format!(
            "the cache probe answered on {seen} of {nodes} nodes"
        ));
    }
    Ok(Probe {
        cache,
        binary_everywhere: binary == seen,
        model_everywhere: model.into_iter().map(|n| n == seen).collect(),
    })
}

/// The program that moves a file sent by sbcast into place on one node,
/// arguments `TMP FINAL SHA256 MODE`: only when its sha256 is right.
const FINALIZE: &str = "h=$(sha256sum < \"$1\") && h=${h%% *} && [ \"$h\" = \"$3\" ] && chmod \"$4\" \"$1\" && mv -f \"$1\" \"$2\" || { rm -f \"$1\"; printf 'herd: %s on %s has sha256 %s after sbcast, expected %s\\n' \"$2\" \"$(hostname)\" \"$h\" \"$3\" >&2; exit 3; }";

/// Sends `local` to `dest` on every node with sbcast, under a temporary
/// name, then checks and moves it there. Returns the bytes sent (once per
/// node).
async fn broadcast(
    job: &str,
    nodes: u32,
    local: &Path,
    dest: &str,
    sha: &str,
    mode: &str,
) -> Result<u64, String> {
    let size = std::fs::metadata(local)
        .map_err(|e| format!("cannot read '{}': {e}", local.display()))?
        .len();
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = format!("{dest}.tmp.{}.{nonce}", std::process::id());
    let limit = COMMAND_TIMEOUT + Duration::from_secs(size / MIN_SBCAST_BYTES_PER_S);
    let argv = [
        "sbcast".to_string(),
        format!("--jobid={job}"),
        "--force".into(),
        local.display().to_string(),
        tmp.clone(),
    ];
    let out = command::run(&argv, limit).await?;
    if !out.ok {
        return Err(format!(
            "sbcast of '{}' to {tmp} failed ({}): {}",
            local.display(),
            out.status,
            slurm_says(&out.stderr)
        ));
    }
    let argv = command::per_node_argv(
        job,
        nodes,
        &[
            "/bin/sh".into(),
            "-c".into(),
            FINALIZE.into(),
            "herd-finalize".into(),
            tmp,
            dest.into(),
            sha.into(),
            mode.into(),
        ],
    );
    let out = command::run(&argv, COMMAND_TIMEOUT).await?;
    if !out.ok {
        return Err(format!(
            "'{}' did not arrive intact on every node: {}",
            local.display(),
            out.stderr.trim()
        ));
    }
    Ok(size * u64::from(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(program: &str, args: &[&str]) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(program)
            .arg("t")
            .args(args)
            .output()
            .unwrap()
    }

    fn sha(bytes: &[u8]) -> String {
        use sha2::Digest;
        crate::worker::hex(&sha2::Sha256::digest(bytes))
    }

    #[test]
    fn the_probe_reports_what_each_node_holds_and_refuses_an_open_folder() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_str().unwrap();
        let out = sh(&probe_program(), &[r, "ab12", "0", "cd34.safetensors"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let p = parse_probe(&text, 1, "ab12", &["cd34"]).unwrap();
        assert!(!p.binary_everywhere, "{text}");
        assert_eq!(p.model_everywhere, [false], "{text}");
        assert!(p.cache.starts_with(r), "{text}");
        // The binary in place with that sha256 counts as cached.
        let sha = sha(b"x");
        std::fs::create_dir_all(format!("{}/bin/{sha}", p.cache)).unwrap();
        std::fs::write(format!("{}/bin/{sha}/herd", p.cache), b"x").unwrap();
        let out = sh(&probe_program(), &[r, &sha, "0"]);
        let p2 = parse_probe(&String::from_utf8_lossy(&out.stdout), 1, &sha, &[]).unwrap();
        assert!(p2.binary_everywhere, "{out:?}");
        // Two nodes answering, one without the file, is not cached.
        let two = format!(
            "herd-cache n1 {sha} - {c}\nherd-cache n2 none - {c}\n",
            c = p.cache
        );
        assert!(!parse_probe(&two, 2, &sha, &[]).unwrap().binary_everywhere);
        assert!(
            parse_probe(&two, 3, &sha, &[])
                .unwrap_err()
                .contains("2 of 3")
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p.cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = sh(&probe_program(), &[r, &sha, "0"]);
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("writable by other users"));
    }

    #[test]
    fn the_probe_makes_a_models_folders_and_hashes_each_of_its_files() {
        use crate::fleet::Companion;
        let model = ModelFile {
            path: "/job/net.onnx".into(),
            sha256: sha(b"graph"),
            companions: vec![
                Companion {
                    name: "net.onnx.data".into(),
                    path: "/job/net.onnx.data".into(),
                    sha256: sha(b"data"),
                },
                Companion {
                    name: "w/part0.bin".into(),
                    path: "/job/w/part0.bin".into(),
                    sha256: sha(b"part"),
                },
            ],
        };
        let layout = ModelLayout::of(&model);
        let mut args = vec![layout.folders.len().to_string()];
        args.extend(layout.folders.iter().cloned());
        args.extend(layout.files.iter().map(|f| f.under_models.clone()));
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_str().unwrap().to_string();
        let run = || {
            let mut all = vec![r.clone(), "ab12".to_string()];
            all.extend(args.iter().cloned());
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = sh(&probe_program(), &all);
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let shas: Vec<&str> = layout.files.iter().map(|f| f.sha.as_str()).collect();
        let p = parse_probe(&run(), 1, "ab12", &shas).unwrap();
        assert_eq!(p.model_everywhere, [false, false, false]);
        // The folders are there (0700); one companion arrives, the others
        // are still missing.
        let models = format!("{}/models", p.cache);
        use std::os::unix::fs::PermissionsExt;
        for f in &layout.folders {
            let mode = std::fs::metadata(format!("{models}/{f}"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{f}");
        }
        std::fs::write(
            format!("{models}/{}", layout.files[2].under_models),
            b"part",
        )
        .unwrap();
        let p = parse_probe(&run(), 1, "ab12", &shas).unwrap();
        assert_eq!(p.model_everywhere, [false, false, true]);
        // A node that answers about fewer files than asked is an error.
        let short = format!("herd-cache n1 none none {}\n", p.cache);
        assert!(
            parse_probe(&short, 1, "ab12", &shas)
                .unwrap_err()
                .contains("1 model hashes for 3 files")
        );
    }

    #[test]
    fn a_file_with_the_wrong_sha256_is_not_moved_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("f.tmp.1");
        let dest = dir.path().join("f");
        std::fs::write(&tmp, b"x").unwrap();
        let (t, d) = (tmp.to_str().unwrap(), dest.to_str().unwrap());
        let out = sh(FINALIZE, &[t, d, &"0".repeat(64), "0600"]);
        assert_eq!(out.status.code(), Some(3));
        assert!(!tmp.exists() && !dest.exists());
        std::fs::write(&tmp, b"x").unwrap();
        let out = sh(FINALIZE, &[t, d, &sha(b"x"), "0600"]);
        assert!(out.status.success(), "{out:?}");
        assert!(dest.exists() && !tmp.exists());
    }
}
