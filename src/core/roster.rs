//! The roster: who belongs to the federation and what each member may write.
//!
//! Authority lives in the key: `regions/<region>/…` is writable only by
//! members of that region, `units/<unit>/…` only by members of that unit,
//! `hq/…` only by members with the `hq` role. Each level writes its own space
//! and no other: a region not its units', a unit not its region's nor a
//! sibling's. Every receiver checks this for every delta, so a relay cannot
//! launder a write into a space its author does not own, and a leaked key
//! harms only its own space.

use std::collections::{BTreeMap, BTreeSet};

use super::ids::NodeId;
use super::units::{Above, Place, Units};

/// What a member is trusted to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Writes `hq/…`.
    Hq,
    /// A regional office; writes `regions/<its region>/…`.
    Region,
    /// A unit below a region (a municipal centre); writes `units/<its unit>/…`.
    Unit,
    /// A person with the CLI: may call a node's client service over mTLS,
    /// never authors deltas and never syncs as a peer.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hq => "hq",
            Role::Region => "region",
            Role::Unit => "unit",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Hq, Role::Region, Role::Unit, Role::Operator]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Whether this role belongs to a node that syncs with peers.
    pub fn is_node(self) -> bool {
        matches!(self, Role::Hq | Role::Region | Role::Unit)
    }
}

/// One roster entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    /// The region whose key space this member writes, if any.
    pub region: Option<String>,
    /// The unit whose key space this member writes, if any. Where the unit
    /// sits is the roster's tree, so a unit member names no region.
    pub unit: Option<String>,
    pub roles: BTreeSet<Role>,
    /// SHA-256 of the member's TLS certificate (DER): the one certificate
    /// the member may present. This binds its TLS key to its Ed25519 id.
    pub tls: Option<[u8; 32]>,
    /// Where peers reach this member (`host:port`), if it listens.
    pub address: Option<String>,
    pub standing: Standing,
}

/// Whether a member's key is in use, and which of its deltas count.
///
/// Only active members connect (their certificates are pinned) and write.
/// Deltas stay valid after retirement; after a revocation only those up to
/// `valid_through` do, on every node: a node that applied later ones before
/// it learnt of the revocation retracts them (see `Replica::adopt_roster`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Standing {
    #[default]
    Active,
    /// Replaced (rotation) or decommissioned: no longer connects or writes;
    /// everything it signed stays valid. A retired key that may have
    /// leaked is revoked instead.
    Retired { successor: Option<NodeId> },
    /// Revoked outright (`valid_through` 0) or compromised after
    /// `valid_through`: its deltas past that sequence number are refused.
    Revoked { valid_through: u64 },
}

impl Standing {
    /// The highest sequence number of the member's log that is valid.
    pub fn valid_through(self) -> u64 {
        match self {
            Standing::Active | Standing::Retired { .. } => u64::MAX,
            Standing::Revoked { valid_through } => valid_through,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Standing::Active => "active".into(),
            Standing::Retired { successor: Some(s) } => {
                format!("retired (successor {})", s.short())
            }
            Standing::Retired { successor: None } => "retired".into(),
            Standing::Revoked { valid_through: 0 } => "revoked".into(),
            Standing::Revoked { valid_through } => {
                format!("compromised after seq {valid_through}")
            }
        }
    }
}

impl Member {
    pub fn is_node(&self) -> bool {
        self.roles.iter().any(|r| r.is_node())
    }
    pub fn is_operator(&self) -> bool {
        self.roles.contains(&Role::Operator)
    }
    pub fn is_active(&self) -> bool {
        self.standing == Standing::Active
    }
}

/// A versioned list of members. The federation key signs it (see
/// [`super::signed_roster`]); the core takes the current roster as a value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roster {
    pub version: u64,
    members: BTreeMap<NodeId, Member>,
    /// The units below the regions, and where each hangs.
    pub units: Units,
}

