//! The WGSL kernels against a plain-loop reference, on whatever wgpu adapter
//! the machine has (lavapipe on a machine without a GPU). Sizes are small:
//! lavapipe runs ~100x slower than native code.
//!
//! No adapter at all is a failure, not a skip: the GPU path would go untested.

use std::collections::HashSet;
use std::sync::OnceLock;

use herd::config::Device;
use herd::gpu::{self, Gpu, GpuModel, KernelConfig, TileLimits};
use herd::model::{Dense, EntityIds, Mlp, Model, OutputActivation, Predictions, Rows, TwoTower};

/// Scores agree within this, relative to the score when it is above 1.
const TOL: f32 = 1e-4;

fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let found = gpu::choose(Device::Gpu)
            .ok()
            .flatten()
            .or_else(|| gpu::choose(Device::WgpuCpu).ok().flatten());
        match found {
            Some(g) => {
                eprintln!(
                    "gpu tests run on '{}' ({:?}, {:?}, driver '{}'): storage binding {} B, \
                     workgroup storage {} B, {} workgroups per dimension",
                    g.info.name,
                    g.info.device_type,
                    g.info.backend,
                    g.info.driver,
                    g.limits.max_storage_buffer_binding_size,
                    g.limits.max_compute_workgroup_storage_size,
                    g.limits.max_compute_workgroups_per_dimension
                );
                g
            }
            None => panic!(
                "no wgpu adapter found, so the GPU kernels cannot be tested; install a \
                 software Vulkan adapter with `apt-get install -y mesa-vulkan-drivers libvulkan1`"
            ),
        }
    })
}

/// Whether the machine has a real (non-CPU) GPU adapter, asked of wgpu directly.
fn has_real_gpu() -> bool {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .any(|a| {
            matches!(
                a.get_info().device_type,
                wgpu::DeviceType::DiscreteGpu
                    | wgpu::DeviceType::IntegratedGpu
                    | wgpu::DeviceType::VirtualGpu
            )
        })
}

/// A small deterministic generator (xorshift), so every run sees the same data.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.below(1 << 24) as f32 / (1 << 23) as f32) - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

fn dense(g: &mut Gen, name: &str, in_dim: usize, out_dim: usize) -> Dense {
    Dense {
        name: name.to_string(),
        in_dim,
        out_dim,
        weight: g.vec(in_dim * out_dim),
        bias: g.vec(out_dim),
        packed: Default::default(),
    }
}

fn feature_rows(g: &mut Gen, n: usize, f: usize) -> Rows {
    Rows {
        ids: EntityIds::Int((0..n as u64).collect()),
        num_features: f,
        features: g.vec(n * f),
        history_offsets: Vec::new(),
        history_items: Vec::new(),
    }
}

fn history_rows(g: &mut Gen, histories: Vec<Vec<u32>>, f: usize) -> Rows {
    let mut offsets = vec![0u32];
    let mut items = Vec::new();
    for h in &histories {
        items.extend_from_slice(h);
        offsets.push(items.len() as u32);
    }
    Rows {
        ids: EntityIds::Int((0..histories.len() as u64).collect()),
        num_features: f,
        features: g.vec(histories.len() * f),
        history_offsets: offsets,
        history_items: items,
    }
}

// ---- the plain-loop reference (DESIGN's fine print) ----

fn ref_dense(x: &[f32], l: &Dense, relu: bool) -> Vec<f32> {
    let rows = x.len() / l.in_dim;
    let mut y = vec![0.0f32; rows * l.out_dim];
    for r in 0..rows {
        for o in 0..l.out_dim {
            let mut acc = l.bias[o];
            for i in 0..l.in_dim {
                acc += x[r * l.in_dim + i] * l.weight[o * l.in_dim + i];
            }
            y[r * l.out_dim + o] = if relu { acc.max(0.0) } else { acc };
        }
    }
    y
}

fn ref_layers(mut x: Vec<f32>, layers: &[Dense]) -> Vec<f32> {
    for (i, l) in layers.iter().enumerate() {
        x = ref_dense(&x, l, i + 1 < layers.len());
    }
    x
}

