//! Lookalike audiences: the publisher's users matched to the advertiser's list are the seed, the
//! rest of the publisher's base is unlabelled, and a model trained here on the publisher's features
//! (`sealroom_models`) ranks the base by how much each user looks like the seed.
//!
//! A run computes three things, none of which leaves the engine by itself:
//!
//! - **sections** for `results_to` (through the gate like any result): the base and seed sizes,
//!   ROC AUC and recall at the top 10% on held-out users, and the reach/precision curve;
//! - the **trained model** (its exported JSON: feature schema and parameters), kept in the run's
//!   artifacts for [`crate::release_gate::ReleaseGate::release_model`] to release to `model_to`;
//! - the **ranking** of the publisher's users outside the seed, best first, kept for
//!   [`crate::release_gate::ReleaseGate::release_audience`] to release the top N to `audience_to`.
//!
//! Privacy argument (docs/models/lookalike.md): the run is refused unless at least k seed users and
//! k other users exist; evaluation cells are about the held-out users they count, and a curve point
//! is released only when it adds at least k held-out seed users and k others to the last released
//! point, so no band between two points is about fewer than k; the model's schema names only
//! category values at least k users hold, and its trees have at least k users in every leaf; the
//! audience never contains a seed user.

use std::collections::{HashMap, HashSet};

use arrow::array::ArrayRef;
use ndarray::{Array2, Axis};
use sealroom_models::features::{Column, FeatureSchema, FitOptions};
use sealroom_models::forest::ForestOptions;
use sealroom_models::model::{ModelKind, TrainOptions};
use sealroom_models::{ModelError, split};
use sealroom_proto::room::v1::{IdentifierKind, LookalikeComputation, RoomContract, Table};
use serde::{Deserialize, Serialize};

use super::overlap::{Matched, input, matched, metric, table};
use super::segments::SegmentColumn;
use super::{InputTable, first_text_per_individual, linkage};
use crate::error::{Error, Result};
use crate::report::{ComputedCell, ComputedRow, ComputedSection, MetricKind};

/// Share of the seed and of the other users held out to evaluate the model.
pub(crate) const HELD_OUT: f64 = 0.3;

/// Points of the reach/precision curve: shares of the ranking.
pub(crate) const CURVE: [f64; 7] = [0.01, 0.02, 0.05, 0.10, 0.20, 0.30, 0.50];

/// Most segments that become features (the most common ones that qualify).
pub(crate) const MAX_SEGMENT_FEATURES: usize = 256;

/// What a lookalike run keeps inside the engine for later releases (never released as a whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Artifacts {
    /// `logistic` or `forest`.
    pub model_kind: String,
    /// Seed users the released model was trained on.
    pub seed_individuals: u64,
    /// The trained model as exported (`sealroom_models::model::ExportedModel`).
    pub model: serde_json::Value,
    /// The publisher's user ids outside the seed, best score first (ties by id).
    pub ranking: Vec<String>,
}

/// The feature matrix of the publisher's individuals, and its schema.
struct Features {
    schema: FeatureSchema,
    x: Array2<f64>,
    columns: usize,
}

fn model_error(e: ModelError) -> Error {
    match e {
        ModelError::Input(m) => Error::FailedPrecondition(format!("the lookalike cannot be trained: {m}")),
        ModelError::Training(m) => Error::Computation(format!("lookalike training failed: {m}")),
    }
}

/// Text of a scalar column for the feature schema: dates as days and timestamps as their unit
/// since 1970 (numbers), everything else as its text.
fn scalar_text(array: &ArrayRef) -> Result<ArrayRef> {
    use arrow::datatypes::DataType;
    Ok(match array.data_type() {
        DataType::Date32 => arrow::compute::cast(array, &DataType::Int32)?,
        DataType::Date64 | DataType::Timestamp(_, _) => arrow::compute::cast(array, &DataType::Int64)?,
        _ => array.clone(),
    })
}

