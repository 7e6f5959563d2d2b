//! The registry of model families: the one place that knows them all.
//!
//! A family is a folder `model/<family>/` holding its settings (a struct
//! implementing [`FamilySpec`], resolved from the job's `[model]` table), its
//! loaded form (implementing [`Scorer`]: the reference and fast CPU paths,
//! cost, description) and its [`Family`] entry (kind name, keys, what its
//! rows need); plus its line in the `families!` list in `model/mod.rs`
//! (beside its `mod` line), which makes its variants of [`ModelSpec`] and
//! [`Model`] and lists it in [`FAMILIES`]. Nothing else in herd matches on
//! the families: the coordinator, the validation plan, the config stage and
//! the UI ask a spec or a model through these methods. The GPU path is asked separately
//! (`gpu::supports`), and says no to a family it has no kernels for.

use super::{FAMILIES, Model, ModelSpec, Predictions, Result, Rows};
use crate::config::{self, raw, source::Source};

/// What a family's settings answer (one variant of [`ModelSpec`]).
pub trait FamilySpec {
    /// K when the model's predictions are top-K lists.
    fn top_k(&self) -> Option<usize> {
        None
    }

    /// Whether an entity's history items never appear among its predictions
    /// (the validation gate checks this on its sample rows).
    fn excludes_seen(&self) -> bool {
        false
    }

    /// Whether the model defines what a missing (NaN) feature value means,
    /// so that `[input] on_invalid = "missing"` may pass NaN to it. None of
    /// the built-in families does: their dense layers would carry the NaN
    /// (or relu would silently turn it into 0).
    fn accepts_missing(&self) -> bool {
        false
    }

    /// Parses safetensors `bytes` into a loaded model, checking every shape
    /// against these settings and `num_features` dense feature columns.
    fn load(&self, bytes: &[u8], num_features: usize) -> Result<Model>;

    /// The files beside the model file that loading it reads too (an ONNX
    /// model's external data), as the model names them: relative paths
    /// that stay beside it.
    fn companions(&self, _bytes: &[u8]) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// As [`FamilySpec::load`], with the companion files' bytes by name.
    fn load_with(
        &self,
        bytes: &[u8],
        _companions: &std::collections::BTreeMap<String, Vec<u8>>,
        num_features: usize,
    ) -> Result<Model> {
        self.load(bytes, num_features)
    }

    /// The feature columns the settings name themselves (ONNX's
    /// `[model.inputs]`), when `[input] feature_columns` is to be them.
    fn feature_columns(&self) -> Option<Vec<String>> {
        None
    }
}

/// What a loaded model does (one variant of [`Model`]).
pub trait Scorer {
    /// Scores `rows` with plain loops: the result every backend must match.
    /// Fails only on values a model cannot score (an ONNX graph's index out
    /// of range, an integer input that is not an integer).
    fn predict_reference(&self, rows: &Rows) -> Result<Predictions>;

    /// Scores `rows` on this thread with the fast CPU kernels; agrees with
    /// the reference within float rounding.
    fn predict(&self, rows: &Rows) -> Result<Predictions>;

    /// [`Scorer::predict`] of rows `range` of `rows`, as the same rows on
    /// their own score; families that read only the feature matrix score
    /// them in place instead of copying them out.
    fn predict_range(&self, rows: &Rows, range: std::ops::Range<usize>) -> Result<Predictions> {
        self.predict(&rows.slice(range))
    }

    /// Multiply-adds to score one entity whose history has `history_len`
    /// items (for planning chunks of equal cost).
    fn entity_cost(&self, history_len: usize) -> u64;

    /// One line naming the kind and its shape.
    fn describe(&self) -> String;

    /// Whether the model defines missing (NaN) feature values, as tree
    /// ensembles do: then null features reach it as NaN by default
    /// (`[input] on_invalid = "missing"`).
    fn defines_missing(&self) -> bool {
        false
    }

    /// Rows one call of [`Scorer::predict`] needs to run at full speed (a
    /// kernel that streams a catalogue once per block of users wants a whole
    /// block): the native path never cuts a batch finer than this.
    fn block_rows(&self) -> usize {
        64
    }
}

/// A family's entry in the registry.
pub struct Family {
    /// Its name in `[model] kind`.
    pub kind: &'static str,
    /// The `[model]` keys of this kind (besides `kind` and `weights`); a key
    /// of another kind is refused, naming the kinds it belongs to.
    pub keys: &'static [&'static str],
    /// Reads each entity's history column (`[input] history_column`).
    pub reads_history: bool,
    /// Scores dense feature vectors, so needs at least one feature column.
    pub needs_features: bool,
    /// Resolves the job's `[model]` table into this family's settings.
    pub resolve: fn(&raw::ModelTable, &Source<'_>) -> config::Result<ModelSpec>,
}

impl ModelSpec {
    /// `[model] kind`.
    pub fn kind_name(&self) -> &'static str {
        self.family().kind
    }

    /// Whether the model reads each entity's history column.
    pub fn reads_history(&self) -> bool {
        self.family().reads_history
    }

    /// K when predictions are top-K lists, `None` for scores.
    pub fn top_k(&self) -> Option<usize> {
        self.settings().top_k()
    }

    /// The files beside the model file that loading `bytes` reads too.
    pub fn companions(&self, bytes: &[u8]) -> Result<Vec<String>> {
        self.settings().companions(bytes)
    }

    /// The feature columns the model settings name, if they name them.
    pub fn feature_columns(&self) -> Option<Vec<String>> {
        self.settings().feature_columns()
    }

    /// Whether an entity's history items never appear among its predictions.
    pub fn excludes_seen(&self) -> bool {
        self.settings().excludes_seen()
    }

    /// Whether NaN feature values mean "missing" to this model.
    pub fn accepts_missing(&self) -> bool {
        self.settings().accepts_missing()
    }
}