fn ref_mlp(m: &Mlp, rows: &Rows) -> Vec<f32> {
    let mut y = ref_layers(rows.features.clone(), &m.layers);
    let width = m.layers.last().unwrap().out_dim;
    for row in y.chunks_mut(width) {
        match m.output {
            OutputActivation::None => {}
            OutputActivation::Sigmoid => {
                for v in row.iter_mut() {
                    *v = 1.0 / (1.0 + (-*v).exp());
                }
            }
            OutputActivation::Softmax => {
                let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
                for v in row.iter_mut() {
                    *v = (*v - max).exp() / sum;
                }
            }
        }
    }
    y
}

fn row_of(t: &TwoTower, id: u32) -> Option<usize> {
    t.item_ids.iter().position(|&x| x == id)
}

/// Each user's vector (after the tower) and every eligible (item id, score).
fn ref_user_scores(t: &TwoTower, rows: &Rows) -> Vec<Vec<(u32, f32)>> {
    let mut out = Vec::new();
    for u in 0..rows.len() {
        let history = rows.history_of(u);
        let capped = &history[history.len().saturating_sub(t.max_history)..];
        let mut mean = vec![0.0f32; t.dim];
        let mut count = 0;
        for &id in capped {
            if let Some(r) = row_of(t, id) {
                let row = &t.item_embeddings[r * t.dim..(r + 1) * t.dim];
                for (m, e) in mean.iter_mut().zip(row) {
                    *m += e;
                }
                count += 1;
            }
        }
        if count > 0 {
            for v in mean.iter_mut() {
                *v /= count as f32;
            }
        }
        let user = if t.tower.is_empty() {
            mean
        } else {
            mean.extend_from_slice(rows.features_of(u));
            ref_layers(mean, &t.tower)
        };
        let seen: HashSet<u32> = history.iter().copied().collect();
        let mut scores = Vec::new();
        for (r, &id) in t.item_ids.iter().enumerate() {
            if t.exclude_seen && seen.contains(&id) {
                continue;
            }
            let s: f32 = (0..t.dim)
                .map(|d| user[d] * t.item_embeddings[r * t.dim + d])
                .sum();
            scores.push((id, s));
        }
        out.push(scores);
    }
    out
}

fn ref_top_k(all: &[(u32, f32)], k: usize) -> Vec<(u32, f32)> {
    let mut v = all.to_vec();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= TOL * b.abs().max(1.0)
}

fn assert_scores_match(got: &Predictions, want: &[f32], width: usize) {
    let Predictions::Scores { width: w, values } = got else {
        panic!("expected Scores, got {got:?}");
    };
    assert_eq!(*w, width, "score width");
    assert_eq!(values.len(), want.len(), "number of scores");
    for (i, (g, r)) in values.iter().zip(want).enumerate() {
        assert!(
            close(*g, *r),
            "score {i} (row {}): gpu {g}, reference {r}",
            i / width
        );
    }
}

/// Same length and scores as the reference top-K; an item may differ only
/// where its own reference score ties (within TOL) the reference's item there.
fn assert_top_k_match(got: &Predictions, t: &TwoTower, rows: &Rows) {
    let Predictions::TopK {
        offsets,
        items,
        scores,
    } = got
    else {
        panic!("expected TopK, got {got:?}");
    };
    assert_eq!(offsets.len(), rows.len() + 1, "offsets");
    let all = ref_user_scores(t, rows);
    for u in 0..rows.len() {
        let (a, b) = (offsets[u] as usize, offsets[u + 1] as usize);
        let want = ref_top_k(&all[u], t.top_k);
        let got_items = &items[a..b];
        let got_scores = &scores[a..b];
        assert_eq!(got_items.len(), want.len(), "user {u}: number of results");
        for i in 1..got_items.len() {
            let (s0, s1) = (got_scores[i - 1], got_scores[i]);
            assert!(
                s0 > s1 || (s0 == s1 && got_items[i - 1] < got_items[i]),
                "user {u}: rank {} ({}, {s0}) before rank {i} ({}, {s1}) breaks best-first, \
                 ties by smaller id",
                i - 1,
                got_items[i - 1],
                got_items[i]
            );
        }
        let distinct: HashSet<_> = got_items.iter().collect();
        assert_eq!(distinct.len(), got_items.len(), "user {u}: repeated item");
        for (i, (&(wid, ws), (&gid, &gs))) in want
            .iter()
            .zip(got_items.iter().zip(got_scores))
            .enumerate()
        {
            assert!(
                close(gs, ws),
                "user {u} rank {i}: gpu score {gs}, reference {ws}"
            );
            if gid != wid {
                let own = all[u].iter().find(|(id, _)| *id == gid);
                let own = own.unwrap_or_else(|| panic!("user {u}: item {gid} is not eligible"));
                assert!(
                    close(own.1, ws),
                    "user {u} rank {i}: gpu item {gid} (score {}), reference item {wid} ({ws})",
                    own.1
                );
            }
        }
    }
}

