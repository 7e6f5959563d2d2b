//! two_tower's fine print: ties, history caps, exclusions, empty and
//! odd catalogues, item id dtypes, and load errors naming the tensor.

use super::*;

#[test]
fn two_tower_fast_matches_reference_on_random_models() {
    let mut rng = Rng(10);
    for (sparse_ids, exclude_seen, tower) in [
        (false, true, vec![8 + 3, 16, 8]),
        (true, false, vec![8 + 3, 8]),
        (true, true, vec![]),
        (false, false, vec![]),
    ] {
        let spec = tt_spec(20, 10, exclude_seen);
        // Neither users nor items are a multiple of the block / tile size.
        let (users, items) = (USER_BLOCK + 37, ITEM_TILE + 452);
        let (model, ids) = random_two_tower(&mut rng, items, 8, &tower, sparse_ids, &spec);
        let num_features = if tower.is_empty() { 0 } else { 3 };
        let histories = random_histories(&mut rng, users, &ids, 40);
        let rows = history_rows(&histories, rng.vec(users * num_features), num_features);
        let p = predict_both(&model, &rows);
        let view = TopKView::of(&p);
        for (r, history) in histories.iter().enumerate() {
            let (items, scores) = view.row(r);
            assert_eq!(items.len(), 20);
            assert!(
                scores.windows(2).all(|w| w[0] >= w[1]),
                "row {r} not sorted"
            );
            if exclude_seen {
                assert!(
                    items.iter().all(|i| !history.contains(i)),
                    "row {r} offers a seen item"
                );
            }
        }
    }
}

#[test]
fn two_tower_empty_history_pools_to_zero_and_ties_go_to_smaller_ids() {
    // No tower: the user vector is the zero vector, so every score is 0 and
    // the top K are the K smallest ids, whatever their rows.
    let items = ITEM_TILE + 100;
    let ids: Vec<u32> = (0..items as u32).rev().map(|i| i * 3).collect();
    let cat = Catalogue {
        dim: 4,
        embeddings: Rng(11).vec(items * 4),
        ids: Some(ids),
    };
    let model = load_ok(&tt_spec(5, 50, true), &cat.tensors(), 0);
    let rows = history_rows(&[vec![], vec![]], Vec::new(), 0);
    let p = predict_exact(&model, &rows);
    let view = TopKView::of(&p);
    for r in 0..2 {
        assert_eq!(view.row(r).0, &[0, 3, 6, 9, 12]);
        assert!(view.row(r).1.iter().all(|&s| s == 0.0));
    }
}

#[test]
fn two_tower_duplicate_embeddings_tie_break_by_smaller_id_across_tiles() {
    // Every item has the same embedding; ids run backwards over 2 x ITEM_TILE + 7 rows
    // (spanning three item tiles), so the smallest ids sit in the last rows.
    let items = 2 * ITEM_TILE + 7;
    let ids: Vec<u32> = (0..items as u32).rev().map(|i| i + 100).collect();
    let cat = Catalogue {
        dim: 2,
        embeddings: [1.0f32, 2.0].repeat(items),
        ids: Some(ids),
    };
    let model = load_ok(&tt_spec(4, 10, true), &cat.tensors(), 0);
    // History holds item 100 (the best id): it is pooled, then excluded.
    let rows = history_rows(&[vec![100]], Vec::new(), 0);
    let p = predict_exact(&model, &rows);
    let (items_out, scores) = TopKView::of(&p).row(0);
    assert_eq!(items_out, &[101, 102, 103, 104]);
    assert_eq!(scores, &[5.0; 4]);
}

#[test]
fn two_tower_cap_keeps_the_most_recent_history() {
    // One-hot items; with max_history 2 only the last two entries pool.
    let cat = Catalogue {
        dim: 4,
        embeddings: one_hot(4, 4),
        ids: None,
    };
    let model = load_ok(&tt_spec(4, 2, false), &cat.tensors(), 0);
    let rows = history_rows(&[vec![0, 1, 2, 3]], Vec::new(), 0);
    let p = predict_exact(&model, &rows);
    let (items, scores) = TopKView::of(&p).row(0);
    assert_eq!(items, &[2, 3, 0, 1]);
    assert_eq!(scores, &[0.5, 0.5, 0.0, 0.0]);
}

