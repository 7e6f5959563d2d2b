//! What a model costs per entity (multiply-adds, for planning chunks) and a
//! one-line description of it.

use super::{Dense, Model, OutputActivation};

fn layers_cost(layers: &[Dense]) -> u64 {
    layers
        .iter()
        .map(|l| l.in_dim as u64 * l.out_dim as u64)
        .sum()
}

/// `"68->128->64"` for a stack of layers.
fn layers_shape(layers: &[Dense]) -> String {
    let mut dims: Vec<String> = layers
        .first()
        .map(|l| l.in_dim.to_string())
        .into_iter()
        .collect();
    dims.extend(layers.iter().map(|l| l.out_dim.to_string()));
    dims.join("->")
}

impl Model {
    /// Multiply-adds to score one entity whose history has `history_len`
    /// items: mlp, the sum of in x out over its layers; two_tower,
    /// min(history, max_history) x dim + the tower's in x out + items x dim.
    pub fn entity_cost(&self, history_len: usize) -> u64 {
        match self {
            Model::Mlp(mlp) => layers_cost(&mlp.layers),
            Model::TwoTower(tt) => {
                let pooled = history_len.min(tt.max_history) as u64 * tt.dim as u64;
                pooled + layers_cost(&tt.tower) + tt.items() as u64 * tt.dim as u64
            }
        }
    }

    /// One line, e.g. `"two_tower: 100000 items x 64, tower 68->128->64, top 100, ..."`.
    pub fn describe(&self) -> String {
        match self {
            Model::Mlp(mlp) => {
                let output = match mlp.output {
                    OutputActivation::Sigmoid => "sigmoid",
                    OutputActivation::Softmax => "softmax",
                    OutputActivation::None => "no output activation",
                };
                format!("mlp: {}, {output}", layers_shape(&mlp.layers))
            }
            Model::TwoTower(tt) => {
                let tower = if tt.tower.is_empty() {
                    "no tower".to_string()
                } else {
                    format!("tower {}", layers_shape(&tt.tower))
                };
                format!(
                    "two_tower: {} items x {}, {tower}, top {}, max history {}{}",
                    tt.items(),
                    tt.dim,
                    tt.top_k,
                    tt.max_history,
                    if tt.exclude_seen {
                        ", exclude seen"
                    } else {
                        ""
                    }
                )
            }
        }
    }
}