fn small_limits(max_binding_bytes: u64, max_workgroups_per_dim: u32) -> TileLimits {
    TileLimits {
        max_binding_bytes,
        max_workgroups_per_dim,
    }
}

// ---- device choice ----

#[test]
fn auto_never_picks_a_cpu_adapter() {
    let chosen = gpu::choose(Device::Auto).expect("auto must not fail");
    match chosen {
        None => assert!(!has_real_gpu(), "a real GPU is present but auto chose none"),
        Some(g) => assert_ne!(g.info.device_type, wgpu::DeviceType::Cpu),
    }
}

#[test]
fn gpu_device_without_gpu_errors_naming_what_was_found() {
    match gpu::choose(Device::Gpu) {
        Ok(Some(g)) => assert_ne!(g.info.device_type, wgpu::DeviceType::Cpu),
        Ok(None) => panic!("device = gpu must give a GPU or an error"),
        Err(e) => {
            assert!(!has_real_gpu());
            let msg = e.to_string();
            assert!(msg.contains("no GPU"), "{msg}");
            let cpu = gpu();
            assert!(
                msg.contains(&cpu.info.name),
                "message should list '{}': {msg}",
                cpu.info.name
            );
        }
    }
}

#[test]
fn cpu_device_opens_nothing() {
    assert!(gpu::choose(Device::Cpu).unwrap().is_none());
}

#[test]
fn gpu_and_model_can_move_to_a_worker_thread() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Gpu>();
    send_sync::<GpuModel>();
    let mut g = Gen(8);
    let m = Model::Mlp(Mlp {
        layers: vec![dense(&mut g, "0", 3, 2)],
        output: OutputActivation::Sigmoid,
    });
    let gm = GpuModel::new(gpu(), &m).unwrap();
    let rows = feature_rows(&mut g, 5, 3);
    let on_thread = std::thread::scope(|s| s.spawn(|| gm.predict(gpu(), &rows)).join())
        .unwrap()
        .unwrap();
    assert_eq!(on_thread, gm.predict(gpu(), &rows).unwrap());
}

// ---- mlp: dense, sigmoid, softmax ----

/// The adapter's own kernel shapes, or the smallest ones.
fn small_config(topk_buf: u32, round_slack: u32) -> KernelConfig {
    KernelConfig {
        dense_bk: 8,
        prefetch: false,
        topk_buf,
        round_slack,
        first_round_kp: 1,
        loop_bounding: false,
    }
}

fn model_on(model: &Model, limits: Option<TileLimits>, config: Option<KernelConfig>) -> GpuModel {
    let g = gpu();
    let limits = limits.unwrap_or(TileLimits::of(&g.limits));
    let config = config.unwrap_or(KernelConfig::for_limits(&g.limits));
    GpuModel::with_config(g, model, limits, config).unwrap()
}

fn run_mlp(m: Mlp, rows: &Rows, limits: Option<TileLimits>) {
    run_mlp_with(m, rows, limits, None)
}

fn run_mlp_with(m: Mlp, rows: &Rows, limits: Option<TileLimits>, config: Option<KernelConfig>) {
    let model = Model::Mlp(m.clone());
    let g = gpu();
    let gm = model_on(&model, limits, config);
    let got = gm.predict(g, rows).unwrap();
    let width = m.layers.last().unwrap().out_dim;
    assert_scores_match(&got, &ref_mlp(&m, rows), width);
}

