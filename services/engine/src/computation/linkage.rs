//! Linking the two sides of an overlap, tier by tier, with the matching library.
//!
//! Individuals are what the data owner declares: rows with equal user ids are one individual; in a
//! table without a user id, rows sharing a key the overlap matches on are one individual. The tiers run in the contract's order — the
//! exact keys of `match_on`, the identity graphs, fuzzy matching of plaintext personal data, CLK
//! matching — and every distinct pair of matched individuals is credited to the first tier that
//! found it. Nothing here leaves the engine: the overlap turns the pairs into counts for the release
//! gate.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Int64Type, UInt64Type};
use sealroom_matching::clk::{self, Filters};
use sealroom_matching::exact::{Digest, IdentityGraph, join_digests};
use sealroom_matching::fuzzy::{self, FuzzyError, Records, Settings};
use sealroom_matching::graph::UnionFind;
use sealroom_matching::normalize::{self, Profile};
use sealroom_matching::{batch, normalize::Region};
use sealroom_proto::room::v1::{IdentifierKind, NormalizationProfile, OverlapComputation, Table};

use super::InputTable;
use crate::error::{Error, Result};
use crate::schema::ROW_ID_COLUMN;

/// Above this many CLK pairs, a room must carry blocking keys.
const CLK_ALL_PAIRS_LIMIT: u64 = 200_000_000;

/// One side of the overlap, all its rows in one batch.
pub(crate) struct Side<'a> {
    pub table: &'a Table,
    pub batch: RecordBatch,
    /// Individual of each row (dense, from 0).
    pub of_row: Vec<u32>,
    pub individuals: usize,
}

impl<'a> Side<'a> {
    pub(crate) fn new(table: &'a Table, input: &InputTable) -> Result<Self> {
        // Only the person key and the identifiers matching reads: not segments or other columns,
        // which would be copied for nothing.
        let keep: Vec<usize> = input
            .schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.name() == ROW_ID_COLUMN
                    || table.column(f.name()).is_some_and(|c| {
                        !matches!(c.identifier(), IdentifierKind::Unspecified | IdentifierKind::Segment)
                    })
            })
            .map(|(i, _)| i)
            .collect();
        let schema = Arc::new(input.schema.project(&keep)?);
        let batches: Vec<RecordBatch> =
            input.batches.iter().map(|b| b.project(&keep)).collect::<std::result::Result<_, _>>()?;
        let batch = concat_batches(&schema, &batches)?;
        let person = person_column(table, &batch)?;
        let (of_row, individuals) = dense(person.as_ref())?;
        Ok(Self { table, batch, of_row, individuals })
    }

    fn column(&self, name: &str) -> Result<&ArrayRef> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| Error::Computation(format!("table '{}' has no stored column '{name}'", self.table.name)))
    }

    /// The person key of every row: the user id, or the row id.
    pub(crate) fn person(&self) -> Result<ArrayRef> {
        person_column(self.table, &self.batch)
    }

    /// De-duplicates a table without user ids: rows that share a digest in any of `columns` become
    /// one individual (connected components, so a shares an email with b and b a phone with c:
    /// one person). A table with user ids keeps the individuals its owner declared.
    pub(crate) fn merge_rows_sharing<'c>(&mut self, columns: impl Iterator<Item = &'c FixedSizeBinaryArray>) {
        if self.table.user_id_column().is_some() {
            return;
        }
        let mut keyed: Vec<(&[u8], u32)> = Vec::new();
        for column in columns {
            for row in 0..column.len().min(self.of_row.len()) {
                if column.is_valid(row) {
                    keyed.push((column.value(row), row as u32));
                }
            }
        }
        if keyed.is_empty() {
            return;
        }
        keyed.sort_unstable();
        let mut uf = UnionFind::new(self.of_row.len());
        for w in keyed.windows(2) {
            if w[0].0 == w[1].0 {
                uf.union(w[0].1, w[1].1);
            }
        }
        let (labels, count) = uf.labels();
        self.of_row = labels;
        self.individuals = count;
    }
}

