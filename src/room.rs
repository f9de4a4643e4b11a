//! The state of one room and the rules that change it.
//!
//! A room is an index (one R2 object: every participant's entry, keyed by
//! context id) plus one outbox per participant (its packages, in an object
//! only its own requests write). A steady poll reads the index alone: one
//! read whatever the room size. Outboxes are read only where packages can be
//! waiting: between two peers for [`JOIN_WINDOW_MS`] after the later one
//! joined, where an entry announces packages for the caller, or to check an
//! entry whose index expiry passed. Expiry is judged at read time, so an
//! expired entry is never returned, with or without cleanup.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::hints::Situation;
use crate::protocol::{
    ContextId, DeleteKeyInput, LastWrite, Millis, Package, PeerData, PeerView, PollResponse,
    Publish, SessionId,
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

/// How long after the later of two peers joined the room each reads the
/// other's outbox without being told to: covers the stock client's handshake
/// (B's package ~3-8 s after the join, A's answer a few seconds later).
pub const JOIN_WINDOW_MS: u64 = 45_000;
/// A package written when its recipient's window closes sooner than this is
/// announced in the index instead.
pub const ANNOUNCE_MARGIN_MS: u64 = 20_000;

/// "The outbox of this entry holds packages for `to`": makes `to` read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    #[serde(rename = "s")]
    pub to: SessionId,
    #[serde(rename = "u")]
    pub until_ms: u64,
}

/// One participant's entry in the room index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The peer's public data `d`.
    pub d: PeerData,
    /// The client's `t` at the last index write.
    pub t: Millis,
    /// Expiry set by the last index write, ms since the epoch. The outbox
    /// may extend it (see [`Entry::is_live`]).
    #[serde(rename = "x")]
    pub expires_ms: u64,
    /// The lifetime granted per write, ms (`min(x, 15 min)`).
    #[serde(rename = "l")]
    pub ttl_ms: u64,
    pub dk: DeleteKey,
    /// When this session first became visible, ms since the epoch.
    #[serde(rename = "j")]
    pub joined_ms: u64,
    /// Recipients outside a join window that must read this outbox.
    #[serde(rename = "a", default, skip_serializing_if = "Vec::is_empty")]
    pub announced: Vec<Announcement>,
}

/// The packages one context sends, in an R2 object of its own
/// (`rooms/<room>/c/<context>`), written only by that context's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    #[serde(rename = "s")]
    pub session: SessionId,
    pub t: Millis,
    /// Written at `now`, this keeps its writer alive until `now + ttl`.
    #[serde(rename = "x")]
    pub expires_ms: u64,
    pub p: Vec<Package>,
}

impl Outbox {
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Outboxes read for one request, by context.
pub type Outboxes = BTreeMap<ContextId, Outbox>;

impl Entry {
    /// Live by the index alone.
    pub fn index_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    /// Past this, the outbox has expired too (an outbox write never happens
    /// while the index entry has expired), so the entry can go unread.
    pub fn is_dead(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms.saturating_add(self.ttl_ms)
    }

    /// Live by the index, or by an outbox this session wrote later.
    pub fn is_live(&self, now_ms: u64, outbox: Option<&Outbox>) -> bool {
        self.index_live(now_ms)
            || outbox.is_some_and(|o| o.session == self.d.session && now_ms < o.expires_ms)
    }

    fn own_outbox<'a>(&self, outbox: Option<&'a Outbox>) -> Option<&'a Outbox> {
        outbox.filter(|o| o.session == self.d.session)
    }
}

/// The room index, as stored: every participant's entry by context id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Room {
    /// Format version of the stored document.
    v: u32,
    #[serde(rename = "e")]
    entries: BTreeMap<ContextId, Entry>,
    /// Last join or leave written to the index, ms since the epoch.
    #[serde(rename = "m", default)]
    membership_changed_ms: u64,
}

/// Whether a publish needs the index written.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexChange {
    /// Nothing the index holds changed.
    Unchanged,
    /// The entry was created or changed: write the index.
    Write,
}

impl Room {
    const VERSION: u32 = 2;

    pub fn new() -> Self {
        Self {
            v: Self::VERSION,
            entries: BTreeMap::new(),
            membership_changed_ms: 0,
        }
    }