#[test]
fn matmul_rows_not_multiple_of_workgroup() {
    let mut g = Gen(1);
    let m = Mlp {
        // Tiled workgroups cover 128 x 128 outputs and stage 8 to 32 inputs
        // at a time; layers of fewer than 16 outputs take the narrow kernel
        // (32 rows a workgroup): none of these is a multiple.
        layers: vec![dense(&mut g, "0", 37, 70), dense(&mut g, "2", 70, 7)],
        output: OutputActivation::None,
    };
    let rows = feature_rows(&mut g, 130, 37);
    run_mlp(m, &rows, None);
}

#[test]
fn matmul_over_several_tiles_in_every_direction_with_every_staging() {
    let mut g = Gen(21);
    let m = Mlp {
        layers: vec![dense(&mut g, "0", 70, 260), dense(&mut g, "2", 260, 130)],
        output: OutputActivation::None,
    };
    let rows = feature_rows(&mut g, 300, 70);
    let adapter = KernelConfig::for_limits(&gpu().limits);
    for (bk, prefetch) in [(8, false), (8, true), (adapter.dense_bk, true)] {
        let config = KernelConfig {
            dense_bk: bk,
            prefetch,
            ..adapter
        };
        run_mlp_with(m.clone(), &rows, None, Some(config));
    }
}

#[test]
fn mlp_sigmoid_single_row() {
    let mut g = Gen(2);
    let m = Mlp {
        layers: vec![dense(&mut g, "0", 5, 17), dense(&mut g, "2", 17, 1)],
        output: OutputActivation::Sigmoid,
    };
    run_mlp(m, &feature_rows(&mut g, 1, 5), None);
}

#[test]
fn softmax_rows_sum_to_one_and_match() {
    let mut g = Gen(3);
    let mut last = dense(&mut g, "fc2", 9, 6);
    // Large logits: an unstable softmax would overflow.
    last.bias.iter_mut().for_each(|b| *b *= 80.0);
    let m = Mlp {
        layers: vec![dense(&mut g, "fc1", 4, 9), last],
        output: OutputActivation::Softmax,
    };
    let rows = feature_rows(&mut g, 19, 4);
    run_mlp(m.clone(), &rows, None);
    let got = GpuModel::new(gpu(), &Model::Mlp(m))
        .unwrap()
        .predict(gpu(), &rows)
        .unwrap();
    let Predictions::Scores { values, .. } = got else {
        unreachable!()
    };
    for row in values.chunks(6) {
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-5, "softmax row sums to {s}");
    }
}

#[test]
fn mlp_batches_cross_the_binding_limit_when_forced_small() {
    let mut g = Gen(4);
    let m = Mlp {
        layers: vec![dense(&mut g, "0", 6, 5), dense(&mut g, "2", 5, 3)],
        output: OutputActivation::Sigmoid,
    };
    // 6 floats per row at most, 128 bytes: 5 rows per batch, 21 batches.
    let rows = feature_rows(&mut g, 101, 6);
    run_mlp(m, &rows, Some(small_limits(128, 65535)));
}

#[test]
fn mlp_empty_rows_give_no_scores() {
    let mut g = Gen(5);
    let m = Mlp {
        layers: vec![dense(&mut g, "0", 3, 2)],
        output: OutputActivation::None,
    };
    let got = GpuModel::new(gpu(), &Model::Mlp(m))
        .unwrap()
        .predict(gpu(), &feature_rows(&mut g, 0, 3))
        .unwrap();
    assert_eq!(
        got,
        Predictions::Scores {
            width: 2,
            values: vec![]
        }
    );
}

#[test]
fn mlp_wrong_feature_count_is_an_error_naming_both_counts() {
    let mut g = Gen(6);
    let m = Mlp {
        layers: vec![dense(&mut g, "0", 3, 2)],
        output: OutputActivation::None,
    };
    let gm = GpuModel::new(gpu(), &Model::Mlp(m)).unwrap();
    let err = gm.predict(gpu(), &feature_rows(&mut g, 2, 4)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains('4') && msg.contains('3'), "{msg}");
}

#[test]
fn weight_over_the_binding_limit_is_an_error_naming_the_tensor() {
    let mut g = Gen(7);
    let m = Mlp {
        layers: vec![dense(&mut g, "fc1", 8, 8)],
        output: OutputActivation::None,
    };
    let err = GpuModel::with_limits(gpu(), &Model::Mlp(m), small_limits(64, 65535)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("fc1.weight") && msg.contains("256"), "{msg}");
}

