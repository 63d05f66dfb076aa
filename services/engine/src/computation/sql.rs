//! SQL computations: one aggregate query from the contract, run by DataFusion over the room's
//! tables (and the match as the table `matched`), released only as rows about at least k people.
//!
//! Privacy argument (docs/computations/sql.md). The query is parsed (sqlparser, DataFusion's
//! dialect) and refused unless it is a single aggregate `SELECT` over declared tables: no `*`, no
//! subqueries, CTEs, set operations, window functions, `DISTINCT`, `ORDER BY` or `LIMIT`; only the
//! aggregates `COUNT`, `SUM` and `AVG`; identifier columns (user ids, hashed or plaintext contact
//! data, names, addresses, dates of birth, CLKs) may appear only in join and `WHERE` conditions
//! and as the argument of `COUNT`, never as a group key or an output. The engine then rewrites the
//! query: for every output row it adds the number of distinct individuals of each table read
//! (`COUNT(DISTINCT user_id)`), and for every aggregate the number of distinct individuals that
//! *contribute* to it (`COUNT(DISTINCT CASE WHEN <argument> IS NOT NULL [AND <argument> <> 0] THEN
//! user_id END)`), so that `SUM(CASE WHEN <one person> THEN income END)` over a large group is
//! about one person and is suppressed. A row whose group has fewer than k individuals of any table
//! is not listed at all; a cell is about the fewest contributors of any table, and the release gate
//! suppresses it under k. A difference check suppresses a cell whose contributors differ from the
//! group's or another released cell's by 1 to k − 1 (so two aggregates cannot be subtracted to
//! isolate a few people). Rows are listed by their group keys, never by value.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident, ObjectNamePart, SelectItem,
    SetExpr, Statement, TableFactor, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use sealroom_proto::room::v1::{IdentifierKind, RoomContract, SqlComputation, Table};

use super::{InputTable, overlap};
use crate::error::{Error, Result};
use crate::report::{ComputedCell, ComputedRow, ComputedSection, MetricKind, MetricSpec};

/// The table name the match takes in a query.
pub(crate) const MATCHED: &str = "matched";

/// Aggregates a query may use. Others (MIN, MAX, MEDIAN, ARRAY_AGG, FIRST_VALUE, …) can return
/// one person's value whatever the group size.
const ALLOWED_AGGREGATES: [&str; 4] = ["count", "sum", "avg", "mean"];

/// Whether a column of this kind identifies a person (never a group key or an output).
fn is_identifier(kind: IdentifierKind) -> bool {
    !matches!(
        kind,
        IdentifierKind::Unspecified
            | IdentifierKind::Segment
            | IdentifierKind::Campaign
            | IdentifierKind::City
            | IdentifierKind::Postcode
    )
}

/// A table the query reads: its name, the name the query uses for it, and its person columns.
#[derive(Debug, Clone)]
struct Relation {
    table: String,
    alias: String,
    /// Columns that count individuals (the user id; both ids for `matched`).
    persons: Vec<String>,
    /// Identifier columns, lowercased.
    identifiers: Vec<String>,
}

/// An output column of the query.
#[derive(Debug, Clone)]
struct Output {
    /// A group key (dimension) or an aggregate (metric).
    aggregate: bool,
    /// A metric that is exactly one COUNT.
    count: bool,
    /// Positions of the hidden columns with the contributors of each aggregate in it, per table.
    contributors: Vec<usize>,
}

/// A checked query, rewritten with its hidden person counts.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    rewritten: String,
    outputs: Vec<Output>,
    /// Positions of the hidden columns with the group's individuals, per table.
    group_persons: Vec<usize>,
}

fn refuse(message: impl std::fmt::Display) -> Error {
    Error::Contract(format!("sql: {message}"))
}

