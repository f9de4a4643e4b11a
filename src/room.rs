//! The state of one room and the rules that change it.
//!
//! A room is one JSON document (one R2 object): every participant's entry,
//! keyed by context id. Reading the room is therefore one R2 read whatever
//! its size. Entries carry their absolute expiry and are filtered at read
//! time, so an expired entry is never returned, with or without cleanup.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::protocol::{
    ContextId, DeleteKeyInput, Millis, Package, PeerData, PeerView, PollResponse, Publish,
    SessionId,
};

/// Bytes of CSPRNG output in a delete key (192 bits).
pub const DELETE_KEY_BYTES: usize = 24;

/// The secret that lets a participant remove its own entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeleteKey(String);

impl DeleteKey {
    /// Encodes random bytes (from the platform CSPRNG) as URL-safe base64.
    pub fn from_random(bytes: &[u8; DELETE_KEY_BYTES]) -> Self {
        Self(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in constant time, so response timing reveals nothing of the key.
    pub fn matches(&self, candidate: &DeleteKeyInput) -> bool {
        self.0
            .as_bytes()
            .ct_eq(candidate.as_str().as_bytes())
            .into()
    }
}

/// One participant's entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The peer's public data `d`.
    pub d: PeerData,
    /// The client's timestamp of this version of `d` and `p`.
    pub t: Millis,
    /// Packages this peer sends, each routed to its recipient only.
    pub p: Vec<Package>,
    /// Absolute expiry, ms since the epoch. Live while `now < expires_ms`.
    #[serde(rename = "x")]
    pub expires_ms: u64,
    pub dk: DeleteKey,
}

impl Entry {
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }
}

/// All entries of one room, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// Format version of the stored document.
    v: u32,
    #[serde(rename = "e")]
    entries: BTreeMap<ContextId, Entry>,
}

/// Result of applying a publish to a room.
#[derive(Debug, PartialEq, Eq)]
pub enum Upsert {
    /// The entry already holds this `t`: nothing to write.
    Unchanged,
    /// The room changed and must be written.
    Changed,
}

impl Room {
    const VERSION: u32 = 1;

    pub fn new() -> Self {
        Self {
            v: Self::VERSION,
            entries: BTreeMap::new(),
        }
    }

    /// Reads a stored room. A document this version cannot read counts as an
    /// empty room: it holds nothing a client could still use.
    pub fn decode(bytes: &[u8]) -> Self {
        serde_json::from_slice::<Room>(bytes)
            .ok()
            .filter(|r| r.v == Self::VERSION)
            .unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data structures to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn entry(&self, context: &ContextId) -> Option<&Entry> {
        self.entries.get(context)
    }

    /// Number of live entries.
    pub fn live_count(&self, now_ms: u64) -> usize {
        self.entries.values().filter(|e| e.is_live(now_ms)).count()
    }

    /// Drops expired entries (done on every write, at no extra cost).
    pub fn prune(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| e.is_live(now_ms));
    }

    /// Creates or refreshes the caller's entry. One entry per context: a
    /// reload (new session, same context) replaces the old one. The delete
    /// key is kept while the same session refreshes a live entry, and a new
    /// one is drawn with `new_key` otherwise.
    pub fn upsert(
        &mut self,
        publish: &Publish,
        now_ms: u64,
        new_key: impl FnOnce() -> DeleteKey,
    ) -> Upsert {
        let live = self
            .entries
            .get(&publish.context)
            .filter(|e| e.is_live(now_ms) && e.d.session == publish.data.session);
        if live.is_some_and(|e| e.t == publish.t) {
            return Upsert::Unchanged;
        }
        let dk = live.map(|e| e.dk.clone()).unwrap_or_else(new_key);
        self.prune(now_ms);
        self.entries.insert(
            publish.context.clone(),
            Entry {
                d: publish.data.clone(),
                t: publish.t.clone(),
                p: publish.packages.clone(),
                expires_ms: now_ms.saturating_add(publish.ttl_ms),
                dk,
            },
        );
        Upsert::Changed
    }

    /// Removes the caller's live entry if context, session (when given) and
    /// delete key all match. Returns whether it did.
    pub fn remove(
        &mut self,
        context: &ContextId,
        session: Option<&SessionId>,
        key: &DeleteKeyInput,
        now_ms: u64,
    ) -> bool {
        let owned = self.entries.get(context).is_some_and(|e| {
            e.is_live(now_ms) && session.is_none_or(|s| *s == e.d.session) && e.dk.matches(key)
        });
        if owned {
            self.entries.remove(context);
            self.prune(now_ms);
        }
        owned
    }

    /// The poll response for `context`: every other live peer, and the
    /// packages addressed to `session`. `dk` is included when given.
    pub fn view<'a>(
        &'a self,
        context: &ContextId,
        session: Option<&SessionId>,
        dk: Option<&'a DeleteKey>,
        now_ms: u64,
    ) -> PollResponse<'a> {
        let others = || {
            self.entries
                .iter()
                .filter(move |(k, e)| *k != context && e.is_live(now_ms))
                .map(|(_, e)| e)
        };
        PollResponse {
            ps: others()
                .map(|e| PeerView {
                    data: &e.d,
                    t: &e.t,
                })
                .collect(),
            pk: match session {
                Some(me) => others()
                    .flat_map(|e| e.p.iter())
                    .filter(|p| p.to == *me)
                    .map(|p| &*p.raw)
                    .collect(),
                None => Vec::new(),
            },
            dk: dk.map(DeleteKey::as_str),
        }
    }
}

