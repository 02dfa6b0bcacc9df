//! The history clients record, and the checker run on the nodes' final
//! state, in the manner of Jepsen's set-full checker: a write is either
//! acknowledged (it must be everywhere at the end), attempted without an
//! answer (it may or may not be), or never made (it must be nowhere).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Default, Debug)]
pub struct History {
    /// Every put attempted: key -> value. Keys are never reused.
    pub attempted: BTreeMap<String, String>,
    /// Puts the node acknowledged.
    pub acked: BTreeSet<String>,
    /// Deletes attempted, and those acknowledged.
    pub delete_attempted: BTreeSet<String>,
    pub deleted: BTreeSet<String>,
    /// Each acknowledged operation's node and seq in that node's log.
    pub seq_of: BTreeMap<String, (usize, u64)>,
    /// Acknowledged operations lost with a node's disk before any peer
    /// held them: from then on, like writes never answered.
    pub lost_with_disk: usize,
}

impl History {
    /// Node `node`'s disk was lost when no other node held its log beyond
    /// `held`: what it acknowledged after that existed only there.
    pub fn disk_lost(&mut self, node: usize, held: u64) {
        let gone: Vec<String> = (self.seq_of.iter())
            .filter(|(_, (n, seq))| *n == node && *seq > held)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.seq_of.remove(&key);
            self.lost_with_disk += 1;
            // A put becomes unanswered; so does a delete, its key's put
            // staying acknowledged (present or absent, both allowed).
            if !self.deleted.remove(&key) {
                self.acked.remove(&key);
            }
        }
    }
}

/// One node's state at the end.
#[derive(Debug, Clone)]
pub struct Dump {
    pub node: String,
    /// Live records (tombstones hidden): key -> value.
    pub records: BTreeMap<String, String>,
    /// The frontier digest: which deltas the node holds.
    pub digest: String,
    /// Deltas the node refused. An honest federation refuses none.
    pub quarantined: u64,
}

/// Every violation found, or `Ok` with nothing to report.
pub fn check(h: &History, dumps: &[Dump]) -> Result<(), String> {
    let mut errors = Vec::new();
    for d in dumps {
        for key in &h.acked {
            let deletion_pending = h.delete_attempted.contains(key) && !h.deleted.contains(key);
            match d.records.get(key) {
                Some(v) if v != &h.attempted[key] => errors.push(format!(
                    "{}: {key} holds {v:?}, written {:?}",
                    d.node, h.attempted[key]
                )),
                None if !h.deleted.contains(key) && !deletion_pending => {
                    errors.push(format!("{}: acknowledged write {key} is missing", d.node))
                }
                _ => {}
            }
        }
        for key in &h.deleted {
            if d.records.contains_key(key) {
                errors.push(format!(
                    "{}: {key} was deleted (acknowledged) but is back",
                    d.node
                ));
            }
        }
        for (key, v) in &d.records {
            match h.attempted.get(key) {
                None => errors.push(format!("{}: {key} was never written", d.node)),
                Some(w) if w != v => {
                    errors.push(format!("{}: {key} holds {v:?}, never written", d.node))
                }
                _ => {}
            }
        }
        if d.quarantined > 0 {
            errors.push(format!(
                "{}: refused {} deltas of honest nodes",
                d.node, d.quarantined
            ));
        }
    }
    if let Some(first) = dumps.first() {
        for d in &dumps[1..] {
            if d.digest != first.digest || d.records != first.records {
                errors.push(format!(
                    "{} and {} differ: digests {} / {}, {} / {} records",
                    first.node,
                    d.node,
                    first.digest,
                    d.digest,
                    first.records.len(),
                    d.records.len()
                ));
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let total = errors.len();
    errors.truncate(12);
    Err(format!(
        "{total} violations, first:\n  {}",
        errors.join("\n  ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut h = History::default();
        for (k, v) in [("a", "1"), ("b", "2"), ("c", "3")] {
            h.attempted.insert(k.into(), v.into());
        }
        h.acked.extend(["a".to_string(), "b".to_string()]);
        h.delete_attempted.insert("b".into());
        h.deleted.insert("b".into());
        h
    }

    fn dump(node: &str, records: &[(&str, &str)]) -> Dump {
        Dump {
            node: node.into(),
            records: records
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            digest: "d".into(),
            quarantined: 0,
        }
    }

    #[test]
    fn the_checker_accepts_a_correct_end_and_names_each_violation() {
        let h = history();
        // `c` was attempted without an answer: present or not, both fine.
        assert!(check(&h, &[dump("x", &[("a", "1")]), dump("y", &[("a", "1")])]).is_ok());
        assert!(check(&h, &[dump("x", &[("a", "1"), ("c", "3")])]).is_ok());
        let lost = check(&h, &[dump("x", &[])]).unwrap_err();
        assert!(lost.contains("acknowledged write a is missing"), "{lost}");
        let back = check(&h, &[dump("x", &[("a", "1"), ("b", "2")])]).unwrap_err();
        assert!(back.contains("b was deleted"), "{back}");
        let invented = check(&h, &[dump("x", &[("a", "1"), ("z", "9")])]).unwrap_err();
        assert!(invented.contains("z was never written"), "{invented}");
        let altered = check(&h, &[dump("x", &[("a", "9")])]).unwrap_err();
        assert!(altered.contains("holds \"9\""), "{altered}");
        let split = check(
            &h,
            &[
                dump("x", &[("a", "1")]),
                dump("y", &[("a", "1"), ("c", "3")]),
            ],
        );
        assert!(split.unwrap_err().contains("x and y differ"));
    }
}
