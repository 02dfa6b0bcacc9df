//! One peer link's sync protocol as a state machine: messages in, messages
//! out. The runtime owns the transport and feeds this; the simulation feeds
//! it from a random scheduler. Neither changes what it decides.
//!
//! # Protocol
//!
//! 1. Either side sends `Digest` (its frontier's digest) when a link opens
//!    and on every anti-entropy tick.
//! 2. A side receiving a digest different from its own replies with its
//!    whole `Frontier`; an equal digest gets `InSync`. So an idle check is
//!    one round trip of tens of bytes.
//! 3. A side receiving a `Frontier` streams the deltas the peer lacks, in
//!    sequence order and in bounded batches (`next_batch`), and, if the
//!    peer holds deltas it lacks, asks for them with `Need`.
//! 4. `Need` is answered with deltas only, so no exchange loops.
//! 5. New deltas are pushed at once (`push`), once the peer's frontier is
//!    known; before that the opening exchange covers them.
//! 6. An `InSync` for a digest this side has since moved past starts
//!    another round, so nothing applied during an exchange is left behind.
//! 7. A digest also carries the sender's roster version. A side holding a
//!    newer roster sends it (`Roster`); the receiver adopts it only if the
//!    federation key signed it and it is newer. So a roster change made at
//!    HQ reaches every node by sync alone, hop by hop.
//! 8. Deltas the receiver did not apply come back as `Refused` notes with
//!    reasons, so the sending side can see why a peer refuses its data.
//! 9. Every batch received is answered with an `Ack`: the receiver's heads,
//!    after applying it, for the authors in the batch (none, if it held
//!    nothing usable). So the sender knows what the peer holds (for lag
//!    and stall detection) from the peer's word, not from what it sent,
//!    and paces its link by them (`core::pace`). An `Ack` is never
//!    answered. A side answers every message in order, so a batch's `Ack`
//!    arrives before the answer to a digest sent after that batch.
//! 10. A `Frontier` that answers our digest says nothing of what we sent
//!     after that digest: that is still on its way and is not sent again.
//! 11. The dialler's opening digest may carry its frontier (when small),
//!     which the listener takes as if it had asked: it streams a round
//!     trip sooner. It still answers the digest, and still sends its own,
//!     which the dialler answers with a `Frontier` as in step 2. A peer of
//!     an older release ignores the field and the link runs as before.
//!
//! 12. A digest also says whether the sender holds only its branch of the
//!     tree ([`super::holds`]). Each side then exchanges only what both
//!     hold: digests, frontiers, pushes and lag cover the authors in the
//!     link's scope, which both compute from the roster and the two ends'
//!     places. A digest sent before the peer's arrived covers the sender's
//!     own scope only; if that differs from the link's, the answer is a
//!     `Frontier`, and every later digest covers the link's scope.
//!
//! Messages on one link are assumed to arrive in order (one gRPC stream),
//! which lets a session remember what it already sent and not send it
//! twice. Correctness does not rest on that: a lost or reordered message at
//! worst delays a delta until the next digest exchange.

use std::collections::{HashMap, VecDeque};

use super::admit::Admitted;
use super::delta::SignedDelta;
use super::frontier::{Frontier, FrontierDigest, SeqRange};
use super::holds::{Holds, Scope};
use super::ids::NodeId;
use super::progress::PeerView;
use super::rebuild::Announce;
use super::replica::{IngestReport, Replica, RosterOffer};
use super::store::Store;

/// Notes per `Refused` message, at most: the first reasons of a batch say
/// what is wrong, the quarantine holds every one.
pub const NOTES_MAX: usize = 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMsg {
    /// The sender's frontier digest and roster version, and whether it is
    /// rebuilding its store (see [`super::rebuild`]). A dialler's opening
    /// digest may carry its whole frontier too, when that is small (see
    /// [`Session::opening`]).
    Digest {
        digest: FrontierDigest,
        roster: u64,
        rebuild: Announce,
        frontier: Option<Frontier>,
        /// What the sender holds (step 12).
        holds: Holds,
    },
    InSync(FrontierDigest),
    Frontier(Frontier),
    Need(Vec<SeqRange>),
    Deltas(Vec<SignedDelta>),
    /// A signed roster, as the federation key signed it.
    Roster(Vec<u8>),
    /// Why deltas the peer sent were not applied.
    Refused(Vec<Note>),
    /// The sender's heads, after applying a batch, for the batch's authors.
    Ack(Frontier),
}

