//! prost <-> domain conversions for the peer protocol. Every field from the
//! wire is checked here (lengths, presence), so the core only ever sees
//! well-formed values. Deltas stay as raw bytes: deciding about them is the
//! core's job (a malformed delta is quarantined, not a protocol error).

use crate::core::session::NOTES_MAX;
use crate::core::{
    Announce, DeltaHash, Frontier, FrontierDigest, Head, Holds, NodeId, Note, PeerMsg, SeqRange,
    SignedDelta,
};

/// Characters of a peer's note kept (a code, or a reason).
const NOTE_CHARS_MAX: usize = 512;
/// Peers a rebuilding node may say it waits for: more than any roster.
const REBUILD_WAITING_MAX: usize = 65_536;

use super::fragment::FragmentIn;
use super::pack::Terms;
use super::pb;

/// Why a peer message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("message has no body")]
    Empty,
    #[error("{field}: expected {expected} bytes, got {got}")]
    Length {
        field: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("frontier lists author {0} twice")]
    DuplicateAuthor(String),
    #[error("frontier head with seq 0")]
    ZeroSeq,
    #[error("range {first}..={last} is empty or starts at 0")]
    BadRange { first: u64, last: u64 },
    #[error("{got} refusal notes in one message; at most {max} are allowed")]
    TooManyNotes { got: usize, max: usize },
    #[error("a rebuild waiting for {got} peers; at most {max} are allowed")]
    TooManyWaiting { got: usize, max: usize },
    #[error("a batch carries deltas both plain and compressed")]
    MixedBatch,
    #[error("a fragment carries its data both plain and compressed, or none")]
    BadFragment,
    #[error("a digest lists {got} deltas held in part; at most {max} are allowed")]
    TooManyStaged { got: usize, max: usize },
}

/// A peer message as the runtime receives it: deltas still undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Msg(PeerMsg),
    Deltas(Vec<Vec<u8>>),
    /// Deltas as one zstd frame (`pack.rs`), `raw_len` bytes unpacked.
    Packed {
        frame: Vec<u8>,
        raw_len: usize,
        context_len: usize,
    },
    /// One piece of a delta (`fragment.rs`).
    Fragment(FragmentIn),
}

fn array32(field: &'static str, b: &[u8]) -> Result<[u8; 32], ProtoError> {
    b.try_into().map_err(|_| ProtoError::Length {
        field,
        expected: 32,
        got: b.len(),
    })
}

pub fn digest(d: &pb::Digest) -> Result<FrontierDigest, ProtoError> {
    Ok(FrontierDigest(array32("digest", &d.digest)?))
}

fn announce(d: &pb::Digest) -> Result<Announce, ProtoError> {
    if !d.rebuilding {
        return Ok(Announce::Intact);
    }
    let got = d.rebuild_waiting_for.len();
    if got > REBUILD_WAITING_MAX {
        let max = REBUILD_WAITING_MAX;
        return Err(ProtoError::TooManyWaiting { got, max });
    }
    let waiting_for = (d.rebuild_waiting_for.iter())
        .map(|b| array32("rebuild_waiting_for", b).map(NodeId))
        .collect::<Result<_, _>>()?;
    Ok(Announce::Rebuilding { waiting_for })
}

pub fn frontier(f: pb::Frontier) -> Result<Frontier, ProtoError> {
    let mut out = Frontier::new();
    for h in f.heads {
        let author = NodeId(array32("head.author", &h.author)?);
        if h.seq == 0 {
            return Err(ProtoError::ZeroSeq);
        }
        if out.head(&author).seq != 0 {
            return Err(ProtoError::DuplicateAuthor(author.short()));
        }
        let hash = DeltaHash(array32("head.hash", &h.hash)?);
        out.set(author, Head { seq: h.seq, hash });
    }
    Ok(out)
}

fn range(r: pb::SeqRange) -> Result<SeqRange, ProtoError> {
    if r.first == 0 || r.last < r.first {
        return Err(ProtoError::BadRange {
            first: r.first,
            last: r.last,
        });
    }
    Ok(SeqRange {
        author: NodeId(array32("range.author", &r.author)?),
        first: r.first,
        last: r.last,
    })
}

