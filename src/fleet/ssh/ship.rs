//! Shipping to an SSH host: the worker binary and the model weights go into a
//! content-addressed cache there (`${XDG_CACHE_HOME:-~/.cache}/herd`), each
//! uploaded under a temporary name, checked with sha256 on the remote side
//! and moved into place; a file the cache already holds is never sent again.
//!
//! The model's files (an ONNX model's external data too) lie under
//! `models/` as [`ModelLayout`] places them.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use russh::client::Handle;
use tokio::io::AsyncReadExt;

use super::connect::Client;
use super::exec::{collect, exec_capture};
use super::{COMMAND_TIMEOUT, Error, HostStatus, MIN_UPLOAD_BYTES_PER_S, Payload, Result, lock};
use crate::fleet::cache::{CHECK_FOLDER, ModelLayout};
use crate::fleet::quote::quote;

/// Bytes per `data_bytes` call while uploading.
const UPLOAD_PIECE_BYTES: usize = 256 << 10;
/// Temporary upload files older than this many minutes (left by a
/// coordinator that died mid-upload) are removed by the next cache probe;
/// younger ones may belong to an upload in progress.
const STALE_UPLOAD_MINUTES: u32 = 60;
/// The name of the shipped binary inside its content-addressed folder.
const REMOTE_BINARY_NAME: &str = "herd";

/// Where the shipped files are on the host.
pub(super) struct Shipped {
    pub binary: String,
    pub binary_sha: String,
    pub model: Option<String>,
}

/// Makes sure the host's cache holds `payload`, uploading what it lacks.
pub(super) async fn ship(
    name: &str,
    handle: &Handle<Client>,
    payload: &Payload,
    binary: &Path,
    status: &Mutex<HostStatus>,
) -> Result<Shipped> {
    let shipping = Instant::now();
    let remote = |message: String| Error::Remote {
        host: name.into(),
        message,
    };
    let binary_sha = file_sha256(name, binary).await?;
    let model = payload
        .model
        .as_ref()
        .map(ModelLayout::of)
        .unwrap_or_default();
    let probe = probe_command(&binary_sha, &model);
    let (code, out, err) = exec_capture(handle, &probe, COMMAND_TIMEOUT)
        .await
        .map_err(remote)?;
    if code != Some(0) {
        return Err(remote(format!(
            "cannot prepare the cache folder (exit {}): {}",
            code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            err.trim()
        )));
    }
    let probed = parse_probe(&out).map_err(remote)?;
    lock(status).cache_dir = Some(probed.cache.clone());
    let file = CacheFile {
        local: binary,
        remote: format!("{}/bin/{binary_sha}/{REMOTE_BINARY_NAME}", probed.cache),
        sha: &binary_sha,
        mode: "0700",
    };
    file.ship(name, handle, probed.binary_sha.as_deref(), status)
        .await?;
    let mut shipped = Shipped {
        binary: file.remote,
        binary_sha: binary_sha.clone(),
        model: None,
    };
    for (i, f) in model.files.iter().enumerate() {
        let file = CacheFile {
            local: &f.local,
            remote: format!("{}/models/{}", probed.cache, f.under_models),
            sha: &f.sha,
            mode: "0600",
        };
        let found = probed.model_shas.get(i).and_then(Option::as_deref);
        file.ship(name, handle, found, status).await?;
        if i == 0 {
            shipped.model = Some(file.remote);
        }
    }
    lock(status).ship_time = Some(shipping.elapsed());
    Ok(shipped)
}

/// One file of the cache: its local copy, its place on the host, its sha256
/// and mode there.
struct CacheFile<'a> {
    local: &'a Path,
    remote: String,
    sha: &'a str,
    mode: &'a str,
}

impl CacheFile<'_> {
    /// Uploads the file unless the cache already holds it (`found`: the
    /// sha256 the probe found there), counting either in `status`.
    async fn ship(
        &self,
        name: &str,
        handle: &Handle<Client>,
        found: Option<&str>,
        status: &Mutex<HostStatus>,
    ) -> Result<()> {
        if found == Some(self.sha) {
            lock(status).cached_files += 1;
            return Ok(());
        }
        let sent = upload(name, handle, self.local, &self.remote, self.sha, self.mode).await?;
        let mut s = lock(status);
        s.shipped_bytes += sent;
        s.uploaded_files += 1;
        Ok(())
    }
}