/// Whether a column is a feature the contract lets the lookalike train on (as validation checks).
fn is_feature(column: &sealroom_proto::room::v1::Column, named: &[String]) -> bool {
    use sealroom_proto::room::v1::ColumnType;
    let usable = match column.identifier() {
        IdentifierKind::Segment => true,
        IdentifierKind::Unspecified => {
            !matches!(column.r#type(), ColumnType::Sha256 | ColumnType::Bytes | ColumnType::Unspecified)
        }
        _ => false,
    };
    usable && (named.is_empty() || named.contains(&column.name))
}

/// Builds the features of every publisher individual: scalar columns through the feature schema
/// (categories pooled under k users), segment memberships multi-hot.
fn features(
    publisher: &Table,
    p_input: &InputTable,
    segments: Option<(&Table, &InputTable)>,
    m: &Matched,
    named: &[String],
    k: u64,
) -> Result<Features> {
    let n = m.publisher_individuals;
    let mut scalar: Vec<Column> = Vec::new();
    for c in publisher.columns.iter().filter(|c| c.identifier() == IdentifierKind::Unspecified) {
        if !is_feature(c, named) {
            continue;
        }
        let array = scalar_text(&p_input.column(&publisher.name, &c.name)?)?;
        scalar.push((c.name.clone(), first_text_per_individual(&array, &m.publisher_of_row, n)?));
    }
    let options = FitOptions { min_level_count: k as usize, strict_numbers: false };
    let mut schema = FeatureSchema::fit_with(&scalar, &options).map_err(model_error)?;
    // With no scalar column there is nothing to encode, but still a row per individual.
    let mut x = if scalar.is_empty() { Array2::zeros((n, 0)) } else { schema.encode(&scalar).map_err(model_error)? };
    let columns = scalar.len();
    drop(scalar);

    // Segment columns of the publisher table (row-aligned) and of the segment table (joined on the
    // user id).
    let mut memberships: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut names: Vec<(String, String)> = Vec::new();
    let mut code: HashMap<(String, String), u32> = HashMap::new();
    // A table of segments, and the publisher individual of each of its rows when it is not the
    // publisher table itself.
    type Source<'t> = (&'t Table, &'t InputTable, Option<Vec<Option<u32>>>);
    let mut sources: Vec<Source<'_>> = vec![(publisher, p_input, None)];
    if let Some((t, i)) = segments {
        let keys = i.column(&t.name, linkage::person_column_name(t))?;
        sources.push((t, i, Some(linkage::individuals_by_key(m.publisher_person.as_ref(), keys.as_ref(), n)?)));
    }
    let mut segment_columns = 0;
    for (t, i, joined) in &sources {
        for c in t.columns_of_kind(IdentifierKind::Segment).filter(|c| is_feature(c, named)) {
            segment_columns += 1;
            let array = i.column(&t.name, &c.name)?;
            let values = SegmentColumn::new(&array)?;
            let mut row_values = Vec::new();
            for row in 0..array.len() {
                let individual = match joined {
                    None => m.publisher_of_row.get(row).copied(),
                    Some(j) => j.get(row).copied().flatten(),
                };
                let Some(individual) = individual.filter(|i| (*i as usize) < n) else { continue };
                row_values.clear();
                values.push_row(row, &mut row_values);
                for v in &row_values {
                    let key = (c.name.clone(), (*v).to_owned());
                    let next = names.len() as u32;
                    let id = *code.entry(key.clone()).or_insert_with(|| {
                        names.push(key);
                        next
                    });
                    memberships[individual as usize].push(id);
                }
            }
        }
    }
    let mut held = vec![0u64; names.len()];
    for m in &mut memberships {
        m.sort_unstable();
        m.dedup();
        for id in m.iter() {
            held[*id as usize] += 1;
        }
    }
    // A segment is a feature when at least k users are in it and k are not (so its weight or split
    // is about k users either way), the most common first.
    let mut chosen: Vec<usize> =
        (0..names.len()).filter(|s| held[*s] >= k && (n as u64).saturating_sub(held[*s]) >= k).collect();
    let rare = names.len() - chosen.len();
    chosen.sort_by(|a, b| held[*b].cmp(&held[*a]).then_with(|| names[*a].cmp(&names[*b])));
    let beyond = chosen.len().saturating_sub(MAX_SEGMENT_FEATURES);
    chosen.truncate(MAX_SEGMENT_FEATURES);
    if rare > 0 {
        schema
            .notes
            .push(format!("{rare} segments held by fewer than k = {k} users, or by all but fewer than k: left out"));
    }
    if beyond > 0 {
        schema.notes.push(format!("{beyond} segments beyond the {MAX_SEGMENT_FEATURES} most common: left out"));
    }
    if !chosen.is_empty() {
        let column_of: HashMap<usize, usize> = chosen.iter().enumerate().map(|(j, s)| (*s, j)).collect();
        let mut multi_hot = Array2::<f64>::zeros((n, chosen.len()));
        for (i, m) in memberships.iter().enumerate() {
            for id in m {
                if let Some(j) = column_of.get(&(*id as usize)) {
                    multi_hot[[i, *j]] = 1.0;
                }
            }
        }
        let feature_names: Vec<String> = chosen.iter().map(|s| format!("{}={}", names[*s].0, names[*s].1)).collect();
        let segment_schema = FeatureSchema::numeric(&feature_names, multi_hot.view()).map_err(model_error)?;
        schema.features.extend(segment_schema.features);
        x = ndarray::concatenate(Axis(1), &[x.view(), multi_hot.view()])
            .map_err(|e| Error::Computation(format!("joining the feature matrix: {e}")))?;
    }
    if schema.features.is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "the lookalike has no usable feature in the publisher's data ({})",
            if schema.notes.is_empty() { "no feature column".to_owned() } else { schema.notes.join("; ") }
        )));
    }
    Ok(Features { schema, x, columns: columns + segment_columns })
}

