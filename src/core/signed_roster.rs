//! The roster as the federation key signs it: one canonical encoding, so
//! the bytes verified are the bytes stored and handed on.
//!
//! # Encoding (formats 2 and 3)
//!
//! `body || signature`, integers big-endian, strings as `u16` length then
//! UTF-8, optional fields as a `0`/`1` byte then the field:
//!
//! | field       | bytes                                   |
//! |-------------|-----------------------------------------|
//! | format      | 1 (`2`, or `3` for a roster with units) |
//! | federation  | 32, the federation public key            |
//! | version     | 8, the roster's version (monotonic)     |
//! | count       | 4, then `count` members, ids ascending  |
//! | member      | id 32, name, region?, unit? (format 3 only), roles (1 byte of bits: 1 hq, 2 region, 4 operator, 8 unit), tls? (32), address?, standing |
//! | standing    | `0` active; `1` retired, then successor? (32); `2` revoked, then valid-through seq (8) |
//! | units       | format 3 only: 4, then that many units, names ascending |
//! | unit        | name, then `0` and a region or `1` and a unit: what it hangs from |
//!
//! `signature` is Ed25519 (strict verification) over `DOMAIN || body` by the
//! federation key. Members sorted by id and units by name, with no repeats,
//! make the encoding of a roster unique; decoding refuses anything else.
//!
//! A roster without units is signed in format 2, which releases before
//! units read, so a federation that has no units keeps its older nodes.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use super::ids::NodeId;
use super::roster::{Member, Role, Roster, Standing};
use super::units::{Above, Units};

pub const DOMAIN: &[u8] = b"fedsync/roster/v1\0";
/// The format of a roster without units.
const FORMAT: u8 = 2;
/// The format of a roster with units: members name their unit, and the
/// tree follows the members.
const FORMAT_UNITS: u8 = 3;
/// More members than any federation has; bounds what a file may make us
/// allocate.
pub const MEMBERS_MAX: usize = 10_000;
pub const NAME_LEN_MAX: usize = 64;
pub const ADDRESS_LEN_MAX: usize = 255;

const ROLE_BITS: [(Role, u8); 4] = [
    (Role::Hq, 1),
    (Role::Region, 2),
    (Role::Operator, 4),
    (Role::Unit, 8),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RosterError {
    #[error("roster is truncated")]
    Truncated,
    #[error("roster format {0} is not supported (this build reads {FORMAT} and {FORMAT_UNITS})")]
    Format(u8),
    #[error("roster has {0} members; at most {MEMBERS_MAX} are allowed")]
    TooManyMembers(usize),
    #[error("roster members are not in ascending id order, or repeat")]
    NotCanonical,
    #[error("roster has {0} trailing bytes")]
    Trailing(usize),
    #[error("roster member {name:?}: {why}")]
    Member { name: String, why: String },
    #[error("roster is signed by {found}, not by this federation ({expected})")]
    WrongFederation { expected: String, found: String },
    #[error("roster signature does not verify")]
    BadSignature,
    #[error("roster has two active members named {0:?}")]
    DuplicateName(String),
    #[error("roster member {name:?} names successor {successor}, which is not in the roster")]
    NoSuccessor { name: String, successor: String },
    #[error("roster unit {unit:?}: {why}")]
    Unit { unit: String, why: String },
}

/// A roster with the federation's signature over its canonical bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRoster {
    bytes: Vec<u8>,
    federation: NodeId,
    roster: Roster,
}

impl SignedRoster {
    /// Encodes and signs `roster` with the federation key.
    pub fn sign(roster: &Roster, federation: &SigningKey) -> Result<SignedRoster, RosterError> {
        for m in roster.members() {
            check_member(m)?;
        }
        if roster.len() > MEMBERS_MAX {
            return Err(RosterError::TooManyMembers(roster.len()));
        }
        check_roster(roster)?;
        let fed = NodeId(federation.verifying_key().to_bytes());
        let units = !roster.units.is_empty() || roster.members().any(|m| m.unit.is_some());
        let format = if units { FORMAT_UNITS } else { FORMAT };
        let mut body = vec![format];
        body.extend_from_slice(&fed.0);
        body.extend_from_slice(&roster.version.to_be_bytes());
        body.extend_from_slice(&(roster.len() as u32).to_be_bytes());
        for m in roster.members() {
            encode_member(&mut body, m, units);
        }
        if units {
            encode_units(&mut body, &roster.units);
        }
        let sig = federation.sign(&signed_message(&body));
        body.extend_from_slice(&sig.to_bytes());
        Ok(SignedRoster {
            bytes: body,
            federation: fed,
            roster: roster.clone(),
        })
    }

