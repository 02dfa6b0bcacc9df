//! The actor's report commands: submitting (a write like any other, so it
//! is pushed to peers and watchers), the history, the schema, aggregating
//! (signed with the node's key) and verifying a signed aggregate against
//! this node's log. The rules are in `core::report`; this wires them to
//! the replica, the peers' last contact and the node's key.

use crate::core::report::{
    self, aggregate, approval, document, receipt, Part, Period, Report, Schema, Submission,
};
use crate::core::SignedDelta;
use crate::node::ApiError;

use super::{Actor, Reply};

/// Report bytes in one history reply: well inside the 4 MiB message.
const HISTORY_BYTES_MAX: usize = 2 * 1024 * 1024;
/// Periods and revisions per period a receipts call lists.
const RECEIPT_PERIODS_MAX: usize = 120;
const RECEIPT_REVISIONS_MAX: usize = 50;

pub(crate) enum ReportCmd {
    Submit {
        sub: Submission,
        /// The operator whose call this is (roster name).
        operator: String,
        reply: Reply<(SignedDelta, Report)>,
    },
    History {
        part: Part,
        period: Period,
        limit: usize,
        reply: Reply<(Vec<SignedDelta>, Option<String>)>,
    },
    /// The schema in force, and whether HQ published it.
    Schema { reply: Reply<(Schema, bool)> },
    PublishSchema {
        schema: Schema,
        reply: Reply<SignedDelta>,
    },
    /// The signed aggregate document.
    Aggregate {
        period: Period,
        /// `None`: the node's configured age.
        stale_after_ms: Option<u64>,
        scope: Scope,
        approved_only: bool,
        /// At HQ: also write it where receipts read it.
        publish: bool,
        reply: Reply<String>,
    },
    /// What the `/reports` page shows for `period` (default: the newest
    /// period any report is held for).
    Dashboard {
        period: Option<Period>,
        reply: Reply<Dashboard>,
    },
    /// Receipts for this node's reports (one period's, or all).
    Receipts {
        period: Option<Period>,
        reply: Reply<Vec<receipt::Receipt>>,
    },
    /// Approve a part's current report, or withdraw the approval.
    Approve {
        part: Part,
        period: Period,
        approved: bool,
        expect: Option<u32>,
        operator: String,
        reply: Reply<(SignedDelta, approval::Approval)>,
    },
    /// A document whose signature the caller verified off this thread.
    Verify {
        /// Boxed: an aggregate is large beside the other commands.
        opened: Box<document::Opened>,
        /// `None`: this node's own part.
        part: Option<Part>,
        reply: Reply<document::Verdict>,
    },
}

/// Periods the `/reports` page charts the reporting rate over.
pub(crate) const DASHBOARD_PERIODS: usize = 6;

/// What the `/reports` page shows: this node's aggregate of a period (its
/// own scope, unsigned: the page shows, it does not prove), the rates of
/// the periods before it, HQ's newest published (signed) aggregate of the
/// period, and this node's receipts.
pub(crate) struct Dashboard {
    pub node: String,
    pub current: aggregate::Aggregate,
    /// Oldest first, ending with the period shown.
    pub history: Vec<(Period, crate::core::report::timeliness::Reporting)>,
    pub published: Option<aggregate::Aggregate>,
    pub receipts: Vec<receipt::Receipt>,
}

/// An aggregate asked for, once its scope is resolved.
struct Ask {
    period: Period,
    /// `None`: the node's configured age.
    stale_after_ms: Option<u64>,
    scope: Option<Part>,
    approved_only: bool,
}

/// What an aggregate covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// HQ's: the whole federation; a region's or unit's node: its subtree.
    Mine,
    All,
    /// A part and everything below it.
    Part(Part),
}