/// The name of a table's person key column: its user id, or the row id the engine adds.
pub(crate) fn person_column_name(table: &Table) -> &str {
    table.user_id_column().map_or(ROW_ID_COLUMN, |c| c.name.as_str())
}

fn person_column(table: &Table, batch: &RecordBatch) -> Result<ArrayRef> {
    let name = person_column_name(table);
    batch
        .column_by_name(name)
        .cloned()
        .ok_or_else(|| Error::Computation(format!("table '{}' has no stored column '{name}'", table.name)))
}

/// The individual of each row of another table, joined on the person key (`None` for a key the
/// side does not hold). Only for a side keyed by user ids, whose individuals are the dense codes of
/// its keys (validation requires a user id wherever another table joins a side).
pub(crate) fn individuals_by_key(
    publisher_keys: &dyn Array,
    keys: &dyn Array,
    publisher_individuals: usize,
) -> Result<Vec<Option<u32>>> {
    if publisher_keys.data_type() != keys.data_type() {
        return Err(Error::Computation(format!(
            "the segment table's user ids are {} but the publisher table's are {}; declare both with one type",
            keys.data_type(),
            publisher_keys.data_type()
        )));
    }
    // Dense ids over publisher keys then segment-table keys: the publisher's come first, so they
    // are exactly the publisher's individuals, and a key only the segment table holds gets a
    // larger id.
    let all = arrow::compute::concat(&[publisher_keys, keys])?;
    let (ids, _) = dense(all.as_ref())?;
    Ok(ids[publisher_keys.len()..].iter().map(|id| ((*id as usize) < publisher_individuals).then_some(*id)).collect())
}

/// Dense ids of integer keys that fill a compact range (at most 4 slots per row), by direct
/// addressing instead of hashing; `None` when the range is wider. Ids are given in first-seen
/// order, as [`dense`] gives them.
fn code_compact(values: &[i64]) -> Option<(Vec<u32>, usize)> {
    let (min, max) = (*values.iter().min()?, *values.iter().max()?);
    let span = usize::try_from(max.checked_sub(min)?).ok()?.checked_add(1)?;
    if span > values.len().saturating_mul(4).max(1024) {
        return None;
    }
    let mut slot = vec![u32::MAX; span];
    let mut next = 0u32;
    let of_row = values
        .iter()
        .map(|v| {
            let s = &mut slot[(v - min) as usize];
            if *s == u32::MAX {
                *s = next;
                next += 1;
            }
            *s
        })
        .collect();
    Some((of_row, next as usize))
}

/// Dense ids of the distinct values of a person column.
fn dense(column: &dyn Array) -> Result<(Vec<u32>, usize)> {
    // foldhash: several times faster than SipHash on integer keys, and randomly seeded per process,
    // so a participant cannot craft colliding user ids.
    fn code<K: std::hash::Hash + Eq>(keys: impl Iterator<Item = K>, n: usize) -> (Vec<u32>, usize) {
        let mut ids: HashMap<K, u32, foldhash::fast::RandomState> =
            HashMap::with_capacity_and_hasher(n, foldhash::fast::RandomState::default());
        let of_row = keys
            .map(|k| {
                let next = ids.len() as u32;
                *ids.entry(k).or_insert(next)
            })
            .collect();
        (of_row, ids.len())
    }
    let n = column.len();
    Ok(match column.data_type() {
        // Row ids are unique by construction.
        DataType::UInt64 if column.null_count() == 0 => {
            let values = column.as_primitive::<UInt64Type>();
            code(values.values().iter().copied(), n)
        }
        DataType::Int64 if column.null_count() == 0 => {
            let values = column.as_primitive::<Int64Type>().values();
            code_compact(values).unwrap_or_else(|| code(values.iter().copied(), n))
        }
        DataType::Utf8 if column.null_count() == 0 => {
            let values = column.as_string::<i32>();
            code(values.iter().map(Option::unwrap_or_default), n)
        }
        other => {
            return Err(Error::Computation(format!(
                "a person column of type {other}{} cannot identify individuals (user ids are strings or int64, \
                 never null)",
                if column.null_count() > 0 { " with nulls" } else { "" }
            )));
        }
    })
}