impl Default for Room {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_request, Request};
    use serde_json::json;

    const NOW: u64 = 1_795_219_200_000;

    fn publish(k: &str, session: &str, t: u64, p: serde_json::Value) -> Publish {
        let body = json!({"r": "room", "k": k, "d": [session, "client", false, "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=", 1, []], "t": t, "x": 60_000, "p": p});
        match parse_request(&serde_json::to_vec(&body).unwrap(), false, NOW) {
            Ok(Request::Publish(p)) => p,
            other => panic!("not a publish: {other:?}"),
        }
    }

    fn key(n: u8) -> DeleteKey {
        DeleteKey::from_random(&[n; DELETE_KEY_BYTES])
    }

    fn input(dk: &DeleteKey) -> DeleteKeyInput {
        DeleteKeyInput::parse(dk.as_str()).unwrap()
    }

    #[test]
    fn upsert_keeps_the_key_and_skips_same_t() {
        let mut room = Room::new();
        assert_eq!(
            room.upsert(&publish("a", "s1", NOW, json!([])), NOW, || key(1)),
            Upsert::Changed
        );
        assert_eq!(
            room.upsert(&publish("a", "s1", NOW, json!([])), NOW, || key(2)),
            Upsert::Unchanged
        );
        assert_eq!(
            room.upsert(&publish("a", "s1", NOW + 1, json!([])), NOW, || key(3)),
            Upsert::Changed
        );
        let ctx = ContextId::parse("a").unwrap();
        assert_eq!(room.entry(&ctx).unwrap().dk, key(1), "kept across updates");
        // A new session in the same context replaces the entry with a new key.
        room.upsert(&publish("a", "s2", NOW + 2, json!([])), NOW, || key(4));
        assert_eq!(room.entry(&ctx).unwrap().dk, key(4));
        assert_eq!(room.live_count(NOW), 1);
        // After expiry the same session starts afresh.
        let later = NOW + 60_000;
        assert_eq!(room.live_count(later), 0);
        room.upsert(&publish("a", "s2", NOW + 2, json!([])), later, || key(5));
        assert_eq!(room.entry(&ctx).unwrap().dk, key(5));
    }

    #[test]
    fn view_excludes_self_and_expired_and_routes_packages() {
        let mut room = Room::new();
        room.upsert(
            &publish("a", "sa", NOW, json!([["sb", "sa", 1], ["sc", "sa", 2]])),
            NOW,
            || key(1),
        );
        room.upsert(&publish("b", "sb", NOW, json!([])), NOW + 10_000, || key(2));
        room.upsert(&publish("c", "sc", NOW, json!([])), NOW + 20_000, || key(3));
        let b = ContextId::parse("b").unwrap();
        let sb = SessionId::parse("sb").unwrap();
        let at = |now| serde_json::to_value(room.view(&b, Some(&sb), None, now)).unwrap();
        let v = at(NOW + 30_000);
        assert_eq!(v["ps"].as_array().unwrap().len(), 2);
        assert_eq!(v["pk"], json!([["sb", "sa", 1]]));
        // a expires at NOW + 60 s: from then on neither it nor its packages are returned.
        let v = at(NOW + 60_000);
        assert_eq!(v["ps"].as_array().unwrap().len(), 1);
        assert_eq!(v["pk"], json!([]));
        assert!(v.get("dk").is_none());
    }

    #[test]
    fn remove_requires_context_session_and_key() {
        let mut room = Room::new();
        room.upsert(&publish("a", "sa", NOW, json!([])), NOW, || key(1));
        let a = ContextId::parse("a").unwrap();
        let sa = SessionId::parse("sa").unwrap();
        let other = SessionId::parse("sx").unwrap();
        assert!(!room.remove(&a, Some(&sa), &input(&key(2)), NOW));
        assert!(!room.remove(&a, Some(&other), &input(&key(1)), NOW));
        assert!(!room.remove(
            &ContextId::parse("b").unwrap(),
            Some(&sa),
            &input(&key(1)),
            NOW
        ));
        assert!(room.remove(&a, Some(&sa), &input(&key(1)), NOW));
        assert_eq!(room.live_count(NOW), 0);
    }

    #[test]
    fn stored_form_round_trips_and_bad_documents_read_as_empty() {
        let mut room = Room::new();
        room.upsert(
            &publish("a", "sa", NOW, json!([["sb", {"x": 1.50}]])),
            NOW,
            || key(1),
        );
        let bytes = room.encode();
        assert_eq!(Room::decode(&bytes), room);
        assert_eq!(Room::decode(b"not json"), Room::new());
        assert_eq!(Room::decode(br#"{"v":99,"e":{}}"#), Room::new());
    }

    #[test]
    fn delete_keys_have_at_least_128_bits() {
        const { assert!(DELETE_KEY_BYTES * 8 >= 128) };
        assert_eq!(key(0).as_str().len(), 32);
    }
}
