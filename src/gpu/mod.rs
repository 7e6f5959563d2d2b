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
//! `top_k` at most half the top-K kernel's workgroup buffer
//! ([`KernelConfig::max_top_k`]: 1,024 with 32 KiB of workgroup memory, as
//! lavapipe and NVIDIA's Vulkan driver give; 512 with the WebGPU minimum of
//! 16 KiB); each dense layer's weight tensor and one item embedding row must
//! fit one storage binding; the kernels need 256 invocations per workgroup
//! and 8 storage buffers per stage (the WebGPU minimums). Rows, users and
//! items beyond one binding or one dispatch are tiled. A worker whose device
//! is `auto` falls back to the native CPU path, saying why, when a model is
//! over these limits.

mod device;
mod kernels;
mod model;
mod onnx;
mod trees;

use crate::model::Model;

pub use device::{Gpu, choose};
pub use kernels::KernelConfig;
pub use model::{GpuModel, KernelTiming, TileLimits};
pub use onnx::{GpuMl, GpuOnnx, refusal as onnx_refusal};
pub use trees::GpuTrees;

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
    /// `top_k` needs more workgroup memory than the adapter has.
    #[error(
        "top_k = {top_k} is over the GPU path's limit of {limit} on adapter '{adapter}' \
         (half the top-K kernel's workgroup buffer)"
    )]
    TopKTooLarge {
        top_k: usize,
        limit: usize,
        adapter: String,
    },
    /// wgpu reported a validation or out-of-memory error while running.
    #[error("wgpu error on adapter '{adapter}' during {stage}: {message}")]
    Wgpu {
        adapter: String,
        stage: &'static str,
        message: String,
    },
    #[error("reading results back from adapter '{adapter}' failed: {message}")]
    ReadBack { adapter: String, message: String },
    /// An ONNX graph the kernels cannot run, or rows that break it.
    #[error("{0}")]
    Onnx(String),
}

/// The hint printed when no Vulkan/GL driver is installed at all.
pub const DRIVER_HINT: &str = "; on Debian/Ubuntu a software adapter comes with \
     `apt-get install -y mesa-vulkan-drivers libvulkan1`";

/// Whether the GPU path has kernels for `model`'s family. `GpuModel::new`
/// refuses the others ([`Error::Unsupported`]), and with `device = "auto"`
/// the worker then scores on the native CPU path. A small question a model
/// family never has to answer itself: the GPU room knows its kernels.
pub fn supports(model: &Model) -> bool {
    match model {
        Model::Mlp(_) | Model::TwoTower(_) | Model::Onnx(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mlp, OutputActivation, TwoTower};

    #[test]
    fn the_gpu_path_has_kernels_for_both_families() {
        let mlp = Model::Mlp(Mlp {
            layers: Vec::new(),
            output: OutputActivation::None,
        });
        let tt = Model::TwoTower(TwoTower {
            dim: 1,
            item_embeddings: vec![0.0],
            item_ids: vec![0],
            tower: Vec::new(),
            num_features: 0,
            top_k: 1,
            max_history: 1,
            exclude_seen: false,
        });
        assert!(supports(&mlp) && supports(&tt));
    }
}
