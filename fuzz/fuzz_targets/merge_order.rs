//! Order independence of ingest: "any permutation or duplication of a set
//! of valid deltas yields the same records and frontier".
//!
//! From structured input the harness builds a history: writes by three
//! roster authors (two regions and HQ) and one author outside the roster,
//! on a few shared keys, puts and deletes, with HLC timestamps that are
//! sometimes an honest clock's, sometimes arbitrary (colliding wall times,
//! arbitrary or maximal logical counters, far-future wall times), and
//! occasionally a key outside the author's space (which stops that
//! author's valid chain there). Each delta is signed by its author.
//!
//! Two or three `Replica<MemStore>` then each receive their own schedule:
//! batches of deltas picked in any order with repeats, as decoded deltas
//! or as bytes, at varying clocks (so far-future deltas are refused now
//! and accepted later), some batches twice, some with a corrupted copy of
//! a delta beside them, under a hold buffer that may be tiny. Then the
//! replicas sync pairwise by frontier plan, and finally each catches up on
//! the whole history in chain order, one delta at a time.
//!
//! Every replica must end with exactly the records and frontier that a
//! model computes directly from the set of valid deltas (per key the
//! delta with the highest `(hlc, author, seq)`), the same frontier digest
//! and the same `list` output, having applied each valid delta exactly
//! once. A reference replica that ingests the whole history in one batch
//! must agree too.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use fedsync::core::frontier::plan;
use fedsync::core::{
    DeltaBody, Head, Hlc, HlcClock, Limits, MemStore, NodeId, Op, RecordRef, Replica, Roster,
    SignedDelta,
};
use fedsync::testkit::{roster, Author};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000_000;
/// Later than every timestamp the harness makes, so everything admissible
/// is admitted in the final catch-up.
const FINAL: u64 = NOW + 6 * 60 * 60 * 1000;
const MAX_WRITES: usize = 24;
const MAX_BATCHES: usize = 8;
const MAX_PICKS: usize = 16;

#[derive(Arbitrary, Debug)]
struct Write {
    author: u8,
    /// < 240: one of four keys in the author's own space; 240..=251: a key
    /// in another space; 252..: the empty key.
    key: u8,
    delete: bool,
    value: u8,
    /// < 128: the author's HLC clock at `NOW + arg`; < 192: wall time
    /// `NOW + arg % 64` and logical `aux % 4` (collisions); < 224: logical
    /// `u32::MAX`; else wall time `NOW + arg * 256` (up to ~4.7 h ahead).
    time: u8,
    arg: u16,
    aux: u8,
}

#[derive(Arbitrary, Debug)]
struct Batch {
    picks: Vec<u8>,
    /// Through `ingest_encoded` (bytes, admission) rather than `ingest`.
    encoded: bool,
    /// Ingest the same batch twice.
    repeat: bool,
    /// The replica's clock: `NOW + now` minutes.
    now: u8,
    /// A corrupted copy of delta `.0`: byte `.1` xor `.2`.
    corrupt: Option<(u8, u16, u8)>,
}

#[derive(Arbitrary, Debug)]
struct Schedule {
    /// < 64: hold at most `held_max % 4` deltas ahead of a gap.
    held_max: u8,
    batches: Vec<Batch>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    writes: Vec<Write>,
    three: bool,
    schedules: [Schedule; 3],
    /// Pairwise sync after the schedules.
    gossip: bool,
}

struct Fixture {
    /// Roster authors first; the last one is not in the roster.
    authors: Vec<Author>,
    roster: Roster,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let members = [
            Author::region(1, "fr"),
            Author::region(2, "de"),
            Author::hq(3),
        ];
        let roster = roster(members.iter());
        let mut authors: Vec<Author> = members.into_iter().collect();
        authors.push(Author::region(4, "fr"));
        Fixture { authors, roster }
    })
}

struct History {
    deltas: Vec<SignedDelta>,
    /// Whether each delta belongs to its author's valid chain prefix.
    valid: Vec<bool>,
}

