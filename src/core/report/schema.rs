//! The federation's report schema: which metrics reports carry, and
//! whether each may be negative. HQ publishes it as a record; until then
//! the default set applies.

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::{ReportError, SubmitError, METRICS_MAX, METRIC_NAME_MAX, NOTES_MAX, SCHEMA_KEY};
use crate::core::delta::{Op, SignedDelta};
use crate::core::ids::NodeId;
use crate::core::replica::Replica;
use crate::core::roster::Role;
use crate::core::store::Store;

/// One metric a report may carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Counts are never negative; a balance or a change may be.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_negative: bool,
    /// How reports' figures combine, at every level of the tree.
    #[serde(default, skip_serializing_if = "Rule::is_sum")]
    pub aggregate: Rule,
    /// The breakdown a report may give (e.g. age group and sex): a figure
    /// per combination of one option of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<CategoryDef>,
    /// Names this metric had in earlier versions: reports under them
    /// count as this metric, and the aggregate says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formerly: Vec<String>,
}

/// How a metric's figures combine across reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    #[default]
    Sum,
    /// The mean over the reports that carry it.
    Avg,
    Min,
    Max,
    /// The figure of the report submitted last (by its signed time).
    Last,
}

impl Rule {
    fn is_sum(&self) -> bool {
        *self == Rule::Sum
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Sum => "sum",
            Rule::Avg => "avg",
            Rule::Min => "min",
            Rule::Max => "max",
            Rule::Last => "last",
        }
    }
}

/// One category of a breakdown, and its options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryDef {
    pub name: String,
    pub options: Vec<String>,
}

/// Categories per metric, options per category, and combinations per
/// metric: a breakdown a person fills in, not a cube.
pub const CATEGORIES_MAX: usize = 3;
pub const OPTIONS_MAX: usize = 16;
pub const COMBOS_MAX: usize = 64;
/// Former names one metric may keep.
pub const FORMERLY_MAX: usize = 8;

impl MetricDef {
    /// A plain metric: a count, summed.
    pub fn count(name: &str, description: &str) -> MetricDef {
        MetricDef {
            name: name.into(),
            description: description.into(),
            allow_negative: false,
            aggregate: Rule::Sum,
            categories: Vec::new(),
            formerly: Vec::new(),
        }
    }

    /// Every combination, in the schema's order: `age=under_18,sex=female`.
    pub fn combos(&self) -> Vec<String> {
        let mut out = vec![String::new()];
        for c in &self.categories {
            out = (out.iter())
                .flat_map(|pre| {
                    c.options.iter().map(move |o| match pre.is_empty() {
                        true => format!("{}={o}", c.name),
                        false => format!("{pre},{}={o}", c.name),
                    })
                })
                .collect();
        }
        if self.categories.is_empty() {
            return Vec::new();
        }
        out
    }

    /// Whether `combo` names one option of each category, in order.
    pub fn is_combo(&self, combo: &str) -> bool {
        let parts: Vec<&str> = combo.split(',').collect();
        parts.len() == self.categories.len()
            && (parts.iter().zip(&self.categories)).all(|(p, c)| {
                p.split_once('=')
                    .is_some_and(|(n, o)| n == c.name && c.options.iter().any(|x| x == o))
            })
    }

