//! The config files under `tests/configs/`: every file in `valid/` must parse;
//! every file in `invalid/` must be refused with the message its first line
//! names (`# expect: ...`), located at `FILE:LINE:COL`. Files named
//! `hosts-*.toml` are fleets, the rest are jobs.

use std::path::{Path, PathBuf};
use std::process::Command;

use herd::config::{self, parse_fleet, parse_job};

fn files(folder: &str) -> Vec<PathBuf> {
    let dir = Path::new("tests/configs").join(folder);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(&dir))
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| dir.join(entry.expect("a folder entry").file_name()))
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn is_fleet(path: &Path) -> bool {
    file_name(path).starts_with("hosts-")
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read(path: &Path) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The text after `# expect: ` on the first line.
fn expected(path: &Path, text: &str) -> String {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("# expect: "))
        .unwrap_or_else(|| panic!("{} must start with '# expect: '", path.display()))
        .to_string()
}

fn parse(path: &Path, text: &str) -> Result<(), config::Error> {
    if is_fleet(path) {
        parse_fleet(text, path).map(|_| ())
    } else {
        parse_job(text, path).map(|_| ())
    }
}

#[test]
fn valid_config_files_parse() {
    let files = files("valid");
    assert!(
        files.iter().filter(|p| is_fleet(p)).count() >= 2,
        "expected at least two valid fleet files"
    );
    assert!(
        files.iter().filter(|p| !is_fleet(p)).count() >= 4,
        "expected at least four valid job files"
    );
    for path in &files {
        let text = read(path);
        if is_fleet(path) {
            let fleet = parse_fleet(&text, path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(fleet.file, *path);
            assert!(!fleet.hosts.is_empty());
        } else {
            let job = parse_job(&text, path).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(job.file, *path);
            // Relative paths are taken from the job file's folder (the valid
            // jobs all name `../data/...`), with `..` resolved lexically.
            let Some(input) = job.input.path.local() else {
                continue;
            };
            if !input.is_absolute() && !input.starts_with("~") {
                let configs = path.parent().unwrap().parent().unwrap();
                assert!(
                    input.starts_with(configs.join("data"))
                        && !input
                            .components()
                            .any(|c| c == std::path::Component::ParentDir),
                    "{}: input path {} is not taken from the job's folder",
                    path.display(),
                    input.display()
                );
            }
        }
    }
}

#[test]
fn invalid_config_files_are_refused_with_a_located_message() {
    let files = files("invalid");
    assert!(files.len() >= 20, "expected at least 20 invalid files");
    for path in &files {
        let text = read(path);
        let want = expected(path, &text);
        let e = match parse(path, &text) {
            Ok(()) => panic!("{} parsed, but should fail with: {want}", path.display()),
            Err(e) => e,
        };
        let message = e.to_string();
        assert!(
            message.contains(&want),
            "{}: '{message}' should contain '{want}'",
            path.display()
        );
        assert!(
            message.contains(&file_name(path)),
            "'{message}' should name the file"
        );
        let (Some(line), Some(column)) = (e.line, e.column) else {
            panic!("'{message}' has no line and column");
        };
        assert!(
            line >= 1 && line <= text.lines().count().max(1),
            "'{message}': line {line} is not a line of the file"
        );
        assert!(
            message.starts_with(&format!("{}:{line}:{column}: ", path.display())),
            "'{message}' should start with FILE:LINE:COL"
        );
    }
}

#[test]
fn herd_run_exits_2_on_an_invalid_job_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let jobs: Vec<PathBuf> = files("invalid")
        .into_iter()
        .filter(|p| !is_fleet(p))
        .collect();
    assert!(!jobs.is_empty());
    for path in &jobs {
        let want = expected(path, &read(path));
        let out = Command::new(env!("CARGO_BIN_EXE_herd"))
            .arg("run")
            .arg(path)
            .current_dir(root)
            .output()
            .expect("running herd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "herd run {}: exit status {:?}, stderr: {stderr}",
            path.display(),
            out.status
        );
        assert!(
            stderr.contains(&want),
            "herd run {}: stderr '{stderr}' should contain '{want}'",
            path.display()
        );
        assert!(
            stderr.contains(&file_name(path)),
            "herd run {}: stderr '{stderr}' should name the file",
            path.display()
        );
    }
}
