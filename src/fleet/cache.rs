//! What every host kind that ships files shares: the sha256 of a local file
//! (computed once per file for the life of the process, since every host
//! ships the same binary), and the shell check that refuses a cache folder
//! others could tamper with.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

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