fn build(writes: &[Write]) -> History {
    let f = fixture();
    let n = f.authors.len();
    let mut heads = vec![Head::default(); n];
    let mut clocks = vec![HlcClock::new(); n];
    let mut broken = vec![false; n];
    // The outsider's deltas are never valid.
    broken[n - 1] = true;
    let mut deltas = Vec::new();
    let mut valid = Vec::new();
    for w in writes.iter().take(MAX_WRITES) {
        let i = usize::from(w.author) % n;
        let a = &f.authors[i];
        let (key, admissible) = match w.key {
            0..=239 => (format!("{}k{}", a.space(), w.key % 4), true),
            240..=251 => {
                let other = if a.region.is_some() {
                    "hq/"
                } else {
                    "regions/de/"
                };
                (format!("{other}k{}", w.key % 4), false)
            }
            _ => (String::new(), false),
        };
        let hlc = match w.time {
            0..=127 => clocks[i].tick(NOW + u64::from(w.arg)),
            128..=191 => Hlc::new(NOW + u64::from(w.arg % 64), u32::from(w.aux % 4)),
            192..=223 => Hlc::new(NOW + u64::from(w.arg % 64), u32::MAX),
            _ => Hlc::new(NOW + u64::from(w.arg) * 256, u32::from(w.aux)),
        };
        let op = if w.delete { Op::Delete } else { Op::Put };
        let body = DeltaBody {
            author: a.id(),
            seq: heads[i].seq + 1,
            prev: heads[i].hash,
            hlc,
            key,
            op,
            value: if w.delete { Vec::new() } else { vec![w.value] },
        };
        let d = body.sign(&a.key);
        heads[i] = Head {
            seq: d.seq(),
            hash: d.hash(),
        };
        broken[i] |= !admissible;
        valid.push(!broken[i]);
        deltas.push(d);
    }
    History { deltas, valid }
}

/// What every replica must hold: records and heads from the valid set.
struct Model {
    records: BTreeMap<String, RecordRef>,
    heads: BTreeMap<NodeId, Head>,
    winners: BTreeMap<String, SignedDelta>,
    applied: u64,
    all_valid: bool,
}

fn model(h: &History) -> Model {
    let mut winners: BTreeMap<String, SignedDelta> = BTreeMap::new();
    let mut heads = BTreeMap::new();
    let mut applied = 0;
    for (d, _) in h.deltas.iter().zip(&h.valid).filter(|(_, v)| **v) {
        applied += 1;
        heads.insert(
            d.author(),
            Head {
                seq: d.seq(),
                hash: d.hash(),
            },
        );
        let rank = |x: &SignedDelta| (x.hlc(), x.author(), x.seq());
        match winners.get(d.key()) {
            Some(w) if rank(w) >= rank(d) => {}
            _ => {
                winners.insert(d.key().to_owned(), d.clone());
            }
        }
    }
    Model {
        records: winners
            .iter()
            .map(|(k, d)| (k.clone(), RecordRef::of(d)))
            .collect(),
        heads,
        winners,
        applied,
        all_valid: h.valid.iter().all(|v| *v),
    }
}

fn open(held_max: Option<usize>) -> Replica<MemStore> {
    let mut limits = Limits::default();
    if let Some(m) = held_max {
        limits.held_deltas_max = m;
    }
    Replica::open(MemStore::default(), fixture().roster.clone(), limits).expect("MemStore opens")
}

fn deliver(rep: &mut Replica<MemStore>, h: &History, b: &Batch) {
    let n = h.deltas.len();
    let now = NOW + u64::from(b.now) * 60_000;
    if let Some((which, pos, mask)) = b.corrupt {
        let mut bytes = h.deltas[usize::from(which) % n].as_bytes().to_vec();
        let at = usize::from(pos) % bytes.len();
        bytes[at] ^= mask.max(1);
        let report = rep
            .ingest_encoded([bytes.as_slice()], "forger", now)
            .expect("MemStore");
        assert!(
            report.applied.iter().all(|d| d.as_bytes() != bytes),
            "a corrupted delta was applied: {report:?}"
        );
    }
    let picked: Vec<SignedDelta> = b
        .picks
        .iter()
        .take(MAX_PICKS)
        .map(|p| h.deltas[usize::from(*p) % n].clone())
        .collect();
    for _ in 0..(1 + usize::from(b.repeat)) {
        let report = if b.encoded {
            rep.ingest_encoded(picked.iter().map(|d| d.as_bytes()), "peer", now)
        } else {
            rep.ingest(picked.clone(), "peer", now)
        }
        .expect("MemStore");
        for d in &report.applied {
            let i = h
                .deltas
                .iter()
                .position(|x| x == d)
                .expect("applied a known delta");
            assert!(h.valid[i], "applied an invalid delta {d:?}");
        }
    }
}

