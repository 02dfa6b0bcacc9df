//! The door: who may hold a place while a TLS handshake runs. Before the
//! handshake ends nobody is known, so these places are the part of a node a
//! stranger can take. They are few, bounded per source address and in all,
//! and kept apart from the connections of authenticated members (which are
//! bounded per member, so their capacity follows the roster).
//!
//! When the door is full a newcomer is not simply refused, because then a
//! flood of connections that never speak would keep every member out for as
//! long as it lasts. What tells a client from a flood before anyone is
//! known is the ClientHello: a real client sends it with its first packet,
//! so it is usually waiting in the socket when the connection is accepted.
//!
//! - A newcomer takes the place of a handshake that has not sent its
//!   ClientHello: the oldest of its own source if that source holds its
//!   share, else the oldest of the source holding the most places. So a
//!   flood pushes out its own connections first, and one from the same
//!   address as a member pushes the member's out only after as many
//!   newcomers as the source's share, time for any real client to speak.
//! - A newcomer whose ClientHello is already complete when it is accepted
//!   (a *talker*) is past eviction at once.
//! - A handshake that has sent its ClientHello is never pushed out, only
//!   timed out. With no place left that could be taken, a newcomer is
//!   turned away at once, which costs an accept and a close.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// Places in the door.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DoorLimits {
    /// Handshakes in progress at once, from anyone.
    pub pending_max: usize,
    /// Handshakes in progress at once from one source address.
    pub per_source_max: usize,
}

/// Why the door turned a connection away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// Every place is taken by a handshake that has sent its ClientHello.
    Pending,
    /// This source holds its share, each past its ClientHello.
    Source,
}

#[derive(Debug)]
struct Place {
    source: IpAddr,
    /// A complete ClientHello arrived: never evicted from here on.
    hello: bool,
    /// Fired to make the handshake give up its place.
    evict: Option<oneshot::Sender<()>>,
}

#[derive(Debug, Default)]
struct Places {
    /// By admission order, so the first match of a scan is the oldest.
    by_id: BTreeMap<u64, Place>,
    per_source: HashMap<IpAddr, usize>,
    next_id: u64,
}

impl Places {
    fn remove(&mut self, id: u64) -> Option<Place> {
        let place = self.by_id.remove(&id)?;
        if let Some(n) = self.per_source.get_mut(&place.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&place.source);
            }
        }
        Some(place)
    }

    /// The oldest place still waiting for its ClientHello, from `source`
    /// or, when `None`, from whichever source holds the most places.
    fn victim(&self, source: Option<IpAddr>) -> Option<u64> {
        let waiting = self.by_id.iter().filter(|(_, p)| !p.hello);
        match source {
            Some(s) => waiting
                .filter(|(_, p)| p.source == s)
                .map(|(id, _)| *id)
                .next(),
            None => waiting
                .max_by_key(|(id, p)| (self.per_source[&p.source], std::cmp::Reverse(**id)))
                .map(|(id, _)| *id),
        }
    }
}

/// The pre-authentication places, shared by the accept loop and the
/// handshake tasks.
#[derive(Clone, Debug)]
pub(crate) struct Door {
    limits: DoorLimits,
    places: Arc<Mutex<Places>>,
    /// Places taken, for the metrics.
    gauge: Arc<AtomicUsize>,
}

/// A place in the door, given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    door: Door,
    id: u64,
}

/// An admitted connection's place, and the signal that it was evicted.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub ticket: Ticket,
    /// Resolves if a newcomer takes this place.
    pub evicted: oneshot::Receiver<()>,
    /// Whether admitting it evicted another handshake.
    pub displaced: bool,
}

