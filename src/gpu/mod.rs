//! The wgpu backend: device choice, weights uploaded once, and WGSL kernels
//! (`shaders/*.wgsl`) that run a [`Model`](crate::model::Model) on any GPU.
//!
//! It exists so a worker on a machine with a GPU scores its chunks there
//! instead of on the CPU. It must give the same answers as the CPU reference
//! (`model::Model::predict_reference`): scores within 1e-4 and the same top-K
//! sets, ties broken by the smaller item id.
//!
//! What it must not do: pick a CPU-type adapter (lavapipe) on its own (that is
//! ~100x slower than the native CPU path, so `Device::Auto` never takes one),
//! assume a buffer can be as large as the data (every buffer is tiled to the
//! adapter's own limits), or bring the user x item score matrix back to the
//! host (top-K is selected on the device, tile by tile).
//!
//! Limits, each reported as an error naming the value and the limit:
//! `top_k` at most [`MAX_TOP_K`]; each dense layer's weight tensor and one
//! item embedding row must fit one storage binding; the top-K kernel needs
//! 12 KiB of workgroup memory, 256 invocations per workgroup and 6 storage
//! buffers per stage (every WebGPU adapter's guaranteed minimum covers these).
//! Rows, users and items beyond one binding or one dispatch are tiled.

mod device;
mod kernels;
mod model;

use crate::model::Model;

pub use device::{Gpu, choose};
pub use model::{GpuModel, MAX_TOP_K, TileLimits};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter of the wanted kind; `found` lists the adapters there are.
    #[error("no {wanted} adapter found (adapters seen: {found}){hint}")]
    NoAdapter {
        wanted: &'static str,
        found: String,
        hint: &'static str,
    },
    #[error("could not open adapter '{adapter}': {message}")]
    RequestDevice { adapter: String, message: String },
    /// The adapter cannot hold what the model needs in one binding or one
    /// workgroup.
    #[error("{what} needs {needed} bytes but adapter '{adapter}' allows {limit} ({limit_name})")]
    OverLimit {
        adapter: String,
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },
    /// The rows or the weights do not have the shapes the model needs.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A model family the kernels do not cover.
    #[error("the GPU path has no kernels for kind = '{0}'")]
    Unsupported(&'static str),
    #[error("top_k = {top_k} is over the GPU path's limit of {limit}")]
    TopKTooLarge { top_k: usize, limit: usize },
    /// wgpu reported a validation or out-of-memory error while running.
    #[error("wgpu error on adapter '{adapter}' during {stage}: {message}")]
    Wgpu {
        adapter: String,
        stage: &'static str,
        message: String,
    },
    #[error("reading results back from adapter '{adapter}' failed: {message}")]
    ReadBack { adapter: String, message: String },
}

/// The hint printed when no Vulkan/GL driver is installed at all.
pub const DRIVER_HINT: &str = "; on Debian/Ubuntu a software adapter comes with \
     `apt-get install -y mesa-vulkan-drivers libvulkan1`";

/// Whether the GPU path can run `model`, or why not (a family it has no
/// kernels for, a setting beyond its limits). Asked before anything is
/// uploaded: with `device = "auto"` a no means the native CPU path.
pub fn supports(model: &Model) -> Result<()> {
    match model {
        Model::TwoTower(t) if t.top_k > MAX_TOP_K => Err(Error::TopKTooLarge {
            top_k: t.top_k,
            limit: MAX_TOP_K,
        }),
        Model::Mlp(_) | Model::TwoTower(_) => Ok(()),
        #[allow(unreachable_patterns)]
        other => Err(Error::Unsupported(other.kind_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mlp, OutputActivation, TwoTower};

    fn two_tower(top_k: usize) -> Model {
        Model::TwoTower(TwoTower {
            dim: 1,
            item_embeddings: vec![0.0],
            item_ids: vec![0],
            tower: Vec::new(),
            num_features: 0,
            top_k,
            max_history: 1,
            exclude_seen: false,
        })
    }

    #[test]
    fn the_gpu_path_refuses_a_top_k_over_its_limit_before_uploading() {
        assert!(supports(&two_tower(MAX_TOP_K)).is_ok());
        let e = supports(&two_tower(MAX_TOP_K + 1)).unwrap_err();
        assert!(matches!(e, Error::TopKTooLarge { .. }), "{e}");
        let mlp = Model::Mlp(Mlp {
            layers: Vec::new(),
            output: OutputActivation::None,
        });
        assert!(supports(&mlp).is_ok());
    }
}