// ---- two_tower: pooling, tower, scoring with top-K ----

struct TwoTowerCase {
    items: usize,
    dim: usize,
    features: usize,
    tower: bool,
    top_k: usize,
    max_history: usize,
    exclude_seen: bool,
    /// Embedding rows repeat every this many items (exact score ties).
    repeat_every: Option<usize>,
}

fn two_tower(g: &mut Gen, c: &TwoTowerCase) -> TwoTower {
    let mut emb = g.vec(c.items * c.dim);
    if let Some(p) = c.repeat_every {
        for j in p..c.items {
            for d in 0..c.dim {
                emb[j * c.dim + d] = emb[(j % p) * c.dim + d];
            }
        }
    }
    // Ids out of row order, so the tie rule cannot lean on row order.
    let item_ids: Vec<u32> = (0..c.items as u32)
        .map(|r| (r * 7 + 3) % 1000 + 1000 * (r % 3))
        .collect();
    let tower = if c.tower {
        vec![
            dense(g, "user_tower.0", c.dim + c.features, 12),
            dense(g, "user_tower.2", 12, c.dim),
        ]
    } else {
        Vec::new()
    };
    TwoTower {
        dim: c.dim,
        item_embeddings: emb,
        item_ids,
        tower,
        num_features: if c.tower { c.features } else { 0 },
        top_k: c.top_k,
        max_history: c.max_history,
        exclude_seen: c.exclude_seen,
    }
}

/// Histories of length 0 to `max_len`, with repeats and ids not in the
/// catalogue mixed in.
fn histories(g: &mut Gen, t: &TwoTower, users: usize, max_len: u64) -> Vec<Vec<u32>> {
    (0..users)
        .map(|_| {
            let len = g.below(max_len + 1) as usize;
            (0..len)
                .map(|_| match g.below(10) {
                    0 => 999_999, // not in the catalogue
                    _ => t.item_ids[g.below(t.item_ids.len() as u64) as usize],
                })
                .collect()
        })
        .collect()
}

fn run_two_tower(t: &TwoTower, rows: &Rows, limits: Option<TileLimits>) -> Predictions {
    run_two_tower_with(t, rows, limits, None)
}

fn run_two_tower_with(
    t: &TwoTower,
    rows: &Rows,
    limits: Option<TileLimits>,
    config: Option<KernelConfig>,
) -> Predictions {
    let model = Model::TwoTower(t.clone());
    let g = gpu();
    let gm = model_on(&model, limits, config);
    let got = gm.predict(g, rows).unwrap();
    assert_top_k_match(&got, t, rows);
    got
}

#[test]
fn two_tower_with_tower_features_cap_and_exclude_seen() {
    let mut g = Gen(11);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 50,
            dim: 8,
            features: 3,
            tower: true,
            top_k: 5,
            max_history: 4,
            exclude_seen: true,
            repeat_every: None,
        },
    );
    let h = histories(&mut g, &t, 23, 12);
    let rows = history_rows(&mut g, h, 3);
    run_two_tower(&t, &rows, None);
}

#[test]
fn histories_over_the_cap_pool_only_the_most_recent() {
    let mut g = Gen(12);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 30,
            dim: 4,
            features: 0,
            tower: false,
            top_k: 3,
            max_history: 2,
            exclude_seen: false,
            repeat_every: None,
        },
    );
    // Same last two items, different older ones: the same top-K.
    let last = [t.item_ids[5], t.item_ids[9]];
    let h = vec![
        vec![
            t.item_ids[1],
            t.item_ids[2],
            t.item_ids[3],
            last[0],
            last[1],
        ],
        vec![t.item_ids[20], last[0], last[1]],
        last.to_vec(),
    ];
    let rows = history_rows(&mut g, h, 0);
    let got = run_two_tower(&t, &rows, None);
    let Predictions::TopK { offsets, items, .. } = got else {
        unreachable!()
    };
    let per_user: Vec<&[u32]> = (0..3)
        .map(|u| &items[offsets[u] as usize..offsets[u + 1] as usize])
        .collect();
    assert_eq!(per_user[0], per_user[2]);
    assert_eq!(per_user[1], per_user[2]);
}

