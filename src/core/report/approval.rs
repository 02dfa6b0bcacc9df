//! Approvals: the level above a part signs, in its own key space, that one
//! exact report delta (author, seq, hash) is approved. The approved report
//! is locked: its node refuses a later submission for that period until
//! the approval is withdrawn, and a revision that arrives anyway (from a
//! patched node) is flagged and not counted.
//!
//! - A unit's report is approved by its region's node, at
//!   `regions/<r>/approvals/<period>/units/<u>`; a region's is accepted by
//!   HQ, at `hq/approvals/<period>/regions/<r>`. Key-space authority
//!   already limits who can write there; a record at that key is honoured
//!   only if it also names that part, that period and a report of it.
//! - Withdrawing writes the same key again with `approved: false`.
//! - Anything else is not an approval: a record at another key is never
//!   looked at, and a wrong one at the right key is refused as a
//!   `Forged` approval, with its reason, by every node that reads it.

use serde::{Deserialize, Serialize};

use ed25519_dalek::SigningKey;

use super::coverage::{Aggregate, RegionCoverage};
pub use super::coverage::{Note, State};
use super::{DeltaRef, Part, Period, ReportError, SubmitError, NAME_MAX};
use crate::core::delta::{Op, SignedDelta};
use crate::core::replica::{Replica, WriteError};
use crate::core::roster::{Role, Roster};
use crate::core::store::Store;

/// An approval as stored: the value of its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub period: String,
    /// The region whose report, or whose unit's.
    pub region: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The exact report delta approved.
    pub report: DeltaRef,
    /// Its revision, for people; the delta is what counts.
    pub revision: u32,
    /// `false`: the approval of `report` is withdrawn.
    pub approved: bool,
    /// The operator whose call it was.
    pub by: String,
    pub at_ms: u64,
}

impl Approval {
    pub fn part(&self) -> Part {
        match &self.unit {
            Some(u) => Part::Unit(u.clone()),
            None => Part::Region(self.region.clone()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an approval serialises")
    }
}

/// The key at which `part`'s report for `period` is approved: in HQ's
/// space for a region, in its region's for a unit; `None` for a unit
/// outside the tree in force.
pub fn approval_key(roster: &Roster, part: &Part, period: Period) -> Option<String> {
    Some(match part {
        Part::Region(r) => format!("hq/approvals/{period}/regions/{r}"),
        Part::Unit(u) => {
            let r = roster.units.region_of(u)?;
            format!("regions/{r}/approvals/{period}/units/{u}")
        }
    })
}

/// What the record at a part's approval key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// No approval record.
    None,
    /// In force, for this report delta; `at` is the approval's delta.
    Approved { approval: Held, report: DeltaRef },
    /// Withdrawn from this report delta.
    Withdrawn { approval: Held },
    /// Names a report delta this node does not hold yet.
    Waiting { approval: Held },
    /// A record that is not a valid approval of this part, and why.
    Forged { approval: Held, why: String },
}

/// An approval record as held: its delta, who signed it and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub delta: DeltaRef,
    pub approver: String,
    pub value: Option<Approval>,
}

/// The standing of `part`'s report for `period` at this replica.
pub fn standing<S: Store>(
    replica: &Replica<S>,
    part: &Part,
    period: Period,
) -> Result<Standing, S::Error> {
    let roster = replica.roster();
    let Some(key) = approval_key(roster, part, period) else {
        return Ok(Standing::None);
    };
    let Some(delta) = replica.get(&key)? else {
        return Ok(Standing::None);
    };
    let approver = roster
        .member(&delta.author())
        .map_or_else(|| delta.author().short(), |m| m.name.clone());
    let parsed: Result<Approval, String> =
        serde_json::from_slice(delta.value()).map_err(|e| format!("unreadable: {e}"));
    let held = Held {
        delta: DeltaRef::of(&delta),
        approver,
        value: parsed.as_ref().ok().cloned(),
    };
    // An approval can arrive before the report it names (they are two
    // logs): not honoured yet, and not a forgery either.
    if let Ok(a) = &parsed {
        let ours = a.part() == *part && a.period == period.to_string();
        if ours
            && replica
                .store()
                .delta(&a.report.author, a.report.seq)?
                .is_none()
        {
            return Ok(Standing::Waiting { approval: held });
        }
    }
    let why = match parsed {
        Err(why) => Some(why),
        Ok(a) => wrong(replica, &delta, &a, part, period)?,
    };
    Ok(match (why, held.value.clone()) {
        (Some(why), _) => Standing::Forged {
            approval: held,
            why,
        },
        (None, Some(a)) if a.approved => Standing::Approved {
            report: a.report,
            approval: held,
        },
        (None, _) => Standing::Withdrawn { approval: held },
    })
}

