//! Byte layouts of stored values, and the checksum frame around each one.
//!
//! Every value in every tree is `crc32(payload) || payload` (4 bytes,
//! big-endian), so a flipped bit on disk is reported as corruption instead
//! of being served or relayed.

use crate::core::{DeltaHash, Head, Hlc, NodeId, Quarantined, RecordRef};

/// Why stored bytes could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("checksum mismatch")]
    Checksum,
    #[error("value too short or malformed")]
    Shape,
}

pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn unframe(stored: &[u8]) -> Result<&[u8], CodecError> {
    let (crc, payload) = stored.split_at_checked(4).ok_or(CodecError::Shape)?;
    if crc32fast::hash(payload).to_be_bytes() != crc {
        return Err(CodecError::Checksum);
    }
    Ok(payload)
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let (a, b) = self.0.split_at_checked(n).ok_or(CodecError::Shape)?;
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, CodecError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn array32(&mut self) -> Result<[u8; 32], CodecError> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    fn blob(&mut self) -> Result<&'a [u8], CodecError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn end(self) -> Result<(), CodecError> {
        self.0.is_empty().then_some(()).ok_or(CodecError::Shape)
    }
}

/// `wall_ms(8) logical(4) author(32) seq(8) deleted(1)`: a record as
/// layout 3 kept it, read once by the migration.
#[cfg(test)]
pub fn encode_record(r: &RecordRef) -> Vec<u8> {
    let mut v = Vec::with_capacity(53);
    v.extend_from_slice(&r.hlc.wall_ms.to_be_bytes());
    v.extend_from_slice(&r.hlc.logical.to_be_bytes());
    v.extend_from_slice(&r.author.0);
    v.extend_from_slice(&r.seq.to_be_bytes());
    v.push(r.deleted as u8);
    v
}

pub fn decode_record(b: &[u8]) -> Result<RecordRef, CodecError> {
    let mut c = Cursor(b);
    let wall_ms = c.u64()?;
    let logical = c.u32()?;
    let author = NodeId(c.array32()?);
    let seq = c.u64()?;
    let deleted = match c.take(1)?[0] {
        0 => false,
        1 => true,
        _ => return Err(CodecError::Shape),
    };
    c.end()?;
    Ok(RecordRef {
        hlc: Hlc::new(wall_ms, logical),
        author,
        seq,
        deleted,
    })
}

/// `seq(8) hash(32)`
pub fn encode_head(h: &Head) -> Vec<u8> {
    [&h.seq.to_be_bytes()[..], &h.hash.0].concat()
}

pub fn decode_head(b: &[u8]) -> Result<Head, CodecError> {
    let mut c = Cursor(b);
    let seq = c.u64()?;
    let hash = DeltaHash(c.array32()?);
    c.end()?;
    Ok(Head { seq, hash })
}

/// `at_ms(8)` then four length-prefixed (u32) blobs: origin, code, reason, bytes.
pub fn encode_quarantined(q: &Quarantined) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&q.at_ms.to_be_bytes());
    for blob in [
        q.origin.as_bytes(),
        q.code.as_bytes(),
        q.reason.as_bytes(),
        &q.bytes,
        &q.evidence,
    ] {
        v.extend_from_slice(&(blob.len() as u32).to_be_bytes());
        v.extend_from_slice(blob);
    }
    v
}

pub fn decode_quarantined(b: &[u8]) -> Result<Quarantined, CodecError> {
    let mut c = Cursor(b);
    let at_ms = c.u64()?;
    let text = |s: &[u8]| String::from_utf8(s.to_vec()).map_err(|_| CodecError::Shape);
    let origin = text(c.blob()?)?;
    let code = text(c.blob()?)?;
    let reason = text(c.blob()?)?;
    let bytes = c.blob()?.to_vec();
    let evidence = c.blob()?.to_vec();
    c.end()?;
    Ok(Quarantined {
        at_ms,
        origin,
        code,
        reason,
        bytes,
        evidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_round_trips_and_any_flipped_bit_is_caught() {
        let q = Quarantined {
            at_ms: 7,
            origin: "hq".into(),
            code: "bad_signature".into(),
            reason: "signature does not verify".into(),
            bytes: vec![1, 2, 3],
            evidence: vec![4, 5],
        };
        let framed = frame(&encode_quarantined(&q));
        assert_eq!(decode_quarantined(unframe(&framed).unwrap()).unwrap(), q);
        for bit in 0..framed.len() * 8 {
            let mut bad = framed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(unframe(&bad), Err(CodecError::Checksum), "bit {bit}");
        }
        let r = RecordRef {
            hlc: Hlc::new(1, 2),
            author: NodeId([3; 32]),
            seq: 4,
            deleted: true,
        };
        assert_eq!(decode_record(&encode_record(&r)).unwrap(), r);
        let h = Head {
            seq: 9,
            hash: DeltaHash([8; 32]),
        };
        assert_eq!(decode_head(&encode_head(&h)).unwrap(), h);
        assert_eq!(decode_head(&encode_head(&h)[1..]), Err(CodecError::Shape));
    }
}