/// One reason a batch was not (all) applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// A [`super::validate::Refusal::code`], or `gap` / `duplicate`.
    pub code: String,
    pub reason: String,
}

/// What handling one message produced.
#[derive(Debug, Default)]
pub struct Reaction {
    /// Send these to the peer, in order, before any `next_batch` output.
    pub send: Vec<PeerMsg>,
    /// Set when the message carried deltas.
    pub ingest: Option<IngestReport>,
    /// Set when the message carried a roster.
    pub roster: Option<RosterOffer>,
    /// The peer's reasons for refusing what we sent.
    pub peer_refused: Vec<Note>,
    /// What the message showed the peer holds.
    pub peer_view: Option<PeerView>,
}

/// The sync state for one peer link.
#[derive(Debug, Default)]
pub struct Session {
    /// Highest seq per author already sent on this link (so a push and a
    /// catch-up stream never send one delta twice).
    sent: HashMap<NodeId, u64>,
    /// Runs still to stream.
    outbox: VecDeque<SeqRange>,
    /// The peer's frontier as of its last `Frontier` message.
    peer: Option<Frontier>,
    /// The digest both sides last agreed on.
    in_sync_at: Option<FrontierDigest>,
    /// Whether we already asked the peer to fill a gap we hold deltas past.
    asked_for_gap: bool,
    /// What our digests say of our store.
    announce: Announce,
    /// What the peer's last digest said of its store; `None` before its
    /// first digest on this link.
    peer_announce: Option<Announce>,
    /// `sent` as it was when each of our unanswered digests left (the
    /// runtime says when, [`Session::digest_sent`]), oldest first.
    sent_at_digest: VecDeque<HashMap<NodeId, u64>>,
    /// Who the peer is, when the runtime knows: needed to place a peer
    /// that holds only its branch.
    peer_id: Option<NodeId>,
    /// What the peer's last digest said it holds.
    peer_holds: Holds,
    /// The link's scope (what both ends hold), under the roster version
    /// it was computed for: our own scope changes only with the roster.
    scope: Option<(u64, Scope)>,
}

/// Authors in a frontier that an opening digest carries, at most: about
/// 2.3 KB, which a 64 kbit/s line moves in less than a long round trip.
pub const OPENING_FRONTIER_MAX: usize = 32;

