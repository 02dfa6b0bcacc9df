//! A report's history: the chain of revisions, each naming the one it
//! superseded by author, seq and hash, walked back and checked link by
//! link.

use super::Report;
use crate::core::delta::SignedDelta;
use crate::core::store::Store;

/// One step back along a report's supersede chain.
pub enum Back {
    /// The revision `cur` superseded.
    Revision(SignedDelta),
    /// `cur` is the first revision.
    First,
    /// The chain cannot be followed: why.
    Broken(String),
}

/// The revision `cur` names as superseded, checked: it must be held, with
/// the hash named, at the same key.
pub fn previous<S: Store>(store: &S, cur: &SignedDelta) -> Result<Back, S::Error> {
    let prev = match Report::decode(cur) {
        Ok(r) => r.supersedes,
        Err(e) => {
            return Ok(Back::Broken(format!(
                "cannot follow the report history past seq {}: {e}",
                cur.seq()
            )))
        }
    };
    let Some(prev) = prev else {
        return Ok(Back::First);
    };
    Ok(match store.delta(&prev.author, prev.seq)? {
        Some(d) if d.hash() == prev.hash && d.key() == cur.key() => Back::Revision(d),
        Some(_) => Back::Broken(format!(
            "the report history is broken at seq {}: a different delta is held there",
            prev.seq
        )),
        None => Back::Broken(format!(
            "revision seq {} of {} is not held here",
            prev.seq,
            prev.author.short()
        )),
    })
}

/// A report's revisions, newest first: at most `limit` of them and
/// `max_bytes` of reports; and why the history stops early, if it does.
pub fn history<S: Store>(
    store: &S,
    key: &str,
    limit: usize,
    max_bytes: usize,
) -> Result<(Vec<SignedDelta>, Option<String>), S::Error> {
    let mut out = Vec::new();
    let Some(rec) = store.record(key)? else {
        return Ok((out, None));
    };
    let Some(mut cur) = store.delta(&rec.author, rec.seq)? else {
        return Ok((out, Some(format!("record {key} has no delta"))));
    };
    let mut bytes = 0;
    while out.len() < limit && bytes + cur.value().len() <= max_bytes {
        let back = previous(store, &cur)?;
        bytes += cur.value().len();
        out.push(cur);
        cur = match back {
            Back::Revision(d) => d,
            Back::First => return Ok((out, None)),
            Back::Broken(why) => return Ok((out, Some(why))),
        };
    }
    Ok((
        out,
        Some(format!("only the newest {limit} revisions shown")),
    ))
}
