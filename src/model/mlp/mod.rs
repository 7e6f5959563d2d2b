//! `mlp` (churn-style scoring): per entity a dense feature vector through
//! dense layers with relu between them and an output activation after the
//! last; a few scores per entity.

mod spec;

use super::family::{Family, Scorer};
use super::layers::{
    apply_output, layers_block, layers_cost, layers_one, layers_shape, with_scratch,
};
use super::{Dense, ModelSpec, OutputActivation, Predictions, Result, Rows, check_features};

pub use spec::MlpSpec;

/// Rows per sgemm call (measured: throughput levels off from about 1024
/// rows on a 64->256->256->1 model).
pub(crate) const MLP_BLOCK_ROWS: usize = 1024;

/// Rows per block with the AVX-512 kernel: twenty of its register tiles,
/// so that a 256-wide layer's input and output blocks (240 KiB each) stay
/// in the L2 cache beside its packed weights.
pub(crate) const MLP_BLOCK_ROWS_AVX512: usize = 20 * super::gemm::MR;

fn block_rows() -> usize {
    if super::gemm::available() {
        MLP_BLOCK_ROWS_AVX512
    } else {
        MLP_BLOCK_ROWS
    }
}

impl Mlp {
    /// The scores of `n` rows of features (`[n, in_dim]`).
    fn score(&self, features: &[f32], n: usize, in_dim: usize) -> Predictions {
        let width = self.layers.last().map_or(in_dim, |l| l.out_dim);
        let mut values = Vec::with_capacity(n * width);
        let block = block_rows();
        with_scratch(|scratch| {
            for start in (0..n).step_by(block) {
                let m = block.min(n - start);
                let input = &features[start * in_dim..(start + m) * in_dim];
                let out = layers_block(&self.layers, input, m, scratch);
                if width > 0 {
                    for row in out.chunks_exact_mut(width) {
                        apply_output(self.output, row);
                    }
                }
                values.extend_from_slice(out);
            }
        });
        Predictions::Scores { width, values }
    }
}

/// The registry entry of `kind = "mlp"`.
pub static FAMILY: Family = Family {
    kind: "mlp",
    keys: &["layers", "output"],
    reads_history: false,
    needs_features: true,
    resolve: |raw, src| MlpSpec::resolve(raw, src).map(ModelSpec::Mlp),
};

/// Dense layers with relu between them and `output` after the last.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    pub layers: Vec<Dense>,
    pub output: OutputActivation,
}

impl Scorer for Mlp {
    fn predict_reference(&self, rows: &Rows) -> Result<Predictions> {
        check_features(
            self.layers.first().map_or(rows.num_features, |l| l.in_dim),
            rows,
        );
        let width = self.layers.last().map_or(0, |l| l.out_dim);
        let mut values = Vec::with_capacity(rows.len() * width);
        for r in 0..rows.len() {
            let mut out = layers_one(&self.layers, rows.features_of(r).to_vec());
            apply_output(self.output, &mut out);
            values.extend_from_slice(&out);
        }
        Ok(Predictions::Scores { width, values })
    }

    fn predict(&self, rows: &Rows) -> Result<Predictions> {
        self.predict_range(rows, 0..rows.len())
    }

    /// Reads the rows' features where they lie.
    fn predict_range(&self, rows: &Rows, range: std::ops::Range<usize>) -> Result<Predictions> {
        let in_dim = self.layers.first().map_or(rows.num_features, |l| l.in_dim);
        check_features(in_dim, rows);
        assert!(range.end <= rows.len(), "rows {range:?} of {}", rows.len());
        let features = &rows.features[range.start * in_dim..range.end * in_dim];
        Ok(self.score(features, range.len(), in_dim))
    }

    /// The sum of in x out over its layers.
    fn entity_cost(&self, _history_len: usize) -> u64 {
        layers_cost(&self.layers)
    }

    fn describe(&self) -> String {
        let output = match self.output {
            OutputActivation::Sigmoid => "sigmoid",
            OutputActivation::Softmax => "softmax",
            OutputActivation::None => "no output activation",
        };
        format!("mlp: {}, {output}", layers_shape(&self.layers))
    }
}