/// Distinct matched individual pairs, each with the first tier that found it.
#[derive(Debug, Default)]
pub(crate) struct Pairs {
    /// `(advertiser individual, publisher individual)` → index into `tiers`.
    pub tier_of: HashMap<(u32, u32), u8>,
    /// Tier names, in order.
    pub tiers: Vec<String>,
}

impl Pairs {
    fn start_tier(&mut self, name: &str) -> u8 {
        self.tiers.push(name.to_owned());
        (self.tiers.len() - 1) as u8
    }

    fn add(&mut self, a: u32, p: u32, tier: u8) {
        self.tier_of.entry((a, p)).or_insert(tier);
    }

    /// Keeps at most one partner per individual on each side: the greedy matching over the pairs in
    /// the fixed order (tier, advertiser individual, publisher individual), a pair kept when neither
    /// of its individuals has one yet. This is the contribution bound of differential privacy:
    /// adding one person to either table changes this matching by one alternating path starting at
    /// that person, so the matched individuals of each side change by at most two (the person and
    /// the path's other end) and the number of pairs by at most one (docs/privacy.md).
    pub(crate) fn one_to_one(&mut self) {
        let mut all: Vec<(u8, u32, u32)> = self.tier_of.iter().map(|(&(a, p), &t)| (t, a, p)).collect();
        all.sort_unstable();
        let mut taken_a = std::collections::HashSet::new();
        let mut taken_p = std::collections::HashSet::new();
        self.tier_of.clear();
        for (t, a, p) in all {
            if !taken_a.contains(&a) && !taken_p.contains(&p) {
                taken_a.insert(a);
                taken_p.insert(p);
                self.tier_of.insert((a, p), t);
            }
        }
    }
}

fn profile_of(spec: &OverlapComputation) -> Profile {
    profile(spec.normalization())
}

/// The matching library's profile for a contract's.
pub(crate) fn profile(p: NormalizationProfile) -> Profile {
    match p {
        NormalizationProfile::Sealroom => Profile::Sealroom,
        NormalizationProfile::Google => Profile::Google,
        NormalizationProfile::Meta => Profile::Meta,
        NormalizationProfile::Uid2 => Profile::Uid2,
    }
}

/// The exact tiers, in precedence order: the contract's list, or every kind both sides can match on.
pub(crate) fn exact_tiers(spec: &OverlapComputation, advertiser: &Table, publisher: &Table) -> Vec<IdentifierKind> {
    let listed: Vec<IdentifierKind> = spec.match_on().collect();
    if !listed.is_empty() {
        return listed;
    }
    let has = |t: &Table, kind: IdentifierKind| t.columns.iter().any(|c| c.identifier().exact_tier() == Some(kind));
    [IdentifierKind::HashedEmail, IdentifierKind::HashedPhone, IdentifierKind::HashedSharedId]
        .into_iter()
        .filter(|k| has(advertiser, *k) && has(publisher, *k))
        .collect()
}

