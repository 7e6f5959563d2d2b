//! The Slurm commands herd runs, as argument vectors (no shell reads any of
//! them): `salloc` for the allocation, `srun` for every job step, `sbcast`,
//! `squeue` and `scancel`. The builders are pure and tested alone; [`run`]
//! and [`command`] start them with the environment cleaned of the variables
//! an enclosing Slurm job would leave behind.

use std::process::Stdio;
use std::time::Duration;

use crate::config::SlurmHost;
use crate::fleet::WorkerCommand;

/// A Slurm client command (squeue, scancel, a set-up step) must finish
/// within this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The job name every allocation gets: `herd-<host>` (what `squeue` shows).
pub fn job_name(host: &str) -> String {
    format!("herd-{host}")
}

/// `salloc` for a host of `slots` worker tasks: the allocation is held while
/// its command, `cat`, reads the coordinator's pipe, so it ends when the
/// coordinator closes that pipe or dies, and `salloc`'s exit says the
/// allocation ended.
pub fn alloc_argv(host: &str, slots: u32, s: &SlurmHost) -> Vec<String> {
    let mut argv = vec![
        "salloc".to_string(),
        format!("--job-name={}", job_name(host)),
        format!("--ntasks={slots}"),
    ];
    let mut opt = |key: &str, v: Option<String>| {
        if let Some(v) = v {
            argv.push(format!("--{key}={v}"));
        }
    };
    opt("partition", s.partition.clone());
    opt("time", s.time.clone());
    opt("account", s.account.clone());
    opt("qos", s.qos.clone());
    opt("gres", s.gres.clone());
    opt("gpus-per-task", s.gpus_per_task.map(|n| n.to_string()));
    opt("cpus-per-task", s.cpus_per_task.map(|n| n.to_string()));
    argv.extend(s.extra_args.iter().cloned());
    argv.extend(["--".to_string(), "cat".to_string()]);
    argv
}

/// `srun` starting one task of `argv` as a job step of allocation `job`:
/// one task, only the resources it asks for (`--exact`, so the slots' steps
/// run side by side), stdout passed through as it is written
/// (`--unbuffered`: the worker protocol is binary frames, not lines).
pub fn step_argv(job: &str, s: &SlurmHost, argv: &[String]) -> Vec<String> {
    let mut out = vec![
        "srun".to_string(),
        format!("--jobid={job}"),
        "--ntasks=1".to_string(),
        "--nodes=1".to_string(),
        "--exact".to_string(),
        "--unbuffered".to_string(),
        "--quiet".to_string(),
    ];
    if let Some(n) = s.cpus_per_task {
        out.push(format!("--cpus-per-task={n}"));
    }
    if let Some(n) = s.gpus_per_task {
        out.push(format!("--gpus-per-task={n}"));
    }
    out.push("--".to_string());
    out.extend(argv.iter().cloned());
    out
}

/// `srun` running `argv` once on every one of the allocation's `nodes`
/// (the cache probe and the moves into place after `sbcast`).
pub fn per_node_argv(job: &str, nodes: u32, argv: &[String]) -> Vec<String> {
    let mut out = vec![
        "srun".to_string(),
        format!("--jobid={job}"),
        format!("--nodes={nodes}"),
        format!("--ntasks={nodes}"),
        "--ntasks-per-node=1".to_string(),
        "--overlap".to_string(),
        "--quiet".to_string(),
        "--".to_string(),
    ];
    out.extend(argv.iter().cloned());
    out
}

/// The shell program (a fixed text; the values come as its arguments) that
/// runs a worker only when the binary at `$1` has sha256 `$2`, exiting 126
/// with a message otherwise. The rest of its arguments are the command.
const VERIFIED_EXEC: &str = "h=$(sha256sum < \"$1\") && h=${h%% *} && [ \"$h\" = \"$2\" ] || { printf 'herd: the worker binary %s on %s has sha256 %s, expected %s; refusing to run it\\n' \"$1\" \"$(hostname)\" \"$h\" \"$2\" >&2; exit 126; }; shift 2; exec \"$@\"";

/// The worker command, run on the node only after its binary's sha256 is
/// checked there.
pub fn verified_worker(cmd: &WorkerCommand, sha: &str) -> Result<Vec<String>, String> {
    let worker = cmd.argv()?;
    let mut argv = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        VERIFIED_EXEC.to_string(),
        "herd-verify".to_string(),
        cmd.program.display().to_string(),
        sha.to_string(),
    ];
    argv.extend(worker);
    Ok(argv)
}

