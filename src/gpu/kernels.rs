//! The compiled kernels and the small amount of buffer plumbing they share.
//! Each `encode_*` records one dispatch into an encoder; the caller submits.

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use super::{Error, Gpu, Result};

/// Rows and columns of the output each tiled workgroup computes (dense and
/// score_filter).
pub(crate) const TILE: u32 = 128;
/// Rows of the output each narrow-dense workgroup computes.
pub(crate) const NARROW_ROWS: u32 = 32;
/// A dense layer with fewer outputs than this runs on the narrow kernel.
pub(crate) const NARROW_BELOW: usize = 16;
const ACTIVATION_WG: u32 = 64;
const POOL_WG: u32 = 64;
/// Invocations per workgroup of the tiled and top-K kernels.
pub(crate) const INVOCATIONS: u32 = 256;
/// Storage buffers the top-K kernels bind at once.
pub(crate) const TOPK_STORAGE_BUFFERS: u32 = 8;
/// Bytes of workgroup memory per top-K buffer entry (score, id, flag).
const TOPK_ENTRY_BYTES: u64 = 12;

/// The shapes the kernels are compiled with, chosen from the adapter's
/// limits ([`KernelConfig::for_limits`]); `herd bench compute` also times
/// other choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// Columns of `in` a tiled workgroup stages at a time (8, 16 or 32).
    pub dense_bk: u32,
    /// Whether the tiled kernels read the next slice while multiplying.
    pub prefetch: bool,
    /// Entries of the top-K workgroup buffer (a power of two); `top_k` may
    /// be up to half of it.
    pub topk_buf: u32,
    /// Rounds of items are sized so that a user expects at most
    /// `cap / round_slack` candidates per round.
    pub round_slack: u32,
    /// Items in the first top-K round (all of them are candidates), as a
    /// multiple of `kp`; 0: as many as a candidate list holds.
    pub first_round_kp: u32,
    /// Whether wgpu bounds every loop with a counter of its own (its
    /// default; our loops all end on their own, their bounds come from the
    /// host). Benchmarks show what the counters cost.
    pub loop_bounding: bool,
}

impl KernelConfig {
    /// The largest shapes the adapter's workgroup memory allows.
    pub fn for_limits(limits: &wgpu::Limits) -> KernelConfig {
        let wg_bytes = limits.max_compute_workgroup_storage_size as u64;
        // Two staged slices of 128 x BK floats, padded to 33 vec4 per column.
        let dense_bytes = |bk: u64| 2 * bk * 33 * 16;
        let dense_bk = [32u32, 16, 8]
            .into_iter()
            .find(|&bk| dense_bytes(bk as u64) <= wg_bytes)
            .unwrap_or(8);
        let mut topk_buf = 4096u32;
        while topk_buf > 256 && topk_buf as u64 * TOPK_ENTRY_BYTES + 8 > wg_bytes {
            topk_buf /= 2;
        }
        KernelConfig {
            dense_bk,
            prefetch: true,
            topk_buf,
            round_slack: 4,
            first_round_kp: 0,
            loop_bounding: true,
        }
    }

    /// Bytes of workgroup memory the tiled kernels declare.
    pub(crate) fn dense_workgroup_bytes(&self) -> u64 {
        2 * self.dense_bk as u64 * 33 * 16
    }

    /// Bytes of workgroup memory the top-K kernel declares.
    pub(crate) fn topk_workgroup_bytes(&self) -> u64 {
        self.topk_buf as u64 * TOPK_ENTRY_BYTES + 8
    }

    /// The largest `top_k` these kernels select.
    pub fn max_top_k(&self) -> usize {
        self.topk_buf as usize / 2
    }
}

