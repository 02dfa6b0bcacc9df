//! A replica: one node's view of the federation's deltas, and the only
//! place deltas are admitted. Sans-IO: time arrives as `now_ms`, storage
//! through the [`Store`] trait, and nothing here blocks on a network.

mod adopt;

pub use adopt::{RosterChange, RosterOffer};

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;

use super::admit::{Admission, Admitted, Verdict};
use super::delta::{DeltaBody, Op, SignedDelta};
use super::frontier::{Frontier, FrontierDigest, Head, SeqRange};
use super::held::{Held, HoldOutcome};
use super::hlc::HlcClock;
use super::holds::{Holds, Scope};
use super::ids::NodeId;
use super::keyspace;
use super::merge::{resolve, RecordRef};
use super::roster::{AuthorityError, Roster};
use super::signed_roster::SignedRoster;
use super::store::{Commit, Quarantined, Store};
use super::validate::{check_admissible, check_chain, check_shape, Evidence, Limits, Refusal};

/// What one ingest did.
#[derive(Debug, Default)]
pub struct IngestReport {
    /// Newly applied, in the order applied: what to push onwards.
    pub applied: Vec<SignedDelta>,
    pub duplicates: usize,
    /// Valid deltas now waiting for an earlier gap to fill.
    pub held: usize,
    /// Valid deltas not held because the hold buffer was full.
    pub held_dropped: usize,
    /// Deltas of this batch left waiting behind a gap in their chain.
    pub gapped: usize,
    pub refused: Vec<Refusal>,
    /// Applied deltas that did not become their key's current value.
    pub conflicts: usize,
    /// Valid or not, deltas of authors this node does not hold
    /// ([`super::holds`]): dropped unread, since a partial node keeps only
    /// its branch.
    pub unheld: usize,
}

/// One page of [`Replica::list`].
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<SignedDelta>,
    /// The page stopped at a bound, not at the end of the prefix: ask
    /// again after its last key.
    pub more: bool,
}

/// Totals since the replica was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub applied: u64,
    pub duplicates: u64,
    pub conflicts: u64,
    pub held_dropped: u64,
    /// Deltas dropped because their author is not in what this node holds.
    pub unheld: u64,
    /// Deltas removed because a newer roster revoked their author.
    pub retracted: u64,
    pub refused: BTreeMap<&'static str, u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError<E: std::error::Error> {
    #[error("write refused: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Store(E),
}

pub struct Replica<S: Store> {
    store: S,
    /// Roster, limits and parsed keys: everything admission needs.
    admission: Admission,
    frontier: Frontier,
    digest: FrontierDigest,
    held: Held,
    clock: HlcClock,
    counters: Counters,
    /// The signed roster in force, if the replica was opened with one:
    /// what it hands to peers holding an older version.
    signed: Option<SignedRoster>,
    /// What this node holds, and who it is: the scope follows the roster.
    holds: Holds,
    me: Option<NodeId>,
    scope: Scope,
}

impl<S: Store> Replica<S> {
    pub fn open(store: S, roster: Roster, limits: Limits) -> Result<Self, S::Error> {
        let frontier = store.load_frontier()?;
        let mut clock = HlcClock::new();
        for (author, head) in frontier.iter() {
            if let Some(d) = store.delta(author, head.seq)? {
                clock.observe(d.hlc());
            }
        }
        Ok(Replica {
            digest: frontier.digest(),
            frontier,
            held: Held::new(limits.held_deltas_max),
            store,
            admission: Admission::new(roster, limits),
            clock,
            counters: Counters::default(),
            signed: None,
            holds: Holds::All,
            me: None,
            scope: Scope::all(),
        })
    }

    /// Holds only what `holds` says of node `me`'s place from now on;
    /// deltas of other authors are dropped on receipt. Set before links
    /// open: sessions keep their scope until the roster changes.
    pub fn set_holds(&mut self, me: NodeId, holds: Holds) {
        self.me = Some(me);
        self.holds = holds;
        self.rescope();
    }

