//! Campaign measurement on the matched audience: reach and frequency of the publisher's exposure
//! log per campaign, and the conversion lift of exposed over unexposed matched customers.
//!
//! - **Reach** of a campaign: matched publisher individuals with at least one impression in it;
//!   **impressions**: theirs; **average frequency**: impressions / reach; the **frequency
//!   distribution** buckets the reached individuals by their impression count (1, 2, 3–5, 6–10,
//!   11+).
//! - **Lift**: matched advertiser individuals are *exposed* to a campaign when a publisher
//!   individual they matched had an impression in it, *unexposed* otherwise; a *converter* has a
//!   row in the advertiser's conversion table. Lift = (converters / exposed) / (unexposed converters
//!   / unexposed) − 1, with the log-method interval of the ratio of the two rates (Katz).
//!
//! Privacy argument (docs/computations/measurement.md): every cell carries the individuals it is
//! about and the release gate suppresses it under k. A conversion rate tells about the converters
//! *and* the non-converters of its group (a rate of 100% says every one converted), so a lift row is
//! about the smallest of the four groups (exposed and unexposed converters and non-converters).
//! Impressions of all campaigns sum to the released total and campaigns may be exclusive, so
//! campaign rows are suppressed complementarily against the "(all campaigns)" row, and frequency
//! buckets, which partition a campaign's reach, within each campaign.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{Array, ArrayRef};
use sealroom_proto::room::v1::{IdentifierKind, MeasurementComputation, RoomContract};

use sealroom_matching::sketch::{DEFAULT_PRECISION, ReachSketch};

use super::overlap::{self, complementary_rows, metric};
use super::{InputTable, linkage, segments};
use crate::error::{Error, Result};
use crate::report::{ComputedCell, ComputedRow, ComputedSection, MetricKind};

/// The row of all campaigns together.
pub(crate) const ALL: &str = "(all campaigns)";

/// Frequency buckets: (label, smallest count, largest count).
const BUCKETS: [(&str, u32, u32); 5] =
    [("1", 1, 1), ("2", 2, 2), ("3-5", 3, 5), ("6-10", 6, 10), ("11+", 11, u32::MAX)];

/// What one campaign (or all of them) counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CampaignCounts {
    pub reach: u64,
    pub impressions: u64,
    pub frequency: [u64; 5],
    /// Advertiser individuals paired with each bucket's individuals.
    pub frequency_partners: [u64; 5],
    pub exposed: u64,
    pub exposed_converters: u64,
    pub unexposed: u64,
    pub unexposed_converters: u64,
}

/// Everything measurement counts, before any suppression.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Measured {
    pub matched_advertiser: u64,
    pub matched_publisher: u64,
    pub has_conversions: bool,
    /// Per campaign, and [`ALL`].
    pub campaigns: BTreeMap<String, CampaignCounts>,
    /// Reached publisher individuals per campaign and [`ALL`] (for the reach sketches; never
    /// released).
    pub reached: BTreeMap<String, Vec<u32>>,
    /// Estimated reach over this and every earlier run, per campaign and [`ALL`].
    pub cumulative_reach: BTreeMap<String, u64>,
}

fn bucket(n: u32) -> usize {
    BUCKETS.iter().position(|(_, lo, hi)| (*lo..=*hi).contains(&n)).unwrap_or(BUCKETS.len() - 1)
}

/// Counts a campaign from its reached publisher individuals and their impression counts.
/// The matched advertiser individuals, and which converted: what every campaign is measured against.
struct Customers<'a> {
    matched: u64,
    matched_converters: u64,
    converted: &'a HashSet<u32>,
}