#[test]
fn two_tower_repeated_items_count_per_occurrence_and_missing_ids_are_skipped() {
    let cat = Catalogue {
        dim: 3,
        embeddings: one_hot(3, 3),
        ids: Some(vec![10, 20, 30]),
    };
    let model = load_ok(&tt_spec(3, 100, false), &cat.tensors(), 0);
    // 10 twice, 20 once, 99 and 7 unknown: mean over 3 pooled entries.
    let rows = history_rows(&[vec![10, 99, 10, 7, 20]], Vec::new(), 0);
    let p = predict_exact(&model, &rows);
    let (items, scores) = TopKView::of(&p).row(0);
    assert_eq!(items, &[10, 20, 30]);
    assert!(
        close(scores[0], 2.0 / 3.0) && close(scores[1], 1.0 / 3.0),
        "{scores:?}"
    );
    assert_eq!(scores[2], 0.0);
}

#[test]
fn two_tower_history_of_only_unknown_ids_pools_to_zero() {
    let cat = Catalogue {
        dim: 2,
        embeddings: vec![1.0, 0.0, 0.0, 1.0],
        ids: None,
    };
    let model = load_ok(&tt_spec(2, 100, false), &cat.tensors(), 0);
    let rows = history_rows(&[vec![5, 6, 7]], Vec::new(), 0);
    let p = predict_exact(&model, &rows);
    let (items, scores) = TopKView::of(&p).row(0);
    assert_eq!(items, &[0, 1]);
    assert_eq!(scores, &[0.0, 0.0]);
}

#[test]
fn two_tower_exclude_seen_removes_the_whole_history_not_only_the_capped_part() {
    let cat = Catalogue {
        dim: 4,
        embeddings: one_hot(6, 4),
        ids: None,
    };
    let model = load_ok(&tt_spec(10, 1, true), &cat.tensors(), 0);
    // Only item 1 pools (cap 1); item 0 is still excluded.
    let rows = history_rows(&[vec![0, 1]], Vec::new(), 0);
    let p = predict_exact(&model, &rows);
    let (items, _) = TopKView::of(&p).row(0);
    // Item 5 shares item 1's axis (row 5 -> axis 1, scale 2): best.
    assert_eq!(items, &[5, 2, 3, 4]);
}

#[test]
fn two_tower_gives_fewer_than_k_when_fewer_items_are_eligible() {
    let cat = Catalogue {
        dim: 3,
        embeddings: Rng(12).vec(5 * 3),
        ids: None,
    };
    let keep_seen = load_ok(&tt_spec(10, 100, false), &cat.tensors(), 0);
    let exclude = load_ok(&tt_spec(10, 100, true), &cat.tensors(), 0);
    let rows = history_rows(&[vec![1, 3], vec![]], Vec::new(), 0);
    let p = predict_both(&keep_seen, &rows);
    assert_eq!(TopKView::of(&p).row(0).0.len(), 5);
    let p = predict_both(&exclude, &rows);
    let view = TopKView::of(&p);
    let mut row0 = view.row(0).0.to_vec();
    row0.sort_unstable();
    assert_eq!(row0, vec![0, 2, 4]);
    assert_eq!(view.row(1).0.len(), 5);
}

#[test]
fn two_tower_single_item_catalogue() {
    let cat = Catalogue {
        dim: 2,
        embeddings: vec![0.5, -1.0],
        ids: Some(vec![42]),
    };
    let model = load_ok(&tt_spec(3, 100, true), &cat.tensors(), 0);
    let rows = history_rows(&[vec![], vec![42], vec![7]], Vec::new(), 0);
    let p = predict_exact(&model, &rows);
    let view = TopKView::of(&p);
    assert_eq!(view.row(0).0, &[42]);
    assert_eq!(view.row(1).0, &[] as &[u32]);
    assert_eq!(view.row(2).0, &[42]);
}

