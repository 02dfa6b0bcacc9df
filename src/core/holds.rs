//! Partial replication: which authors' logs a node holds.
//!
//! A node holds every log (`Holds::All`, the default) or only those of its
//! own branch of the tree (`Holds::Tree`): the nodes above it (HQ, its
//! region, the units between), itself and everything below it, and its
//! siblings (the nodes at its own level under the same parent). So a
//! municipal centre on a 64 kbit/s line holds HQ, its region and the
//! municipalities beside it, not the other countries' data.
//!
//! Which authors that is follows from the roster in force and the holder's
//! place in it, so both ends of a link compute the same set from a flag in
//! the digest: a subscription is never a list on the wire. A newer roster
//! that moves a unit moves what its nodes hold from then on; logs already
//! held stay (they are valid and verified) but are no longer exchanged.
//!
//! A link's exchange covers the authors both ends hold ([`Scope::and`]):
//! digests, frontiers, pushes and lag are all taken over that scope, so an
//! idle check between a partial node and a full one is still one round
//! trip.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::frontier::{Frontier, FrontierDigest};
use super::ids::NodeId;
use super::roster::{Member, Roster};

/// What a node is configured to hold (`[sync] holds`, spelt `all` or
/// `tree`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Holds {
    /// Every author's log.
    #[default]
    All,
    /// Its branch of the tree: above, itself and below, and its siblings.
    Tree,
}

impl Holds {
    pub fn as_str(self) -> &'static str {
        match self {
            Holds::All => "all",
            Holds::Tree => "tree",
        }
    }
}

/// A set of authors: everyone, or only those listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// `None`: every author.
    only: Option<Arc<BTreeSet<NodeId>>>,
}

impl Scope {
    pub fn all() -> Scope {
        Scope { only: None }
    }

    /// What `holder` holds under `holds` and `roster`. A holder the roster
    /// does not place holds its own log only.
    pub fn of(roster: &Roster, holder: &NodeId, holds: Holds) -> Scope {
        if holds == Holds::All {
            return Scope::all();
        }
        let mut only = BTreeSet::from([*holder]);
        if let Some(mine) = roster.member(holder).and_then(|m| path(roster, m)) {
            for m in roster.members() {
                if path(roster, m).is_some_and(|theirs| related(&mine, &theirs)) {
                    only.insert(m.id);
                }
            }
        }
        Scope {
            only: Some(Arc::new(only)),
        }
    }

    pub fn is_all(&self) -> bool {
        self.only.is_none()
    }

    pub fn contains(&self, author: &NodeId) -> bool {
        self.only.as_ref().is_none_or(|s| s.contains(author))
    }

    /// The authors in both.
    pub fn and(&self, other: &Scope) -> Scope {
        match (&self.only, &other.only) {
            (None, _) => other.clone(),
            (_, None) => self.clone(),
            (Some(a), Some(b)) => Scope {
                only: Some(Arc::new(a.intersection(b).copied().collect())),
            },
        }
    }

    /// The authors listed, or `None` for everyone.
    pub fn authors(&self) -> Option<&BTreeSet<NodeId>> {
        self.only.as_deref()
    }

    /// `f` without the authors outside this scope.
    pub fn restrict(&self, f: &Frontier) -> Frontier {
        if self.is_all() {
            return f.clone();
        }
        let mut out = Frontier::new();
        for (a, h) in f.iter().filter(|(a, _)| self.contains(a)) {
            out.set(*a, *h);
        }
        out
    }

    /// The digest of `f` over this scope; `whole` is `f`'s own digest, so
    /// an unrestricted scope costs nothing.
    pub fn digest(&self, f: &Frontier, whole: FrontierDigest) -> FrontierDigest {
        if self.is_all() {
            return whole;
        }
        self.restrict(f).digest()
    }
}

/// A member's place as a path from HQ: `[]` for HQ, `[region]` for a
/// region's node, `[region, unit, …]` for a unit's. `None` for a unit the
/// tree does not place.
fn path<'a>(roster: &'a Roster, m: &'a Member) -> Option<Vec<&'a str>> {
    if m.unit.is_some() {
        let place = roster.place_of(m)?;
        let mut p = vec![place.region];
        p.extend(place.units);
        return Some(p);
    }
    Some(m.region.as_deref().into_iter().collect())
}

/// Whether a holder at `mine` holds an author at `theirs`: one is above
/// the other (or they share a place), or they are siblings.
fn related(mine: &[&str], theirs: &[&str]) -> bool {
    let siblings = !mine.is_empty()
        && mine.len() == theirs.len()
        && mine[..mine.len() - 1] == theirs[..theirs.len() - 1];
    mine.starts_with(theirs) || theirs.starts_with(mine) || siblings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::roster::{Role, Standing};
    use crate::core::units::Above;

    fn member(n: u8, region: Option<&str>, unit: Option<&str>, role: Role) -> Member {
        Member {
            id: NodeId([n; 32]),
            name: format!("n{n}"),
            region: region.map(Into::into),
            unit: unit.map(Into::into),
            roles: [role].into(),
            tls: None,
            address: None,
            standing: Standing::Active,
        }
    }

    /// HQ (1); regions ru (2) and fr (3); units a (4) and b (5) under ru,
    /// c (6) under a, d (7) under fr.
    fn roster() -> Roster {
        let mut r = Roster::new(
            1,
            [
                member(1, None, None, Role::Hq),
                member(2, Some("ru"), None, Role::Region),
                member(3, Some("fr"), None, Role::Region),
                member(4, None, Some("a"), Role::Unit),
                member(5, None, Some("b"), Role::Unit),
                member(6, None, Some("c"), Role::Unit),
                member(7, None, Some("d"), Role::Unit),
            ],
        );
        r.units.insert("a", Above::Region("ru".into()));
        r.units.insert("b", Above::Region("ru".into()));
        r.units.insert("c", Above::Unit("a".into()));
        r.units.insert("d", Above::Region("fr".into()));
        r
    }

    fn held(holder: u8) -> Vec<u8> {
        let s = Scope::of(&roster(), &NodeId([holder; 32]), Holds::Tree);
        (1..=7).filter(|n| s.contains(&NodeId([*n; 32]))).collect()
    }

    #[test]
    fn a_unit_holds_its_branch_and_its_siblings() {
        assert_eq!(held(4), vec![1, 2, 4, 5, 6]);
        assert_eq!(held(6), vec![1, 2, 4, 6]);
        assert_eq!(held(7), vec![1, 3, 7]);
    }

    #[test]
    fn a_region_holds_its_subtree_and_the_other_regions() {
        assert_eq!(held(2), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(held(1), vec![1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn everything_under_all_and_only_oneself_when_unplaced() {
        let r = roster();
        assert!(Scope::of(&r, &NodeId([4; 32]), Holds::All).is_all());
        let stranger = Scope::of(&r, &NodeId([9; 32]), Holds::Tree);
        assert_eq!(stranger.authors().unwrap().len(), 1);
        assert!(stranger.contains(&NodeId([9; 32])));
    }

    #[test]
    fn a_link_covers_what_both_ends_hold() {
        let r = roster();
        let (c, d) = (NodeId([6; 32]), NodeId([7; 32]));
        let both = Scope::of(&r, &c, Holds::Tree).and(&Scope::of(&r, &d, Holds::Tree));
        assert_eq!(both.authors().unwrap().len(), 1); // HQ only
        assert_eq!(Scope::all().and(&both), both);
    }
}
