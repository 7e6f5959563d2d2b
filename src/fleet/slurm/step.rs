//! One worker as a job step: `srun --jobid J --ntasks=1 --exact
//! --unbuffered` running the checked worker command, its stdin and stdout
//! carrying the framed protocol. Handed out at once; the step starts when
//! the allocation is up (or its exit says why it never will).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::alloc::job_state;
use super::command::{self, step_argv, verified_worker};
use super::{Ready, Stage, wait_ready};
use crate::config::SlurmHost;
use crate::fleet::{Pipes, Spawned, WorkerCommand};

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
    let (cfg, env) = (cfg.clone(), env.to_vec());
    Spawned::driven("slurm", name, move |pipes, kill_rx| async move {
        run(&cfg, stage, env, pipes, kill_rx).await
    })
}

async fn run(
    cfg: &SlurmHost,
    mut stage: watch::Receiver<Stage>,
    env: Vec<(String, String)>,
    mut io: Pipes,
    mut kill_rx: oneshot::Receiver<()>,
) -> String {
    // An allocation that ended before this step's worker said a word: with
    // `requeue`, the step starts in the next allocation instead.
    let mut stale: Option<String> = None;
    loop {
        let ready: Arc<Ready> = tokio::select! {
            r = wait_fresh(&mut stage, stale.as_deref()) => match r {
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
        let done = match attempt(&argv, &mut io, &mut kill_rx).await {
            Ok(done) => done,
            Err(e) => return e,
        };
        let (reason, ended) = describe(&ready.job, done.status).await;
        if cfg.requeue && ended && done.wrote == 0 && !done.killed {
            stale = Some(ready.job.clone());
            continue;
        }
        return reason;
    }
}

/// Waits for an allocation other than `stale`.
async fn wait_fresh(
    stage: &mut watch::Receiver<Stage>,
    stale: Option<&str>,
) -> Result<Arc<Ready>, String> {
    loop {
        let ready = wait_ready(stage).await?;
        if Some(ready.job.as_str()) != stale {
            return Ok(ready);
        }
        if stage.changed().await.is_err() {
            return Err("the host's allocation was abandoned".into());
        }
    }
}

/// How one srun ended: its status, the bytes its worker wrote, and whether
/// the coordinator killed it.
struct Done {
    status: std::io::Result<std::process::ExitStatus>,
    wrote: u64,
    killed: bool,
}

/// Runs one srun of `argv`, piping `io` through it until it ends.
async fn attempt(
    argv: &[String],
    io: &mut Pipes,
    kill_rx: &mut oneshot::Receiver<()>,
) -> Result<Done, String> {
    let mut cmd = command::command(argv);
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| command::not_found("srun", e))?;
    let pid = child.id();
    let c_in = child.stdin.take().expect("piped");
    let mut c_out = child.stdout.take().expect("piped");
    let mut c_err = child.stderr.take().expect("piped");
    let Pipes {
        stdin,
        stdout,
        stderr,
    } = io;
    let wait = async {
        tokio::select! {
            s = child.wait() => (s, false),
            _ = kill_rx => {
                if let Some(pid) = pid {
                    // srun passes SIGTERM on to the step and ends it.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                let s = match tokio::time::timeout(TERM_GRACE, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = child.kill().await;
                        child.wait().await
                    }
                };
                (s, true)
            }
        }
    };
    let pump_out = async { tokio::io::copy(&mut c_out, stdout).await.unwrap_or(0) };
    let pump_err = async {
        let _ = tokio::io::copy(&mut c_err, stderr).await;
    };
    // stdout and stderr end with srun; stdin only when the coordinator
    // closes it (then srun's stdin closes too, and the worker ends).
    let pump_in = async {
        let mut c_in = c_in;
        let _ = tokio::io::copy(stdin, &mut c_in).await;
        drop(c_in);
        std::future::pending::<()>().await
    };
    let ((status, killed), wrote, ()) = tokio::select! {
        r = async { tokio::join!(wait, pump_out, pump_err) } => r,
        _ = pump_in => unreachable!("pump_in never ends"),
    };
    Ok(Done {
        status,
        wrote,
        killed,
    })
}

/// How a step ended, and whether its allocation is gone too (looked up
/// only when the step failed).
async fn describe(job: &str, status: std::io::Result<std::process::ExitStatus>) -> (String, bool) {
    use std::os::unix::process::ExitStatusExt;
    let how = match &status {
        Ok(s) if s.success() => return ("exited".to_string(), false),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("lost: {e}"),
    };
    match job_state(job).await {
        Some((state, _)) if state == "RUNNING" => (format!("step of slurm job {job} {how}"), false),
        Some((state, _)) => (
            format!("{how}: slurm allocation {job} ended ({state})"),
            true,
        ),
        None => (format!("{how}: slurm allocation {job} ended"), true),
    }
}
