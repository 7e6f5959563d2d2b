//! The `herd` binary: command line parsing and the edge where errors become
//! messages and exit codes (0 done and flipped; 1 run failed; 2 bad command
//! line or config; 3 validation failed).

mod cli;

fn main() {
    let code = match cli::main() {
        Ok(code) => code,
        Err(e) => {
            if is_broken_pipe(&e) {
                0
            } else {
                eprintln!("error: {}", message(&e));
                1
            }
        }
    };
    std::process::exit(code);
}

/// The error and its causes, each once: a cause whose text its error's
/// message already ends with (most of herd's errors name their cause) is
/// not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
