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
}

impl Member {
    pub fn is_node(&self) -> bool {
        self.roles.iter().any(|r| r.is_node())
    }
    pub fn is_operator(&self) -> bool {
        self.roles.contains(&Role::Operator)
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

    pub fn by_name(&self, name: &str) -> Option<&Member> {
        self.members.values().find(|m| m.name == name)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Checks that `author` may write `key`.
    pub fn authorize(&self, author: &NodeId, key: &str) -> Result<(), AuthorityError> {
        let member = self
            .member(author)
            .ok_or_else(|| AuthorityError::UnknownAuthor(author.short()))?;
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
        assert!(r.authorize(&fr, "regions/fr/reports/1").is_ok());
        assert!(r.authorize(&fr, "regions/fra/x").is_err());
        assert!(r.authorize(&fr, "regions/de/x").is_err());
        assert!(r.authorize(&fr, "regions/fr/").is_err());
        assert!(r.authorize(&fr, "hq/x").is_err());
        assert!(r.authorize(&hq, "hq/x").is_ok());
        assert!(r.authorize(&hq, "regions/fr/x").is_err());
        assert!(r.authorize(&hq, "other/x").is_err());
        let op = Roster::new(1, [member(3, Some("fr"), &[Role::Operator])]);
        assert!(op.authorize(&NodeId([3; 32]), "regions/fr/x").is_err());
        assert_eq!(
            r.authorize(&NodeId([9; 32]), "hq/x"),
            Err(AuthorityError::UnknownAuthor(NodeId([9; 32]).short()))
        );
    }
}
