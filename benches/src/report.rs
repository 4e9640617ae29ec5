//! Per-run records (JSON objects with a `label`) reduced to medians per label, printed
//! as a text table and as one JSON summary line.

use serde_json::{Map, Value, json};

use crate::stats::{fmt, median, r1};

/// Numeric fields reduced to medians, with their table headings.
pub const KEYS: [(&str, &str); 7] = [
    ("msgs_per_s", "msg/s"),
    ("lat_p50_us", "p50 us"),
    ("lat_p99_us", "p99 us"),
    ("lost", "lost"),
    ("relay_cpu_util", "srv cpu"),
    ("msgs_per_relay_cpu_s", "msg/cpu-s"),
    ("foreign_cpu_util", "foreign"),
];

/// Medians per label, in first-seen label order. Each output object has the label,
/// `runs`, the median of every numeric field, and `per_run_msgs_per_s`.
pub fn medians(records: &[Value]) -> Vec<Value> {
    let mut labels: Vec<String> = Vec::new();
    for r in records {
        if let Some(l) = r.get("label").and_then(Value::as_str)
            && !labels.iter().any(|x| x == l)
        {
            labels.push(l.to_string());
        }
    }
    let mut out = Vec::new();
    for label in labels {
        let group: Vec<&Value> = records
            .iter()
            .filter(|r| r.get("label").and_then(Value::as_str) == Some(label.as_str()))
            .collect();
        let mut fields: Vec<String> = Vec::new();
        for r in &group {
            if let Some(obj) = r.as_object() {
                for (k, v) in obj {
                    if v.is_number() && !fields.contains(k) {
                        fields.push(k.clone());
                    }
                }
            }
        }
        let mut m = Map::new();
        m.insert("label".into(), json!(label));
        m.insert("runs".into(), json!(group.len()));
        for k in fields {
            let vals: Vec<Option<f64>> = group
                .iter()
                .map(|r| r.get(&k).and_then(Value::as_f64))
                .collect();
            m.insert(k, r1(median(&vals)));
        }
        let per_run: Vec<Value> = group
            .iter()
            .map(|r| r1(r.get("msgs_per_s").and_then(Value::as_f64)))
            .collect();
        m.insert("per_run_msgs_per_s".into(), Value::Array(per_run));
        out.push(Value::Object(m));
    }
    out
}

/// Prints the median table.
pub fn print_table(title: &str, medians: &[Value]) {
    println!("== {title} (medians) ==");
    let w = medians
        .iter()
        .filter_map(|m| m.get("label").and_then(Value::as_str).map(str::len))
        .max()
        .unwrap_or(10)
        .max(10);
    let mut head = format!("{:<w$}  runs", "label");
    for (_, h) in KEYS {
        head.push_str(&format!("  {h:>10}"));
    }
    println!("{head}  per-run msg/s");
    for m in medians {
        let label = m.get("label").and_then(Value::as_str).unwrap_or("?");
        let runs = m.get("runs").and_then(Value::as_u64).unwrap_or(0);
        let mut line = format!("{label:<w$}  {runs:>4}");
        for (k, _) in KEYS {
            let v = if k == "msgs_per_s" && label.starts_with("lat") {
                None // closed loop, one in flight: a pace, not a capacity
            } else {
                m.get(k).and_then(Value::as_f64)
            };
            line.push_str(&format!("  {:>10}", fmt(v, 1)));
        }
        let per = m
            .get("per_run_msgs_per_s")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|v| fmt(v.as_f64(), 0))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        println!("{line}  {per}");
    }
}

/// Reads JSON-lines records (lines not starting with `{` are skipped).
pub fn read_jsonl(path: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
