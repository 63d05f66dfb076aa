//! The declarative room file (YAML) and its conversion to and from the canonical contract.
//!
//! The file mirrors the protobuf contract field for field, with enums written in snake case
//! (`type: sha256`, `identifier: hashed_email`, `roles: [data_owner, analyst]`) and a computation's kind
//! given by the one key that is present (`overlap:`, `affinity:`, `measurement:`, `sql:` or
//! `lookalike:`). Unknown keys are errors. A file is parsed ([`RoomFile::parse`]), converted to a
//! contract, and validated; every error names the field (`tables[1].columns[2].type`) and says what
//! is wrong.

use serde::{Deserialize, Serialize};

use crate::room::v1 as pb;
use crate::validate::{ValidationErrors, validate};

/// A room file that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum RoomFileError {
    /// The text is not YAML of the room file's shape.
    #[error("{source_name}: {message}")]
    Syntax { source_name: String, message: String },
    /// The file parsed but the contract it describes is invalid.
    #[error("{source_name}: the room contract is invalid:\n{errors}")]
    Invalid { source_name: String, errors: ValidationErrors },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub participants: Vec<ParticipantFile>,
    pub tables: Vec<TableFile>,
    #[serde(default)]
    pub computations: Vec<ComputationFile>,
    #[serde(default)]
    pub privacy: PrivacyFile,
    #[serde(default)]
    pub attestation: AttestationFile,
    #[serde(default, skip_serializing_if = "AuthenticationFile::is_default")]
    pub authentication: AuthenticationFile,
    #[serde(default, skip_serializing_if = "GovernanceFile::is_default")]
    pub governance: GovernanceFile,
}

/// Whether the room may change after it is created (see `docs/governance.md`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceFile {
    /// Participants may propose new versions of the contract; each takes effect once every data owner
    /// it touches has approved it. Without it the room is immutable.
    #[serde(default)]
    pub interactive: bool,
    /// A participant may add computations over only its own tables, for only itself, without approval.
    #[serde(default)]
    pub development_mode: bool,
}