impl Door {
    pub(crate) fn new(limits: DoorLimits, gauge: Arc<AtomicUsize>) -> Door {
        Door {
            limits: DoorLimits {
                pending_max: limits.pending_max.max(1),
                per_source_max: limits.per_source_max.max(1),
            },
            places: Arc::default(),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Places> {
        self.places.lock().expect("door lock poisoned")
    }

    /// Gives a connection from `source` a place, evicting a handshake that
    /// has not sent its ClientHello if there is no room. `talker`: its
    /// ClientHello is complete already.
    pub(crate) fn admit(&self, source: IpAddr, talker: bool) -> Result<Admitted, Full> {
        let mut places = self.lock();
        let mut displaced = false;
        if places.per_source.get(&source).copied().unwrap_or(0) >= self.limits.per_source_max {
            let id = places.victim(Some(source)).ok_or(Full::Source)?;
            evict(&mut places, id);
            displaced = true;
        }
        if places.by_id.len() >= self.limits.pending_max {
            let id = places.victim(None).ok_or(Full::Pending)?;
            evict(&mut places, id);
            displaced = true;
        }
        let id = places.next_id;
        places.next_id += 1;
        let (tx, evicted) = oneshot::channel();
        places.by_id.insert(
            id,
            Place {
                source,
                hello: talker,
                evict: Some(tx),
            },
        );
        *places.per_source.entry(source).or_default() += 1;
        self.gauge.store(places.by_id.len(), Ordering::Relaxed);
        drop(places);
        let ticket = Ticket {
            door: self.clone(),
            id,
        };
        Ok(Admitted {
            ticket,
            evicted,
            displaced,
        })
    }

    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().by_id.len()
    }
}

fn evict(places: &mut Places, id: u64) {
    if let Some(mut p) = places.remove(id) {
        if let Some(tx) = p.evict.take() {
            let _ = tx.send(());
        }
    }
}

impl Ticket {
    /// The connection sent a complete ClientHello: from now on it keeps its
    /// place until its handshake ends or times out.
    pub(crate) fn hello(&self) {
        if let Some(p) = self.door.lock().by_id.get_mut(&self.id) {
            p.hello = true;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut places = self.door.lock();
        places.remove(self.id);
        self.door.gauge.store(places.by_id.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, n])
    }

    fn door(pending_max: usize, per_source_max: usize) -> Door {
        Door::new(
            DoorLimits {
                pending_max,
                per_source_max,
            },
            Arc::default(),
        )
    }

    #[test]
    fn a_flood_of_silent_connections_gives_way_to_a_newcomer_from_the_same_source() {
        let d = door(8, 4);
        let mut flood: Vec<Admitted> = (0..4).map(|_| d.admit(ip(1), false).unwrap()).collect();
        let mut member = d.admit(ip(1), false).unwrap();
        assert!(member.displaced);
        // The oldest silent one was told to go; the others keep waiting.
        assert!(flood[0].evicted.try_recv().is_ok());
        assert!(flood[1].evicted.try_recv().is_err());
        // The member has until the source's share of newcomers arrived.
        for _ in 0..3 {
            flood.push(d.admit(ip(1), false).unwrap());
            assert!(member.evicted.try_recv().is_err());
        }
        // Once its ClientHello arrived, however long the flood goes on.
        member.ticket.hello();
        for _ in 0..100 {
            flood.push(d.admit(ip(1), false).unwrap());
            assert!(member.evicted.try_recv().is_err(), "the member was evicted");
            assert!(d.pending() <= 4);
        }
    }

    #[test]
    fn a_talker_is_past_eviction_from_the_start() {
        let d = door(8, 2);
        let mut talker = d.admit(ip(1), true).unwrap();
        let flood: Vec<Admitted> = (0..10).map(|_| d.admit(ip(1), false).unwrap()).collect();
        assert_eq!(flood.len(), 10);
        assert!(talker.evicted.try_recv().is_err());
        assert_eq!(d.pending(), 2);
    }

    #[test]
    fn a_full_door_evicts_from_the_heaviest_source_first() {
        let d = door(6, 6);
        let mut heavy: Vec<Admitted> = (0..4).map(|_| d.admit(ip(1), false).unwrap()).collect();
        let mut light: Vec<Admitted> = (0..2).map(|_| d.admit(ip(2), false).unwrap()).collect();
        let newcomer = d.admit(ip(3), false).unwrap();
        assert!(newcomer.displaced);
        assert!(
            heavy[0].evicted.try_recv().is_ok(),
            "the heaviest source's oldest went"
        );
        for a in light.iter_mut() {
            assert!(a.evicted.try_recv().is_err());
        }
        assert_eq!(d.pending(), 6);
    }

    #[test]
    fn handshakes_past_their_client_hello_are_never_evicted() {
        let d = door(3, 2);
        let a = d.admit(ip(1), false).unwrap();
        let b = d.admit(ip(1), true).unwrap();
        a.ticket.hello();
        assert_eq!(d.admit(ip(1), true).unwrap_err(), Full::Source);
        let _c = d.admit(ip(2), true).unwrap();
        assert_eq!(d.admit(ip(3), false).unwrap_err(), Full::Pending);
        // A place given back is free at once.
        drop(a);
        assert!(d.admit(ip(3), false).is_ok());
        drop(b);
    }

    #[test]
    fn places_are_given_back_on_drop_and_counts_stay_bounded() {
        let d = door(16, 4);
        for round in 0..50u8 {
            let held: Vec<Admitted> = (0..4)
                .filter_map(|i| d.admit(ip(i + round % 3), round % 2 == 0).ok())
                .collect();
            assert!(d.pending() <= 16);
            assert_eq!(d.gauge.load(Ordering::Relaxed), d.pending());
            drop(held);
            assert_eq!(d.pending(), 0);
            assert!(d.lock().per_source.is_empty());
        }
    }
}
