//! Reductions: ReduceMean, ReduceSum and ArgMax.

use super::{
    Block, DVal, Out, ReduceOp, Tensor, axis, linear_groups, padded, reduced_shape,
    row_major_strides, scratch,
};

impl Block<'_> {
    /// ArgMax along one axis.
    pub(super) fn arg_max(&mut self, i: usize, out: Out, a: i64, select_last_index: bool) {
        let pipes = &self.g.pipes;
        let Out { id: out, count, .. } = out;
        let x = self.operand(i, 0).expect("a per-row input");
        let ax = axis(a, x.shape.len());
        let outer: usize = x.shape[..ax].iter().product();
        let inner: usize = x.shape[ax + 1..].iter().product();
        let y = scratch(self.gpu, "argmax", count);
        let p = self.params(&[
            outer as u32,
            x.shape[ax] as u32,
            inner as u32,
            select_last_index as u32,
        ]);
        self.dispatch_at(
            &pipes.argmax,
            &[(0, &p), (4, &x.buf), (5, &y)],
            linear_groups(outer * inner),
        );
        self.set(out, y, true);
    }

    /// ReduceMean or ReduceSum over the listed axes.
    pub(super) fn reduce(
        &mut self,
        i: usize,
        out: Out,
        kind: ReduceOp,
        axes: Option<&[i64]>,
        keep_dims: bool,
        noop_with_empty_axes: bool,
    ) {
        let node = &self.g.model.graph().nodes[i];
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            ..
        } = out;
        let x = self.operand(i, 0).expect("a per-row input");
        let listed: Vec<i64> = match (axes, node.inputs.get(1).copied().flatten()) {
            (Some(a), _) => a.to_vec(),
            (None, Some(v)) => self
                .graph()
                .val(v)
                .as_const()
                .map_or_else(Vec::new, Tensor::to_i64_vec),
            (None, None) => Vec::new(),
        };
        if listed.is_empty() && noop_with_empty_axes {
            self.vals[out] = Some(DVal {
                shape: out_shape,
                ..x
            });
            return;
        }
        let rank = x.shape.len();
        let mut red: Vec<usize> = listed.iter().map(|&a| axis(a, rank)).collect();
        red.sort_unstable();
        let strides = row_major_strides(&x.shape);
        let kept: Vec<usize> = (0..rank).filter(|d| !red.contains(d)).collect();
        let red_dims: Vec<usize> = red.iter().map(|&d| x.shape[d]).collect();
        let red_count: usize = red_dims.iter().product();
        debug_assert_eq!(
            reduced_shape(&x.shape, &red, keep_dims)
                .iter()
                .product::<usize>(),
            count
        );
        let mut words = vec![
            count as u32,
            kept.len() as u32,
            red.len() as u32,
            red_count as u32,
            (kind == ReduceOp::Mean) as u32,
        ];
        words.extend(padded(
            &kept.iter().map(|&d| x.shape[d]).collect::<Vec<_>>(),
        ));
        words.extend(padded(
            &kept.iter().map(|&d| strides[d]).collect::<Vec<_>>(),
        ));
        words.extend(padded(&red_dims));
        words.extend(padded(&red.iter().map(|&d| strides[d]).collect::<Vec<_>>()));
        let p = self.params(&words);
        let y = scratch(self.gpu, "reduce", count);
        if x.int {
            self.dispatch_at(
                &pipes.reduce_i32,
                &[(0, &p), (3, &x.buf), (4, &y)],
                linear_groups(count),
            );
        } else {
            self.dispatch_at(
                &pipes.reduce_f32,
                &[(0, &p), (1, &x.buf), (2, &y)],
                linear_groups(count),
            );
        }
        self.set(out, y, x.int);
    }
}