/// Lower-case hex sha256 of a local file.
async fn file_sha256(name: &str, path: &Path) -> Result<String> {
    crate::fleet::cache::file_sha256(path)
        .await
        .map_err(|message| Error::Local {
            host: name.into(),
            path: path.to_path_buf(),
            message,
        })
}

/// The shell line that runs `exec_line` only when the binary at `binary`
/// still has sha256 `sha` (exit 126 and a message otherwise): the cached
/// binary is verified immediately before every worker starts.
pub(super) fn verified_exec(binary: &str, sha: &str, exec_line: &str) -> String {
    let (b, s) = (quote(binary), quote(sha));
    format!(
        "h=$(sha256sum < {b}) && h=${{h%% *}} && {{ [ \"$h\" = {s} ] || {{ printf 'herd: the cached worker binary %s has sha256 %s, expected %s; refusing to run it\\n' {b} \"$h\" {s} >&2; exit 126; }}; }} && {exec_line}"
    )
}

/// The remote command that makes the cache folders (mode 0700), refuses
/// them when they are links, another user's or writable by others, and
/// prints the cache folder and the sha256 of the files already there.
fn probe_command(binary_sha: &str, model: &ModelLayout) -> String {
    let bin = format!(
        "\"$c\"/bin/{}/{}",
        quote(binary_sha),
        quote(REMOTE_BINARY_NAME)
    );
    let mut folders = vec![
        "\"$c\"/bin".to_string(),
        format!("\"$c\"/bin/{}", quote(binary_sha)),
        "\"$c\"/models".to_string(),
    ];
    folders.extend(
        model
            .folders
            .iter()
            .map(|f| format!("\"$c\"/models/{}", quote(f))),
    );
    let folders = folders.join(" ");
    let mut cmd = format!(
        "umask 077 && c=\"${{XDG_CACHE_HOME:-$HOME/.cache}}/herd\" && mkdir -p {folders} && for d in \"$c\" {folders}; do {CHECK_FOLDER}; done && {{ find \"$c\" -name '*.tmp.*' -type f -mmin +{STALE_UPLOAD_MINUTES} -exec rm -f {{}} + 2>/dev/null || true; }} && printf 'cache=%s\\n' \"$c\" && printf 'bin=%s\\n' \"$(sha256sum < {bin} 2>/dev/null)\""
    );
    for f in &model.files {
        cmd.push_str(&format!(
            " && printf 'model=%s\\n' \"$(sha256sum < \"$c\"/models/{} 2>/dev/null)\"",
            quote(&f.under_models)
        ));
    }
    cmd
}

#[derive(Debug, PartialEq)]
struct Probed {
    cache: String,
    binary_sha: Option<String>,
    /// The sha256 of each of the model's files found there, in the order
    /// of [`ModelLayout::files`] (`None`: not there).
    model_shas: Vec<Option<String>>,
}

