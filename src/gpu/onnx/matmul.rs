//! MatMul and Gemm on the matmul kernel: batched products with broadcast
//! leading dimensions, and Gemm's transposes, alpha, beta and C.

use super::{Block, MAX_BATCH, Op, broadcast_shapes, broadcast_strides, linear_groups, scratch};

impl Block<'_> {
    pub(super) fn matmul(&mut self, i: usize, out_shape: &[usize], count: usize) {
        let g = self.g;
        let node = &g.model.graph().nodes[i];
        let (a, b) = (
            self.operand(i, 0).expect("operand"),
            self.operand(i, 1).expect("operand"),
        );
        let (m, n, k, batch, sa, sb, head, c) = match &node.op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let (m, k) = if *trans_a {
                    (a.shape[1], a.shape[0])
                } else {
                    (a.shape[0], a.shape[1])
                };
                let n = if *trans_b { b.shape[0] } else { b.shape[1] };
                let (ar, ak) = if *trans_a { (1, m) } else { (k, 1) };
                let (bk, bc) = if *trans_b { (1, k) } else { (n, 1) };
                let c = self.operand(i, 2);
                let (cr, cc) = match &c {
                    Some(c) => {
                        let s = broadcast_strides(&c.shape, &[m, n]);
                        (s[0], s[1])
                    }
                    None => (0, 0),
                };
                let head = [
                    ar as u32,
                    ak as u32,
                    bk as u32,
                    bc as u32,
                    alpha.to_bits(),
                    c.is_some() as u32,
                    beta.to_bits(),
                    cr as u32,
                    cc as u32,
                ];
                (m, n, k, Vec::new(), Vec::new(), Vec::new(), head, c)
            }
            _ => {
                let mut sa = a.shape.clone();
                let mut sb = b.shape.clone();
                if sa.len() == 1 {
                    sa.insert(0, 1);
                }
                if sb.len() == 1 {
                    sb.push(1);
                }
                let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
                let batch = broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2])
                    .expect("checked at load");
                // Strides of each operand's matrices, broadcast to `batch`.
                let stride = |s: &[usize]| {
                    let mats: Vec<usize> = s[..s.len() - 2].to_vec();
                    let size = s[s.len() - 2] * s[s.len() - 1];
                    broadcast_strides(&mats, &batch)
                        .into_iter()
                        .map(|x| x * size)
                        .collect::<Vec<_>>()
                };
                let (ba, bb) = (stride(&sa), stride(&sb));
                let head = [k as u32, 1, n as u32, 1, 1.0f32.to_bits(), 0, 0, 0, 0];
                (m, n, k, batch, ba, bb, head, None)
            }
        };
        let pad6 = |v: &[usize]| {
            let mut w: Vec<u32> = v.iter().map(|&x| x as u32).collect();
            w.resize(MAX_BATCH, 0);
            w
        };
        let mut words = vec![
            count as u32,
            batch.len() as u32,
            m as u32,
            n as u32,
            k as u32,
        ];
        words.extend(head);
        words.extend(pad6(&batch));
        words.extend(pad6(&sa));
        words.extend(pad6(&sb));
        let p = self.params(&words);
        let y = scratch(self.gpu, "matmul", count);
        let dummy;
        let c_buf = match &c {
            Some(c) => &*c.buf,
            None => {
                dummy = scratch(self.gpu, "no c", 1);
                &dummy
            }
        };
        debug_assert_eq!(count, out_shape.iter().product::<usize>());
        self.dispatch(
            &g.pipes.matmul,
            &[&p, &a.buf, &b.buf, c_buf, &y],
            linear_groups(count),
        );
        self.set(node.output, y, false);
    }
}