impl From<report::SubmitError<crate::store::StoreError>> for ApiError {
    fn from(e: report::SubmitError<crate::store::StoreError>) -> Self {
        use report::ReportError as R;
        match e {
            report::SubmitError::Report(
                e @ (R::NotARegion(_) | R::NotHq(_) | R::NotApprover(_) | R::Locked { .. }),
            ) => ApiError::NotAllowed(e.to_string()),
            report::SubmitError::Report(e) => ApiError::BadRequest(e.to_string()),
            report::SubmitError::Write(w) => w.into(),
        }
    }
}

fn unusable(e: report::ReportError) -> ApiError {
    ApiError::BadRequest(format!("the federation's report schema is unusable: {e}"))
}

impl Actor {
    pub(super) fn handle_report(&mut self, cmd: ReportCmd) {
        match cmd {
            ReportCmd::Submit {
                sub,
                operator,
                reply,
            } => {
                let result = self.submit(&sub, &operator);
                let _ = reply.send(result);
            }
            ReportCmd::History {
                part,
                period,
                limit,
                reply,
            } => {
                let key = part.key(period);
                let h = report::history(self.replica.store(), &key, limit, HISTORY_BYTES_MAX);
                let _ = reply.send(h.map_err(ApiError::from));
            }
            ReportCmd::Schema { reply } => {
                let held = match report::published(&self.replica) {
                    Ok(Some(s)) => s.map(|s| (s, true)).map_err(unusable),
                    Ok(None) => Ok((Schema::default_set(), false)),
                    Err(e) => Err(e.into()),
                };
                let _ = reply.send(held);
            }
            ReportCmd::PublishSchema { schema, reply } => {
                if let Err(e) = self.write_guard() {
                    let _ = reply.send(Err(e));
                    return;
                }
                let result = report::publish_schema(
                    &mut self.replica,
                    &self.wiring.signer,
                    &schema,
                    &self.wiring.name,
                    self.wiring.clock.now_ms(),
                )
                .map_err(ApiError::from);
                self.after_write(result.as_ref());
                let _ = reply.send(result);
            }
            ReportCmd::Aggregate {
                period,
                stale_after_ms,
                scope,
                approved_only,
                publish,
                reply,
            } => {
                let scope = match scope {
                    Scope::Mine => self.my_part(),
                    Scope::All => None,
                    Scope::Part(p) => Some(p),
                };
                let ask = Ask {
                    period,
                    stale_after_ms,
                    scope,
                    approved_only,
                };
                let doc = self.aggregate(ask);
                let _ = reply.send(match doc {
                    Ok(doc) if publish => self.publish(period, doc),
                    other => other,
                });
            }
            ReportCmd::Dashboard { period, reply } => {
                let _ = reply.send(self.dashboard(period));
            }
            ReportCmd::Receipts { period, reply } => {
                let _ = reply.send(self.receipts(period));
            }
            ReportCmd::Approve {
                part,
                period,
                approved,
                expect,
                operator,
                reply,
            } => {
                let ask = approval::Ask {
                    part: &part,
                    period,
                    approved,
                    expect,
                    operator: &operator,
                };
                let _ = reply.send(self.approve(&ask));
            }
            ReportCmd::Verify {
                opened,
                part,
                reply,
            } => {
                let part = part.or_else(|| self.my_part());
                let verdict = document::check_opened(&self.replica, &opened, part.as_ref());
                let _ = reply.send(verdict.map_err(ApiError::from));
            }
        }
    }

    fn submit(
        &mut self,
        sub: &Submission,
        operator: &str,
    ) -> Result<(SignedDelta, Report), ApiError> {
        self.write_guard()?;
        let schema = self.schema()?;
        let roster = self.replica.roster().clone();
        let me = crate::core::NodeId(self.wiring.signer.verifying_key().to_bytes());
        let who = match roster.member(&me) {
            Some(m) => report::Submitter::of(&roster, m, operator),
            None => report::Submitter {
                node_name: &self.wiring.name,
                part: None,
                region: None,
                operator,
            },
        };
        let result = report::submit(
            &mut self.replica,
            &self.wiring.signer,
            &schema,
            &who,
            sub,
            self.wiring.clock.now_ms(),
        )
        .map_err(ApiError::from);
        self.after_write(result.as_ref().map(|(d, _)| d));
        result
    }