#[test]
fn empty_histories_pool_to_zero_and_ties_go_to_the_smaller_id() {
    let mut g = Gen(13);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 40,
            dim: 4,
            features: 0,
            tower: false,
            top_k: 6,
            max_history: 10,
            exclude_seen: true,
            repeat_every: None,
        },
    );
    let rows = history_rows(&mut g, vec![vec![]; 5], 0);
    let got = run_two_tower(&t, &rows, None);
    // Every score is 0: the six smallest ids, in order.
    let mut ids = t.item_ids.clone();
    ids.sort();
    let Predictions::TopK {
        offsets,
        items,
        scores,
    } = got
    else {
        unreachable!()
    };
    for u in 0..5 {
        let (a, b) = (offsets[u] as usize, offsets[u + 1] as usize);
        assert_eq!(&items[a..b], &ids[..6], "user {u}");
        assert!(scores[a..b].iter().all(|s| *s == 0.0));
    }
}

#[test]
fn k_larger_than_the_item_count_gives_every_eligible_item() {
    let mut g = Gen(14);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 6,
            dim: 5,
            features: 2,
            tower: true,
            top_k: 10,
            max_history: 3,
            exclude_seen: true,
            repeat_every: None,
        },
    );
    let h = vec![
        vec![],
        vec![t.item_ids[0]],
        vec![t.item_ids[1], t.item_ids[2], t.item_ids[1]],
    ];
    let rows = history_rows(&mut g, h, 2);
    let got = run_two_tower(&t, &rows, None);
    let Predictions::TopK { offsets, .. } = got else {
        unreachable!()
    };
    assert_eq!(offsets, vec![0, 6, 11, 15]);
}

#[test]
fn a_single_item() {
    let mut g = Gen(15);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 1,
            dim: 3,
            features: 0,
            tower: false,
            top_k: 4,
            max_history: 5,
            exclude_seen: true,
            repeat_every: None,
        },
    );
    let h = vec![vec![], vec![t.item_ids[0]], vec![42]];
    let rows = history_rows(&mut g, h, 0);
    let got = run_two_tower(&t, &rows, None);
    let Predictions::TopK { offsets, .. } = got else {
        unreachable!()
    };
    // The user who saw the only item gets nothing.
    assert_eq!(offsets, vec![0, 1, 1, 2]);
}

#[test]
fn item_tiles_cross_the_binding_limit_when_forced_small() {
    let mut g = Gen(16);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 100,
            dim: 4,
            features: 2,
            tower: true,
            top_k: 9,
            max_history: 6,
            exclude_seen: true,
            repeat_every: Some(7),
        },
    );
    let h = histories(&mut g, &t, 13, 15);
    let rows = history_rows(&mut g, h, 2);
    // 512 bytes: 32 items per tile (4 tiles), 2 users per batch (16 kept
    // entries of 12 bytes each), histories split across batches by their
    // own size; 16 candidates a round, so rounds are small too.
    let got = run_two_tower_with(
        &t,
        &rows,
        Some(small_limits(512, 3)),
        Some(small_config(32, 4)),
    );
    let unforced = run_two_tower(&t, &rows, None);
    let (Predictions::TopK { items: a, .. }, Predictions::TopK { items: b, .. }) =
        (&got, &unforced)
    else {
        unreachable!()
    };
    assert_eq!(a, b, "tiling changed the top-K");
}

#[test]
fn exclude_seen_removes_the_whole_history_not_only_the_capped_part() {
    let mut g = Gen(17);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 20,
            dim: 4,
            features: 0,
            tower: false,
            top_k: 20,
            max_history: 1,
            exclude_seen: true,
            repeat_every: None,
        },
    );
    let old: Vec<u32> = t.item_ids[..5].to_vec();
    let mut h = old.clone();
    h.push(t.item_ids[10]);
    let rows = history_rows(&mut g, vec![h], 0);
    let got = run_two_tower(&t, &rows, None);
    let Predictions::TopK { items, .. } = got else {
        unreachable!()
    };
    assert_eq!(items.len(), 14);
    for id in old.iter().chain([&t.item_ids[10]]) {
        assert!(!items.contains(id), "seen item {id} was returned");
    }
}