/// One curve point before suppression: the top `top` held-out users, `found` of them seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CurveCount {
    pub top: u64,
    pub found: u64,
}

/// Which curve points may be released: a point's seed users and other users must each reach k,
/// and so must what it adds to the last released point (points are cumulative, so two released
/// points' difference is a band of the ranking that must itself be about k users of each kind).
pub(crate) fn releasable_points(points: &[CurveCount], k: u64) -> Vec<bool> {
    let mut last = CurveCount { top: 0, found: 0 };
    points
        .iter()
        .map(|p| {
            let others = p.top.saturating_sub(p.found);
            let last_others = last.top.saturating_sub(last.found);
            let ok = p.found >= last.found + k && others >= last_others + k;
            if ok {
                last = *p;
            }
            ok
        })
        .collect()
}

/// Trains and evaluates; off the async runtime.
fn compute(
    contract: &RoomContract,
    spec: &LookalikeComputation,
    publisher: &Table,
    p_input: &InputTable,
    segments: Option<(&Table, &InputTable)>,
    m: &Matched,
) -> Result<(Vec<ComputedSection>, Artifacts)> {
    let k = u64::from(contract.effective_k());
    let n = m.publisher_individuals;
    // Matched publisher individuals are the seed.
    let mut y = vec![false; n];
    for (_, p) in m.pairs.tier_of.keys() {
        if let Some(s) = y.get_mut(*p as usize) {
            *s = true;
        }
    }
    let matched_advertiser = m.pairs.tier_of.keys().map(|(a, _)| *a).collect::<HashSet<u32>>().len() as u64;
    let seeds = y.iter().filter(|s| **s).count() as u64;
    if seeds < k {
        return Err(Error::FailedPrecondition(format!(
            "a lookalike needs at least k = {k} seed users (publisher users matched to the advertiser's list) and \
             fewer matched, so nothing was trained; match a longer list or on more identifiers"
        )));
    }
    if (n as u64) - seeds < k {
        return Err(Error::FailedPrecondition(format!(
            "a lookalike needs at least k = {k} publisher users outside the seed to rank, and fewer are; nothing \
             was trained"
        )));
    }
    let f = features(publisher, p_input, segments, m, &spec.features, k)?;

    // Validation admits only the models' names; empty is the default.
    let kind = ModelKind::from_name(&spec.model).unwrap_or_default();
    let mut options = TrainOptions { kind, balanced: true, ..TrainOptions::default() };
    // Every leaf of a released tree is about at least k users.
    options.forest =
        ForestOptions { min_samples_leaf: (k as usize).max(20), seed: spec.seed, ..ForestOptions::default() };

    // Evaluation: a model trained without the held-out users ranks them.
    let (train_rows, test_rows) = split::stratified(&y, HELD_OUT, spec.seed);
    let pick = |rows: &[usize]| (f.x.select(Axis(0), rows), rows.iter().map(|r| y[*r]).collect::<Vec<bool>>());
    let (x_train, y_train) = pick(&train_rows);
    let (x_test, y_test) = pick(&test_rows);
    let evaluation =
        sealroom_models::model::train(&f.schema, x_train.view(), &y_train, &options).map_err(model_error)?;
    drop(x_train);
    let test_scores = evaluation.scores(x_test.view()).map_err(model_error)?;
    let auc = sealroom_models::eval::roc_auc(&test_scores, &y_test).unwrap_or(0.5);
    let found = sealroom_models::eval::found_in_top(&test_scores, &y_test);
    let test_seed = y_test.iter().filter(|v| **v).count() as u64;
    let test_n = y_test.len() as u64;
    let at = |share: f64| {
        let top = ((test_n as f64) * share).ceil() as u64;
        CurveCount { top, found: found[top as usize] }
    };

    // The released model and the ranking: trained on everyone.
    let model = sealroom_models::model::train(&f.schema, f.x.view(), &y, &options).map_err(model_error)?;
    let scores = model.scores(f.x.view()).map_err(model_error)?;
    let ids = first_text_per_individual(&m.publisher_person, &m.publisher_of_row, n)?;
    let mut outside: Vec<usize> = (0..n).filter(|i| !y[*i]).collect();
    outside.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]).then_with(|| ids[*a].cmp(&ids[*b])));
    let ranking: Vec<String> = outside.iter().filter_map(|i| ids[*i].clone()).collect();
    let candidates = outside.len() as u64;
    let exported = serde_json::to_value(model.export())
        .map_err(|e| Error::Computation(format!("exporting the lookalike model: {e}")))?;

    let overlap_individuals = seeds.min(matched_advertiser);
    let top10 = at(0.10);
    let notes = if f.schema.notes.is_empty() { String::new() } else { format!("; {}", f.schema.notes.join("; ")) };
    let summary = ComputedSection {
        name: "summary".into(),
        description: format!(
            "Lookalike ({}, {}): {} features from {} columns{notes}. AUC and recall are measured on {:.0}% of the \
             seed and of the other users, held out from a model trained on the rest",
            kind.name(),
            model.training_summary(),
            f.schema.features.len(),
            f.columns,
            HELD_OUT * 100.0
        ),
        dimensions: vec![],
        metrics: vec![
            metric("publisher_individuals", MetricKind::Count, "distinct individuals in the publisher's base"),
            metric(
                "seed_individuals",
                MetricKind::Count,
                "publisher individuals matched to the advertiser's list: the seed the model learns from",
            ),
            metric("held_out_seed_individuals", MetricKind::Count, "seed individuals held out for evaluation"),
            metric(
                "auc",
                MetricKind::Number,
                "ROC AUC on the held-out users: the chance a held-out seed user ranks above a held-out other user",
            ),
            metric(
                "recall_at_10pct",
                MetricKind::Ratio,
                "share of the held-out seed users in the top 10% of the held-out users by score",
            ),
        ],
        rows: vec![ComputedRow {
            dimensions: vec![],
            cells: vec![
                ComputedCell::count(n as u64, n as u64),
                ComputedCell::count(seeds, overlap_individuals),
                ComputedCell::count(test_seed, test_seed),
                ComputedCell::number(auc, test_seed.min(test_n - test_seed)),
                ComputedCell::ratio(top10.found, test_seed, top10.found.min(top10.top - top10.found)),
            ],
        }],
    };
    let points: Vec<CurveCount> = CURVE.iter().map(|s| at(*s)).collect();
    let released = releasable_points(&points, k);
    let base_rate = test_seed as f64 / test_n as f64;
    let rows = CURVE
        .iter()
        .zip(&points)
        .zip(released)
        .map(|((share, p), ok)| {
            let individuals = if ok { p.found.min(p.top - p.found) } else { 0 };
            let audience = ((candidates as f64) * share).round() as u64;
            let precision = if p.top == 0 { 0.0 } else { p.found as f64 / p.top as f64 };
            ComputedRow {
                dimensions: vec![format!("{}%", (share * 100.0).round())],
                cells: vec![
                    ComputedCell::count(audience, audience),
                    ComputedCell::ratio(p.found, p.top, individuals),
                    ComputedCell::ratio(p.found, test_seed, individuals),
                    ComputedCell::number(if base_rate > 0.0 { precision / base_rate } else { 0.0 }, individuals),
                ],
            }
        })
        .collect();
    let reach = ComputedSection {
        name: "reach".into(),
        description: "Reach and expected precision by audience size: the top share of the ranking, measured on \
                      held-out users; a point is released only when it and what it adds to the previous released \
                      point are about k seed users and k others"
            .into(),
        dimensions: vec!["audience_share".into()],
        metrics: vec![
            metric(
                "audience",
                MetricKind::Count,
                "publisher users outside the seed in an audience of this share (what POST …/audience {size} takes)",
            ),
            metric("precision", MetricKind::Ratio, "share of the held-out top users who are seed users"),
            metric("recall", MetricKind::Ratio, "share of the held-out seed users in the held-out top users"),
            metric("lift", MetricKind::Number, "precision / the held-out seed rate: 1 is no better than random"),
        ],
        rows,
    };
    let artifacts = Artifacts { model_kind: kind.name().to_owned(), seed_individuals: seeds, model: exported, ranking };
    Ok((vec![summary, reach], artifacts))
}