fn campaign_counts(
    impressions: &HashMap<u32, u32>,
    partners: &segments::Partners,
    customers: &Customers<'_>,
) -> CampaignCounts {
    let mut c = CampaignCounts { reach: impressions.len() as u64, ..Default::default() };
    let mut exposed: HashSet<u32> = HashSet::new();
    let mut bucket_partners: [HashSet<u32>; 5] = Default::default();
    for (p, n) in impressions {
        let b = bucket(*n);
        c.impressions += u64::from(*n);
        c.frequency[b] += 1;
        exposed.extend(partners.of(*p));
        bucket_partners[b].extend(partners.of(*p));
    }
    c.frequency_partners = bucket_partners.map(|s| s.len() as u64);
    // The exposed are matched customers (partners of matched publisher individuals).
    c.exposed = exposed.len() as u64;
    c.exposed_converters = exposed.iter().filter(|a| customers.converted.contains(a)).count() as u64;
    c.unexposed = customers.matched - c.exposed;
    c.unexposed_converters = customers.matched_converters - c.exposed_converters;
    c
}

/// Counts from the match, the exposure log's (person key, campaign) columns and the conversion
/// table's person keys.
pub(crate) fn measure(
    m: &overlap::Matched,
    exposure_keys: &dyn Array,
    campaigns: &ArrayRef,
    conversion_keys: Option<&dyn Array>,
    bounds: Option<Bounds>,
) -> Result<Measured> {
    let exposed_individual =
        linkage::individuals_by_key(m.publisher_person.as_ref(), exposure_keys, m.publisher_individuals)?;
    let campaigns = campaigns
        .as_any()
        .downcast_ref::<arrow::array::StringArray>()
        .ok_or_else(|| Error::Computation("the campaign column is not stored as strings".to_owned()))?;
    let partners = segments::Partners::new(m.pairs.tier_of.keys().copied(), m.publisher_individuals);
    let matched_advertiser: HashSet<u32> = m.pairs.tier_of.keys().map(|(a, _)| *a).collect();
    let converted: HashSet<u32> = match conversion_keys {
        Some(keys) => linkage::individuals_by_key(m.advertiser_person.as_ref(), keys, m.advertiser_individuals)?
            .into_iter()
            .flatten()
            .collect(),
        None => HashSet::new(),
    };

    // Impressions of matched publisher individuals, per campaign and over all campaigns.
    let mut per_campaign: HashMap<&str, HashMap<u32, u32>> = HashMap::new();
    let mut all: HashMap<u32, u32> = HashMap::new();
    if (0..campaigns.len()).any(|row| campaigns.is_valid(row) && campaigns.value(row) == ALL) {
        return Err(Error::InvalidData(format!(
            "the exposure log has a campaign named '{ALL}', which measurement reserves for the row of all campaigns; \
             rename it in the exposure table and upload it again"
        )));
    }
    for (row, individual) in exposed_individual.iter().enumerate() {
        let Some(p) = individual else { continue };
        // A publisher individual is matched when it has a partner.
        if partners.of(*p).is_empty() || campaigns.is_null(row) {
            continue;
        }
        *per_campaign.entry(campaigns.value(row)).or_default().entry(*p).or_default() += 1;
        *all.entry(*p).or_default() += 1;
    }
    if let Some(bounds) = bounds {
        all = bound_contributions(&mut per_campaign, bounds);
    }
    let customers = Customers {
        matched: matched_advertiser.len() as u64,
        matched_converters: matched_advertiser.iter().filter(|a| converted.contains(a)).count() as u64,
        converted: &converted,
    };
    let mut out = Measured {
        matched_advertiser: matched_advertiser.len() as u64,
        matched_publisher: (0..m.publisher_individuals as u32).filter(|p| !partners.of(*p).is_empty()).count() as u64,
        has_conversions: conversion_keys.is_some(),
        campaigns: BTreeMap::new(),
        reached: BTreeMap::new(),
        cumulative_reach: BTreeMap::new(),
    };
    // Every campaign of the log is listed, even one that reached no matched individual — except
    // under differential privacy, where only campaigns that reached someone within the bounds are
    // candidates (so one person can bring at most their own capped campaigns, and those of the
    // individual at the far end of the matching's alternating path).
    if bounds.is_none() {
        for name in campaigns.iter().flatten() {
            out.campaigns.entry(name.to_owned()).or_default();
        }
    }
    for (name, impressions) in &per_campaign {
        out.campaigns.insert((*name).to_owned(), campaign_counts(impressions, &partners, &customers));
        out.reached.insert((*name).to_owned(), impressions.keys().copied().collect());
    }
    out.campaigns.insert(ALL.to_owned(), campaign_counts(&all, &partners, &customers));
    out.reached.insert(ALL.to_owned(), all.keys().copied().collect());
    Ok(out)
}

