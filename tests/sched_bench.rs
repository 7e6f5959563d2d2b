//! The straggler benchmark's claims, on simulated (deterministic) time.

use herd::sched::sim;

#[test]
fn print_bench_table() {
    let rows = sim::bench();
    println!("{}", sim::bench_table(&rows));
}