pub(crate) struct Kernels {
    pub(crate) config: KernelConfig,
    /// While `time_kernels` profiles a pass: the timestamp queries written
    /// so far, one pair per dispatch.
    profile: std::sync::Mutex<Option<Profile>>,
    dense: wgpu::ComputePipeline,
    dense_narrow: wgpu::ComputePipeline,
    activation: wgpu::ComputePipeline,
    pool: wgpu::ComputePipeline,
    score_filter: wgpu::ComputePipeline,
    topk: wgpu::ComputePipeline,
}

fn pipeline(gpu: &Gpu, name: &str, source: &str, config: KernelConfig) -> wgpu::ComputePipeline {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    };
    let module = if config.loop_bounding {
        gpu.device.create_shader_module(desc)
    } else {
        let checks = wgpu::ShaderRuntimeChecks {
            force_loop_bounding: false,
            ..wgpu::ShaderRuntimeChecks::checked()
        };
        // SAFETY: only loop bounding is off, and every loop in shaders/ ends
        // on its own: each runs to a bound the host sets (rows, dims, items,
        // rounds, a power of two at most the top-K buffer) with a step that
        // moves toward it; bounds checks stay on.
        unsafe { gpu.device.create_shader_module_trusted(desc, checks) }
    };
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

/// `source` with the declaration `const NAME: TYPE = ...;` replaced by
/// `value`. The shapes live in the shader files as plain constants, so each
/// file reads (and compiles) on its own.
fn with_const(source: &str, name: &str, value: &str) -> String {
    let start = format!("const {name}: ");
    let at = source
        .find(&start)
        .unwrap_or_else(|| panic!("shader has no constant {name}"));
    let end = at + source[at..].find(';').expect("a constant ends with ';'");
    let ty = &source[at + start.len()..]
        .split_whitespace()
        .next()
        .expect("a constant has a type");
    format!(
        "{}const {name}: {ty} = {value}{}",
        &source[..at],
        &source[end..]
    )
}

fn tiled_source(source: &str, config: KernelConfig) -> String {
    let s = with_const(source, "BK", &format!("{}u", config.dense_bk));
    if s.contains("const PREFETCH: ") {
        with_const(
            &s,
            "PREFETCH",
            if config.prefetch { "true" } else { "false" },
        )
    } else {
        s
    }
}

