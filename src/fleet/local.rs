//! Local workers: child processes of the coordinator running `herd worker`.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;
use tokio::sync::oneshot;

use super::{BoxFuture, HostLink, ModelFile, Setup, Spawned, WorkerCommand};

/// Names the worker executable instead of this process's own binary (for
/// embedding herd's library in another program, and for tests that drive the
/// library from a test binary).
pub const WORKER_EXE_ENV: &str = "HERD_WORKER_BIN";

/// The executable local workers run: `$HERD_WORKER_BIN`, else this binary.
pub fn worker_exe() -> std::io::Result<PathBuf> {
    match std::env::var_os(WORKER_EXE_ENV) {
        Some(p) => Ok(PathBuf::from(p)),
        None => std::env::current_exe(),
    }
}

/// The coordinator's own machine: each worker is a child process.
pub struct LocalHost {
    /// Where the workers read the model weights: the job's own file.
    model: Option<String>,
}

impl LocalHost {
    pub fn new(model: Option<&ModelFile>) -> LocalHost {
        LocalHost {
            model: model.map(|m| m.path.display().to_string()),
        }
    }
}

impl HostLink for LocalHost {
    fn start_worker(&self, env: &[(String, String)]) -> Result<Spawned, String> {
        spawn(env).map_err(|e| e.to_string())
    }

    fn model_path(&self) -> Option<String> {
        self.model.clone()
    }

    fn shipped_bytes(&self) -> u64 {
        0
    }

    fn ready(&self) -> BoxFuture<'_, Result<Option<String>, String>> {
        Box::pin(async { Ok(None) })
    }

    fn setup(&self) -> Setup {
        Setup {
            transport: "local".into(),
            ..Setup::none()
        }
    }
}

/// Starts `herd worker` as a child process, with `env` added to its
/// environment.
pub fn spawn(env: &[(String, String)]) -> std::io::Result<Spawned> {
    let exe = worker_exe()?;
    let cmd = WorkerCommand::new(&exe, env)
        .process()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    spawn_process(cmd)
}

/// Starts `cmd` (a worker command, or one that wraps it) as a child process
/// speaking the worker protocol on its stdin and stdout. The child dies with
/// the coordinator: its stdin closes, and `kill_on_drop` covers the rest.
pub fn spawn_process(mut cmd: Command) -> std::io::Result<Spawned> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process group of its own: Ctrl-C at the terminal interrupts the
        // coordinator, which then stops its workers in order, instead of
        // killing every worker at the same moment.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        std::io::Error::new(e.kind(), format!("cannot start '{program} worker': {e}"))
    })?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let exit = Box::pin(async move {
        tokio::select! {
            status = child.wait() => describe_exit(status),
            _ = kill_rx => {
                let _ = child.kill().await;
                "killed by the coordinator".to_string()
            }
        }
    });
    Ok(Spawned {
        stdin: Box::new(stdin),
        stdout: Box::new(stdout),
        stderr: Box::new(stderr),
        exit,
        kill: kill_tx,
    })
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(0), _) => "exited".to_string(),
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("lost: {e}"),
    }
}