/// The contribution bounds of a differentially private measurement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Campaigns one individual counts in: the first this many by name.
    pub campaigns: usize,
    /// Impressions one individual counts with, per campaign and in all campaigns (clamped).
    pub impressions: u64,
}

/// Applies the bounds: each individual keeps its first `campaigns` campaigns by name, with its
/// impressions in each clamped; returns every individual's impressions over the campaigns kept,
/// clamped too (the all-campaigns row).
fn bound_contributions(per_campaign: &mut HashMap<&str, HashMap<u32, u32>>, bounds: Bounds) -> HashMap<u32, u32> {
    let clamp = u32::try_from(bounds.impressions).unwrap_or(u32::MAX);
    let mut names: Vec<&str> = per_campaign.keys().copied().collect();
    names.sort_unstable();
    let mut kept: HashMap<u32, usize> = HashMap::new();
    let mut all: HashMap<u32, u32> = HashMap::new();
    for name in names {
        let Some(individuals) = per_campaign.get_mut(name) else { continue };
        individuals.retain(|p, n| {
            let k = kept.entry(*p).or_insert(0);
            if *k >= bounds.campaigns {
                return false;
            }
            *k += 1;
            *n = (*n).min(clamp);
            let total = all.entry(*p).or_insert(0);
            *total = total.saturating_add(*n).min(clamp);
            true
        });
    }
    per_campaign.retain(|_, individuals| !individuals.is_empty());
    all
}

/// The total L1 sensitivities of the counts and of the impressions [`noisy`] releases: adding one
/// person changes the matched publisher individuals by at most two (the one-to-one matching's
/// alternating path), and each counts in at most `campaigns` campaigns plus the all-campaigns row,
/// with one reach, one frequency bucket and at most `impressions` impressions in each; the matched
/// count moves by at most one.
pub(crate) fn sensitivities(bounds: Bounds) -> (u64, u64) {
    let rows = bounds.campaigns as u64 + 1;
    (1 + 2 * rows * 2, 2 * rows * bounds.impressions)
}

/// The measured counts with noise: counts with `counts`, impressions with `sums`. A campaign whose
/// noisy reach is under `threshold` is not listed; the all-campaigns row always is. Cumulative reach
/// and conversion lift are not released under differential privacy.
pub(crate) fn noisy(
    m: &Measured,
    counts: &mut crate::dp::Noise,
    sums: &mut crate::dp::Noise,
    threshold: u64,
) -> Measured {
    let matched = counts.count(m.matched_publisher);
    let mut out = Measured { matched_advertiser: matched, matched_publisher: matched, ..Default::default() };
    for (name, c) in &m.campaigns {
        let reach = counts.count(c.reach);
        let impressions = sums.count(c.impressions);
        let frequency = c.frequency.map(|f| counts.count(f));
        if name != ALL && reach < threshold {
            continue;
        }
        // One-to-one: a reached individual's customer is exposed, one each.
        out.campaigns.insert(
            name.clone(),
            CampaignCounts {
                reach,
                impressions,
                frequency,
                frequency_partners: frequency,
                exposed: reach,
                ..Default::default()
            },
        );
    }
    out
}

