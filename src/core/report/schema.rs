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
}

/// The metrics reports may carry, in display order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
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

impl Due {
    fn is_unset(&self) -> bool {
        *self == Due::default()
    }
}

impl Schema {
    /// What applies until HQ publishes a schema: four counts, none
    /// negative, due 15 days after a month and 30 after a quarter.
    pub fn default_set() -> Schema {
        let m = |name: &str, description: &str| MetricDef {
            name: name.into(),
            description: description.into(),
            allow_negative: false,
        };
        Schema {
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
            check_metric_name(&m.name).map_err(ReportError::BadSchema)?;
            if m.description.len() > NOTES_MAX {
                return bad(format!("the description of {} is too long", m.name));
            }
            if !seen.insert(m.name.as_str()) {
                return bad(format!("metric {} is listed twice", m.name));
            }
        }
        Ok(())
    }

    pub fn metric(&self, name: &str) -> Option<&MetricDef> {
        self.metrics.iter().find(|m| m.name == name)
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