fn parse_probe(out: &str) -> std::result::Result<Probed, String> {
    let mut cache = None;
    let mut binary_sha = None;
    let mut model_shas = Vec::new();
    for line in out.lines() {
        let first_word = |v: &str| v.split_whitespace().next().map(str::to_string);
        if let Some(v) = line.strip_prefix("cache=") {
            cache = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("bin=") {
            binary_sha = first_word(v);
        } else if let Some(v) = line.strip_prefix("model=") {
            model_shas.push(first_word(v));
        }
    }
    let cache = cache.ok_or_else(|| format!("the cache probe printed no folder: {out:?}"))?;
    if !cache.starts_with('/') {
        return Err(format!(
            "the remote cache folder '{cache}' is not absolute ($HOME unset?)"
        ));
    }
    Ok(Probed {
        cache,
        binary_sha,
        model_shas,
    })
}

/// Uploads `local` to `remote` under a temporary name, checks its sha256
/// there against `sha`, sets `mode` and moves it into place. Returns the
/// bytes sent.
async fn upload(
    name: &str,
    handle: &Handle<Client>,
    local: &Path,
    remote: &str,
    sha: &str,
    mode: &str,
) -> Result<u64> {
    let remote_err = |message: String| Error::Remote {
        host: name.into(),
        message,
    };
    let local_err = |message: String| Error::Local {
        host: name.into(),
        path: local.to_path_buf(),
        message,
    };
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = format!("{remote}.tmp.{}.{nonce}", std::process::id());
    let (t, f, s, m) = (quote(&tmp), quote(remote), quote(sha), quote(mode));
    let cmd = format!(
        "umask 077 && cat > {t} && h=$(sha256sum < {t}) && h=${{h%% *}} && {{ [ \"$h\" = {s} ] || {{ printf 'sha256 of the upload is %s, expected %s\\n' \"$h\" {s} >&2; false; }}; }} && chmod {m} {t} && mv -f {t} {f} || {{ rm -f {t}; exit 3; }}"
    );
    let mut file = tokio::fs::File::open(local)
        .await
        .map_err(|e| local_err(e.to_string()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| local_err(e.to_string()))?
        .len();
    let limit = COMMAND_TIMEOUT + Duration::from_secs(size / MIN_UPLOAD_BYTES_PER_S);
    let channel = handle
        .channel_open_session()
        .await
        .map_err(|e| remote_err(format!("cannot open a channel: {e}")))?;
    channel
        .exec(true, cmd)
        .await
        .map_err(|e| remote_err(format!("cannot start the upload: {e}")))?;
    let (rx, tx) = channel.split();
    let reader = tokio::spawn(collect(rx));
    let send = async {
        let mut sent = 0u64;
        let mut buf = vec![0u8; UPLOAD_PIECE_BYTES];
        loop {
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| local_err(e.to_string()))?;
            if n == 0 {
                break;
            }
            tx.data_bytes(buf[..n].to_vec())
                .await
                .map_err(|e| remote_err(format!("upload to {remote} broke off: {e}")))?;
            sent += n as u64;
        }
        let _ = tx.eof().await;
        Ok::<u64, Error>(sent)
    };
    let outcome = tokio::time::timeout(limit, async {
        let sent = send.await?;
        let (code, _out, err) = reader
            .await
            .map_err(|e| remote_err(format!("upload task failed: {e}")))?;
        Ok::<_, Error>((sent, code, err))
    })
    .await
    .map_err(|_| {
        remote_err(format!(
            "upload of '{}' to {remote} took over {}s",
            local.display(),
            limit.as_secs()
        ))
    })??;
    let (sent, code, err) = outcome;
    if code != Some(0) {
        return Err(remote_err(format!(
            "upload of '{}' to {remote} failed (exit {}): {}",
            local.display(),
            code.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            err.trim()
        )));
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::ModelFile;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_probe_output_gives_the_cache_folder_and_the_hashes_found() {
        let p = parse_probe("cache=/root/.cache/herd\nbin=abc  -\nmodel=\n").unwrap();
        assert_eq!(
            p,
            Probed {
                cache: "/root/.cache/herd".into(),
                binary_sha: Some("abc".into()),
                model_shas: vec![None],
            }
        );
        assert!(
            parse_probe("cache=.cache/herd\n")
                .unwrap_err()
                .contains("not absolute")
        );
        assert!(parse_probe("").is_err());
    }

    #[test]
    fn the_probe_removes_stale_temporary_uploads_but_not_fresh_ones() {
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join(".cache/herd/bin/0123");
        std::fs::create_dir_all(&bin).unwrap();
        let stale = bin.join("herd.tmp.1.2");
        let fresh = bin.join("herd.tmp.3.4");
        let kept = bin.join("herd");
        for f in [&stale, &fresh, &kept] {
            std::fs::write(f, b"x").unwrap();
        }
        let old = SystemTime::now() - Duration::from_secs(60 * (STALE_UPLOAD_MINUTES as u64 + 5));
        for f in [&stale, &kept] {
            std::fs::File::options()
                .write(true)
                .open(f)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(probe_command("0123", &ModelLayout::default()))
            .env("HOME", home.path())
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(!stale.exists(), "a stale upload is left");
        assert!(fresh.exists() && kept.exists());
        let p = parse_probe(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert!(p.binary_sha.is_some(), "the cached binary is hashed");
    }

    fn sh(line: &str, home: &Path) -> std::process::Output {
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .env("HOME", home)
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap()
    }

    #[test]
    fn a_cache_folder_others_may_write_or_that_is_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let cache = home.path().join(".cache/herd");
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = sh(&probe_command("0123", &ModelLayout::default()), home.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("writable by other users"), "{err}");

        std::fs::remove_dir_all(&cache).unwrap();
        let elsewhere = home.path().join("shared");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &cache).unwrap();
        let out = sh(&probe_command("0123", &ModelLayout::default()), home.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{err}");
        assert!(err.contains("is a symbolic link"), "{err}");

        std::fs::remove_file(&cache).unwrap();
        let out = sh(&probe_command("0123", &ModelLayout::default()), home.path());
        assert!(out.status.success(), "{out:?}");
    }

    #[test]
    fn the_worker_binary_is_verified_immediately_before_each_exec() {
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("herd");
        std::fs::write(&bin, b"the binary").unwrap();
        let sha = crate::worker::hex(&Sha256::digest(b"the binary"));
        let bin = bin.display().to_string();
        let out = sh(&verified_exec(&bin, &sha, "exec echo ran"), home.path());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n", "{out:?}");

        std::fs::write(&bin, b"replaced").unwrap();
        let out = sh(&verified_exec(&bin, &sha, "exec echo ran"), home.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(126), "{err}");
        assert!(out.stdout.is_empty(), "a replaced binary ran");
        assert!(
            err.contains("refusing to run it") && err.contains(&sha),
            "{err}"
        );
    }

    #[test]
    fn the_probe_command_runs_in_sh_and_reports_missing_files_as_empty() {
        let home = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(probe_command(
                "0123",
                &ModelLayout::of(&ModelFile::alone("/m", "4567")),
            ))
            .env("HOME", home.path())
            .env_remove("XDG_CACHE_HOME")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let p = parse_probe(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let cache = home.path().join(".cache/herd");
        assert_eq!(p.cache, cache.display().to_string());
        assert_eq!((p.binary_sha, p.model_shas), (None, vec![None]));
        use std::os::unix::fs::PermissionsExt;
        for d in ["", "bin", "bin/0123", "models"] {
            let mode = std::fs::metadata(cache.join(d))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700, "{d}");
        }
    }

    #[test]
    fn a_model_with_files_beside_it_gets_a_folder_named_by_every_files_hash() {
        use crate::fleet::Companion;
        let part = |name: &str, sha: &str| Companion {
            name: name.into(),
            path: Path::new("/job/models").join(name),
            sha256: sha.into(),
        };
        let model = ModelFile {
            path: "/job/models/net.onnx".into(),
            sha256: "aa".into(),
            companions: vec![part("net.onnx.data", "bb"), part("w/part0.bin", "cc")],
        };
        let layout = ModelLayout::of(&model);
        let bundle = &layout.folders[0];
        let places: Vec<&str> = layout
            .files
            .iter()
            .map(|f| f.under_models.as_str())
            .collect();
        assert_eq!(
            places,
            [
                format!("{bundle}/net.onnx"),
                format!("{bundle}/net.onnx.data"),
                format!("{bundle}/w/part0.bin"),
            ]
        );
        assert_eq!(layout.folders, [bundle.clone(), format!("{bundle}/w")]);
        // Other external data, same model file: another folder.
        let mut changed = model.clone();
        changed.companions[1].sha256 = "dd".into();
        assert_ne!(&ModelLayout::of(&changed).folders[0], bundle);

        // The probe makes the folders (0700) and finds what is there.
        let home = tempfile::tempdir().unwrap();
        let out = sh(&probe_command("0123", &layout), home.path());
        assert!(out.status.success(), "{out:?}");
        let models = home.path().join(".cache/herd/models");
        std::fs::write(models.join(bundle).join("w/part0.bin"), b"x").unwrap();
        let out = sh(&probe_command("0123", &layout), home.path());
        let p = parse_probe(&String::from_utf8_lossy(&out.stdout)).unwrap();
        let x = crate::worker::hex(&Sha256::digest(b"x"));
        assert_eq!(p.model_shas, [None, None, Some(x)]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(models.join(bundle).join("w"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
