//! The worker's read of a job's whole input, alone: `cargo run --release
//! --example read_rate -- JOB.toml [PIECE_ROWS] [REPEAT]` decodes every
//! row of the job's input as one attempt would (segments checked, features
//! into rows), on one thread, and prints each pass's wall and CPU time.

use std::time::Instant;

fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() {
    let mut args = std::env::args().skip(1);
    let job_path = std::path::PathBuf::from(
        args.next()
            .expect("usage: read_rate JOB.toml [PIECE_ROWS] [REPEAT]"),
    );
    let piece: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16_384);
    let repeat: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let text = std::fs::read_to_string(&job_path).expect("read the job file");
    let job = herd::config::parse_job(&text, &job_path).expect("parse the job");
    let ds = herd::data::Dataset::open(&job.input, false).expect("open the input");
    let index = ds.scan_index().expect("scan the index");
    let segments = ds.segments(0..ds.num_rows(), &index.ids);
    for pass in 0..repeat {
        let (wall, cpu) = (Instant::now(), cpu_seconds());
        let mut rows = 0usize;
        ds.stream_segments(&segments, piece, |r| {
            rows += r.len();
            true
        })
        .expect("read");
        let (wall, cpu) = (wall.elapsed().as_secs_f64(), cpu_seconds() - cpu);
        println!(
            "pass {pass}: {rows} rows in {wall:.3} s wall, {cpu:.3} s CPU ({:.2} ns a value)",
            cpu * 1e9 / (rows * ds.num_features()) as f64
        );
    }
}
