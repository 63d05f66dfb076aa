//! Hand-written conveniences on the generated contract types: lookups, the effective k, the tables a
//! computation reads.

use crate::DEFAULT_K;
use crate::room::v1::{
    Column, Computation, DifferentialPrivacy, IdentifierKind, OverlapComputation, Participant, Role, RoomContract,
    Table, computation,
};

impl RoomContract {
    /// The effective k-anonymity threshold: the strictest (largest) threshold any participant set, or
    /// [`DEFAULT_K`] when none is set.
    pub fn effective_k(&self) -> u32 {
        self.privacy.iter().flat_map(|p| &p.k_thresholds).map(|t| t.k).max().unwrap_or(DEFAULT_K)
    }

    /// The room's differential-privacy settings, when it has them.
    pub fn differential_privacy(&self) -> Option<&DifferentialPrivacy> {
        self.privacy.as_ref().and_then(|p| p.differential_privacy.as_ref())
    }

    /// The longest a participant's token may live, in seconds: the contract's limit, or
    /// [`crate::DEFAULT_MAX_TOKEN_LIFETIME_SECONDS`] when it sets none.
    pub fn max_token_lifetime_seconds(&self) -> u32 {
        self.authentication
            .as_ref()
            .map(|a| a.max_token_lifetime_seconds)
            .filter(|s| *s != 0)
            .unwrap_or(crate::DEFAULT_MAX_TOKEN_LIFETIME_SECONDS)
    }

    /// Whether participants may propose new versions of the contract.
    pub fn is_interactive(&self) -> bool {
        self.governance.as_ref().is_some_and(|g| g.interactive)
    }

    /// Whether a participant may add computations over only its own data without approval.
    pub fn in_development_mode(&self) -> bool {
        self.governance.as_ref().is_some_and(|g| g.interactive && g.development_mode)
    }

    pub fn allows_simulated_tee(&self) -> bool {
        self.attestation.as_ref().is_some_and(|a| a.allow_simulated)
    }

    pub fn participant(&self, id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.id == id)
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn computation(&self, name: &str) -> Option<&Computation> {
        self.computations.iter().find(|c| c.name == name)
    }

    /// Tables owned by a participant.
    pub fn tables_owned_by<'a>(&'a self, participant: &'a str) -> impl Iterator<Item = &'a Table> + 'a {
        self.tables.iter().filter(move |t| t.owner == participant)
    }
}

impl DifferentialPrivacy {
    /// The contribution bound on segments per person (the default when unset).
    pub fn segments_per_person(&self) -> usize {
        or_default(self.max_segments_per_person, crate::DEFAULT_MAX_SEGMENTS_PER_PERSON)
    }

    /// The contribution bound on campaigns per person in measurement.
    pub fn campaigns_per_person(&self) -> usize {
        or_default(self.max_campaigns_per_person, crate::DEFAULT_MAX_CAMPAIGNS_PER_PERSON)
    }

    /// The clamp on one person's impressions per campaign in measurement.
    pub fn impressions_per_person(&self) -> u64 {
        or_default(self.max_impressions_per_person, crate::DEFAULT_MAX_IMPRESSIONS_PER_PERSON) as u64
    }
}

fn or_default(value: u32, default: u32) -> usize {
    if value == 0 { default as usize } else { value as usize }
}

impl Participant {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles().any(|r| r == role)
    }
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Columns that carry a given identifier kind, in schema order.
    pub fn columns_of_kind(&self, kind: IdentifierKind) -> impl Iterator<Item = &Column> + '_ {
        self.columns.iter().filter(move |c| c.identifier() == kind)
    }

    /// The column that identifies an individual, if the table has one.
    pub fn user_id_column(&self) -> Option<&Column> {
        self.columns_of_kind(IdentifierKind::UserId).next()
    }
}