fn object_name(name: &datafusion::sql::sqlparser::ast::ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The relations a query may read: the declared tables and, with matching, `matched`.
fn relations_allowed(contract: &RoomContract, spec: &SqlComputation) -> Result<HashMap<String, Relation>> {
    let mut out = HashMap::new();
    for name in &spec.tables {
        let table = contract.table(name).ok_or_else(|| refuse(format!("'{name}' is not a table of this room")))?;
        out.insert(name.to_lowercase(), relation_of(table)?);
    }
    if spec.matching.is_some() {
        out.insert(
            MATCHED.to_owned(),
            Relation {
                table: MATCHED.into(),
                alias: MATCHED.into(),
                persons: vec!["advertiser_id".into(), "publisher_id".into()],
                identifiers: vec!["advertiser_id".into(), "publisher_id".into()],
            },
        );
    }
    Ok(out)
}

fn relation_of(table: &Table) -> Result<Relation> {
    let person = table.user_id_column().ok_or_else(|| {
        refuse(format!("table '{}' has no user_id column to count the individuals behind each row", table.name))
    })?;
    Ok(Relation {
        table: table.name.clone(),
        alias: table.name.clone(),
        persons: vec![person.name.clone()],
        identifiers: table
            .columns
            .iter()
            .filter(|c| is_identifier(c.identifier()))
            .map(|c| c.name.to_lowercase())
            .collect(),
    })
}

/// The column an expression names, as (qualifier, column), lowercased.
fn column_ref(e: &Expr) -> Option<(Option<String>, String)> {
    match e {
        Expr::Identifier(i) => Some((None, i.value.to_lowercase())),
        Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
            Some((Some(parts[parts.len() - 2].value.to_lowercase()), parts[parts.len() - 1].value.to_lowercase()))
        }
        _ => None,
    }
}

/// Finds what a query may not contain, and the identifier columns it names.
struct Scan<'a> {
    relations: &'a [Relation],
    aggregates: &'a std::collections::HashSet<String>,
    problem: Option<String>,
    identifiers: Vec<String>,
    has_aggregate: bool,
}

impl Visitor for Scan<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
        match e {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                self.problem = Some("subqueries are not supported; join the tables instead".into());
            }
            Expr::Function(f) => {
                let name = object_name(&f.name).to_lowercase();
                if f.over.is_some() {
                    self.problem = Some(format!("window functions ({name} … OVER) return a value per row"));
                } else if self.aggregates.contains(&name) {
                    if !ALLOWED_AGGREGATES.contains(&name.as_str()) {
                        self.problem = Some(format!(
                            "the aggregate {} can return one person's value whatever the group size; use COUNT, \
                             SUM or AVG",
                            name.to_uppercase()
                        ));
                    } else if f.filter.is_some() {
                        self.problem =
                            Some("aggregate FILTER clauses are not supported; use CASE WHEN inside it".into());
                    }
                    self.has_aggregate = true;
                }
            }
            _ => {
                if let Some((qualifier, column)) = column_ref(e)
                    && self.is_identifier(qualifier.as_deref(), &column)
                {
                    self.identifiers.push(column);
                }
            }
        }
        if self.problem.is_some() { std::ops::ControlFlow::Break(()) } else { std::ops::ControlFlow::Continue(()) }
    }
}

impl Scan<'_> {
    fn is_identifier(&self, qualifier: Option<&str>, column: &str) -> bool {
        self.relations
            .iter()
            .filter(|r| qualifier.is_none_or(|q| q == r.alias.to_lowercase() || q == r.table.to_lowercase()))
            .any(|r| r.identifiers.iter().any(|c| c == column))
    }
}

/// The aggregate calls of an expression: (function name, argument SQL or None for `*`).
fn aggregate_calls(e: &Expr, aggregates: &std::collections::HashSet<String>) -> Vec<(String, Option<Expr>)> {
    struct Calls<'a> {
        aggregates: &'a std::collections::HashSet<String>,
        out: Vec<(String, Option<Expr>)>,
    }
    impl Visitor for Calls<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
            if let Expr::Function(f) = e {
                let name = object_name(&f.name).to_lowercase();
                if self.aggregates.contains(&name) {
                    let arg = match &f.args {
                        FunctionArguments::List(list) => list.args.first().and_then(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                            _ => None,
                        }),
                        _ => None,
                    };
                    self.out.push((name, arg));
                }
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut calls = Calls { aggregates, out: Vec::new() };
    let _ = e.visit(&mut calls);
    calls.out
}