/// Why an author may not write a key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("author {0} is not in the roster")]
    UnknownAuthor(String),
    #[error("author {0} is revoked: none of its deltas are valid")]
    Revoked(String),
    #[error("author {author} was compromised after seq {valid_through}: seq {seq} is refused")]
    Compromised {
        author: String,
        valid_through: u64,
        seq: u64,
    },
    #[error("key {0} is retired and may not write; the node must run with its successor key")]
    Retired(String),
    #[error("{author} ({space}) may not write {key:?}: outside its key space")]
    OutsideSpace {
        author: String,
        /// The space it owns: `region fr`, `unit aleysk`, `hq`, `-`.
        space: String,
        key: String,
    },
}

impl Roster {
    pub fn new(version: u64, members: impl IntoIterator<Item = Member>) -> Self {
        Roster {
            version,
            members: members.into_iter().map(|m| (m.id, m)).collect(),
            units: Units::default(),
        }
    }

    /// The region a member's space belongs to: its own, or its unit's in
    /// the tree in force.
    pub fn region_of<'a>(&'a self, m: &'a Member) -> Option<&'a str> {
        match &m.unit {
            Some(u) => self.units.region_of(u),
            None => m.region.as_deref(),
        }
    }

    /// Whether `child` sits directly below `parent` in the tree: a region's
    /// node below HQ, a unit's below its region's or its parent unit's. A
    /// node expects each node below it to dial it.
    pub fn is_below(&self, child: &Member, parent: &Member) -> bool {
        match child.unit.as_deref().and_then(|u| self.units.above(u)) {
            Some(Above::Region(r)) => {
                parent.roles.contains(&Role::Region) && parent.region.as_deref() == Some(r)
            }
            Some(Above::Unit(u)) => parent.unit.as_deref() == Some(u),
            None => child.roles.contains(&Role::Region) && parent.roles.contains(&Role::Hq),
        }
    }

