//! Element-wise nodes: relabels, Cast, binary and unary operators, Clip and
//! ConstantOfShape.

use super::{
    BinaryOp, Block, DVal, Error, Out, Result, Tensor, UnaryOp, ValueId, broadcast_shapes,
    broadcast_strides, linear_groups, narrow_code, padded, scratch, storage, unary_code, words,
};

impl Block<'_> {
    /// Ops that only relabel their input's values: the same buffer, a new shape.
    pub(super) fn pass_on(&mut self, i: usize, out: Out) {
        let Out {
            id: out,
            shape: out_shape,
            ..
        } = out;
        let x = self.operand(i, 0).expect("a per-row input");
        self.vals[out] = Some(DVal {
            buf: x.buf,
            int: x.int,
            shape: out_shape,
        });
    }

    /// Cast between f32 and the device's 32-bit integers (a same-type cast passes
    /// its buffer on).
    pub(super) fn cast(&mut self, i: usize, out: Out, to: i32) {
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            int: out_int,
        } = out;
        let x = self.operand(i, 0).expect("a per-row input");
        if !x.int && !out_int {
            self.vals[out] = Some(DVal {
                buf: x.buf,
                int: false,
                shape: out_shape,
            });
            return;
        }
        let y = scratch(self.gpu, "cast", count);
        let code = narrow_code(to);
        match (x.int, out_int) {
            (false, false) => unreachable!("handled above"),
            (false, true) => {
                let p = self.params(&[count as u32, code]);
                self.dispatch_at(
                    &pipes.cast_f32_i32,
                    &[(0, &p), (1, &x.buf), (6, &y)],
                    linear_groups(count),
                );
            }
            (true, false) => {
                let p = self.params(&[count as u32]);
                self.dispatch_at(
                    &pipes.cast_i32_f32,
                    &[(0, &p), (4, &x.buf), (3, &y)],
                    linear_groups(count),
                );
            }
            (true, true) => {
                let p = self.params(&[count as u32, code]);
                self.dispatch_at(
                    &pipes.cast_i32_i32,
                    &[(0, &p), (4, &x.buf), (6, &y)],
                    linear_groups(count),
                );
            }
        }
        self.set(out, y, out_int);
    }

    /// An element-wise binary operator, both operands broadcast to the output.
    pub(super) fn binary(&mut self, i: usize, out: Out, op: BinaryOp) {
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            count,
            int: out_int,
            ..
        } = out;
        let (a, b) = (
            self.operand(i, 0).expect("operand"),
            self.operand(i, 1).expect("operand"),
        );
        let shape = broadcast_shapes(&a.shape, &b.shape).expect("checked at load");
        let code = match op {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
            BinaryOp::Div => 3,
            BinaryOp::Pow => 4,
        };
        let mut words = vec![code, shape.len() as u32, count as u32];
        words.extend(padded(&shape));
        words.extend(padded(&broadcast_strides(&a.shape, &shape)));
        words.extend(padded(&broadcast_strides(&b.shape, &shape)));
        let p = self.params(&words);
        let y = scratch(self.gpu, "binary", count);
        if out_int {
            self.dispatch_at(
                &pipes.binary_i32,
                &[(0, &p), (4, &a.buf), (5, &b.buf), (6, &y)],
                linear_groups(count),
            );
        } else {
            self.dispatch_at(
                &pipes.binary_f32,
                &[(0, &p), (1, &a.buf), (2, &b.buf), (3, &y)],
                linear_groups(count),
            );
        }
        self.set(out, y, out_int);
    }

    /// An element-wise unary operator, in place where it may write its input.
    pub(super) fn unary(&mut self, i: usize, frees: &[ValueId], out: Out, u: UnaryOp) {
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            ..
        } = out;
        let x = self.writable(i, frees);
        let (code, alpha) = unary_code(u);
        let p = self.params(&[code, count as u32, alpha.to_bits()]);
        self.dispatch_at(&pipes.unary, &[(0, &p), (3, &x.buf)], linear_groups(count));
        self.vals[out] = Some(DVal {
            shape: out_shape,
            ..x
        });
    }

    /// Clip to the constant bounds, in place where it may write its input.
    pub(super) fn clip(&mut self, i: usize, frees: &[ValueId], out: Out) {
        let node = &self.g.model.graph().nodes[i];
        let pipes = &self.g.pipes;
        let Out {
            id: out,
            shape: out_shape,
            count,
            ..
        } = out;
        let bound = |k: usize| {
            node.inputs
                .get(k)
                .copied()
                .flatten()
                .and_then(|v| self.graph().val(v).as_const().cloned())
        };
        let (lo, hi) = (bound(1), bound(2));
        let x = self.writable(i, frees);
        if x.int {
            let lo = lo.map_or(i32::MIN, |t| {
                t.to_i64_vec()[0].clamp(i32::MIN as i64, i32::MAX as i64) as i32
            });
            let hi = hi.map_or(i32::MAX, |t| {
                t.to_i64_vec()[0].clamp(i32::MIN as i64, i32::MAX as i64) as i32
            });
            let p = self.params(&[count as u32, lo as u32, hi as u32]);
            self.dispatch_at(
                &pipes.clip_i32,
                &[(0, &p), (6, &x.buf)],
                linear_groups(count),
            );
        } else {
            let lo = lo.map_or(f32::NEG_INFINITY, |t| t.to_f32_vec()[0]);
            let hi = hi.map_or(f32::INFINITY, |t| t.to_f32_vec()[0]);
            let p = self.params(&[count as u32, lo.to_bits(), hi.to_bits()]);
            self.dispatch_at(
                &pipes.clip_f32,
                &[(0, &p), (3, &x.buf)],
                linear_groups(count),
            );
        }
        self.vals[out] = Some(DVal {
            shape: out_shape,
            ..x
        });
    }

    /// ConstantOfShape with a per-row shape: the value repeated.
    pub(super) fn fill(&mut self, i: usize, out: Out, value: &Tensor) -> Result<()> {
        let node = &self.g.model.graph().nodes[i];
        let Out {
            id: out,
            shape: out_shape,
            ..
        } = out;
        let t = crate::model::onnx::kernels::fill(out_shape.clone(), value);
        let (w, int) = words(&t, &node.label).map_err(Error::Onnx)?;
        let y = storage(self.gpu, "fill", &w);
        self.set(out, y, int);
        Ok(())
    }
}
