//! One Slurm allocation: submitted with `salloc`, watched in the queue
//! (`squeue` for Slurm's reason while it is pending), held while its
//! command reads the coordinator's pipe, and ended with `scancel`.
//!
//! The allocation cannot outlive the coordinator: `salloc` runs `cat` on a
//! pipe whose writing end only the coordinator holds, so when the
//! coordinator exits (or is killed) `cat` sees the end of its input and
//! `salloc` gives the allocation back. An orderly end cancels it at once.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, watch};

use super::command::{self, COMMAND_TIMEOUT, slurm_says};
use crate::config::SlurmHost;

/// How often a pending allocation's state and reason are read from squeue.
pub const PENDING_POLL: Duration = Duration::from_secs(2);
/// Most lines of salloc's output kept for messages.
const MAX_LINES_KEPT: usize = 64;

/// What `salloc` said about the job, parsed from one line of its stderr.
#[derive(Debug, PartialEq)]
pub enum Said {
    /// `Pending job allocation J`
    Pending(String),
    /// `Granted job allocation J`
    Granted(String),
    Other,
}

pub fn parse_line(line: &str) -> Said {
    let id_after = |prefix: &str| {
        line.split_once(prefix)
            .map(|(_, rest)| rest.trim().trim_end_matches('.').to_string())
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(id) = id_after("Granted job allocation ") {
        Said::Granted(id)
    } else if let Some(id) = id_after("Pending job allocation ") {
        Said::Pending(id)
    } else {
        Said::Other
    }
}

/// A running allocation.
pub struct Allocation {
    pub job: String,
    /// Nodes it holds (`squeue %N`), and how many.
    pub nodes: String,
    pub node_count: u32,
    /// Time from submitting to the start.
    pub queued: Duration,
    salloc: Child,
    /// Closing this ends the allocation (salloc's `cat` reads it).
    _holder: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    said: Vec<String>,
}

/// Submits an allocation for `host` and waits for it to start, reporting
/// Slurm's reason on `pending` while it waits and its id on `job` as soon
/// as Slurm gives one. A request Slurm refuses, or one still pending after
/// `start_timeout`, is an error (the latter cancelled first).
pub async fn submit(
    host: &str,
    slots: u32,
    s: &SlurmHost,
    pending: &watch::Sender<Option<String>>,
    job: &std::sync::Mutex<Option<String>>,
) -> Result<Allocation, String> {
    let argv = command::alloc_argv(host, slots, s);
    let mut cmd = command::command(&argv);
    cmd.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut salloc = cmd.spawn().map_err(|e| command::not_found("salloc", e))?;
    let holder = salloc.stdin.take().expect("stdin is piped");
    let stderr = salloc.stderr.take().expect("stderr is piped");
    let (tx, mut lines) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut r = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = r.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let submitted = Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(s.start_timeout_secs);
    let mut poll = tokio::time::interval(PENDING_POLL);
    let mut said: Vec<String> = Vec::new();
    let mut id: Option<String> = None;
    let mut reason = String::from("none given yet");
    let set_job = |j: &str| *job.lock().unwrap_or_else(|e| e.into_inner()) = Some(j.to_string());
    let granted = loop {
        tokio::select! {
            line = lines.recv() => match line {
                Some(line) => {
                    match parse_line(&line) {
                        Said::Granted(j) => {
                            set_job(&j);
                            break j;
                        }
                        Said::Pending(j) => {
                            set_job(&j);
                            show(pending, "PENDING".into());
                            id = Some(j);
                            // Slurm's reason at once, then every PENDING_POLL.
                            poll.reset_immediately();
                        }
                        Said::Other => {}
                    }
                    keep(&mut said, line);
                }
                None => {
                    let status = salloc.wait().await.map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!(
                        "Slurm refused the allocation ({}): {}",
                        status,
                        slurm_says(&said.join("\n"))
                    ));
                }
            },
            _ = poll.tick() => {
                if let Some(j) = &id {
                    if let Some((state, why)) = job_state(j).await {
                        reason = why.clone();
                        show(pending, format!("{state} ({why})"));
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let what = match &id {
                    Some(j) => {
                        cancel(j).await;
                        format!("allocation {j}")
                    }
                    None => "the allocation".to_string(),
                };
                return Err(format!(
                    "{what} did not start within {} s (start_timeout) and was cancelled; \
                     Slurm's reason: {reason}",
                    s.start_timeout_secs
                ));
            }
        }
    };
    let _ = pending.send(None);
    let (node_count, nodes) = match command::run(
        &["squeue", "-h", "-j", &granted, "-o", "%D|%N"].map(String::from),
        COMMAND_TIMEOUT,
    )
    .await
    {
        Ok(out) if out.ok => parse_nodes(&out.stdout).unwrap_or((1, "?".into())),
        _ => (1, "?".into()),
    };
    Ok(Allocation {
        job: granted,
        nodes,
        node_count,
        queued: submitted.elapsed(),
        salloc,
        _holder: holder,
        lines,
        // What salloc says from here on is about the allocation's end.
        said: Vec::new(),
    })
}

/// Shows `state` on `pending` when it changed.
fn show(pending: &watch::Sender<Option<String>>, state: String) {
    pending.send_if_modified(|v| {
        let changed = v.as_ref() != Some(&state);
        *v = Some(state);
        changed
    });
}

fn keep(said: &mut Vec<String>, line: String) {
    if said.len() == MAX_LINES_KEPT {
        said.remove(0);
    }
    said.push(line);
}

/// `%D|%N` from squeue: the node count and node list.
fn parse_nodes(out: &str) -> Option<(u32, String)> {
    let (count, list) = out.lines().next()?.split_once('|')?;
    Some((count.trim().parse().ok()?, list.trim().to_string()))
}

impl Allocation {
    /// Waits until the allocation ends (cancelled, preempted, out of time,
    /// its nodes failed); says how, in Slurm's words where it gave some.
    /// salloc reports a revoked allocation but keeps running while its
    /// command does, so its lines and squeue are watched too.
    pub async fn ended(&mut self) -> String {
        let mut poll = tokio::time::interval(PENDING_POLL);
        let mut lines_open = true;
        let state = loop {
            tokio::select! {
                status = self.salloc.wait() => break match status {
                    Ok(s) => format!("salloc exited ({s})"),
                    Err(e) => format!("salloc was lost: {e}"),
                },
                line = self.lines.recv(), if lines_open => match line {
                    Some(line) => {
                        let revoked = line.contains("revoked") || line.contains("Terminated");
                        keep(&mut self.said, line);
                        if revoked {
                            break String::new();
                        }
                    }
                    None => lines_open = false,
                },
                _ = poll.tick() => match job_state(&self.job).await {
                    Some((state, _)) if state == "RUNNING" => {}
                    Some((state, _)) => break format!("state {state}"),
                    None => break "no longer in the queue".to_string(),
                },
            }
        };
        while let Ok(line) = self.lines.try_recv() {
            keep(&mut self.said, line);
        }
        // "Job allocation J has been revoked.", "Force Terminated job J",
        // time limit notices.
        let said: Vec<&str> = self
            .said
            .iter()
            .map(|l| l.trim_start_matches("salloc: ").trim())
            .filter(|l| {
                !l.is_empty() && !l.starts_with("Nodes ") && !l.starts_with("Relinquishing")
            })
            .collect();
        match (said.is_empty(), state.is_empty()) {
            (false, _) => said.join("; "),
            (true, false) => state,
            (true, true) => "ended".to_string(),
        }
    }
}

/// The state and reason of job `job` (`PENDING`, `Priority`), or `None`
/// when squeue does not know it or fails.
pub async fn job_state(job: &str) -> Option<(String, String)> {
    let out = command::run(
        &["squeue", "-h", "-j", job, "-o", "%T|%r"].map(String::from),
        COMMAND_TIMEOUT,
    )
    .await
    .ok()?;
    let line = out.stdout.lines().next()?;
    let (state, reason) = line.split_once('|')?;
    Some((state.trim().to_string(), reason.trim().to_string()))
}

/// `scancel JOB`, waiting for it (a failure is ignored: the job may be
/// gone already).
pub async fn cancel(job: &str) {
    let _ = command::run(&["scancel".to_string(), job.to_string()], COMMAND_TIMEOUT).await;
}

/// `scancel JOB` from synchronous code (a drop), bounded by
/// [`CANCEL_WAIT`].
pub fn cancel_now(job: &str) {
    let child = std::process::Command::new("scancel")
        .arg(job)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        let until = Instant::now() + CANCEL_WAIT;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The longest a cancel from synchronous code waits for scancel.
pub const CANCEL_WAIT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sallocs_lines_give_the_job_id() {
        assert_eq!(
            parse_line("salloc: Granted job allocation 17"),
            Said::Granted("17".into())
        );
        assert_eq!(
            parse_line("salloc: Pending job allocation 3"),
            Said::Pending("3".into())
        );
        assert_eq!(
            parse_line("salloc: job 3 queued and waiting for resources"),
            Said::Other
        );
        assert_eq!(parse_line("salloc: Granted job allocation x1"), Said::Other);
        assert_eq!(parse_nodes("2|n[1-2]\n"), Some((2, "n[1-2]".into())));
        assert_eq!(parse_nodes(""), None);
    }
}