/// Why `a`, held at `part`'s approval key, is not a valid approval of it:
/// a wrong part or period, an approver of the wrong level, or a report
/// delta that is not this part's report for this period.
fn wrong<S: Store>(
    replica: &Replica<S>,
    delta: &SignedDelta,
    a: &Approval,
    part: &Part,
    period: Period,
) -> Result<Option<String>, S::Error> {
    if a.part() != *part || a.period != period.to_string() {
        return Ok(Some(format!(
            "it names {} for {}, at the key of {} for {period}",
            a.part().describe(),
            a.period.chars().take(40).collect::<String>(),
            part.describe()
        )));
    }
    let roster = replica.roster();
    let level = match part {
        Part::Region(_) => roster
            .member(&delta.author())
            .is_some_and(|m| m.roles.contains(&Role::Hq)),
        Part::Unit(u) => roster.member(&delta.author()).is_some_and(|m| {
            m.roles.contains(&Role::Region) && m.region.as_deref() == roster.units.region_of(u)
        }),
    };
    if !level {
        return Ok(Some(format!(
            "it is signed by a node that does not approve {}'s reports",
            part.describe()
        )));
    }
    Ok(
        match replica.store().delta(&a.report.author, a.report.seq)? {
            Some(d) if d.hash() == a.report.hash && d.key() == part.key(period) => None,
            Some(_) => Some(format!(
                "it names seq {} ({}), which is not {}'s report for {period}",
                a.report.seq,
                a.report.hash.short(),
                part.describe()
            )),
            // Not held (yet): it cannot be honoured here before it is.
            None => Some(format!(
                "it names seq {} of {}, which this node does not hold",
                a.report.seq,
                a.report.author.short()
            )),
        },
    )
}

/// What a report's standing means for the delta counted now: whether it
/// is the approved one, and if the lock was broken, why it is not counted.
pub fn judge(standing: &Standing, counted: &DeltaRef) -> (bool, Option<String>) {
    match standing {
        Standing::Approved { report, approval } if report != counted => (
            false,
            Some(format!(
                "submitted after {} approved seq {} and before any withdrawal: the approved report is locked",
                approval.approver, report.seq
            )),
        ),
        Standing::Approved { .. } => (true, None),
        _ => (false, None),
    }
}

/// What an approver asks for.
pub struct Ask<'a> {
    pub part: &'a Part,
    pub period: Period,
    /// `false`: withdraw the approval.
    pub approved: bool,
    /// The revision the approver checked; refused if it is not current.
    pub expect: Option<u32>,
    pub operator: &'a str,
}

