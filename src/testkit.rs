//! Fixtures shared by tests, benchmarks and the simulation: deterministic
//! keys and hand-built delta chains, without a replica in the way.

use ed25519_dalek::SigningKey;

use crate::core::{
    DeltaBody, DeltaHash, Head, HlcClock, Member, NodeId, Op, Role, Roster, SignedDelta,
};

/// An author that builds its own chain of signed deltas.
pub struct Author {
    pub key: SigningKey,
    pub region: Option<String>,
    /// The unit whose space a unit author writes.
    pub unit: Option<String>,
    pub roles: Vec<Role>,
    head: Head,
    clock: HlcClock,
}

impl Author {
    /// A region author whose key is derived from `seed` (deterministic).
    pub fn region(seed: u64, region: &str) -> Self {
        Self::with(seed, Some(region.to_owned()), vec![Role::Region])
    }

    /// An `hq` author.
    pub fn hq(seed: u64) -> Self {
        Self::with(seed, None, vec![Role::Hq])
    }

    /// A unit's author; the roster must place `unit` in its tree.
    pub fn unit(seed: u64, unit: &str) -> Self {
        Author {
            unit: Some(unit.to_owned()),
            ..Self::with(seed, None, vec![Role::Unit])
        }
    }

    fn with(seed: u64, region: Option<String>, roles: Vec<Role>) -> Self {
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&seed.to_le_bytes());
        secret[8] = 0xfe;
        Author {
            key: SigningKey::from_bytes(&secret),
            region,
            unit: None,
            roles,
            head: Head::default(),
            clock: HlcClock::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    pub fn member(&self) -> Member {
        Member {
            id: self.id(),
            name: match (&self.unit, &self.region) {
                (Some(u), _) => format!("unit-{u}"),
                (None, Some(r)) => format!("office-{r}"),
                (None, None) => "hq".into(),
            },
            region: self.region.clone(),
            unit: self.unit.clone(),
            roles: self.roles.iter().copied().collect(),
            // Any 32 bytes: tests pin no real certificate, but a signed
            // roster needs a fingerprint for every member.
            tls: Some(self.id().0),
            address: None,
            standing: crate::core::Standing::Active,
        }
    }

    /// The key space this author writes: `units/<u>/`, `regions/<r>/` or `hq/`.
    pub fn space(&self) -> String {
        match (&self.unit, &self.region) {
            (Some(u), _) => crate::core::units::unit_space(u),
            (None, Some(r)) => format!("regions/{r}/"),
            (None, None) => "hq/".into(),
        }
    }

    /// The next delta of this author's chain, for any key (authority is not
    /// checked here, so tests can build out-of-authority deltas).
    pub fn next(&mut self, key: &str, op: Op, value: &[u8], now_ms: u64) -> SignedDelta {
        let body = DeltaBody {
            author: self.id(),
            seq: self.head.seq + 1,
            prev: self.head.hash,
            hlc: self.clock.tick(now_ms),
            key: key.to_owned(),
            op,
            value: if op == Op::Delete {
                Vec::new()
            } else {
                value.to_vec()
            },
        };
        let d = body.sign(&self.key);
        self.head = Head {
            seq: d.seq(),
            hash: d.hash(),
        };
        d
    }

    /// A put in this author's own space.
    pub fn put(&mut self, suffix: &str, value: &[u8], now_ms: u64) -> SignedDelta {
        let key = format!("{}{suffix}", self.space());
        self.next(&key, Op::Put, value, now_ms)
    }

    pub fn head_hash(&self) -> DeltaHash {
        self.head.hash
    }

    /// Continues the chain from `head`, as after a retraction back to it.
    pub fn rewind(&mut self, head: Head) {
        self.head = head;
    }
}

/// The federation key tests sign rosters with.
pub fn federation_key() -> SigningKey {
    SigningKey::from_bytes(&[0xfe; 32])
}

/// `roster`, signed by [`federation_key`].
pub fn sign(roster: &Roster) -> crate::core::SignedRoster {
    crate::core::SignedRoster::sign(roster, &federation_key()).expect("test rosters are valid")
}

/// A roster with every author in it.
pub fn roster<'a>(authors: impl IntoIterator<Item = &'a Author>) -> Roster {
    Roster::new(1, authors.into_iter().map(Author::member))
}

/// A report submission for `period` with `metrics`, no region or notes.
pub fn submission(period: &str, metrics: &[(&str, i64)]) -> crate::core::report::Submission {
    crate::core::report::Submission {
        categories: Default::default(),
        region: None,
        unit: None,
        period: period.into(),
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        notes: String::new(),
    }
}