impl TryFrom<pb::PeerMessage> for Incoming {
    type Error = ProtoError;

    fn try_from(m: pb::PeerMessage) -> Result<Self, ProtoError> {
        use pb::peer_message::Body;
        Ok(match m.body.ok_or(ProtoError::Empty)? {
            Body::Digest(d) => Incoming::Msg(PeerMsg::Digest {
                roster: d.roster_version,
                digest: digest(&d)?,
                rebuild: announce(&d)?,
                frontier: d.frontier.map(frontier).transpose()?,
                holds: if d.holds_tree {
                    Holds::Tree
                } else {
                    Holds::All
                },
            }),
            Body::InSync(d) => Incoming::Msg(PeerMsg::InSync(digest(&d)?)),
            Body::Frontier(f) => Incoming::Msg(PeerMsg::Frontier(frontier(f)?)),
            Body::Need(n) => Incoming::Msg(PeerMsg::Need(
                n.ranges.into_iter().map(range).collect::<Result<_, _>>()?,
            )),
            Body::Deltas(d) if d.zstd.is_empty() => Incoming::Deltas(d.deltas),
            Body::Deltas(d) if d.deltas.is_empty() => Incoming::Packed {
                frame: d.zstd,
                raw_len: d.zstd_len as usize,
                context_len: d.zstd_context as usize,
            },
            Body::Deltas(_) => return Err(ProtoError::MixedBatch),
            Body::Roster(r) => Incoming::Msg(PeerMsg::Roster(r.signed)),
            Body::Refused(r) => Incoming::Msg(PeerMsg::Refused(notes(r)?)),
            Body::Ack(f) => Incoming::Msg(PeerMsg::Ack(frontier(f)?)),
            Body::Fragment(f) => {
                let hash = DeltaHash(array32("fragment.hash", &f.hash)?);
                Incoming::Fragment(FragmentIn::new(hash, f).ok_or(ProtoError::BadFragment)?)
            }
        })
    }
}

/// A peer's notes, bounded: they end up in our logs and status.
fn notes(r: pb::Refused) -> Result<Vec<Note>, ProtoError> {
    // The core sends at most NOTES_MAX refusals plus three summary notes.
    let max = NOTES_MAX + 3;
    if r.notes.len() > max {
        return Err(ProtoError::TooManyNotes {
            got: r.notes.len(),
            max,
        });
    }
    let clip = |s: String| s.chars().take(NOTE_CHARS_MAX).collect::<String>();
    Ok(r.notes
        .into_iter()
        .map(|n| Note {
            code: clip(n.code),
            reason: clip(n.reason),
        })
        .collect())
}

pub fn pb_frontier(f: &Frontier) -> pb::Frontier {
    pb::Frontier {
        heads: f
            .iter()
            .map(|(a, h)| pb::Head {
                author: a.0.to_vec(),
                seq: h.seq,
                hash: h.hash.0.to_vec(),
            })
            .collect(),
    }
}

/// A digest as `Digest` sends it: with what this release can read.
fn pb_announcing(d: FrontierDigest, roster_version: u64, rebuild: &Announce) -> pb::Digest {
    pb::Digest {
        features: vec![
            super::pack::FEATURE.to_string(),
            super::fragment::FEATURE.to_string(),
            super::pack::CONTEXT_FEATURE.to_string(),
            super::pack::FOLLOWS_FEATURE.to_string(),
        ],
        ..pb_digest(d, roster_version, rebuild)
    }
}

/// Whether a peer's digest announced that it reads compressed batches.
pub fn reads_packed(d: &pb::Digest) -> bool {
    d.features.iter().any(|f| f == super::pack::FEATURE)
}

/// Whether a peer's digest announced that it reads frames after their
/// context.
pub fn reads_context(d: &pb::Digest) -> bool {
    d.features.iter().any(|f| f == super::pack::CONTEXT_FEATURE)
}

/// Whether a peer's digest announced that it reads entries that follow
/// the one before them.
pub fn reads_follows(d: &pb::Digest) -> bool {
    d.features.iter().any(|f| f == super::pack::FOLLOWS_FEATURE)
}