pub(crate) fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The digest columns of a table that take part in an exact tier: hashed columns as stored, and
/// plaintext emails and phones normalized under the overlap's profile and hashed here.
fn digest_columns(
    table: &Table,
    batch: &RecordBatch,
    tier: IdentifierKind,
    profile: Profile,
    region: Region,
) -> Result<Vec<FixedSizeBinaryArray>> {
    let mut out = Vec::new();
    for c in table.columns.iter().filter(|c| c.identifier().exact_tier() == Some(tier)) {
        let array = batch
            .column_by_name(&c.name)
            .ok_or_else(|| Error::Computation(format!("table '{}' has no stored column '{}'", table.name, c.name)))?;
        let digests = match c.identifier() {
            IdentifierKind::Email | IdentifierKind::Phone => {
                let strings = array
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::Computation(format!("column '{}' is not stored as strings", c.name)))?;
                if c.identifier() == IdentifierKind::Email {
                    batch::hash_emails(strings, profile, threads()).digests
                } else {
                    batch::hash_phones(strings, region, profile, threads()).digests
                }
            }
            _ => array
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .cloned()
                .ok_or_else(|| Error::Computation(format!("column '{}' is not stored as digests", c.name)))?,
        };
        out.push(digests);
    }
    Ok(out)
}

/// The identity graphs as one graph: every row links its hashed identifiers (the first to each of
/// the others).
fn identity_graph(graphs: &[(&Table, RecordBatch)]) -> IdentityGraph {
    let mut graph = IdentityGraph::default();
    for (table, batch) in graphs {
        let columns: Vec<&FixedSizeBinaryArray> = table
            .columns
            .iter()
            .filter(|c| c.identifier().is_hashed_match_key())
            .filter_map(|c| batch.column_by_name(&c.name))
            .filter_map(|a| a.as_any().downcast_ref::<FixedSizeBinaryArray>())
            .collect();
        for row in 0..batch.num_rows() {
            let mut digests =
                columns.iter().filter(|c| c.is_valid(row)).filter_map(|c| <Digest>::try_from(c.value(row)).ok());
            if let Some(first) = digests.next() {
                graph.edges.extend(digests.map(|d| (first, d)));
            }
        }
    }
    graph
}

/// The plaintext personal data of a side, under the column names fuzzy settings use.
fn fuzzy_columns(side: &Side<'_>, kinds: &[IdentifierKind]) -> Result<Vec<(String, Vec<Option<String>>)>> {
    let mut out = Vec::new();
    for kind in kinds {
        let Some(name) = kind.fuzzy_column() else { continue };
        // The first column of the kind (a table rarely has two given-name columns).
        let Some(c) = side.table.columns_of_kind(*kind).next() else { continue };
        let array = side.column(&c.name)?;
        let values: Vec<Option<String>> = match array.data_type() {
            DataType::Utf8 => array.as_string::<i32>().iter().map(|v| v.map(str::to_owned)).collect(),
            DataType::Date32 => {
                let dates = array.as_primitive::<arrow::datatypes::Date32Type>();
                (0..dates.len())
                    .map(|i| {
                        dates.value_as_date(i).filter(|_| dates.is_valid(i)).map(|d| d.format("%Y%m%d").to_string())
                    })
                    .collect()
            }
            other => {
                return Err(Error::Computation(format!("column '{}' of type {other} cannot be fuzzy-matched", c.name)));
            }
        };
        out.push((name.to_owned(), values));
    }
    Ok(out)
}

/// Fuzzy-matching settings: the contract's YAML, or settings inferred from the columns.
/// Returns the settings and whether the blocking rules were inferred (and so may be fitted).
pub(crate) fn fuzzy_settings(spec: &OverlapComputation, columns: &[String]) -> Result<(Settings, bool)> {
    let f = spec.fuzzy.clone().unwrap_or_default();
    let mut settings = if f.settings_yaml.is_empty() {
        Settings::default()
    } else {
        Settings::from_yaml(&f.settings_yaml)
            .map_err(|e| Error::Contract(format!("overlap.fuzzy.settings is not valid linkage settings: {e}")))?
    };
    let rules_inferred = settings.fill_inferred(columns);
    settings.threshold = if f.threshold == 0.0 { sealroom_proto::DEFAULT_FUZZY_THRESHOLD } else { f.threshold };
    settings.one_to_one = !f.many_to_many;
    if settings.comparisons.is_empty() {
        return Err(Error::Contract(
            "fuzzy matching has nothing to compare: the tables share no plaintext personal data column".into(),
        ));
    }
    Ok((settings, rules_inferred))
}