/// The names of DataFusion's aggregate functions (and their aliases), lowercased.
fn aggregate_names(ctx: &SessionContext) -> std::collections::HashSet<String> {
    let state = ctx.state();
    let mut names = std::collections::HashSet::new();
    for (name, f) in state.aggregate_functions() {
        names.insert(name.to_lowercase());
        for alias in f.aliases() {
            names.insert(alias.to_lowercase());
        }
    }
    names
}

/// Checks a query and rewrites it with its hidden person counts; `ctx` knows which functions are
/// aggregates.
fn check(contract: &RoomContract, spec: &SqlComputation, ctx: &SessionContext) -> Result<Checked> {
    let aggregates = &aggregate_names(ctx);
    let dialect = GenericDialect {};
    let statements =
        Parser::parse_sql(&dialect, &spec.query).map_err(|e| refuse(format!("the query does not parse: {e}")))?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return Err(refuse("give exactly one SELECT statement"));
    };
    let mut query = query.clone();
    if query.with.is_some() {
        return Err(refuse("WITH (common table expressions) is not supported; write one SELECT"));
    }
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(refuse(
            "ORDER BY and LIMIT are not supported: the engine lists rows by their group keys (a sort or limit on a \
             suppressed value would reveal it); sort and limit the released result instead",
        ));
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(refuse("set operations (UNION, INTERSECT, EXCEPT) and VALUES are not supported"));
    };
    if select.distinct.as_ref().is_some_and(|d| !matches!(d, Distinct::All)) {
        return Err(refuse("SELECT DISTINCT lists values without counting them; use GROUP BY"));
    }
    // Every relation is a declared table (or `matched`), named directly: no derived tables.
    let allowed = relations_allowed(contract, spec)?;
    let mut relations: Vec<Relation> = Vec::new();
    for twj in &select.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            let TableFactor::Table { name, alias, args, .. } = factor else {
                return Err(refuse("FROM may name only tables of the room (no subqueries, functions or UNNEST)"));
            };
            if args.is_some() {
                return Err(refuse("table functions are not supported"));
            }
            let table = object_name(name);
            let mut r = allowed.get(&table.to_lowercase()).cloned().ok_or_else(|| {
                let mut names: Vec<&str> = allowed.keys().map(String::as_str).collect();
                names.sort_unstable();
                refuse(format!(
                    "table '{table}' is not one this computation may read; it reads: {} (declare room tables in \
                     sql.tables)",
                    names.join(", ")
                ))
            })?;
            if let Some(a) = alias {
                r.alias = a.name.value.clone();
            }
            relations.push(r);
        }
    }
    if relations.is_empty() {
        return Err(refuse("the query reads no table"));
    }
    // Nothing forbidden anywhere in the statement (subqueries, windows, other aggregates).
    let mut scan =
        Scan { relations: &relations, aggregates, problem: None, identifiers: Vec::new(), has_aggregate: false };
    let _ = select.visit(&mut scan);
    if let Some(p) = scan.problem {
        return Err(refuse(p));
    }
    if spec.query.to_lowercase().contains("__sealroom") {
        return Err(refuse("names starting with __sealroom are reserved for the engine's hidden counts"));
    }
    let group_by: Vec<Expr> = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs.clone(),
        GroupByExpr::Expressions(..) => return Err(refuse("GROUP BY modifiers (ROLLUP, CUBE) are not supported")),
        GroupByExpr::All(_) => return Err(refuse("GROUP BY ALL is not supported; name the group keys")),
    };
    if group_by.is_empty() && !scan.has_aggregate {
        return Err(refuse("the query returns rows, not aggregates: add GROUP BY keys and COUNT, SUM or AVG"));
    }
    let identifiers_in = |e: &Expr| {
        let mut s =
            Scan { relations: &relations, aggregates, problem: None, identifiers: Vec::new(), has_aggregate: false };
        let _ = e.visit(&mut s);
        s.identifiers
    };
    for g in &group_by {
        if let Some(c) = identifiers_in(g).first() {
            return Err(refuse(format!(
                "GROUP BY {g} would return row-level identifiers (column '{c}' identifies people); group by \
                 segments, campaigns or other attributes"
            )));
        }
    }
    let mut outputs = Vec::new();
    // Hidden columns follow the query's own, in order: found by position, never by name.
    let first_hidden = select.projection.len();
    let mut hidden: Vec<String> = Vec::new();
    let person =
        |r: &Relation, column: &str| format!("{}.{}", Ident::with_quote('"', &r.alias), Ident::with_quote('"', column));
    for (i, item) in select.projection.iter().enumerate() {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => return Err(refuse("name the output columns (no *)")),
        };
        let calls = aggregate_calls(expr, aggregates);
        if calls.is_empty() {
            if let Some(c) = identifiers_in(expr).first() {
                return Err(refuse(format!(
                    "output column {expr} would return row-level identifiers (column '{c}' identifies people)"
                )));
            }
            outputs.push(Output { aggregate: false, count: false, contributors: Vec::new() });
            continue;
        }
        let mut contributors = Vec::new();
        for (a, (name, arg)) in calls.iter().enumerate() {
            if name != "count" && arg.as_ref().is_some_and(|e| !identifiers_in(e).is_empty()) {
                return Err(refuse(format!(
                    "{} over an identifier column would compute with people's identifiers; only COUNT may read them",
                    name.to_uppercase()
                )));
            }
            let condition = match (name.as_str(), arg) {
                (_, None) => None,
                ("sum", Some(e)) => Some(format!("({e}) IS NOT NULL AND ({e}) <> 0")),
                (_, Some(e)) => Some(format!("({e}) IS NOT NULL")),
            };
            for r in &relations {
                for p in &r.persons {
                    let alias = format!("__sealroom_c{i}_{a}_{}", hidden.len());
                    let counted = match &condition {
                        None => person(r, p),
                        Some(c) => format!("CASE WHEN {c} THEN {} END", person(r, p)),
                    };
                    contributors.push(first_hidden + hidden.len());
                    hidden.push(format!("COUNT(DISTINCT {counted}) AS {alias}"));
                }
            }
        }
        let count = matches!(expr, Expr::Function(f) if object_name(&f.name).eq_ignore_ascii_case("count"));
        outputs.push(Output { aggregate: true, count, contributors });
    }
    let mut group_persons = Vec::new();
    for r in &relations {
        for p in &r.persons {
            let alias = format!("__sealroom_g{}", group_persons.len());
            group_persons.push(first_hidden + hidden.len());
            hidden.push(format!("COUNT(DISTINCT {}) AS {alias}", person(r, p)));
        }
    }
    for h in &hidden {
        let item = Parser::new(&dialect)
            .try_with_sql(h)
            .and_then(|mut p| p.parse_select_item())
            .map_err(|e| Error::Computation(format!("rewriting the query failed: {e}")))?;
        select.projection.push(item);
    }
    Ok(Checked { rewritten: query.to_string(), outputs, group_persons })
}

