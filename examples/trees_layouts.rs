//! The tree layouts side by side on `herd gen gbdt`'s model, for
//! docs/performance.md: `cargo run --release --example trees_layouts -- ROWS THREADS`
//! (HERD_TREES_ISA=avx2|scalar lowers the perfect layout's instruction set).

use herd::bench::{Sizes, gbdt_workload, score_trees};
use herd::model::trees::fast::{Compiled, Layout, isa_name};

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let sizes = Sizes {
        gbdt_rows: rows,
        ..Sizes::default()
    };
    let (ensemble, x) = gbdt_workload(&sizes);
    let width = sizes.gbdt_features;
    println!(
        "{} trees, {} node visits per row, {rows} rows x {width} features, {threads} threads",
        ensemble.n_trees(),
        ensemble.cost_per_row()
    );
    let reference = ensemble
        .score_reference(&x[..1000 * width], 1000, width)
        .scores;
    for layout in [Layout::Auto, Layout::General] {
        let compiled = Compiled::with_layout(&ensemble, layout);
        let mut best = f64::INFINITY;
        let mut scores = Vec::new();
        for _ in 0..3 {
            let t = std::time::Instant::now();
            scores = score_trees(&ensemble, &compiled, &x, width, threads);
            best = best.min(t.elapsed().as_secs_f64());
        }
        assert_eq!(
            &scores[..reference.len()],
            &reference[..],
            "{} differs from the reference",
            compiled.name()
        );
        println!(
            "{:<8} {:<7} {:>8.3} s {:>12.0} rows/s",
            compiled.name(),
            if compiled.name() == "perfect" {
                isa_name()
            } else {
                "-"
            },
            best,
            rows as f64 / best
        );
    }
}