/// The stable bytes of each publisher individual's user id (the first row's key), the identifier
/// its reach sketches hold: the same user in another run, or another room of the same publisher,
/// gives the same bytes.
fn individual_keys(person: &dyn Array, of_row: &[u32], individuals: usize) -> Result<Vec<Vec<u8>>> {
    use arrow::array::AsArray;
    use arrow::datatypes::{DataType, Int64Type};
    let mut keys: Vec<Vec<u8>> = vec![Vec::new(); individuals];
    for (row, ind) in of_row.iter().enumerate() {
        let Some(slot) = keys.get_mut(*ind as usize) else { continue };
        if !slot.is_empty() || person.is_null(row) {
            continue;
        }
        *slot = match person.data_type() {
            DataType::Utf8 => person.as_string::<i32>().value(row).as_bytes().to_vec(),
            DataType::Int64 => person.as_primitive::<Int64Type>().value(row).to_le_bytes().to_vec(),
            other => {
                return Err(Error::Computation(format!(
                    "reach sketches need the publisher's user ids; its person column is {other}"
                )));
            }
        };
    }
    Ok(keys)
}

/// Merges this run's reached individuals into the stored sketches, and estimates cumulative reach.
fn update_sketches(measured: &mut Measured, keys: &[Vec<u8>], mut state: super::State) -> Result<super::State> {
    for (campaign, reached) in &measured.reached {
        let mut sketch = match state.get(campaign) {
            Some(bytes) => ReachSketch::from_bytes(bytes)
                .map_err(|e| Error::Computation(format!("the stored reach sketch of '{campaign}': {e}")))?,
            None => ReachSketch::with_precision(DEFAULT_PRECISION).map_err(|e| Error::Computation(e.to_string()))?,
        };
        for p in reached {
            if let Some(key) = keys.get(*p as usize) {
                sketch.insert(key);
            }
        }
        measured.cumulative_reach.insert(campaign.clone(), sketch.estimate().round() as u64);
        state.insert(campaign.clone(), sketch.to_bytes());
    }
    Ok(state)
}

/// Lift and its interval from the four counts; zeros where a rate is undefined (such a row is
/// about 0 individuals and never released).
pub(crate) fn lift(c: &CampaignCounts, z: f64) -> (f64, f64, f64) {
    let (ce, ne, cu, nu) =
        (c.exposed_converters as f64, c.exposed as f64, c.unexposed_converters as f64, c.unexposed as f64);
    if ce == 0.0 || ne == 0.0 || cu == 0.0 || nu == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let rr = (ce / ne) / (cu / nu);
    let se = (1.0 / ce - 1.0 / ne + 1.0 / cu - 1.0 / nu).max(0.0).sqrt();
    (rr - 1.0, rr * (-z * se).exp() - 1.0, rr * (z * se).exp() - 1.0)
}

/// The individuals a lift row is about: the smallest of its four groups.
fn lift_individuals(c: &CampaignCounts) -> u64 {
    [
        c.exposed_converters,
        c.exposed - c.exposed_converters,
        c.unexposed_converters,
        c.unexposed - c.unexposed_converters,
    ]
    .into_iter()
    .min()
    .unwrap_or(0)
}

