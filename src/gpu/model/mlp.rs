//! The mlp on the device: rows in batches sized to the adapter's binding
//! limit, each batch's layers one submission, the next batch staged while
//! the device runs this one.

use super::kernels::{self, ActivationParams, NARROW_ROWS};
use super::{
    DeviceDense, Error, Gpu, GpuModel, Loaded, Result, TileLimits, check_features, dense_params,
    load_layers,
};
use crate::model::{Mlp, OutputActivation, Predictions, Rows};

/// Rows of an mlp scored per submission (fewer when the adapter's binding
/// limit requires): large enough that the device is never starved, small
/// enough that the next batch's upload overlaps this one's arithmetic.
const MLP_BATCH_ROWS: usize = 1 << 17;

impl GpuModel {
    /// Rows per mlp batch: what one binding holds of the widest activation,
    /// and what one dispatch's workgroups cover.
    fn mlp_batch_rows(&self, layers: &[DeviceDense]) -> Result<usize> {
        let widest = layers
            .iter()
            .map(|l| l.in_dim.max(l.out_dim))
            .max()
            .unwrap_or(1)
            .max(1) as u64;
        let by_binding = self.limits.max_binding_bytes / (widest * 4);
        let by_groups = self.limits.max_workgroups_per_dim as u64 * NARROW_ROWS as u64;
        let batch = by_binding.min(by_groups).min(MLP_BATCH_ROWS as u64) as usize;
        if batch == 0 {
            return Err(self.over_limit(
                format!("one row of the mlp ({widest} floats)"),
                widest * 4,
                self.limits.max_binding_bytes,
                "max_storage_buffer_binding_size",
            ));
        }
        Ok(batch)
    }

    pub(super) fn predict_mlp(
        &self,
        gpu: &Gpu,
        layers: &[DeviceDense],
        output: OutputActivation,
        rows: &Rows,
    ) -> Result<Predictions> {
        let in_dim = layers[0].in_dim;
        let width = layers[layers.len() - 1].out_dim;
        check_features(rows, in_dim, "the mlp's first layer")?;
        let batch = self.mlp_batch_rows(layers)?;
        let mut values = Vec::with_capacity(rows.len() * width);
        if rows.is_empty() {
            return Ok(Predictions::Scores { width, values });
        }
        // Two sets of input and read-back buffers: batch b + 1 is uploaded
        // and run while batch b is read back.
        let sets = if rows.len() > batch { 2 } else { 1 };
        let n0 = batch.min(rows.len());
        let bufs: Vec<MlpBatch> = (0..sets)
            .map(|_| self.mlp_buffers(gpu, layers, n0))
            .collect();
        let stagings: Vec<wgpu::Buffer> = (0..sets)
            .map(|_| kernels::staging(gpu, (n0 * width * 4) as u64))
            .collect();
        let mut pending: Option<(usize, usize, wgpu::SubmissionIndex)> = None;
        let mut start = 0;
        let mut b = 0;
        while start < rows.len() || pending.is_some() {
            let mut submitted = None;
            if start < rows.len() {
                let n = batch.min(rows.len() - start);
                let set = b % sets;
                let x = &rows.features[start * in_dim..(start + n) * in_dim];
                kernels::write(gpu, &bufs[set].input, x);
                let mut encoder = gpu.device.create_command_encoder(&Default::default());
                let out = self.encode_mlp(gpu, &mut encoder, layers, output, &bufs[set], n);
                let bytes = (n * width * 4) as u64;
                encoder.copy_buffer_to_buffer(out, 0, &stagings[set], 0, bytes.max(4));
                submitted = Some((set, n, gpu.queue.submit([encoder.finish()])));
                start += n;
                b += 1;
            }
            if let Some((set, n, index)) = pending.take() {
                let bytes =
                    kernels::read_mapped(gpu, &stagings[set], (n * width * 4) as u64, index)?;
                values.extend(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes));
            }
            pending = submitted;
        }
        Ok(Predictions::Scores { width, values })
    }

    /// Device buffers for a batch of up to `n` rows: the input and one
    /// output per layer.
    fn mlp_buffers(&self, gpu: &Gpu, layers: &[DeviceDense], n: usize) -> MlpBatch {
        MlpBatch {
            n,
            input: kernels::scratch(gpu, "mlp rows", (n * layers[0].in_dim * 4) as u64),
            outputs: layers
                .iter()
                .map(|l| kernels::scratch(gpu, "mlp layer out", (n * l.out_dim * 4) as u64))
                .collect(),
        }
    }

    /// Every batch of `rows` uploaded, each with its own buffers.
    pub(super) fn stage_mlp_batches(
        &self,
        gpu: &Gpu,
        layers: &[DeviceDense],
        rows: &Rows,
    ) -> Result<Vec<MlpBatch>> {
        let in_dim = layers[0].in_dim;
        check_features(rows, in_dim, "the mlp's first layer")?;
        let batch = self.mlp_batch_rows(layers)?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let n = batch.min(rows.len() - start);
            let b = self.mlp_buffers(gpu, layers, n);
            kernels::write(
                gpu,
                &b.input,
                &rows.features[start * in_dim..(start + n) * in_dim],
            );
            out.push(b);
            start += n;
        }
        Ok(out)
    }

    /// Records every layer (and the output activation) of the first `n` rows
    /// of a batch; returns the buffer holding their scores.
    pub(super) fn encode_mlp<'a>(
        &self,
        gpu: &Gpu,
        encoder: &mut wgpu::CommandEncoder,
        layers: &[DeviceDense],
        output: OutputActivation,
        b: &'a MlpBatch,
        n: usize,
    ) -> &'a wgpu::Buffer {
        let mut cur = &b.input;
        for (i, layer) in layers.iter().enumerate() {
            let last = i + 1 == layers.len();
            self.kernels.encode_dense(
                gpu,
                encoder,
                dense_params(n, layer, !last),
                cur,
                &layer.weight,
                &layer.bias,
                &b.outputs[i],
            );
            cur = &b.outputs[i];
        }
        let mode = match output {
            OutputActivation::Sigmoid => Some(0),
            OutputActivation::Softmax => Some(1),
            OutputActivation::None => None,
        };
        if let Some(mode) = mode {
            let p = ActivationParams {
                rows: n as u32,
                width: layers[layers.len() - 1].out_dim as u32,
                mode,
                pad: 0,
            };
            self.kernels.encode_activation(gpu, encoder, p, cur);
        }
        cur
    }
}

/// Device buffers of one mlp batch of up to `n` rows.
pub(super) struct MlpBatch {
    pub(super) n: usize,
    input: wgpu::Buffer,
    outputs: Vec<wgpu::Buffer>,
}

pub(super) fn load_mlp(gpu: &Gpu, m: &Mlp, limits: TileLimits) -> Result<Loaded> {
    if m.layers.is_empty() {
        return Err(Error::Shape("the mlp has no layers".to_string()));
    }
    Ok(Loaded::Mlp {
        layers: load_layers(gpu, &m.layers, limits)?,
        output: m.output,
    })
}
