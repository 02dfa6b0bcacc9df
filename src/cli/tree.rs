//! The organisation's tree in the roster: placing a new unit, moving one,
//! and printing the whole tree with each space's nodes.

use anyhow::{anyhow, bail};
use clap::Args;
use serde_json::{json, Value};

use fedsync::core::{Above, Member, Role, Roster};

use super::print_json;

/// What a unit hangs from: a region or another unit.
#[derive(Args, Debug)]
pub struct AboveArgs {
    /// The region the unit hangs from.
    #[arg(
        long,
        conflicts_with = "parent_unit",
        required_unless_present = "parent_unit"
    )]
    region: Option<String>,
    /// The unit it hangs from, instead.
    #[arg(long)]
    parent_unit: Option<String>,
}

impl AboveArgs {
    pub fn above(&self) -> anyhow::Result<Above> {
        above(&self.region, &self.parent_unit)?
            .ok_or_else(|| anyhow!("give --region or --parent-unit"))
    }
}

fn above(region: &Option<String>, parent: &Option<String>) -> anyhow::Result<Option<Above>> {
    Ok(match (region, parent) {
        (Some(r), None) => Some(Above::Region(r.clone())),
        (None, Some(u)) => Some(Above::Unit(u.clone())),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("give --region or --parent-unit, not both"),
    })
}

/// For `roster add`: the unit a member writes for, and where a new unit
/// hangs (`None` when it must already be in the tree).
pub fn unit_of(
    role: Role,
    unit: &Option<String>,
    region: &Option<String>,
    parent: &Option<String>,
) -> anyhow::Result<Option<(String, Option<Above>)>> {
    match (role, unit) {
        (Role::Unit, Some(u)) => Ok(Some((u.clone(), above(region, parent)?))),
        (Role::Unit, None) => bail!("a unit node needs --unit"),
        (_, Some(_)) => bail!("--unit is for --role unit"),
        (_, None) if parent.is_some() => bail!("--parent-unit is for --role unit"),
        (_, None) => Ok(None),
    }
}

/// Puts `unit` in the tree below `above`, or checks that it is there
/// already (below `above`, if given).
pub fn place_unit(r: &mut Roster, unit: &str, above: Option<Above>) -> anyhow::Result<()> {
    match (r.units.above(unit), above) {
        (None, Some(a)) => {
            r.units.insert(unit, a);
            Ok(())
        }
        (None, None) => bail!(
            "unit {unit:?} is not in the tree yet: give --region or --parent-unit for where it hangs"
        ),
        (Some(now), Some(a)) if *now != a => bail!(
            "unit {unit:?} hangs from {}; use `roster move-unit` to move it",
            describe(now)
        ),
        (Some(_), _) => Ok(()),
    }
}

pub fn move_unit(r: &mut Roster, unit: &str, to: Above) -> anyhow::Result<()> {
    if !r.units.contains(unit) {
        bail!("unit {unit:?} is not in the tree");
    }
    if let Above::Unit(p) = &to {
        if p == unit || r.units.is_within(p, unit) {
            bail!("unit {unit:?} cannot hang from {p:?}, which is itself or below it");
        }
    }
    r.units.insert(unit, to);
    Ok(())
}

fn describe(a: &Above) -> String {
    match a {
        Above::Region(r) => format!("region {r}"),
        Above::Unit(u) => format!("unit {u}"),
    }
}

/// The nodes writing one space, by name; inactive ones say so.
fn nodes<'a>(r: &'a Roster, of: impl Fn(&Member) -> bool + 'a) -> Vec<String> {
    r.members()
        .filter(|m| m.is_node() && of(m))
        .map(|m| match m.is_active() {
            true => m.name.clone(),
            false => format!("{} ({})", m.name, m.standing.describe()),
        })
        .collect()
}

fn unit_json(r: &Roster, unit: &str) -> Value {
    let above = Above::Unit(unit.into());
    json!({
        "unit": unit,
        "nodes": nodes(r, |m| m.unit.as_deref() == Some(unit)),
        "units": r.units.children(&above).map(|u| unit_json(r, u)).collect::<Vec<_>>(),
    })
}

