//! The roster: who belongs to the federation and what each member may write.
//!
//! Authority lives in the key: `regions/<region>/…` is writable only by
//! members of that region, `hq/…` only by members with the `hq` role. Every
//! receiver checks this for every delta, so a relay cannot launder a write
//! into a space its author does not own.

use std::collections::{BTreeMap, BTreeSet};

use super::ids::NodeId;

/// What a member is trusted to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Writes `hq/…`.
    Hq,
    /// A regional office; writes `regions/<its region>/…`.
    Region,
    /// A person with the CLI: may call a node's client service over mTLS,
    /// never authors deltas and never syncs as a peer.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hq => "hq",
            Role::Region => "region",
            Role::Operator => "operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Hq, Role::Region, Role::Operator]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// Whether this role belongs to a node that syncs with peers.
    pub fn is_node(self) -> bool {
        matches!(self, Role::Hq | Role::Region)
    }
}

/// One roster entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub name: String,
    /// The region whose key space this member writes, if any.
    pub region: Option<String>,
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
    #[error("{author} ({region}) may not write {key:?}: outside its key space")]
    OutsideSpace {
        author: String,
        region: String,
        key: String,
    },
}

impl Roster {
    pub fn new(version: u64, members: impl IntoIterator<Item = Member>) -> Self {
        Roster {
            version,
            members: members.into_iter().map(|m| (m.id, m)).collect(),
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
            region: member.region.clone().unwrap_or_else(|| "-".into()),
            key: key.chars().take(128).collect(),
        })
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
mod standing_tests {
    use super::*;

    fn fr(standing: Standing) -> Roster {
        let m = Member {
            id: NodeId([1; 32]),
            name: "office-fr".into(),
            region: Some("fr".into()),
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
