//! The worker's read of a job's whole input, alone: `cargo run --release
//! --example read_rate -- JOB.toml [PIECE_ROWS] [REPEAT] [CHUNKS]` decodes
//! every row of the job's input as attempts would (segments checked,
//! features into rows), under the worker's allocator settings, and prints
//! each pass's wall and CPU time. With CHUNKS, the input is read as that
//! many chunks, each on a thread of its own that hands its pieces to this
//! one (as a worker's reader hands batches to its crew); without, in one
//! read on this thread.

use std::sync::Arc;
use std::time::Instant;

use herd::bench::thread_cpu;

fn main() {
    herd::memory::keep_freed_memory(herd::worker::KEEP_TRIM_BYTES);
    let mut args = std::env::args().skip(1);
    let job_path = std::path::PathBuf::from(
        args.next()
            .expect("usage: read_rate JOB.toml [PIECE_ROWS] [REPEAT] [CHUNKS]"),
    );
    let mut number = |default: usize| {
        args.next()
            .map(|a| a.parse().expect("a whole number"))
            .unwrap_or(default)
    };
    let (piece, repeat, chunks) = (number(16_384), number(3), number(0));
    let text = std::fs::read_to_string(&job_path).expect("read the job file");
    let job = herd::config::parse_job(&text, &job_path).expect("parse the job");
    let ds = Arc::new(herd::data::Dataset::open(&job.input, false).expect("open the input"));
    let index = ds.scan_index().expect("scan the index");
    let values = (ds.num_rows() as usize * ds.num_features()) as f64;
    for pass in 0..repeat {
        let wall = Instant::now();
        let cpu = if chunks == 0 {
            let start = thread_cpu();
            let segments = ds.segments(0..ds.num_rows(), &index.ids);
            ds.stream_segments(&segments, piece, |_| true)
                .expect("read");
            (thread_cpu() - start).as_secs_f64()
        } else {
            let n = ds.num_rows();
            let mut readers = 0.0;
            for c in 0..chunks as u64 {
                let range = n * c / chunks as u64..n * (c + 1) / chunks as u64;
                let segments = ds.segments(range, &index.ids);
                let ds = ds.clone();
                let (tx, rx) = std::sync::mpsc::sync_channel(2);
                let reader = std::thread::spawn(move || {
                    let start = thread_cpu();
                    ds.stream_segments(&segments, piece, |rows| tx.send(rows).is_ok())
                        .expect("read");
                    (thread_cpu() - start).as_secs_f64()
                });
                rx.into_iter().for_each(drop);
                readers += reader.join().expect("the reader thread");
            }
            readers
        };
        println!(
            "pass {pass}: {:.3} s wall, {cpu:.3} s CPU reading ({:.2} ns a value)",
            wall.elapsed().as_secs_f64(),
            cpu * 1e9 / values
        );
    }
}