impl Computation {
    /// The name of the computation's kind, as written in the room file.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Some(computation::Kind::Overlap(_)) => "overlap",
            Some(computation::Kind::Affinity(_)) => "affinity",
            Some(computation::Kind::Measurement(_)) => "measurement",
            Some(computation::Kind::Sql(_)) => "sql",
            Some(computation::Kind::Lookalike(_)) => "lookalike",
            None => "unspecified",
        }
    }

    /// How the computation matches the advertiser and publisher tables (every kind matches).
    pub fn matching(&self) -> Option<&OverlapComputation> {
        match &self.kind {
            Some(computation::Kind::Overlap(o)) => Some(o),
            Some(computation::Kind::Affinity(a)) => a.matching.as_ref(),
            Some(computation::Kind::Measurement(m)) => m.matching.as_ref(),
            Some(computation::Kind::Sql(q)) => q.matching.as_ref(),
            Some(computation::Kind::Lookalike(l)) => l.matching.as_ref(),
            None => None,
        }
    }

    /// The tables the computation reads, without duplicates, in a stable order.
    pub fn input_tables(&self) -> Vec<&str> {
        let mut tables: Vec<&str> = match self.matching() {
            Some(o) => {
                let mut t = vec![o.advertiser_table.as_str(), o.publisher_table.as_str()];
                if !o.segment_table.is_empty() {
                    t.push(o.segment_table.as_str());
                }
                t.extend(o.identity_graphs.iter().map(String::as_str));
                if let Some(computation::Kind::Measurement(m)) = &self.kind {
                    t.push(m.exposure_table.as_str());
                    if !m.conversion_table.is_empty() {
                        t.push(m.conversion_table.as_str());
                    }
                }
                t
            }
            None => Vec::new(),
        };
        if let Some(computation::Kind::Sql(q)) = &self.kind {
            tables.extend(q.tables.iter().map(String::as_str));
        }
        let mut seen = std::collections::HashSet::new();
        tables.retain(|t| seen.insert(*t));
        tables
    }

    pub fn may_run(&self, participant: &str) -> bool {
        self.run_by.iter().any(|p| p == participant)
    }

    pub fn may_read(&self, participant: &str) -> bool {
        self.results_to.iter().any(|p| p == participant)
    }

    /// The lookalike settings, when the computation is one.
    pub fn lookalike(&self) -> Option<&crate::room::v1::LookalikeComputation> {
        match &self.kind {
            Some(computation::Kind::Lookalike(l)) => Some(l),
            _ => None,
        }
    }
}

impl IdentifierKind {
    /// The snake-case name used in room files and messages.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Unspecified => "none",
            Self::HashedEmail => "hashed_email",
            Self::HashedPhone => "hashed_phone",
            Self::UserId => "user_id",
            Self::Segment => "segment",
            Self::HashedSharedId => "hashed_shared_id",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::GivenName => "given_name",
            Self::Surname => "surname",
            Self::StreetAddress => "street_address",
            Self::City => "city",
            Self::Postcode => "postcode",
            Self::DateOfBirth => "date_of_birth",
            Self::Clk => "clk",
            Self::ClkBlockingKeys => "clk_blocking_keys",
            Self::Campaign => "campaign",
        }
    }

    /// Whether the kind is a hashed identifier that overlap can match on exactly.
    pub fn is_hashed_match_key(self) -> bool {
        matches!(self, Self::HashedEmail | Self::HashedPhone | Self::HashedSharedId)
    }

    /// The exact-match tier a column of this kind takes part in: hashed kinds themselves, and
    /// plaintext emails and phones (hashed by the engine) in the tier of their hashed kind.
    pub fn exact_tier(self) -> Option<Self> {
        match self {
            Self::HashedEmail | Self::Email => Some(Self::HashedEmail),
            Self::HashedPhone | Self::Phone => Some(Self::HashedPhone),
            Self::HashedSharedId => Some(Self::HashedSharedId),
            _ => None,
        }
    }

    /// Whether the kind is plaintext personal data that fuzzy matching compares.
    pub fn is_plaintext_pii(self) -> bool {
        self.fuzzy_column().is_some()
    }

    /// The column name fuzzy-matching settings use for this kind.
    pub fn fuzzy_column(self) -> Option<&'static str> {
        Some(match self {
            Self::GivenName => "given_name",
            Self::Surname => "surname",
            Self::StreetAddress => "street",
            Self::City => "city",
            Self::Postcode => "postcode",
            Self::DateOfBirth => "date_of_birth",
            Self::Email => "email",
            Self::Phone => "phone",
            _ => return None,
        })
    }

    /// Whether normalization rules apply to columns of this kind.
    pub fn is_normalized_contact(self) -> bool {
        matches!(self, Self::HashedEmail | Self::HashedPhone | Self::Email | Self::Phone)
    }
}

impl crate::room::v1::NormalizationProfile {
    /// The snake-case name used in room files and messages.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Sealroom => "sealroom",
            Self::Google => "google",
            Self::Meta => "meta",
            Self::Uid2 => "uid2",
        }
    }
}

impl crate::room::v1::ColumnType {
    /// The snake-case name used in room files and messages.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::String => "string",
            Self::Int64 => "int64",
            Self::Float64 => "float64",
            Self::Bool => "bool",
            Self::Date => "date",
            Self::Timestamp => "timestamp",
            Self::Sha256 => "sha256",
            Self::StringList => "string_list",
            Self::Bytes => "bytes",
        }
    }
}

impl Role {
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::DataOwner => "data_owner",
            Self::Analyst => "analyst",
            Self::Auditor => "auditor",
        }
    }
}