    /// Reads a stored index. A document this version cannot read counts as
    /// an empty room: it holds nothing a client could still use.
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

    /// The caller's own entry, if `session` is the one stored for `context`.
    fn own(&self, context: &ContextId, session: &SessionId, now_ms: u64) -> Option<&Entry> {
        self.entries
            .get(context)
            .filter(|e| e.d.session == *session && !e.is_dead(now_ms))
    }

    /// Number of live entries, judged with the outboxes at hand.
    pub fn live_count(&self, now_ms: u64, outboxes: &Outboxes) -> usize {
        self.entries
            .iter()
            .filter(|(k, e)| e.is_live(now_ms, outboxes.get(*k)))
            .count()
    }

    /// Drops entries that are surely gone (done on every write, at no extra cost).
    pub fn prune(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| !e.is_dead(now_ms));
    }

    /// Applies a publish to the index. `outbox_changed`: this publish wrote
    /// new packages to the caller's outbox.
    ///
    /// The index is written for a new entry (one per context: a reload's
    /// new session replaces the old one, with a new delete key), a changed
    /// `d`, a heartbeat (new `t`, same packages), when the entry expired by
    /// the index while its outbox kept it alive, or to announce packages to
    /// recipients outside their join window. A publish that only changed
    /// packages within join windows leaves the index alone: that is what lets
    /// many peers hand over packages at once without queueing on one key.
    ///
    /// A new entry is refused with [`Error::RoomFull`] when `max_peers`
    /// other entries may still be alive.
    pub fn apply_publish(
        &mut self,
        publish: &Publish,
        outbox_changed: bool,
        now_ms: u64,
        max_peers: usize,
        new_key: impl FnOnce() -> DeleteKey,
    ) -> Result<IndexChange, Error> {
        let announced = self.announcements(publish, outbox_changed, now_ms);
        let fresh = |dk, joined_ms, announced| Entry {
            d: publish.data.clone(),
            t: publish.t.clone(),
            expires_ms: now_ms.saturating_add(publish.ttl_ms),
            ttl_ms: publish.ttl_ms,
            dk,
            joined_ms,
            announced,
        };
        // A session id belongs to one context: claiming another's would
        // receive the packages addressed to it.
        let taken = self.entries.iter().any(|(k, e)| {
            *k != publish.context && e.d.session == publish.data.session && !e.is_dead(now_ms)
        });
        if taken {
            return Err(Error::BadRequest("Session id in use"));
        }
        let Some(current) = self.own(&publish.context, &publish.data.session, now_ms) else {
            self.prune(now_ms);
            let others = self
                .entries
                .keys()
                .filter(|k| **k != publish.context)
                .count();
            if others >= max_peers {
                return Err(Error::RoomFull);
            }
            let entry = fresh(new_key(), now_ms, announced);
            self.entries.insert(publish.context.clone(), entry);
            self.membership_changed_ms = now_ms;
            return Ok(IndexChange::Write);
        };
        if current.t == publish.t && current.d == publish.data {
            return Ok(IndexChange::Unchanged);
        }
        let needs_write = current.d != publish.data
            || !outbox_changed
            || !current.index_live(now_ms)
            || announced != current.announced;
        if !needs_write {
            return Ok(IndexChange::Unchanged);
        }
        let entry = fresh(current.dk.clone(), current.joined_ms, announced);
        self.prune(now_ms);
        self.entries.insert(publish.context.clone(), entry);
        Ok(IndexChange::Write)
    }

    /// Announcements the caller's entry must carry: still-valid earlier ones,
    /// plus recipients of new packages whose join window with the caller
    /// closes within [`ANNOUNCE_MARGIN_MS`].
    fn announcements(
        &self,
        publish: &Publish,
        outbox_changed: bool,
        now_ms: u64,
    ) -> Vec<Announcement> {
        let own = self.own(&publish.context, &publish.data.session, now_ms);
        let mut out: Vec<Announcement> = own
            .map(|e| {
                e.announced
                    .iter()
                    .filter(|a| a.until_ms > now_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !outbox_changed {
            return out;
        }
        let my_join = own.map_or(now_ms, |e| e.joined_ms);
        for package in &publish.packages {
            let Some(recipient) = self.entries.values().find(|e| e.d.session == package.to) else {
                continue; // not in the room: nobody will ask for it
            };
            let window_end = my_join.max(recipient.joined_ms) + JOIN_WINDOW_MS;
            let covered = window_end >= now_ms + ANNOUNCE_MARGIN_MS
                || out
                    .iter()
                    .any(|a| a.to == package.to && a.until_ms >= now_ms + ANNOUNCE_MARGIN_MS);
            if !covered {
                out.retain(|a| a.to != package.to);
                out.push(Announcement {
                    to: package.to.clone(),
                    until_ms: now_ms + JOIN_WINDOW_MS,
                });
            }
        }
        out
    }

    /// Removes the caller's entry if context, session (when given) and
    /// delete key all match. Returns whether it did.
    pub fn remove(
        &mut self,
        context: &ContextId,
        session: Option<&SessionId>,
        key: &DeleteKeyInput,
        now_ms: u64,
    ) -> bool {
        let owned = self.entries.get(context).is_some_and(|e| {
            !e.is_dead(now_ms) && session.is_none_or(|s| *s == e.d.session) && e.dk.matches(key)
        });
        if owned {
            self.entries.remove(context);
            self.prune(now_ms);
            self.membership_changed_ms = now_ms;
        }
        owned
    }

    /// The outboxes a view for `context`/`session` needs, at most `limit`:
    /// first those announced to the caller and those of entries expired by
    /// the index (their outbox may keep them alive), then those of peers in
    /// a join window with the caller, taken in a rotation that moves on every
    /// second so that successive polls cover a large room. In a steady room
    /// this is empty: a poll is one read.
    pub fn outboxes_to_read(
        &self,
        context: &ContextId,
        session: Option<&SessionId>,
        now_ms: u64,
        limit: usize,
    ) -> Vec<ContextId> {
        let me = session.and_then(|s| self.own(context, s, now_ms));
        let mut first = Vec::new();
        let mut windows = Vec::new();
        for (k, e) in &self.entries {
            if k == context || e.is_dead(now_ms) {
                continue;
            }
            let announced = session.is_some_and(|s| {
                e.announced
                    .iter()
                    .any(|a| a.to == *s && now_ms < a.until_ms)
            });
            if announced || !e.index_live(now_ms) {
                first.push(k.clone());
            } else if me.is_some_and(|m| now_ms < m.joined_ms.max(e.joined_ms) + JOIN_WINDOW_MS) {
                windows.push(k.clone());
            }
        }
        first.truncate(limit);
        let room_left = limit - first.len();
        if windows.len() > room_left && !windows.is_empty() {
            let offset = (now_ms / 1000) as usize % windows.len();
            windows.rotate_left(offset);
        }
        windows.truncate(room_left);
        first.extend(windows);
        first
    }

    /// What the polling hint for the caller depends on, from this index and
    /// the outboxes read for the view. Packages count as waiting for the
    /// caller while their outbox is younger than `fresh_ms`.
    ///
    /// The caller's expiry is the later of its index expiry and the one its
    /// last write (as the caller reports it: an outbox write leaves the index
    /// alone) gave it; the client's clock is mapped to the server's with the
    /// offset seen at the last index write.
    pub fn situation(
        &self,
        context: &ContextId,
        session: Option<&SessionId>,
        last_write: Option<&LastWrite>,
        outboxes: &Outboxes,
        fresh_ms: u64,
        now_ms: u64,
    ) -> Situation {
        let me = session.and_then(|s| self.own(context, s, now_ms));
        let mut others = 0;
        let mut in_join_window = false;
        let mut fresh_packages = 0;
        // Departures by expiry count as membership changes too.
        let mut changed = self.membership_changed_ms;
        for (k, e) in self.entries.iter().filter(|(k, _)| *k != context) {
            let outbox = e.own_outbox(outboxes.get(k));
            if e.is_live(now_ms, outbox) {
                others += 1;
                // Packages written within `fresh_ms` (older ones were seen already).
                if let (Some(o), Some(me)) = (outbox, session) {
                    let written = o.expires_ms.saturating_sub(e.ttl_ms);
                    if now_ms < written.saturating_add(fresh_ms) {
                        fresh_packages += o.p.iter().filter(|p| p.to == *me).count();
                    }
                }
                in_join_window |=
                    me.is_some_and(|m| now_ms < m.joined_ms.max(e.joined_ms) + JOIN_WINDOW_MS);
            } else {
                changed =
                    changed.max(outbox.map_or(e.expires_ms, |o| o.expires_ms.max(e.expires_ms)));
            }
        }
        let own = me.map(|m| {
            let reported = last_write.map_or(0, |w| {
                let offset = m.expires_ms.saturating_sub(m.ttl_ms) as f64 - m.t.as_f64();
                let at = (w.t.as_f64() + offset).clamp(0.0, now_ms as f64) as u64;
                at.saturating_add(w.ttl_ms)
            });
            (m.joined_ms, m.expires_ms.max(reported))
        });
        Situation {
            now_ms,
            own,
            others,
            packages_for_caller: fresh_packages,
            in_join_window,
            membership_changed_ms: changed,
        }
    }

    /// The poll response for `context`: every other live peer (with the
    /// newer of its index and outbox `t`), and the packages addressed to
    /// `session` in the outboxes at hand, given only to the context whose
    /// entry holds that session. `dk` is included when given.
    pub fn view<'a>(
        &'a self,
        context: &ContextId,
        session: Option<&SessionId>,
        dk: Option<&'a DeleteKey>,
        outboxes: &'a Outboxes,
        now_ms: u64,
    ) -> PollResponse<'a> {
        let others = || {
            self.entries
                .iter()
                .filter(move |(k, e)| *k != context && e.is_live(now_ms, outboxes.get(*k)))
                .map(|(k, e)| (e, e.own_outbox(outboxes.get(k))))
        };
        PollResponse {
            ps: others()
                .map(|(e, outbox)| PeerView {
                    data: &e.d,
                    t: match outbox {
                        Some(o) if o.t.as_f64() > e.t.as_f64() => &o.t,
                        _ => &e.t,
                    },
                })
                .collect(),
            pk: match session.filter(|s| self.own(context, s, now_ms).is_some()) {
                Some(me) => others()
                    .filter_map(|(_, outbox)| outbox)
                    .flat_map(|o| o.p.iter())
                    .filter(|p| p.to == *me)
                    .map(|p| &*p.raw)
                    .collect(),
                None => Vec::new(),
            },
            dk: dk.map(DeleteKey::as_str),
            hint: None,
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
        match parse_request(
            &serde_json::to_vec(&body).unwrap(),
            false,
            NOW,
            &crate::limits::Limits::default(),
        ) {
            Ok(Request::Publish(p)) => p,
            other => panic!("not a publish: {other:?}"),
        }
    }

    /// `apply_publish` with room for 32 peers, which these tests never reach.
    fn apply(
        room: &mut Room,
        p: &Publish,
        changed: bool,
        now: u64,
        k: impl FnOnce() -> DeleteKey,
    ) -> IndexChange {
        room.apply_publish(p, changed, now, 32, k).unwrap()
    }

    fn key(n: u8) -> DeleteKey {
        DeleteKey::from_random(&[n; DELETE_KEY_BYTES])
    }

    fn input(dk: &DeleteKey) -> DeleteKeyInput {
        DeleteKeyInput::parse(dk.as_str()).unwrap()
    }

    fn ctx(k: &str) -> ContextId {
        ContextId::parse(k).unwrap()
    }

    fn sess(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    fn outbox(session: &str, t: u64, expires_ms: u64, p: serde_json::Value) -> Outbox {
        let publish = publish("x", session, t, p);
        Outbox {
            session: sess(session),
            t: publish.t,
            expires_ms,
            p: publish.packages,
        }
    }

    #[test]
    fn index_writes_keep_the_key_and_skip_same_t() {
        let mut room = Room::new();
        let a = ctx("a");
        assert_eq!(
            apply(
                &mut room,
                &publish("a", "s1", NOW, json!([])),
                false,
                NOW,
                || key(1)
            ),
            IndexChange::Write
        );
        assert_eq!(
            apply(
                &mut room,
                &publish("a", "s1", NOW, json!([])),
                false,
                NOW,
                || key(2)
            ),
            IndexChange::Unchanged
        );
        // A heartbeat (new t, same packages) is written; the key is kept.
        assert_eq!(
            apply(
                &mut room,
                &publish("a", "s1", NOW + 1, json!([])),
                false,
                NOW,
                || key(3)
            ),
            IndexChange::Write
        );
        assert_eq!(room.entry(&a).unwrap().dk, key(1));
        // A new session in the same context replaces the entry with a new key and join time.
        apply(
            &mut room,
            &publish("a", "s2", NOW + 2, json!([])),
            false,
            NOW + 5,
            || key(4),
        );
        assert_eq!(room.entry(&a).unwrap().dk, key(4));
        assert_eq!(room.entry(&a).unwrap().joined_ms, NOW + 5);
        assert_eq!(room.live_count(NOW + 5, &Outboxes::new()), 1);
    }

    #[test]
    fn packages_within_a_join_window_leave_the_index_alone() {
        let mut room = Room::new();
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            false,
            NOW + 30_000,
            || key(1),
        );
        apply(
            &mut room,
            &publish("a", "sa", NOW, json!([])),
            false,
            NOW + 60_000,
            || key(2),
        );
        // b sends a package to the newcomer a 5 s after it joined: outbox only.
        let to_a = publish("b", "sb", NOW + 65_000, json!([["sa", 1]]));
        assert_eq!(
            apply(&mut room, &to_a, true, NOW + 65_000, || key(3)),
            IndexChange::Unchanged
        );
        // A package when the window (a's join + 45 s) closes within 20 s is announced.
        let late = publish("b", "sb", NOW + 200_000, json!([["sa", 2]]));
        let mut later = room.clone();
        assert_eq!(
            apply(&mut later, &late, true, NOW + 86_000, || key(3)),
            IndexChange::Write
        );
        let announced = &later.entry(&ctx("b")).unwrap().announced;
        assert_eq!(announced.len(), 1);
        assert_eq!(announced[0].to, sess("sa"));
    }

    #[test]
    fn outboxes_are_read_only_where_packages_can_wait() {
        let mut room = Room::new();
        apply(
            &mut room,
            &publish("a", "sa", NOW, json!([])),
            false,
            NOW,
            || key(1),
        );
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            false,
            NOW + 1000,
            || key(2),
        );
        let (a, sa) = (ctx("a"), sess("sa"));
        assert_eq!(
            room.outboxes_to_read(&a, Some(&sa), NOW + 2000, 20),
            vec![ctx("b")],
            "join window"
        );
        assert!(
            room.outboxes_to_read(&a, Some(&sa), NOW + 2000, 0)
                .is_empty(),
            "limit"
        );
        assert!(
            room.outboxes_to_read(&a, None, NOW + 2000, 20).is_empty(),
            "no session, no packages"
        );
        // Steady: heartbeats keep both index-live, windows closed: nothing to read.
        apply(
            &mut room,
            &publish("a", "sa", NOW + 1, json!([])),
            false,
            NOW + 100_000,
            || key(1),
        );
        apply(
            &mut room,
            &publish("b", "sb", NOW + 1, json!([])),
            false,
            NOW + 100_000,
            || key(2),
        );
        assert!(room
            .outboxes_to_read(&a, Some(&sa), NOW + 101_000, 20)
            .is_empty());
        // b's index expiry passes: its outbox may keep it alive, so it is read.
        assert_eq!(
            room.outboxes_to_read(&a, Some(&sa), NOW + 161_000, 20),
            vec![ctx("b")]
        );
    }

    #[test]
    fn view_uses_outboxes_for_packages_liveness_and_t() {
        let mut room = Room::new();
        apply(
            &mut room,
            &publish("a", "sa", NOW, json!([])),
            false,
            NOW,
            || key(1),
        );
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            false,
            NOW,
            || key(2),
        );
        apply(
            &mut room,
            &publish("c", "sc", NOW, json!([])),
            false,
            NOW,
            || key(3),
        );
        let mut outboxes = Outboxes::new();
        outboxes.insert(
            ctx("a"),
            outbox(
                "sa",
                NOW + 7,
                NOW + 100_000,
                json!([["sb", "sa", 1], ["sc", "sa", 2]]),
            ),
        );
        let (b, sb) = (ctx("b"), sess("sb"));
        let view = |outboxes: &Outboxes, now| {
            serde_json::to_value(room.view(&b, Some(&sb), None, outboxes, now)).unwrap()
        };
        let at = |now| view(&outboxes, now);
        let v = at(NOW + 30_000);
        assert_eq!(v["ps"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["pk"],
            json!([["sb", "sa", 1]]),
            "only packages addressed to b"
        );
        assert_eq!(v["ps"][0][6], json!(NOW + 7), "the outbox's newer t");
        // Past a's index expiry (NOW + 60 s) its outbox keeps it alive; c is gone.
        let v = at(NOW + 70_000);
        assert_eq!(v["ps"].as_array().unwrap().len(), 1);
        assert_eq!(v["ps"][0][0], json!("sa"));
        // An outbox of another session does not count.
        let mut stale = outboxes.clone();
        stale.insert(
            ctx("a"),
            outbox("old-session", NOW + 7, NOW + 100_000, json!([["sb", 1]])),
        );
        let v = view(&stale, NOW + 30_000);
        assert_eq!(v["pk"], json!([]));
        assert!(v.get("dk").is_none());
    }

    #[test]
    fn remove_requires_context_session_and_key() {
        let mut room = Room::new();
        apply(
            &mut room,
            &publish("a", "sa", NOW, json!([])),
            false,
            NOW,
            || key(1),
        );
        let (a, sa, other) = (ctx("a"), sess("sa"), sess("sx"));
        assert!(!room.remove(&a, Some(&sa), &input(&key(2)), NOW));
        assert!(!room.remove(&a, Some(&other), &input(&key(1)), NOW));
        assert!(!room.remove(&ctx("b"), Some(&sa), &input(&key(1)), NOW));
        assert!(room.remove(&a, Some(&sa), &input(&key(1)), NOW));
        assert_eq!(room.live_count(NOW, &Outboxes::new()), 0);
    }

    #[test]
    fn stored_form_round_trips_and_bad_documents_read_as_empty() {
        let mut room = Room::new();
        apply(
            &mut room,
            &publish("a", "sa", NOW, json!([])),
            false,
            NOW,
            || key(1),
        );
        let bytes = room.encode();
        assert_eq!(Room::decode(&bytes), room);
        assert_eq!(Room::decode(b"not json"), Room::new());
        assert_eq!(Room::decode(br#"{"v":1,"e":{}}"#), Room::new());
        let o = outbox("sa", NOW, NOW + 1, json!([["sb", {"x": 1.50}]]));
        assert_eq!(Outbox::decode(&o.encode()), Some(o));
    }

    #[test]
    fn a_full_room_refuses_newcomers_but_not_its_members() {
        let mut room = Room::new();
        for n in 0..3u8 {
            let p = publish(&format!("c{n}"), &format!("s{n}"), NOW, json!([]));
            assert_eq!(
                room.apply_publish(&p, false, NOW, 3, || key(n)),
                Ok(IndexChange::Write)
            );
        }
        let newcomer = publish("c9", "s9", NOW, json!([]));
        assert_eq!(
            room.apply_publish(&newcomer, false, NOW, 3, || key(9)),
            Err(Error::RoomFull)
        );
        let heartbeat = publish("c0", "s0", NOW + 1, json!([]));
        assert_eq!(
            room.apply_publish(&heartbeat, false, NOW, 3, || key(0)),
            Ok(IndexChange::Write)
        );
        // Once an entry is surely gone, there is room again.
        let later = NOW + 2 * 60_000;
        assert_eq!(
            room.apply_publish(&newcomer, false, later, 3, || key(9)),
            Ok(IndexChange::Write)
        );
    }

    #[test]
    fn delete_keys_have_at_least_128_bits() {
        const { assert!(DELETE_KEY_BYTES * 8 >= 128) };
        assert_eq!(key(0).as_str().len(), 32);
    }
}