/// The CLK filters and (if present) blocking keys of a side.
fn clk_side(side: &Side<'_>) -> Result<(Filters, Option<Vec<Vec<u64>>>)> {
    let table = side.table;
    let column = table
        .columns_of_kind(IdentifierKind::Clk)
        .next()
        .ok_or_else(|| Error::Contract(format!("table '{}' has no clk column", table.name)))?;
    let array = side.column(&column.name)?;
    let binary = array.as_binary_opt::<i32>().ok_or_else(|| {
        Error::Computation(format!("column '{}' is stored as {}, not binary", column.name, array.data_type()))
    })?;
    let first = (0..binary.len()).find(|i| binary.is_valid(*i)).map(|i| binary.value(i).len()).unwrap_or(128);
    if first == 0 || first % 8 != 0 {
        return Err(Error::InvalidData(format!(
            "table '{}' column '{}': CLKs of {first} bytes; they must be a whole number of 64-bit words \
             (sealroom hash --clk writes 128 bytes)",
            table.name, column.name
        )));
    }
    let mut filters = Filters::new(first / 8);
    let empty = vec![0u8; first];
    for i in 0..binary.len() {
        let bytes = if binary.is_valid(i) { binary.value(i) } else { &empty };
        filters.push_bytes(bytes).map_err(|e| {
            Error::InvalidData(format!(
                "table '{}' column '{}' row {i}: {e}; every CLK of a room has the same size",
                table.name, column.name
            ))
        })?;
    }
    let keys = match table.columns_of_kind(IdentifierKind::ClkBlockingKeys).next() {
        None => None,
        Some(c) => {
            let lists =
                side.column(&c.name)?.as_list_opt::<i32>().cloned().ok_or_else(|| {
                    Error::Computation(format!("column '{}' is not stored as a list of strings", c.name))
                })?;
            let mut keys = Vec::with_capacity(lists.len());
            for i in 0..lists.len() {
                let mut row = Vec::new();
                if lists.is_valid(i) {
                    let values = lists.value(i);
                    let strings = values.as_string::<i32>();
                    for key in strings.iter().flatten() {
                        // The key itself is not quoted: the caller may be the other party.
                        let parsed = clk::key_from_hex(key).ok_or_else(|| {
                            Error::InvalidData(format!(
                                "table '{}' column '{}' row {i}: a blocking key that is not 16 hex characters \
                                     (sealroom hash --clk writes them); re-encode the table",
                                table.name, c.name
                            ))
                        })?;
                        row.push(parsed);
                    }
                }
                keys.push(row);
            }
            Some(keys)
        }
    };
    Ok((filters, keys))
}