/// Approves (or withdraws the approval of) a part's current report, as
/// this node: refused unless the node is the level above, and unless the
/// report is the one the approver expects.
pub fn approve<S: Store>(
    replica: &mut Replica<S>,
    signer: &SigningKey,
    ask: &Ask<'_>,
    now_ms: u64,
) -> Result<(SignedDelta, Approval), SubmitError<S::Error>> {
    let Ask {
        part,
        period,
        approved,
        expect,
        operator,
    } = *ask;
    let roster = replica.roster();
    let me = crate::core::ids::NodeId(signer.verifying_key().to_bytes());
    let refuse = |why: String| Err(ReportError::NotApprover(why).into());
    let Some(key) = approval_key(roster, part, period) else {
        return refuse(format!("{} is not in this roster's tree", part.describe()));
    };
    let Some(m) = roster.member(&me) else {
        return refuse("this node is not in the roster".into());
    };
    let allowed = match part {
        Part::Region(_) => m.roles.contains(&Role::Hq),
        Part::Unit(u) => {
            m.roles.contains(&Role::Region) && m.region.as_deref() == roster.units.region_of(u)
        }
    };
    if !allowed {
        let who = match part {
            Part::Region(_) => "HQ".to_owned(),
            Part::Unit(u) => format!(
                "region {}'s nodes",
                roster.units.region_of(u).unwrap_or("-")
            ),
        };
        return refuse(format!(
            "{}'s reports are approved by {who}; this node is {}",
            part.describe(),
            m.name
        ));
    }
    let current = replica
        .get(&part.key(period))
        .map_err(WriteError::Store)?
        .filter(|d| d.op() == Op::Put);
    let Some(current) = current else {
        return refuse(format!(
            "this node holds no report of {} for {period}",
            part.describe()
        ));
    };
    let report = super::Report::decode(&current)?;
    if let Some(want) = expect.filter(|w| *w != report.revision) {
        return refuse(format!(
            "the current report is revision {}, not {want}: check it before approving",
            report.revision
        ));
    }
    let a = Approval {
        period: period.to_string(),
        // A unit's approval names the region it sits in now.
        region: match part {
            Part::Unit(u) => roster.units.region_of(u).unwrap_or_default().to_owned(),
            Part::Region(r) => r.clone(),
        },
        unit: match part {
            Part::Unit(u) => Some(u.clone()),
            Part::Region(_) => None,
        },
        report: DeltaRef::of(&current),
        revision: report.revision,
        approved,
        by: operator.chars().take(NAME_MAX).collect(),
        at_ms: now_ms,
    };
    let delta = replica.write(signer, &key, Op::Put, a.encode(), now_ms)?;
    Ok((delta, a))
}

/// Why an entry's report is not counted, for its approval.
pub enum Blocked {
    /// Submitted after an approval in force: why, in words.
    Locked(String),
    /// The aggregate counts approved reports only, and this one is not.
    Unapproved,
}

/// The approval note of `part`'s entry, and whether it keeps the report
/// `counted` (readable, about to be counted) out of the totals.
pub fn review<S: Store>(
    replica: &Replica<S>,
    part: &Part,
    period: Period,
    counted: Option<&DeltaRef>,
    approved_only: bool,
) -> Result<(Option<Note>, Option<Blocked>), S::Error> {
    let standing = standing(replica, part, period)?;
    let note = |state, held: &Held, why: Option<String>| Note {
        state,
        approver: held.approver.clone(),
        approval: held.delta.clone(),
        report: held.value.as_ref().map(|a| a.report.clone()),
        why,
    };
    let note = match &standing {
        Standing::None => None,
        Standing::Approved { approval, report } => match counted {
            Some(c) if c != report => Some(note(State::LockBroken, approval, None)),
            _ => Some(note(State::Approved, approval, None)),
        },
        Standing::Withdrawn { approval } => Some(note(State::Withdrawn, approval, None)),
        Standing::Waiting { approval } => Some(note(State::Waiting, approval, None)),
        Standing::Forged { approval, why } => {
            Some(note(State::Refused, approval, Some(why.clone())))
        }
    };
    let Some(counted) = counted else {
        return Ok((note, None));
    };
    let blocked = match judge(&standing, counted) {
        (_, Some(why)) => Some(Blocked::Locked(why)),
        (false, None) if approved_only => Some(Blocked::Unapproved),
        _ => None,
    };
    Ok((note, blocked))
}

