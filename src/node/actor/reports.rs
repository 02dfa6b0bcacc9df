//! The actor's report commands: submitting (a write like any other, so it
//! is pushed to peers and watchers), the history, the schema, aggregating
//! (signed with the node's key) and verifying a signed aggregate against
//! this node's log. The rules are in `core::report`; this wires them to
//! the replica, the peers' last contact and the node's key.

use crate::core::report::{
    self, aggregate, approval, document, Part, Period, Report, Schema, Submission,
};
use crate::core::SignedDelta;
use crate::node::ApiError;

use super::{Actor, Reply};

/// Report bytes in one history reply: well inside the 4 MiB message.
const HISTORY_BYTES_MAX: usize = 2 * 1024 * 1024;

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
        reply: Reply<String>,
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
                let _ = reply.send(self.aggregate(ask));
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
