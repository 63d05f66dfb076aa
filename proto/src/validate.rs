//! Validation of a room contract.
//!
//! Validation collects every problem, not just the first, and names each by its path in the room
//! file (`tables[1].columns[2].type`) with what is wrong and how to fix it. It runs on the contract
//! in file order (before canonicalization) so that the indices match what the author wrote.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::canonical::truncate_for_message;
use crate::room::v1::{
    AffinityComputation, Column, ColumnType, Computation, IdentifierKind, LookalikeComputation, MeasurementComputation,
    NormalizationProfile, OverlapComputation, Participant, Platform, Role, RoomContract, SqlComputation, Table,
    computation,
};

/// Largest k a room may set: beyond this nothing could ever be released.
pub const MAX_K: u32 = 1_000_000;
/// Smallest k a room may set: k = 1 would release single individuals.
pub const MIN_K: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Where in the room file: `participants[0].id`.
    pub path: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// All problems found in a contract (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

struct Collector(Vec<ValidationError>);

impl Collector {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError { path: path.into(), message: message.into() });
    }
}

/// Participant ids: `[a-z0-9_-]{1,64}`.
fn is_participant_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Table, computation and column names: `[a-z][a-z0-9_]{0,63}` (columns may also use upper case), so
/// that they are safe SQL identifiers and safe path segments.
fn is_name(s: &str, allow_upper: bool) -> bool {
    let mut bytes = s.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase() || (allow_upper && b.is_ascii_uppercase()));
    first_ok
        && s.len() <= 64
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (allow_upper && b.is_ascii_uppercase())
        })
}