    fn check(&self) -> Result<(), String> {
        check_metric_name(&self.name)?;
        if self.description.len() > NOTES_MAX {
            return Err(format!("the description of {} is too long", self.name));
        }
        if self.categories.len() > CATEGORIES_MAX {
            return Err(format!(
                "{} has more than {CATEGORIES_MAX} categories",
                self.name
            ));
        }
        if !self.categories.is_empty() && matches!(self.aggregate, Rule::Avg | Rule::Last) {
            return Err(format!(
                "{} aggregates by {}, whose total is not a sum, minimum or maximum of its categories: give each category its own metric",
                self.name,
                self.aggregate.as_str()
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut combos = 1usize;
        for c in &self.categories {
            check_metric_name(&c.name).map_err(|e| format!("{}'s category: {e}", self.name))?;
            if !names.insert(c.name.as_str()) {
                return Err(format!("{} lists category {} twice", self.name, c.name));
            }
            if c.options.is_empty() || c.options.len() > OPTIONS_MAX {
                return Err(format!(
                    "category {} of {} needs 1 to {OPTIONS_MAX} options",
                    c.name, self.name
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for o in &c.options {
                check_metric_name(o).map_err(|e| format!("an option of {}: {e}", c.name))?;
                if !seen.insert(o) {
                    return Err(format!("category {} lists option {o} twice", c.name));
                }
            }
            combos = combos.saturating_mul(c.options.len());
        }
        if combos > COMBOS_MAX {
            return Err(format!(
                "{}'s categories make {combos} combinations, more than {COMBOS_MAX}",
                self.name
            ));
        }
        if self.formerly.len() > FORMERLY_MAX {
            return Err(format!(
                "{} keeps more than {FORMERLY_MAX} former names",
                self.name
            ));
        }
        for f in &self.formerly {
            check_metric_name(f).map_err(|e| format!("a former name of {}: {e}", self.name))?;
        }
        Ok(())
    }
}

/// The metrics reports may carry, in display order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// Each published schema's is greater than the one before; the
    /// default set's is 0, and a schema published without one is 1.
    #[serde(default = "first_version")]
    pub version: u32,
    pub metrics: Vec<MetricDef>,
    /// When reports are due; a schema without it sets no deadline.
    #[serde(default, skip_serializing_if = "Due::is_unset")]
    pub due: Due,
}

/// Deadlines, in whole days after the period ends, per kind of period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Due {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarter_days: Option<u32>,
}

/// The longest deadline a schema may set.
pub const DUE_DAYS_MAX: u32 = 366;

fn first_version() -> u32 {
    1
}

impl Due {
    fn is_unset(&self) -> bool {
        *self == Due::default()
    }
}

impl Schema {
    /// What applies until HQ publishes a schema: four counts, none
    /// negative, due 15 days after a month and 30 after a quarter.
    pub fn default_set() -> Schema {
        let m = MetricDef::count;
        Schema {
            version: 0,
            metrics: vec![
                m("volunteers", "people who volunteered in the period"),
                m("events", "events held"),
                m("participants", "people who took part in events"),
                m("hours", "volunteer hours, rounded to whole hours"),
            ],
            due: Due {
                month_days: Some(15),
                quarter_days: Some(30),
            },
        }
    }

    /// Parses and checks a schema (JSON, as stored or submitted).
    pub fn decode(bytes: &[u8]) -> Result<Schema, ReportError> {
        let s: Schema =
            serde_json::from_slice(bytes).map_err(|e| ReportError::BadSchema(e.to_string()))?;
        s.check()?;
        Ok(s)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a schema serialises")
    }

    pub fn check(&self) -> Result<(), ReportError> {
        let bad = |why: String| Err(ReportError::BadSchema(why));
        if self.metrics.is_empty() || self.metrics.len() > METRICS_MAX {
            return bad(format!("it needs 1 to {METRICS_MAX} metrics"));
        }
        let days = [self.due.month_days, self.due.quarter_days];
        if days.into_iter().flatten().any(|d| d > DUE_DAYS_MAX) {
            return bad(format!(
                "a report may be due at most {DUE_DAYS_MAX} days after its period"
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.metrics {
            m.check().map_err(ReportError::BadSchema)?;
            if !seen.insert(m.name.as_str()) {
                return bad(format!("metric {} is listed twice", m.name));
            }
        }
        // A former name belongs to one metric, and to none now.
        for m in &self.metrics {
            for f in &m.formerly {
                if !seen.insert(f.as_str()) {
                    return bad(format!(
                        "{f}, a former name of {}, is a metric's name or another's former name",
                        m.name
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn metric(&self, name: &str) -> Option<&MetricDef> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// The metric `name` is, under its name now or a former one.
    pub fn resolve(&self, name: &str) -> Option<&MetricDef> {
        (self.metric(name))
            .or_else(|| (self.metrics.iter()).find(|m| m.formerly.iter().any(|f| f == name)))
    }

    /// Former names, each with the metric it is now.
    pub fn renames(&self) -> std::collections::BTreeMap<String, String> {
        (self.metrics.iter())
            .flat_map(|m| m.formerly.iter().map(|f| (f.clone(), m.name.clone())))
            .collect()
    }

    pub(super) fn names(&self) -> String {
        let names: Vec<&str> = self.metrics.iter().map(|m| m.name.as_str()).collect();
        names.join(", ")
    }
}

pub(super) fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= METRIC_NAME_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        return Ok(());
    }
    Err(format!(
        "metric name {:?} must be 1 to {METRIC_NAME_MAX} of a-z, 0-9 and _, starting with a letter",
        name.chars().take(60).collect::<String>()
    ))
}

/// Publishes `schema` as the federation's, from an HQ node.
pub fn publish_schema<S: Store>(
    replica: &mut Replica<S>,
    signer: &SigningKey,
    schema: &Schema,
    node_name: &str,
    now_ms: u64,
) -> Result<SignedDelta, SubmitError<S::Error>> {
    schema.check()?;
    let me = NodeId(signer.verifying_key().to_bytes());
    let is_hq = replica
        .roster()
        .member(&me)
        .is_some_and(|m| m.roles.contains(&Role::Hq));
    if !is_hq {
        return Err(ReportError::NotHq(node_name.to_owned()).into());
    }
    let in_force = published(replica)
        .map_err(crate::core::replica::WriteError::Store)?
        .and_then(Result::ok);
    if let Some(old) = in_force.filter(|old| schema.version <= old.version) {
        return Err(ReportError::BadSchema(format!(
            "version {} is not after the schema in force (version {}): give it version {}",
            schema.version,
            old.version,
            old.version + 1
        ))
        .into());
    }
    Ok(replica.write(signer, SCHEMA_KEY, Op::Put, schema.encode(), now_ms)?)
}

/// The federation's report schema as this replica holds it: HQ's, or the
/// default set until HQ publishes one.
pub fn schema<S: Store>(replica: &Replica<S>) -> Result<Result<Schema, ReportError>, S::Error> {
    Ok(published(replica)?.unwrap_or_else(|| Ok(Schema::default_set())))
}

/// The schema HQ published, as this replica holds it; `None` if none.
pub fn published<S: Store>(
    replica: &Replica<S>,
) -> Result<Option<Result<Schema, ReportError>>, S::Error> {
    Ok(replica.get(SCHEMA_KEY)?.map(|d| Schema::decode(d.value())))
}