    /// Decodes `bytes` and verifies them against the federation key the
    /// node was configured with.
    pub fn open(bytes: &[u8], federation: &NodeId) -> Result<SignedRoster, RosterError> {
        if bytes.len() < 64 {
            return Err(RosterError::Truncated);
        }
        let (body, sig) = bytes.split_at(bytes.len() - 64);
        let mut r = Reader { buf: body, pos: 0 };
        let format = r.take(1)?[0];
        if format != FORMAT && format != FORMAT_UNITS {
            return Err(RosterError::Format(format));
        }
        let units = format == FORMAT_UNITS;
        let found = NodeId(r.array()?);
        if &found != federation {
            return Err(RosterError::WrongFederation {
                expected: federation.short(),
                found: found.short(),
            });
        }
        let key = VerifyingKey::from_bytes(&found.0).map_err(|_| RosterError::BadSignature)?;
        let sig = Signature::from_bytes(sig.try_into().expect("split at 64"));
        key.verify_strict(&signed_message(body), &sig)
            .map_err(|_| RosterError::BadSignature)?;
        // Only signed bytes are parsed further.
        let version = u64::from_be_bytes(r.array()?);
        let count = u32::from_be_bytes(r.array()?) as usize;
        if count > MEMBERS_MAX {
            return Err(RosterError::TooManyMembers(count));
        }
        let mut members: Vec<Member> = Vec::with_capacity(count);
        for _ in 0..count {
            let m = decode_member(&mut r, units)?;
            if members.last().is_some_and(|prev| prev.id >= m.id) {
                return Err(RosterError::NotCanonical);
            }
            check_member(&m)?;
            members.push(m);
        }
        let mut roster = Roster::new(version, members);
        if units {
            roster.units = decode_units(&mut r)?;
        }
        if r.pos != body.len() {
            return Err(RosterError::Trailing(body.len() - r.pos));
        }
        check_roster(&roster)?;
        Ok(SignedRoster {
            bytes: bytes.to_vec(),
            federation: found,
            roster,
        })
    }

