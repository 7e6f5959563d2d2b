//! What every host kind that ships files shares: the sha256 of a local file
//! (computed once per file for the life of the process, since every host
//! ships the same binary), where a model's files go in a cache, and the
//! shell check that refuses a cache folder others could tamper with.
//!
//! A model alone is `models/SHA.EXT` (its own extension). A model that reads
//! files beside it (an ONNX model's external data) goes into a folder of its
//! own, `models/BUNDLE/`, named by the sha256 of every file's hash and name,
//! with the files in the same layout as beside the job's model, so the
//! worker finds them there by the names the model gives them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::fleet::ModelFile;

use sha2::{Digest, Sha256};

/// The shell code that refuses a cache folder `$d` that is a symbolic
/// link, belongs to another user, or that others may write (exit 4).
pub(crate) const CHECK_FOLDER: &str = "if [ -L \"$d\" ]; then echo \"herd cache folder $d is a symbolic link; refusing to use it (remove it)\" >&2; exit 4; fi; if [ ! -O \"$d\" ]; then echo \"herd cache folder $d belongs to another user; refusing to use it\" >&2; exit 4; fi; case $(ls -ld \"$d\") in ?????w????*|????????w?*) echo \"herd cache folder $d is writable by other users; refusing to use it (chmod 700 it, or remove it)\" >&2; exit 4;; esac";

/// Lower-case hex sha256 of a local file (cached per path, size and mtime
/// for the life of the process).
pub async fn file_sha256(path: &Path) -> Result<String, String> {
    type Key = (PathBuf, u64, Option<SystemTime>);
    static CACHE: Mutex<Vec<(Key, String)>> = Mutex::new(Vec::new());
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    let key: Key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    if let Some((_, h)) = CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(k, _)| *k == key)
    {
        return Ok(h.clone());
    }
    let p = path.to_path_buf();
    let hash = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
        use std::io::Read;
        let mut f = std::fs::File::open(&p)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(crate::worker::hex(&h.finalize()))
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    CACHE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((key, hash.clone()));
    Ok(hash)
}

/// Where a model's files go in a cache: the model first, then each file it
/// reads beside it; and the folders under `models/` they need, each after
/// the folder it lies in.
#[derive(Debug, Default)]
pub(crate) struct ModelLayout {
    pub files: Vec<ModelPart>,
    pub folders: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct ModelPart {
    /// The path below the cache's `models/` folder.
    pub under_models: String,
    pub local: PathBuf,
    pub sha: String,
}

impl ModelLayout {
    pub fn of(m: &ModelFile) -> ModelLayout {
        if m.companions.is_empty() {
            let ext = m
                .path
                .extension()
                .and_then(|e| e.to_str())
                .filter(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_alphanumeric()))
                .unwrap_or("model");
            return ModelLayout {
                files: vec![ModelPart {
                    under_models: format!("{}.{ext}", m.sha256),
                    local: m.path.clone(),
                    sha: m.sha256.clone(),
                }],
                folders: Vec::new(),
            };
        }
        let file_name = m
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        let mut listing = format!("{} {file_name}\n", m.sha256);
        for c in &m.companions {
            listing.push_str(&format!("{} {}\n", c.sha256, c.name));
        }
        let bundle = crate::worker::hex(&Sha256::digest(listing.as_bytes()));
        let mut layout = ModelLayout {
            files: vec![ModelPart {
                under_models: format!("{bundle}/{file_name}"),
                local: m.path.clone(),
                sha: m.sha256.clone(),
            }],
            folders: vec![bundle.clone()],
        };
        for c in &m.companions {
            let under_models = format!("{bundle}/{}", c.name);
            if layout.files.iter().any(|f| f.under_models == under_models) {
                continue;
            }
            // A name with folders in it (`weights/part0.bin`) needs them made.
            let mut folder = bundle.clone();
            let parts: Vec<&str> = c.name.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                if part.is_empty() || *part == "." {
                    continue;
                }
                folder = format!("{folder}/{part}");
                if !layout.folders.contains(&folder) {
                    layout.folders.push(folder.clone());
                }
            }
            layout.files.push(ModelPart {
                under_models,
                local: c.path.clone(),
                sha: c.sha256.clone(),
            });
        }
        layout
    }
}
