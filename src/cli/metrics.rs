//! `logplex metrics -a APP [--since 1h] [--json]` and `metrics:enable|metrics:disable -a APP`:
//! an app's metrics from the logs as a table, one row per figure, with a sparkline of its
//! minutes where the API gives a series per minute (requests, 5xx, service p95).

use super::client::{CliError, Client};
use super::commands::{app_path, emit};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The widest sparkline: longer ranges are folded, each character the largest of its
/// minutes.
const SPARK_WIDTH: usize = 60;
const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// `values` (oldest first; `None` where a minute has no value) as at most `width`
/// characters of ▁…█ scaled to the largest value, a space where there is nothing.
pub fn sparkline(values: &[Option<f64>], width: usize) -> String {
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let per = values.len().div_ceil(width);
    let folded: Vec<Option<f64>> = values
        .chunks(per)
        .map(|c| c.iter().flatten().copied().reduce(f64::max))
        .collect();
    let max = folded.iter().flatten().copied().fold(0.0, f64::max);
    folded
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if max <= 0.0 => BLOCKS[0],
            Some(v) => {
                let i = ((v / max) * (BLOCKS.len() - 1) as f64).round() as usize;
                BLOCKS[i.min(BLOCKS.len() - 1)]
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct Minute {
    requests: u64,
    #[serde(rename = "5xx")]
    s5xx: u64,
    service_p95_ms: Option<f64>,
}

#[derive(Deserialize, Default)]
struct Quantiles {
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
}

#[derive(Deserialize)]
struct ByStatus {
    #[serde(rename = "5xx")]
    s5xx: u64,
}

#[derive(Deserialize)]
struct Router {
    requests: u64,
    by_status: ByStatus,
    h_codes: BTreeMap<String, u64>,
    service_ms: Quantiles,
    connect_ms: Quantiles,
}

#[derive(Deserialize)]
struct Sample {
    last: f64,
    min: f64,
    max: f64,
}

#[derive(Deserialize)]
struct Measure {
    count: u64,
    #[serde(flatten)]
    q: Quantiles,
}

#[derive(Deserialize)]
struct L2met {
    count: BTreeMap<String, f64>,
    sample: BTreeMap<String, Sample>,
    measure: BTreeMap<String, Measure>,
}

#[derive(Deserialize)]
struct Summary {
    app: String,
    since: String,
    router: Router,
    l2met: L2met,
    minutes: Vec<Minute>,
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn quantiles(q: &Quantiles, unit: &str) -> String {
    let one = |v: Option<f64>| v.map_or("-".to_string(), num);
    format!("{} / {} / {}{unit}", one(q.p50), one(q.p95), one(q.p99))
}

/// The table of a summary (see the module doc).
fn table(s: &Summary) -> String {
    let minutes = s.minutes.len().max(1) as f64;
    let spark = |f: &dyn Fn(&Minute) -> Option<f64>| {
        sparkline(&s.minutes.iter().map(f).collect::<Vec<_>>(), SPARK_WIDTH)
    };
    let r = &s.router;
    let pct = if r.requests == 0 {
        "-".to_string()
    } else {
        format!(
            "{:.2}%",
            100.0 * r.by_status.s5xx as f64 / r.requests as f64
        )
    };
    let mut rows: Vec<[String; 3]> = vec![
        [
            "requests/min".into(),
            format!("{:.1}", r.requests as f64 / minutes),
            spark(&|m| Some(m.requests as f64)),
        ],
        [
            "5xx %".into(),
            pct,
            spark(&|m| (m.requests > 0).then(|| m.s5xx as f64 / m.requests as f64)),
        ],
        [
            "service p50/p95/p99".into(),
            quantiles(&r.service_ms, " ms"),
            spark(&|m| m.service_p95_ms),
        ],
        [
            "connect p50/p95/p99".into(),
            quantiles(&r.connect_ms, " ms"),
            String::new(),
        ],
    ];
    let mut codes: Vec<_> = r.h_codes.iter().collect();
    codes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (code, n) in codes.into_iter().take(5) {
        rows.push([code.clone(), n.to_string(), String::new()]);
    }
    for (name, n) in &s.l2met.count {
        rows.push([format!("count#{name}"), num(*n), String::new()]);
    }
    for (name, v) in &s.l2met.sample {
        rows.push([
            format!("sample#{name}"),
            format!("{} (min {}, max {})", num(v.last), num(v.min), num(v.max)),
            String::new(),
        ]);
    }
    for (name, m) in &s.l2met.measure {
        rows.push([
            format!("measure#{name} p50/p95/p99"),
            format!("{} ({} values)", quantiles(&m.q, ""), m.count),
            String::new(),
        ]);
    }
    let w0 = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].chars().count()).max().unwrap_or(0);
    let mut out = format!(
        "{} since {} ({} minutes)\n",
        s.app,
        s.since,
        s.minutes.len()
    );
    for [name, value, spark] in rows {
        let line = format!(
            "{name}{}  {value}{}  {spark}",
            " ".repeat(w0 - name.chars().count()),
            " ".repeat(w1 - value.chars().count())
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `logplex metrics -a APP [--since D] [--json]`.
pub async fn show(c: &Client, app: &str, since: &str, json: bool) -> Result<(), CliError> {
    let path = format!(
        "{}/metrics?since={}",
        app_path(app),
        super::client::segment(since)
    );
    let v: Value = c.get(&path).await.map_err(|e| e.in_app(app))?;
    if json {
        return emit(&format!("{v}\n"));
    }
    let s: Summary = serde_json::from_value(v).map_err(|e| {
        CliError::BadResponse(format!("the server's metrics are not as expected: {e}"))
    })?;
    emit(&table(&s))
}

/// `logplex metrics:enable|metrics:disable -a APP`.
pub async fn set(c: &Client, app: &str, on: bool) -> Result<(), CliError> {
    let _: Value = c
        .patch(&app_path(app), &serde_json::json!({ "metrics": on }))
        .await
        .map_err(|e| e.in_app(app))?;
    emit(&format!(
        "Metrics {} for {app}\n",
        if on { "on" } else { "off" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_largest_and_fold_long_ranges() {
        let v: Vec<Option<f64>> = [0.0, 1.0, 2.0, 4.0, 8.0].map(Some).to_vec();
        assert_eq!(sparkline(&v, 60), "▁▂▃▅█");
        assert_eq!(sparkline(&[Some(3.0), None, Some(0.0)], 60), "█ ▁");
        assert_eq!(sparkline(&[Some(0.0); 3], 60), "▁▁▁");
        let long: Vec<Option<f64>> = (0..1440).map(|i| Some(i as f64)).collect();
        let s = sparkline(&long, 60);
        assert_eq!(s.chars().count(), 60);
        assert!(s.ends_with('█') && s.starts_with('▁'), "{s}");
        assert_eq!(sparkline(&[], 60), "");
    }
}