impl Kernels {
    /// Compiles every kernel with `config`. Call inside an error scope: a
    /// shader the adapter rejects is reported there, not here.
    pub(crate) fn new(gpu: &Gpu, config: KernelConfig) -> Kernels {
        let dense = tiled_source(include_str!("../../shaders/dense.wgsl"), config);
        let filter = tiled_source(include_str!("../../shaders/score_filter.wgsl"), config);
        let topk = with_const(
            include_str!("../../shaders/topk.wgsl"),
            "BUF",
            &format!("{}u", config.topk_buf),
        );
        let c = config;
        Kernels {
            config,
            profile: std::sync::Mutex::new(None),
            dense: pipeline(gpu, "dense", &dense, c),
            dense_narrow: pipeline(
                gpu,
                "dense_narrow",
                include_str!("../../shaders/dense_narrow.wgsl"),
                c,
            ),
            activation: pipeline(
                gpu,
                "activation",
                include_str!("../../shaders/activation.wgsl"),
                c,
            ),
            pool: pipeline(gpu, "pool", include_str!("../../shaders/pool.wgsl"), c),
            score_filter: pipeline(gpu, "score_filter", &filter, c),
            topk: pipeline(gpu, "topk", &topk, c),
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

/// One round of top-K (score_filter.wgsl and topk.wgsl share it).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct RoundParams {
    pub users: u32,
    pub dim: u32,
    pub tile_len: u32,
    pub tile_start: u32,
    pub item_start: u32,
    pub item_end: u32,
    pub k: u32,
    pub kp: u32,
    pub exclude_seen: u32,
    pub user_stride: u32,
    pub cap: u32,
    pub first: u32,
    pub pad: [u32; 4],
}

/// One top-K candidate as the kernel stores it between rounds.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Entry {
    pub score: f32,
    pub id: u32,
    pub ok: u32,
}

/// Bytes of one entry of a user's candidate list (score, id).
pub(crate) const CANDIDATE_BYTES: u64 = 8;

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

/// A storage buffer of `bytes` bytes (at least 4) that can be written from
/// the host and read back.
pub(crate) fn scratch(gpu: &Gpu, label: &str, bytes: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Writes `data` to the start of `dst` through the queue (ordered before the
/// next submission). Large writes are copied into the staging memory by
/// several threads: one thread's memcpy into it is slower than the bus.
pub(crate) fn write<T: Pod>(gpu: &Gpu, dst: &wgpu::Buffer, data: &[T]) {
    let bytes: &[u8] = bytemuck::cast_slice(data);
    let Some(size) = wgpu::BufferSize::new(bytes.len() as u64) else {
        return;
    };
    let Some(mut view) = gpu.queue.write_buffer_with(dst, 0, size) else {
        // wgpu reports the reason through the device's error scope.
        return;
    };
    const PIECE: usize = 4 << 20;
    let target = view.slice(..);
    if bytes.len() < 2 * PIECE {
        let mut target = target;
        target.copy_from_slice(bytes);
        return;
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let per = bytes.len().div_ceil(threads).next_multiple_of(64);
    std::thread::scope(|s| {
        let (mut rest, mut src) = (target, bytes);
        while !src.is_empty() {
            let n = per.min(src.len());
            let (head, tail) = rest.split_at(n);
            let (from, more) = src.split_at(n);
            let piece = Piece(head);
            s.spawn(move || piece.fill(from));
            (rest, src) = (tail, more);
        }
    });
}

/// A disjoint piece of a staging view, to be filled by another thread.
struct Piece<'a>(wgpu::WriteOnly<'a, [u8]>);

impl Piece<'_> {
    fn fill(mut self, from: &[u8]) {
        self.0.copy_from_slice(from);
    }
}

// SAFETY: a `WriteOnly<[u8]>` is a pointer and a length into mapped memory
// that no other piece overlaps (`split_at`); wgpu implements `Send` for
// `WriteOnly<T>` of sized `T` only because of how the bound is written.
// Every piece is written and dropped inside the scope, before the view it
// came from is dropped (which hands the memory back to wgpu).
unsafe impl Send for Piece<'_> {}

fn uniform<T: Pod>(gpu: &Gpu, params: &T) -> wgpu::Buffer {
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        })
}

/// Timestamp queries around each dispatch of one pass, when the adapter
/// has them (`Features::TIMESTAMP_QUERY`).
pub(crate) struct Profile {
    set: wgpu::QuerySet,
    /// The kernel of each pair of queries written.
    kernels: Vec<&'static str>,
}

/// Queries of one profiled pass, at most (wgpu's limit per query set).
const PROFILE_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

