//! Arbitrary bytes through the delta decoder and every check that needs no
//! store: admissibility (limits, clock, roster, authority) and signature
//! verification, single and batched.
//!
//! The first input byte picks a mode, the rest is the payload:
//!
//! - even: the payload is a signed delta as received from a peer;
//! - odd: the payload is a delta *body*; the harness puts a roster author's
//!   id into the author field (unless told not to), signs `DOMAIN || body`
//!   with that author's key and appends the signature, so the decoder's
//!   success paths, authority and a valid signature are reached without
//!   the fuzzer having to forge Ed25519.
//!
//! Properties: nothing panics; a delta decodes only from its canonical
//! bytes (`as_bytes()` is the input, re-encoding the parsed fields gives
//! the body back, one byte less or more does not decode); the hash is
//! SHA-256 of `DOMAIN || body`; `KeyCache::verify_deltas` (batched or not)
//! agrees with strict single verification; a delta the harness signed
//! verifies; admission and a replica's ingest give each input exactly one
//! outcome.

#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use fedsync::core::delta::{DOMAIN, SIGNATURE_LEN};
use fedsync::core::validate::check_admissible;
use fedsync::core::verify::{parse_key, KeyCache};
use fedsync::core::{
    Admission, DeltaBody, DeltaHash, Frontier, Limits, MemStore, Op, Refusal, Replica, Roster,
    SignedDelta,
};
use fedsync::testkit::{roster, Author};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

const NOW: u64 = 1_800_000_000_000;

struct Fixture {
    keys: Vec<SigningKey>,
    roster: Roster,
    limits: Limits,
    /// Valid deltas to batch the fuzzed one with (more than the batch
    /// verifier's split floor, so `verify_batch` runs).
    valid: Vec<SignedDelta>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut authors = [
            Author::region(1, "fr"),
            Author::region(2, "de"),
            Author::hq(3),
        ];
        let roster = roster(authors.iter());
        let mut valid = Vec::new();
        for (i, a) in authors.iter_mut().enumerate() {
            valid.push(a.put("a", b"1", NOW));
            valid.push(a.put(&format!("b{i}"), b"22", NOW + 1));
        }
        Fixture {
            keys: authors.iter().map(|a| a.key.clone()).collect(),
            roster,
            limits: Limits::default(),
            valid,
        }
    })
}

/// The verdict strict single-signature Ed25519 gives, with fedsync's own
/// key parsing (which refuses what `verify_strict` would).
fn strict_verdict(d: &SignedDelta) -> bool {
    let Ok(key) = parse_key(&d.author().0) else {
        // Not a point, small-order, or a non-canonical encoding: refused.
        return false;
    };
    let plain = VerifyingKey::from_bytes(&d.author().0).expect("parse_key accepted it");
    assert_eq!(plain, key);
    key.verify_strict(&d.signed_message(), &d.signature())
        .is_ok()
}

