//! A directory of peers found by id, the model of PeerJS's server: one
//! place (a PeerJS key) holds each id at most once, with the socket that
//! claimed it and the token it claimed it with. Messages are addressed to
//! an id; one for an id nobody holds is held for [`HOLD_MS`] (the peer may
//! be connecting), handed over when the id is claimed, and otherwise
//! expires: its sender hears that the peer is unavailable, once per pair.
//!
//! A socket that shows an id's token again takes the id over (a reconnect
//! after a network drop whose old socket the server has not yet seen
//! close); another token is refused. Held bytes are capped per addressee
//! ([`MAX_HELD_BYTES_PER_PEER`]) and per place ([`MAX_HELD_BYTES`]), so
//! no member can make the place's memory or its sweeps expensive.

use std::collections::VecDeque;

use subtle::ConstantTimeEq;

use crate::domain::{PeerJsId, PeerJsToken};
use crate::engine::limits::{Meter, Rate};
use crate::engine::SocketId;

/// How long a message for an id nobody holds waits for it (PeerJS
/// server's `expire_timeout`).
pub const HOLD_MS: u64 = 5_000;
/// Bytes held for one addressee (an offer and its candidates are 3-8 KiB).
pub const MAX_HELD_BYTES_PER_PEER: usize = 64 * 1024;
/// Bytes held in one place, all addressees together.
pub const MAX_HELD_BYTES: usize = 512 * 1024;

/// What a claim of an id did.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The id was free and is now this socket's.
    Open,
    /// The same token took the id back from `old`, which is no longer its
    /// socket.
    Reclaimed { old: SocketId },
    /// Another token holds the id.
    Taken,
}

/// Peers by socket, in socket order, and the messages held for absent ids
/// in arrival order.
#[derive(Debug, Default)]
pub struct Directory {
    peers: Vec<Peer>,
    held: VecDeque<Held>,
    held_bytes: usize,
}

#[derive(Debug)]
struct Peer {
    socket: SocketId,
    id: PeerJsId,
    token: PeerJsToken,
    meter: Meter,
}

#[derive(Debug)]
struct Held {
    from: PeerJsId,
    to: PeerJsId,
    frame: String,
    until_ms: u64,
}

impl Directory {
    /// `socket` claims `id` with `token` (each socket claims once, when
    /// it connects).
    pub fn claim(
        &mut self,
        socket: SocketId,
        id: PeerJsId,
        token: PeerJsToken,
        now_ms: u64,
    ) -> Claim {
        if let Some(i) = self.peers.iter().position(|p| p.id == id) {
            let same: bool = self.peers[i]
                .token
                .as_str()
                .as_bytes()
                .ct_eq(token.as_str().as_bytes())
                .into();
            if !same {
                return Claim::Taken;
            }
            let old = self.peers.remove(i).socket;
            self.insert(socket, id, token, now_ms);
            return Claim::Reclaimed { old };
        }
        self.insert(socket, id, token, now_ms);
        Claim::Open
    }

    fn insert(&mut self, socket: SocketId, id: PeerJsId, token: PeerJsToken, now_ms: u64) {
        let at = self.peers.partition_point(|p| p.socket < socket);
        let peer = Peer {
            socket,
            id,
            token,
            meter: Meter::new(now_ms),
        };
        self.peers.insert(at, peer);
    }

    fn find(&self, socket: SocketId) -> Option<&Peer> {
        let i = self
            .peers
            .binary_search_by_key(&socket, |p| p.socket)
            .ok()?;
        self.peers.get(i)
    }

    /// The id `socket` holds.
    pub fn id_of(&self, socket: SocketId) -> Option<&PeerJsId> {
        self.find(socket).map(|p| &p.id)
    }

    /// The socket holding `id`.
    pub fn socket_of(&self, id: &PeerJsId) -> Option<SocketId> {
        self.peers.iter().find(|p| &p.id == id).map(|p| p.socket)
    }

