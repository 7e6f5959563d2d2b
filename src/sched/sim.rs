pub struct BenchRow {
    pub scenario: String,
    pub policy: String,
    pub makespan_over_bound: f64,
    pub makespan_s: f64,
    pub bound_s: f64,
    pub attempts: u64,
    pub backups: u64,
    pub splits: u64,
}
pub fn bench() -> Vec<BenchRow> {
    unimplemented!()
}
pub fn bench_table(_: &[BenchRow]) -> String {
    unimplemented!()
}