/// One anti-entropy exchange, as a session does it: each side sends what
/// the other's frontier lacks.
fn exchange(a: &mut Replica<MemStore>, b: &mut Replica<MemStore>) {
    let (a_sends, b_sends) = plan(a.frontier(), b.frontier());
    let to_b: Vec<SignedDelta> = a_sends
        .iter()
        .flat_map(|r| a.read(*r, usize::MAX, usize::MAX).expect("MemStore"))
        .collect();
    let to_a: Vec<SignedDelta> = b_sends
        .iter()
        .flat_map(|r| b.read(*r, usize::MAX, usize::MAX).expect("MemStore"))
        .collect();
    let rb = b.ingest(to_b, "a", FINAL).expect("MemStore");
    let ra = a.ingest(to_a, "b", FINAL).expect("MemStore");
    assert!(rb.refused.is_empty(), "{:?}", rb.refused);
    assert!(ra.refused.is_empty(), "{:?}", ra.refused);
}

fn check(rep: &Replica<MemStore>, m: &Model, what: &str) {
    assert_eq!(rep.store().records, m.records, "{what}: records differ");
    let f = fixture();
    for a in &f.authors {
        let expected = m.heads.get(&a.id()).copied().unwrap_or_default();
        assert_eq!(rep.frontier().head(&a.id()), expected, "{what}: head");
    }
    assert_eq!(rep.frontier().len(), m.heads.len(), "{what}: frontier size");
    assert_eq!(rep.counters().applied, m.applied, "{what}: applied count");
    if m.all_valid {
        assert_eq!(rep.held_len(), 0, "{what}: deltas left held");
    }
    let listed = rep.list("", None, usize::MAX).expect("MemStore");
    let live: Vec<&SignedDelta> = m.winners.values().filter(|d| d.op() == Op::Put).collect();
    assert_eq!(listed.iter().collect::<Vec<_>>(), live, "{what}: list");
    for (k, d) in &m.winners {
        let got = rep.get(k).expect("MemStore");
        let want = (d.op() == Op::Put).then(|| d.clone());
        assert_eq!(got, want, "{what}: get {k}");
    }
}

fuzz_target!(|input: Input| {
    let h = build(&input.writes);
    if h.deltas.is_empty() {
        return;
    }
    let m = model(&h);

    // Everything at once, in history order, with the default limits.
    let mut reference = open(None);
    reference
        .ingest(h.deltas.clone(), "all", FINAL)
        .expect("MemStore");
    check(&reference, &m, "reference");

    let count = if input.three { 3 } else { 2 };
    let mut replicas: Vec<Replica<MemStore>> = input.schedules[..count]
        .iter()
        .map(|s| open((s.held_max < 64).then_some(usize::from(s.held_max % 4))))
        .collect();
    for (rep, s) in replicas.iter_mut().zip(&input.schedules) {
        for b in s.batches.iter().take(MAX_BATCHES) {
            deliver(rep, &h, b);
        }
    }
    if input.gossip {
        for i in 0..count {
            for j in i + 1..count {
                let (left, right) = replicas.split_at_mut(j);
                exchange(&mut left[i], &mut right[0]);
            }
        }
    }
    // Catch up on the whole history in chain order.
    for rep in &mut replicas {
        for d in &h.deltas {
            rep.ingest(vec![d.clone()], "catch-up", FINAL)
                .expect("MemStore");
        }
    }
    for (i, rep) in replicas.iter().enumerate() {
        check(rep, &m, &format!("replica {i}"));
        assert_eq!(rep.digest(), reference.digest(), "replica {i}: digest");
    }
});