    /// A socket that closed: its id is free again (unless another socket
    /// took it over already).
    pub fn release(&mut self, socket: SocketId) -> Option<PeerJsId> {
        let i = self
            .peers
            .binary_search_by_key(&socket, |p| p.socket)
            .ok()?;
        Some(self.peers.remove(i).id)
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Counts one frame of `bytes` from `socket` against `rate`.
    pub fn meter(&mut self, socket: SocketId, bytes: usize, rate: &Rate, now_ms: u64) -> bool {
        match self.peers.binary_search_by_key(&socket, |p| p.socket) {
            Ok(i) => self.peers[i].meter.count(bytes, rate, now_ms),
            Err(_) => false,
        }
    }

    /// Holds `frame` from `from` for `to`, which nobody holds; `false`
    /// (nothing held) past the byte caps.
    pub fn hold(&mut self, from: &PeerJsId, to: &PeerJsId, frame: String, now_ms: u64) -> bool {
        let for_to: usize = self
            .held
            .iter()
            .filter(|h| &h.to == to)
            .map(|h| h.frame.len())
            .sum();
        let bytes = frame.len();
        if for_to + bytes > MAX_HELD_BYTES_PER_PEER || self.held_bytes + bytes > MAX_HELD_BYTES {
            return false;
        }
        self.held_bytes += bytes;
        self.held.push_back(Held {
            from: from.clone(),
            to: to.clone(),
            frame,
            until_ms: now_ms.saturating_add(HOLD_MS),
        });
        true
    }

    /// The frames held for `id`, in the order they came, now handed over.
    pub fn take_held(&mut self, id: &PeerJsId) -> Vec<String> {
        let (mine, rest): (VecDeque<Held>, VecDeque<Held>) =
            self.held.drain(..).partition(|h| &h.to == id);
        self.held = rest;
        self.held_bytes -= mine.iter().map(|h| h.frame.len()).sum::<usize>();
        mine.into_iter().map(|h| h.frame).collect()
    }

    /// Drops every pair's held frames once one of them is past its time:
    /// the `(from, to)` pairs, each once, in the order they came.
    pub fn expire(&mut self, now_ms: u64) -> Vec<(PeerJsId, PeerJsId)> {
        let mut pairs: Vec<(PeerJsId, PeerJsId)> = Vec::new();
        for h in self.held.iter().filter(|h| h.until_ms <= now_ms) {
            if !pairs.iter().any(|(f, t)| f == &h.from && t == &h.to) {
                pairs.push((h.from.clone(), h.to.clone()));
            }
        }
        self.held
            .retain(|h| !pairs.iter().any(|(f, t)| f == &h.from && t == &h.to));
        self.held_bytes = self.held.iter().map(|h| h.frame.len()).sum();
        pairs
    }

    /// When the next held frame expires.
    pub fn next_expiry(&self) -> Option<u64> {
        self.held.front().map(|h| h.until_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> PeerJsId {
        PeerJsId::parse(s).unwrap()
    }

    fn token(s: &str) -> PeerJsToken {
        PeerJsToken::parse(s).unwrap()
    }

    #[test]
    fn an_id_is_held_once_and_taken_back_only_with_its_token() {
        let mut d = Directory::default();
        assert_eq!(d.claim(1, id("alice"), token("t1"), 0), Claim::Open);
        assert_eq!(d.claim(2, id("alice"), token("other"), 0), Claim::Taken);
        assert_eq!(d.socket_of(&id("alice")), Some(1));
        assert_eq!(
            d.claim(3, id("alice"), token("t1"), 0),
            Claim::Reclaimed { old: 1 }
        );
        // The old socket's late close frees nothing.
        assert_eq!(d.release(1), None);
        assert_eq!(d.socket_of(&id("alice")), Some(3));
        assert_eq!(d.release(3), Some(id("alice")));
        assert_eq!(d.claim(4, id("alice"), token("other"), 0), Claim::Open);
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn held_frames_go_to_their_peer_in_order_or_expire_once_per_pair() {
        let mut d = Directory::default();
        assert!(d.hold(&id("a"), &id("b"), "1".into(), 0));
        assert!(d.hold(&id("c"), &id("d"), "x".into(), 1_000));
        assert!(d.hold(&id("a"), &id("b"), "2".into(), 2_000));
        assert_eq!(d.next_expiry(), Some(HOLD_MS));
        assert_eq!(d.take_held(&id("b")), vec!["1", "2"]);
        assert_eq!(d.take_held(&id("b")), Vec::<String>::new());
        assert!(d.hold(&id("a"), &id("b"), "3".into(), 2_000));
        assert!(d.hold(&id("a"), &id("b"), "4".into(), 4_000));
        assert_eq!(d.expire(1_000 + HOLD_MS), vec![(id("c"), id("d"))]);
        // One of a pair's frames expired: the pair's others go with it.
        assert_eq!(d.expire(2_000 + HOLD_MS), vec![(id("a"), id("b"))]);
        assert_eq!(d.next_expiry(), None);
        assert_eq!(d.held_bytes, 0);
    }

    #[test]
    fn held_bytes_are_capped_per_addressee_and_per_place() {
        let mut d = Directory::default();
        let frame = "x".repeat(16 * 1024);
        let held = (0..10)
            .filter(|_| d.hold(&id("a"), &id("b"), frame.clone(), 0))
            .count();
        assert_eq!(held, MAX_HELD_BYTES_PER_PEER / frame.len());
        let others = (0..100)
            .filter(|i| d.hold(&id("a"), &id(&format!("p{}", i / 4)), frame.clone(), 0))
            .count();
        assert_eq!(d.held_bytes, MAX_HELD_BYTES);
        assert_eq!(held + others, MAX_HELD_BYTES / frame.len());
        d.take_held(&id("b"));
        assert!(d.hold(&id("a"), &id("b"), frame, 0));
    }
}