impl Kernels {
    /// Starts recording a timestamp pair around every dispatch; false when
    /// the device was opened without timestamp queries.
    pub(crate) fn start_profile(&self, gpu: &Gpu) -> bool {
        if !gpu
            .device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
        {
            return false;
        }
        let set = gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("kernel timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: PROFILE_QUERIES,
        });
        *self.profile.lock().expect("profile lock") = Some(Profile {
            set,
            kernels: Vec::new(),
        });
        true
    }

    /// Ends the recording: resolves the queries into `encoder` and returns
    /// a buffer to read after submitting it, with the kernel of each pair.
    pub(crate) fn finish_profile(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
    ) -> Option<(wgpu::Buffer, Vec<&'static str>)> {
        let profile = self.profile.lock().expect("profile lock").take()?;
        let queries = 2 * profile.kernels.len() as u32;
        if queries == 0 {
            return None;
        }
        let bytes = queries as u64 * 8;
        let resolved = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("resolved timestamps"),
            size: bytes.next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT),
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        encoder.resolve_query_set(&profile.set, 0..queries, &resolved, 0);
        let readable = staging(gpu, bytes);
        encoder.copy_buffer_to_buffer(&resolved, 0, &readable, 0, bytes);
        Some((readable, profile.kernels))
    }

    fn dispatch(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        kernel: (&'static str, &wgpu::ComputePipeline),
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let (name, pipeline) = kernel;
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
        let mut profile = self.profile.lock().expect("profile lock");
        let timestamp_writes = profile.as_mut().and_then(|p| {
            let at = 2 * p.kernels.len() as u32;
            (at + 2 <= PROFILE_QUERIES).then(|| {
                p.kernels.push(name);
                wgpu::ComputePassTimestampWrites {
                    query_set: &p.set,
                    beginning_of_pass_write_index: Some(at),
                    end_of_pass_write_index: Some(at + 1),
                }
            })
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(name),
            timestamp_writes,
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }
}

/// The buffers one top-K round binds, in binding order after the params.
pub(crate) struct RoundBuffers<'a> {
    pub user_vecs: &'a wgpu::Buffer,
    pub emb: &'a wgpu::Buffer,
    pub item_ids: &'a wgpu::Buffer,
    pub seen_offsets: &'a wgpu::Buffer,
    pub seen_rows: &'a wgpu::Buffer,
    pub state: &'a wgpu::Buffer,
    pub counts: &'a wgpu::Buffer,
    pub cands: &'a wgpu::Buffer,
}

impl Kernels {
    /// `y = act(x W^T + b)` for `p.rows` rows: the tiled kernel, or the
    /// narrow one when the layer has few outputs.
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
        if (p.out_dim as usize) < NARROW_BELOW {
            let groups = (p.rows.div_ceil(NARROW_ROWS), 1);
            let kernel = ("dense_narrow", &self.dense_narrow);
            self.dispatch(gpu, encoder, kernel, &[&u, x, w, b, y], groups);
        } else {
            let groups = (p.out_dim.div_ceil(TILE), p.rows.div_ceil(TILE));
            let kernel = ("dense", &self.dense);
            self.dispatch(gpu, encoder, kernel, &[&u, x, w, b, y], groups);
        }
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
        let kernel = ("activation", &self.activation);
        self.dispatch(gpu, encoder, kernel, &[&u, y], groups);
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
        self.dispatch(
            gpu,
            encoder,
            ("pool", &self.pool),
            &[&u, emb, offsets, rows, features, out],
            groups,
        );
    }

    /// One round of top-K: the filtering product, then the per-user merge.
    pub(crate) fn encode_round(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        p: RoundParams,
        b: &RoundBuffers,
    ) {
        let u = uniform(gpu, &p);
        let all = [
            &u,
            b.user_vecs,
            b.emb,
            b.item_ids,
            b.seen_offsets,
            b.seen_rows,
            b.state,
            b.counts,
            b.cands,
        ];
        let groups = (
            (p.item_end - p.item_start).div_ceil(TILE),
            p.users.div_ceil(TILE),
        );
        let filter = ("score_filter", &self.score_filter);
        self.dispatch(gpu, encoder, filter, &all, groups);
        self.dispatch(gpu, encoder, ("topk", &self.topk), &all, (p.users, 1));
    }
}

/// Maps `staging` (filled by the copy in submission `after`) and returns
/// its first `bytes` bytes. Waits for that submission only, so later ones
/// keep the device busy meanwhile.
pub(crate) fn read_mapped(
    gpu: &Gpu,
    staging: &wgpu::Buffer,
    bytes: u64,
    after: wgpu::SubmissionIndex,
) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    let read_back_error = |message: String| Error::ReadBack {
        adapter: gpu.info.name.clone(),
        message,
    };
    gpu.device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(after),
            timeout: None,
        })
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

/// A buffer the host can map to read `bytes` bytes copied from the device.
pub(crate) fn staging(gpu: &Gpu, bytes: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read back"),
        size: bytes.max(4).next_multiple_of(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}