#[test]
fn large_k_runs_many_candidate_rounds() {
    let mut g = Gen(18);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 700,
            dim: 6,
            features: 0,
            tower: false,
            top_k: 300,
            max_history: 8,
            exclude_seen: false,
            repeat_every: Some(250),
        },
    );
    let h = histories(&mut g, &t, 3, 8);
    let rows = history_rows(&mut g, h, 0);
    run_two_tower(&t, &rows, None);
}

#[test]
fn malformed_history_offsets_are_an_error_not_a_panic() {
    let mut g = Gen(20);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 4,
            dim: 2,
            features: 0,
            tower: false,
            top_k: 2,
            max_history: 8,
            exclude_seen: false,
            repeat_every: None,
        },
    );
    let mut rows = history_rows(&mut g, vec![vec![t.item_ids[0]], vec![]], 0);
    rows.history_offsets = vec![0, 5, 1];
    let gm = GpuModel::new(gpu(), &Model::TwoTower(t)).unwrap();
    let err = gm.predict(gpu(), &rows).unwrap_err();
    assert!(err.to_string().contains("history offsets"), "{err}");
}

#[test]
fn top_k_over_the_limit_is_refused_at_load() {
    let mut g = Gen(19);
    let limit = KernelConfig::for_limits(&gpu().limits).max_top_k();
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 4,
            dim: 2,
            features: 0,
            tower: false,
            top_k: limit + 1,
            max_history: 8,
            exclude_seen: false,
            repeat_every: None,
        },
    );
    let err = GpuModel::new(gpu(), &Model::TwoTower(t)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&limit.to_string()), "{msg}");
    assert!(msg.contains(&gpu().info.name), "{msg}");
}

#[test]
fn top_k_at_the_adapter_limit_is_selected_exactly() {
    let mut g = Gen(22);
    let limit = KernelConfig::for_limits(&gpu().limits).max_top_k();
    assert!(limit >= 512, "the top-K limit fell to {limit}");
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: limit + limit / 2,
            dim: 4,
            features: 0,
            tower: false,
            top_k: limit,
            max_history: 8,
            exclude_seen: true,
            repeat_every: Some(97),
        },
    );
    let h = histories(&mut g, &t, 3, 40);
    let rows = history_rows(&mut g, h, 0);
    run_two_tower(&t, &rows, None);
}

#[test]
fn overflowing_candidate_lists_fall_back_to_scanning_the_round() {
    // A workgroup buffer of 2 x kp leaves room for kp candidates a round,
    // and rounds sized for one expected candidate per slot overflow often.
    let mut g = Gen(23);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 900,
            dim: 5,
            features: 2,
            tower: true,
            top_k: 6,
            max_history: 6,
            exclude_seen: true,
            repeat_every: Some(40),
        },
    );
    let h = histories(&mut g, &t, 37, 30);
    let rows = history_rows(&mut g, h, 2);
    for slack in [1, 2, 4] {
        run_two_tower_with(&t, &rows, None, Some(small_config(16, slack)));
    }
}

#[test]
fn items_in_worst_first_order_still_give_the_exact_top_k() {
    // Every item beats the one before: each round's items all pass the bar,
    // so every list overflows and every round is rescanned.
    let mut g = Gen(24);
    let items = 600;
    let t = TwoTower {
        dim: 1,
        item_embeddings: (0..items).map(|j| j as f32 / items as f32).collect(),
        item_ids: (0..items as u32).collect(),
        tower: Vec::new(),
        num_features: 0,
        top_k: 10,
        max_history: 4,
        exclude_seen: false,
    };
    let h: Vec<Vec<u32>> = (0..5).map(|u| vec![u * 7, u * 7 + 1]).collect();
    let rows = history_rows(&mut g, h, 0);
    run_two_tower_with(&t, &rows, None, Some(small_config(32, 4)));
}

