//! An aggregate as tidy rows, for analytics engines: one row per figure
//! counted (a metric's total, and each category of it), each carrying the
//! report delta it came from, so any total an analyst computes traces back
//! to signed data. Former metric names appear under the name they count
//! as; metrics outside the schema, and reports not counted, have no rows.

use serde::Serialize;

use super::coverage::{Aggregate, RegionCoverage};

/// One figure of one counted report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub period: String,
    pub region: String,
    pub unit: Option<String>,
    pub metric: String,
    /// `None`: the metric's total; else the combination.
    pub category: Option<String>,
    pub value: i64,
    pub revision: u32,
    pub submitted_ms: u64,
    pub schema_version: u32,
    /// Approved by the level above, as the aggregating node held it.
    pub approved: bool,
    /// The report delta: author (hex), seq and hash (hex).
    pub author: String,
    pub seq: u64,
    pub hash: String,
}

/// The column names, in order, as every format writes them.
pub const COLUMNS: [&str; 13] = [
    "period",
    "region",
    "unit",
    "metric",
    "category",
    "value",
    "revision",
    "submitted_ms",
    "schema_version",
    "approved",
    "author",
    "seq",
    "hash",
];

/// The rows of `agg`, entry by entry in its order, metrics in the
/// schema's order, each total before its categories.
pub fn rows(agg: &Aggregate) -> Vec<Row> {
    let mut out = Vec::new();
    for e in &agg.regions {
        entry_rows(agg, e, &mut out);
    }
    out
}

fn entry_rows(agg: &Aggregate, e: &RegionCoverage, out: &mut Vec<Row>) {
    let (Some(f), Some(report)) = (&e.figures, &e.report) else {
        return;
    };
    for metric in &agg.metrics {
        let named =
            (f.values.iter()).find(|(k, _)| *k == metric || agg.renamed.get(*k) == Some(metric));
        let Some((as_signed, &total)) = named else {
            continue;
        };
        let row = |category: Option<String>, value: i64| Row {
            period: agg.period.clone(),
            region: e.region.clone(),
            unit: e.unit.clone(),
            metric: metric.clone(),
            category,
            value,
            revision: f.revision,
            submitted_ms: f.submitted_ms,
            schema_version: f.schema_version,
            approved: e.is_approved(),
            author: report.author.to_string(),
            seq: report.seq,
            hash: report.hash.to_string(),
        };
        out.push(row(None, total));
        for (combo, &v) in f.categories.get(as_signed).into_iter().flatten() {
            out.push(row(Some(combo.clone()), v));
        }
    }
}