    /// The authors this node holds under the roster in force.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    pub fn holds(&self) -> Holds {
        self.holds
    }

    fn rescope(&mut self) {
        self.scope = match self.me {
            Some(me) => Scope::of(self.roster(), &me, self.holds),
            None => Scope::all(),
        };
    }

    pub fn frontier(&self) -> &Frontier {
        &self.frontier
    }
    pub fn digest(&self) -> FrontierDigest {
        self.digest
    }
    pub fn store(&self) -> &S {
        &self.store
    }
    pub fn roster(&self) -> &Roster {
        &self.admission.roster
    }
    pub fn limits(&self) -> &Limits {
        &self.admission.limits
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// The current value of `key`: its winning delta, unless that is a delete.
    pub fn get(&self, key: &str) -> Result<Option<SignedDelta>, S::Error> {
        match self.store.record(key)? {
            Some(r) if !r.deleted => self.store.delta(&r.author, r.seq),
            _ => Ok(None),
        }
    }

    /// Live records under `prefix` in key order, after `after`: each key
    /// with its winning delta, deleted keys skipped. A page holds at most
    /// `limit` records and, but for its first, at most `bytes_max` bytes
    /// of keys and values, so that a page of large values still fits in
    /// one reply.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<Page, S::Error> {
        let mut out = Page::default();
        let mut bytes = 0usize;
        let mut cursor = after.map(str::to_owned);
        // Tombstones are skipped, so keep reading until the page is full
        // or the prefix is exhausted.
        while out.records.len() < limit {
            let page = self.store.records(prefix, cursor.as_deref(), limit)?;
            let Some((last, _)) = page.last() else {
                return Ok(out);
            };
            cursor = Some(last.clone());
            let full = page.len() == limit;
            for (_, r) in page.into_iter().filter(|(_, r)| !r.deleted) {
                if out.records.len() == limit {
                    out.more = true;
                    return Ok(out);
                }
                let Some(d) = self.store.delta(&r.author, r.seq)? else {
                    continue;
                };
                let size = d.key().len() + d.value().len();
                if !out.records.is_empty() && bytes.saturating_add(size) > bytes_max {
                    out.more = true;
                    return Ok(out);
                }
                bytes += size;
                out.records.push(d);
            }
            if !full {
                return Ok(out);
            }
        }
        // Full by count: more may follow.
        out.more = true;
        Ok(out)
    }

    /// Reads deltas for a peer, in bounded batches.
    pub fn read(
        &self,
        range: SeqRange,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedDelta>, S::Error> {
        self.store.deltas(range, max_count, max_bytes)
    }

    /// Makes, signs and durably applies a local write. On `Ok` the write is
    /// acknowledged: stored and flushed.
    pub fn write(
        &mut self,
        signer: &SigningKey,
        key: &str,
        op: Op,
        value: Vec<u8>,
        now_ms: u64,
    ) -> Result<SignedDelta, WriteError<S::Error>> {
        let author = NodeId(signer.verifying_key().to_bytes());
        // Shape and authority first: the encoding cannot even hold an
        // over-long key, so nothing is signed before these pass.
        check_shape(key, value.len(), &self.admission.limits).map_err(WriteError::Refused)?;
        let head = self.frontier.head(&author);
        let roster = &self.admission.roster;
        let refused = |e: AuthorityError| WriteError::Refused(e.into());
        roster
            .authorize(&author, head.seq + 1, key)
            .map_err(refused)?;
        if roster.member(&author).is_some_and(|m| !m.is_active()) {
            return Err(refused(AuthorityError::Retired(author.short())));
        }
        // A delete is a tombstone and carries no value by definition.
        let value = if op == Op::Delete { Vec::new() } else { value };
        let body = DeltaBody {
            author,
            seq: head.seq + 1,
            prev: head.hash,
            hlc: self.clock.tick(now_ms),
            key: key.to_owned(),
            op,
            value,
        };
        let delta = body.sign(signer);
        let mut report = self
            .ingest(vec![delta.clone()], "local", now_ms)
            .map_err(WriteError::Store)?;
        if let Some(refusal) = report.refused.pop() {
            return Err(WriteError::Refused(refusal));
        }
        debug_assert_eq!(report.applied.len(), 1, "a local write applies at once");
        Ok(delta)
    }

    /// Decodes and ingests deltas exactly as received from `origin`,
    /// durably.
    pub fn ingest_encoded<'a>(
        &mut self,
        raw: impl IntoIterator<Item = &'a [u8]>,
        origin: &str,
        now_ms: u64,
    ) -> Result<IngestReport, S::Error> {
        let admitted = self.admission.admit(raw, &self.frontier, now_ms);
        self.ingest_as(admitted, origin, now_ms, Durable::Now)
    }

    /// Validates, verifies (in one batch) and applies deltas, durably.
    pub fn ingest(
        &mut self,
        deltas: Vec<SignedDelta>,
        origin: &str,
        now_ms: u64,
    ) -> Result<IngestReport, S::Error> {
        self.ingest_as(Admitted::unverified(deltas), origin, now_ms, Durable::Now)
    }

    /// Applies a batch a peer sent, admitted elsewhere (possibly on another
    /// thread), in a lazy commit: durable at the next [`Replica::sync`].
    /// Refusals are quarantined in the same atomic commit as the deltas
    /// applied. The node groups the batches that arrive together into one
    /// flush this way; a crash before it loses only what peers still hold.
    pub fn ingest_admitted(
        &mut self,
        admitted: Admitted,
        origin: &str,
        now_ms: u64,
    ) -> Result<IngestReport, S::Error> {
        self.ingest_as(admitted, origin, now_ms, Durable::AtSync)
    }

    /// Makes every lazy commit durable.
    pub fn sync(&mut self) -> Result<(), S::Error> {
        self.store.sync()
    }

    fn ingest_as(
        &mut self,
        admitted: Admitted,
        origin: &str,
        now_ms: u64,
        durable: Durable,
    ) -> Result<IngestReport, S::Error> {
        let mut out = Outcome::new(origin, now_ms);
        for (refusal, bytes) in admitted.refused {
            out.refuse(refusal, bytes);
        }
        let screened = self.screen(admitted.deltas, &mut out)?;
        let touched = self.verify_and_hold(screened, &mut out);
        self.apply_runs(touched, &mut out)?;
        out.report.gapped = out
            .behind_gap
            .iter()
            .filter(|(a, seq)| self.held.contains_slot(*a, *seq))
            .count();
        if !out.commit.is_empty() {
            match durable {
                Durable::Now => self.store.commit(&out.commit)?,
                Durable::AtSync => self.store.commit_lazy(&out.commit)?,
            }
        }
        // Only now, with the commit durable, does memory move forward.
        for (author, head) in &out.commit.heads {
            self.frontier.set(*author, *head);
        }
        if !out.commit.heads.is_empty() {
            self.digest = self.frontier.digest();
        }
        if let Some(latest) = out.report.applied.iter().map(|d| d.hlc()).max() {
            self.clock.observe(latest);
        }
        out.report.held = self.held.len();
        self.count(&out.report);
        Ok(out.report)
    }

    /// Drops duplicates and refuses inadmissible deltas. What remains is
    /// new (or contradicts a stored delta: possible equivocation).
    fn screen(
        &mut self,
        deltas: Vec<(SignedDelta, Verdict)>,
        out: &mut Outcome,
    ) -> Result<Vec<Screened>, S::Error> {
        let mut kept = Vec::with_capacity(deltas.len());
        for (d, verdict) in deltas {
            if !self.scope.contains(&d.author()) {
                out.report.unheld += 1;
                continue;
            }
            let head = self.frontier.head(&d.author());
            if d.seq() <= head.seq {
                if d.seq() == head.seq && d.hash() == head.hash {
                    out.report.duplicates += 1;
                    continue;
                }
                match self.store.delta(&d.author(), d.seq())? {
                    Some(stored) if stored.hash() != d.hash() => kept.push(Screened {
                        delta: d,
                        verdict,
                        contradicts: Some(stored),
                    }),
                    _ => out.report.duplicates += 1,
                }
                continue;
            }
            if self.held.contains(&d) {
                out.report.duplicates += 1;
                continue;
            }
            // Admission may have used an older roster: authority is cheap
            // to check again, and the current roster is what counts.
            let limits = &self.admission.limits;
            match check_admissible(&d, &self.admission.roster, limits, out.now_ms) {
                Ok(()) => kept.push(Screened {
                    delta: d,
                    verdict,
                    contradicts: None,
                }),
                Err(r) => out.refuse(r, d.as_bytes().to_vec()),
            }
        }
        Ok(kept)
    }

    /// Verifies what admission did not, then holds the valid deltas.
    fn verify_and_hold(&mut self, screened: Vec<Screened>, out: &mut Outcome) -> BTreeSet<NodeId> {
        let unchecked: Vec<&SignedDelta> = screened
            .iter()
            .filter(|s| s.verdict == Verdict::Unchecked)
            .map(|s| &s.delta)
            .collect();
        let mut verdicts = self.admission.keys.verify_deltas(&unchecked).into_iter();
        let mut touched = BTreeSet::new();
        for s in screened {
            let valid = s.verdict == Verdict::Valid || verdicts.next() == Some(true);
            let d = s.delta;
            if !valid {
                let refusal = self.admission.signature_refusal(&d);
                out.refuse(refusal, d.as_bytes().to_vec());
                continue;
            }
            if let Some(first) = s.contradicts {
                out.equivocation(first, d);
                continue;
            }
            let next_in_chain = d.seq() == self.frontier.head(&d.author()).seq + 1;
            match self.held.hold(d.clone(), next_in_chain) {
                HoldOutcome::Held => {
                    if !next_in_chain {
                        out.behind_gap.push((d.author(), d.seq()));
                    }
                    touched.insert(d.author());
                }
                HoldOutcome::Duplicate => out.report.duplicates += 1,
                HoldOutcome::Conflict(first) => out.equivocation(first, d),
                HoldOutcome::Full => out.report.held_dropped += 1,
            }
        }
        touched
    }

    /// Applies, per author, the contiguous run the held buffer now allows.
    fn apply_runs(&mut self, touched: BTreeSet<NodeId>, out: &mut Outcome) -> Result<(), S::Error> {
        let mut records: BTreeMap<String, RecordRef> = BTreeMap::new();
        for author in touched {
            let start = self.frontier.head(&author);
            let mut head = start;
            while let Some(d) = self.held.take(author, head.seq + 1) {
                if let Err(r) = check_chain(&d, head.hash) {
                    out.refuse(r, d.as_bytes().to_vec());
                    break;
                }
                head = Head {
                    seq: d.seq(),
                    hash: d.hash(),
                };
                let incoming = RecordRef::of(&d);
                let current = match records.get(d.key()) {
                    Some(r) => Some(*r),
                    None => self.store.record(d.key())?,
                };
                if current.is_none() {
                    out.commit.records_created += 1;
                }
                match resolve(current.as_ref(), &incoming) {
                    Some(winner) => {
                        records.insert(d.key().to_owned(), winner);
                    }
                    None => out.report.conflicts += 1,
                }
                if keyspace::is_report(d.key()) {
                    out.commit.arrivals.push((d.author(), d.seq()));
                }
                out.commit.deltas.push(d.clone());
                out.report.applied.push(d);
            }
            if head != start {
                out.commit.heads.push((author, head));
            }
        }
        out.commit.records = records.into_iter().collect();
        Ok(())
    }

    fn count(&mut self, r: &IngestReport) {
        let c = &mut self.counters;
        c.applied += r.applied.len() as u64;
        c.duplicates += r.duplicates as u64;
        c.conflicts += r.conflicts as u64;
        c.held_dropped += r.held_dropped as u64;
        c.unheld += r.unheld as u64;
        for refusal in &r.refused {
            *c.refused.entry(refusal.code()).or_default() += 1;
        }
    }
}

