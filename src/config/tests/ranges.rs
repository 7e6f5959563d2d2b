//! Numeric settings: their ranges and defaults (chunk cost, attempts,
//! ttl, kept versions, [validate], [generate]).

use super::*;

#[test]
fn target_chunk_cost_must_be_positive() {
    let text = with(
        MLP,
        "partition",
        "target_chunk_cost",
        "target_chunk_cost = 0",
    );
    let e = error_at(job(&text), &text, "target_chunk_cost");
    assert_contains(
        &e,
        &["target_chunk_cost = '0' is out of range; expected an integer of at least 1"],
    );
    let text = with(
        MLP,
        "partition",
        "target_chunk_cost",
        "target_chunk_cost = 1_000",
    );
    assert_eq!(job(&text).unwrap().partition.target_chunk_cost, Some(1000));
}

#[test]
fn max_attempts_from_1_to_100() {
    for bad in ["0", "101", "-1"] {
        let line = format!("max_attempts = {bad}");
        let text = with(MLP, "stragglers", "max_attempts", &line);
        let e = error_at(job(&text), &text, &line);
        assert_contains(
            &e,
            &[&format!(
                "[stragglers] max_attempts = '{bad}' is out of range; expected an integer from 1 to 100"
            )],
        );
    }
    let text = with(MLP, "stragglers", "max_attempts", "max_attempts = 100");
    assert_eq!(job(&text).unwrap().stragglers.max_attempts, 100);
}

#[test]
fn ttl_as_string_or_seconds() {
    for (line, secs) in [
        ("ttl = \"12h\"", 43_200),
        ("ttl = \"30m\"", 1_800),
        ("ttl = \"3600s\"", 3_600),
        ("ttl = \"90\"", 90),
        ("ttl = 86400", 86_400),
    ] {
        let text = with(MLP, "output", "ttl", line);
        assert_eq!(job(&text).unwrap().output.ttl_secs, secs, "{line}");
    }
    for (line, want) in [
        (
            "ttl = \"7x\"",
            "[output] ttl = '7x' has the unknown unit 'x'",
        ),
        ("ttl = \"d\"", "[output] ttl = 'd' is not a duration"),
        ("ttl = 0", "[output] ttl = '0' is out of range"),
        ("ttl = -5", "[output] ttl = '-5' is out of range"),
        (
            "ttl = 1.5",
            "[output] ttl = '1.5' is a number with a fraction; expected a duration",
        ),
    ] {
        let text = with(MLP, "output", "ttl", line);
        let e = error_at(job(&text), &text, "ttl");
        assert_contains(&e, &[want]);
    }
}

#[test]
fn keep_versions_keeps_at_least_the_live_and_previous() {
    let text = with(MLP, "output", "keep_versions", "keep_versions = 1");
    let e = error_at(job(&text), &text, "keep_versions");
    assert_contains(
        &e,
        &["keep_versions = '1' is out of range; expected an integer from 2 to 1000"],
    );
    let text = with(MLP, "output", "keep_versions", "keep_versions = 2");
    assert_eq!(job(&text).unwrap().output.keep_versions, 2);
}

#[test]
fn validate_ranges() {
    for (table_text, line, want) in [
        (
            MLP,
            "min_coverage = 1.5",
            "min_coverage = '1.5' is out of range; expected a number from 0 to 1",
        ),
        (
            MLP,
            "min_coverage = -0.1",
            "min_coverage = '-0.1' is out of range",
        ),
        (
            MLP,
            "min_coverage = nan",
            "min_coverage = 'NaN' is out of range",
        ),
        (
            MLP,
            "max_non_finite = -1",
            "max_non_finite = '-1' is out of range",
        ),
        (MLP, "spot_check = -1", "spot_check = '-1' is out of range"),
        (
            TWO_TOWER,
            "max_topk_churn = 1.01",
            "max_topk_churn = '1.01' is out of range",
        ),
        (
            MLP,
            "max_mean_shift = -0.5",
            "max_mean_shift = '-0.5' is out of range; expected a number of at least 0",
        ),
        (
            MLP,
            "max_topk_churn = 0.5",
            "max_topk_churn is for kind = 'two_tower'",
        ),
    ] {
        let key = line.split(' ').next().unwrap();
        let text = with(table_text, "validate", key, line);
        let e = error_at(job(&text), &text, line);
        assert_contains(&e, &[want]);
    }
    let text = with(MLP, "validate", "min_coverage", "min_coverage = 0");
    let text = with(&text, "validate", "max_mean_shift", "max_mean_shift = 0.25");
    let v = job(&text).unwrap().validate;
    assert_eq!(v.min_coverage, 0.0);
    assert_eq!(v.max_mean_shift, Some(0.25));
}

