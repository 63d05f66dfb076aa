//! Renders a released result (its JSON form) as terminal tables.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use serde_json::Value;

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cell_text(cell: &Value, kind: &str, k: u64) -> String {
    if cell["suppressed"] == Value::Bool(true) {
        return format!("suppressed (k={k})");
    }
    match (kind, &cell["value"]) {
        ("ratio", Value::Number(n)) => format!("{:.2} %", n.as_f64().unwrap_or(0.0) * 100.0),
        ("number", Value::Number(n)) => format!("{:.2}", n.as_f64().unwrap_or(0.0)),
        (_, Value::Number(n)) => n.as_u64().map_or_else(|| n.to_string(), thousands),
        (_, other) => other.to_string(),
    }
}

/// One table per section. A section without dimensions (a summary) is shown as metric/value rows.
pub fn render(result: &Value) -> String {
    let k = result["k"].as_u64().unwrap_or(0);
    let mut out = String::new();
    for section in result["sections"].as_array().into_iter().flatten() {
        let dims: Vec<&str> =
            section["dimensions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let metrics: Vec<(&str, &str, &str)> = section["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                (
                    m["name"].as_str().unwrap_or(""),
                    m["kind"].as_str().unwrap_or(""),
                    m["description"].as_str().unwrap_or(""),
                )
            })
            .collect();
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        if dims.is_empty() {
            table.set_header(vec!["metric", "value", "what it is"]);
            for row in section["rows"].as_array().into_iter().flatten() {
                for (name, kind, description) in &metrics {
                    table.add_row(vec![
                        Cell::new(name),
                        Cell::new(cell_text(&row[*name], kind, k)).set_alignment(CellAlignment::Right),
                        Cell::new(description),
                    ]);
                }
            }
        } else {
            let mut header: Vec<&str> = dims.clone();
            header.extend(metrics.iter().map(|m| m.0));
            table.set_header(header);
            for row in section["rows"].as_array().into_iter().flatten() {
                let mut cells: Vec<Cell> = dims.iter().map(|d| Cell::new(row[*d].as_str().unwrap_or(""))).collect();
                cells.extend(metrics.iter().map(|(name, kind, _)| {
                    Cell::new(cell_text(&row[*name], kind, k)).set_alignment(CellAlignment::Right)
                }));
                table.add_row(cells);
            }
        }
        out.push_str(&format!(
            "{} — {}\n{table}\n\n",
            section["name"].as_str().unwrap_or(""),
            section["description"].as_str().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_counts_ratios_and_suppression() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        let result = serde_json::json!({
            "k": 100,
            "sections": [{
                "name": "by_segment", "description": "d", "dimensions": ["segment"],
                "metrics": [{"name": "overlap", "kind": "count", "description": ""}, {"name": "share", "kind": "ratio", "description": ""}],
                "rows": [
                    {"segment": "sports", "overlap": {"value": 12345}, "share": {"value": 0.5}},
                    {"segment": "tiny", "overlap": {"suppressed": true}, "share": {"suppressed": true}}
                ]
            }]
        });
        let text = render(&result);
        assert!(text.contains("12,345"), "{text}");
        assert!(text.contains("50.00 %"), "{text}");
        assert!(text.contains("suppressed (k=100)"), "{text}");
        assert!(!text.contains(" 0 "), "{text}");
    }
}