#[test]
fn two_tower_empty_catalogue_gives_empty_rows() {
    let cat = Catalogue {
        dim: 3,
        embeddings: Vec::new(),
        ids: None,
    };
    let model = load_ok(&tt_spec(5, 100, true), &cat.tensors(), 0);
    let p = predict_exact(&model, &history_rows(&[vec![1], vec![]], Vec::new(), 0));
    assert_eq!(p.len(), 2);
    assert!(TopKView::of(&p).items.is_empty());
}

#[test]
fn two_tower_top_k_zero_gives_empty_rows() {
    let cat = Catalogue {
        dim: 2,
        embeddings: vec![0.5, -1.0, 1.0, 1.0],
        ids: None,
    };
    let model = load_ok(&tt_spec(0, 100, false), &cat.tensors(), 0);
    let p = predict_exact(&model, &history_rows(&[vec![0], vec![]], Vec::new(), 0));
    assert_eq!(p.len(), 2);
    assert!(TopKView::of(&p).items.is_empty());
}

#[test]
fn two_tower_rows_without_a_history_column_pool_to_zero() {
    let mut rng = Rng(13);
    let (model, _) = random_two_tower(&mut rng, 50, 4, &[4 + 2, 4], false, &tt_spec(7, 10, true));
    let rows = feature_rows(&mut rng, 70, 2);
    let p = predict_both(&model, &rows);
    assert_eq!(TopKView::of(&p).items.len(), 70 * 7);
}

fn tt_err(tensors: &[T], num_features: usize) -> String {
    load_err(&tt_spec(10, 100, true), tensors, num_features)
}

fn ids_tensor(dtype: Dtype, values: &[i64]) -> T {
    let bytes: Vec<u8> = match dtype {
        Dtype::I64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::U8 => values.iter().map(|&v| v as u8).collect(),
        Dtype::I32 => values
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect(),
        Dtype::U64 => values
            .iter()
            .flat_map(|&v| (v as u64).to_le_bytes())
            .collect(),
        other => panic!("no test encoding for {other:?}"),
    };
    T("item_ids".into(), dtype, vec![values.len()], bytes)
}

#[test]
fn two_tower_item_ids_accept_any_integer_dtype() {
    for dtype in [Dtype::I64, Dtype::U8, Dtype::I32, Dtype::U64] {
        let tensors = vec![
            f32s("item_embeddings", &[3, 1], &[1.0, 3.0, 2.0]),
            ids_tensor(dtype, &[7, 200, 5]),
        ];
        let model = load_ok(&tt_spec(3, 10, false), &tensors, 0);
        let p = predict_exact(&model, &history_rows(&[vec![7]], Vec::new(), 0));
        assert_eq!(TopKView::of(&p).row(0).0, &[200, 5, 7], "{dtype:?}");
    }
}

#[test]
fn two_tower_item_id_errors_say_what_is_wrong() {
    let emb = || f32s("item_embeddings", &[3, 2], &[0.0; 6]);

    let err = tt_err(&[emb(), ids_tensor(Dtype::I64, &[1, -4, 2])], 0);
    assert!(
        err.contains("'item_ids' entry 1 is -4, expected an integer in 0..=4294967295"),
        "{err}"
    );

    let err = tt_err(&[emb(), ids_tensor(Dtype::I64, &[1, 2, 1 << 33])], 0);
    assert!(err.contains("entry 2 is 8589934592"), "{err}");

    let err = tt_err(&[emb(), ids_tensor(Dtype::I64, &[4, 9, 4])], 0);
    assert!(err.contains("repeats id 4 (entries 0 and 2)"), "{err}");

    let err = tt_err(&[emb(), ids_tensor(Dtype::I64, &[1, 2])], 0);
    assert!(
        err.contains("'item_ids' has shape [2], expected [3]"),
        "{err}"
    );

    let err = tt_err(&[emb(), f32s("item_ids", &[3], &[0.0, 1.0, 2.0])], 0);
    assert!(
        err.contains("'item_ids' has dtype F32, expected an integer dtype"),
        "{err}"
    );
}

