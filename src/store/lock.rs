//! The run lock: at most one coordinator writes a store at a time.
//!
//! The lock is `flock(2)` on `herd-run.lock` in the store directory; the
//! file names the holder (`host`, `pid`, start time) for the message a second
//! coordinator prints. The kernel releases the lock when the holder dies
//! however it dies, so a stale lock of a dead process is simply taken over
//! (the file's old text is replaced); the descriptor is close-on-exec, so
//! workers the coordinator starts never keep it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::{Error, Result, Store};

/// The lock file's name inside the store directory.
pub const LOCK_FILE: &str = "herd-run.lock";

/// The lock file's size: the holder's description, padded with spaces.
const LOCK_TEXT_LEN: usize = 256;

/// Held by a running coordinator; dropping it releases the store.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    store: Store,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        self.store.inner.run_locks.fetch_sub(1, Ordering::SeqCst);
    }
}

/// This machine's host name.
pub(super) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Tries `flock(LOCK_EX | LOCK_NB)`; `Ok(false)` when another holds it.
fn try_flock(file: &File, path: &Path) -> std::io::Result<bool> {
    // SAFETY: plain syscall on an open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(std::io::Error::new(
        e.kind(),
        format!("lock {}: {e}", path.display()),
    ))
}

impl Store {
    fn lock_path(&self) -> PathBuf {
        self.inner.dir.join(LOCK_FILE)
    }

    fn open_lock_file(&self) -> Result<File> {
        let path = self.lock_path();
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::Io {
                path: self.inner.dir.clone(),
                context: format!("open the run lock {}", path.display()),
                source,
            })
    }

    /// Takes the store's run lock for a coordinator, or fails naming the
    /// host and pid of the coordinator that holds it.
    pub fn lock_run(&self) -> Result<RunLock> {
        let mut file = self.open_lock_file()?;
        let io = |context: &str, source| Error::Io {
            path: self.inner.dir.clone(),
            context: context.to_string(),
            source,
        };
        if !try_flock(&file, &self.lock_path()).map_err(|e| io("take the run lock", e))? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(Error::Busy {
                path: self.inner.dir.clone(),
                holder: holder.trim().to_string(),
            });
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // Always LOCK_TEXT_LEN bytes, rewritten in place: taking a lock over
        // on a full disk needs no new block.
        let mut text = format!(
            "host {} pid {} since {now} (unix seconds)",
            host_name(),
            std::process::id()
        );
        text.truncate(LOCK_TEXT_LEN - 1);
        let text = format!("{text:<width$}\n", width = LOCK_TEXT_LEN - 1);
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|e| io("write the run lock", e))?;
        self.inner.run_locks.fetch_add(1, Ordering::SeqCst);
        Ok(RunLock {
            _file: file,
            store: self.clone(),
        })
    }

    /// Whether this process may treat `building` versions as abandoned: it
    /// holds the run lock itself, or no coordinator holds it (then the lock
    /// is taken and kept for as long as the returned guard lives, so none
    /// starts meanwhile). `None`: another coordinator is running.
    pub(super) fn no_other_coordinator(&self) -> Result<Option<Option<RunLock>>> {
        if self.inner.run_locks.load(Ordering::SeqCst) > 0 {
            return Ok(Some(None));
        }
        match self.lock_run() {
            Ok(lock) => Ok(Some(Some(lock))),
            Err(Error::Busy { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The run lock holder's description, when a coordinator holds it.
    pub(super) fn run_lock_holder(&self) -> Result<Option<String>> {
        if self.inner.run_locks.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        match self.lock_run() {
            Ok(_) => Ok(None),
            Err(Error::Busy { holder, .. }) => Ok(Some(holder)),
            Err(e) => Err(e),
        }
    }
}