#[test]
fn kernel_timing_runs_every_kernel_without_errors() {
    let mut g = Gen(25);
    let m = Model::Mlp(Mlp {
        layers: vec![dense(&mut g, "0", 6, 20), dense(&mut g, "2", 20, 1)],
        output: OutputActivation::Sigmoid,
    });
    let rows = feature_rows(&mut g, 50, 6);
    let timing = GpuModel::new(gpu(), &m)
        .unwrap()
        .time_kernels(gpu(), &rows, 3)
        .unwrap();
    assert_eq!(timing.passes, 3);
    let t = two_tower(
        &mut g,
        &TwoTowerCase {
            items: 300,
            dim: 4,
            features: 1,
            tower: true,
            top_k: 5,
            max_history: 4,
            exclude_seen: true,
            repeat_every: None,
        },
    );
    let h = histories(&mut g, &t, 9, 6);
    let rows = history_rows(&mut g, h, 1);
    let timing = GpuModel::new(gpu(), &Model::TwoTower(t))
        .unwrap()
        .time_kernels(gpu(), &rows, 2)
        .unwrap();
    assert_eq!(timing.passes, 2);
}

// ---- any shape, any limits: the GPU agrees with the reference ----

mod any_shape {
    use super::*;
    use proptest::prelude::*;

    /// Bytes the smallest tiles need for this model: one weight tensor, one
    /// item row, one user's activations and candidates, one user's history.
    fn least_binding(t: &TwoTower, rows: &Rows, config: KernelConfig) -> u64 {
        let kp = t.top_k.next_power_of_two();
        let candidates = (config.topk_buf as usize - kp) * 8;
        let stride = t.dim
            + if t.tower.is_empty() {
                0
            } else {
                t.num_features
            };
        let widest = t
            .tower
            .iter()
            .map(|l| l.in_dim.max(l.out_dim))
            .max()
            .unwrap_or(0)
            .max(stride);
        let weights = t.tower.iter().map(|l| l.weight.len()).max().unwrap_or(0);
        let history = (0..rows.len())
            .map(|u| rows.history_of(u).len() + 1)
            .max()
            .unwrap_or(1);
        [
            weights * 4,
            t.dim * 4,
            widest * 4,
            kp * 12,
            candidates,
            history * 4,
        ]
        .into_iter()
        .max()
        .unwrap() as u64
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn two_tower_matches_reference(
            seed in 1u64..u64::MAX,
            items in 1usize..60,
            dim in 1usize..9,
            features in 0usize..4,
            tower in any::<bool>(),
            top_k in 1usize..20,
            max_history in 0usize..8,
            exclude_seen in any::<bool>(),
            users in 0usize..16,
            extra in 0u64..600,
            workgroups in 1u32..5,
            small_buffer in any::<bool>(),
            slack in 1u32..6,
        ) {
            let mut g = Gen(seed);
            let case = TwoTowerCase {
                items, dim, features, tower, top_k, max_history, exclude_seen,
                repeat_every: Some(1 + (seed % 5) as usize),
            };
            let t = two_tower(&mut g, &case);
            let h = histories(&mut g, &t, users, 12);
            let rows = history_rows(&mut g, h, t.num_features);
            // A small top-K buffer makes candidate lists overflow often.
            let kp = t.top_k.next_power_of_two() as u32;
            let config = if small_buffer {
                small_config((2 * kp).max(16), slack)
            } else {
                KernelConfig::for_limits(&gpu().limits)
            };
            let limits = small_limits(least_binding(&t, &rows, config) + extra, workgroups);
            run_two_tower_with(&t, &rows, Some(limits), Some(config));
        }

        #[test]
        fn mlp_matches_reference(
            seed in 1u64..u64::MAX,
            dims in proptest::collection::vec(1usize..24, 2..5),
            output in prop_oneof![
                Just(OutputActivation::None),
                Just(OutputActivation::Sigmoid),
                Just(OutputActivation::Softmax),
            ],
            rows in 0usize..40,
            extra in 0u64..400,
            workgroups in 2u32..5,
            small_tiles in any::<bool>(),
        ) {
            let mut g = Gen(seed);
            let layers: Vec<Dense> = dims
                .windows(2)
                .enumerate()
                .map(|(i, w)| dense(&mut g, &format!("{}", 2 * i), w[0], w[1]))
                .collect();
            let weights = layers.iter().map(|l| l.weight.len()).max().unwrap() as u64 * 4;
            let widest = *dims.iter().max().unwrap() as u64 * 4;
            let limits = small_limits(weights.max(widest) + extra, workgroups);
            let input = feature_rows(&mut g, rows, dims[0]);
            let config = small_tiles.then(|| small_config(256, 4));
            run_mlp_with(Mlp { layers, output }, &input, Some(limits), config);
        }
    }
}
