//! Normalizations: Softmax, LogSoftmax, LayerNormalization and
//! BatchNormalization, each in place on its input's buffer where it may.

use super::{Block, DVal, Out, Prepared, ValueId, axis, linear_groups};

impl Block<'_> {
    /// Softmax or LogSoftmax along one axis, in place.
    pub(super) fn softmax(&mut self, i: usize, frees: &[ValueId], out: Out, a: i64, log: bool) {
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            ..
        } = out;
        let x = self.writable(i, frees);
        let ax = axis(a, x.shape.len());
        let outer: usize = x.shape[..ax].iter().product();
        let inner: usize = x.shape[ax + 1..].iter().product();
        let p = self.params(&[outer as u32, x.shape[ax] as u32, inner as u32, log as u32]);
        self.dispatch_at(
            &pipes.softmax,
            &[(0, &p), (1, &x.buf)],
            linear_groups(outer * inner),
        );
        self.vals[out] = Some(DVal {
            shape: out_shape,
            ..x
        });
    }

    /// LayerNormalization over the dimensions from the axis on, in place.
    pub(super) fn layer_norm(
        &mut self,
        i: usize,
        frees: &[ValueId],
        out: Out,
        a: i64,
        epsilon: f32,
    ) {
        let g = self.g;
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            ..
        } = out;
        let Some(Prepared::LayerNorm { scale, shift }) = g.prepared.get(&i) else {
            unreachable!("prepared at load");
        };
        let x = self.writable(i, frees);
        let ax = axis(a, x.shape.len());
        let norm: usize = x.shape[ax..].iter().product();
        let groups = count / norm.max(1);
        let p = self.params(&[groups as u32, norm as u32, epsilon.to_bits()]);
        self.dispatch_at(
            &pipes.layer_norm,
            &[(0, &p), (1, &x.buf), (2, scale), (3, shift)],
            linear_groups(groups),
        );
        self.vals[out] = Some(DVal {
            shape: out_shape,
            ..x
        });
    }

    /// BatchNormalization as a per-channel scale and shift, in place.
    pub(super) fn batch_norm(&mut self, i: usize, frees: &[ValueId], out: Out) {
        let g = self.g;
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            ..
        } = out;
        let Some(Prepared::BatchNorm { scale, shift }) = g.prepared.get(&i) else {
            unreachable!("prepared at load");
        };
        let x = self.writable(i, frees);
        let inner: usize = x.shape[2..].iter().product();
        let p = self.params(&[count as u32, x.shape[1] as u32, inner as u32]);
        self.dispatch_at(
            &pipes.channel_affine,
            &[(0, &p), (1, &x.buf), (2, scale), (3, shift)],
            linear_groups(count),
        );
        self.vals[out] = Some(DVal {
            shape: out_shape,
            ..x
        });
    }
}
