//! The compiled kernels and the small amount of buffer plumbing they share.
//! Each `encode_*` records one dispatch into an encoder; the caller submits.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::{Error, Gpu, Result};

/// Rows and columns of the output each dense workgroup computes.
pub(crate) const DENSE_TILE: u32 = 64;
const ACTIVATION_WG: u32 = 64;
const POOL_WG: u32 = 64;
/// Workgroup buffer of the top-K kernel (entries); `kp` is at most half.
pub(crate) const TOPK_BUF: usize = 1024;
/// Workgroup memory the top-K kernel declares: score, id and flag per entry.
pub(crate) const TOPK_WORKGROUP_BYTES: u64 = (TOPK_BUF * 12) as u64;

pub(crate) struct Kernels {
    dense: wgpu::ComputePipeline,
    activation: wgpu::ComputePipeline,
    pool: wgpu::ComputePipeline,
    topk: wgpu::ComputePipeline,
}

fn pipeline(gpu: &Gpu, name: &str, source: &str) -> wgpu::ComputePipeline {
    let module = gpu
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source.into()),
        });
    gpu.device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        })
}

impl Kernels {
    /// Compiles every kernel. Call inside an error scope: a shader the
    /// adapter rejects is reported there, not here.
    pub(crate) fn new(gpu: &Gpu) -> Kernels {
        Kernels {
            dense: pipeline(gpu, "dense", include_str!("../../shaders/dense.wgsl")),
            activation: pipeline(
                gpu,
                "activation",
                include_str!("../../shaders/activation.wgsl"),
            ),
            pool: pipeline(gpu, "pool", include_str!("../../shaders/pool.wgsl")),
            topk: pipeline(gpu, "topk", include_str!("../../shaders/topk.wgsl")),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct DenseParams {
    pub rows: u32,
    pub in_dim: u32,
    pub out_dim: u32,
    pub relu: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct ActivationParams {
    pub rows: u32,
    pub width: u32,
    pub mode: u32,
    pub pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct PoolParams {
    pub users: u32,
    pub dim: u32,
    pub num_features: u32,
    pub tile_start: u32,
    pub tile_len: u32,
    pub first_tile: u32,
    pub pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct TopKParams {
    pub users: u32,
    pub dim: u32,
    pub tile_start: u32,
    pub tile_len: u32,
    pub kp: u32,
    pub first_tile: u32,
    pub exclude_seen: u32,
    pub user_stride: u32,
}

/// One top-K candidate as the kernel stores it between item tiles.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Entry {
    pub score: f32,
    pub id: u32,
    pub ok: u32,
}

/// A read-only storage buffer holding `data` (at least 4 bytes: wgpu does
/// not bind empty buffers).
pub(crate) fn upload<T: Pod>(gpu: &Gpu, label: &str, data: &[T]) -> wgpu::Buffer {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let pad = [0u8; 4];
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: if bytes.is_empty() { &pad } else { bytes },
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        })
}

/// A writable storage buffer of `bytes` bytes (at least 4).
pub(crate) fn scratch(gpu: &Gpu, label: &str, bytes: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

fn uniform<T: Pod>(gpu: &Gpu, params: &T) -> wgpu::Buffer {
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

fn dispatch(
    gpu: &Gpu,
    encoder: &mut wgpu::CommandEncoder,
    pipeline: &wgpu::ComputePipeline,
    buffers: &[&wgpu::Buffer],
    groups: (u32, u32),
) {
    let entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, &bind_group, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
}

impl Kernels {
    /// `y = act(x W^T + b)` for `p.rows` rows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_dense(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        p: DenseParams,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        b: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) {
        let u = uniform(gpu, &p);
        let groups = (p.out_dim.div_ceil(DENSE_TILE), p.rows.div_ceil(DENSE_TILE));
        dispatch(gpu, encoder, &self.dense, &[&u, x, w, b, y], groups);
    }

    pub(crate) fn encode_activation(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        p: ActivationParams,
        y: &wgpu::Buffer,
    ) {
        let u = uniform(gpu, &p);
        let groups = (p.rows.div_ceil(ACTIVATION_WG), 1);
        dispatch(gpu, encoder, &self.activation, &[&u, y], groups);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_pool(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        p: PoolParams,
        emb: &wgpu::Buffer,
        offsets: &wgpu::Buffer,
        rows: &wgpu::Buffer,
        features: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) {
        let u = uniform(gpu, &p);
        let groups = ((p.dim + p.num_features).div_ceil(POOL_WG), p.users);
        dispatch(
            gpu,
            encoder,
            &self.pool,
            &[&u, emb, offsets, rows, features, out],
            groups,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_topk(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        p: TopKParams,
        user_vecs: &wgpu::Buffer,
        emb: &wgpu::Buffer,
        item_ids: &wgpu::Buffer,
        seen_offsets: &wgpu::Buffer,
        seen_rows: &wgpu::Buffer,
        state: &wgpu::Buffer,
    ) {
        let u = uniform(gpu, &p);
        dispatch(
            gpu,
            encoder,
            &self.topk,
            &[&u, user_vecs, emb, item_ids, seen_offsets, seen_rows, state],
            (p.users, 1),
        );
    }
}

/// Copies `bytes` bytes of `src` to the host (submits `encoder` first).
pub(crate) fn read_back(
    gpu: &Gpu,
    mut encoder: wgpu::CommandEncoder,
    src: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<u8>> {
    let size = bytes.max(4);
    let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read back"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    encoder.copy_buffer_to_buffer(src, 0, &staging, 0, size);
    gpu.queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    let read_back_error = |message: String| Error::ReadBack {
        adapter: gpu.info.name.clone(),
        message,
    };
    gpu.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| read_back_error(e.to_string()))?;
    rx.recv()
        .map_err(|e| read_back_error(e.to_string()))?
        .map_err(|e| read_back_error(e.to_string()))?;
    let view = staging
        .get_mapped_range(..)
        .map_err(|e| read_back_error(e.to_string()))?;
    let out = view[..bytes as usize].to_vec();
    drop(view);
    staging.unmap();
    Ok(out)
}