/// Plans the checked query against empty tables with the contract's schemas, so that unknown
/// columns and type errors are found when the room is hosted, not at the first run.
pub(crate) async fn plan(contract: &RoomContract, spec: &SqlComputation) -> Result<()> {
    let ctx = SessionContext::new();
    let checked = check(contract, spec, &ctx)?;
    for name in &spec.tables {
        let table = contract.table(name).ok_or_else(|| refuse(format!("'{name}' is not a table of this room")))?;
        register(&ctx, name, crate::schema::stored_schema(table), Vec::new())?;
    }
    if spec.matching.is_some() {
        register(&ctx, MATCHED, matched_schema(), Vec::new())?;
    }
    ctx.sql_with_options(&checked.rewritten, options())
        .await
        .map_err(|e| refuse(format!("the query does not plan against the room's tables: {e}")))?;
    Ok(())
}

fn options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

fn matched_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("advertiser_id", DataType::Utf8, false),
        Field::new("publisher_id", DataType::Utf8, false),
    ]))
}

fn register(ctx: &SessionContext, name: &str, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<()> {
    let table = MemTable::try_new(schema, vec![batches]).map_err(|e| Error::Computation(e.to_string()))?;
    ctx.register_table(name, Arc::new(table)).map_err(|e| Error::Computation(e.to_string()))?;
    Ok(())
}

/// The match as a table of user-id pairs.
async fn matched_table(
    contract: &RoomContract,
    spec: &sealroom_proto::room::v1::OverlapComputation,
    tables: &HashMap<String, InputTable>,
) -> Result<RecordBatch> {
    let m = overlap::matched(contract, spec, tables, false).await?;
    let a = super::first_text_per_individual(&m.advertiser_person, &m.advertiser_of_row, m.advertiser_individuals)?;
    let p = super::first_text_per_individual(&m.publisher_person, &m.publisher_of_row, m.publisher_individuals)?;
    let mut pairs: Vec<(u32, u32)> = m.pairs.tier_of.keys().copied().collect();
    pairs.sort_unstable();
    fn pick(v: &[Option<String>], i: u32) -> &str {
        v.get(i as usize).and_then(|s| s.as_deref()).unwrap_or("")
    }
    let advertiser: StringArray = pairs.iter().map(|(x, _)| Some(pick(&a, *x))).collect();
    let publisher: StringArray = pairs.iter().map(|(_, y)| Some(pick(&p, *y))).collect();
    Ok(RecordBatch::try_new(matched_schema(), vec![Arc::new(advertiser), Arc::new(publisher)])?)
}

/// Runs the query and returns its one section.
pub(crate) async fn run(
    contract: &RoomContract,
    name: &str,
    spec: &SqlComputation,
    tables: &HashMap<String, InputTable>,
) -> Result<Vec<ComputedSection>> {
    let ctx = SessionContext::new();
    let checked = check(contract, spec, &ctx)?;
    for table in &spec.tables {
        let input = overlap::input(tables, table)?;
        register(&ctx, table, input.schema.clone(), input.batches.clone())?;
    }
    if let Some(matching) = &spec.matching {
        register(&ctx, MATCHED, matched_schema(), vec![matched_table(contract, matching, tables).await?])?;
    }
    let frame = ctx.sql_with_options(&checked.rewritten, options()).await.map_err(|e| refuse(e.to_string()))?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await.map_err(|e| Error::Computation(format!("the query failed: {e}")))?;
    let result = arrow::compute::concat_batches(&schema, &batches)?;
    Ok(vec![section(&checked, name, &result, u64::from(contract.effective_k()))?])
}

/// The difference check within a row: two released aggregates (or an aggregate and the group)
/// whose contributors differ by 1 to k − 1 individuals could be subtracted to learn about those few
/// (`SUM(income)` and `SUM(CASE WHEN age <> 77 THEN income END)`). Going from the most contributors
/// down, a cell whose contributor count is that close to one already released (the group counts as
/// released) is suppressed: it is marked as about 0 individuals.
fn difference_check(individuals: &[u64], group: u64, k: u64) -> Vec<u64> {
    let mut order: Vec<usize> = (0..individuals.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(individuals[*i]));
    let mut released = vec![group];
    let mut out = individuals.to_vec();
    for i in order {
        let c = individuals[i];
        if c < k || released.iter().any(|r| r.abs_diff(c) > 0 && r.abs_diff(c) < k) {
            out[i] = 0;
        } else {
            released.push(c);
        }
    }
    out
}

/// The released section: dimensions as strings, metrics with their contributors.
fn section(checked: &Checked, name: &str, result: &RecordBatch, k: u64) -> Result<ComputedSection> {
    let schema = result.schema();
    let column = |i: &usize| -> Result<ArrayRef> {
        (*i < result.num_columns())
            .then(|| result.column(*i).clone())
            .ok_or_else(|| Error::Computation(format!("the query's result has no column {i}")))
    };
    let as_u64 = |a: &ArrayRef| -> Result<Vec<u64>> {
        let a = arrow::compute::cast(a, &DataType::UInt64)?;
        Ok(a.as_primitive::<arrow::datatypes::UInt64Type>().iter().map(|v| v.unwrap_or(0)).collect())
    };
    let group_persons: Vec<Vec<u64>> =
        checked.group_persons.iter().map(|c| as_u64(&column(c)?)).collect::<Result<_>>()?;
    let mut dimensions = Vec::new();
    let mut metrics = Vec::new();
    let mut dimension_values: Vec<StringArray> = Vec::new();
    let mut metric_values: Vec<(ArrayRef, bool, Vec<Vec<u64>>)> = Vec::new();
    for (i, output) in checked.outputs.iter().enumerate() {
        let field = schema.field(i);
        if output.aggregate {
            let contributors = output.contributors.iter().map(|c| as_u64(&column(c)?)).collect::<Result<_>>()?;
            let kind = if output.count { MetricKind::Count } else { MetricKind::Number };
            metrics.push(MetricSpec {
                name: field.name().clone(),
                kind,
                description: format!("{} (an aggregate of the query)", field.name()),
            });
            let values = if output.count {
                arrow::compute::cast(result.column(i), &DataType::UInt64)?
            } else {
                arrow::compute::cast(result.column(i), &DataType::Float64)?
            };
            metric_values.push((values, output.count, contributors));
        } else {
            dimensions.push(field.name().clone());
            let strings = arrow::compute::cast(result.column(i), &DataType::Utf8)?;
            dimension_values.push(strings.as_string::<i32>().clone());
        }
    }
    let mut rows: Vec<ComputedRow> = Vec::new();
    for row in 0..result.num_rows() {
        // A group about fewer than k individuals of any table is not listed.
        let persons = group_persons.iter().map(|g| g[row]).min().unwrap_or(0);
        if persons < k {
            continue;
        }
        let dims = dimension_values
            .iter()
            .map(|a| if a.is_valid(row) { a.value(row).to_owned() } else { "(null)".to_owned() })
            .collect();
        let individuals: Vec<u64> = metric_values
            .iter()
            .map(|(values, _, contributors)| {
                let n = contributors.iter().map(|c| c[row]).min().unwrap_or(0).min(persons);
                if values.is_valid(row) { n } else { 0 }
            })
            .collect();
        let individuals = difference_check(&individuals, persons, k);
        let cells = metric_values
            .iter()
            .zip(individuals)
            .map(|((values, count, _), individuals)| {
                if *count {
                    let v = values.as_primitive::<arrow::datatypes::UInt64Type>();
                    ComputedCell::count(if v.is_valid(row) { v.value(row) } else { 0 }, individuals)
                } else {
                    let v = values.as_primitive::<arrow::datatypes::Float64Type>();
                    ComputedCell::number(if v.is_valid(row) { v.value(row) } else { 0.0 }, individuals)
                }
            })
            .collect();
        rows.push(ComputedRow { dimensions: dims, cells });
    }
    rows.sort_by(|a, b| a.dimensions.cmp(&b.dimensions));
    Ok(ComputedSection {
        name: "result".into(),
        description: format!(
            "The rows of SQL computation '{name}' about at least k individuals, in group-key order; a cell whose \
             aggregate is about fewer than k contributing individuals, or whose contributors differ from the group's \
             or another released cell's by fewer than k, is suppressed"
        ),
        dimensions,
        metrics,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::difference_check;

    #[test]
    fn cells_close_to_the_group_or_to_each_other_are_suppressed() {
        // Group of 30, k = 10: 30 (all) is released; 29 (all but one) is within k of it; 12 is 18
        // away; 5 is under k.
        assert_eq!(difference_check(&[30, 29, 12, 5], 30, 10), [30, 0, 12, 0]);
        // 30, 20 and 10 are k apart: all released.
        assert_eq!(difference_check(&[30, 20, 10], 30, 10), [30, 20, 10]);
    }

    proptest! {
        /// Released contributor counts (and the group) are pairwise equal or at least k apart, and
        /// every released count reaches k.
        #[test]
        fn released_counts_are_never_within_k(cells in proptest::collection::vec(0u64..60, 0..8), k in 2u64..20) {
            let group = cells.iter().copied().max().unwrap_or(0).max(k);
            let out = difference_check(&cells, group, k);
            let mut released: Vec<u64> = out.iter().copied().filter(|c| *c > 0).collect();
            released.push(group);
            for a in &released {
                prop_assert!(*a >= k);
                for b in &released {
                    prop_assert!(a == b || a.abs_diff(*b) >= k);
                }
            }
            for (c, o) in cells.iter().zip(&out) {
                prop_assert!(*o == 0 || o == c);
            }
        }
    }
}
