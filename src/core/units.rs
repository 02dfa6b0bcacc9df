//! The organisation's tree below the regions: units (a regional centre's
//! municipal centres, and theirs below them), as the roster records them.
//!
//! A unit's key space is `units/<unit>/…`, named by the unit alone and not
//! by its place in the tree. That is deliberate: a newer roster may move a
//! unit to another region or under another unit (a merge is a move under
//! the unit it joins; a split adds a unit), and every delta a unit signed
//! before the move must stay valid on every node, including those that
//! receive it only afterwards. Authority is checked on receipt against the
//! roster in force, so a space that named the region would turn a moved
//! unit's history into refusals. Where a unit sits is the tree's business,
//! and reports count where the roster in force puts them.

use std::collections::BTreeMap;

/// How far below its region a unit may sit: region → unit → … (4 levels).
/// It bounds every walk up the tree, and so rules out cycles.
pub const UNIT_DEPTH_MAX: usize = 4;

/// What a unit hangs from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Above {
    Region(String),
    Unit(String),
}

/// A unit's place: its region, then the units from the one below the
/// region down to the unit itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place<'a> {
    pub region: &'a str,
    pub units: Vec<&'a str>,
}

/// Why a tree does not hold together.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("unit {unit:?} hangs from unit {parent:?}, which is not in the roster")]
    NoParent { unit: String, parent: String },
    #[error("unit {0:?} is more than {UNIT_DEPTH_MAX} levels below its region, or in a cycle")]
    TooDeep(String),
}

/// Every unit and what it hangs from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Units {
    above: BTreeMap<String, Above>,
}

impl Units {
    pub fn insert(&mut self, unit: impl Into<String>, above: Above) {
        self.above.insert(unit.into(), above);
    }

    pub fn remove(&mut self, unit: &str) -> Option<Above> {
        self.above.remove(unit)
    }

    pub fn above(&self, unit: &str) -> Option<&Above> {
        self.above.get(unit)
    }

    pub fn contains(&self, unit: &str) -> bool {
        self.above.contains_key(unit)
    }

    /// Units by name, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Above)> {
        self.above.iter().map(|(u, a)| (u.as_str(), a))
    }

    pub fn len(&self) -> usize {
        self.above.len()
    }

    pub fn is_empty(&self) -> bool {
        self.above.is_empty()
    }

    /// Where `unit` sits, or `None` for a unit not in the tree (or one that
    /// breaks its rules, which a signed roster never holds).
    pub fn place(&self, unit: &str) -> Option<Place<'_>> {
        let (mut name, mut above) = self.above.get_key_value(unit)?;
        let mut units = vec![name.as_str()];
        loop {
            match above {
                Above::Region(r) => {
                    units.reverse();
                    return Some(Place { region: r, units });
                }
                Above::Unit(parent) => {
                    if units.len() == UNIT_DEPTH_MAX {
                        return None;
                    }
                    (name, above) = self.above.get_key_value(parent.as_str())?;
                    units.push(name);
                }
            }
        }
    }

    /// The region `unit` belongs to in this tree.
    pub fn region_of(&self, unit: &str) -> Option<&str> {
        self.place(unit).map(|p| p.region)
    }

    /// Whether `unit` is `ancestor` or sits somewhere below it.
    pub fn is_within(&self, unit: &str, ancestor: &str) -> bool {
        self.place(unit)
            .is_some_and(|p| p.units.contains(&ancestor))
    }

    /// The units hanging directly from `above`, by name.
    pub fn children<'a>(&'a self, above: &'a Above) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(_, a)| *a == above)
            .map(|(u, _)| u)
    }

    /// Every parent exists and no unit is deeper than [`UNIT_DEPTH_MAX`].
    pub fn check(&self) -> Result<(), TreeError> {
        for (unit, above) in self.iter() {
            if let Above::Unit(parent) = above {
                if !self.contains(parent) {
                    return Err(TreeError::NoParent {
                        unit: unit.into(),
                        parent: parent.clone(),
                    });
                }
            }
            if self.place(unit).is_none() {
                return Err(TreeError::TooDeep(unit.into()));
            }
        }
        Ok(())
    }
}