#[test]
fn two_tower_shape_errors_name_the_tensor() {
    let mut rng = Rng(14);
    let err = tt_err(&[f32s("item_embedding", &[3, 2], &[0.0; 6])], 0);
    assert!(
        err.contains("two_tower weights have no tensor 'item_embeddings'")
            && err.contains("'item_embedding'"),
        "{err}"
    );

    let err = tt_err(&[f32s("item_embeddings", &[6], &[0.0; 6])], 0);
    assert!(
        err.contains("'item_embeddings' has shape [6], expected [items, dim]"),
        "{err}"
    );

    let err = tt_err(&[f32s("item_embeddings", &[3, 0], &[])], 0);
    assert!(err.contains("embedding dim is 0"), "{err}");

    let emb = f32s("item_embeddings", &[3, 4], &rng.vec(12));
    let err = tt_err(&[emb], 2);
    assert!(
        err.contains("2 feature column(s)") && err.contains("feature_columns = []"),
        "{err}"
    );

    let mut tensors = vec![f32s("item_embeddings", &[3, 4], &rng.vec(12))];
    tensors.extend(layer(&mut rng, "user_tower.0", 5, 4));
    let err = tt_err(&tensors, 2);
    assert!(
        err.contains("layer 'user_tower.0' takes 5 inputs but gets 6 from the pooled history (4) plus 2 feature column(s)"),
        "{err}"
    );

    let mut tensors = vec![f32s("item_embeddings", &[3, 4], &rng.vec(12))];
    tensors.extend(layer(&mut rng, "user_tower.0", 6, 8));
    tensors.extend(layer(&mut rng, "user_tower.2", 8, 5));
    let err = tt_err(&tensors, 2);
    assert!(
        err.contains("last layer 'user_tower.2' outputs 5 values, expected the embedding dim 4"),
        "{err}"
    );
}

#[test]
fn two_tower_accepts_a_single_linear_named_user_tower() {
    let mut rng = Rng(18);
    let mut tensors = vec![f32s("item_embeddings", &[40, 4], &rng.vec(160))];
    tensors.extend(layer(&mut rng, "user_tower", 4 + 1, 4));
    let model = load_ok(&tt_spec(5, 10, true), &tensors, 1);
    assert_eq!(
        model.describe(),
        "two_tower: 40 items x 4, tower 5->4, top 5, max history 10, exclude seen"
    );
    let histories = vec![vec![1, 2, 3], vec![], vec![39; 20]];
    predict_both(&model, &history_rows(&histories, rng.vec(3), 1));

    // Numbered layers beside the lone one cannot be ordered.
    tensors.extend(layer(&mut rng, "user_tower.0", 4, 4));
    let err = tt_err(&tensors, 1);
    assert!(
        err.contains("layer 'user_tower' has no number in its name"),
        "{err}"
    );
}

#[test]
fn two_tower_a_nan_embedding_with_a_short_user_group_ranks_as_the_reference_does() {
    // Three users (a group of 16 with 13 missing): the NaN item's scores
    // are NaN for the missing users too, which must not be offered to
    // anyone.
    let items = ITEM_TILE + 9;
    let mut embeddings = Rng(14).vec(items * 4);
    embeddings[7 * 4..8 * 4].fill(f32::NAN);
    let cat = Catalogue {
        dim: 4,
        embeddings,
        ids: None,
    };
    let model = load_ok(&tt_spec(5, 50, false), &cat.tensors(), 0);
    let rows = history_rows(&[vec![1, 2], vec![], vec![3]], Vec::new(), 0);
    let fast = model.predict(&rows).unwrap();
    let reference = model.predict_reference(&rows).unwrap();
    let (fv, rv) = (TopKView::of(&fast), TopKView::of(&reference));
    for r in 0..3 {
        assert_eq!(fv.row(r).0, rv.row(r).0, "row {r}: items");
        assert_eq!(fv.row(r).0.len(), 5);
    }
}
