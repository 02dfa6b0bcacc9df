//! Roster changes: a replica adopts a newer signed roster, and retracts
//! whatever that roster no longer allows.
//!
//! Retraction is what keeps revocation convergent. A node that applied an
//! author's deltas 6..10 before learning that the author was compromised
//! after 5 would otherwise keep them while every node that learnt first
//! refuses them: frontiers would never agree and state would differ. So on
//! adoption each node removes the deltas past the author's valid sequence
//! number, and re-resolves every key one of them had won, in the same
//! atomic commit as the roster itself. Every node then holds exactly the
//! deltas the roster allows, whatever order it heard things in.

use std::collections::{BTreeMap, BTreeSet};

use super::{Replica, Store};
use crate::core::frontier::{Head, SeqRange};
use crate::core::ids::NodeId;
use crate::core::merge::{resolve, RecordRef};
use crate::core::signed_roster::{RosterError, SignedRoster};
use crate::core::store::{Commit, Quarantined};

/// Retracted deltas kept in the quarantine per roster change, at most, and
/// their bytes at most: an attacker's flood must not become a huge commit.
/// The rest are counted.
const RETRACT_KEEP_MAX: usize = 1_000;
const RETRACT_KEEP_BYTES_MAX: usize = 16 << 20;
/// Deltas read per step while retracting.
const RETRACT_READ_BATCH: usize = 1_000;

/// What adopting a roster changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RosterChange {
    pub version: u64,
    /// Deltas removed because the roster no longer allows them.
    pub retracted: u64,
}

/// What became of a roster a peer offered.
#[derive(Debug, PartialEq, Eq)]
pub enum RosterOffer {
    Adopted(RosterChange),
    /// Valid, but not newer than the one held: nothing to do.
    NotNewer {
        held: u64,
        offered: u64,
    },
    /// Not signed by this federation, or not a valid roster.
    Invalid(RosterError),
    /// This replica runs on an unsigned roster (tests) and adopts none.
    Unsigned,
}

impl<S: Store> Replica<S> {
    /// Opens a replica under the newer of `given` (the roster file) and the
    /// roster the store adopted earlier, and makes the store obey it. A
    /// stored roster that no longer verifies is reported, and `given` used.
    pub fn open_signed(
        store: S,
        given: SignedRoster,
        limits: crate::core::Limits,
        now_ms: u64,
    ) -> Result<(Self, Option<RosterError>), S::Error> {
        let (stored, problem) = match store.roster()? {
            None => (None, None),
            Some(bytes) => match SignedRoster::open(&bytes, &given.federation()) {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            },
        };
        let chosen = match stored {
            Some(s) if s.version() >= given.version() => s,
            _ => given,
        };
        let mut replica = Self::open(store, chosen.roster().clone(), limits)?;
        replica.install(chosen, now_ms)?;
        Ok((replica, problem))
    }

    /// The signed roster in force, when the replica has one.
    pub fn signed_roster(&self) -> Option<&SignedRoster> {
        self.signed.as_ref()
    }

    /// Verifies `bytes` as this federation's roster and adopts it if newer.
    pub fn offer_roster(&mut self, bytes: &[u8], now_ms: u64) -> Result<RosterOffer, S::Error> {
        let Some(current) = &self.signed else {
            return Ok(RosterOffer::Unsigned);
        };
        match SignedRoster::open(bytes, &current.federation()) {
            Ok(signed) => self.adopt_roster(signed, now_ms),
            Err(e) => Ok(RosterOffer::Invalid(e)),
        }
    }

    /// Adopts `signed` if it is newer than the roster in force.
    pub fn adopt_roster(
        &mut self,
        signed: SignedRoster,
        now_ms: u64,
    ) -> Result<RosterOffer, S::Error> {
        let held = self.roster().version;
        if signed.version() <= held {
            return Ok(RosterOffer::NotNewer {
                held,
                offered: signed.version(),
            });
        }
        self.install(signed, now_ms).map(RosterOffer::Adopted)
    }