pub(crate) fn sections(m: &Measured, z: f64, level: f64, k: u64, cumulative: bool) -> Vec<ComputedSection> {
    let overlap_individuals = m.matched_advertiser.min(m.matched_publisher);
    let names: Vec<&String> = m.campaigns.keys().filter(|n| n.as_str() != ALL).collect();
    let all = m.campaigns.get(ALL).cloned().unwrap_or_default();
    let counts: Vec<&CampaignCounts> = names.iter().map(|n| &m.campaigns[*n]).collect();

    // Campaign rows against the all-campaigns row: reach and impressions (impressions always sum
    // to the total; reaches do when campaigns are exclusive).
    let reach_hidden = complementary_rows(
        &[
            counts.iter().map(|c| (c.reach, c.reach.min(c.exposed))).collect(),
            counts.iter().map(|c| (c.impressions, c.reach.min(c.exposed))).collect(),
        ],
        k,
        vec![false; counts.len()],
    );
    let forced = |hidden: bool, individuals: u64| if hidden { 0 } else { individuals };
    let reach_row = |name: &str, c: &CampaignCounts, hidden: bool| {
        // About the reached publisher individuals and the customers they matched: the fewer.
        let n = forced(hidden, c.reach.min(c.exposed));
        let mut cells = vec![
            ComputedCell::count(c.reach, n),
            ComputedCell::count(c.impressions, n),
            ComputedCell::number(if c.reach == 0 { 0.0 } else { c.impressions as f64 / c.reach as f64 }, n),
            ComputedCell::ratio(c.reach, m.matched_publisher, n.min(overlap_individuals)),
        ];
        if cumulative {
            // A superset of this run's reach: about at least as many individuals.
            cells.push(ComputedCell::count(m.cumulative_reach.get(name).copied().unwrap_or(c.reach), n));
        }
        ComputedRow { dimensions: vec![name.to_owned()], cells }
    };
    let mut reach_rows: Vec<ComputedRow> =
        names.iter().zip(&counts).zip(&reach_hidden).map(|((n, c), h)| reach_row(n, c, *h)).collect();
    reach_rows.push(reach_row(ALL, &all, false));

    // Frequency buckets partition each campaign's reach.
    let mut frequency_rows = Vec::new();
    for (name, c, campaign_hidden) in names
        .iter()
        .map(|n| n.as_str())
        .zip(counts.iter().copied())
        .zip(reach_hidden.iter().copied())
        .map(|((n, c), h)| (n, c, h))
        .chain(std::iter::once((ALL, &all, false)))
    {
        let individuals: Vec<u64> = c.frequency.iter().zip(&c.frequency_partners).map(|(n, p)| (*n).min(*p)).collect();
        let cells: Vec<(u64, u64)> = c.frequency.iter().zip(&individuals).map(|(n, i)| (*n, *i)).collect();
        let hidden = complementary_rows(&[cells], k, vec![campaign_hidden; BUCKETS.len()]);
        for (((label, _, _), (n, i)), h) in BUCKETS.iter().zip(c.frequency.iter().zip(&individuals)).zip(hidden) {
            frequency_rows.push(ComputedRow {
                dimensions: vec![name.to_owned(), (*label).to_owned()],
                cells: vec![ComputedCell::count(*n, forced(h, *i))],
            });
        }
    }

    let mut sections = vec![
        ComputedSection {
            name: "summary".into(),
            description: "The matched audience the measurement is about".into(),
            dimensions: vec![],
            metrics: vec![
                metric("matched_advertiser_individuals", MetricKind::Count, "advertiser individuals matched"),
                metric("matched_publisher_individuals", MetricKind::Count, "publisher individuals matched"),
            ],
            rows: vec![ComputedRow {
                dimensions: vec![],
                cells: vec![
                    ComputedCell::count(m.matched_advertiser, overlap_individuals),
                    ComputedCell::count(m.matched_publisher, overlap_individuals),
                ],
            }],
        },
        ComputedSection {
            name: "reach".into(),
            description: format!(
                "Reach and frequency of each campaign on the matched audience, in campaign-name order, then {ALL}"
            ),
            dimensions: vec!["campaign".into()],
            metrics: {
                let mut metrics = vec![
                    metric("reach", MetricKind::Count, "matched publisher individuals with at least one impression"),
                    metric("impressions", MetricKind::Count, "impressions to the reached individuals"),
                    metric("average_frequency", MetricKind::Number, "impressions / reach"),
                    metric("reach_rate", MetricKind::Ratio, "reach / matched_publisher_individuals"),
                ];
                if cumulative {
                    metrics.push(metric(
                        "cumulative_reach",
                        MetricKind::Count,
                        "distinct matched publisher individuals reached in this and every earlier run of this \
                         computation (a HyperLogLog++ estimate, about 0.8% standard error)",
                    ));
                }
                metrics
            },
            rows: reach_rows,
        },
        ComputedSection {
            name: "frequency".into(),
            description: "Reached individuals by their number of impressions".into(),
            dimensions: vec!["campaign".into(), "impressions".into()],
            metrics: vec![metric("individuals", MetricKind::Count, "reached individuals with this many impressions")],
            rows: frequency_rows,
        },
    ];

    if m.has_conversions {
        let pct = (level * 100.0).round();
        // Exposed groups sum to the total when campaigns are exclusive: complementary on the
        // exposed converters and non-converters.
        let lift_hidden = complementary_rows(
            &[
                counts.iter().map(|c| (c.exposed_converters, lift_individuals(c))).collect(),
                counts.iter().map(|c| (c.exposed - c.exposed_converters, lift_individuals(c))).collect(),
            ],
            k,
            vec![false; counts.len()],
        );
        let lift_row = |name: &str, c: &CampaignCounts, hidden: bool| {
            let n = forced(hidden, lift_individuals(c).min(overlap_individuals));
            let (l, low, high) = lift(c, z);
            ComputedRow {
                dimensions: vec![name.to_owned()],
                cells: vec![
                    ComputedCell::count(c.exposed, n),
                    ComputedCell::count(c.exposed_converters, n),
                    ComputedCell::count(c.unexposed, n),
                    ComputedCell::count(c.unexposed_converters, n),
                    ComputedCell::ratio(c.exposed_converters, c.exposed, n),
                    ComputedCell::ratio(c.unexposed_converters, c.unexposed, n),
                    ComputedCell::number(l, n),
                    ComputedCell::number(low, n),
                    ComputedCell::number(high, n),
                ],
            }
        };
        let mut rows: Vec<ComputedRow> =
            names.iter().zip(&counts).zip(&lift_hidden).map(|((n, c), h)| lift_row(n, c, *h)).collect();
        rows.push(lift_row(ALL, &all, false));
        sections.push(ComputedSection {
            name: "conversion_lift".into(),
            description: format!(
                "Conversion of matched customers exposed to each campaign against the unexposed; lift intervals at \
                 {pct}% confidence (log method). A row is shown only when the exposed and unexposed converters and \
                 non-converters each reach k"
            ),
            dimensions: vec!["campaign".into()],
            metrics: vec![
                metric(
                    "exposed",
                    MetricKind::Count,
                    "matched advertiser individuals matched to a reached publisher individual",
                ),
                metric("exposed_converters", MetricKind::Count, "exposed individuals with a conversion"),
                metric("unexposed", MetricKind::Count, "matched advertiser individuals not exposed"),
                metric("unexposed_converters", MetricKind::Count, "unexposed individuals with a conversion"),
                metric("conversion_rate_exposed", MetricKind::Ratio, "exposed_converters / exposed"),
                metric("conversion_rate_unexposed", MetricKind::Ratio, "unexposed_converters / unexposed"),
                metric("lift", MetricKind::Number, "conversion_rate_exposed / conversion_rate_unexposed − 1"),
                metric("lift_low", MetricKind::Number, "lower bound of the lift's confidence interval"),
                metric("lift_high", MetricKind::Number, "upper bound of the lift's confidence interval"),
            ],
            rows,
        });
    }
    sections
}