    /// Where a unit member sits now.
    pub fn place_of(&self, m: &Member) -> Option<Place<'_>> {
        self.units.place(m.unit.as_deref()?)
    }

    /// Where a member sits, as a path from HQ: `[]` for HQ's nodes,
    /// `[region]` for a region's, `[region, unit, …, its unit]` for a
    /// unit's (see [`units::next_hop`](super::units::next_hop)).
    pub fn path_of<'a>(&'a self, m: &'a Member) -> Vec<&'a str> {
        match self.place_of(m) {
            Some(p) => std::iter::once(p.region).chain(p.units).collect(),
            None => m.region.as_deref().into_iter().collect(),
        }
    }

    pub fn member(&self, id: &NodeId) -> Option<&Member> {
        self.members.get(id)
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn insert(&mut self, member: Member) {
        self.members.insert(member.id, member);
    }

    pub fn remove(&mut self, id: &NodeId) -> Option<Member> {
        self.members.remove(id)
    }

    /// The member called `name`: the active one, since a rotated key keeps
    /// its name beside its successor.
    pub fn by_name(&self, name: &str) -> Option<&Member> {
        let mut named = self.members.values().filter(|m| m.name == name);
        let first = named.next()?;
        if first.is_active() {
            return Some(first);
        }
        Some(named.find(|m| m.is_active()).unwrap_or(first))
    }

    /// The highest sequence number of `author`'s log that counts: 0 for a
    /// key not in the roster.
    pub fn valid_through(&self, author: &NodeId) -> u64 {
        self.member(author)
            .map_or(0, |m| m.standing.valid_through())
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Checks that `author`'s delta number `seq` may exist at all: the
    /// author is a member and `seq` is within what its standing allows.
    pub fn check_author(&self, author: &NodeId, seq: u64) -> Result<&Member, AuthorityError> {
        let member = self
            .member(author)
            .ok_or_else(|| AuthorityError::UnknownAuthor(author.short()))?;
        match member.standing {
            Standing::Revoked { valid_through: 0 } => {
                Err(AuthorityError::Revoked(member.name.clone()))
            }
            Standing::Revoked { valid_through } if seq > valid_through => {
                Err(AuthorityError::Compromised {
                    author: member.name.clone(),
                    valid_through,
                    seq,
                })
            }
            _ => Ok(member),
        }
    }

    /// Checks that `author`'s delta number `seq` may write `key`.
    pub fn authorize(&self, author: &NodeId, seq: u64, key: &str) -> Result<(), AuthorityError> {
        let member = self.check_author(author, seq)?;
        if may_write(member, key) {
            return Ok(());
        }
        Err(AuthorityError::OutsideSpace {
            author: member.name.clone(),
            space: space_of(member),
            key: key.chars().take(128).collect(),
        })
    }
}

fn space_of(m: &Member) -> String {
    match (&m.unit, &m.region) {
        (Some(u), _) if m.roles.contains(&Role::Unit) => format!("unit {u}"),
        (_, Some(r)) if m.roles.contains(&Role::Region) => format!("region {r}"),
        _ if m.roles.contains(&Role::Hq) => "hq".into(),
        _ => "-".into(),
    }
}

fn may_write(member: &Member, key: &str) -> bool {
    if let Some(rest) = key.strip_prefix("hq/") {
        return member.roles.contains(&Role::Hq) && !rest.is_empty();
    }
    if let Some(rest) = key.strip_prefix("regions/") {
        let Some((region, tail)) = rest.split_once('/') else {
            return false;
        };
        return !tail.is_empty()
            && member.roles.contains(&Role::Region)
            && member.region.as_deref() == Some(region);
    }
    if let Some(rest) = key.strip_prefix("units/") {
        let Some((unit, tail)) = rest.split_once('/') else {
            return false;
        };
        return !tail.is_empty()
            && member.roles.contains(&Role::Unit)
            && member.unit.as_deref() == Some(unit);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(n: u8, region: Option<&str>, roles: &[Role]) -> Member {
        Member {
            id: NodeId([n; 32]),
            name: format!("n{n}"),
            region: region.map(str::to_string),
            unit: None,
            roles: roles.iter().copied().collect(),
            tls: None,
            address: None,
            standing: Standing::Active,
        }
    }

    #[test]
    fn regions_write_only_their_own_space() {
        let r = Roster::new(
            1,
            [
                member(1, Some("fr"), &[Role::Region]),
                member(2, None, &[Role::Hq]),
            ],
        );
        let fr = NodeId([1; 32]);
        let hq = NodeId([2; 32]);
        assert!(r.authorize(&fr, 1, "regions/fr/reports/1").is_ok());
        assert!(r.authorize(&fr, 1, "regions/fra/x").is_err());
        assert!(r.authorize(&fr, 1, "regions/de/x").is_err());
        assert!(r.authorize(&fr, 1, "regions/fr/").is_err());
        assert!(r.authorize(&fr, 1, "hq/x").is_err());
        assert!(r.authorize(&hq, 1, "hq/x").is_ok());
        assert!(r.authorize(&hq, 1, "regions/fr/x").is_err());
        assert!(r.authorize(&hq, 1, "other/x").is_err());
        let op = Roster::new(1, [member(3, Some("fr"), &[Role::Operator])]);
        assert!(op.authorize(&NodeId([3; 32]), 1, "regions/fr/x").is_err());
        assert_eq!(
            r.authorize(&NodeId([9; 32]), 1, "hq/x"),
            Err(AuthorityError::UnknownAuthor(NodeId([9; 32]).short()))
        );
    }
}

#[cfg(test)]
mod tree_tests {
    use super::*;
    use crate::core::units::Above;

    /// HQ; region ru-altai; its units aleysk and biysk; aleysk-north below
    /// aleysk.
    fn tree() -> Roster {
        let node = |n: u8, region: Option<&str>, unit: Option<&str>, role: Role| Member {
            id: NodeId([n; 32]),
            name: format!("n{n}"),
            region: region.map(Into::into),
            unit: unit.map(Into::into),
            roles: [role].into_iter().collect(),
            tls: None,
            address: None,
            standing: Standing::Active,
        };
        let mut r = Roster::new(
            1,
            [
                node(1, None, None, Role::Hq),
                node(2, Some("ru-altai"), None, Role::Region),
                node(3, None, Some("aleysk"), Role::Unit),
                node(4, None, Some("biysk"), Role::Unit),
                node(5, None, Some("aleysk-north"), Role::Unit),
            ],
        );
        r.units.insert("aleysk", Above::Region("ru-altai".into()));
        r.units.insert("biysk", Above::Region("ru-altai".into()));
        r.units.insert("aleysk-north", Above::Unit("aleysk".into()));
        r
    }

    #[test]
    fn each_level_writes_its_own_space_and_no_other() {
        let r = tree();
        let spaces = [
            "hq/x",
            "regions/ru-altai/x",
            "units/aleysk/x",
            "units/biysk/x",
            "units/aleysk-north/x",
        ];
        // Node n writes exactly spaces[n - 1]: not its parent's, not its
        // children's, not a sibling's.
        for n in 1..=5u8 {
            for (i, key) in spaces.iter().enumerate() {
                let ok = r.authorize(&NodeId([n; 32]), 1, key).is_ok();
                assert_eq!(ok, i + 1 == n as usize, "n{n} writing {key}");
            }
        }
        let unit = NodeId([3; 32]);
        assert!(r.authorize(&unit, 1, "units/aleysk/").is_err());
        assert!(r.authorize(&unit, 1, "units/aleysk").is_err());
        assert!(r.authorize(&unit, 1, "units/aleyskx/y").is_err());
        assert!(r
            .authorize(&unit, 1, "regions/ru-altai/units/aleysk/y")
            .is_err());
        assert_eq!(
            r.authorize(&unit, 1, "units/biysk/reports/2026-09"),
            Err(AuthorityError::OutsideSpace {
                author: "n3".into(),
                space: "unit aleysk".into(),
                key: "units/biysk/reports/2026-09".into(),
            })
        );
    }

    #[test]
    fn a_moved_unit_keeps_its_space_and_joins_its_new_region() {
        let mut r = tree();
        let unit = NodeId([3; 32]);
        assert_eq!(r.region_of(r.member(&unit).unwrap()), Some("ru-altai"));
        r.units
            .insert("aleysk", Above::Region("ru-kemerovo".into()));
        let m = r.member(&unit).unwrap();
        assert_eq!(r.region_of(m), Some("ru-kemerovo"));
        assert_eq!(
            r.place_of(&r.member(&NodeId([5; 32])).unwrap().clone())
                .unwrap()
                .region,
            "ru-kemerovo"
        );
        assert!(r.authorize(&unit, 1, "units/aleysk/x").is_ok());
    }

    #[test]
    fn each_node_sits_below_its_parent_only() {
        let r = tree();
        let m = |n: u8| r.member(&NodeId([n; 32])).unwrap();
        let below: Vec<(u8, u8)> = (1..=5)
            .flat_map(|c| (1..=5).map(move |p| (c, p)))
            .filter(|&(c, p)| r.is_below(m(c), m(p)))
            .collect();
        assert_eq!(below, [(2, 1), (3, 2), (4, 2), (5, 3)]);
    }
}

#[cfg(test)]
mod standing_tests {
    use super::*;

    fn fr(standing: Standing) -> Roster {
        let m = Member {
            id: NodeId([1; 32]),
            name: "office-fr".into(),
            region: Some("fr".into()),
            unit: None,
            roles: [Role::Region].into_iter().collect(),
            tls: None,
            address: None,
            standing,
        };
        Roster::new(1, [m])
    }

    #[test]
    fn revocation_and_compromise_bound_the_valid_log() {
        let id = NodeId([1; 32]);
        let key = "regions/fr/x";
        let revoked = fr(Standing::Revoked { valid_through: 0 });
        assert_eq!(
            revoked.authorize(&id, 1, key),
            Err(AuthorityError::Revoked("office-fr".into()))
        );
        let compromised = fr(Standing::Revoked { valid_through: 5 });
        assert!(compromised.authorize(&id, 5, key).is_ok());
        assert!(matches!(
            compromised.authorize(&id, 6, key),
            Err(AuthorityError::Compromised { seq: 6, .. })
        ));
        let retired = fr(Standing::Retired { successor: None });
        assert!(retired.authorize(&id, 1_000, key).is_ok());
        assert_eq!(compromised.valid_through(&id), 5);
        assert_eq!(retired.valid_through(&id), u64::MAX);
        assert_eq!(retired.valid_through(&NodeId([9; 32])), 0);
    }
}