    /// Puts `signed` in force: retracts what it disallows and stores it,
    /// in one durable commit, then updates memory.
    fn install(&mut self, signed: SignedRoster, now_ms: u64) -> Result<RosterChange, S::Error> {
        let mut commit = Commit::default();
        let mut affected = BTreeSet::new();
        let mut retracted = 0;
        let caps: Vec<(NodeId, Head, u64)> = self
            .frontier
            .iter()
            .map(|(a, h)| (*a, *h, signed.roster().valid_through(a)))
            .filter(|(_, h, cap)| h.seq > *cap)
            .collect();
        for (author, head, cap) in caps {
            let kept = match self.store.delta(&author, cap)? {
                Some(d) if cap > 0 => Head {
                    seq: cap,
                    hash: d.hash(),
                },
                _ => Head::default(),
            };
            let run = SeqRange {
                author,
                first: kept.seq + 1,
                last: head.seq,
            };
            retracted +=
                self.collect_retracted(run, &signed, now_ms, &mut commit, &mut affected)?;
            commit.heads.push((author, kept));
            commit.retract.push(run);
        }
        self.rewin(&affected, &signed, &mut commit)?;
        if self.store.roster()?.as_deref() != Some(signed.as_bytes()) {
            commit.roster = Some(signed.as_bytes().to_vec());
        }
        if !commit.is_empty() {
            self.store.commit(&commit)?;
        }
        // Durable: now memory follows.
        for (author, head) in &commit.heads {
            self.frontier.set(*author, *head);
        }
        self.digest = self.frontier.digest();
        let roster = signed.roster();
        self.held
            .retain(|d| d.seq() <= roster.valid_through(&d.author()));
        self.admission.roster = roster.clone();
        self.rescope();
        self.counters.retracted += retracted;
        let change = RosterChange {
            version: signed.version(),
            retracted,
        };
        self.signed = Some(signed);
        Ok(change)
    }

    /// Reads a run about to be retracted: notes the keys whose current
    /// value it holds, and quarantines its deltas (bounded).
    fn collect_retracted(
        &self,
        run: SeqRange,
        signed: &SignedRoster,
        now_ms: u64,
        commit: &mut Commit,
        affected: &mut BTreeSet<String>,
    ) -> Result<u64, S::Error> {
        let roster = signed.roster();
        let (name, standing) = match roster.member(&run.author) {
            Some(m) => (m.name.clone(), m.standing.describe()),
            None => (run.author.short(), "no longer in the roster".to_owned()),
        };
        let mut kept_bytes: usize = commit.quarantine.iter().map(|q| q.bytes.len()).sum();
        let mut count = 0;
        let mut next = run.first;
        while next <= run.last {
            let from = SeqRange { first: next, ..run };
            let batch = self.store.deltas(from, RETRACT_READ_BATCH, usize::MAX)?;
            let Some(last) = batch.last().map(|d| d.seq()) else {
                break;
            };
            next = last + 1;
            for d in batch {
                count += 1;
                let current = self.store.record(d.key())?;
                if current.is_some_and(|r| (r.author, r.seq) == (d.author(), d.seq())) {
                    affected.insert(d.key().to_owned());
                }
                let room = commit.quarantine.len() < RETRACT_KEEP_MAX
                    && kept_bytes + d.as_bytes().len() <= RETRACT_KEEP_BYTES_MAX;
                if room {
                    kept_bytes += d.as_bytes().len();
                    commit.quarantine.push(Quarantined {
                        at_ms: now_ms,
                        origin: format!("roster v{}", roster.version),
                        code: "retracted".into(),
                        reason: format!(
                            "{name} is {standing}: seq {} was applied before roster version {} arrived, and is retracted",
                            d.seq(),
                            roster.version
                        ),
                        bytes: d.as_bytes().to_vec(),
                        evidence: Vec::new(),
                    });
                }
            }
        }
        Ok(count)
    }

    /// Finds the new winner of every key a retracted delta had won: the
    /// best of the deltas that stay. A key no delta writes any more goes.
    fn rewin(
        &self,
        affected: &BTreeSet<String>,
        signed: &SignedRoster,
        commit: &mut Commit,
    ) -> Result<(), S::Error> {
        if affected.is_empty() {
            return Ok(());
        }
        let roster = signed.roster();
        let mut best: BTreeMap<String, RecordRef> = BTreeMap::new();
        for d in self.store.deltas_for_keys(affected)? {
            if d.seq() > roster.valid_through(&d.author()) {
                continue;
            }
            if let Some(w) = resolve(best.get(d.key()), &RecordRef::of(&d)) {
                best.insert(d.key().to_owned(), w);
            }
        }
        for key in affected {
            match best.remove(key) {
                Some(r) => commit.records.push((key.clone(), r)),
                None => commit.records_removed.push(key.clone()),
            }
        }
        Ok(())
    }
}