/// Whether a peer's digest announced that it reads deltas in pieces.
pub fn reads_fragments(d: &pb::Digest) -> bool {
    d.features.iter().any(|f| f == super::fragment::FEATURE)
}

/// The deltas a peer's digest says it holds in part, with how many bytes
/// of each, bounded as the peer's own staging is.
pub fn staged(d: &pb::Digest) -> Result<Vec<(DeltaHash, u64)>, ProtoError> {
    let (got, max) = (d.staged.len(), crate::core::staging::STAGED_MAX);
    if got > max {
        return Err(ProtoError::TooManyStaged { got, max });
    }
    (d.staged.iter())
        .map(|s| Ok((DeltaHash(array32("staged.hash", &s.hash)?), s.have)))
        .collect()
}

/// Our `prefixes` in a digest about to leave.
pub fn set_staged(d: &mut pb::Digest, prefixes: &[(DeltaHash, u64)]) {
    d.staged = (prefixes.iter())
        .map(|(h, have)| pb::Staged {
            hash: h.0.to_vec(),
            have: *have,
        })
        .collect();
}

fn pb_digest(d: FrontierDigest, roster_version: u64, rebuild: &Announce) -> pb::Digest {
    let (rebuilding, waiting) = match rebuild {
        Announce::Intact => (false, Vec::new()),
        Announce::Rebuilding { waiting_for } => {
            (true, waiting_for.iter().map(|p| p.0.to_vec()).collect())
        }
    };
    pb::Digest {
        digest: d.0.to_vec(),
        roster_version,
        rebuilding,
        rebuild_waiting_for: waiting,
        features: Vec::new(),
        rate_bytes_per_sec_max: 0,
        staged: Vec::new(),
        frontier: None,
        holds_tree: false,
        hops: None,
    }
}

fn pb_deltas(deltas: &[SignedDelta]) -> pb::Deltas {
    pb::Deltas {
        deltas: deltas.iter().map(|d| d.as_bytes().to_vec()).collect(),
        ..Default::default()
    }
}

/// `deltas` as a plain batch.
pub fn pb_plain(deltas: &[SignedDelta]) -> pb::PeerMessage {
    pb::PeerMessage {
        body: Some(pb::peer_message::Body::Deltas(pb_deltas(deltas))),
    }
}

/// `deltas` as one compressed frame, for a peer that reads them, in the
/// `terms` it reads.
pub fn pb_packed(deltas: &[SignedDelta], terms: Terms<'_>) -> pb::PeerMessage {
    let p = super::pack::pack(deltas, terms);
    pb::PeerMessage {
        body: Some(pb::peer_message::Body::Deltas(pb::Deltas {
            deltas: Vec::new(),
            zstd: p.frame,
            zstd_len: p.raw_len,
            zstd_context: p.context_len,
        })),
    }
}