    fn schema(&self) -> Result<Schema, ApiError> {
        report::schema(&self.replica)?.map_err(unusable)
    }

    /// The part this node reports for: its region or unit; `None` at HQ.
    fn my_part(&self) -> Option<Part> {
        let me = self.wiring.signer.verifying_key().to_bytes();
        Part::of(self.replica.roster().member(&crate::core::NodeId(me))?)
    }

    /// Writes HQ's signed aggregate where every node's receipts read it.
    fn publish(&mut self, period: Period, doc: String) -> Result<String, ApiError> {
        self.write_guard()?;
        let me = crate::core::NodeId(self.wiring.signer.verifying_key().to_bytes());
        let hq = (self.replica.roster().member(&me))
            .is_some_and(|m| m.roles.contains(&crate::core::Role::Hq));
        if !hq {
            return Err(ApiError::NotAllowed(
                "only HQ publishes aggregates; this node is not an HQ node".into(),
            ));
        }
        let now = self.wiring.clock.now_ms();
        let key = receipt::published_key(period);
        let result = (self.replica)
            .write(
                &self.wiring.signer,
                &key,
                crate::core::Op::Put,
                doc.clone().into_bytes(),
                now,
            )
            .map_err(ApiError::from);
        self.after_write(result.as_ref());
        result.map(|_| doc)
    }

    fn receipts(&self, period: Option<Period>) -> Result<Vec<receipt::Receipt>, ApiError> {
        let part = self.my_part().ok_or_else(|| {
            ApiError::NotAllowed("receipts are for a region's or a unit's node".into())
        })?;
        let store = self.replica.store();
        use crate::core::Store;
        let keys: Vec<String> = match period {
            Some(p) => vec![part.key(p)],
            None => {
                let prefix = part
                    .key("1970-01".parse().expect("a period"))
                    .replace("1970-01", "");
                (store.records(&prefix, None, RECEIPT_PERIODS_MAX)?)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            }
        };
        let roster = self.replica.roster();
        let hq: Vec<&str> = (roster.members())
            .filter(|m| m.roles.contains(&crate::core::Role::Hq))
            .map(|m| m.name.as_str())
            .collect();
        // The authors of this part's reports: the logs HQ's word is about.
        let authors: Vec<crate::core::NodeId> = (roster.members())
            .filter(|m| part.is_author(m))
            .map(|m| m.id)
            .collect();
        let links: Vec<receipt::HqLink> = (hq.iter())
            .filter_map(|n| Some((*n, self.peers.get(n)?)))
            .map(|(name, e)| receipt::HqLink {
                name: name.to_owned(),
                confirmed: (authors.iter())
                    .filter_map(|a| Some((*a, e.progress.confirmed(a)?)))
                    .collect(),
                steps: e.confirmations.iter().copied().collect(),
                as_of_ms: e.progress.last_contact_ms,
            })
            .collect();
        let mut out = Vec::new();
        for key in &keys {
            let (revisions, _) =
                report::history(store, key, RECEIPT_REVISIONS_MAX, HISTORY_BYTES_MAX)?;
            let Some(p) = key
                .rsplit('/')
                .next()
                .and_then(|p| p.parse::<Period>().ok())
            else {
                continue;
            };
            let published = receipt::published(&self.replica, p)?;
            out.extend(receipt::receipts(
                &part,
                &revisions,
                &links,
                published.as_ref(),
            ));
        }
        Ok(out)
    }