#[test]
fn generate_defaults_and_kind_must_match_the_model() {
    let text = with(TWO_TOWER, "generate", "kind", "kind = \"two-tower\"");
    assert_eq!(
        job(&text).unwrap().generate,
        Some(Generate {
            kind: GenerateKind::TwoTower,
            users: 10_000,
            items: 1_000,
            dim: 32,
            features: 8,
            seed: 42,
            trees: 500,
            depth: 8,
        })
    );
    let text = with(
        MLP,
        "generate",
        "kind",
        "kind = \"mlp\"\nusers = 500\nfeatures = 3\nseed = 7",
    );
    let g = job(&text).unwrap().generate.unwrap();
    assert_eq!(
        (g.kind, g.users, g.features, g.seed),
        (GenerateKind::Mlp, 500, 3, 7)
    );

    let text = with(MLP, "generate", "kind", "kind = \"two-tower\"");
    let e = error_at(job(&text), &text, "kind = \"two-tower\"");
    assert_contains(
        &e,
        &[
            "[generate] kind = 'two-tower' does not match [model] kind = 'mlp'",
            "expected kind = 'mlp'",
        ],
    );
    let text = with(TWO_TOWER, "generate", "kind", "kind = 'two_tower'");
    let e = error_at(job(&text), &text, "kind = 'two_tower'");
    assert_contains(
        &e,
        &[
            "[generate] kind = 'two_tower' is not a data set kind; expected 'two-tower', 'mlp' or 'gbdt'",
        ],
    );
}

#[test]
fn generate_ranges() {
    for (line, want) in [
        ("users = 0", "[generate] users = '0' is out of range"),
        ("items = 0", "[generate] items = '0' is out of range"),
        ("items = 10_000_001", "items = '10000001' is out of range"),
        ("dim = 0", "[generate] dim = '0' is out of range"),
        (
            "features = 0",
            "[generate] features = '0' is out of range; expected an integer from 1",
        ),
        ("seed = -1", "[generate] seed = '-1' is out of range"),
    ] {
        let text = with(MLP, "generate", "kind", &format!("kind = \"mlp\"\n{line}"));
        let e = error_at(job(&text), &text, line);
        assert_contains(&e, &[want]);
    }
    let text = with(
        TWO_TOWER,
        "generate",
        "kind",
        "kind = \"two-tower\"\nfeatures = 0",
    );
    assert_eq!(job(&text).unwrap().generate.unwrap().features, 0);
}

#[test]
fn parse_ttl_units() {
    assert_eq!(parse_ttl("7d"), Ok(604_800));
    assert_eq!(parse_ttl("7d"), Ok(DEFAULT_TTL_SECS));
    assert_eq!(parse_ttl("12h"), Ok(43_200));
    assert_eq!(parse_ttl("30m"), Ok(1_800));
    assert_eq!(parse_ttl("3600s"), Ok(3_600));
    assert_eq!(parse_ttl("3600"), Ok(3_600));
    assert_eq!(parse_ttl("36500d"), Ok(MAX_TTL_SECS));
    for (bad, want) in [
        ("", "'' is empty"),
        ("7w", "'7w' has the unknown unit 'w'"),
        ("-7d", "'-7d' is not a duration"),
        ("7.5h", "'7.5h' is not a duration"),
        (" 7d", "' 7d' is not a duration"),
        ("0", "'0' is zero"),
        ("0d", "'0d' is zero"),
        ("36501d", "'36501d' is too long"),
        ("99999999999999999999999", "is too long"),
    ] {
        let e = parse_ttl(bad).unwrap_err();
        assert!(e.contains(want), "'{e}' should contain '{want}'");
    }
}

#[test]
fn a_grace_period_may_be_zero_and_otherwise_reads_as_a_ttl() {
    assert_eq!(parse_grace("0"), Ok(0));
    assert_eq!(parse_grace("0d"), Ok(0));
    assert_eq!(parse_grace("1d"), Ok(86_400));
    let e = parse_grace("7w").unwrap_err();
    assert!(e.contains("unknown unit 'w'"), "{e}");
    assert!(!parse_grace("7w").unwrap_err().contains("stale"));
}
