//! `KvStore` as the core's [`Store`]: what the replica reads (frontier,
//! deltas, records, roster) and the one all-or-nothing batch each commit
//! writes, in the layout `mod.rs` documents.

use std::sync::atomic::Ordering;

use super::codec::{self, frame, unframe, CodecError};
use super::error::corrupt;
use super::kv::{prefix_bounds, Batch};
use super::{key, log, prefix, records, KvStore, StoreError, RECORDS, ROSTER};
use crate::core::{Commit, Frontier, NodeId, RecordRef, SeqRange, SignedDelta, Store};

impl Store for KvStore {
    type Error = StoreError;

    fn load_frontier(&self) -> Result<Frontier, StoreError> {
        let mut f = Frontier::new();
        let (from, to) = prefix_bounds(&[prefix::HEAD]);
        for item in self.kv.scan(from, to, false) {
            let (k, v) = item?;
            let author: [u8; 32] = k[1..]
                .try_into()
                .map_err(|_| corrupt(&k, CodecError::Shape))?;
            let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
            let head = codec::decode_head(payload).map_err(|e| corrupt(&k, e))?;
            f.set(NodeId(author), head);
        }
        Ok(f)
    }

    fn delta(&self, author: &NodeId, seq: u64) -> Result<Option<SignedDelta>, StoreError> {
        log::get(&*self.kv, &self.chunks, author, seq)
    }

    fn deltas(
        &self,
        range: SeqRange,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<SignedDelta>, StoreError> {
        let seqs = (range.first, range.last);
        log::read(
            &*self.kv,
            &self.chunks,
            &range.author,
            seqs,
            (max_count, max_bytes),
        )
    }

    fn record(&self, record_key: &str) -> Result<Option<RecordRef>, StoreError> {
        let mut last = self.last_span.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(span) = last.as_ref().filter(|s| s.contains(record_key.as_bytes())) {
            return Ok(span.get(record_key));
        }
        let span = records::locate(&*self.kv, record_key.as_bytes())?;
        let found = span.get(record_key);
        *last = Some(span);
        Ok(found)
    }

    fn records(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, RecordRef)>, StoreError> {
        let start = match after {
            Some(a) if a >= prefix => {
                // The smallest key greater than `a`: `a` followed by a 0 byte.
                let mut k = a.as_bytes().to_vec();
                k.push(0);
                k
            }
            _ => prefix.as_bytes().to_vec(),
        };
        records::page(&*self.kv, prefix, &start, limit)
    }

    fn deltas_for_keys(
        &self,
        keys: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<SignedDelta>, StoreError> {
        let mut out = Vec::new();
        let (from, to) = prefix_bounds(&[prefix::SEALED]);
        for item in self.kv.scan(from, to, false) {
            let (k, _) = item?;
            let author = NodeId(
                k[1..33]
                    .try_into()
                    .map_err(|_| corrupt(&k, CodecError::Shape))?,
            );
            let n = u64::from_be_bytes(
                k[33..]
                    .try_into()
                    .map_err(|_| corrupt(&k, CodecError::Shape))?,
            );
            let chunk = (self.chunks.get(&*self.kv, &author, n)?)
                .ok_or_else(|| corrupt(&k, CodecError::Shape))?;
            out.extend(chunk.iter().filter(|d| keys.contains(d.key())).cloned());
        }
        let (from, to) = prefix_bounds(&[prefix::LOG]);
        for item in self.kv.scan(from, to, false) {
            let (k, v) = item?;
            let d = log::decode_tail(&k, &v)?;
            if keys.contains(d.key()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    fn arrived(&self, author: &NodeId, seq: u64) -> Result<Option<u64>, StoreError> {
        let k = arrival_key(author, seq);
        let Some(v) = self.kv.get(&k)? else {
            return Ok(None);
        };
        let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
        let ms: [u8; 8] = payload
            .try_into()
            .map_err(|_| corrupt(&k, CodecError::Shape))?;
        Ok(Some(u64::from_be_bytes(ms)))
    }

    fn roster(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(prefix::META, ROSTER.as_bytes());
        let Some(v) = self.kv.get(&k)? else {
            return Ok(None);
        };
        let payload = unframe(&v).map_err(|e| corrupt(&k, e))?;
        Ok(Some(payload.to_vec()))
    }

    fn commit(&mut self, c: &Commit) -> Result<(), StoreError> {
        self.commit_lazy(c)?;
        self.flush_commits()
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if !self.unsynced {
            return Ok(());
        }
        self.flush_commits()
    }

    fn commit_lazy(&mut self, c: &Commit) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        for r in &c.retract {
            log::retract(&*self.kv, &self.chunks, &mut batch, &r.author, r.first)?;
            let (from, _) = prefix_bounds(&arrival_key(&r.author, r.first));
            let (_, to) = prefix_bounds(&key(prefix::ARRIVAL, &r.author.0));
            for item in self.kv.scan(from, to, false) {
                batch.remove(item?.0.to_vec());
            }
        }
        if let Some(r) = &c.roster {
            batch.insert(key(prefix::META, ROSTER.as_bytes()), frame(r));
        }
        let mut runs: std::collections::BTreeMap<NodeId, Vec<&SignedDelta>> = Default::default();
        for d in &c.deltas {
            runs.entry(d.author()).or_default().push(d);
        }
        for run in runs.values_mut() {
            run.sort_by_key(|d| d.seq());
            if run.windows(2).any(|w| w[1].seq() != w[0].seq() + 1) {
                return Err(StoreError::Disk(format!(
                    "a commit's deltas of {} are not contiguous",
                    run[0].author().short()
                )));
            }
            log::append(&*self.kv, &self.chunks, &mut batch, run)?;
        }
        *self.last_span.lock().unwrap_or_else(|e| e.into_inner()) = None;
        records::write(&*self.kv, &mut batch, &c.records, &c.records_removed)?;
        for (a, h) in &c.heads {
            if h.seq == 0 {
                batch.remove(key(prefix::HEAD, &a.0));
            } else {
                batch.insert(key(prefix::HEAD, &a.0), frame(&codec::encode_head(h)));
            }
        }
        // A delta is applied once, so its arrival is written once.
        let at = frame(&c.arrived_ms.to_be_bytes());
        for (author, seq) in &c.arrivals {
            batch.insert(arrival_key(author, *seq), at.clone());
        }
        let q = self.quarantine_into(&mut batch, &c.quarantine);
        let before = self.records.load(Ordering::Relaxed);
        let records = (before + c.records_created).saturating_sub(c.records_removed.len() as u64);
        if records != before {
            let k = key(prefix::META, RECORDS.as_bytes());
            batch.insert(k, frame(&records.to_be_bytes()));
        }
        self.kv.apply(batch)?;
        self.q = q;
        self.records.store(records, Ordering::Relaxed);
        if let Some((me, _)) = self.owner {
            if let Some((_, head)) = c.heads.iter().find(|(a, _)| *a == me) {
                self.own_head = Some(*head);
            }
        }
        self.unsynced = true;
        Ok(())
    }
}

fn arrival_key(author: &NodeId, seq: u64) -> Vec<u8> {
    key(
        prefix::ARRIVAL,
        &[&author.0[..], &seq.to_be_bytes()].concat(),
    )
}