    pub fn roster(&self) -> &Roster {
        &self.roster
    }
    pub fn federation(&self) -> NodeId {
        self.federation
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn version(&self) -> u64 {
        self.roster.version
    }
}

/// Rules across members: names are unique among active members (a rotated
/// key keeps its name beside its successor), successors exist, the tree
/// holds together and every unit member's unit is in it.
fn check_roster(roster: &Roster) -> Result<(), RosterError> {
    if roster.units.len() > MEMBERS_MAX {
        return Err(RosterError::Unit {
            unit: "-".into(),
            why: format!("more than {MEMBERS_MAX} units"),
        });
    }
    for (unit, above) in roster.units.iter() {
        let (Above::Region(name) | Above::Unit(name)) = above;
        for n in [unit, name.as_str()] {
            check_space_name(n).map_err(|why| RosterError::Unit {
                unit: unit.into(),
                why,
            })?;
        }
    }
    roster.units.check().map_err(|e| RosterError::Unit {
        unit: "-".into(),
        why: e.to_string(),
    })?;
    let mut names = std::collections::BTreeSet::new();
    for m in roster.members() {
        if m.is_active() && !names.insert(m.name.as_str()) {
            return Err(RosterError::DuplicateName(m.name.clone()));
        }
        if let Some(u) = m.unit.as_deref().filter(|u| !roster.units.contains(u)) {
            return Err(RosterError::Member {
                name: m.name.clone(),
                why: format!("unit {u:?} is not in the roster's tree"),
            });
        }
        if let Standing::Retired { successor: Some(s) } = m.standing {
            if roster.member(&s).is_none() {
                return Err(RosterError::NoSuccessor {
                    name: m.name.clone(),
                    successor: s.short(),
                });
            }
        }
    }
    Ok(())
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    [DOMAIN, body].concat()
}

/// The rules every member obeys, so a roster that signs also makes sense.
pub fn check_member(m: &Member) -> Result<(), RosterError> {
    let fail = |why: String| RosterError::Member {
        name: m.name.clone(),
        why,
    };
    if m.name.is_empty() || m.name.len() > NAME_LEN_MAX || !m.name.chars().all(name_char) {
        return Err(fail(format!(
            "a name is 1 to {NAME_LEN_MAX} characters of a-z, A-Z, 0-9, '-', '_', '.'"
        )));
    }
    for space in [&m.region, &m.unit].into_iter().flatten() {
        check_space_name(space).map_err(fail)?;
    }
    if m.roles.is_empty() {
        return Err(fail("a member needs at least one role".into()));
    }
    if m.roles.contains(&Role::Region) && m.region.is_none() {
        return Err(fail("a member with the region role needs a region".into()));
    }
    if m.roles.contains(&Role::Unit) {
        if m.unit.is_none() || m.region.is_some() || m.roles.len() > 1 {
            return Err(fail(
                "a unit node has the unit role alone, names its unit and no region \
                 (the tree places the unit)"
                    .into(),
            ));
        }
    } else if m.unit.is_some() {
        return Err(fail("only a member with the unit role names a unit".into()));
    }
    if m.is_operator() && m.is_node() {
        return Err(fail(
            "a member is either a node (hq, region) or an operator, not both".into(),
        ));
    }
    if m.tls.is_none() {
        return Err(fail("a member needs a TLS certificate fingerprint".into()));
    }
    if let Some(a) = &m.address {
        if a.is_empty() || a.len() > ADDRESS_LEN_MAX {
            return Err(fail(format!("an address is 1 to {ADDRESS_LEN_MAX} bytes")));
        }
    }
    Ok(())
}

/// A region's or a unit's name: it appears in keys.
fn check_space_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_LEN_MAX || !name.chars().all(region_char) {
        return Err(format!(
            "a region or unit is 1 to {NAME_LEN_MAX} characters of a-z, 0-9, '-', not {:?}",
            name.chars().take(NAME_LEN_MAX + 1).collect::<String>()
        ));
    }
    Ok(())
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn region_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

fn encode_member(out: &mut Vec<u8>, m: &Member, units: bool) {
    out.extend_from_slice(&m.id.0);
    put_str(out, &m.name);
    put_opt_str(out, m.region.as_deref());
    if units {
        put_opt_str(out, m.unit.as_deref());
    }
    let bits = ROLE_BITS
        .iter()
        .filter(|(r, _)| m.roles.contains(r))
        .fold(0u8, |acc, (_, b)| acc | b);
    out.push(bits);
    match &m.tls {
        Some(f) => {
            out.push(1);
            out.extend_from_slice(f);
        }
        None => out.push(0),
    }
    put_opt_str(out, m.address.as_deref());
    match m.standing {
        Standing::Active => out.push(0),
        Standing::Retired { successor } => {
            out.push(1);
            match successor {
                Some(s) => {
                    out.push(1);
                    out.extend_from_slice(&s.0);
                }
                None => out.push(0),
            }
        }
        Standing::Revoked { valid_through } => {
            out.push(2);
            out.extend_from_slice(&valid_through.to_be_bytes());
        }
    }
}

fn encode_units(out: &mut Vec<u8>, units: &Units) {
    out.extend_from_slice(&(units.len() as u32).to_be_bytes());
    for (unit, above) in units.iter() {
        put_str(out, unit);
        match above {
            Above::Region(r) => {
                out.push(0);
                put_str(out, r);
            }
            Above::Unit(u) => {
                out.push(1);
                put_str(out, u);
            }
        }
    }
}

fn decode_units(r: &mut Reader) -> Result<Units, RosterError> {
    let count = u32::from_be_bytes(r.array()?) as usize;
    if count > MEMBERS_MAX {
        return Err(RosterError::Unit {
            unit: "-".into(),
            why: format!("{count} units; at most {MEMBERS_MAX} are allowed"),
        });
    }
    let mut units = Units::default();
    let mut last: Option<String> = None;
    for _ in 0..count {
        let name = r.string()?;
        if last.as_ref().is_some_and(|l| *l >= name) {
            return Err(RosterError::NotCanonical);
        }
        let above = match r.take(1)?[0] {
            0 => Above::Region(r.string()?),
            1 => Above::Unit(r.string()?),
            _ => return Err(RosterError::NotCanonical),
        };
        units.insert(name.clone(), above);
        last = Some(name);
    }
    Ok(units)
}

fn decode_member(r: &mut Reader, units: bool) -> Result<Member, RosterError> {
    let id = NodeId(r.array()?);
    let name = r.string()?;
    let region = r.optional(|r| r.string())?;
    let unit = if units {
        r.optional(|r| r.string())?
    } else {
        None
    };
    let bits = r.take(1)?[0];
    let known = ROLE_BITS.iter().fold(0u8, |acc, (_, b)| acc | b);
    if bits & !known != 0 {
        return Err(RosterError::Member {
            name,
            why: format!("unknown role bits {bits:#04x}"),
        });
    }
    let roles = ROLE_BITS
        .iter()
        .filter(|(_, b)| bits & b != 0)
        .map(|(r, _)| *r)
        .collect();
    let tls = r.optional(|r| r.array())?;
    let address = r.optional(|r| r.string())?;
    let standing = match r.take(1)?[0] {
        0 => Standing::Active,
        1 => Standing::Retired {
            successor: r.optional(|r| r.array().map(NodeId))?,
        },
        2 => Standing::Revoked {
            valid_through: u64::from_be_bytes(r.array()?),
        },
        _ => return Err(RosterError::NotCanonical),
    };
    Ok(Member {
        id,
        name,
        region,
        unit,
        roles,
        tls,
        address,
        standing,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RosterError> {
        if self.buf.len() - self.pos < n {
            return Err(RosterError::Truncated);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RosterError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    fn string(&mut self) -> Result<String, RosterError> {
        let len = u16::from_be_bytes(self.array()?) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RosterError::Member {
            name: String::from_utf8_lossy(bytes).into_owned(),
            why: "a string is not UTF-8".into(),
        })
    }
    fn optional<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, RosterError>,
    ) -> Result<Option<T>, RosterError> {
        match self.take(1)?[0] {
            0 => Ok(None),
            1 => f(self).map(Some),
            _ => Err(RosterError::NotCanonical),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8, name: &str, region: Option<&str>, role: Role) -> Member {
        Member {
            id: NodeId([n; 32]),
            name: name.into(),
            region: region.map(Into::into),
            unit: None,
            roles: [role].into_iter().collect(),
            tls: Some([n + 100; 32]),
            address: Some(format!("127.0.0.1:{}", 7000 + n as u16)),
            standing: Standing::Active,
        }
    }

    fn sample() -> Roster {
        let mut old_fr = member(4, "office-fr", Some("fr"), Role::Region);
        old_fr.standing = Standing::Retired {
            successor: Some(NodeId([2; 32])),
        };
        let mut de = member(5, "office-de", Some("de"), Role::Region);
        de.standing = Standing::Revoked { valid_through: 9 };
        Roster::new(
            7,
            [
                member(1, "hq", None, Role::Hq),
                member(2, "office-fr", Some("fr"), Role::Region),
                member(3, "alice", None, Role::Operator),
                old_fr,
                de,
            ],
        )
    }

    fn fed() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    #[test]
    fn round_trips_and_verifies() {
        let signed = SignedRoster::sign(&sample(), &fed()).unwrap();
        let id = NodeId(fed().verifying_key().to_bytes());
        let opened = SignedRoster::open(signed.as_bytes(), &id).unwrap();
        assert_eq!(opened.roster(), &sample());
        assert_eq!(opened.as_bytes(), signed.as_bytes());
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let signed = SignedRoster::sign(&sample(), &fed()).unwrap();
        let id = NodeId(fed().verifying_key().to_bytes());
        for bit in 0..signed.as_bytes().len() * 8 {
            let mut b = signed.as_bytes().to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(SignedRoster::open(&b, &id).is_err(), "bit {bit} accepted");
        }
        for len in 0..signed.as_bytes().len() {
            assert!(SignedRoster::open(&signed.as_bytes()[..len], &id).is_err());
        }
    }

    fn with_units() -> Roster {
        let mut r = sample();
        r.units.insert("aleysk", Above::Region("ru-altai".into()));
        r.units.insert("aleysk-north", Above::Unit("aleysk".into()));
        let mut unit = member(9, "centre-aleysk", None, Role::Unit);
        unit.unit = Some("aleysk".into());
        r.insert(unit);
        r
    }

    #[test]
    fn a_roster_with_units_round_trips_in_format_3_and_one_without_stays_2() {
        let id = NodeId(fed().verifying_key().to_bytes());
        let plain = SignedRoster::sign(&sample(), &fed()).unwrap();
        assert_eq!(plain.as_bytes()[0], FORMAT, "older releases read it");
        let signed = SignedRoster::sign(&with_units(), &fed()).unwrap();
        assert_eq!(signed.as_bytes()[0], FORMAT_UNITS);
        let opened = SignedRoster::open(signed.as_bytes(), &id).unwrap();
        assert_eq!(opened.roster(), &with_units());
        let m = opened.roster().by_name("centre-aleysk").unwrap();
        assert_eq!(opened.roster().region_of(m), Some("ru-altai"));
        for bit in 0..signed.as_bytes().len() * 8 {
            let mut b = signed.as_bytes().to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(SignedRoster::open(&b, &id).is_err(), "bit {bit} accepted");
        }
    }

    #[test]
    fn a_tree_that_does_not_hold_together_is_not_signed() {
        let mut r = with_units();
        r.units.insert("lost", Above::Unit("nowhere".into()));
        assert!(matches!(
            SignedRoster::sign(&r, &fed()),
            Err(RosterError::Unit { .. })
        ));
        let mut r = with_units();
        r.units.insert("Bad Name", Above::Region("ru-altai".into()));
        assert!(matches!(
            SignedRoster::sign(&r, &fed()),
            Err(RosterError::Unit { .. })
        ));
        let mut r = with_units();
        let mut homeless = member(10, "centre-x", None, Role::Unit);
        homeless.unit = Some("x".into());
        r.insert(homeless);
        assert!(matches!(
            SignedRoster::sign(&r, &fed()),
            Err(RosterError::Member { .. })
        ));
        // A unit node names no region, and only a unit node names a unit.
        for (region, unit, role) in [
            (Some("ru-altai"), Some("aleysk"), Role::Unit),
            (None, None, Role::Unit),
            (Some("ru-altai"), Some("aleysk"), Role::Region),
            (None, Some("aleysk"), Role::Hq),
        ] {
            let mut r = with_units();
            let mut m = member(11, "odd", region, role);
            m.unit = unit.map(Into::into);
            r.insert(m);
            assert!(
                SignedRoster::sign(&r, &fed()).is_err(),
                "{region:?} {unit:?} {role:?}"
            );
        }
    }

    #[test]
    fn another_federation_is_refused() {
        let signed = SignedRoster::sign(&sample(), &fed()).unwrap();
        let other = NodeId(SigningKey::from_bytes(&[43; 32]).verifying_key().to_bytes());
        assert!(matches!(
            SignedRoster::open(signed.as_bytes(), &other),
            Err(RosterError::WrongFederation { .. })
        ));
    }

    #[test]
    fn members_that_make_no_sense_are_not_signed() {
        let mut r = sample();
        r.insert(member(4, "bad name!", None, Role::Hq));
        assert!(SignedRoster::sign(&r, &fed()).is_err());
        let mut r = sample();
        r.insert(member(5, "nowhere", None, Role::Region));
        assert!(SignedRoster::sign(&r, &fed()).is_err());
        let mut r = sample();
        let mut both = member(6, "both", Some("fr"), Role::Region);
        both.roles.insert(Role::Operator);
        r.insert(both);
        assert!(SignedRoster::sign(&r, &fed()).is_err());
        let mut r = sample();
        r.insert(member(7, "office-fr", Some("fr"), Role::Region));
        assert_eq!(
            SignedRoster::sign(&r, &fed()),
            Err(RosterError::DuplicateName("office-fr".into()))
        );
        let mut r = sample();
        let mut orphan = member(8, "old", None, Role::Hq);
        orphan.standing = Standing::Retired {
            successor: Some(NodeId([99; 32])),
        };
        r.insert(orphan);
        assert!(matches!(
            SignedRoster::sign(&r, &fed()),
            Err(RosterError::NoSuccessor { .. })
        ));
    }
}
