//! The command that starts `herd worker`, built in one place for every host
//! kind: a local process runs it as is, an SSH exec channel runs it as one
//! quoted shell line, and a kind that needs a launcher in front (a batch
//! system's `srun`, a container runtime) wraps [`WorkerCommand::argv`].

use std::path::PathBuf;

use super::quote::{has_nul, is_env_name, quote};

/// Set for every worker: Mesa's device-select layer otherwise complains on
/// stderr when adapters are listed.
const FIXED_ENV: (&str, &str) = ("NODEVICE_SELECT", "1");

/// `herd worker` on some machine: its program and the variables added to its
/// environment.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerCommand {
    /// The herd executable there.
    pub program: PathBuf,
    /// Added to the worker's environment, after [`FIXED_ENV`].
    pub env: Vec<(String, String)>,
}

impl WorkerCommand {
    pub fn new(program: impl Into<PathBuf>, env: &[(String, String)]) -> WorkerCommand {
        WorkerCommand {
            program: program.into(),
            env: env.to_vec(),
        }
    }

    /// Every environment setting, the fixed one first, checked: names are
    /// `[A-Za-z_][A-Za-z0-9_]*` and no value holds a NUL byte.
    fn settings(&self) -> Result<Vec<(String, String)>, String> {
        let fixed = (FIXED_ENV.0.to_string(), FIXED_ENV.1.to_string());
        std::iter::once(&fixed)
            .chain(&self.env)
            .map(|(k, v)| {
                if !is_env_name(k) {
                    return Err(format!("'{k}' is not a valid environment variable name"));
                }
                if has_nul(v) {
                    return Err(format!("the value of {k} holds a NUL byte"));
                }
                Ok((k.clone(), v.clone()))
            })
            .collect()
    }

    /// The program's path as text, for a command line.
    fn program_text(&self) -> Result<&str, String> {
        self.program.to_str().ok_or_else(|| {
            format!(
                "the worker path '{}' is not UTF-8 text",
                self.program.display()
            )
        })
    }

    /// The argument vector `env K=V ... PROGRAM worker`, for a launcher that
    /// runs a program with arguments (no shell in between).
    pub fn argv(&self) -> Result<Vec<String>, String> {
        let mut argv = vec!["env".to_string()];
        argv.extend(self.settings()?.iter().map(|(k, v)| format!("{k}={v}")));
        argv.push(self.program_text()?.to_string());
        argv.push("worker".to_string());
        Ok(argv)
    }

    /// One POSIX shell line, `exec env 'K=V' ... 'PROGRAM' worker`, with every
    /// value single-quoted, for a remote shell.
    pub fn shell_line(&self) -> Result<String, String> {
        let mut line = String::from("exec env");
        for (k, v) in self.settings()? {
            line.push(' ');
            line.push_str(&quote(&format!("{k}={v}")));
        }
        line.push(' ');
        line.push_str(&quote(self.program_text()?));
        line.push_str(" worker");
        Ok(line)
    }

    /// A local child process running the command (no `env` in between: the
    /// settings go straight into its environment).
    pub fn process(&self) -> Result<tokio::process::Command, String> {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.arg("worker").envs(self.settings()?);
        Ok(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_line_quotes_every_value_and_refuses_bad_env_names() {
        let env = [("A".to_string(), "1; rm -rf /".to_string())];
        let cmd = WorkerCommand::new("/c/bin/x y/herd", &env);
        assert_eq!(
            cmd.shell_line().unwrap(),
            "exec env 'NODEVICE_SELECT=1' 'A=1; rm -rf /' '/c/bin/x y/herd' worker"
        );
        let bad = WorkerCommand::new("/b", &[("A B".into(), "1".into())]);
        assert!(bad.shell_line().is_err());
        assert!(bad.argv().is_err());
        let nul = WorkerCommand::new("/b", &[("A".into(), "a\0b".into())]);
        assert!(nul.shell_line().unwrap_err().contains("NUL"));
    }

    #[test]
    fn the_argv_and_the_shell_line_start_the_same_program() {
        let env = [("K".to_string(), "it's".to_string())];
        let cmd = WorkerCommand::new("/opt/herd", &env);
        assert_eq!(
            cmd.argv().unwrap(),
            ["env", "NODEVICE_SELECT=1", "K=it's", "/opt/herd", "worker"]
        );
        // What sh makes of the line is the same vector (after `exec`).
        let line = cmd
            .shell_line()
            .unwrap()
            .replacen("exec env", "printf '%s\\n' env", 1);
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(line)
            .output()
            .unwrap();
        let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!(words, cmd.argv().unwrap());
    }
}