/// Everything that must hold for a delta that decoded from `bytes`.
/// Returns the signature verdict.
fn check_decoded(d: &SignedDelta, bytes: &[u8]) -> bool {
    let f = fixture();

    // Canonical: the bytes kept are exactly the bytes given.
    assert_eq!(d.as_bytes(), bytes, "as_bytes differs from the input");
    assert_eq!(d.body().len() + SIGNATURE_LEN, bytes.len());
    assert_eq!(&bytes[..d.body().len()], d.body());
    assert_eq!(&bytes[d.body().len()..], &d.signature().to_bytes()[..]);

    // Accessors, and the format's own rules.
    let key = d.key().to_owned();
    let value = d.value().to_vec();
    assert!(d.seq() >= 1);
    if d.seq() == 1 {
        assert_eq!(d.prev(), DeltaHash::GENESIS);
    }
    if d.op() == Op::Delete {
        assert!(value.is_empty(), "a delete with a value decoded");
    }
    assert_eq!(d.rank(), (d.hlc(), d.author()));
    let _ = format!("{d:?} {} {}", d.author(), d.hash());

    // Re-encoding the parsed fields gives the body back, byte for byte.
    let body = DeltaBody {
        author: d.author(),
        seq: d.seq(),
        prev: d.prev(),
        hlc: d.hlc(),
        key,
        op: d.op(),
        value,
    };
    assert_eq!(body.encode(), d.body(), "re-encoding differs");

    // The signed message and the hash.
    let msg = d.signed_message();
    assert_eq!(&msg[..DOMAIN.len()], DOMAIN);
    assert_eq!(&msg[DOMAIN.len()..], d.body());
    let h: [u8; 32] = Sha256::digest(&msg).into();
    assert_eq!(d.hash(), DeltaHash(h));

    // Decoding is a function of the bytes, and strict about length.
    assert_eq!(SignedDelta::decode(bytes).as_ref(), Ok(d));
    assert!(SignedDelta::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(SignedDelta::decode(&longer).is_err());

    // Validation that needs no store, at a few clocks and limits.
    for (now, limits) in [
        (NOW, f.limits.clone()),
        (0, f.limits.clone()),
        (u64::MAX, f.limits.clone()),
        (
            d.hlc().wall_ms,
            Limits {
                key_len_max: 0,
                value_len_max: 0,
                future_skew_ms_max: 0,
                held_deltas_max: 0,
            },
        ),
    ] {
        if let Err(r) = check_admissible(d, &f.roster, &limits, now) {
            let _ = (r.code(), r.to_string());
        }
    }

    // Verification: alone (one strict check) and inside a batch large
    // enough for `verify_batch` and bisection; both agree with strict.
    let strict = strict_verdict(d);
    let mut cache = KeyCache::default();
    assert_eq!(cache.verify_deltas(&[d]), vec![strict], "single verdict");
    let mut batch: Vec<&SignedDelta> = f.valid.iter().collect();
    let at = bytes.len() % (batch.len() + 1);
    batch.insert(at, d);
    let verdicts = KeyCache::default().verify_deltas(&batch);
    for (i, v) in verdicts.iter().enumerate() {
        let expected = if i == at { strict } else { true };
        assert_eq!(*v, expected, "batch verdict {i} (fuzzed delta at {at})");
    }
    strict
}

/// Admission and a fresh replica: one outcome per input, never a panic.
fn check_ingest(bytes: &[u8], decoded: Option<(&SignedDelta, bool)>) {
    let f = fixture();
    let mut admission = Admission::new(f.roster.clone(), f.limits.clone());
    let admitted = admission.admit([bytes], &Frontier::new(), NOW);
    assert_eq!(admitted.len(), 1);
    let admissible =
        decoded.is_some_and(|(d, ok)| ok && check_admissible(d, &f.roster, &f.limits, NOW).is_ok());
    assert_eq!(admitted.positions().count(), usize::from(admissible));

    let mut rep = Replica::open(MemStore::default(), f.roster.clone(), f.limits.clone())
        .expect("MemStore opens");
    let report = rep.ingest_encoded([bytes], "fuzz", NOW).expect("MemStore");
    for r in &report.refused {
        let _ = (r.code(), r.to_string());
        if let Refusal::Malformed(_) = r {
            assert!(decoded.is_none());
        }
    }
    assert_eq!(report.duplicates, 0);
    assert_eq!(
        report.applied.len() + report.refused.len() + report.held + report.held_dropped,
        1,
        "one input, one outcome: {report:?}"
    );
    assert_eq!(report.refused.is_empty(), admissible);
    if let Some(d) = report.applied.first() {
        assert_eq!(d.as_bytes(), bytes);
        assert_eq!(d.seq(), 1);
        assert_eq!(rep.frontier().head(&d.author()).hash, d.hash());
    }
    if report.held == 1 {
        assert!(decoded.is_some_and(|(d, _)| d.seq() > 1));
    }
    assert_eq!(rep.store().quarantine.len(), report.refused.len());
}

fn raw(bytes: &[u8]) {
    match SignedDelta::decode(bytes) {
        Ok(d) => {
            let ok = check_decoded(&d, bytes);
            check_ingest(bytes, Some((&d, ok)));
        }
        Err(e) => {
            let r: Refusal = e.into();
            let _ = (r.code(), r.to_string());
            check_ingest(bytes, None);
        }
    }
}

fn signed(payload: &[u8]) {
    let f = fixture();
    let mut body = payload.to_vec();
    // Byte 1 (the first author byte) picks who signs: a roster author whose
    // id replaces the author field, or (3) the fuzzer's own author bytes
    // signed by a key that is not theirs.
    let who = payload.get(1).map_or(3, |b| usize::from(*b % 4));
    let signer = &f.keys[who % f.keys.len()];
    let honest = who < f.keys.len() && body.len() >= 33;
    if honest {
        body[1..33].copy_from_slice(&signer.verifying_key().to_bytes());
    }
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&body);
    let mut bytes = body.clone();
    bytes.extend_from_slice(&signer.sign(&msg).to_bytes());

    match SignedDelta::decode(&bytes) {
        Ok(d) => {
            let ok = check_decoded(&d, &bytes);
            if honest {
                assert!(ok, "a delta its author signed does not verify");
                // Deterministic signatures: signing the parsed fields again
                // reproduces the delta exactly.
                let again = DeltaBody {
                    author: d.author(),
                    seq: d.seq(),
                    prev: d.prev(),
                    hlc: d.hlc(),
                    key: d.key().to_owned(),
                    op: d.op(),
                    value: d.value().to_vec(),
                }
                .sign(signer);
                assert_eq!(again, d);
            }
            check_ingest(&bytes, Some((&d, ok)));
        }
        Err(e) => {
            let _ = e.to_string();
            check_ingest(&bytes, None);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(payload);
    } else {
        signed(payload);
    }
});