pub(crate) async fn run(
    contract: &RoomContract,
    spec: &LookalikeComputation,
    tables: &HashMap<String, InputTable>,
) -> Result<(Vec<ComputedSection>, Artifacts)> {
    let matching = spec.matching.as_ref().ok_or_else(|| Error::Contract("lookalike needs `matching:`".to_owned()))?;
    let m = matched(contract, matching, tables, false).await?;
    let publisher = table(contract, &matching.publisher_table)?.clone();
    let p_input = input(tables, &publisher.name)?.clone();
    let segments = if matching.segment_table.is_empty() {
        None
    } else {
        let t = table(contract, &matching.segment_table)?.clone();
        let i = input(tables, &t.name)?.clone();
        Some((t, i))
    };
    let (contract, spec) = (contract.clone(), spec.clone());
    tokio::task::spawn_blocking(move || {
        compute(&contract, &spec, &publisher, &p_input, segments.as_ref().map(|(t, i)| (t, i)), &m)
    })
    .await
    .map_err(|e| Error::Computation(format!("lookalike training stopped: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_point_that_adds_fewer_than_k_to_the_last_released_one_is_suppressed() {
        let points = [
            CurveCount { top: 10, found: 8 },    // 2 others: under k = 5
            CurveCount { top: 40, found: 20 },   // 20 and 20
            CurveCount { top: 50, found: 23 },   // adds 3 seed: under k
            CurveCount { top: 100, found: 40 },  // adds 20 and 40 to the point at 40
            CurveCount { top: 200, found: 100 }, // adds 60 and 40
        ];
        assert_eq!(releasable_points(&points, 5), [false, true, false, true, true]);
    }

    proptest! {
        /// Whatever the counts: between any two consecutive released points (and from zero to the
        /// first) there are at least k seed users and k other users.
        #[test]
        fn released_bands_are_about_k_of_each(
            steps in proptest::collection::vec((0u64..40, 0u64..40), 1..10),
            k in 1u64..30,
        ) {
            let mut points = Vec::new();
            let (mut top, mut found) = (0, 0);
            for (seed, other) in steps {
                found += seed;
                top += seed + other;
                points.push(CurveCount { top, found });
            }
            let released = releasable_points(&points, k);
            let mut last = CurveCount { top: 0, found: 0 };
            for (p, ok) in points.iter().zip(released) {
                if ok {
                    prop_assert!(p.found - last.found >= k);
                    prop_assert!((p.top - p.found) - (last.top - last.found) >= k);
                    last = *p;
                }
            }
        }
    }
}