/// The regions: every member's and every region a unit hangs from.
fn regions(r: &Roster) -> std::collections::BTreeSet<&str> {
    let of_members = r.members().filter_map(|m| m.region.as_deref());
    let of_units = r.units.iter().filter_map(|(_, a)| match a {
        Above::Region(r) => Some(r.as_str()),
        Above::Unit(_) => None,
    });
    of_members.chain(of_units).collect()
}

pub fn tree_json(r: &Roster) -> Value {
    let regions: Vec<Value> = regions(r)
        .into_iter()
        .map(|region| {
            let above = Above::Region(region.into());
            json!({
                "region": region,
                "nodes": nodes(r, |m| m.roles.contains(&Role::Region) && m.region.as_deref() == Some(region)),
                "units": r.units.children(&above).map(|u| unit_json(r, u)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "version": r.version,
        "hq": nodes(r, |m| m.roles.contains(&Role::Hq)),
        "regions": regions,
    })
}

pub fn print(r: &Roster, as_json: bool) {
    let tree = tree_json(r);
    if as_json {
        print_json(&tree);
        return;
    }
    print!("{}", render(&tree));
}

/// The tree as indented lines: `hq: hq`, then `ru-altai: office-altai`,
/// then `  aleysk: centre-aleysk` below it.
pub fn render(tree: &Value) -> String {
    fn names(v: &Value) -> String {
        let n: Vec<&str> = v["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if n.is_empty() {
            "(no node)".into()
        } else {
            n.join(", ")
        }
    }
    fn units(out: &mut String, v: &Value, depth: usize) {
        for u in v["units"].as_array().into_iter().flatten() {
            let name = u["unit"].as_str().unwrap_or("?");
            out.push_str(&format!("{}{name}: {}\n", "  ".repeat(depth), names(u)));
            units(out, u, depth + 1);
        }
    }
    let mut out = format!("roster version {}\n", tree["version"]);
    let hq = json!({ "nodes": tree["hq"] });
    out.push_str(&format!("hq: {}\n", names(&hq)));
    for r in tree["regions"].as_array().into_iter().flatten() {
        let name = r["region"].as_str().unwrap_or("?");
        out.push_str(&format!("  {name}: {}\n", names(r)));
        units(&mut out, r, 2);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsync::core::{NodeId, Standing};
    use std::collections::BTreeSet;

    fn node(n: u8, name: &str, region: Option<&str>, unit: Option<&str>, role: Role) -> Member {
        Member {
            id: NodeId([n; 32]),
            name: name.into(),
            region: region.map(Into::into),
            unit: unit.map(Into::into),
            roles: BTreeSet::from([role]),
            tls: Some([n; 32]),
            address: None,
            standing: Standing::Active,
        }
    }

    #[test]
    fn the_tree_prints_each_space_below_its_parent() {
        let mut r = Roster::new(
            3,
            [
                node(1, "hq", None, None, Role::Hq),
                node(2, "office-altai", Some("ru-altai"), None, Role::Region),
                node(3, "centre-aleysk", None, Some("aleysk"), Role::Unit),
                node(4, "office-kem", Some("ru-kem"), None, Role::Region),
            ],
        );
        place_unit(&mut r, "aleysk", Some(Above::Region("ru-altai".into()))).unwrap();
        place_unit(&mut r, "north", Some(Above::Unit("aleysk".into()))).unwrap();
        assert_eq!(
            render(&tree_json(&r)),
            "roster version 3\nhq: hq\n  ru-altai: office-altai\n    aleysk: centre-aleysk\n      \
             north: (no node)\n  ru-kem: office-kem\n"
        );
        // A move below its own descendant would make a cycle.
        assert!(move_unit(&mut r, "aleysk", Above::Unit("north".into())).is_err());
        assert!(place_unit(&mut r, "aleysk", Some(Above::Region("ru-kem".into()))).is_err());
        move_unit(&mut r, "aleysk", Above::Region("ru-kem".into())).unwrap();
        assert_eq!(r.units.region_of("north"), Some("ru-kem"));
        assert!(place_unit(&mut r, "new", None).is_err());
    }
}
