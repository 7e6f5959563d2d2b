//! The worker binary and the model on the allocation's nodes: with
//! `ship = "sbcast"` into a node-local content-addressed cache
//! (`<node_cache>/herd-<uid>/bin/<sha256>/herd`,
//! `.../models/<sha256>.<ext>`), each file sent with `sbcast` under a
//! temporary name only when some node lacks it, checked with sha256 on every
//! node and moved into place; with `ship = "shared"` used where they are.
//! Either way the binary's sha256 is checked on the node again before each
//! worker starts ([`super::command::verified_worker`]), and the worker
//! checks the model's when it loads it.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::command::{self, COMMAND_TIMEOUT, slurm_says};
use crate::config::{Ship, SlurmHost};
use crate::fleet::ModelFile;
use crate::fleet::cache::{CHECK_FOLDER, file_sha256};

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
    let model_name = model.map(|m| {
        let ext = m
            .path
            .extension()
            .and_then(|e| e.to_str())
            .filter(|e| e.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("model");
        format!("{}.{ext}", m.sha256)
    });
    let probe = probe(job, nodes, s, &binary_sha, model_name.as_deref()).await?;
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
    if let (Some(m), Some(name)) = (model, &model_name) {
        let dest = format!("{}/models/{name}", probe.cache);
        shipped.model = Some(dest.clone());
        files.push((
            m.path.clone(),
            dest,
            m.sha256.clone(),
            "0600",
            probe.model_everywhere,
        ));
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
    model_everywhere: bool,
}

/// The program of the probe step, run once per node with arguments
/// `NODE_CACHE BINARY_SHA MODEL_NAME`: makes the cache folders (mode 0700),
/// refuses them when they are links, another user's or writable by others,
/// removes stale temporary files and prints one line,
/// `herd-cache NODE BINARY_SHA MODEL_SHA CACHE` (`none` for a file it lacks).
fn probe_program() -> String {
    format!(
        "umask 077\n\
         c=\"$1/herd-$(id -u)\"\n\
         mkdir -p \"$c/bin/$2\" \"$c/models\" || exit 3\n\
         for d in \"$c\" \"$c/bin\" \"$c/bin/$2\" \"$c/models\"; do {CHECK_FOLDER}; done\n\
         find \"$c\" -name '*.tmp.*' -type f -mmin +{STALE_MINUTES} -exec rm -f {{}} + 2>/dev/null\n\
         b=$(sha256sum < \"$c/bin/$2/{BINARY_NAME}\" 2>/dev/null); b=${{b%% *}}\n\
         m=''; if [ -n \"$3\" ]; then m=$(sha256sum < \"$c/models/$3\" 2>/dev/null); m=${{m%% *}}; fi\n\
         printf 'herd-cache %s %s %s %s\\n' \"$(hostname)\" \"${{b:-none}}\" \"${{m:-none}}\" \"$c\"\n"
    )
}

async fn probe(
    job: &str,
    nodes: u32,
    s: &SlurmHost,
    binary_sha: &str,
    model_name: Option<&str>,
) -> Result<Probe, String> {
    let argv = command::per_node_argv(
        job,
        nodes,
        &[
            "/bin/sh".into(),
            "-c".into(),
            probe_program(),
            "herd-probe".into(),
            s.node_cache.display().to_string(),
            binary_sha.into(),
            model_name.unwrap_or("").into(),
        ],
    );
    let out = command::run(&argv, COMMAND_TIMEOUT).await?;
    if !out.ok {
        return Err(format!(
            "the cache probe on the nodes failed ({}): {}",
            out.status,
            slurm_says(&out.stderr)
        ));
    }
    let model_sha = model_name.map(|n| n.split('.').next().unwrap_or(n));
    parse_probe(&out.stdout, nodes, binary_sha, model_sha)
}

fn parse_probe(
    out: &str,
    nodes: u32,
    binary_sha: &str,
    model_sha: Option<&str>,
) -> Result<Probe, String> {
    let mut cache: Option<String> = None;
    let (mut seen, mut binary, mut model) = (0, 0, 0);
    for line in out.lines().filter_map(|l| l.strip_prefix("herd-cache ")) {
        let mut words = line.splitn(4, ' ');
        let (Some(_node), Some(b), Some(m), Some(c)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!("the cache probe printed '{line}'"));
        };
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
        model += u32::from(model_sha == Some(m));
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
        model_everywhere: model_sha.is_some() && model == seen,
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

    #[test]
    fn the_probe_reports_what_each_node_holds_and_refuses_an_open_folder() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path().to_str().unwrap();
        let out = sh(&probe_program(), &[r, "ab12", "cd34.safetensors"]);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let p = parse_probe(&text, 1, "ab12", Some("cd34")).unwrap();
        assert!(!p.binary_everywhere && !p.model_everywhere, "{text}");
        assert!(p.cache.starts_with(r), "{text}");
        // The binary in place with that sha256 counts as cached.
        let bin = format!("{}/bin/ab12/herd", p.cache);
        std::fs::write(&bin, b"x").unwrap();
        let sha = {
            use sha2::Digest;
            crate::worker::hex(&sha2::Sha256::digest(b"x"))
        };
        let out = sh(&probe_program(), &[r, &sha, ""]);
        std::fs::create_dir_all(format!("{}/bin/{sha}", p.cache)).unwrap();
        std::fs::rename(&bin, format!("{}/bin/{sha}/herd", p.cache)).unwrap();
        let out2 = sh(&probe_program(), &[r, &sha, ""]);
        let p2 = parse_probe(&String::from_utf8_lossy(&out2.stdout), 1, &sha, None).unwrap();
        assert!(p2.binary_everywhere, "{out:?} {out2:?}");
        // Two nodes answering, one without the file, is not cached.
        let two = format!(
            "herd-cache n1 {sha} none {c}\nherd-cache n2 none none {c}\n",
            c = p.cache
        );
        assert!(!parse_probe(&two, 2, &sha, None).unwrap().binary_everywhere);
        assert!(
            parse_probe(&two, 3, &sha, None)
                .unwrap_err()
                .contains("2 of 3")
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p.cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = sh(&probe_program(), &[r, &sha, ""]);
        assert_eq!(out.status.code(), Some(4), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("writable by other users"));
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
        let sha = {
            use sha2::Digest;
            crate::worker::hex(&sha2::Sha256::digest(b"x"))
        };
        let out = sh(FINALIZE, &[t, d, &sha, "0600"]);
        assert!(out.status.success(), "{out:?}");
        assert!(dest.exists() && !tmp.exists());
    }
}