fn is_hex_of_len(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Validates a contract; `Ok` means every rule holds.
pub fn validate(contract: &RoomContract) -> Result<(), ValidationErrors> {
    let mut c = Collector(Vec::new());
    if contract.name.trim().is_empty() {
        c.push("name", "the room needs a name (shown in reports and the audit log)");
    }
    validate_participants(contract, &mut c);
    validate_tables(contract, &mut c);
    validate_computations(contract, &mut c);
    validate_privacy(contract, &mut c);
    validate_differential_privacy(contract, &mut c);
    validate_attestation(contract, &mut c);
    if c.0.is_empty() { Ok(()) } else { Err(ValidationErrors(c.0)) }
}

fn validate_participants(contract: &RoomContract, c: &mut Collector) {
    if contract.participants.is_empty() {
        c.push("participants", "a room needs at least one participant");
    }
    let mut seen = HashSet::new();
    for (i, p) in contract.participants.iter().enumerate() {
        let path = format!("participants[{i}]");
        if !is_participant_id(&p.id) {
            c.push(
                format!("{path}.id"),
                format!(
                    "'{}' is not a valid participant id: use 1-64 lowercase letters, digits, '-' or '_'",
                    truncate_for_message(&p.id, 64)
                ),
            );
        } else if !seen.insert(p.id.as_str()) {
            c.push(format!("{path}.id"), format!("participant id '{}' is used twice; ids must be unique", p.id));
        }
        if p.name.trim().is_empty() {
            c.push(format!("{path}.name"), format!("participant '{}' needs a display name", p.id));
        }
        if p.roles.is_empty() {
            c.push(format!("{path}.roles"), "give at least one role: data_owner, analyst or auditor");
        }
        for (j, role) in p.roles.iter().enumerate() {
            if !matches!(Role::try_from(*role), Ok(Role::DataOwner | Role::Analyst | Role::Auditor)) {
                c.push(
                    format!("{path}.roles[{j}]"),
                    format!("unknown role {role}: use data_owner, analyst or auditor"),
                );
            }
        }
        validate_credential(p, &path, c);
    }
    let mut owners: HashMap<&str, &str> = HashMap::new();
    for p in &contract.participants {
        for key in p.credential.iter().flat_map(|cr| &cr.issuer_keys) {
            if let Some(other) = owners.insert(key.as_str(), p.id.as_str())
                && other != p.id
            {
                c.push(
                    "participants",
                    format!(
                        "participants '{other}' and '{}' share an issuer key; each participant needs its own key \
                         (`sealroom keygen`), or one could act as the other",
                        p.id
                    ),
                );
            }
        }
    }
    if let Some(a) = &contract.authentication
        && a.max_token_lifetime_seconds != 0
        && !(60..=crate::MAX_TOKEN_LIFETIME_SECONDS).contains(&a.max_token_lifetime_seconds)
    {
        c.push(
            "authentication.max_token_lifetime_seconds",
            format!(
                "{} is out of range: give 60 to {} seconds (30 days), or leave it out for one day",
                a.max_token_lifetime_seconds,
                crate::MAX_TOKEN_LIFETIME_SECONDS
            ),
        );
    }
    if let Some(g) = &contract.governance
        && g.development_mode
        && !g.interactive
    {
        c.push(
            "governance.development_mode",
            "development mode adds computations to the room, so the room must be interactive: set \
             governance.interactive: true, or leave development_mode out"
                .to_owned(),
        );
    }
}

/// A participant's credential: at least one well-formed ECDSA P-256 issuer key and sane token ids.
fn validate_credential(p: &Participant, path: &str, c: &mut Collector) {
    let Some(credential) = p.credential.as_ref().filter(|cr| !cr.issuer_keys.is_empty()) else {
        return c.push(
            format!("{path}.credential.issuer_keys"),
            format!(
                "participant '{}' has no issuer key: run `sealroom keygen --out {}.key.pem` and put the public key \
                 it prints under `credential: {{issuer_keys: [...]}}`; the participant keeps the private key",
                p.id, p.id
            ),
        );
    };
    for (j, key) in credential.issuer_keys.iter().enumerate() {
        if let Err(e) = decode_p256_spki(key) {
            c.push(format!("{path}.credential.issuer_keys[{j}]"), e);
        }
    }
    for (j, id) in credential.revoked_token_ids.iter().enumerate() {
        if id.is_empty() || id.len() > 128 || id.chars().any(|ch| ch.is_control() || ch.is_whitespace()) {
            c.push(
                format!("{path}.credential.revoked_token_ids[{j}]"),
                "a token id (`jti`) is 1 to 128 printable characters without spaces",
            );
        }
    }
}

/// Decodes an issuer key of the contract (standard base64 of a DER SubjectPublicKeyInfo) and checks
/// that it is an ECDSA P-256 key; returns the DER bytes.
pub fn decode_p256_spki(base64_der: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD.decode(base64_der).map_err(|e| {
        format!("not a PEM public key or its base64 body ({e}); paste the key `sealroom keygen` printed")
    })?;
    if crate::p256_spki_point(&der).is_none() {
        return Err(format!(
            "not an ECDSA P-256 public key ({} bytes of DER); tokens are signed with ES256, so the key must be \
             P-256 (`sealroom keygen`, or `openssl ecparam -name prime256v1 -genkey`)",
            der.len()
        ));
    }
    Ok(der)
}

fn require_participant_with_role(
    contract: &RoomContract,
    c: &mut Collector,
    path: &str,
    id: &str,
    role: Role,
    why: &str,
) {
    match contract.participant(id) {
        None => c.push(
            path,
            format!(
                "'{}' is not a participant of this room (participants: {})",
                truncate_for_message(id, 64),
                contract.participants.iter().map(|p| p.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        ),
        Some(p) if !p.has_role(role) => c.push(
            path,
            format!("participant '{id}' {why} but does not declare the role {}; add it to its roles", role.file_name()),
        ),
        Some(_) => {}
    }
}

fn validate_tables(contract: &RoomContract, c: &mut Collector) {
    let mut seen = HashSet::new();
    for (i, t) in contract.tables.iter().enumerate() {
        let path = format!("tables[{i}]");
        if !is_name(&t.name, false) {
            c.push(
                format!("{path}.name"),
                format!(
                    "'{}' is not a valid table name: start with a lowercase letter; use lowercase letters, \
                     digits and '_'; at most 64 characters",
                    truncate_for_message(&t.name, 64)
                ),
            );
        } else if !seen.insert(t.name.as_str()) {
            c.push(format!("{path}.name"), format!("table '{}' is declared twice", t.name));
        }
        require_participant_with_role(contract, c, &format!("{path}.owner"), &t.owner, Role::DataOwner, "owns a table");
        validate_columns(t, &path, c);
    }
}

fn validate_columns(t: &Table, path: &str, c: &mut Collector) {
    if t.columns.is_empty() {
        c.push(format!("{path}.columns"), format!("table '{}' needs at least one column", t.name));
    }
    let mut names = HashSet::new();
    let mut user_ids = 0;
    for (j, col) in t.columns.iter().enumerate() {
        let cpath = format!("{path}.columns[{j}]");
        if !is_name(&col.name, true) {
            c.push(
                format!("{cpath}.name"),
                format!(
                    "'{}' is not a valid column name: start with a letter; use letters, digits and '_'; at \
                     most 64 characters",
                    truncate_for_message(&col.name, 64)
                ),
            );
        } else if col.name.starts_with("_sealroom") {
            c.push(format!("{cpath}.name"), "names starting with '_sealroom' are reserved for the engine");
        } else if !names.insert(col.name.to_ascii_lowercase()) {
            c.push(
                format!("{cpath}.name"),
                format!("column '{}' appears twice in table '{}' (names are case-insensitive)", col.name, t.name),
            );
        }
        let Ok(column_type) = ColumnType::try_from(col.r#type) else {
            c.push(format!("{cpath}.type"), format!("unknown column type {}", col.r#type));
            continue;
        };
        if column_type == ColumnType::Unspecified {
            c.push(
                format!("{cpath}.type"),
                "give a type: string, int64, float64, bool, date, timestamp, sha256, string_list or bytes",
            );
            continue;
        }
        let Ok(kind) = IdentifierKind::try_from(col.identifier) else {
            c.push(format!("{cpath}.identifier"), format!("unknown identifier kind {}", col.identifier));
            continue;
        };
        let allowed: &[ColumnType] = match kind {
            IdentifierKind::Unspecified => &[],
            IdentifierKind::HashedEmail | IdentifierKind::HashedPhone | IdentifierKind::HashedSharedId => {
                &[ColumnType::Sha256]
            }
            IdentifierKind::UserId => &[ColumnType::String, ColumnType::Int64],
            IdentifierKind::Segment => &[ColumnType::String, ColumnType::StringList],
            IdentifierKind::Email
            | IdentifierKind::Phone
            | IdentifierKind::GivenName
            | IdentifierKind::Surname
            | IdentifierKind::StreetAddress
            | IdentifierKind::City
            | IdentifierKind::Postcode => &[ColumnType::String],
            IdentifierKind::DateOfBirth => &[ColumnType::String, ColumnType::Date],
            IdentifierKind::Clk => &[ColumnType::Bytes],
            IdentifierKind::ClkBlockingKeys => &[ColumnType::StringList],
            IdentifierKind::Campaign => &[ColumnType::String],
        };
        match NormalizationProfile::try_from(col.normalization) {
            Err(_) => c.push(format!("{cpath}.normalization"), format!("unknown normalization {}", col.normalization)),
            Ok(NormalizationProfile::Sealroom) => {}
            Ok(p) if !kind.is_normalized_contact() => c.push(
                format!("{cpath}.normalization"),
                format!(
                    "normalization '{}' applies to email and phone columns (hashed or plaintext), not to a {} column",
                    p.file_name(),
                    kind.file_name()
                ),
            ),
            Ok(_) => {}
        }
        if !allowed.is_empty() && !allowed.contains(&column_type) {
            c.push(
                format!("{cpath}.type"),
                format!(
                    "a {} column must have type {}, not {}",
                    kind.file_name(),
                    allowed.iter().map(|t| t.file_name()).collect::<Vec<_>>().join(" or "),
                    column_type.file_name()
                ),
            );
        }
        if kind == IdentifierKind::UserId {
            user_ids += 1;
            if col.nullable {
                c.push(
                    format!("{cpath}.nullable"),
                    "a user_id column cannot be nullable: every row needs its individual",
                );
            }
        }
    }
    if user_ids > 1 {
        c.push(
            format!("{path}.columns"),
            format!("table '{}' has {user_ids} user_id columns; a table has at most one", t.name),
        );
    }
}

fn validate_computations(contract: &RoomContract, c: &mut Collector) {
    let mut seen = HashSet::new();
    for (i, comp) in contract.computations.iter().enumerate() {
        let path = format!("computations[{i}]");
        if !is_name(&comp.name, false) {
            c.push(
                format!("{path}.name"),
                format!(
                    "'{}' is not a valid computation name: start with a lowercase letter; use lowercase \
                     letters, digits and '_'; at most 64 characters",
                    truncate_for_message(&comp.name, 64)
                ),
            );
        } else if !seen.insert(comp.name.as_str()) {
            c.push(format!("{path}.name"), format!("computation '{}' is declared twice", comp.name));
        }
        if comp.run_by.is_empty() {
            c.push(format!("{path}.run_by"), "name at least one participant who may run the computation");
        }
        for (j, p) in comp.run_by.iter().enumerate() {
            require_participant_with_role(
                contract,
                c,
                &format!("{path}.run_by[{j}]"),
                p,
                Role::Analyst,
                "runs a computation",
            );
        }
        if comp.results_to.is_empty() {
            c.push(format!("{path}.results_to"), "name at least one participant who may read the result");
        }
        for (j, p) in comp.results_to.iter().enumerate() {
            require_participant_with_role(
                contract,
                c,
                &format!("{path}.results_to[{j}]"),
                p,
                Role::Analyst,
                "reads a computation's results",
            );
        }
        for (j, p) in comp.deliver_to.iter().enumerate() {
            if !comp.results_to.contains(p) {
                c.push(
                    format!("{path}.deliver_to[{j}]"),
                    format!("'{p}' receives activations, so it must also be in results_to"),
                );
            }
        }
        match &comp.kind {
            None => c.push(
                path.clone(),
                format!(
                    "computation '{}' needs a kind: add an `overlap:`, `affinity:`, `measurement:`, `sql:` or \
                     `lookalike:` section",
                    comp.name
                ),
            ),
            Some(computation::Kind::Overlap(o)) => validate_overlap(contract, o, &format!("{path}.overlap"), c),
            Some(computation::Kind::Affinity(a)) => validate_affinity(contract, a, &format!("{path}.affinity"), c),
            Some(computation::Kind::Measurement(m)) => {
                validate_measurement(contract, m, &format!("{path}.measurement"), c)
            }
            Some(computation::Kind::Sql(q)) => validate_sql(contract, q, &format!("{path}.sql"), c),
            Some(computation::Kind::Lookalike(l)) => {
                validate_lookalike(contract, comp, l, &format!("{path}.lookalike"), c)
            }
        }
    }
}

/// Longest SQL query a contract may hold.
pub const MAX_SQL_LENGTH: usize = 65_536;

/// What can be checked without planning the query: the engine parses and plans it against the
/// tables' schemas when it hosts the room (and `sealroom room check` does the same).
fn validate_sql(contract: &RoomContract, q: &SqlComputation, path: &str, c: &mut Collector) {
    if q.query.trim().is_empty() {
        c.push(
            format!("{path}.query"),
            "give one aggregate SELECT (for example: SELECT segment, COUNT(*) AS users FROM t GROUP BY segment)",
        );
    } else if q.query.len() > MAX_SQL_LENGTH {
        c.push(format!("{path}.query"), format!("the query is longer than {MAX_SQL_LENGTH} bytes"));
    }
    if q.tables.is_empty() && q.matching.is_none() {
        c.push(format!("{path}.tables"), "name the room tables the query reads");
    }
    for (i, name) in q.tables.iter().enumerate() {
        match contract.table(name) {
            None => c.push(format!("{path}.tables[{i}]"), format!("'{name}' is not a table of this room")),
            Some(t) if t.user_id_column().is_none() => c.push(
                format!("{path}.tables[{i}]"),
                format!(
                    "table '{name}' has no user_id column, so the engine cannot count the individuals behind each \
                     output row; SQL reads only tables with one"
                ),
            ),
            Some(_) if name == "matched" => c.push(
                format!("{path}.tables[{i}]"),
                "'matched' is the name of the match when `matching:` is set; rename the table",
            ),
            Some(_) => {}
        }
    }
    if let Some(m) = &q.matching {
        validate_overlap(contract, m, &format!("{path}.matching"), c);
        for (side, name) in [("advertiser_table", &m.advertiser_table), ("publisher_table", &m.publisher_table)] {
            if contract.table(name).is_some_and(|t| t.user_id_column().is_none()) {
                c.push(
                    format!("{path}.matching.{side}"),
                    format!("table '{name}' needs a user_id column: `matched` lists the user ids of matched pairs"),
                );
            }
        }
    }
}

fn validate_measurement(contract: &RoomContract, m: &MeasurementComputation, path: &str, c: &mut Collector) {
    let Some(matching) = validate_matching(contract, m.matching.as_ref(), "a measurement", path, c) else { return };
    // A side table: known, owned by the owner of the table it joins, with a user id; the main
    // table must have one too.
    let side = |field: &str, name: &str, main: &str, role: &str, c: &mut Collector| -> Option<Table> {
        let Some(t) = contract.table(name) else {
            c.push(format!("{path}.{field}"), format!("unknown table '{name}'"));
            return None;
        };
        let main_table = contract.table(main)?;
        if t.owner != main_table.owner {
            c.push(
                format!("{path}.{field}"),
                format!(
                    "table '{name}' is owned by '{}' but the {role} table '{main}' by '{}': the {role} supplies both",
                    t.owner, main_table.owner
                ),
            );
        }
        for (table, what) in [(t, "its rows"), (main_table, "the rows they join")] {
            if table.user_id_column().is_none() {
                c.push(
                    format!("{path}.{field}"),
                    format!(
                        "table '{}' has no user_id column: {what} must be joined on the {role}'s user id",
                        table.name
                    ),
                );
            }
        }
        Some(t.clone())
    };
    if m.exposure_table.is_empty() {
        c.push(format!("{path}.exposure_table"), "name the publisher's exposure log (a row per impression)");
    } else if let Some(t) = side("exposure_table", &m.exposure_table, &matching.publisher_table, "publisher", c)
        && t.columns_of_kind(IdentifierKind::Campaign).count() != 1
    {
        c.push(
            format!("{path}.exposure_table"),
            format!("table '{}' needs exactly one column with `identifier: campaign`", t.name),
        );
    }
    if !m.conversion_table.is_empty() {
        side("conversion_table", &m.conversion_table, &matching.advertiser_table, "advertiser", c);
    }
    validate_confidence(m.confidence, path, c);
}

/// The overlap options of an affinity or a measurement, validated; `None` when absent.
fn validate_matching<'a>(
    contract: &RoomContract,
    matching: Option<&'a OverlapComputation>,
    kind: &str,
    path: &str,
    c: &mut Collector,
) -> Option<&'a OverlapComputation> {
    let Some(matching) = matching else {
        c.push(format!("{path}.matching"), format!("{kind} needs `matching:` (the tables and how they are matched)"));
        return None;
    };
    validate_overlap(contract, matching, &format!("{path}.matching"), c);
    Some(matching)
}

fn validate_confidence(field: f64, path: &str, c: &mut Collector) {
    if crate::confidence(field).is_none() {
        c.push(
            format!("{path}.confidence"),
            format!("confidence {field} is not offered: use 0.8, 0.9, 0.95 (the default) or 0.99"),
        );
    }
}

/// Column types a lookalike can train on (identifiers and raw bytes are never features).
fn is_feature_type(t: ColumnType) -> bool {
    !matches!(t, ColumnType::Sha256 | ColumnType::Bytes | ColumnType::Unspecified)
}

fn validate_lookalike(
    contract: &RoomContract,
    comp: &Computation,
    l: &LookalikeComputation,
    path: &str,
    c: &mut Collector,
) {
    let Some(matching) = validate_matching(contract, l.matching.as_ref(), "a lookalike", path, c) else { return };
    let Some(publisher) = contract.table(&matching.publisher_table) else { return };
    let segment_table = if matching.segment_table.is_empty() { None } else { contract.table(&matching.segment_table) };
    // A feature: a non-identifier column of the publisher table, or a segment column of it or of
    // the segment table.
    let usable = |col: &Column| {
        (col.identifier() == IdentifierKind::Unspecified && is_feature_type(col.r#type()))
            || col.identifier() == IdentifierKind::Segment
    };
    let segment_columns = segment_table.into_iter().flat_map(|t| t.columns_of_kind(IdentifierKind::Segment));
    let candidates: Vec<&Column> = publisher.columns.iter().filter(|col| usable(col)).chain(segment_columns).collect();
    if l.features.is_empty() && candidates.is_empty() {
        c.push(
            format!("{path}.features"),
            format!(
                "table '{}' has no column to train on: a lookalike needs publisher columns that are not identifiers \
                 (numbers, categories, booleans, dates) or segment columns",
                publisher.name
            ),
        );
    }
    for (i, name) in l.features.iter().enumerate() {
        if candidates.iter().any(|col| col.name == *name) {
            continue;
        }
        let why = match publisher.column(name) {
            Some(col) => format!(
                "column '{name}' of '{}' is an identifier ({}) or of type {}: identifiers are never features",
                publisher.name,
                col.identifier().file_name(),
                col.r#type().file_name()
            ),
            None => format!(
                "'{name}' is not a column of the publisher table '{}'{} (features: {})",
                publisher.name,
                segment_table.map(|t| format!(" or a segment column of '{}'", t.name)).unwrap_or_default(),
                candidates.iter().map(|col| col.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        };
        c.push(format!("{path}.features[{i}]"), why);
    }
    if !l.model.is_empty() && !crate::LOOKALIKE_MODELS.contains(&l.model.as_str()) {
        c.push(
            format!("{path}.model"),
            format!("'{}' is not a lookalike model: use {}", l.model, crate::LOOKALIKE_MODELS.join(" or ")),
        );
    }
    for (j, p) in l.model_to.iter().enumerate() {
        require_participant_with_role(
            contract,
            c,
            &format!("{path}.model_to[{j}]"),
            p,
            Role::Analyst,
            "receives the trained model",
        );
        if *p == l.audience_to {
            c.push(
                format!("{path}.model_to[{j}]"),
                format!(
                    "'{p}' takes the audience, which leaves out the seed users, so with the model it could score \
                     its whole base and find the seed (the advertiser's customers) among the high scores missing \
                     from the audience; give the model or the audience to '{p}', not both"
                ),
            );
        }
    }
    if !l.audience_to.is_empty() {
        if !comp.results_to.contains(&l.audience_to) {
            c.push(
                format!("{path}.audience_to"),
                format!(
                    "'{}' chooses the audience's size from the reach curve, so it must also be in results_to",
                    l.audience_to
                ),
            );
        }
        if l.audience_to != publisher.owner {
            c.push(
                format!("{path}.audience_to"),
                format!(
                    "the audience is a list of the publisher table's users, so only its owner '{}' may take it, \
                     not '{}'",
                    publisher.owner, l.audience_to
                ),
            );
        }
        if publisher.user_id_column().is_none() {
            c.push(
                format!("{path}.audience_to"),
                format!(
                    "table '{}' needs a user_id column: an audience lists the publisher's user ids",
                    publisher.name
                ),
            );
        }
    }
}

fn validate_affinity(contract: &RoomContract, a: &AffinityComputation, path: &str, c: &mut Collector) {
    let Some(matching) = validate_matching(contract, a.matching.as_ref(), "an affinity", path, c) else { return };
    let segments_in =
        if matching.segment_table.is_empty() { &matching.publisher_table } else { &matching.segment_table };
    if let Some(t) = contract.table(segments_in)
        && t.columns_of_kind(IdentifierKind::Segment).next().is_none()
    {
        c.push(
            format!("{path}.matching"),
            format!(
                "table '{}' has no segment column: an affinity ranks publisher segments, so the publisher table (or \
                 `segment_table`) needs a column with `identifier: segment`",
                t.name
            ),
        );
    }
    validate_confidence(a.confidence, path, c);
    if a.top > 10_000 {
        c.push(format!("{path}.top"), format!("top {} is more than 10000 segments; use 0 for all of them", a.top));
    }
}

fn validate_overlap(contract: &RoomContract, o: &OverlapComputation, path: &str, c: &mut Collector) {
    let table = |field: &str, name: &str, c: &mut Collector| -> Option<&Table> {
        let t = contract.table(name);
        if t.is_none() {
            c.push(
                format!("{path}.{field}"),
                format!(
                    "no table named '{}' (tables: {})",
                    truncate_for_message(name, 64),
                    contract.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            );
        }
        t
    };
    let advertiser = table("advertiser_table", &o.advertiser_table, c);
    let publisher = table("publisher_table", &o.publisher_table, c);
    if o.advertiser_table == o.publisher_table {
        c.push(format!("{path}.publisher_table"), "the advertiser and publisher tables must be different tables");
    }
    let (Some(advertiser), Some(publisher)) = (advertiser, publisher) else {
        return;
    };
    // The exact tiers each table can take part in (plaintext emails and phones are hashed by the
    // engine into the hashed_email and hashed_phone tiers).
    let tiers_in = |t: &Table| -> HashSet<IdentifierKind> {
        t.columns.iter().filter_map(|col| col.identifier().exact_tier()).collect()
    };
    let (a_tiers, p_tiers) = (tiers_in(advertiser), tiers_in(publisher));
    let has_kind = |t: &Table, k: IdentifierKind| t.columns_of_kind(k).next().is_some();
    let fuzzy_kinds = |t: &Table| -> HashSet<IdentifierKind> {
        t.columns.iter().map(|col| col.identifier()).filter(|k| k.is_plaintext_pii()).collect()
    };
    let shared_pii: Vec<IdentifierKind> = {
        let (a, p) = (fuzzy_kinds(advertiser), fuzzy_kinds(publisher));
        let mut v: Vec<_> = a.intersection(&p).copied().collect();
        v.sort();
        v
    };
    let any_tier = !o.match_on.is_empty()
        || a_tiers.intersection(&p_tiers).next().is_some()
        || o.fuzzy.is_some()
        || o.clk.is_some();
    if !any_tier {
        c.push(
            format!("{path}.match_on"),
            format!(
                "tables '{}' and '{}' share no identifier kind to match on (hashed_email, hashed_phone, \
                 hashed_shared_id, or plaintext email and phone), and neither fuzzy nor clk matching is on",
                advertiser.name, publisher.name
            ),
        );
    }
    let mut listed = HashSet::new();
    for (j, kind) in o.match_on.iter().enumerate() {
        let kind = IdentifierKind::try_from(*kind).unwrap_or(IdentifierKind::Unspecified);
        if !kind.is_hashed_match_key() {
            c.push(
                format!("{path}.match_on[{j}]"),
                format!(
                    "overlap matches exactly on hashed_email, hashed_phone or hashed_shared_id, not {} \
                     (plaintext email and phone columns join the hashed_email and hashed_phone tiers)",
                    kind.file_name()
                ),
            );
            continue;
        }
        if !listed.insert(kind) {
            c.push(format!("{path}.match_on[{j}]"), format!("{} is listed twice", kind.file_name()));
        }
        for t in [advertiser, publisher] {
            if !tiers_in(t).contains(&kind) {
                c.push(
                    format!("{path}.match_on[{j}]"),
                    format!("table '{}' has no {} column to match on", t.name, kind.file_name()),
                );
            }
        }
    }
    let profile = NormalizationProfile::try_from(o.normalization).unwrap_or(NormalizationProfile::Sealroom);
    if NormalizationProfile::try_from(o.normalization).is_err() {
        c.push(format!("{path}.normalization"), format!("unknown normalization {}", o.normalization));
    }
    for t in [advertiser, publisher] {
        for col in &t.columns {
            let kind = col.identifier();
            if matches!(kind, IdentifierKind::HashedEmail | IdentifierKind::HashedPhone)
                && col.normalization() != profile
            {
                c.push(
                    format!("{path}.normalization"),
                    format!(
                        "column '{}.{}' was hashed under '{}' normalization but this overlap normalizes under '{}'; \
                         equal addresses would hash apart — declare the same normalization on both",
                        t.name,
                        col.name,
                        col.normalization().file_name(),
                        profile.file_name()
                    ),
                );
            }
        }
    }
    let region_ok = o.phone_region.len() == 2 && o.phone_region.chars().all(|ch| ch.is_ascii_alphabetic());
    if !o.phone_region.is_empty() && !region_ok {
        c.push(
            format!("{path}.phone_region"),
            format!(
                "'{}' is not a region: give an ISO 3166-1 alpha-2 code such as US, GB or DE",
                truncate_for_message(&o.phone_region, 16)
            ),
        );
    }
    for (j, g) in o.identity_graphs.iter().enumerate() {
        if let Some(graph) = table(&format!("identity_graphs[{j}]"), g, c) {
            let keys = graph.columns.iter().filter(|col| col.identifier().is_hashed_match_key()).count();
            if keys < 2 {
                c.push(
                    format!("{path}.identity_graphs[{j}]"),
                    format!(
                        "identity graph '{}' needs at least two hashed identifier columns (hashed_email, \
                         hashed_phone, hashed_shared_id): each row links its identifiers into one individual",
                        graph.name
                    ),
                );
            }
            for col in &graph.columns {
                if matches!(col.identifier(), IdentifierKind::HashedEmail | IdentifierKind::HashedPhone)
                    && col.normalization() != profile
                {
                    c.push(
                        format!("{path}.identity_graphs[{j}]"),
                        format!(
                            "column '{}.{}' was hashed under '{}' normalization but this overlap normalizes under '{}'",
                            graph.name,
                            col.name,
                            col.normalization().file_name(),
                            profile.file_name()
                        ),
                    );
                }
            }
        }
    }
    if let Some(f) = &o.fuzzy {
        if !(0.0..=1.0).contains(&f.threshold) || f.threshold.is_nan() {
            c.push(format!("{path}.fuzzy.threshold"), format!("{} is not a probability between 0 and 1", f.threshold));
        }
        if f.settings_yaml.is_empty() && shared_pii.len() < 2 {
            c.push(
                format!("{path}.fuzzy"),
                format!(
                    "fuzzy matching compares plaintext personal data both tables carry (given_name, surname, \
                     street_address, city, postcode, date_of_birth, email, phone); '{}' and '{}' share {}",
                    advertiser.name,
                    publisher.name,
                    if shared_pii.is_empty() {
                        "none".to_owned()
                    } else {
                        format!("only {}", shared_pii.iter().map(|k| k.file_name()).collect::<Vec<_>>().join(", "))
                    }
                ),
            );
        }
    }
    if let Some(k) = &o.clk {
        if !(0.0..=1.0).contains(&k.threshold) || k.threshold.is_nan() {
            c.push(
                format!("{path}.clk.threshold"),
                format!("{} is not a Dice coefficient between 0 and 1", k.threshold),
            );
        }
        for t in [advertiser, publisher] {
            let n = t.columns_of_kind(IdentifierKind::Clk).count();
            if n != 1 {
                c.push(
                    format!("{path}.clk"),
                    format!("table '{}' needs exactly one clk column for CLK matching (it has {n})", t.name),
                );
            }
        }
        if has_kind(advertiser, IdentifierKind::ClkBlockingKeys) != has_kind(publisher, IdentifierKind::ClkBlockingKeys)
        {
            c.push(
                format!("{path}.clk"),
                "either both tables carry a clk_blocking_keys column or neither does (sealroom hash --clk writes one)",
            );
        }
    }
    if !o.segment_table.is_empty()
        && let Some(segments) = table("segment_table", &o.segment_table, c)
    {
        if segments.owner != publisher.owner {
            c.push(
                format!("{path}.segment_table"),
                format!(
                    "the segment table '{}' is owned by '{}', but the publisher table by '{}'; segments \
                         must come from the publisher",
                    segments.name, segments.owner, publisher.owner
                ),
            );
        }
        if segments.columns_of_kind(IdentifierKind::Segment).next().is_none() {
            c.push(format!("{path}.segment_table"), format!("table '{}' has no segment column", segments.name));
        }
        if segments.name != publisher.name {
            match (segments.user_id_column(), publisher.user_id_column()) {
                (Some(s), Some(p)) if s.r#type == p.r#type => {}
                (Some(_), Some(_)) => c.push(
                    format!("{path}.segment_table"),
                    "the user_id columns of the segment table and the publisher table must have the same type",
                ),
                _ => c.push(
                    format!("{path}.segment_table"),
                    format!(
                        "to join segments to users, both '{}' and '{}' need a user_id column",
                        segments.name, publisher.name
                    ),
                ),
            }
        }
    }
}

fn validate_privacy(contract: &RoomContract, c: &mut Collector) {
    let Some(privacy) = &contract.privacy else {
        return;
    };
    let mut seen = HashSet::new();
    for (i, t) in privacy.k_thresholds.iter().enumerate() {
        let path = format!("privacy.k_thresholds[{i}]");
        if contract.participant(&t.set_by).is_none() {
            c.push(format!("{path}.set_by"), format!("'{}' is not a participant of this room", t.set_by));
        } else if !seen.insert(t.set_by.as_str()) {
            c.push(
                format!("{path}.set_by"),
                format!("'{}' sets k twice; keep one threshold per participant", t.set_by),
            );
        }
        if !(MIN_K..=MAX_K).contains(&t.k) {
            c.push(format!("{path}.k"), format!("k = {} is out of range: k must be between {MIN_K} and {MAX_K}", t.k));
        }
    }
}

fn validate_differential_privacy(contract: &RoomContract, c: &mut Collector) {
    let Some(dp) = contract.differential_privacy() else {
        return;
    };
    let path = "privacy.differential_privacy";
    let max_run = crate::MAX_EPSILON_PER_RUN_MICRO as f64 / 1e6;
    let max_budget = crate::MAX_EPSILON_BUDGET_MICRO as f64 / 1e6;
    if dp.epsilon_per_run_micro == 0 {
        c.push(
            format!("{path}.epsilon_per_run"),
            "ε must be greater than 0 (and at least 0.000001); 0.1 to 1 per run is usual",
        );
    } else if dp.epsilon_per_run_micro > crate::MAX_EPSILON_PER_RUN_MICRO {
        c.push(
            format!("{path}.epsilon_per_run"),
            format!(
                "ε = {} per run is too large to protect anyone (at most {max_run}); 0.1 to 1 per run is usual",
                dp.epsilon_per_run_micro as f64 / 1e6
            ),
        );
    }
    if dp.budget_per_participant_micro == 0 {
        c.push(format!("{path}.budget_per_participant"), "the budget must be greater than 0");
    } else if dp.budget_per_participant_micro > crate::MAX_EPSILON_BUDGET_MICRO {
        c.push(
            format!("{path}.budget_per_participant"),
            format!(
                "a total ε of {} protects next to nothing (at most {max_budget})",
                dp.budget_per_participant_micro as f64 / 1e6
            ),
        );
    } else if dp.budget_per_participant_micro < dp.epsilon_per_run_micro {
        c.push(
            format!("{path}.budget_per_participant"),
            "the budget is smaller than one run's ε, so no computation could ever run; raise it or lower \
             epsilon_per_run",
        );
    }
    for (field, value, default) in [
        ("max_segments_per_person", dp.max_segments_per_person, crate::DEFAULT_MAX_SEGMENTS_PER_PERSON),
        ("max_campaigns_per_person", dp.max_campaigns_per_person, crate::DEFAULT_MAX_CAMPAIGNS_PER_PERSON),
        ("max_impressions_per_person", dp.max_impressions_per_person, crate::DEFAULT_MAX_IMPRESSIONS_PER_PERSON),
    ] {
        if value > 1000 {
            c.push(
                format!("{path}.{field}"),
                format!("at most 1000: the noise grows with this bound ({default} is the default)"),
            );
        }
    }
    // Each computation must bound what one person can change; say which ones cannot.
    for (i, comp) in contract.computations.iter().enumerate() {
        let at = format!("computations[{i}]");
        if let Some(computation::Kind::Measurement(m)) = &comp.kind
            && !m.conversion_table.is_empty()
        {
            c.push(
                format!("{at}.measurement.conversion_table"),
                "conversion lift cannot be measured under differential privacy: which customers count as exposed \
                 depends on who each publisher user is paired with, and one person can re-pair many; measure \
                 reach and frequency only (remove conversion_table) or remove privacy.differential_privacy",
            );
        }
        if let Some(computation::Kind::Lookalike(_)) = &comp.kind {
            c.push(
                format!("{at}.lookalike"),
                "lookalike models cannot be trained under differential privacy yet: a trained model and a ranked \
                 audience have no noise calibrated to one person's effect; remove it from this room or remove \
                 privacy.differential_privacy",
            );
        }
        if let Some(computation::Kind::Sql(_)) = &comp.kind {
            c.push(
                format!("{at}.sql"),
                "SQL computations do not support differential privacy yet; remove it from this room or remove \
                 privacy.differential_privacy",
            );
        }
        let (section, matching) = match &comp.kind {
            Some(computation::Kind::Overlap(o)) => ("overlap", Some(o)),
            Some(computation::Kind::Affinity(a)) => ("affinity.matching", a.matching.as_ref()),
            Some(computation::Kind::Measurement(m)) => ("measurement.matching", m.matching.as_ref()),
            _ => continue,
        };
        let Some(m) = matching else { continue };
        if !m.identity_graphs.is_empty() {
            c.push(
                format!("{at}.{section}.identity_graphs"),
                "identity graphs cannot be used under differential privacy: one graph edge can join many people, \
                 so no bound on one person's effect holds",
            );
        }
        if m.fuzzy.is_some() {
            c.push(
                format!("{at}.{section}.fuzzy"),
                "fuzzy matching cannot be used under differential privacy: it fits its blocking to the data and \
                 resolves competing candidates, so one person can change other people's matches; use exact \
                 keys or clk with many_to_many: true",
            );
        }
        if m.clk.as_ref().is_some_and(|clk| !clk.many_to_many) {
            c.push(
                format!("{at}.{section}.clk"),
                "under differential privacy CLK matching must be many_to_many: true (pairwise decisions; the \
                 engine then bounds every person to one partner itself)",
            );
        }
    }
}

/// The Intel DCAP TCB statuses a contract may accept.
pub const TCB_STATUSES: [&str; 6] = [
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
];

fn validate_attestation(contract: &RoomContract, c: &mut Collector) {
    let Some(attestation) = &contract.attestation else {
        return;
    };
    if let Some(tcb) = &attestation.min_snp_tcb {
        for (name, v) in [
            ("bootloader", tcb.bootloader),
            ("tee", tcb.tee),
            ("snp", tcb.snp),
            ("microcode", tcb.microcode),
            ("fmc", tcb.fmc),
        ] {
            if v > 255 {
                c.push(format!("attestation.min_snp_tcb.{name}"), "is a security patch level: 0..255");
            }
        }
    }
    for (i, status) in attestation.accepted_tcb_statuses.iter().enumerate() {
        if !TCB_STATUSES.contains(&status.as_str()) {
            c.push(
                format!("attestation.accepted_tcb_statuses[{i}]"),
                format!("unknown TCB status '{status}': use one of {}", TCB_STATUSES.join(", ")),
            );
        }
    }
    for (i, m) in attestation.accepted_measurements.iter().enumerate() {
        let path = format!("attestation.accepted_measurements[{i}]");
        let expected = match Platform::try_from(m.platform) {
            Ok(Platform::AmdSevSnp | Platform::IntelTdx) => 48,
            Ok(Platform::IntelSgx) => 32,
            Ok(Platform::Unspecified) | Err(_) => {
                c.push(format!("{path}.platform"), "give a platform: amd_sev_snp, intel_tdx or intel_sgx");
                continue;
            }
        };
        if !is_hex_of_len(&m.measurement, expected) {
            c.push(
                format!("{path}.measurement"),
                format!("must be {} hex characters ({expected} bytes) for this platform", expected * 2),
            );
        }
        let tdx = m.platform == Platform::IntelTdx as i32;
        if !m.rtmrs.is_empty() && !tdx {
            c.push(format!("{path}.rtmrs"), "RTMRs are Intel TDX registers: give them only for intel_tdx");
        }
        if m.rtmrs.len() > 4 {
            c.push(format!("{path}.rtmrs"), format!("a TD has 4 RTMRs (0 to 3); {} are given", m.rtmrs.len()));
        }
        for (j, r) in m.rtmrs.iter().enumerate() {
            if !r.is_empty() && !is_hex_of_len(r, 48) {
                c.push(
                    format!("{path}.rtmrs[{j}]"),
                    "must be 96 hex characters (48 bytes), or empty to leave the register free",
                );
            }
        }
        let sgx = m.platform == Platform::IntelSgx as i32;
        for (field, value) in [("isv_prod_id", m.isv_prod_id), ("min_isv_svn", m.min_isv_svn)] {
            if value != 0 && !sgx {
                c.push(format!("{path}.{field}"), "an SGX enclave's field: give it only for intel_sgx");
            }
            if value > u32::from(u16::MAX) {
                c.push(format!("{path}.{field}"), format!("{value} does not fit SGX's 16 bits (at most 65535)"));
            }
        }
    }
}
