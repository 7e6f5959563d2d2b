//! One worker as a job step: `srun --jobid J --ntasks=1 --exact
//! --unbuffered` running the checked worker command, its stdin and stdout
//! carrying the framed protocol. Handed out at once; the step starts when
//! the allocation is up (or its exit says why it never will).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::DuplexStream;
use tokio::sync::{oneshot, watch};

use super::alloc::job_state;
use super::command::{self, step_argv, verified_worker};
use super::{Ready, Stage, wait_ready};
use crate::config::SlurmHost;
use crate::fleet::{Spawned, WorkerCommand};

/// Buffer of each in-process pipe between a step's srun and the coordinator.
const PIPE_BYTES: usize = 256 << 10;
/// After SIGTERM (which srun passes to the step), how long srun has to end
/// before it is killed outright (the allocation's cancel ends the step then).
const TERM_GRACE: Duration = Duration::from_secs(5);

/// A worker step of host `name`, started once `stage` is ready.
pub fn spawn(
    name: &str,
    cfg: &SlurmHost,
    stage: watch::Receiver<Stage>,
    env: &[(String, String)],
) -> Spawned {
    let (stdin_user, stdin_ours) = tokio::io::duplex(PIPE_BYTES);
    let (stdout_ours, stdout_user) = tokio::io::duplex(PIPE_BYTES);
    let (stderr_ours, stderr_user) = tokio::io::duplex(PIPE_BYTES);
    let (kill_tx, kill_rx) = oneshot::channel::<()>();
    let (exit_tx, exit_rx) = oneshot::channel::<String>();
    let (name, cfg, env) = (name.to_string(), cfg.clone(), env.to_vec());
    tokio::spawn(async move {
        let pipes = [stdin_ours, stdout_ours, stderr_ours];
        let reason = run(&cfg, stage, env, pipes, kill_rx).await;
        let _ = exit_tx.send(reason);
    });
    Spawned {
        stdin: Box::new(stdin_user),
        stdout: Box::new(stdout_user),
        stderr: Box::new(stderr_user),
        exit: Box::pin(async move {
            exit_rx
                .await
                .unwrap_or_else(|_| format!("ended: the slurm task for host '{name}' stopped"))
        }),
        kill: kill_tx,
    }
}

async fn run(
    cfg: &SlurmHost,
    mut stage: watch::Receiver<Stage>,
    env: Vec<(String, String)>,
    [stdin, stdout, stderr]: [DuplexStream; 3],
    mut kill_rx: oneshot::Receiver<()>,
) -> String {
    let ready: Arc<Ready> = tokio::select! {
        r = wait_ready(&mut stage) => match r {
            Ok(r) => r,
            Err(e) => return format!("never started: {e}"),
        },
        _ = &mut kill_rx => return "killed by the coordinator before it started".into(),
    };
    let worker = WorkerCommand::new(&ready.binary, &env);
    let argv = match verified_worker(&worker, &ready.binary_sha) {
        Ok(argv) => step_argv(&ready.job, cfg, &argv),
        Err(e) => return e,
    };
    let mut cmd = command::command(&argv);
    cmd.stdin(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return command::not_found("srun", e),
    };
    let pid = child.id();
    let (mut c_in, mut c_out, mut c_err) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
        child.stderr.take().expect("piped"),
    );
    let (mut u_in, mut u_out, mut u_err) = (stdin, stdout, stderr);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut u_in, &mut c_in).await;
    });
    let out_task = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut c_out, &mut u_out).await;
    });
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut c_err, &mut u_err).await;
    });
    let status = tokio::select! {
        s = child.wait() => s,
        _ = &mut kill_rx => {
            if let Some(pid) = pid {
                // srun passes SIGTERM on to the step and ends it.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            match tokio::time::timeout(TERM_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    let _ = child.kill().await;
                    child.wait().await
                }
            }
        }
    };
    let _ = out_task.await;
    describe(&ready.job, status).await
}

/// How a step ended; when it failed, whether its allocation is gone too.
async fn describe(job: &str, status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match &status {
        Ok(s) if s.success() => return "exited".to_string(),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("lost: {e}"),
    };
    match job_state(job).await {
        Some((state, _)) if state == "RUNNING" => format!("step of slurm job {job} {how}"),
        Some((state, _)) => format!("{how}: slurm allocation {job} ended ({state})"),
        None => format!("{how}: slurm allocation {job} ended"),
    }
}