/// When an ingest's commit must be durable.
#[derive(Clone, Copy)]
enum Durable {
    /// Before the ingest returns: local writes, and callers outside a node.
    Now,
    /// At the next sync: batches from peers, grouped by the node.
    AtSync,
}

/// A delta that passed screening.
struct Screened {
    delta: SignedDelta,
    verdict: Verdict,
    /// The stored delta with the same author and seq, if it differs.
    contradicts: Option<SignedDelta>,
}

/// The commit and report one ingest is building.
struct Outcome<'a> {
    origin: &'a str,
    now_ms: u64,
    commit: Commit,
    report: IngestReport,
    /// Deltas held because an earlier one was missing.
    behind_gap: Vec<(NodeId, u64)>,
}

impl<'a> Outcome<'a> {
    fn new(origin: &'a str, now_ms: u64) -> Self {
        Outcome {
            origin,
            now_ms,
            commit: Commit {
                arrived_ms: now_ms,
                ..Commit::default()
            },
            report: IngestReport::default(),
            behind_gap: Vec::new(),
        }
    }

    fn refuse(&mut self, refusal: Refusal, bytes: Vec<u8>) {
        self.commit.quarantine.push(Quarantined {
            at_ms: self.now_ms,
            origin: self.origin.to_owned(),
            code: refusal.code().to_owned(),
            reason: refusal.to_string(),
            bytes,
            evidence: Vec::new(),
        });
        self.report.refused.push(refusal);
    }

    /// Keeps both deltas: together they prove the author forked its log.
    fn equivocation(&mut self, first: SignedDelta, second: SignedDelta) {
        let bytes = second.as_bytes().to_vec();
        let kept_first = first.as_bytes().to_vec();
        let evidence = Evidence {
            author: first.author(),
            seq: first.seq(),
            first,
            second,
        };
        self.refuse(Refusal::Equivocation(Box::new(evidence)), bytes);
        if let Some(q) = self.commit.quarantine.last_mut() {
            q.evidence = kept_first;
        }
    }
}

#[cfg(test)]
mod tests;