impl GovernanceFile {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthenticationFile {
    /// The longest a participant's token may live, in seconds (default one day, at most 30 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_token_lifetime_seconds: Option<u32>,
}

impl AuthenticationFile {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantFile {
    pub id: String,
    pub name: String,
    pub roles: Vec<RoleFile>,
    pub credential: Option<CredentialFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleFile {
    DataOwner,
    Analyst,
    Auditor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    /// ECDSA P-256 public keys that sign the participant's tokens, each a PEM `PUBLIC KEY` block (or its
    /// base64 body on one line); `sealroom keygen` makes a key pair.
    pub issuer_keys: Vec<String>,
    /// Token ids (`jti`) revoked before they expire.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_token_ids: Vec<String>,
}

/// The base64 body of a PEM block (armor lines and whitespace dropped); a one-line base64 key is kept.
pub fn pem_body(text: &str) -> String {
    text.lines().filter(|l| !l.trim_start().starts_with("-----")).flat_map(|l| l.split_whitespace()).collect()
}

/// A base64 DER public key as a PEM `PUBLIC KEY` block (64 characters a line).
pub fn public_key_pem(base64_der: &str) -> String {
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in base64_der.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub owner: String,
    pub columns: Vec<ColumnFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnFile {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnTypeFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identifier: Option<IdentifierFile>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nullable: bool,
    /// Email and phone columns: the normalization rules (sealroom when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<ProfileFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileFile {
    Sealroom,
    Google,
    Meta,
    Uid2,
}

impl ProfileFile {
    pub fn to_proto(self) -> pb::NormalizationProfile {
        match self {
            Self::Sealroom => pb::NormalizationProfile::Sealroom,
            Self::Google => pb::NormalizationProfile::Google,
            Self::Meta => pb::NormalizationProfile::Meta,
            Self::Uid2 => pb::NormalizationProfile::Uid2,
        }
    }

    /// `None` for the default (sealroom), so that files stay short.
    pub fn from_proto(profile: pb::NormalizationProfile) -> Option<Self> {
        match profile {
            pb::NormalizationProfile::Sealroom => None,
            pb::NormalizationProfile::Google => Some(Self::Google),
            pb::NormalizationProfile::Meta => Some(Self::Meta),
            pb::NormalizationProfile::Uid2 => Some(Self::Uid2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnTypeFile {
    String,
    Int64,
    Float64,
    Bool,
    Date,
    Timestamp,
    Sha256,
    StringList,
    Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierFile {
    HashedEmail,
    HashedPhone,
    UserId,
    Segment,
    HashedSharedId,
    Email,
    Phone,
    GivenName,
    Surname,
    StreetAddress,
    City,
    Postcode,
    DateOfBirth,
    Clk,
    ClkBlockingKeys,
    Campaign,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputationFile {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub run_by: Vec<String>,
    pub results_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliver_to: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<OverlapFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurement: Option<CampaignMeasurementFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<SqlFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookalike: Option<LookalikeFile>,
}

/// `lookalike:` — a lookalike audience trained on the matched seed (docs/models/lookalike.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookalikeFile {
    /// How the tables are matched: the options of an `overlap:` section.
    pub matching: OverlapFile,
    /// Publisher-table columns to train on; every non-identifier and segment column when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// `logistic` (when absent) or `forest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Participants who may receive the trained model; nobody when absent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_to: Vec<String>,
    /// The publisher who may take audiences (the owner of the publisher table); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience_to: Option<String>,
    /// Largest audience one request may take; the whole base outside the seed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_audience: Option<u64>,
    /// Seed of the held-out split and the model's randomness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl LookalikeFile {
    fn to_proto(&self) -> pb::LookalikeComputation {
        pb::LookalikeComputation {
            matching: Some(self.matching.to_proto()),
            features: self.features.clone(),
            model: self.model.clone().unwrap_or_default(),
            model_to: self.model_to.clone(),
            audience_to: self.audience_to.clone().unwrap_or_default(),
            max_audience: self.max_audience.unwrap_or(0),
            seed: self.seed.unwrap_or(0),
        }
    }

    fn from_proto(l: &pb::LookalikeComputation) -> Self {
        Self {
            matching: l.matching.as_ref().map(OverlapFile::from_proto).unwrap_or_default(),
            features: l.features.clone(),
            model: (!l.model.is_empty()).then(|| l.model.clone()),
            model_to: l.model_to.clone(),
            audience_to: (!l.audience_to.is_empty()).then(|| l.audience_to.clone()),
            max_audience: (l.max_audience != 0).then_some(l.max_audience),
            seed: (l.seed != 0).then_some(l.seed),
        }
    }
}

/// `sql:` — one aggregate query over declared tables (docs/computations/sql.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlFile {
    pub query: String,
    /// The room tables the query reads.
    pub tables: Vec<String>,
    /// When present, the match is readable as the table `matched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<OverlapFile>,
}

impl ComputationFile {
    /// The computation's kind: the one key present. With none or several present the contract has
    /// no kind, and validation says which keys to choose from.
    fn kind(&self) -> Option<pb::computation::Kind> {
        if self.kinds() != 1 {
            return None;
        }
        if let Some(l) = &self.lookalike {
            return Some(pb::computation::Kind::Lookalike(l.to_proto()));
        }
        if let Some(q) = &self.sql {
            return Some(pb::computation::Kind::Sql(pb::SqlComputation {
                query: q.query.clone(),
                tables: q.tables.clone(),
                matching: q.matching.as_ref().map(OverlapFile::to_proto),
            }));
        }
        match (&self.overlap, &self.affinity, &self.measurement) {
            (Some(o), None, None) => Some(pb::computation::Kind::Overlap(o.to_proto())),
            (None, Some(a), None) => Some(pb::computation::Kind::Affinity(pb::AffinityComputation {
                matching: Some(a.matching.to_proto()),
                confidence: a.confidence.unwrap_or(0.0),
                top: a.top.unwrap_or(0),
            })),
            (None, None, Some(m)) => Some(pb::computation::Kind::Measurement(pb::MeasurementComputation {
                matching: Some(m.matching.to_proto()),
                exposure_table: m.exposure_table.clone(),
                conversion_table: m.conversion_table.clone().unwrap_or_default(),
                confidence: m.confidence.unwrap_or(0.0),
            })),
            _ => None,
        }
    }

    /// How many kinds the computation names (exactly one is valid).
    fn kinds(&self) -> usize {
        usize::from(self.overlap.is_some())
            + usize::from(self.affinity.is_some())
            + usize::from(self.measurement.is_some())
            + usize::from(self.sql.is_some())
            + usize::from(self.lookalike.is_some())
    }
}

/// `measurement:` — reach, frequency and conversion lift over a match
/// (docs/computations/measurement.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignMeasurementFile {
    /// How the tables are matched: the options of an `overlap:` section.
    pub matching: OverlapFile,
    /// The publisher's impressions (user_id and campaign columns, a row per impression).
    pub exposure_table: String,
    /// The advertiser's conversions (a user_id column, a row per conversion); absent: no lift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_table: Option<String>,
    /// Confidence level of the lift intervals: 0.8, 0.9, 0.95 (when absent) or 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// `affinity:` — top-affinity segments over a match (docs/computations/affinity.md).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffinityFile {
    /// How the tables are matched: the options of an `overlap:` section.
    pub matching: OverlapFile,
    /// Confidence level of the intervals: 0.8, 0.9, 0.95 (when absent) or 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Ranked segments to release, best first; all that reach k when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlapFile {
    pub advertiser_table: String,
    pub publisher_table: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_on: Vec<IdentifierFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_table: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<ProfileFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_region: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identity_graphs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuzzy: Option<FuzzyFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clk: Option<ClkFile>,
}

impl OverlapFile {
    pub fn to_proto(&self) -> pb::OverlapComputation {
        pb::OverlapComputation {
            advertiser_table: self.advertiser_table.clone(),
            publisher_table: self.publisher_table.clone(),
            match_on: self.match_on.iter().map(|k| k.to_proto() as i32).collect(),
            segment_table: self.segment_table.clone().unwrap_or_default(),
            normalization: self.normalization.map_or(0, |p| p.to_proto() as i32),
            phone_region: self.phone_region.clone().unwrap_or_default(),
            identity_graphs: self.identity_graphs.clone(),
            fuzzy: self.fuzzy.as_ref().map(|f| pb::FuzzyMatching {
                threshold: f.threshold.unwrap_or(0.0),
                many_to_many: f.many_to_many,
                // Rendering a parsed YAML value cannot fail.
                settings_yaml: f
                    .settings
                    .as_ref()
                    .map(|v| serde_yaml_ng::to_string(v).unwrap_or_default())
                    .unwrap_or_default(),
            }),
            clk: self
                .clk
                .as_ref()
                .map(|c| pb::ClkMatching { threshold: c.threshold.unwrap_or(0.0), many_to_many: c.many_to_many }),
        }
    }

    pub fn from_proto(o: &pb::OverlapComputation) -> Self {
        Self {
            advertiser_table: o.advertiser_table.clone(),
            publisher_table: o.publisher_table.clone(),
            match_on: o.match_on().filter_map(IdentifierFile::from_proto).collect(),
            segment_table: (!o.segment_table.is_empty()).then(|| o.segment_table.clone()),
            normalization: ProfileFile::from_proto(o.normalization()),
            phone_region: (!o.phone_region.is_empty()).then(|| o.phone_region.clone()),
            identity_graphs: o.identity_graphs.clone(),
            fuzzy: o.fuzzy.as_ref().map(|f| FuzzyFile {
                threshold: (f.threshold != 0.0).then_some(f.threshold),
                many_to_many: f.many_to_many,
                settings: (!f.settings_yaml.is_empty())
                    .then(|| serde_yaml_ng::from_str(&f.settings_yaml).ok())
                    .flatten(),
            }),
            clk: o.clk.as_ref().map(|c| ClkFile {
                threshold: (c.threshold != 0.0).then_some(c.threshold),
                many_to_many: c.many_to_many,
            }),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FuzzyFile {
    /// Match probability (0.9 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub many_to_many: bool,
    /// Linkage settings (docs/matching/fuzzy.md); inferred when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClkFile {
    /// Dice coefficient (0.8 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub many_to_many: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyFile {
    /// k-anonymity thresholds; the strictest (largest) wins; none means 100.
    #[serde(default)]
    pub k_thresholds: Vec<KThresholdFile>,
    /// Differential privacy (noise on every released count, a per-participant ε budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential_privacy: Option<DifferentialPrivacyFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DifferentialPrivacyFile {
    /// ε one run spends (at most 6 decimals are kept).
    pub epsilon_per_run: f64,
    /// Total ε each participant receiving results may spend.
    pub budget_per_participant: f64,
    /// Most segments one person counts in (10 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_segments_per_person: Option<u32>,
    /// Measurement: most campaigns one person counts in (10 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_campaigns_per_person: Option<u32>,
    /// Measurement: most impressions one person counts with per campaign (20 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_impressions_per_person: Option<u32>,
}

/// ε in millionths; NaN, negative and zero give 0 and huge values saturate, which validation refuses.
fn to_micro(epsilon: f64) -> u64 {
    if epsilon.is_nan() || epsilon <= 0.0 { 0 } else { (epsilon * 1e6).round() as u64 }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KThresholdFile {
    pub set_by: String,
    pub k: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationFile {
    /// INSECURE: accept the simulated TEE (development and tests only).
    #[serde(default)]
    pub allow_simulated: bool,
    #[serde(default)]
    pub accepted_measurements: Vec<MeasurementFile>,
    /// The lowest AMD SEV-SNP TCB accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_snp_tcb: Option<SnpTcbFile>,
    /// Intel DCAP TCB statuses accepted for SGX and TDX; empty means `UpToDate` only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_tcb_statuses: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcbFile {
    #[serde(default)]
    pub bootloader: u32,
    #[serde(default)]
    pub tee: u32,
    #[serde(default)]
    pub snp: u32,
    #[serde(default)]
    pub microcode: u32,
    /// Turin's FMC component (0: no minimum; Milan and Genoa reports have none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fmc: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementFile {
    pub platform: PlatformFile,
    pub measurement: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// TDX: RTMR0..RTMR3 that must match too (an empty string leaves a register free).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtmrs: Vec<String>,
    /// SGX by MRSIGNER: the enclave's product id.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub isv_prod_id: u32,
    /// SGX by MRSIGNER: the lowest security version accepted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_isv_svn: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformFile {
    AmdSevSnp,
    IntelTdx,
    IntelSgx,
}

impl RoomFile {
    /// Parses and validates a room file, returning the contract it describes (not yet canonicalized;
    /// the room id is the same either way).
    pub fn parse(text: &str, source_name: &str) -> Result<pb::RoomContract, RoomFileError> {
        // serde_yaml_ng errors carry the field path and the line and column.
        let file: RoomFile = serde_yaml_ng::from_str(text)
            .map_err(|e| RoomFileError::Syntax { source_name: source_name.to_owned(), message: e.to_string() })?;
        for (i, c) in file.computations.iter().enumerate() {
            if c.kinds() > 1 {
                return Err(RoomFileError::Syntax {
                    source_name: source_name.to_owned(),
                    message: format!(
                        "computations[{i}] ('{}') has more than one of `overlap:`, `affinity:`, `measurement:`, `sql:` and `lookalike:`; \
                         a computation has exactly one kind: split it into several computations",
                        c.name
                    ),
                });
            }
        }
        let contract = file.to_contract();
        validate(&contract).map_err(|errors| RoomFileError::Invalid { source_name: source_name.to_owned(), errors })?;
        Ok(contract)
    }

    /// Writes the file as YAML.
    pub fn to_yaml(&self) -> String {
        // Serializing plain structs of strings, integers and enums cannot fail.
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# could not render room file: {e}\n"))
    }

    /// The contract this file describes.
    pub fn to_contract(&self) -> pb::RoomContract {
        pb::RoomContract {
            name: self.name.clone(),
            description: self.description.clone(),
            participants: self
                .participants
                .iter()
                .map(|p| pb::Participant {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    roles: p.roles.iter().map(|r| r.to_proto() as i32).collect(),
                    credential: p.credential.as_ref().map(|c| pb::Credential {
                        issuer_keys: c.issuer_keys.iter().map(|k| pem_body(k)).collect(),
                        revoked_token_ids: c.revoked_token_ids.clone(),
                    }),
                })
                .collect(),
            tables: self
                .tables
                .iter()
                .map(|t| pb::Table {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    owner: t.owner.clone(),
                    columns: t
                        .columns
                        .iter()
                        .map(|c| pb::Column {
                            name: c.name.clone(),
                            r#type: c.column_type.to_proto() as i32,
                            identifier: c.identifier.map_or(pb::IdentifierKind::Unspecified, IdentifierFile::to_proto)
                                as i32,
                            nullable: c.nullable,
                            normalization: c.normalization.map_or(0, |p| p.to_proto() as i32),
                        })
                        .collect(),
                })
                .collect(),
            computations: self
                .computations
                .iter()
                .map(|c| pb::Computation {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    run_by: c.run_by.clone(),
                    results_to: c.results_to.clone(),
                    deliver_to: c.deliver_to.clone(),
                    kind: c.kind(),
                })
                .collect(),
            privacy: Some(pb::PrivacyPolicy {
                k_thresholds: self
                    .privacy
                    .k_thresholds
                    .iter()
                    .map(|k| pb::KThreshold { set_by: k.set_by.clone(), k: k.k })
                    .collect(),
                differential_privacy: self.privacy.differential_privacy.as_ref().map(|d| pb::DifferentialPrivacy {
                    epsilon_per_run_micro: to_micro(d.epsilon_per_run),
                    budget_per_participant_micro: to_micro(d.budget_per_participant),
                    max_segments_per_person: d.max_segments_per_person.unwrap_or(0),
                    max_campaigns_per_person: d.max_campaigns_per_person.unwrap_or(0),
                    max_impressions_per_person: d.max_impressions_per_person.unwrap_or(0),
                }),
            }),
            attestation: Some(pb::AttestationPolicy {
                allow_simulated: self.attestation.allow_simulated,
                accepted_measurements: self
                    .attestation
                    .accepted_measurements
                    .iter()
                    .map(|m| pb::AcceptedMeasurement {
                        platform: m.platform.to_proto() as i32,
                        measurement: m.measurement.clone(),
                        description: m.description.clone(),
                        rtmrs: m.rtmrs.clone(),
                        isv_prod_id: m.isv_prod_id,
                        min_isv_svn: m.min_isv_svn,
                    })
                    .collect(),
                min_snp_tcb: self.attestation.min_snp_tcb.map(|t| pb::SnpTcb {
                    bootloader: t.bootloader,
                    tee: t.tee,
                    snp: t.snp,
                    microcode: t.microcode,
                    fmc: t.fmc,
                }),
                accepted_tcb_statuses: self.attestation.accepted_tcb_statuses.clone(),
            }),
            authentication: self
                .authentication
                .max_token_lifetime_seconds
                .map(|s| pb::Authentication { max_token_lifetime_seconds: s }),
            governance: (!self.governance.is_default()).then_some(pb::Governance {
                interactive: self.governance.interactive,
                development_mode: self.governance.development_mode,
            }),
        }
    }

    /// The file form of a valid contract (used to show a contract as JSON or YAML). Enum values this
    /// version does not know are rendered as errors by validation first; here they are skipped.
    pub fn from_contract(contract: &pb::RoomContract) -> Self {
        Self {
            name: contract.name.clone(),
            description: contract.description.clone(),
            participants: contract
                .participants
                .iter()
                .map(|p| ParticipantFile {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    roles: p.roles().filter_map(RoleFile::from_proto).collect(),
                    credential: p.credential.as_ref().map(|c| CredentialFile {
                        issuer_keys: c.issuer_keys.iter().map(|k| public_key_pem(k)).collect(),
                        revoked_token_ids: c.revoked_token_ids.clone(),
                    }),
                })
                .collect(),
            tables: contract
                .tables
                .iter()
                .map(|t| TableFile {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    owner: t.owner.clone(),
                    columns: t
                        .columns
                        .iter()
                        .map(|c| ColumnFile {
                            name: c.name.clone(),
                            column_type: ColumnTypeFile::from_proto(c.r#type()).unwrap_or(ColumnTypeFile::String),
                            identifier: IdentifierFile::from_proto(c.identifier()),
                            nullable: c.nullable,
                            normalization: ProfileFile::from_proto(c.normalization()),
                        })
                        .collect(),
                })
                .collect(),
            computations: contract
                .computations
                .iter()
                .map(|c| ComputationFile {
                    name: c.name.clone(),
                    description: c.description.clone(),
                    run_by: c.run_by.clone(),
                    results_to: c.results_to.clone(),
                    deliver_to: c.deliver_to.clone(),
                    overlap: match &c.kind {
                        Some(pb::computation::Kind::Overlap(o)) => Some(OverlapFile::from_proto(o)),
                        _ => None,
                    },
                    affinity: match &c.kind {
                        Some(pb::computation::Kind::Affinity(a)) => Some(AffinityFile {
                            matching: a.matching.as_ref().map(OverlapFile::from_proto).unwrap_or_default(),
                            confidence: (a.confidence != 0.0).then_some(a.confidence),
                            top: (a.top != 0).then_some(a.top),
                        }),
                        _ => None,
                    },
                    measurement: match &c.kind {
                        Some(pb::computation::Kind::Measurement(m)) => Some(CampaignMeasurementFile {
                            matching: m.matching.as_ref().map(OverlapFile::from_proto).unwrap_or_default(),
                            exposure_table: m.exposure_table.clone(),
                            conversion_table: (!m.conversion_table.is_empty()).then(|| m.conversion_table.clone()),
                            confidence: (m.confidence != 0.0).then_some(m.confidence),
                        }),
                        _ => None,
                    },
                    sql: match &c.kind {
                        Some(pb::computation::Kind::Sql(q)) => Some(SqlFile {
                            query: q.query.clone(),
                            tables: q.tables.clone(),
                            matching: q.matching.as_ref().map(OverlapFile::from_proto),
                        }),
                        _ => None,
                    },
                    lookalike: c.lookalike().map(LookalikeFile::from_proto),
                })
                .collect(),
            privacy: PrivacyFile {
                k_thresholds: contract
                    .privacy
                    .iter()
                    .flat_map(|p| &p.k_thresholds)
                    .map(|k| KThresholdFile { set_by: k.set_by.clone(), k: k.k })
                    .collect(),
                differential_privacy: contract.differential_privacy().map(|d| DifferentialPrivacyFile {
                    epsilon_per_run: d.epsilon_per_run_micro as f64 / 1e6,
                    budget_per_participant: d.budget_per_participant_micro as f64 / 1e6,
                    max_segments_per_person: (d.max_segments_per_person != 0).then_some(d.max_segments_per_person),
                    max_campaigns_per_person: (d.max_campaigns_per_person != 0).then_some(d.max_campaigns_per_person),
                    max_impressions_per_person: (d.max_impressions_per_person != 0)
                        .then_some(d.max_impressions_per_person),
                }),
            },
            attestation: AttestationFile {
                allow_simulated: contract.attestation.as_ref().is_some_and(|a| a.allow_simulated),
                accepted_measurements: contract
                    .attestation
                    .iter()
                    .flat_map(|a| &a.accepted_measurements)
                    .filter_map(|m| {
                        Some(MeasurementFile {
                            platform: PlatformFile::from_proto(m.platform())?,
                            measurement: m.measurement.clone(),
                            description: m.description.clone(),
                            rtmrs: m.rtmrs.clone(),
                            isv_prod_id: m.isv_prod_id,
                            min_isv_svn: m.min_isv_svn,
                        })
                    })
                    .collect(),
                min_snp_tcb: contract.attestation.as_ref().and_then(|a| a.min_snp_tcb.as_ref()).map(|t| SnpTcbFile {
                    bootloader: t.bootloader,
                    tee: t.tee,
                    snp: t.snp,
                    microcode: t.microcode,
                    fmc: t.fmc,
                }),
                accepted_tcb_statuses: contract
                    .attestation
                    .as_ref()
                    .map(|a| a.accepted_tcb_statuses.clone())
                    .unwrap_or_default(),
            },
            authentication: AuthenticationFile {
                max_token_lifetime_seconds: contract
                    .authentication
                    .as_ref()
                    .map(|a| a.max_token_lifetime_seconds)
                    .filter(|s| *s != 0),
            },
            governance: GovernanceFile {
                interactive: contract.governance.as_ref().is_some_and(|g| g.interactive),
                development_mode: contract.governance.as_ref().is_some_and(|g| g.development_mode),
            },
        }
    }
}

impl RoleFile {
    pub fn to_proto(self) -> pb::Role {
        match self {
            Self::DataOwner => pb::Role::DataOwner,
            Self::Analyst => pb::Role::Analyst,
            Self::Auditor => pb::Role::Auditor,
        }
    }

    pub fn from_proto(role: pb::Role) -> Option<Self> {
        match role {
            pb::Role::Unspecified => None,
            pb::Role::DataOwner => Some(Self::DataOwner),
            pb::Role::Analyst => Some(Self::Analyst),
            pb::Role::Auditor => Some(Self::Auditor),
        }
    }
}

impl ColumnTypeFile {
    pub fn to_proto(self) -> pb::ColumnType {
        match self {
            Self::String => pb::ColumnType::String,
            Self::Int64 => pb::ColumnType::Int64,
            Self::Float64 => pb::ColumnType::Float64,
            Self::Bool => pb::ColumnType::Bool,
            Self::Date => pb::ColumnType::Date,
            Self::Timestamp => pb::ColumnType::Timestamp,
            Self::Sha256 => pb::ColumnType::Sha256,
            Self::StringList => pb::ColumnType::StringList,
            Self::Bytes => pb::ColumnType::Bytes,
        }
    }

    pub fn from_proto(column_type: pb::ColumnType) -> Option<Self> {
        match column_type {
            pb::ColumnType::Unspecified => None,
            pb::ColumnType::String => Some(Self::String),
            pb::ColumnType::Int64 => Some(Self::Int64),
            pb::ColumnType::Float64 => Some(Self::Float64),
            pb::ColumnType::Bool => Some(Self::Bool),
            pb::ColumnType::Date => Some(Self::Date),
            pb::ColumnType::Timestamp => Some(Self::Timestamp),
            pb::ColumnType::Sha256 => Some(Self::Sha256),
            pb::ColumnType::StringList => Some(Self::StringList),
            pb::ColumnType::Bytes => Some(Self::Bytes),
        }
    }
}

impl IdentifierFile {
    pub fn to_proto(self) -> pb::IdentifierKind {
        match self {
            Self::HashedEmail => pb::IdentifierKind::HashedEmail,
            Self::HashedPhone => pb::IdentifierKind::HashedPhone,
            Self::UserId => pb::IdentifierKind::UserId,
            Self::Segment => pb::IdentifierKind::Segment,
            Self::HashedSharedId => pb::IdentifierKind::HashedSharedId,
            Self::Email => pb::IdentifierKind::Email,
            Self::Phone => pb::IdentifierKind::Phone,
            Self::GivenName => pb::IdentifierKind::GivenName,
            Self::Surname => pb::IdentifierKind::Surname,
            Self::StreetAddress => pb::IdentifierKind::StreetAddress,
            Self::City => pb::IdentifierKind::City,
            Self::Postcode => pb::IdentifierKind::Postcode,
            Self::DateOfBirth => pb::IdentifierKind::DateOfBirth,
            Self::Clk => pb::IdentifierKind::Clk,
            Self::ClkBlockingKeys => pb::IdentifierKind::ClkBlockingKeys,
            Self::Campaign => pb::IdentifierKind::Campaign,
        }
    }

    pub fn from_proto(kind: pb::IdentifierKind) -> Option<Self> {
        match kind {
            pb::IdentifierKind::Unspecified => None,
            pb::IdentifierKind::HashedEmail => Some(Self::HashedEmail),
            pb::IdentifierKind::HashedPhone => Some(Self::HashedPhone),
            pb::IdentifierKind::UserId => Some(Self::UserId),
            pb::IdentifierKind::Segment => Some(Self::Segment),
            pb::IdentifierKind::HashedSharedId => Some(Self::HashedSharedId),
            pb::IdentifierKind::Email => Some(Self::Email),
            pb::IdentifierKind::Phone => Some(Self::Phone),
            pb::IdentifierKind::GivenName => Some(Self::GivenName),
            pb::IdentifierKind::Surname => Some(Self::Surname),
            pb::IdentifierKind::StreetAddress => Some(Self::StreetAddress),
            pb::IdentifierKind::City => Some(Self::City),
            pb::IdentifierKind::Postcode => Some(Self::Postcode),
            pb::IdentifierKind::DateOfBirth => Some(Self::DateOfBirth),
            pb::IdentifierKind::Clk => Some(Self::Clk),
            pb::IdentifierKind::ClkBlockingKeys => Some(Self::ClkBlockingKeys),
            pb::IdentifierKind::Campaign => Some(Self::Campaign),
        }
    }
}

impl PlatformFile {
    pub fn to_proto(self) -> pb::Platform {
        match self {
            Self::AmdSevSnp => pb::Platform::AmdSevSnp,
            Self::IntelTdx => pb::Platform::IntelTdx,
            Self::IntelSgx => pb::Platform::IntelSgx,
        }
    }

    pub fn from_proto(platform: pb::Platform) -> Option<Self> {
        match platform {
            pb::Platform::Unspecified => None,
            pb::Platform::AmdSevSnp => Some(Self::AmdSevSnp),
            pb::Platform::IntelTdx => Some(Self::IntelTdx),
            pb::Platform::IntelSgx => Some(Self::IntelSgx),
        }
    }
}