/// Runs every tier the overlap asks for.
pub(crate) fn link(
    spec: &OverlapComputation,
    advertiser: &mut Side<'_>,
    publisher: &mut Side<'_>,
    graphs: &[(&Table, RecordBatch)],
) -> Result<Pairs> {
    let profile = profile_of(spec);
    let region = normalize::region(if spec.phone_region.is_empty() { "US" } else { &spec.phone_region })
        .map_err(|e| Error::Contract(format!("overlap.phone_region: {e}")))?;
    let mut pairs = Pairs::default();
    let tiers = exact_tiers(spec, advertiser.table, publisher.table);
    let mut by_tier = Vec::with_capacity(tiers.len());
    for kind in &tiers {
        let a = digest_columns(advertiser.table, &advertiser.batch, *kind, profile, region)?;
        let p = digest_columns(publisher.table, &publisher.batch, *kind, profile, region)?;
        by_tier.push((a, p));
    }
    // A side without user ids: rows sharing a key the overlap matches on are one person.
    advertiser.merge_rows_sharing(by_tier.iter().flat_map(|(a, _)| a));
    publisher.merge_rows_sharing(by_tier.iter().flat_map(|(_, p)| p));
    let mut a_digests = Vec::new();
    let mut p_digests = Vec::new();
    for (kind, (a, p)) in tiers.iter().zip(by_tier) {
        let tier = pairs.start_tier(kind.file_name());
        for ac in &a {
            for pc in &p {
                for (ar, pr) in join_digests(ac, pc, threads()) {
                    pairs.add(advertiser.of_row[ar as usize], publisher.of_row[pr as usize], tier);
                }
            }
        }
        a_digests.extend(a);
        p_digests.extend(p);
    }

    if !graphs.is_empty() {
        let tier = pairs.start_tier("identity_graph");
        let components = identity_graph(graphs).components();
        let component_individuals = |side: &Side<'_>, columns: &[FixedSizeBinaryArray]| {
            let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
            for column in columns {
                for row in 0..column.len() {
                    if column.is_null(row) {
                        continue;
                    }
                    let Ok(d) = <Digest>::try_from(column.value(row)) else { continue };
                    if let Some(c) = components.get(&d) {
                        out.entry(*c).or_default().push(side.of_row[row]);
                    }
                }
            }
            for v in out.values_mut() {
                v.sort_unstable();
                v.dedup();
            }
            out
        };
        let a = component_individuals(advertiser, &a_digests);
        let p = component_individuals(publisher, &p_digests);
        for (component, a_inds) in &a {
            if let Some(p_inds) = p.get(component) {
                for ai in a_inds {
                    for pi in p_inds {
                        pairs.add(*ai, *pi, tier);
                    }
                }
            }
        }
    }

    if spec.fuzzy.is_some() {
        let tier = pairs.start_tier("fuzzy");
        let kinds: Vec<IdentifierKind> = [
            IdentifierKind::GivenName,
            IdentifierKind::Surname,
            IdentifierKind::DateOfBirth,
            IdentifierKind::StreetAddress,
            IdentifierKind::City,
            IdentifierKind::Postcode,
            IdentifierKind::Email,
            IdentifierKind::Phone,
        ]
        .into_iter()
        .filter(|k| {
            advertiser.table.columns_of_kind(*k).next().is_some()
                && publisher.table.columns_of_kind(*k).next().is_some()
        })
        .collect();
        let a_raw = fuzzy_columns(advertiser, &kinds)?;
        let p_raw = fuzzy_columns(publisher, &kinds)?;
        let names: Vec<String> = a_raw.iter().map(|(n, _)| n.clone()).collect();
        let (mut settings, rules_inferred) = fuzzy_settings(spec, &names)?;
        let ids = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>();
        let prepare = |n: usize, raw: &[(String, Vec<Option<String>>)], settings: &Settings| {
            Records::prepare(ids(n), raw, settings).map_err(|e| Error::Contract(format!("overlap.fuzzy: {e}")))
        };
        let l = prepare(advertiser.batch.num_rows(), &a_raw, &settings)?;
        let r = prepare(publisher.batch.num_rows(), &p_raw, &settings)?;
        if !l.is_empty() && !r.is_empty() {
            if rules_inferred {
                let budget = fuzzy::default_pair_budget(l.len(), r.len());
                // The notes carry pair counts (data-derived): only how many rules changed is logged.
                let notes = fuzzy::fit_blocking(&mut settings, &l, Some(&r), budget);
                tracing::info!(rules_changed = notes.len(), "fuzzy blocking fitted to the data");
            }
            let result = fuzzy::link(&l, &r, &settings).map_err(|e| match e {
                // Pair counts depend on the other party's data: they stay inside.
                FuzzyError::TooManyCandidates { rule, .. } => Error::FailedPrecondition(format!(
                    "fuzzy matching: blocking rule [{rule}] generates more candidate pairs than max_candidate_pairs \
                     allows; make it stricter in overlap.fuzzy.settings (the count is not shown: it depends on the \
                     other party's data)"
                )),
                other => Error::Contract(format!("overlap.fuzzy: {other}")),
            })?;
            for m in result.matches {
                pairs.add(advertiser.of_row[m.left as usize], publisher.of_row[m.right as usize], tier);
            }
        }
    }

    if let Some(options) = &spec.clk {
        let tier = pairs.start_tier("clk");
        let threshold =
            if options.threshold == 0.0 { sealroom_proto::DEFAULT_CLK_THRESHOLD } else { options.threshold };
        let (af, ak) = clk_side(advertiser)?;
        let (pf, pk) = clk_side(publisher)?;
        if !af.is_empty() && !pf.is_empty() {
            if af.get(0).len() != pf.get(0).len() {
                return Err(Error::InvalidData(format!(
                    "the CLKs of '{}' have {} bits and those of '{}' {}; both sides must encode with the same schema",
                    advertiser.table.name,
                    af.get(0).len() * 64,
                    publisher.table.name,
                    pf.get(0).len() * 64
                )));
            }
            let (mut matches, _) = match (&ak, &pk) {
                (Some(ak), Some(pk)) => clk::compare_blocked(&af, ak, Some((&pf, pk.as_slice())), threshold),
                _ => {
                    let all = af.len() as u64 * pf.len() as u64;
                    // The count is not in the message: it would tell the caller the other party's
                    // row count.
                    if all > CLK_ALL_PAIRS_LIMIT {
                        return Err(Error::FailedPrecondition(
                            "these tables are too large to compare every pair of CLKs; upload clk_blocking_keys \
                             columns (sealroom hash --clk writes them) so that only pairs sharing a key are compared"
                                .into(),
                        ));
                    }
                    clk::compare_all(&af, Some(&pf), threshold, threads())
                }
            };
            if !options.many_to_many {
                matches = clk::one_to_one(matches);
            }
            for m in matches {
                pairs.add(advertiser.of_row[m.left as usize], publisher.of_row[m.right as usize], tier);
            }
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::Pairs;

    fn greedy(edges: &[(u8, u32, u32)]) -> BTreeSet<(u32, u32)> {
        let mut pairs = Pairs { tiers: vec!["a".into(), "b".into()], ..Default::default() };
        for (t, a, p) in edges {
            pairs.add(*a, *p, *t);
        }
        pairs.one_to_one();
        pairs.tier_of.keys().copied().collect()
    }

    fn side(m: &BTreeSet<(u32, u32)>, advertiser: bool) -> BTreeSet<u32> {
        m.iter().map(|(a, p)| if advertiser { *a } else { *p }).collect()
    }

    proptest! {
        /// The contribution bound differential privacy relies on: adding one individual (with any
        /// edges) changes the greedy matching's size by at most 1 and each side's matched set by at
        /// most 2 individuals (the new one and the far end of one alternating path); every
        /// individual keeps at most one partner.
        #[test]
        fn adding_one_person_moves_the_matching_by_one_path(
            edges in proptest::collection::vec((0u8..2, 0u32..12, 0u32..12), 0..60),
            new_edges in proptest::collection::vec((0u8..2, 0u32..12), 0..6),
            advertiser in any::<bool>(),
        ) {
            let before = greedy(&edges);
            // The new individual is number 12 on its side (any fixed order of the others is kept).
            let mut with = edges.clone();
            with.extend(new_edges.iter().map(|(t, other)| if advertiser { (*t, 12, *other) } else { (*t, *other, 12) }));
            let after = greedy(&with);
            prop_assert!(after.len().abs_diff(before.len()) <= 1);
            for adv in [true, false] {
                let (b, a) = (side(&before, adv), side(&after, adv));
                prop_assert_eq!(a.len(), after.len(), "one partner per individual");
                prop_assert!(b.symmetric_difference(&a).count() <= 2);
            }
        }
    }
}