/// The place one step from `from` towards `to` along the tree, each place
/// a path from HQ (`[]`, `[region]`, `[region, unit, …]`): down into
/// `to`'s branch if it lies below `from`, else up to `from`'s parent.
/// `None` when they are the same place.
pub fn next_hop<'p, T: PartialEq>(from: &'p [T], to: &'p [T]) -> Option<&'p [T]> {
    if from == to {
        None
    } else if to.starts_with(from) {
        Some(&to[..from.len() + 1])
    } else {
        Some(&from[..from.len() - 1])
    }
}

/// The key prefix a unit's nodes write.
pub fn unit_space(unit: &str) -> String {
    format!("units/{unit}/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Units {
        let mut t = Units::default();
        t.insert("aleysk", Above::Region("ru-altai".into()));
        t.insert("biysk", Above::Region("ru-altai".into()));
        t.insert("aleysk-north", Above::Unit("aleysk".into()));
        t
    }

    #[test]
    fn the_next_hop_goes_down_into_a_branch_and_up_out_of_one() {
        let (hq, altai, aleysk, north, biysk, kem): (&[&str], _, _, _, _, _) = (
            &[],
            &["ru-altai"][..],
            &["ru-altai", "aleysk"][..],
            &["ru-altai", "aleysk", "north"][..],
            &["ru-altai", "biysk"][..],
            &["ru-kem"][..],
        );
        assert_eq!(next_hop(hq, north), Some(altai));
        assert_eq!(next_hop(altai, north), Some(aleysk));
        assert_eq!(next_hop(aleysk, north), Some(north));
        assert_eq!(next_hop(north, hq), Some(aleysk));
        assert_eq!(next_hop(aleysk, biysk), Some(altai));
        assert_eq!(next_hop(biysk, kem), Some(altai));
        assert_eq!(next_hop(altai, kem), Some(hq));
        assert_eq!(next_hop(aleysk, aleysk), None);
        assert_eq!(next_hop(hq, hq), None);
    }

    #[test]
    fn places_follow_the_tree() {
        let t = tree();
        assert!(t.check().is_ok());
        assert_eq!(
            t.place("aleysk-north"),
            Some(Place {
                region: "ru-altai",
                units: vec!["aleysk", "aleysk-north"]
            })
        );
        assert_eq!(t.region_of("biysk"), Some("ru-altai"));
        assert!(t.is_within("aleysk-north", "aleysk"));
        assert!(!t.is_within("biysk", "aleysk"));
        assert_eq!(t.place("nowhere"), None);
        let region = Above::Region("ru-altai".into());
        assert_eq!(t.children(&region).collect::<Vec<_>>(), ["aleysk", "biysk"]);
    }

    #[test]
    fn missing_parents_cycles_and_depth_are_refused() {
        let mut t = tree();
        t.insert("orphan", Above::Unit("gone".into()));
        assert!(matches!(t.check(), Err(TreeError::NoParent { .. })));

        let mut t = tree();
        t.insert("a", Above::Unit("b".into()));
        t.insert("b", Above::Unit("a".into()));
        assert!(matches!(t.check(), Err(TreeError::TooDeep(_))));

        let mut t = Units::default();
        t.insert("u0", Above::Region("r".into()));
        for d in 1..UNIT_DEPTH_MAX {
            t.insert(format!("u{d}"), Above::Unit(format!("u{}", d - 1)));
        }
        assert!(t.check().is_ok(), "{UNIT_DEPTH_MAX} levels are allowed");
        t.insert("deeper", Above::Unit(format!("u{}", UNIT_DEPTH_MAX - 1)));
        assert_eq!(t.check(), Err(TreeError::TooDeep("deeper".into())));
    }
}
