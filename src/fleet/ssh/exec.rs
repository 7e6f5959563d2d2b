//! Running commands on an SSH host: a setup command with its output
//! collected, and a worker on an exec channel whose streams are piped to the
//! coordinator until the worker ends, is killed or the connection goes.

use std::time::Duration;

use russh::client::{Handle, Msg};
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{oneshot, watch};

use super::connect::Client;
use super::{Ready, Stage, wait_ready};
use crate::fleet::{Pipes, WorkerCommand};

/// After a kill, how long the server has to report the worker's end before
/// the channel is closed from this side.
const KILL_GRACE: Duration = Duration::from_secs(2);

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// How long a failed channel open waits to see whether the connection
/// dropped (then the worker starts once the session is set up again).
const DROP_NOTICED_WITHIN: Duration = Duration::from_secs(2);

/// Whether `ready`'s connection is (or within `limit` turns out) closed.
async fn dropped_within(ready: &Ready, limit: Duration) -> bool {
    let until = tokio::time::Instant::now() + limit;
    while !ready.handle.is_closed() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Reads a channel to its end: exit status, stdout, stderr.
pub(super) async fn collect(mut rx: russh::ChannelReadHalf) -> (Option<u32>, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut code = None;
    while let Some(msg) = rx.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, .. } => err.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => code = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs `command` and collects its output, within `limit`.
pub(super) async fn exec_capture(
    handle: &Handle<Client>,
    command: &str,
    limit: Duration,
) -> std::result::Result<(Option<u32>, String, String), String> {
    tokio::time::timeout(limit, async {
        let channel = handle
            .channel_open_session()
            .await
            .map_err(|e| format!("cannot open a channel: {e}"))?;
        channel
            .exec(true, command)
            .await
            .map_err(|e| format!("cannot run a command: {e}"))?;
        let (rx, _tx) = channel.split();
        Ok(collect(rx).await)
    })
    .await
    .map_err(|_| format!("a remote command took over {}s", limit.as_secs()))?
}

/// Runs a worker with `env` on the host once it is ready, piping its streams
/// through `pipes` until it ends; returns how it ended.
pub(super) async fn run_worker(
    name: &str,
    mut stage: watch::Receiver<Stage>,
    env: Vec<(String, String)>,
    pipes: Pipes,
    mut kill_rx: oneshot::Receiver<()>,
) -> String {
    let (ready, channel) = loop {
        let ready = tokio::select! {
            r = wait_ready(name, &mut stage) => match r {
                Ok(r) => r,
                Err(e) => return e.to_string(),
            },
            _ = &mut kill_rx => return "killed by the coordinator before it started".into(),
        };
        match open_worker_channel(&ready, &env).await {
            Ok(c) => break (ready, c),
            // The connection dropped under us: wait for the session to be
            // set up again (or lost), then start there.
            Err(e) => {
                if !dropped_within(&ready, DROP_NOTICED_WITHIN).await {
                    return e;
                }
            }
        }
    };
    let (rx, tx) = channel.split();
    let (killed_tx, killed_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(forward_input(pipes.stdin, tx, kill_rx, killed_tx));
    let ended = pump_output(&ready, rx, killed_rx, pipes.stdout, pipes.stderr).await;
    writer.abort();
    match ended {
        Some(r) => r,
        None if ready.handle.is_closed() => {
            format!("lost: the connection to {} closed", ready.addr)
        }
        None => "ended without an exit status (channel closed)".into(),
    }
}

/// An exec channel running `herd worker` with `env`.
async fn open_worker_channel(
    ready: &Ready,
    env: &[(String, String)],
) -> Result<Channel<Msg>, String> {
    let line = WorkerCommand::new(&ready.binary, env)
        .shell_line()
        .map_err(|e| format!("host '{}': {e}", ready.name))?;
    let cmd = super::ship::verified_exec(&ready.binary, &ready.binary_sha, &line);
    let channel = ready.handle.channel_open_session().await.map_err(|e| {
        format!(
            "host '{}': cannot open a channel on {}: {e}",
            ready.name, ready.addr
        )
    })?;
    channel
        .exec(true, cmd)
        .await
        .map_err(|e| format!("host '{}': cannot start the worker: {e}", ready.name))?;
    Ok(channel)
}

/// Copies the coordinator's frames into the channel until the input ends or
/// a kill comes; then sends EOF, waits for the kill (the worker exits on its
/// own at end of input, and a kill still counts), signals KILL, tells the
/// reader (`killed`) and closes the channel after [`KILL_GRACE`].
async fn forward_input(
    mut stdin: DuplexStream,
    tx: ChannelWriteHalf<Msg>,
    mut kill_rx: oneshot::Receiver<()>,
    killed: oneshot::Sender<()>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut input_open = true;
    while input_open {
        tokio::select! {
            _ = &mut kill_rx => break,
            n = stdin.read(&mut buf) => match n {
                Ok(0) | Err(_) => input_open = false,
                Ok(n) => {
                    if tx.data_bytes(buf[..n].to_vec()).await.is_err() {
                        input_open = false;
                    }
                }
            },
        }
    }
    let _ = tx.eof().await;
    if !kill_rx.is_terminated() {
        let _ = (&mut kill_rx).await;
    }
    let _ = tx.signal(Sig::KILL).await;
    let _ = killed.send(());
    tokio::time::sleep(KILL_GRACE).await;
    let _ = tx.close().await;
}

/// Copies the worker's output to `stdout` and `stderr` until the channel
/// closes (or [`KILL_GRACE`] after a kill); returns how the worker ended,
/// when the server said.
async fn pump_output(
    ready: &Ready,
    mut rx: ChannelReadHalf,
    mut killed_rx: oneshot::Receiver<()>,
    mut stdout: DuplexStream,
    mut stderr: DuplexStream,
) -> Option<String> {
    let mut ended: Option<String> = None;
    let mut kill_deadline: Option<tokio::time::Instant> = None;
    loop {
        let msg = tokio::select! {
            m = rx.wait() => m,
            _ = &mut killed_rx, if kill_deadline.is_none() => {
                kill_deadline = Some(tokio::time::Instant::now() + KILL_GRACE);
                continue;
            }
            _ = sleep_until(kill_deadline), if kill_deadline.is_some() => {
                ended.get_or_insert_with(|| format!(
                    "killed by the coordinator (no exit status from '{}' within {}s)",
                    ready.name,
                    KILL_GRACE.as_secs()
                ));
                break;
            }
        };
        match msg {
            Some(ChannelMsg::Data { data }) => {
                let _ = stdout.write_all(&data).await;
            }
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                let _ = stderr.write_all(&data).await;
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => {
                ended = Some(match exit_status {
                    0 => "exited".into(),
                    127 => format!(
                        "exited with status 127 (the shell on '{}' could not run {})",
                        ready.name, ready.binary
                    ),
                    c => format!("exited with status {c}"),
                });
            }
            Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                ended = Some(format!("killed by signal {signal_name:?}"));
            }
            Some(ChannelMsg::Eof) => {
                let _ = stdout.shutdown().await;
            }
            Some(ChannelMsg::Failure) => {
                ended.get_or_insert_with(|| {
                    format!(
                        "host '{}' refused to run the worker (exec request denied by sshd)",
                        ready.name
                    )
                });
            }
            Some(ChannelMsg::Close) | None => break,
            Some(_) => {}
        }
    }
    ended
}