/// A Slurm client command ready to spawn: `argv[0]` from PATH, stdin
/// closed, output captured, and no `SLURM_*` variable but `SLURM_CONF` in
/// its environment (a coordinator running inside a Slurm job would
/// otherwise hand its own job's settings to every command).
pub fn command(argv: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Out of the terminal's process group: Ctrl-C reaches the
        // coordinator, which then ends the allocation in order.
        .process_group(0);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("SLURM_") && k != "SLURM_CONF" {
            cmd.env_remove(&*k);
        }
    }
    cmd
}

/// How a command ended and what it printed.
pub struct Output {
    pub ok: bool,
    pub status: String,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `argv` within `limit`.
pub async fn run(argv: &[String], limit: Duration) -> Result<Output, String> {
    let child = command(argv).spawn().map_err(|e| not_found(&argv[0], e))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("'{}' took over {} s", argv.join(" "), limit.as_secs()))?
        .map_err(|e| format!("'{}' failed: {e}", argv[0]))?;
    Ok(Output {
        ok: out.status.success(),
        status: out.status.to_string(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Why `program` could not be started, with a hint when it is missing.
pub fn not_found(program: &str, e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::NotFound {
        format!(
            "cannot run '{program}': not found on PATH (a Slurm host needs Slurm's client \
             commands salloc, srun, sbcast, squeue and scancel on the coordinator's machine)"
        )
    } else {
        format!("cannot run '{program}': {e}")
    }
}

/// Slurm's own words from a command's stderr: its `error:` lines without
/// the program prefix, or the last line.
pub fn slurm_says(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("error: ").map(|(_, m)| m.trim()))
        .collect();
    if errors.is_empty() {
        stderr.lines().last().unwrap_or("").trim().to_string()
    } else {
        errors.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Ship;

    fn host() -> SlurmHost {
        SlurmHost {
            partition: Some("gpu".into()),
            time: Some("02:00:00".into()),
            account: None,
            qos: Some("high".into()),
            gres: None,
            gpus_per_task: Some(1),
            cpus_per_task: Some(4),
            extra_args: vec!["--begin=now+1hour".into()],
            ship: Ship::Sbcast,
            requeue: false,
            start_timeout_secs: 60,
            node_cache: "/tmp".into(),
        }
    }

    #[test]
    fn the_allocation_asks_for_every_setting_and_holds_on_a_pipe() {
        assert_eq!(
            alloc_argv("c1", 8, &host()),
            [
                "salloc",
                "--job-name=herd-c1",
                "--ntasks=8",
                "--partition=gpu",
                "--time=02:00:00",
                "--qos=high",
                "--gpus-per-task=1",
                "--cpus-per-task=4",
                "--begin=now+1hour",
                "--",
                "cat"
            ]
        );
    }

    #[test]
    fn a_step_is_one_exact_unbuffered_task_of_the_allocation() {
        let argv = step_argv("42", &host(), &["x".into(), "y z".into()]);
        assert_eq!(
            argv,
            [
                "srun",
                "--jobid=42",
                "--ntasks=1",
                "--nodes=1",
                "--exact",
                "--unbuffered",
                "--quiet",
                "--cpus-per-task=4",
                "--gpus-per-task=1",
                "--",
                "x",
                "y z"
            ]
        );
    }

    #[test]
    fn the_worker_runs_only_when_its_binary_has_the_expected_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin with space");
        std::fs::write(&bin, "#!/bin/sh\necho \"ran $1 $HERD_X\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sha = {
            use sha2::Digest;
            crate::worker::hex(&sha2::Sha256::digest(std::fs::read(&bin).unwrap()))
        };
        let cmd = WorkerCommand::new(&bin, &[("HERD_X".into(), "a'b; c".into())]);
        let run = |sha: &str| {
            let argv = verified_worker(&cmd, sha).unwrap();
            std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .output()
                .unwrap()
        };
        let good = run(&sha);
        assert!(good.status.success(), "{good:?}");
        assert_eq!(String::from_utf8_lossy(&good.stdout), "ran worker a'b; c\n");
        let bad = run(&"0".repeat(64));
        assert_eq!(bad.status.code(), Some(126));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("refusing to run it"));
        assert!(bad.stdout.is_empty());
    }

    #[test]
    fn slurms_error_lines_are_kept_without_their_prefix() {
        let e = "salloc: error: invalid partition specified: nope\n\
                 salloc: error: Job submit/allocate failed: Invalid partition name specified\n";
        assert_eq!(
            slurm_says(e),
            "invalid partition specified: nope; Job submit/allocate failed: Invalid partition name specified"
        );
        assert_eq!(
            slurm_says("salloc: Pending job allocation 3\n"),
            "salloc: Pending job allocation 3"
        );
    }
}
