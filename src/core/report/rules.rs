//! How figures combine: each metric by its declared rule (sum, average,
//! minimum, maximum or last), in total and per category, over any set of
//! entries (the whole scope, one region, one unit). The aggregate's
//! totals and every roll-up row come from here, and so does the
//! verifier's recomputation, from the document alone.

use std::collections::BTreeMap;

use super::coverage::{
    Aggregate, CategoryTotal, Figure, Figures, MetricTotal, RegionCoverage, FORMAT_V1,
};
use super::Rule;

/// Count, sum, min and max of a run of figures. Figures are bounded by
/// [`super::VALUE_MAX`], so a sum over any roster fits in i64; saturating
/// only guards against a bad document.
#[derive(Default)]
struct Acc {
    count: u64,
    sum: i64,
    min: Option<i64>,
    max: Option<i64>,
}

impl Acc {
    fn add(&mut self, v: i64) {
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }

    /// What `rule` makes of it; `last` is found by the caller.
    fn value(&self, rule: Rule) -> Option<Figure> {
        match rule {
            _ if self.count == 0 => None,
            Rule::Sum => Some(Figure::Whole(self.sum)),
            Rule::Avg => Figure::mean(self.sum, self.count),
            Rule::Min => self.min.map(Figure::Whole),
            Rule::Max => self.max.map(Figure::Whole),
            Rule::Last => None,
        }
    }
}

/// Each metric of `agg` over `entries` (its own, or a region's or unit's
/// subset of them), by the metric's rule, with former names counted as
/// the metric they became.
pub fn totals(agg: &Aggregate, entries: &[RegionCoverage]) -> Vec<MetricTotal> {
    let v1 = agg.format == FORMAT_V1;
    // Only a report counts: figures beside "missing" are not.
    let counted: Vec<(&RegionCoverage, &Figures)> = (entries.iter())
        .filter(|e| e.report.is_some())
        .filter_map(|e| Some((e, e.figures.as_ref()?)))
        .collect();
    let named = |f: &Figures, metric: &str| -> Option<String> {
        f.values
            .keys()
            .find(|k| *k == metric || agg.renamed.get(*k).is_some_and(|n| n == metric))
            .cloned()
    };
    (agg.metrics.iter())
        .map(|metric| {
            let rule = agg.rules.get(metric).copied().unwrap_or_default();
            let mut acc = Acc::default();
            let mut last: Option<(u64, String, i64)> = None;
            let mut cats: BTreeMap<String, Acc> = BTreeMap::new();
            for (e, f) in &counted {
                let Some(name) = named(f, metric) else {
                    continue;
                };
                let v = f.values[&name];
                acc.add(v);
                // Last by signed time; of two at the same time, the later
                // name, so the choice never depends on the order listed.
                let candidate = (f.submitted_ms, e.label(), v);
                if last
                    .as_ref()
                    .is_none_or(|l| (l.0, &l.1) < (candidate.0, &candidate.1))
                {
                    last = Some(candidate);
                }
                for (combo, &c) in f.categories.get(&name).into_iter().flatten() {
                    cats.entry(combo.clone()).or_default().add(c);
                }
            }
            let (value, last_from) = match rule {
                _ if v1 => (None, None),
                Rule::Last => match last {
                    Some((_, from, v)) => (Some(Figure::Whole(v)), Some(from)),
                    None => (None, None),
                },
                _ => (acc.value(rule), None),
            };
            MetricTotal {
                metric: metric.clone(),
                rule,
                count: acc.count,
                sum: acc.sum,
                min: acc.min,
                max: acc.max,
                value,
                last_from,
                categories: (cats.into_iter())
                    .map(|(category, a)| CategoryTotal {
                        value: a.value(rule),
                        category,
                        count: a.count,
                        sum: a.sum,
                        min: a.min,
                        max: a.max,
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::Figure;

    #[test]
    fn a_mean_keeps_three_decimals_and_reads_back_exactly() {
        let cases = [
            (7, 2, "3.5"),
            (10, 3, "3.333"),
            (-7, 2, "-3.5"),
            (2, 3, "0.667"),
            (4, 2, "2.0"),
        ];
        for (sum, count, shown) in cases {
            let f = Figure::mean(sum, count).unwrap();
            assert_eq!(f.to_string(), shown);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(serde_json::from_str::<Figure>(&json).unwrap(), f, "{json}");
        }
        assert_eq!(serde_json::to_string(&Figure::Whole(42)).unwrap(), "42");
        assert_eq!(
            serde_json::from_str::<Figure>("42").unwrap(),
            Figure::Whole(42)
        );
        assert!(Figure::mean(1, 0).is_none());
    }
}