impl Model {
    /// Parses safetensors `bytes` into a model of kind `spec`, checking every
    /// shape. `num_features` is how many dense feature columns the input has.
    pub fn from_safetensors(spec: &ModelSpec, bytes: &[u8], num_features: usize) -> Result<Model> {
        spec.settings().load(bytes, num_features)
    }

    /// Loads the model file's `bytes` with its companion files (by the names
    /// [`ModelSpec::companions`] gave).
    pub fn load(
        spec: &ModelSpec,
        bytes: &[u8],
        companions: &std::collections::BTreeMap<String, Vec<u8>>,
        num_features: usize,
    ) -> Result<Model> {
        spec.settings().load_with(bytes, companions, num_features)
    }

    /// Scores `rows` with plain loops: the result every backend must match.
    ///
    /// # Panics
    /// When `rows` carries a different number of feature columns than the
    /// model was loaded for.
    pub fn predict_reference(&self, rows: &Rows) -> Result<Predictions> {
        self.scorer().predict_reference(rows)
    }

    /// Scores `rows` on this thread with the fast kernels. Agrees with
    /// [`Model::predict_reference`] within float rounding (and on the same
    /// top-K items, up to scores that tie within that rounding).
    ///
    /// # Panics
    /// As [`Model::predict_reference`].
    pub fn predict(&self, rows: &Rows) -> Result<Predictions> {
        self.scorer().predict(rows)
    }

    /// [`Model::predict`] of rows `range` of `rows` (what a scoring thread
    /// of a chunk runs), as `predict(&rows.slice(range))` scores them.
    ///
    /// # Panics
    /// As [`Model::predict_reference`], or when `range` is past the rows.
    pub fn predict_range(&self, rows: &Rows, range: std::ops::Range<usize>) -> Result<Predictions> {
        self.scorer().predict_range(rows, range)
    }

    /// Whether null features reach this model as missing values by default.
    pub fn defines_missing(&self) -> bool {
        self.scorer().defines_missing()
    }

    /// Rows one call of [`Model::predict`] needs to run at full speed.
    pub fn block_rows(&self) -> usize {
        self.scorer().block_rows().max(1)
    }

    /// Multiply-adds to score one entity whose history has `history_len`
    /// items.
    pub fn entity_cost(&self, history_len: usize) -> u64 {
        self.scorer().entity_cost(history_len)
    }

    /// One line, e.g. `"two_tower: 100000 items x 64, tower 68->128->64, top 100, ..."`.
    pub fn describe(&self) -> String {
        self.scorer().describe()
    }
}

/// The family named `kind` in `[model] kind`.
pub fn family(kind: &str) -> Option<&'static Family> {
    FAMILIES.iter().copied().find(|f| f.kind == kind)
}

/// Makes [`ModelSpec`] and [`Model`] with one variant per family, the
/// dispatch from each to its family's traits, and [`FAMILIES`].
macro_rules! families {
    ($($(#[$doc:meta])* $variant:ident: $module:ident::{$model:ident, $spec:ident}),* $(,)?) => {
        /// Which model a job runs and its settings (weights come separately,
        /// as bytes).
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum ModelSpec {
            $($(#[$doc])* $variant($module::$spec),)*
        }

        /// A loaded model, ready to score rows.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Model {
            $($(#[$doc])* $variant($module::$model),)*
        }

        /// Every family, in the order messages list them.
        pub static FAMILIES: &[&$crate::model::family::Family] = &[$(&$module::FAMILY),*];

        impl ModelSpec {
            fn settings(&self) -> &dyn $crate::model::family::FamilySpec {
                match self {
                    $(ModelSpec::$variant(s) => s,)*
                }
            }

            /// The registry entry of this spec's family.
            pub fn family(&self) -> &'static $crate::model::family::Family {
                match self {
                    $(ModelSpec::$variant(_) => &$module::FAMILY,)*
                }
            }
        }

        impl Model {
            fn scorer(&self) -> &dyn $crate::model::family::Scorer {
                match self {
                    $(Model::$variant(m) => m,)*
                }
            }

            /// `[model] kind` of this model's family.
            pub fn kind_name(&self) -> &'static str {
                match self {
                    $(Model::$variant(_) => $module::FAMILY.kind,)*
                }
            }
        }
    };
}
pub(crate) use families;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_found_by_name() {
        for f in FAMILIES {
            assert!(std::ptr::eq(family(f.kind).unwrap(), *f), "{}", f.kind);
        }
        assert!(family("two-tower").is_none());
    }

    #[test]
    fn every_kind_key_of_the_model_table_belongs_to_a_family_and_back() {
        let kinds: Vec<&[&str]> = FAMILIES.iter().map(|f| f.keys).collect();
        raw::assert_kind_table(
            "kind = 'mlp'\nweights = 'w'",
            &["kind", "weights"],
            |t: &raw::ModelTable| t.kind_keys().into_iter().map(|(k, _)| k).collect(),
            &kinds,
            "[model]",
            "model family",
        );
    }
}
