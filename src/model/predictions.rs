//! Joining the predictions of consecutive row ranges (threads, split chunks).

use super::Predictions;

impl Predictions {
    /// Bytes of scores (and top-K items and offsets) held.
    pub fn byte_size(&self) -> u64 {
        4 * match self {
            Predictions::Scores { values, .. } => values.len(),
            Predictions::TopK {
                offsets,
                items,
                scores,
            } => offsets.len() + items.len() + scores.len(),
        } as u64
    }

    /// Joins the predictions of consecutive row ranges, in order. An empty
    /// list gives empty `Scores` of width 0.
    ///
    /// # Panics
    /// When the parts mix `Scores` and `TopK`, or `Scores` of different widths.
    pub fn concat(parts: Vec<Predictions>) -> Predictions {
        let mut parts = parts.into_iter();
        let Some(mut whole) = parts.next() else {
            return Predictions::Scores {
                width: 0,
                values: Vec::new(),
            };
        };
        for part in parts {
            match (&mut whole, part) {
                (
                    Predictions::Scores { width, values },
                    Predictions::Scores {
                        width: w,
                        values: v,
                    },
                ) => {
                    assert_eq!(*width, w, "cannot join score rows of width {width} and {w}");
                    values.extend(v);
                }
                (
                    Predictions::TopK {
                        offsets,
                        items,
                        scores,
                    },
                    Predictions::TopK {
                        offsets: o,
                        items: i,
                        scores: s,
                    },
                ) => {
                    let base = *offsets.last().unwrap_or(&0);
                    offsets.extend(o.iter().skip(1).map(|x| x + base));
                    items.extend(i);
                    scores.extend(s);
                }
                _ => panic!("cannot join mlp scores with two_tower top-K predictions"),
            }
        }
        whole
    }
}