/// Unanswered digests remembered: more only happen on a link that does
/// not answer, and forgetting one just means re-sending (see `Frontier`).
const DIGESTS_REMEMBERED: usize = 8;

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// A session with the peer whose node id is `peer`.
    pub fn with_peer(peer: NodeId) -> Self {
        Session {
            peer_id: Some(peer),
            ..Self::default()
        }
    }

    /// The anti-entropy message.
    pub fn digest<S: Store>(&self, replica: &Replica<S>) -> PeerMsg {
        PeerMsg::Digest {
            digest: self.scoped_digest(replica),
            roster: replica.roster().version,
            rebuild: self.announce.clone(),
            frontier: None,
            holds: replica.holds(),
        }
    }

    /// The authors this link exchanges: those both ends hold, under our
    /// roster in force.
    pub fn scope<S: Store>(&self, replica: &Replica<S>) -> Scope {
        match &self.scope {
            Some((v, scope)) if *v == replica.roster().version => scope.clone(),
            _ => self.compute_scope(replica),
        }
    }

    fn compute_scope<S: Store>(&self, replica: &Replica<S>) -> Scope {
        let peer = match (self.peer_holds, self.peer_id) {
            (Holds::Tree, Some(id)) => Scope::of(replica.roster(), &id, Holds::Tree),
            _ => Scope::all(),
        };
        replica.scope().and(&peer)
    }

    /// Our frontier's digest over the link's scope.
    fn scoped_digest<S: Store>(&self, replica: &Replica<S>) -> FrontierDigest {
        (self.scope(replica)).digest(replica.frontier(), replica.digest())
    }

    /// Our frontier over the link's scope.
    fn scoped_frontier<S: Store>(&self, replica: &Replica<S>) -> Frontier {
        self.scope(replica).restrict(replica.frontier())
    }

    /// Keeps the link's scope current with our roster, for pushes, which
    /// see no replica.
    fn refresh_scope<S: Store>(&mut self, replica: &Replica<S>) {
        let version = replica.roster().version;
        if self.scope.as_ref().is_none_or(|(v, _)| *v != version) {
            self.scope = Some((version, self.compute_scope(replica)));
        }
    }

    /// Whether the link exchanges `author`'s log, as last computed: what
    /// we push we hold, so this is whether the peer holds it.
    fn peer_holds(&self, author: &NodeId) -> bool {
        (self.scope.as_ref()).is_none_or(|(_, s)| s.contains(author))
    }

    /// The message that opens a link. The dialler's carries its frontier
    /// when that has at most [`OPENING_FRONTIER_MAX`] authors, so the
    /// listener can start streaming without a round trip for it (step
    /// 11); larger frontiers would cost the line more than the round trip.
    pub fn opening<S: Store>(&self, replica: &Replica<S>, dialler: bool) -> PeerMsg {
        let mut msg = self.digest(replica);
        if let PeerMsg::Digest { frontier, .. } = &mut msg {
            let mine = self.scoped_frontier(replica);
            if dialler && mine.len() <= OPENING_FRONTIER_MAX {
                *frontier = Some(mine);
            }
        }
        msg
    }

    /// Our digest has left, after everything queued before it: what we
    /// send from now on reaches the peer after it, so the peer's answer
    /// does not show it (see the `Frontier` case of [`Session::handle`]).
    pub fn digest_sent(&mut self) {
        if self.sent_at_digest.len() == DIGESTS_REMEMBERED {
            self.sent_at_digest.pop_front();
        }
        self.sent_at_digest.push_back(self.sent.clone());
    }

    /// What this side's digests say of its store from now on.
    pub fn set_announce(&mut self, announce: Announce) {
        self.announce = announce;
    }

    /// What the peer last said of its store, if it said anything yet.
    pub fn peer_announce(&self) -> Option<&Announce> {
        self.peer_announce.as_ref()
    }

    /// True when the last digest exchange found both sides equal and
    /// nothing has changed on this side since.
    pub fn in_sync<S: Store>(&self, replica: &Replica<S>) -> bool {
        self.in_sync_at == Some(self.scoped_digest(replica))
    }

    pub fn peer_frontier(&self) -> Option<&Frontier> {
        self.peer.as_ref()
    }

    pub fn handle<S: Store>(
        &mut self,
        msg: PeerMsg,
        replica: &mut Replica<S>,
        origin: &str,
        now_ms: u64,
    ) -> Result<Reaction, S::Error> {
        let mut r = Reaction::default();
        if let PeerMsg::Digest { holds, .. } = &msg {
            if *holds != self.peer_holds {
                self.peer_holds = *holds;
                self.scope = None;
            }
        }
        self.refresh_scope(replica);
        match msg {
            PeerMsg::Digest {
                digest,
                roster,
                rebuild,
                frontier,
                holds: _,
            } => {
                self.peer_announce = Some(rebuild);
                if let Some(theirs) = frontier {
                    self.opened_with(theirs, digest, replica, &mut r);
                }
                if roster < replica.roster().version {
                    if let Some(signed) = replica.signed_roster() {
                        r.send.push(PeerMsg::Roster(signed.as_bytes().to_vec()));
                    }
                }
                if digest == self.scoped_digest(replica) {
                    r.peer_view = Some(self.agreed(replica));
                    r.send.push(PeerMsg::InSync(digest));
                } else {
                    r.send
                        .push(PeerMsg::Frontier(self.scoped_frontier(replica)));
                }
            }
            PeerMsg::InSync(d) => {
                self.sent_at_digest.pop_front();
                if d == self.scoped_digest(replica) {
                    r.peer_view = Some(self.agreed(replica));
                } else {
                    // Agreed on a digest we have since moved past (deltas
                    // applied while the exchange was in flight): check again.
                    r.send.push(self.digest(replica));
                }
            }
            PeerMsg::Frontier(theirs) => {
                // Their frontier is fresh truth about everything we sent
                // before our digest, so restart our record of it from there.
                self.sent = self.resent_from(&theirs);
                self.learn(theirs, replica, &mut r);
            }
            PeerMsg::Need(ranges) => self.enqueue_needed(ranges, replica.frontier()),
            PeerMsg::Deltas(batch) => {
                return self.handle_admitted(Admitted::unverified(batch), replica, origin, now_ms)
            }
            PeerMsg::Roster(bytes) => {
                let offer = replica.offer_roster(&bytes, now_ms)?;
                if matches!(offer, RosterOffer::Adopted(_)) {
                    // The rules changed (and retraction may have moved our
                    // frontier): compare again under the new roster.
                    self.in_sync_at = None;
                    self.refresh_scope(replica);
                    r.send.push(self.digest(replica));
                }
                r.roster = Some(offer);
            }
            PeerMsg::Refused(notes) => r.peer_refused = notes,
            PeerMsg::Ack(heads) => {
                self.count_sent(&heads);
                r.peer_view = Some(view(false, &heads, replica));
            }
        }
        Ok(r)
    }

    /// Ingests a batch of deltas from this peer that was admitted (decoded
    /// and verified) off the replica's thread.
    pub fn handle_admitted<S: Store>(
        &mut self,
        admitted: Admitted,
        replica: &mut Replica<S>,
        origin: &str,
        now_ms: u64,
    ) -> Result<Reaction, S::Error> {
        // The peer holds what it sends (it only sends deltas it applied, and
        // so their whole prefix): never send them back.
        let mut theirs: HashMap<NodeId, u64> = HashMap::new();
        for (author, seq) in admitted.positions() {
            let sent = self.sent.entry(author).or_default();
            *sent = (*sent).max(seq);
            let held = theirs.entry(author).or_default();
            *held = (*held).max(seq);
        }
        let mut r = Reaction::default();
        let batches = admitted.batches.max(1);
        let report = replica.ingest_admitted(admitted, origin, now_ms)?;
        // Every batch is acked, even one that held nothing we could use:
        // the sender paces its link by the acks (`core::pace`). Batches
        // admitted together are each acked with the heads after all of
        // them.
        let mut ack = Frontier::new();
        for author in theirs.keys() {
            ack.set(*author, replica.frontier().head(author));
        }
        for _ in 1..batches {
            r.send.push(PeerMsg::Ack(ack.clone()));
        }
        r.send.push(PeerMsg::Ack(ack));
        // Only what we now hold counts as proof the peer holds it: a forged
        // or refused delta claims a position, it does not show one.
        let seqs = theirs
            .into_iter()
            .map(|(a, seq)| (a, seq.min(replica.frontier().head(&a).seq)))
            .filter(|(_, seq)| *seq > 0)
            .collect();
        r.peer_view = Some(PeerView { whole: false, seqs });
        if replica.held_len() == 0 {
            self.asked_for_gap = false;
        } else if report.held > 0 && !self.asked_for_gap {
            // Deltas past a gap: ask once for what we lack. Later gaps
            // wait for the next digest exchange.
            self.asked_for_gap = true;
            r.send.push(self.digest(replica));
        }
        let notes = notes(&report);
        if !notes.is_empty() {
            r.send.push(PeerMsg::Refused(notes));
        }
        r.ingest = Some(report);
        Ok(r)
    }

    /// Queues newly applied deltas for the catch-up stream instead of
    /// sending them now: for a link that is full, so memory holds one run
    /// per author rather than every delta.
    pub fn defer(&mut self, deltas: &[SignedDelta]) {
        if self.peer.is_none() {
            return; // as in `push`
        }
        for d in deltas {
            if !self.peer_holds(&d.author()) {
                continue;
            }
            let sent = self.sent.get(&d.author()).copied().unwrap_or(0);
            if d.seq() > sent {
                self.enqueue_run(SeqRange {
                    author: d.author(),
                    first: sent + 1,
                    last: d.seq(),
                });
            }
        }
    }

    /// Offers newly applied deltas to the peer. Returns what to send at
    /// once; anything that must wait behind a catch-up run already queued
    /// for its author joins that run instead (drain it with `next_batch`),
    /// so the peer receives every author's deltas in order.
    pub fn push(&mut self, deltas: &[SignedDelta]) -> Option<PeerMsg> {
        // Before the first frontier exchange we know nothing of the peer,
        // and sending blind re-sends what it may hold. The opening exchange
        // covers these: its `Frontier` is computed after them, and an
        // `InSync` for an older digest starts another round.
        self.peer.as_ref()?;
        let mut now = Vec::new();
        // Only what the peer holds: the rest it would drop unread.
        for d in deltas {
            let author = d.author();
            if !self.peer_holds(&author) {
                continue;
            }
            let sent = self.sent.get(&author).copied().unwrap_or(0);
            if d.seq() <= sent {
                continue;
            }
            let queued = self.outbox.iter().any(|r| r.author == author);
            if d.seq() == sent + 1 && !queued {
                self.sent.insert(author, d.seq());
                now.push(d.clone());
            } else {
                self.enqueue_run(SeqRange {
                    author,
                    first: sent + 1,
                    last: d.seq(),
                });
            }
        }
        (!now.is_empty()).then_some(PeerMsg::Deltas(now))
    }

    /// The next batch of the catch-up stream, or `None` when done. The
    /// runtime calls this only when the link has room (flow control).
    pub fn next_batch<S: Store>(
        &mut self,
        replica: &Replica<S>,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<SignedDelta>>, S::Error> {
        while let Some(mut range) = self.outbox.pop_front() {
            let sent = self.sent.get(&range.author).copied().unwrap_or(0);
            range.first = range.first.max(sent + 1);
            if range.is_empty() {
                continue;
            }
            let batch = replica.read(range, max_count, max_bytes)?;
            let Some(last) = batch.last().map(|d| d.seq()) else {
                continue;
            };
            self.sent.insert(range.author, last);
            if last < range.last {
                self.outbox.push_front(range);
            }
            return Ok(Some(batch));
        }
        Ok(None)
    }

    /// What counts as sent once the peer answered our digest with
    /// `theirs`. Deltas we sent after the digest are still on their way
    /// and will arrive (the stream is ordered), so an author the peer
    /// holds everything of that we sent before the digest keeps what we
    /// sent since: sending it again would only deliver it twice. For any
    /// other author (the peer lacks some of what it was sent: refused,
    /// or lost with a link), resume from what it holds. Without a record
    /// of the digest, resume from what it holds for every author.
    fn resent_from(&mut self, theirs: &Frontier) -> HashMap<NodeId, u64> {
        let before = self.sent_at_digest.pop_front();
        let mut sent: HashMap<NodeId, u64> = theirs.iter().map(|(a, h)| (*a, h.seq)).collect();
        let Some(before) = before else {
            return sent;
        };
        for (author, now) in &self.sent {
            let then = before.get(author).copied().unwrap_or(0);
            let held = theirs.head(author).seq;
            if held >= then && *now > held {
                sent.insert(*author, *now);
            }
        }
        sent
    }

    /// A frontier that came in the peer's opening digest (step 11). It
    /// answers no digest of ours, so it leaves their record alone; it is
    /// used only before any other frontier, when nothing was sent yet that
    /// it could fail to show, and only if it is the one the digest names.
    fn opened_with<S: Store>(
        &mut self,
        theirs: Frontier,
        digest: FrontierDigest,
        replica: &Replica<S>,
        r: &mut Reaction,
    ) {
        if self.peer.is_some() || theirs.digest() != digest || digest == self.scoped_digest(replica)
        {
            return;
        }
        self.count_sent(&theirs);
        self.learn(theirs, replica, r);
    }

    /// What the peer holds counts as sent: it is never sent again.
    fn count_sent(&mut self, heads: &Frontier) {
        for (author, head) in heads.iter() {
            let sent = self.sent.entry(*author).or_default();
            *sent = (*sent).max(head.seq);
        }
    }

    /// The peer's whole frontier, with `sent` already set from it: stream
    /// what it lacks, ask for what we lack.
    fn learn<S: Store>(&mut self, theirs: Frontier, replica: &Replica<S>, r: &mut Reaction) {
        self.outbox.clear();
        let mine = self.scoped_frontier(replica);
        self.enqueue(mine.missing_in(&theirs));
        let need = allowed(
            self.scope(replica).restrict(&theirs).missing_in(&mine),
            replica,
        );
        if !need.is_empty() {
            r.send.push(PeerMsg::Need(need));
        }
        r.peer_view = Some(view(true, &theirs, replica));
        self.peer = Some(theirs);
    }

    pub fn has_outbox(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// Equal digests: the peer's frontier is ours, which is as good as
    /// having received it (pushes may start).
    fn agreed<S: Store>(&mut self, replica: &Replica<S>) -> PeerView {
        let mine = self.scoped_frontier(replica);
        self.count_sent(&mine);
        self.in_sync_at = Some(mine.digest());
        let v = view(true, &mine, replica);
        self.peer = Some(mine);
        v
    }

    fn enqueue(&mut self, ranges: Vec<SeqRange>) {
        for r in ranges {
            self.enqueue_run(r);
        }
    }

    /// Adds a run, merged into the author's queued run if there is one: the
    /// outbox holds at most one run per author, however many pushes or
    /// `Need` ranges arrive.
    fn enqueue_run(&mut self, r: SeqRange) {
        match self.outbox.iter_mut().find(|q| q.author == r.author) {
            Some(q) => {
                q.first = q.first.min(r.first);
                q.last = q.last.max(r.last);
            }
            None => self.outbox.push_back(r),
        }
    }

    /// Serves only what we hold: a peer cannot make us read past our heads.
    fn enqueue_needed(&mut self, ranges: Vec<SeqRange>, mine: &Frontier) {
        for mut r in ranges {
            r.first = r.first.max(1);
            r.last = r.last.min(mine.head(&r.author).seq);
            if !r.is_empty() {
                self.enqueue_run(r);
            }
        }
    }
}

/// What a frontier from the peer says it holds, counting only what our
/// roster lets us accept: deltas we would refuse are not a lag.
fn view<S: Store>(whole: bool, heads: &Frontier, replica: &Replica<S>) -> PeerView {
    let roster = replica.roster();
    let seqs = heads
        .iter()
        .map(|(a, h)| (*a, h.seq.min(roster.valid_through(a))))
        .filter(|(_, seq)| *seq > 0)
        .collect();
    PeerView { whole, seqs }
}

/// Drops from `need` what the roster does not allow us to accept: asking
/// for a revoked author's later deltas would only fetch refusals.
fn allowed<S: Store>(mut need: Vec<SeqRange>, replica: &Replica<S>) -> Vec<SeqRange> {
    need.retain_mut(|r| {
        r.last = r.last.min(replica.roster().valid_through(&r.author));
        !r.is_empty()
    });
    need
}

/// The reasons to tell the sender of a batch: its refusals (the first
/// [`NOTES_MAX`]), deltas left behind a gap, and duplicates.
fn notes(report: &IngestReport) -> Vec<Note> {
    let mut notes: Vec<Note> = report
        .refused
        .iter()
        .take(NOTES_MAX)
        .map(|r| Note {
            code: r.code().into(),
            reason: r.to_string(),
        })
        .collect();
    if report.refused.len() > NOTES_MAX {
        notes.push(Note {
            code: "more".into(),
            reason: format!("{} more refused", deltas(report.refused.len() - NOTES_MAX)),
        });
    }
    if report.gapped > 0 {
        notes.push(Note {
            code: "gap".into(),
            reason: format!(
                "{} held: they follow a gap in their author's chain",
                deltas(report.gapped)
            ),
        });
    }
    if report.duplicates > 0 {
        notes.push(Note {
            code: "duplicate".into(),
            reason: format!("{} already held here", deltas(report.duplicates)),
        });
    }
    notes
}

fn deltas(n: usize) -> String {
    match n {
        1 => "1 delta".into(),
        n => format!("{n} deltas"),
    }
}

#[cfg(test)]
mod tests;