    fn dashboard(&self, period: Option<Period>) -> Result<Dashboard, ApiError> {
        let now = self.wiring.clock.now_ms();
        let period = match period {
            Some(p) => p,
            None => self
                .newest_period()?
                .unwrap_or_else(|| Period::quarter_at(now)),
        };
        let scope = self.my_part();
        let schema = self.schema()?;
        let me = crate::core::NodeId(self.wiring.signer.verifying_key().to_bytes());
        let compute = |p: Period| -> Result<aggregate::Aggregate, ApiError> {
            let cx = aggregate::Context {
                period: p,
                schema: &schema,
                me,
                my_name: &self.wiring.name,
                now_ms: now,
                stale_after_ms: self.wiring.report_stale_after_ms,
                last_contact: &|_| None,
                scope: scope.clone(),
                approved_only: false,
            };
            Ok(aggregate::compute(&self.replica, &cx)?)
        };
        let current = compute(period)?;
        let mut history = Vec::new();
        let mut p = Some(period);
        while let Some(q) = p.filter(|_| history.len() < DASHBOARD_PERIODS) {
            let rates = match q == period {
                true => current.reporting.clone(),
                false => compute(q)?.reporting,
            };
            history.push((q, rates.unwrap_or_default()));
            p = q.previous();
        }
        history.reverse();
        let receipts = match self.my_part() {
            Some(_) => self.receipts(Some(period))?,
            None => Vec::new(),
        };
        Ok(Dashboard {
            node: self.wiring.name.clone(),
            current,
            history,
            published: receipt::published(&self.replica, period)?,
            receipts,
        })
    }

    /// The newest period any part's report is held for.
    fn newest_period(&self) -> Result<Option<Period>, ApiError> {
        use crate::core::Store;
        let probe: Period = "1970-01".parse().expect("a period");
        let mut newest: Option<Period> = None;
        let parts: std::collections::BTreeSet<Part> = self
            .replica
            .roster()
            .members()
            .filter_map(Part::of)
            .collect();
        for part in parts {
            let prefix = part.key(probe).replace("1970-01", "");
            for (k, _) in self
                .replica
                .store()
                .records(&prefix, None, RECEIPT_PERIODS_MAX)?
            {
                let p = k.rsplit('/').next().and_then(|p| p.parse::<Period>().ok());
                // Quarters and months compare by when they end.
                if let Some(p) = p.filter(|p| newest.is_none_or(|n| p.end_ms() > n.end_ms())) {
                    newest = Some(p);
                }
            }
        }
        Ok(newest)
    }

    fn approve(
        &mut self,
        ask: &approval::Ask<'_>,
    ) -> Result<(SignedDelta, approval::Approval), ApiError> {
        self.write_guard()?;
        let now = self.wiring.clock.now_ms();
        let result = approval::approve(&mut self.replica, &self.wiring.signer, ask, now)
            .map_err(ApiError::from);
        self.after_write(result.as_ref().map(|(d, _)| d));
        result
    }

    fn aggregate(&self, ask: Ask) -> Result<String, ApiError> {
        let Ask {
            period,
            stale_after_ms,
            scope,
            approved_only,
        } = ask;
        let schema = self.schema()?;
        let now = self.wiring.clock.now_ms();
        // A peer with a link open now is in contact now, even if the link
        // has been quiet since its last anti-entropy round.
        let last_contact = |name: &str| {
            if self.links.values().any(|l| l.peer.name == name) {
                return Some(now);
            }
            self.peers.get(name)?.progress.last_contact_ms
        };
        let cx = aggregate::Context {
            period,
            schema: &schema,
            me: crate::core::NodeId(self.wiring.signer.verifying_key().to_bytes()),
            my_name: &self.wiring.name,
            now_ms: now,
            stale_after_ms: stale_after_ms.unwrap_or(self.wiring.report_stale_after_ms),
            last_contact: &last_contact,
            scope,
            approved_only,
        };
        let agg = aggregate::compute(&self.replica, &cx)?;
        Ok(document::sign(&agg, &self.wiring.signer))
    }
}