pub(crate) async fn run(
    contract: &RoomContract,
    spec: &MeasurementComputation,
    tables: &HashMap<String, InputTable>,
    state: super::State,
    noise: Option<super::NoiseSource>,
) -> Result<(Vec<ComputedSection>, super::State, Option<crate::dp::NoiseInfo>)> {
    let matching = spec.matching.as_ref().ok_or_else(|| Error::Contract("measurement needs `matching:`".to_owned()))?;
    let (level, z) = sealroom_proto::confidence(spec.confidence)
        .ok_or_else(|| Error::Contract(format!("measurement.confidence {} is not offered", spec.confidence)))?;
    let k = u64::from(contract.effective_k());
    let bounds = noise.map(|n| Bounds { campaigns: n.campaigns, impressions: n.impressions });
    let m = overlap::matched(contract, matching, tables, bounds.is_some()).await?;
    let exposure_table = overlap::table(contract, &spec.exposure_table)?.clone();
    let exposure = overlap::input(tables, &spec.exposure_table)?.clone();
    let conversions = if spec.conversion_table.is_empty() {
        None
    } else {
        Some((
            overlap::table(contract, &spec.conversion_table)?.clone(),
            overlap::input(tables, &spec.conversion_table)?.clone(),
        ))
    };
    let (measured, state) = tokio::task::spawn_blocking(move || -> Result<(Measured, super::State)> {
        let campaign = exposure_table
            .columns_of_kind(IdentifierKind::Campaign)
            .next()
            .ok_or_else(|| Error::Contract(format!("table '{}' has no campaign column", exposure_table.name)))?;
        let keys = exposure.column(&exposure_table.name, linkage::person_column_name(&exposure_table))?;
        let campaigns = exposure.column(&exposure_table.name, &campaign.name)?;
        let conversion_keys = match &conversions {
            Some((t, input)) => Some(input.column(&t.name, linkage::person_column_name(t))?),
            None => None,
        };
        let mut measured = measure(&m, keys.as_ref(), &campaigns, conversion_keys.as_deref(), bounds)?;
        if bounds.is_some() {
            // Cumulative reach is not released under differential privacy: the sketches stay as they are.
            return Ok((measured, state));
        }
        let individual_keys =
            individual_keys(m.publisher_person.as_ref(), &m.publisher_of_row, m.publisher_individuals)?;
        let state = update_sketches(&mut measured, &individual_keys, state)?;
        Ok((measured, state))
    })
    .await
    .map_err(|e| Error::Computation(format!("measurement stopped: {e}")))??;
    match (noise, bounds) {
        (Some(source), Some(bounds)) => {
            let (count_sensitivity, sum_sensitivity) = sensitivities(bounds);
            let half = source.epsilon_micro / 2;
            let mut counts = crate::dp::Noise::from_os(half, count_sensitivity);
            let mut sums = crate::dp::Noise::from_os(source.epsilon_micro - half, sum_sensitivity);
            let threshold = counts.listing_threshold(2 * bounds.campaigns).max(k);
            let noisy = noisy(&measured, &mut counts, &mut sums, threshold);
            let mut info = crate::dp::NoiseInfo::of(&counts, None, threshold);
            info.epsilon = source.epsilon_micro as f64 / crate::dp::MICRO as f64;
            info.sums = Some(crate::dp::SumNoise {
                epsilon: sums.epsilon(),
                sensitivity: sums.sensitivity(),
                scale: sums.scale(),
                standard_deviation: sums.variance().sqrt(),
                max_campaigns_per_person: bounds.campaigns as u64,
                max_impressions_per_person: bounds.impressions,
            });
            Ok((sections(&noisy, z, level, k, false), state, Some(info)))
        }
        _ => Ok((sections(&measured, z, level, k, true), state, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_count() {
        assert_eq!([1, 2, 3, 5, 6, 10, 11, 500].map(bucket), [0, 1, 2, 2, 3, 3, 4, 4]);
    }

    #[test]
    fn lift_matches_a_hand_computation() {
        // 60 of 300 exposed converted (20%), 100 of 1,000 unexposed (10%): lift 1.0.
        let c = CampaignCounts {
            exposed: 300,
            exposed_converters: 60,
            unexposed: 1000,
            unexposed_converters: 100,
            ..Default::default()
        };
        let (l, low, high) = lift(&c, 1.959_963_984_540);
        assert!((l - 1.0).abs() < 1e-12);
        let se = (1.0f64 / 60.0 - 1.0 / 300.0 + 1.0 / 100.0 - 1.0 / 1000.0).sqrt();
        assert!((low - (2.0 * (-1.959_963_984_540 * se).exp() - 1.0)).abs() < 1e-12);
        assert!((high - (2.0 * (1.959_963_984_540 * se).exp() - 1.0)).abs() < 1e-12);
        assert!(low > 0.0, "a doubling on these numbers is significant: {low}");
        assert_eq!(lift_individuals(&c), 60);
        // A group where everyone converted is about its non-converters: 0.
        let all =
            CampaignCounts { exposed: 300, exposed_converters: 300, unexposed: 1000, unexposed_converters: 100, ..c };
        assert_eq!(lift_individuals(&all), 0);
    }
}