/// The verifier's check of an entry's approval note against this log:
/// the approval record named must be the one held here, saying what the
/// note says. `Ok` and `Err` are a passed and a failed check, in words.
pub fn check_note<S: Store>(
    replica: &Replica<S>,
    part: &Part,
    period: Period,
    note: &Note,
) -> Result<Result<String, String>, S::Error> {
    let a = &note.approval;
    let held = replica.frontier().head(&a.author).seq;
    let Some(d) = replica.store().delta(&a.author, a.seq)? else {
        return Ok(Ok(format!(
            "its approval by {} (seq {}) is not held here (this node holds that log to seq {held}): not checked",
            note.approver, a.seq
        )));
    };
    if d.hash() != a.hash {
        return Ok(Err(format!(
            "the approval named (seq {} of {}) has another hash here: not this log",
            a.seq, note.approver
        )));
    }
    let Some(key) = approval_key(replica.roster(), part, period) else {
        return Ok(Err(format!(
            "{} is not in this roster's tree",
            part.describe()
        )));
    };
    let parsed: Option<Approval> = serde_json::from_slice(d.value()).ok();
    let forged = match &parsed {
        Some(p) if d.key() == key => wrong(replica, &d, p, part, period)?,
        Some(_) => Some(format!("it is stored at {}, not at {key}", d.key())),
        None => Some("it is not a readable approval".into()),
    };
    Ok(match (note.state, forged, parsed) {
        (State::Refused, Some(why), _) => Ok(format!(
            "the aggregate rightly refused the record at seq {} as an approval: {why}",
            a.seq
        )),
        (_, Some(why), _) => Err(format!(
            "the aggregate honours an approval that is none: {why}"
        )),
        (State::Refused, None, _) => {
            Err("the aggregate refused an approval that is valid here".into())
        }
        (state, None, Some(p)) => {
            let says = if p.approved {
                "approves"
            } else {
                "withdraws the approval of"
            };
            let consistent = match state {
                State::Withdrawn => !p.approved,
                _ => p.approved,
            } && note.report.as_ref() == Some(&p.report);
            if consistent {
                Ok(format!(
                    "{} {says} seq {} (revision {}), as the aggregate says",
                    note.approver, p.report.seq, p.revision
                ))
            } else {
                Err(format!(
                    "{}'s record {says} seq {}, which is not what the aggregate says",
                    note.approver, p.report.seq
                ))
            }
        }
        (_, None, None) => Err("unreadable approval".into()),
    })
}

/// Why `entry` rightly leaves out the report `d` its log holds, if its
/// approval is why: the aggregate counts approved reports only, or `d`
/// came after an approval in force.
pub fn held_out(agg: &Aggregate, entry: &RegionCoverage, d: &DeltaRef) -> Option<String> {
    if entry.figures.is_some() {
        return None;
    }
    let note = entry.approval.as_ref();
    if entry.unapproved && agg.approved_only && !entry.is_approved() {
        return Some(format!(
            "seq {} is not counted: the aggregate counts approved reports only, and holds no approval in force for it",
            d.seq
        ));
    }
    let n = note.filter(|n| n.state == State::LockBroken)?;
    let approved = n.report.as_ref().filter(|r| *r != d)?;
    Some(format!(
        "seq {} is not counted: it came after {} approved seq {}, and the approved report is locked",
        d.seq, n.approver, approved.seq
    ))
}

/// The approval claims every verifier checks from the document alone:
/// an aggregate of approved reports counts only entries whose approval is
/// in force for the report counted, and a broken lock is never counted.
pub fn check_entries(agg: &Aggregate) -> Result<Option<String>, String> {
    for e in &agg.regions {
        let state = e.approval.as_ref().map(|n| n.state);
        let counted_ok = match (&e.figures, state) {
            (None, _) => true,
            (Some(_), Some(State::LockBroken)) => false,
            (Some(_), Some(State::Approved)) => {
                e.approval.as_ref().and_then(|n| n.report.as_ref()) == e.report.as_ref()
            }
            (Some(_), _) => !agg.approved_only,
        };
        if !counted_ok {
            return Err(format!(
                "{} is counted, but its approval is {}",
                e.label(),
                state.map_or("missing", State::describe)
            ));
        }
    }
    if !agg.approved_only {
        return Ok(None);
    }
    let approved = agg.regions.iter().filter(|e| e.figures.is_some()).count();
    Ok(Some(format!(
        "only approved reports are counted: {approved} of {}",
        agg.regions.len()
    )))
}
