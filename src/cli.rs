//! Command line (clap) and what each command does at the edge: runs, the TUI,
//! store commands, `gen`, benchmarks and the worker entry point.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use herd::run::{self, Event};

mod bench;
mod store;

use bench::{BenchWhat, GpuBenchArgs, SinkBenchArgs};
use store::{ServeArgs, StoreCmd};

#[derive(Parser, Debug)]
#[command(
    name = "herd",
    version,
    about = "Batch inference across a few machines: partition, ship, score, store, flip.",
    long_about = "Batch inference across a few machines: partition, ship, score, store, flip.\n\nWith no command, opens the terminal UI on the jobs in ./jobs.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run JOB.toml headless (same as `herd run JOB.toml`, and takes the
    /// same flags).
    #[arg(long = "run", value_name = "JOB.toml")]
    run: Option<PathBuf>,
    #[command(flatten)]
    run_flags: RunFlags,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a job headless: progress lines, a report, a trace.
    Run(RunArgs),
    /// The terminal UI, on one job or a picker of jobs/*.toml.
    Tui {
        job: Option<PathBuf>,
        #[arg(long, value_name = "FILE")]
        hosts: Option<PathBuf>,
    },
    /// Fleet commands.
    Hosts {
        #[command(subcommand)]
        cmd: HostsCmd,
    },
    /// Write a deterministic synthetic dataset and model.
    Gen(GenArgs),
    /// Read and manage the prediction store.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
    /// Benchmark tables (ratios against a baseline, not pass/fail).
    Bench {
        what: BenchWhat,
        #[arg(long)]
        json: bool,
        /// compute: time herd on the files a `bench/baseline.py --json` result
        /// scored and compare with it (one result or a list).
        #[arg(long, value_name = "FILE.json")]
        baseline: Option<PathBuf>,
        /// stragglers: the seed job (500M entities, 10,000 slots) at full
        /// size (`seed`) or at 1/N, timed, with peak memory; coordinator:
        /// the seed's 10,000 slots or 1/N of them.
        #[arg(long, value_name = "seed|N", value_parser = bench::parse_scale)]
        scale: Option<u64>,
        #[command(flatten)]
        gpu: GpuBenchArgs,
        #[command(flatten)]
        sink: SinkBenchArgs,
    },
    /// Serve the store over the Redis protocol and HTTP (loopback by default).
    Serve(ServeArgs),
    /// Look at a model file.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Internal: speaks the worker protocol on stdin/stdout.
    #[command(hide = true)]
    Worker,
}

