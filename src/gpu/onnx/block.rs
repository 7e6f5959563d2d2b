//! A block of rows being encoded: dispatches, the values it holds on the
//! device, fused dense steps, and reading its outputs back.

use std::sync::Arc;

use super::{
    Block, DVal, Data, DenseParams, DenseStep, DeviceEpilogue, Error, Graph, Result, Tensor, Val,
    ValueId, linear_groups, read_mapped, scratch, staging, storage,
};

impl<'a> Block<'a> {
    pub(super) fn graph(&self) -> &'a Graph {
        self.g.model.graph()
    }

    pub(super) fn dispatch(
        &mut self,
        pipe: &wgpu::ComputePipeline,
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
        self.dispatch_entries(pipe, &entries, groups);
    }

    /// A dispatch whose buffers sit at the given binding numbers.
    pub(super) fn dispatch_at(
        &mut self,
        pipe: &wgpu::ComputePipeline,
        buffers: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) {
        dispatch_pass(
            self.gpu,
            &mut self.encoder,
            pipe,
            &bound_at(buffers),
            groups,
        );
    }

    pub(super) fn dispatch_entries(
        &mut self,
        pipe: &wgpu::ComputePipeline,
        entries: &[wgpu::BindGroupEntry],
        groups: (u32, u32),
    ) {
        dispatch_pass(self.gpu, &mut self.encoder, pipe, entries, groups);
    }

    pub(super) fn params(&self, words: &[u32]) -> wgpu::Buffer {
        storage(self.gpu, "params", words)
    }

    /// The concrete shape of per-row value `v` in this block.
    pub(super) fn shape_of(&self, v: ValueId) -> Vec<usize> {
        match self.graph().val(v) {
            Val::Rows { dims, .. } => std::iter::once(self.rows)
                .chain(dims.iter().copied())
                .collect(),
            Val::Const(t) => t.shape.clone(),
            Val::Sym { shape, .. } => shape.clone(),
        }
    }

    /// Input `k` of node `i` as a device value.
    pub(super) fn operand(&self, i: usize, k: usize) -> Option<DVal> {
        let v = self.graph().nodes[i].inputs.get(k).copied().flatten()?;
        match self.graph().val(v) {
            Val::Rows { .. } => self.vals[v].clone(),
            Val::Const(t) => self.g.consts.get(&v).map(|(buf, int)| DVal {
                buf: buf.clone(),
                int: *int,
                shape: t.shape.clone(),
            }),
            Val::Sym { .. } => None,
        }
    }

    /// A buffer holding `x`'s values that this step may overwrite: `x`'s own
    /// when nothing else holds it after this step, else a copy.
    pub(super) fn writable(&mut self, i: usize, frees: &[ValueId]) -> DVal {
        let v = self.graph().nodes[i].inputs[0].expect("input 1 checked at load");
        let x = self.operand(i, 0).expect("a per-row input");
        if frees.contains(&v) {
            self.vals[v] = None;
            if Arc::strong_count(&x.buf) == 1 {
                return x;
            }
        }
        let count: usize = x.shape.iter().product();
        let copy = scratch(self.gpu, "copy", count);
        self.encoder.copy_buffer_to_buffer(
            &x.buf,
            0,
            &copy,
            0,
            (count as u64 * 4).max(4).min(x.buf.size()),
        );
        DVal {
            buf: Arc::new(copy),
            int: x.int,
            shape: x.shape,
        }
    }

    pub(super) fn set(&mut self, v: ValueId, buf: wgpu::Buffer, int: bool) {
        let shape = self.shape_of(v);
        self.vals[v] = Some(DVal {
            buf: Arc::new(buf),
            int,
            shape,
        });
    }

    pub(super) fn dense(&mut self, s: usize, d: &DenseStep, output: ValueId, _frees: &[ValueId]) {
        let g = self.g;
        let dev = &g.dense[&s];
        let x = self.vals[d.input]
            .clone()
            .expect("the dense input is computed");
        let count: usize = x.shape.iter().product();
        let rows = count / d.layer.in_dim;
        let m = d.layer.out_dim;
        let y = scratch(self.gpu, &d.layer.name, rows * m);
        let p = DenseParams {
            rows: rows as u32,
            in_dim: d.layer.in_dim as u32,
            out_dim: m as u32,
            relu: u32::from(dev.relu),
        };
        g.kernels
            .encode_dense(self.gpu, &mut self.encoder, p, &x.buf, &dev.w, &dev.b, &y);
        for e in &dev.epilogue {
            match e {
                DeviceEpilogue::Unary { code, alpha } => {
                    let p = self.params(&[*code, (rows * m) as u32, alpha.to_bits()]);
                    self.dispatch_at(&g.pipes.unary, &[(0, &p), (3, &y)], linear_groups(rows * m));
                }
                DeviceEpilogue::Clip { lo, hi } => {
                    let p = self.params(&[(rows * m) as u32, lo.to_bits(), hi.to_bits()]);
                    self.dispatch_at(
                        &g.pipes.clip_f32,
                        &[(0, &p), (3, &y)],
                        linear_groups(rows * m),
                    );
                }
                DeviceEpilogue::LayerNorm {
                    scale,
                    shift,
                    epsilon,
                } => {
                    let p = self.params(&[rows as u32, m as u32, epsilon.to_bits()]);
                    self.dispatch_at(
                        &self.g.pipes.layer_norm,
                        &[(0, &p), (1, &y), (2, scale), (3, shift)],
                        linear_groups(rows),
                    );
                }
                DeviceEpilogue::Softmax { log } => {
                    let p = self.params(&[rows as u32, m as u32, 1, *log as u32]);
                    self.dispatch_at(&g.pipes.softmax, &[(0, &p), (1, &y)], linear_groups(rows));
                }
            }
        }
        self.set(output, y, false);
    }

    /// Submits the block and reads its outputs (and Gather's flags) back.
    pub(super) fn finish(self) -> Result<Vec<Tensor>> {
        let Block {
            gpu,
            g,
            encoder,
            vals,
            gathers,
            nans,
            first_row,
            ..
        } = self;
        let graph = g.model.graph();
        let mut encoder = encoder;
        let mut copy_out = |buf: &wgpu::Buffer, bytes: u64| {
            let s = staging(gpu, bytes);
            let n = bytes.max(4).next_multiple_of(4).min(buf.size());
            encoder.copy_buffer_to_buffer(buf, 0, &s, 0, n);
            s
        };
        let flags: Vec<(usize, wgpu::Buffer)> =
            gathers.iter().map(|(i, f)| (*i, copy_out(f, 4))).collect();
        let nan_flags: Vec<(usize, wgpu::Buffer, usize)> = nans
            .iter()
            .map(|(i, f, width)| (*i, copy_out(f, 4), *width))
            .collect();
        let outputs: Vec<(&DVal, wgpu::Buffer, u64)> = graph
            .outputs
            .iter()
            .map(|o| {
                let v = vals[o.value].as_ref().expect("outputs are computed");
                let bytes = v.shape.iter().product::<usize>() as u64 * 4;
                (v, copy_out(&v.buf, bytes), bytes)
            })
            .collect();
        let done = gpu.queue.submit([encoder.finish()]);
        for (i, flag) in &flags {
            let bytes = read_mapped(gpu, flag, 4, done.clone())?;
            let at = u32::from_le_bytes(bytes[..4].try_into().unwrap());
            if at != u32::MAX {
                return Err(Error::Onnx(format!(
                    "{}: index entry {at} is out of range for the table it indexes",
                    graph.nodes[*i].label
                )));
            }
        }
        for (i, flag, width) in &nan_flags {
            let bytes = read_mapped(gpu, flag, 4, done.clone())?;
            let at = u32::from_le_bytes(bytes[..4].try_into().unwrap());
            if let Some(e) = super::ml::nan_error(at, *width, first_row) {
                return Err(Error::Onnx(format!("{}: {e}", graph.nodes[*i].label)));
            }
        }
        let mut outs = Vec::with_capacity(outputs.len());
        for (v, s, bytes) in outputs {
            let bytes = read_mapped(gpu, &s, bytes, done.clone())?;
            let data = if v.int {
                Data::I64(
                    bytes
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                )
            } else {
                Data::F32(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                )
            };
            outs.push(Tensor {
                shape: v.shape.clone(),
                data,
            });
        }
        Ok(outs)
    }
}

/// `buffers` bound at the given binding numbers.
pub(super) fn bound_at<'b>(buffers: &[(u32, &'b wgpu::Buffer)]) -> Vec<wgpu::BindGroupEntry<'b>> {
    buffers
        .iter()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: *i,
            resource: b.as_entire_binding(),
        })
        .collect()
}

/// One compute pass of `pipe` over `groups` workgroups, `entries` bound.
pub(super) fn dispatch_pass(
    gpu: &crate::gpu::Gpu,
    encoder: &mut wgpu::CommandEncoder,
    pipe: &wgpu::ComputePipeline,
    entries: &[wgpu::BindGroupEntry],
    groups: (u32, u32),
) {
    let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipe.get_bind_group_layout(0),
        entries,
    });
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: None,
        timestamp_writes: None,
    });
    pass.set_pipeline(pipe);
    pass.set_bind_group(0, &bind, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, 1);
}