impl From<&PeerMsg> for pb::PeerMessage {
    fn from(m: &PeerMsg) -> Self {
        use pb::peer_message::Body;
        let body = match m {
            PeerMsg::Digest {
                digest,
                roster,
                rebuild,
                frontier,
                holds,
            } => Body::Digest(pb::Digest {
                frontier: frontier.as_ref().map(pb_frontier),
                holds_tree: *holds == Holds::Tree,
                ..pb_announcing(*digest, *roster, rebuild)
            }),
            PeerMsg::InSync(d) => Body::InSync(pb_digest(*d, 0, &Announce::Intact)),
            PeerMsg::Frontier(f) => Body::Frontier(pb_frontier(f)),
            PeerMsg::Need(ranges) => Body::Need(pb::Need {
                ranges: ranges
                    .iter()
                    .map(|r| pb::SeqRange {
                        author: r.author.0.to_vec(),
                        first: r.first,
                        last: r.last,
                    })
                    .collect(),
            }),
            PeerMsg::Deltas(ds) => Body::Deltas(pb_deltas(ds)),
            PeerMsg::Roster(bytes) => Body::Roster(pb::Roster {
                signed: bytes.clone(),
            }),
            PeerMsg::Refused(notes) => Body::Refused(pb::Refused {
                notes: notes
                    .iter()
                    .map(|n| pb::Note {
                        code: n.code.clone(),
                        reason: n.reason.clone(),
                    })
                    .collect(),
            }),
            PeerMsg::Ack(f) => Body::Ack(pb_frontier(f)),
        };
        pb::PeerMessage { body: Some(body) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Author;
    use prost::Message;

    fn round_trip(m: &PeerMsg) -> Incoming {
        let bytes = pb::PeerMessage::from(m).encode_to_vec();
        Incoming::try_from(pb::PeerMessage::decode(bytes.as_slice()).unwrap()).unwrap()
    }

    #[test]
    fn every_message_round_trips() {
        let mut a = Author::region(1, "fr");
        let d = a.put("x", b"v", 1);
        let mut f = Frontier::new();
        f.set(
            a.id(),
            Head {
                seq: 1,
                hash: d.hash(),
            },
        );
        let msgs = [
            PeerMsg::Digest {
                digest: f.digest(),
                roster: 7,
                rebuild: Announce::Intact,
                frontier: None,
                holds: Holds::All,
            },
            PeerMsg::Digest {
                digest: f.digest(),
                roster: 7,
                rebuild: Announce::Intact,
                frontier: Some(f.clone()),
                holds: Holds::Tree,
            },
            PeerMsg::Digest {
                digest: f.digest(),
                roster: 7,
                rebuild: Announce::Rebuilding {
                    waiting_for: vec![a.id()],
                },
                frontier: None,
                holds: Holds::All,
            },
            PeerMsg::Digest {
                digest: f.digest(),
                roster: 7,
                rebuild: Announce::Rebuilding {
                    waiting_for: Vec::new(),
                },
                frontier: None,
                holds: Holds::All,
            },
            PeerMsg::Roster(vec![1, 2, 3]),
            PeerMsg::Refused(vec![Note {
                code: "gap".into(),
                reason: "2 deltas held".into(),
            }]),
            PeerMsg::InSync(f.digest()),
            PeerMsg::Ack(f.clone()),
            PeerMsg::Frontier(f.clone()),
            PeerMsg::Need(vec![SeqRange {
                author: a.id(),
                first: 2,
                last: 9,
            }]),
        ];
        for m in msgs {
            assert_eq!(round_trip(&m), Incoming::Msg(m.clone()));
        }
        assert_eq!(
            round_trip(&PeerMsg::Deltas(vec![d.clone()])),
            Incoming::Deltas(vec![d.as_bytes().to_vec()])
        );
    }

    #[test]
    fn malformed_fields_are_refused_with_a_reason() {
        use pb::peer_message::Body;
        let bad = |body| Incoming::try_from(pb::PeerMessage { body: Some(body) }).unwrap_err();
        assert_eq!(
            bad(Body::Digest(pb::Digest {
                digest: vec![0; 31],
                roster_version: 1,
                ..Default::default()
            }))
            .to_string(),
            "digest: expected 32 bytes, got 31"
        );
        assert_eq!(
            bad(Body::Digest(pb::Digest {
                digest: vec![0; 32],
                rebuilding: true,
                rebuild_waiting_for: vec![vec![1; 31]],
                ..Default::default()
            }))
            .to_string(),
            "rebuild_waiting_for: expected 32 bytes, got 31"
        );
        let head = pb::Head {
            author: vec![1; 32],
            seq: 3,
            hash: vec![2; 32],
        };
        let twice = pb::Frontier {
            heads: vec![head.clone(), head],
        };
        assert!(matches!(
            bad(Body::Frontier(twice)),
            ProtoError::DuplicateAuthor(_)
        ));
        let backwards = pb::Need {
            ranges: vec![pb::SeqRange {
                author: vec![1; 32],
                first: 5,
                last: 4,
            }],
        };
        assert_eq!(
            bad(Body::Need(backwards)),
            ProtoError::BadRange { first: 5, last: 4 }
        );
        assert_eq!(
            Incoming::try_from(pb::PeerMessage { body: None }),
            Err(ProtoError::Empty)
        );
    }
}
