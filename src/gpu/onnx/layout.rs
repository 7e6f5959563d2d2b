//! Nodes that move values: Gather, Concat and Transpose.

use super::{Block, DVal, Out, axis, linear_groups, padded, row_major_strides, scratch, storage};

impl Block<'_> {
    /// Gather along one axis; an index out of range sets the flag read back
    /// with the outputs.
    pub(super) fn gather(&mut self, i: usize, out: Out, a: i64) {
        let pipes = &self.g.pipes;
        let Out { id: out, count, .. } = out;
        let (data, idx) = (
            self.operand(i, 0).expect("operand"),
            self.operand(i, 1).expect("operand"),
        );
        let ax = axis(a, data.shape.len());
        let outer: usize = data.shape[..ax].iter().product();
        let inner: usize = data.shape[ax + 1..].iter().product();
        let n_idx: usize = idx.shape.iter().product();
        let p = self.params(&[
            outer as u32,
            data.shape[ax] as u32,
            inner as u32,
            n_idx as u32,
        ]);
        let y = scratch(self.gpu, "gather", count);
        let bad = storage(self.gpu, "gather flag", &[u32::MAX]);
        self.dispatch_at(
            &pipes.gather,
            &[(0, &p), (1, &data.buf), (2, &y), (3, &idx.buf), (4, &bad)],
            linear_groups(count),
        );
        self.gathers.push((i, bad));
        self.set(out, y, data.int);
    }

    /// Concat: each part copied into its place in the output.
    pub(super) fn concat(&mut self, i: usize, out: Out, a: i64) {
        let node = &self.g.model.graph().nodes[i];
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            int: out_int,
        } = out;
        let parts: Vec<DVal> = (0..node.inputs.len())
            .filter_map(|k| self.operand(i, k))
            .collect();
        let ax = axis(a, out_shape.len());
        let out_strides = row_major_strides(&out_shape);
        let y = scratch(self.gpu, "concat", count);
        let mut offset = 0usize;
        for part in &parts {
            let n: usize = part.shape.iter().product();
            let mut words = vec![
                part.shape.len() as u32,
                n as u32,
                0,
                (offset * out_strides[ax]) as u32,
            ];
            words.extend(padded(&part.shape));
            words.extend(padded(&row_major_strides(&part.shape)));
            words.extend(padded(&out_strides));
            let p = self.params(&words);
            if n > 0 {
                self.dispatch_at(
                    &pipes.copy,
                    &[(0, &p), (1, &part.buf), (2, &y)],
                    linear_groups(n),
                );
            }
            offset += part.shape[ax];
        }
        self.set(out, y, out_int);
    }

    /// Transpose by strided copy.
    pub(super) fn transpose(&mut self, i: usize, out: Out, perm: Option<&[i64]>) {
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            ..
        } = out;
        let x = self.operand(i, 0).expect("a per-row input");
        let perm = crate::model::onnx::infer::permutation("", perm, x.shape.len())
            .expect("checked at load");
        let in_strides = row_major_strides(&x.shape);
        let src: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
        let mut words = vec![out_shape.len() as u32, count as u32, 0, 0];
        words.extend(padded(&out_shape));
        words.extend(padded(&src));
        words.extend(padded(&row_major_strides(&out_shape)));
        let p = self.params(&words);
        let y = scratch(self.gpu, "transpose", count);
        self.dispatch_at(
            &pipes.copy,
            &[(0, &p), (1, &x.buf), (2, &y)],
            linear_groups(count),
        );
        self.set(out, y, x.int);
    }
}