#[derive(Subcommand, Debug)]
enum ModelCmd {
    /// An ONNX model's inputs, outputs, operators, herd's plan for it and its
    /// cost per row; exits 2 when herd cannot run it.
    Inspect {
        #[arg(value_name = "FILE.onnx")]
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    job: PathBuf,
    #[command(flatten)]
    flags: RunFlags,
}

/// The flags of `herd run`, which `herd --run JOB` takes as well.
#[derive(Args, Debug, Default, PartialEq)]
struct RunFlags {
    /// Use this fleet file instead of the job's `hosts`.
    #[arg(long, value_name = "FILE")]
    hosts: Option<PathBuf>,
    /// Finish the job's unfinished version, skipping committed chunks.
    #[arg(long)]
    resume: bool,
    /// Write the run report as JSON.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Write a Chrome trace-event file (one track per slot; opens in Perfetto).
    #[arg(long, value_name = "FILE.json")]
    trace: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum HostsCmd {
    /// Connect, ship, start a worker on each host, print its device.
    Check {
        #[arg(long, value_name = "FILE", default_value = "hosts.toml")]
        hosts: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GenModel {
    TwoTower,
    Mlp,
    /// A gradient-boosted tree ensemble (ONNX, ai.onnx.ml) and its data.
    Gbdt,
}

#[derive(Args, Debug)]
struct GenArgs {
    model: GenModel,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Rows (users or entities).
    #[arg(long, visible_alias = "rows")]
    users: Option<u64>,
    /// Trees (gbdt).
    #[arg(long)]
    trees: Option<usize>,
    /// Branching levels of each tree (gbdt).
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long)]
    items: Option<u32>,
    #[arg(long)]
    dim: Option<usize>,
    #[arg(long)]
    features: Option<usize>,
    #[arg(long)]
    hidden: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
}

pub fn main() -> Result<i32> {
    main_with(Cli::parse())
}

fn main_with(cli: Cli) -> Result<i32> {
    if let Some(job) = cli.run {
        return run_headless(RunArgs {
            job,
            flags: cli.run_flags,
        });
    }
    if cli.run_flags != RunFlags::default() {
        bail!(
            "--hosts, --resume, --report and --trace go with --run JOB.toml (or `herd run JOB.toml`)"
        );
    }
    match cli.command {
        None => tui(None, None),
        Some(Cmd::Run(args)) => run_headless(args),
        Some(Cmd::Tui { job, hosts }) => tui(job, hosts),
        Some(Cmd::Worker) => match herd::worker::main() {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("worker: {e}");
                Ok(1)
            }
        },
        Some(Cmd::Hosts {
            cmd: HostsCmd::Check { hosts },
        }) => hosts_check(&hosts),
        Some(Cmd::Gen(args)) => {
            quiet_on_closed_stdout();
            generate(args)
        }
        Some(Cmd::Model {
            cmd: ModelCmd::Inspect { file, json },
        }) => {
            quiet_on_closed_stdout();
            model_inspect(&file, json)
        }
        Some(Cmd::Store { cmd }) => {
            quiet_on_closed_stdout();
            store::store_cmd(cmd)
        }
        Some(Cmd::Serve(args)) => store::serve(args),
        Some(Cmd::Bench {
            what,
            json,
            baseline,
            scale,
            gpu,
            sink,
        }) => {
            quiet_on_closed_stdout();
            // Mesa's device-select layer complains on stderr about a missing
            // XDG_RUNTIME_DIR when adapters are listed; the table is on stdout.
            // SAFETY: no other thread has been started yet.
            unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
            bench::bench(what, json, baseline, scale, gpu, sink)
        }
    }
}

/// For commands that only print: a closed stdout (`herd store versions |
/// head`) ends the process quietly, as it does for other command-line tools.
/// Not for runs: a coordinator must survive a worker's pipe closing.
fn quiet_on_closed_stdout() {
    // SAFETY: restores the default disposition of SIGPIPE; called before this
    // command starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .build()
        .context("cannot start the async runtime")
}

fn run_headless(RunArgs { job, flags: args }: RunArgs) -> Result<i32> {
    herd::memory::keep_freed_memory(run::KEEP_TRIM_BYTES);
    let rt = runtime()?;
    let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let (_ctl_tx, ctl_rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = run::Options {
        job,
        hosts: args.hosts.clone(),
        resume: args.resume,
        ..Default::default()
    };
    let tty = std::io::stderr().is_terminal();
    let printer = std::thread::spawn(move || {
        let mut headless = herd::ui::headless::Headless::new(tty);
        let mut started = None;
        let mut last_snapshot = None;
        while let Some(ev) = ev_rx.blocking_recv() {
            // Locked per event, never while waiting: other threads print too.
            let mut err = std::io::stderr().lock();
            let mut lines = headless.on_event(&ev);
            if tty {
                // The redrawn bar must fit one terminal line, or it wraps and
                // can no longer overwrite itself.
                let width = ratatui::crossterm::terminal::size()
                    .map(|(w, _)| w as usize)
                    .unwrap_or(80);
                for line in lines.iter_mut().filter(|l| l.starts_with('\r')) {
                    if line.chars().count() > width {
                        *line = line.chars().take(width).collect();
                    }
                }
            }
            let _ = headless.write(&mut err, &lines);
            match ev {
                Event::Started { .. } => started = Some(ev),
                Event::Progress(s) => last_snapshot = Some(s),
                _ => {}
            }
        }
        (started, last_snapshot)
    });
    let result = rt.block_on(run::run(opts, ev_tx, ctl_rx));
    let (started, snapshot) = printer.join().unwrap_or((None, None));
    if let (Some(path), Some(started), Some(snapshot)) = (&args.trace, &started, &snapshot) {
        let trace = herd::ui::trace::trace_json(started, snapshot);
        write_json(path, &trace)?;
    }
    let (code, report) = match result {
        Ok(report) => (0, Some(report)),
        Err(e) => {
            eprintln!("error: {e}");
            let report = match &e {
                run::Error::Validation(r) => Some((**r).clone()),
                _ => None,
            };
            (e.exit_code(), report)
        }
    };
    if let (Some(path), Some(report)) = (&args.report, &report) {
        write_json(path, &serde_json::to_value(report)?)?;
    }
    Ok(code)
}

/// Reads an ONNX model and the external-data files its tensors name (from
/// the model's folder).
fn read_onnx(
    path: &Path,
) -> Result<(
    herd::model::onnx::OnnxFile,
    herd::model::onnx::ExternalFiles,
)> {
    use herd::model::onnx::{ExternalFiles, OnnxFile};
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = OnnxFile::parse(&bytes).with_context(|| path.display().to_string())?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files = ExternalFiles::new();
    for location in file
        .external_files()
        .with_context(|| path.display().to_string())?
    {
        let p = dir.join(&location);
        let data = std::fs::read(&p).with_context(|| {
            format!(
                "{}: cannot read external data file {}",
                path.display(),
                p.display()
            )
        })?;
        files.insert(location, data);
    }
    Ok((file, files))
}

fn model_inspect(path: &Path, json: bool) -> Result<i32> {
    let (file, files) = match read_onnx(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    let wgpu = herd::model::onnx::Backend {
        name: "wgpu",
        refuses: &herd::gpu::onnx_refusal,
    };
    let inspection = match herd::model::onnx::inspect_on(&file, &files, &[wgpu]) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return Ok(2);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print!("{}", inspection.to_text());
    }
    Ok(if inspection.runnable { 0 } else { 2 })
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

/// The folder `herd` with no arguments lists jobs from.
const JOBS_DIR: &str = "jobs";

fn tui(job: Option<PathBuf>, hosts: Option<PathBuf>) -> Result<i32> {
    use herd::ui::tui::{self, App, UiInput};
    herd::memory::keep_freed_memory(run::KEEP_TRIM_BYTES);
    let paths: Vec<PathBuf> = match job {
        Some(j) => vec![j],
        None => {
            let mut v: Vec<PathBuf> = std::fs::read_dir(JOBS_DIR)
                .with_context(|| format!("cannot list {JOBS_DIR}/ (run herd in a folder with jobs/, or `herd tui JOB.toml`)"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            v.sort();
            if v.is_empty() {
                bail!(
                    "no job files in {JOBS_DIR}/; write one (see jobs/demo.toml) or run `herd tui JOB.toml`"
                );
            }
            v
        }
    };
    let jobs: Vec<tui::JobSummary> = paths
        .iter()
        .map(|p| run::controller::job_summary(p, hosts.as_deref()))
        .collect();
    let first_store = run::controller::jobs_store(&paths);
    let colors = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (in_tx, in_rx) = std::sync::mpsc::channel::<UiInput>();
    let (act_tx, act_rx) = std::sync::mpsc::channel::<tui::Action>();
    let controller =
        std::thread::spawn(move || run::controller::control(act_rx, in_tx, hosts, first_store));
    let ui = tui::run_tui(App::new(jobs, colors), in_rx, act_tx);
    let ended = controller.join().unwrap_or(run::controller::Ended {
        code: 1,
        quit_note: Some("the controller thread panicked".into()),
    });
    ui.context("terminal UI")?;
    // The terminal is back: say what became of a run the quit interrupted.
    if let Some(note) = ended.quit_note {
        eprintln!("herd: {note}");
    }
    Ok(ended.code)
}

fn hosts_check(hosts: &Path) -> Result<i32> {
    let fleet = match run::load_fleet(hosts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(e.exit_code());
        }
    };
    let rt = runtime()?;
    let rows = rt.block_on(herd::fleet::check::check(&fleet));
    println!("{}", herd::fleet::check::table(&rows));
    Ok(if rows.iter().all(|r| r.ok) { 0 } else { 1 })
}

fn generate(args: GenArgs) -> Result<i32> {
    use herd::data::r#gen::{self as synth, GenKind, GenOptions};
    let (kind, data_name, weights_name) = match args.model {
        GenModel::TwoTower => (GenKind::TwoTower, "users.parquet", "two_tower.safetensors"),
        GenModel::Mlp => (GenKind::Mlp, "entities.parquet", "mlp.safetensors"),
        GenModel::Gbdt => (GenKind::Gbdt, "entities.parquet", "gbdt.onnx"),
    };
    let mut opts = GenOptions::defaults(kind);
    if let Some(v) = args.users {
        opts.users = v;
    }
    if let Some(v) = args.items {
        opts.items = v;
    }
    if let Some(v) = args.dim {
        opts.dim = v;
    }
    if let Some(v) = args.features {
        opts.features = v;
    }
    if let Some(v) = args.hidden {
        opts.hidden = v;
    }
    if let Some(v) = args.trees {
        opts.trees = v;
    }
    if let Some(v) = args.depth {
        opts.depth = v;
    }
    if let Some(v) = args.seed {
        opts.seed = v;
    }
    let data = args.out.join(data_name);
    let weights = args.out.join(weights_name);
    let s = synth::generate(&opts, &data, &weights)?;
    println!(
        "wrote {} ({} rows, {} bytes) and {} ({} bytes)",
        s.data.display(),
        s.rows,
        s.data_bytes,
        s.weights.display(),
        s.weights_bytes
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("herd").chain(args.iter().copied()))
    }

    #[test]
    fn run_flag_takes_every_flag_of_the_run_command() {
        let flags = [
            "--hosts", "h.toml", "--resume", "--report", "r.json", "--trace", "t.json",
        ];
        let top = parse(&[&["--run", "j.toml"][..], &flags].concat()).unwrap();
        let sub = parse(&[&["run", "j.toml"][..], &flags].concat()).unwrap();
        let Some(Cmd::Run(sub)) = sub.command else {
            panic!("not the run command")
        };
        assert_eq!(top.run.as_deref(), Some(Path::new("j.toml")));
        assert_eq!(top.run_flags, sub.flags);
        assert_eq!(
            top.run_flags,
            RunFlags {
                hosts: Some("h.toml".into()),
                resume: true,
                report: Some("r.json".into()),
                trace: Some("t.json".into()),
            }
        );
    }

    #[test]
    fn run_flags_without_a_job_are_refused() {
        let cli = parse(&["--report", "r.json"]).unwrap();
        assert!(cli.run.is_none() && cli.run_flags != RunFlags::default());
        let err = main_with(cli).unwrap_err().to_string();
        assert!(err.contains("go with --run"), "{err}");
    }
}
