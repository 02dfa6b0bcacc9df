//! Arbitrary bytes through `SignedRoster::open`.
//!
//! The first input byte picks a mode, the rest is the payload:
//!
//! - even: the payload is a signed roster file. It is opened against the
//!   harness's federation key, and against whatever federation key the
//!   bytes themselves name, so strict signature verification runs on
//!   fuzzed keys and signatures. Nothing can be forged, so success is not
//!   expected; a panic is a bug.
//! - odd: the payload is the roster body after the format byte and the
//!   federation key (version, count, members). The harness, which holds
//!   the federation key, prefixes `format || federation` (the format byte
//!   the library writes), signs the body and appends the signature, so the
//!   member decoder and the roster-wide rules run on fuzzed input.
//!
//! Properties: nothing panics; an opened roster's `as_bytes()` is exactly
//! the input; its members are in strictly ascending id order and each
//! passes `check_member`; encoding is canonical (signing the opened roster
//! again with the federation key reproduces the input byte for byte, since
//! Ed25519 signatures are deterministic); a correctly signed body is never
//! refused for its signature or federation; one flipped signature bit, or
//! another federation, is refused.

#![no_main]

use std::sync::OnceLock;

use ed25519_dalek::{Signer, SigningKey};
use fedsync::core::signed_roster::{check_member, DOMAIN, MEMBERS_MAX};
use fedsync::core::{NodeId, Roster, RosterError, SignedRoster};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    /// The format byte `SignedRoster::sign` writes.
    format: u8,
    fed: SigningKey,
    fed_id: NodeId,
    other_id: NodeId,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let fed = SigningKey::from_bytes(&[42; 32]);
        let fed_id = NodeId(fed.verifying_key().to_bytes());
        let other_id = NodeId(SigningKey::from_bytes(&[43; 32]).verifying_key().to_bytes());
        let empty = SignedRoster::sign(&Roster::new(0, []), &fed).expect("an empty roster signs");
        Fixture {
            format: empty.as_bytes()[0],
            fed,
            fed_id,
            other_id,
        }
    })
}

fn check_roster(r: &Roster) {
    assert!(r.len() <= MEMBERS_MAX);
    let mut last: Option<NodeId> = None;
    for m in r.members() {
        if let Some(prev) = last {
            assert!(prev < m.id, "members not strictly ascending");
        }
        last = Some(m.id);
        check_member(m).expect("an opened roster holds only valid members");
        assert_eq!(r.member(&m.id), Some(m));
        assert!(r.by_name(&m.name).is_some());
    }
}

fn open(bytes: &[u8], federation: &NodeId) -> Option<SignedRoster> {
    match SignedRoster::open(bytes, federation) {
        Ok(r) => {
            assert_eq!(r.as_bytes(), bytes, "as_bytes differs from the input");
            assert_eq!(&r.federation(), federation);
            check_roster(r.roster());
            Some(r)
        }
        Err(e) => {
            let _ = e.to_string();
            None
        }
    }
}

fn raw(bytes: &[u8]) {
    let f = fixture();
    open(bytes, &f.fed_id);
    if bytes.len() >= 33 {
        let claimed = NodeId(bytes[1..33].try_into().expect("32 bytes"));
        open(bytes, &claimed);
    }
}

fn signed(payload: &[u8]) {
    let f = fixture();
    let mut body = vec![f.format];
    body.extend_from_slice(&f.fed_id.0);
    body.extend_from_slice(payload);
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&body);
    let mut bytes = body;
    bytes.extend_from_slice(&f.fed.sign(&msg).to_bytes());

    match SignedRoster::open(&bytes, &f.fed_id) {
        Ok(r) => {
            let opened = open(&bytes, &f.fed_id).expect("opens twice");
            assert_eq!(opened, r);
            // Canonical: the decoded roster encodes (and signs) back to
            // exactly the bytes it came from.
            let again = SignedRoster::sign(r.roster(), &f.fed)
                .expect("an opened roster can be signed again");
            assert_eq!(again.as_bytes(), &bytes[..], "re-encoding differs");
            assert_eq!(again, r);
            // Its signature and federation are what make it valid.
            let mut flipped = bytes.clone();
            let n = flipped.len();
            flipped[n - 1 - payload.len() % 64] ^= 0x01 << (payload.len() % 8);
            assert_eq!(
                SignedRoster::open(&flipped, &f.fed_id),
                Err(RosterError::BadSignature)
            );
            assert!(matches!(
                SignedRoster::open(&bytes, &f.other_id),
                Err(RosterError::WrongFederation { .. })
            ));
        }
        Err(e) => {
            let _ = e.to_string();
            assert!(
                !matches!(
                    e,
                    RosterError::BadSignature
                        | RosterError::WrongFederation { .. }
                        | RosterError::Format(_)
                ),
                "a body the federation signed was refused: {e}"
            );
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
