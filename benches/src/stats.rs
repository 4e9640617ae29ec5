//! Percentiles and medians.

/// The `p`-th percentile of sorted nanosecond samples, in microseconds, picked the way
/// `../shared/peers/peerbench.go` picks it (index `round(p/100 * (n-1))`).
pub fn pct_us(sorted_ns: &[u64], p: f64) -> Option<f64> {
    if sorted_ns.is_empty() {
        return None;
    }
    let i = (p / 100.0 * (sorted_ns.len() - 1) as f64 + 0.5) as usize;
    sorted_ns
        .get(i.min(sorted_ns.len() - 1))
        .map(|v| *v as f64 / 1e3)
}

/// The median of the values present (the mean of the middle two for an even count).
pub fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut v: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Rounds for display in JSON (one decimal).
pub fn r1(x: Option<f64>) -> serde_json::Value {
    match x {
        Some(x) if x.is_finite() => serde_json::json!((x * 10.0).round() / 10.0),
        _ => serde_json::Value::Null,
    }
}

/// Formats an optional number for the text table.
pub fn fmt(x: Option<f64>, decimals: usize) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "-".into(),
    }
}
