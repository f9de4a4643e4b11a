//! The state of one room and the rules that change it.
//!
//! A room is an index (one R2 object: every participant's entry, keyed by
//! context id) plus one outbox per participant (its packages, in an object
//! only its own requests write). A steady poll reads the index alone: one
//! read whatever the room size, and who is in the room is decided from the
//! index alone. Outboxes are read only where packages can be waiting:
//! between two peers for [`JOIN_WINDOW_MS`] after the later one joined, or
//! where an entry announces packages for the caller. Expiry is judged at
//! read time, so an expired entry is never returned, with or without cleanup.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use crate::error::Error;
use crate::hints::Situation;
use crate::mailbox::Mailbox;
use crate::protocol::{
    ContextId, DeleteKeyInput, Millis, Package, PeerData, PeerView, PollResponse, Presence,
    Publish, SessionId,
};

/// What the engine needs of a member's public data, whatever the wire
/// protocol: the session id that routes packages to it (p2pcf: `d[0]`; the
/// relay: the peer id). Everything else is carried, compared and returned as is.
pub trait Member: Clone + PartialEq + fmt::Debug + Serialize + for<'de> Deserialize<'de> {
    /// How long after the later of two members joined each reads the
    /// other's outbox without being told to.
    const READ_WINDOW_MS: u64 = JOIN_WINDOW_MS;
    /// How long what an outbox holds for a member must stay findable by it
    /// after it was written: past the read window, it is announced.
    const HOLD_MS: u64 = ANNOUNCE_MARGIN_MS;
    /// How long an announcement lasts.
    const ANNOUNCED_FOR_MS: u64 = JOIN_WINDOW_MS;

    fn session(&self) -> &SessionId;
}

impl Member for PeerData {
    fn session(&self) -> &SessionId {
        &self.session
    }
}

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
/// The renewal window: the last this-many ms of an entry's life (or the last
/// half, if shorter). Writes the index did not see (packages, withdrawals,
/// the stock client's heartbeat 30 s before the expiry) are folded into the
/// entry by its owner's polls inside this window (see [`Room::apply`]).
pub const RENEW_WINDOW_MS: u64 = 60_000;
/// The end of the window: a renewal then is urgent and any request of the
/// owner tries hard to land it.
pub const RENEW_URGENT_MS: u64 = 10_000;
/// A heartbeat this much earlier than the renewal window is written at once
/// (a client on its own schedule); later ones are left to the polls.
pub const HEARTBEAT_SLACK_MS: u64 = 10_000;
/// How long a leave is remembered: no request of the left session, even
/// one that started before the leave, can bring the entry back.
pub const DEPARTURE_MEMORY_MS: u64 = 120_000;
/// Most departures a room remembers (the oldest is forgotten first).
pub const MAX_DEPARTURES: usize = 64;

/// "The outbox of this entry holds packages for `to`": makes `to` read it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    #[serde(rename = "s")]
    pub to: SessionId,
    #[serde(rename = "u")]
    pub until_ms: u64,
}

/// One participant's entry in the room index. Whether it is in `ps` is
/// decided by this entry alone: live while `expires_ms` lies ahead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "D: Member")]
pub struct Entry<D = PeerData> {
    /// The member's public data (p2pcf: `d`).
    pub d: D,
    /// The client's `t` at the last index write.
    pub t: Millis,
    /// Last index write + lifetime, ms since the epoch.
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
    /// Relay letters carried in the index itself (a small batch that opens
    /// a conversation outside a join window: one write instead of an outbox
    /// write plus an announcement), read by every poll. (Until this format,
    /// `i` held them one copy per recipient; such copies are ignored.)
    #[serde(rename = "b", default, skip_serializing_if = "Mailbox::is_empty")]
    pub mail: Mailbox,
}

impl<D: Member> Entry<D> {
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_ms
    }

    fn renewal_window(&self) -> u64 {
        RENEW_WINDOW_MS.min(self.ttl_ms / 2)
    }

    /// When a renewal of this entry falls due: a moment in the first half of
    /// its window picked from its context id and expiry, so that entries
    /// which expire together (a room that filled at once) renew apart.
    fn renewal_due_ms(&self, context: &ContextId) -> u64 {
        let window = self.renewal_window();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in context
            .as_str()
            .bytes()
            .chain(self.expires_ms.to_le_bytes())
        {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.expires_ms.saturating_sub(window) + h % (window / 2).max(1)
    }

    /// In the last [`RENEW_WINDOW_MS`] of its life.
    pub fn in_renewal_window(&self, now_ms: u64) -> bool {
        self.expires_ms < now_ms.saturating_add(self.renewal_window())
    }

    /// Close enough to its expiry that a renewal must not wait any longer.
    pub fn renewal_urgent(&self, now_ms: u64) -> bool {
        let urgent = RENEW_URGENT_MS.min(self.renewal_window() / 2);
        self.expires_ms < now_ms.saturating_add(urgent)
    }

    /// Server time of the last index write.
    fn written_ms(&self) -> u64 {
        self.expires_ms.saturating_sub(self.ttl_ms)
    }

    /// Server time of a client write stamped `t` (client clock), mapped with
    /// the offset between the clocks seen at the last index write; never later than now.
    fn server_time_of(&self, t: &Millis, now_ms: u64) -> u64 {
        let offset = self.written_ms() as f64 - self.t.as_f64();
        (t.as_f64() + offset).clamp(0.0, now_ms as f64) as u64
    }

    fn valid_announcements(&self, now_ms: u64) -> Vec<Announcement> {
        self.announced
            .iter()
            .filter(|a| a.until_ms > now_ms)
            .cloned()
            .collect()
    }
}

/// A package in an outbox, bound to the context its recipient had when it
/// was written: only that context receives it, so a session id claimed
/// later by someone else gets nothing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sent {
    pub to: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<ContextId>,
    pub raw: Box<RawValue>,
}

impl PartialEq for Sent {
    fn eq(&self, other: &Self) -> bool {
        self.to == other.to && self.k == other.k && self.raw.get() == other.raw.get()
    }
}

impl Sent {
    /// The same package as `package` (recipient and bytes).
    pub fn is(&self, package: &Package) -> bool {
        self.to == package.to && self.raw.get() == package.raw.get()
    }
}

/// The packages one context sends, in an R2 object of its own
/// (`rooms/<room>/c/<context>`), written only by that context's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outbox {
    #[serde(rename = "s")]
    pub session: SessionId,
    pub t: Millis,
    /// Write time + the writer's lifetime: how fresh the packages are, and
    /// how long this write keeps its writer alive (see [`Room::fold`]).
    #[serde(rename = "x")]
    pub expires_ms: u64,
    /// The writer's lifetime (0 in outboxes written before it was stored).
    #[serde(rename = "l", default)]
    pub ttl_ms: u64,
    pub p: Vec<Sent>,
    /// A relay member's letters (p2pcf outboxes have none).
    #[serde(rename = "b", default, skip_serializing_if = "Mailbox::is_empty")]
    pub mail: Mailbox,
}

impl Outbox {
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The publish's packages against what this outbox holds.
    pub fn compare(stored: Option<&Outbox>, packages: &[Package]) -> PackageChange {
        let held: &[Sent] = stored.map_or(&[], |o| &o.p);
        if held.len() == packages.len() && held.iter().zip(packages).all(|(s, p)| s.is(p)) {
            PackageChange::Same
        } else if packages.len() < held.len()
            && packages.iter().all(|p| held.iter().any(|s| s.is(p)))
        {
            PackageChange::Withdrawn
        } else {
            PackageChange::New
        }
    }
}

/// What a publish does to the caller's packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageChange {
    /// The same packages: a heartbeat (or a retry).
    Same,
    /// Only packages removed. The stock client withdraws a package once its
    /// peer is connected; the connected peer ignores it from then on, and
    /// nobody reads the outbox for it after the join window, so this is not
    /// written (it would be a second write per peer per join).
    Withdrawn,
    /// New packages: the outbox is written first.
    New,
}

/// Outboxes read for one request, by context.
pub type Outboxes = BTreeMap<ContextId, Outbox>;

/// A left (context, session): remembered so that a request of that session
/// which started before the leave cannot re-create the entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Departure {
    pub k: ContextId,
    pub s: SessionId,
    #[serde(rename = "u")]
    pub until_ms: u64,
}

/// A stored index this build cannot read (newer format, or damaged). It is
/// never written over: the request answers 503 and the document stays.
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable;

/// The room index, as stored: every participant's entry by context id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(bound = "D: Member")]
pub struct Room<D = PeerData> {
    /// Format version of the stored document.
    v: u32,
    #[serde(rename = "e")]
    entries: BTreeMap<ContextId, Entry<D>>,
    /// Last join or leave written to the index, ms since the epoch.
    #[serde(rename = "m", default)]
    membership_changed_ms: u64,
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    departures: Vec<Departure>,
}

/// Whether a request needs the index written.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexChange {
    /// Nothing the index holds changed.
    Unchanged,
    /// The entry was created or changed: write the index.
    Write,
}

/// A client saying "I am here": its context, data and last write (`t`, client clock).
#[derive(Debug)]
pub struct Claim<'a, D = PeerData> {
    pub context: &'a ContextId,
    pub data: &'a D,
    pub t: &'a Millis,
    pub ttl_ms: u64,
    /// Whether this claim may create an entry. A p2pcf client believes it
    /// is in the room and is registered by its next write or poll; a relay
    /// member proves itself with its token, so its claim never registers
    /// (an expired member is told 410 and joins anew).
    pub may_join: bool,
}

impl<D> Clone for Claim<'_, D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for Claim<'_, D> {}

impl<'a> Claim<'a, PeerData> {
    pub fn of_publish(p: &'a Publish) -> Self {
        Self {
            context: &p.context,
            data: &p.data,
            t: &p.t,
            ttl_ms: p.ttl_ms,
            may_join: true,
        }
    }

    pub fn of_presence(context: &'a ContextId, p: &'a Presence) -> Self {
        Self {
            context,
            data: &p.data,
            t: &p.t,
            ttl_ms: p.ttl_ms,
            may_join: true,
        }
    }
}

/// The request a claim comes with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrival<'a> {
    /// A poll with `d`: registers the caller if it has no entry, renews its
    /// entry when it wrote since the last index write and the entry nears expiry.
    Poll,
    /// A heartbeat written to the index now (when the key is idle; else it
    /// goes to the outbox and a renewal folds it in later).
    Beat,
    /// A publish with `d` and `p` (or relay messages); `recipients`: of
    /// the packages not in the outbox before.
    Publish {
        change: PackageChange,
        recipients: &'a [SessionId],
    },
}

impl<D: Member> Room<D> {
    const VERSION: u32 = 2;

    pub fn new() -> Self {
        Self {
            v: Self::VERSION,
            entries: BTreeMap::new(),
            membership_changed_ms: 0,
            departures: Vec::new(),
        }
    }

    /// Reads a stored index. A document of another version or one that
    /// does not parse is [`Unreadable`], never an empty room: writing over
    /// it would silently wipe the room (a rollback, a stricter validator).
    pub fn decode(bytes: &[u8]) -> Result<Self, Unreadable> {
        serde_json::from_slice::<Self>(bytes)
            .ok()
            .filter(|r| r.v == Self::VERSION)
            .ok_or(Unreadable)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data structures to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn entry(&self, context: &ContextId) -> Option<&Entry<D>> {
        self.entries.get(context)
    }

    /// The caller's own live entry, if `session` is the one stored for `context`.
    fn own(&self, context: &ContextId, session: &SessionId, now_ms: u64) -> Option<&Entry<D>> {
        self.entries
            .get(context)
            .filter(|e| *e.d.session() == *session && e.is_live(now_ms))
    }

    pub fn owns_live_entry(&self, context: &ContextId, session: &SessionId, now_ms: u64) -> bool {
        self.own(context, session, now_ms).is_some()
    }

    /// The letters carried in `context`'s entry (see [`Entry::mail`]).
    pub fn mail_mut(&mut self, context: &ContextId) -> Option<&mut Mailbox> {
        self.entries.get_mut(context).map(|e| &mut e.mail)
    }

    /// Every live entry, by context.
    pub fn entries_live(&self, now_ms: u64) -> impl Iterator<Item = (&ContextId, &Entry<D>)> {
        self.entries.iter().filter(move |(_, e)| e.is_live(now_ms))
    }

    /// The data of every live member.
    pub fn live_members(&self, now_ms: u64) -> impl Iterator<Item = &D> {
        self.entries
            .values()
            .filter(move |e| e.is_live(now_ms))
            .map(|e| &e.d)
    }

    /// Number of live entries.
    pub fn live_count(&self, now_ms: u64) -> usize {
        self.entries.values().filter(|e| e.is_live(now_ms)).count()
    }

    /// The context that holds `session` now, if any.
    pub fn context_of(&self, session: &SessionId, now_ms: u64) -> Option<&ContextId> {
        self.entries
            .iter()
            .find(|(_, e)| *e.d.session() == *session && e.is_live(now_ms))
            .map(|(k, _)| k)
    }

    /// Drops expired entries and forgotten departures (on every write, at no extra cost).
    pub fn prune(&mut self, now_ms: u64) {
        self.entries.retain(|_, e| e.is_live(now_ms));
        self.departures.retain(|d| d.until_ms > now_ms);
        if self.departures.len() > MAX_DEPARTURES {
            self.departures.sort_by_key(|d| d.until_ms);
            let excess = self.departures.len() - MAX_DEPARTURES;
            self.departures.drain(..excess);
        }
    }

    /// Refuses a claim the room must not take: a session that left (from
    /// any context) or that another context holds.
    pub fn check(&self, claim: &Claim<'_, D>, now_ms: u64) -> Result<(), Error> {
        let session = claim.data.session();
        let left = self
            .departures
            .iter()
            .find(|d| d.s == *session && d.until_ms > now_ms);
        if let Some(d) = left {
            return Err(if d.k == *claim.context {
                Error::Left
            } else {
                Error::BadRequest("Session id in use")
            });
        }
        // A session id belongs to one context: claiming another's would
        // receive the packages addressed to it.
        let taken = self
            .entries
            .iter()
            .any(|(k, e)| k != claim.context && *e.d.session() == *session && e.is_live(now_ms));
        if taken {
            return Err(Error::BadRequest("Session id in use"));
        }
        Ok(())
    }

    /// Applies a claim to the index and says whether to write it.
    ///
    /// * No live entry for this (context, session): the caller joins (a
    ///   publish, or a poll with `d`: the client believes it is here, e.g.
    ///   after its publish was refused). One entry per context: a reload's
    ///   new session replaces the old one, with a new delete key. Refused
    ///   with [`Error::RoomFull`] when `max_peers` others are live.
    /// * A publish writes the index for a changed `d`, new announcements,
    ///   a heartbeat long before the renewal window, or an urgent renewal
    ///   ([`RENEW_URGENT_MS`]). New packages inside join windows,
    ///   withdrawals and heartbeats inside the window (the stock client's)
    ///   leave the index alone: that is what lets a whole room hand over
    ///   packages at once without queueing on one key.
    /// * Those writes still moved the client's next heartbeat (the stock
    ///   client counts 90 s from any write). So a poll whose `t` is newer
    ///   than the entry's renews it, to that write + its lifetime, once the
    ///   entry's renewal falls due ([`RENEW_WINDOW_MS`]; each entry at its
    ///   own moment in the window's first half). Liveness is thus always in the index: a poll never needs
    ///   an outbox read to know who is here. A client that dies right after
    ///   an unwritten write expires at its earlier index expiry: sooner,
    ///   never later, than "last write + x".
    pub fn apply(
        &mut self,
        claim: &Claim<'_, D>,
        arrival: Arrival<'_>,
        now_ms: u64,
        max_peers: usize,
        new_key: impl FnOnce() -> DeleteKey,
    ) -> Result<IndexChange, Error> {
        self.check(claim, now_ms)?;
        let session = claim.data.session();
        let Some(current) = self.own(claim.context, session, now_ms) else {
            if !claim.may_join {
                return Err(Error::Left);
            }
            self.prune(now_ms);
            let others = self.entries.keys().filter(|k| *k != claim.context).count();
            if others >= max_peers {
                return Err(Error::RoomFull);
            }
            let announced = match arrival {
                Arrival::Publish { change, recipients } => {
                    self.announcements(claim, change, recipients, now_ms)
                }
                Arrival::Poll | Arrival::Beat => Vec::new(),
            };
            let entry = Entry {
                d: claim.data.clone(),
                t: claim.t.clone(),
                expires_ms: now_ms.saturating_add(claim.ttl_ms),
                ttl_ms: claim.ttl_ms,
                dk: new_key(),
                joined_ms: now_ms,
                announced,
                mail: Mailbox::default(),
            };
            self.entries.insert(claim.context.clone(), entry);
            self.membership_changed_ms = now_ms;
            return Ok(IndexChange::Write);
        };
        let newer = claim.t.as_f64() > current.t.as_f64();
        let (written_ms, announced) = match arrival {
            Arrival::Poll => {
                // The client's last write, as it reports it, mapped to server time.
                let at = current.server_time_of(claim.t, now_ms);
                let extends = at.saturating_add(claim.ttl_ms) > current.expires_ms;
                let due = now_ms >= current.renewal_due_ms(claim.context);
                if !(newer && extends && (due || current.d != *claim.data)) {
                    return Ok(IndexChange::Unchanged);
                }
                (at, current.valid_announcements(now_ms))
            }
            Arrival::Beat => {
                if !newer && current.d == *claim.data {
                    return Ok(IndexChange::Unchanged);
                }
                (now_ms, current.valid_announcements(now_ms))
            }
            Arrival::Publish { change, recipients } => {
                if current.t == *claim.t && current.d == *claim.data {
                    return Ok(IndexChange::Unchanged); // a retry of a stored write
                }
                let announced = self.announcements(claim, change, recipients, now_ms);
                // A heartbeat inside the window (the stock client's, 30 s
                // before the expiry) is left to the polls that follow; an
                // earlier one is written.
                let left = current.expires_ms.saturating_sub(now_ms);
                let early_heartbeat = change == PackageChange::Same
                    && left > current.renewal_window() + HEARTBEAT_SLACK_MS;
                let needed = current.d != *claim.data
                    || current.renewal_urgent(now_ms)
                    || early_heartbeat
                    || (change == PackageChange::New
                        && announced != current.valid_announcements(now_ms));
                if !needed {
                    return Ok(IndexChange::Unchanged);
                }
                (now_ms, announced)
            }
        };
        let entry = Entry {
            d: claim.data.clone(),
            t: claim.t.clone(),
            expires_ms: written_ms.saturating_add(claim.ttl_ms),
            ttl_ms: claim.ttl_ms,
            dk: current.dk.clone(),
            joined_ms: current.joined_ms,
            announced,
            mail: current.mail.clone(),
        };
        self.prune(now_ms);
        self.entries.insert(claim.context.clone(), entry);
        Ok(IndexChange::Write)
    }

    /// Announcements the caller's entry must carry: still-valid earlier ones,
    /// plus recipients of new packages whose join window with the caller
    /// closes within [`ANNOUNCE_MARGIN_MS`].
    fn announcements(
        &self,
        claim: &Claim<'_, D>,
        change: PackageChange,
        recipients: &[SessionId],
        now_ms: u64,
    ) -> Vec<Announcement> {
        let own = self.own(claim.context, claim.data.session(), now_ms);
        let mut out = own.map_or_else(Vec::new, |e| e.valid_announcements(now_ms));
        if change != PackageChange::New {
            return out;
        }
        let my_join = own.map_or(now_ms, |e| e.joined_ms);
        for to in recipients {
            let Some(recipient) = self
                .entries
                .values()
                .find(|e| *e.d.session() == *to && e.is_live(now_ms))
            else {
                continue; // not in the room: nobody will ask for it
            };
            let window_end = my_join.max(recipient.joined_ms) + D::READ_WINDOW_MS;
            let covered = window_end >= now_ms + D::HOLD_MS
                || out
                    .iter()
                    .any(|a| a.to == *to && a.until_ms >= now_ms + D::HOLD_MS);
            if !covered {
                out.retain(|a| a.to != *to);
                out.push(Announcement {
                    to: to.clone(),
                    until_ms: now_ms + D::ANNOUNCED_FOR_MS,
                });
            }
        }
        out
    }

    /// Other entries whose renewal is due, most urgent first, at most
    /// `limit`: a renewal reads their outboxes and folds them in (see [`Room::fold`]).
    pub fn renewals_to_fold(
        &self,
        context: &ContextId,
        now_ms: u64,
        limit: usize,
    ) -> Vec<ContextId> {
        let mut due: Vec<(&ContextId, &Entry<D>)> = self
            .entries
            .iter()
            .filter(|(k, e)| *k != context && e.is_live(now_ms) && now_ms >= e.renewal_due_ms(k))
            .collect();
        due.sort_by_key(|(_, e)| e.expires_ms);
        due.into_iter()
            .take(limit)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Folds writes that reached only an outbox (a heartbeat while the
    /// index was busy, packages) into their entries: an entry whose own
    /// outbox was written later than the index knows lives until that
    /// write plus its lifetime, exactly as if the write had reached the
    /// index. One index write thus renews many entries. Returns how many it extended.
    pub fn fold(&mut self, outboxes: &Outboxes, now_ms: u64) -> usize {
        let mut extended = 0;
        for (k, e) in &mut self.entries {
            let Some(o) = outboxes.get(k).filter(|o| o.session == *e.d.session()) else {
                continue;
            };
            if e.is_live(now_ms)
                && o.ttl_ms > 0
                && o.t.as_f64() > e.t.as_f64()
                && o.expires_ms > e.expires_ms
            {
                e.expires_ms = o.expires_ms;
                e.ttl_ms = o.ttl_ms;
                e.t = o.t.clone();
                extended += 1;
            }
        }
        extended
    }

    /// Binds each package to its recipient's current context (see [`Sent`]).
    pub fn address(&self, packages: &[Package], now_ms: u64) -> Vec<Sent> {
        packages
            .iter()
            .map(|p| Sent {
                to: p.to.clone(),
                k: self.context_of(&p.to, now_ms).cloned(),
                raw: p.raw.clone(),
            })
            .collect()
    }

    /// Removes the caller's entry if context, session (when given) and
    /// delete key all match, and remembers the departure. Returns whether it did.
    pub fn remove(
        &mut self,
        context: &ContextId,
        session: Option<&SessionId>,
        key: &DeleteKeyInput,
        now_ms: u64,
    ) -> bool {
        let owned = self.entries.get(context).is_some_and(|e| {
            e.is_live(now_ms) && session.is_none_or(|s| s == e.d.session()) && e.dk.matches(key)
        });
        if let Some(entry) = owned.then(|| self.entries.remove(context)).flatten() {
            self.departures.push(Departure {
                k: context.clone(),
                s: entry.d.session().clone(),
                until_ms: now_ms + DEPARTURE_MEMORY_MS,
            });
            self.prune(now_ms);
            self.membership_changed_ms = now_ms;
        }
        owned
    }

    /// The outboxes a view for `context`/`session` needs, at most `limit`:
    /// those announced to the caller, then those of peers in a join window
    /// with the caller, each list taken in a rotation that moves by `limit`
    /// every second, so that a newcomer's polls (1-2 s apart) cover a full
    /// room in two or three polls. In a steady room this is empty: a poll is one read.
    pub fn outboxes_to_read(
        &self,
        context: &ContextId,
        session: Option<&SessionId>,
        now_ms: u64,
        limit: usize,
    ) -> Vec<ContextId> {
        let Some((session, me)) = session.and_then(|s| Some((s, self.own(context, s, now_ms)?)))
        else {
            return Vec::new(); // no entry, no packages
        };
        let mut announced = Vec::new();
        let mut windows = Vec::new();
        for (k, e) in &self.entries {
            if k == context || !e.is_live(now_ms) {
                continue;
            }
            if e.announced
                .iter()
                .any(|a| a.to == *session && now_ms < a.until_ms)
            {
                announced.push(k.clone());
            } else if now_ms < me.joined_ms.max(e.joined_ms) + D::READ_WINDOW_MS {
                windows.push(k.clone());
            }
        }
        // Each second starts one block of `limit` further on, so polls in
        // consecutive seconds read consecutive blocks.
        let offset = (now_ms / 1000) as usize;
        for list in [&mut announced, &mut windows] {
            if !list.is_empty() {
                let n = list.len();
                list.rotate_left(offset.wrapping_mul(limit.max(1)) % n);
            }
        }
        announced.extend(windows);
        announced.truncate(limit);
        announced
    }

    /// What the polling hint for the caller depends on, from this index and
    /// the outboxes read for the view. Packages count as waiting for the
    /// caller while their outbox is younger than `fresh_ms`.
    pub fn situation(
        &self,
        context: &ContextId,
        session: Option<&SessionId>,
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
            if !e.is_live(now_ms) {
                changed = changed.max(e.expires_ms);
                continue;
            }
            others += 1;
            let outbox = outboxes.get(k).filter(|o| o.session == *e.d.session());
            // Packages written within `fresh_ms` (older ones were seen already).
            if let (Some(o), Some(_)) = (outbox, me) {
                let written = o.expires_ms.saturating_sub(e.ttl_ms);
                if now_ms < written.saturating_add(fresh_ms) {
                    fresh_packages += o.p.iter().filter(|p| p.k.as_ref() == Some(context)).count();
                }
            }
            // Relay letters for the caller sent within `fresh_ms`.
            if let Some(me) = me {
                let carried = e.mail.letters.iter();
                let boxed = outbox.into_iter().flat_map(|o| o.mail.letters.iter());
                fresh_packages += carried
                    .chain(boxed)
                    .filter(|l| {
                        l.is_for(me.d.session()) && now_ms < l.at_ms.saturating_add(fresh_ms)
                    })
                    .count();
            }
            in_join_window |=
                me.is_some_and(|m| now_ms < m.joined_ms.max(e.joined_ms) + JOIN_WINDOW_MS);
        }
        Situation {
            now_ms,
            own: me.map(|m| (m.joined_ms, m.expires_ms)),
            others,
            packages_for_caller: fresh_packages,
            in_join_window,
            membership_changed_ms: changed,
        }
    }
}

impl Room<PeerData> {
    /// The poll response for `context`: every other live peer (with the
    /// newer of its index and outbox `t`), and the packages in the outboxes
    /// at hand addressed to `session` *and* bound to `context`, given only
    /// to the live entry holding both. `dk` is included when given.
    pub fn view<'a>(
        &'a self,
        context: &'a ContextId,
        session: Option<&SessionId>,
        dk: Option<&'a DeleteKey>,
        outboxes: &'a Outboxes,
        now_ms: u64,
    ) -> PollResponse<'a> {
        let others = || {
            self.entries
                .iter()
                .filter(move |(k, e)| *k != context && e.is_live(now_ms))
                .map(|(k, e)| (e, outboxes.get(k).filter(|o| o.session == *e.d.session())))
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
                    .filter(|p| p.to == *me && p.k.as_ref() == Some(context))
                    .map(|p| &*p.raw)
                    .collect(),
                None => Vec::new(),
            },
            dk: dk.map(DeleteKey::as_str),
            hint: None,
        }
    }
}

impl<D: Member> Default for Room<D> {
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
    const TTL: u64 = 120_000;

    fn body(k: &str, session: &str, t: u64, p: Option<serde_json::Value>) -> Request {
        let mut body = json!({"r": "room", "k": k, "d": [session, "client", false, "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=", 1, []], "t": t, "x": TTL});
        if let Some(p) = p {
            body["p"] = p;
        }
        parse_request(
            &serde_json::to_vec(&body).unwrap(),
            false,
            &crate::limits::Limits::default(),
        )
        .unwrap()
    }

    fn publish(k: &str, session: &str, t: u64, p: serde_json::Value) -> Publish {
        match body(k, session, t, Some(p)) {
            Request::Publish(p) => p,
            other => panic!("not a publish: {other:?}"),
        }
    }

    fn presence(k: &str, session: &str, t: u64) -> Presence {
        match body(k, session, t, None) {
            Request::Poll {
                presence: Some(p), ..
            } => p,
            other => panic!("not a poll with d: {other:?}"),
        }
    }

    /// A package from `from` to `to`, as the stock client shapes it.
    fn pkg(to: &str, from: &str, n: u64) -> serde_json::Value {
        json!([to, from, null, null, null, "u", "p", n, []])
    }

    /// Applies a publish whose package change is judged against `held`.
    fn apply_held(
        room: &mut Room,
        p: &Publish,
        held: Option<&Outbox>,
        now: u64,
        k: impl FnOnce() -> DeleteKey,
    ) -> IndexChange {
        let change = Outbox::compare(held, &p.packages);
        let recipients: Vec<SessionId> = p.packages.iter().map(|p| p.to.clone()).collect();
        let arrival = Arrival::Publish {
            change,
            recipients: &recipients,
        };
        room.apply(&Claim::of_publish(p), arrival, now, 32, k)
            .unwrap()
    }

    /// Applies a publish without packages held before (a join or heartbeat).
    fn apply(room: &mut Room, p: &Publish, now: u64, k: impl FnOnce() -> DeleteKey) -> IndexChange {
        apply_held(room, p, None, now, k)
    }

    fn apply_poll(
        room: &mut Room,
        k: &str,
        session: &str,
        t: u64,
        now: u64,
    ) -> Result<IndexChange, Error> {
        let presence = presence(k, session, t);
        let context = ctx(k);
        room.apply(
            &Claim::of_presence(&context, &presence),
            Arrival::Poll,
            now,
            32,
            || key(99),
        )
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

    /// The outbox `room` would store for this publish at `now`.
    fn outbox_of(room: &Room, p: &Publish, now: u64) -> Outbox {
        Outbox {
            session: p.data.session.clone(),
            t: p.t.clone(),
            expires_ms: now + p.ttl_ms,
            ttl_ms: p.ttl_ms,
            p: room.address(&p.packages, now),
            mail: Default::default(),
        }
    }

    fn sessions_in(view: &PollResponse<'_>) -> Vec<String> {
        view.ps
            .iter()
            .map(|p| p.data.session.as_str().to_owned())
            .collect()
    }

    #[test]
    fn index_writes_keep_the_key_and_skip_same_t() {
        let mut room = Room::new();
        let a = ctx("a");
        let first = publish("a", "s1", NOW, json!([]));
        assert_eq!(apply(&mut room, &first, NOW, || key(1)), IndexChange::Write);
        assert_eq!(
            apply(&mut room, &first, NOW, || key(2)),
            IndexChange::Unchanged
        );
        // A heartbeat 30 s before the expiry, inside the renewal window, is
        // not written by `apply` (the service stores it in the outbox when
        // the index key is busy) ...
        let beat = NOW + 90_000;
        let heartbeat = publish("a", "s1", beat, json!([]));
        assert_eq!(
            apply(&mut room, &heartbeat, beat, || key(3)),
            IndexChange::Unchanged
        );
        // ... and the poll that follows inside the window renews it to the heartbeat + lifetime.
        assert_eq!(
            apply_poll(&mut room, "a", "s1", beat, beat + 6_000),
            Ok(IndexChange::Write)
        );
        assert_eq!(room.entry(&a).unwrap().expires_ms, beat + TTL);
        // A heartbeat that comes when the renewal is urgent is written itself; the key is kept.
        let late = beat + TTL - 5_000;
        let heartbeat = publish("a", "s1", late, json!([]));
        assert_eq!(
            apply(&mut room, &heartbeat, late, || key(3)),
            IndexChange::Write
        );
        assert_eq!(room.entry(&a).unwrap().expires_ms, late + TTL);
        assert_eq!(room.entry(&a).unwrap().dk, key(1));
        // A new session in the same context replaces the entry with a new key and join time.
        apply(
            &mut room,
            &publish("a", "s2", NOW + 2, json!([])),
            NOW + 5,
            || key(4),
        );
        assert_eq!(room.entry(&a).unwrap().dk, key(4));
        assert_eq!(room.entry(&a).unwrap().joined_ms, NOW + 5);
        assert_eq!(room.live_count(NOW + 5), 1);
    }

    #[test]
    fn packages_within_a_join_window_leave_the_index_alone() {
        let mut room = Room::new();
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            NOW + 30_000,
            || key(1),
        );
        apply(
            &mut room,
            &publish("a", "sa", NOW, json!([])),
            NOW + 60_000,
            || key(2),
        );
        // b sends a package to the newcomer a 5 s after it joined: outbox only.
        let to_a = publish("b", "sb", NOW + 65_000, json!([pkg("sa", "sb", 1)]));
        assert_eq!(
            apply(&mut room, &to_a, NOW + 65_000, || key(3)),
            IndexChange::Unchanged
        );
        // Withdrawing it (the stock client does, once connected) writes nothing.
        let held = outbox_of(&room, &to_a, NOW + 65_000);
        let withdrawn = publish("b", "sb", NOW + 68_000, json!([]));
        assert_eq!(
            Outbox::compare(Some(&held), &withdrawn.packages),
            PackageChange::Withdrawn
        );
        assert_eq!(
            apply_held(&mut room, &withdrawn, Some(&held), NOW + 68_000, || key(3)),
            IndexChange::Unchanged
        );
        // A package when the window (a's join + 45 s) closes within 20 s is announced.
        let late = publish("b", "sb", NOW + 200_000, json!([pkg("sa", "sb", 2)]));
        let mut later = room.clone();
        assert_eq!(
            apply(&mut later, &late, NOW + 86_000, || key(3)),
            IndexChange::Write
        );
        let announced = &later.entry(&ctx("b")).unwrap().announced;
        assert_eq!(announced.len(), 1);
        assert_eq!(announced[0].to, sess("sa"));
    }

    /// Issue 9 §1: a peer alive on outbox writes alone stays in `ps`,
    /// decided by the index: its polls renew it before the index expiry.
    #[test]
    fn polls_renew_an_entry_that_wrote_only_packages() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            NOW + 40_000,
            || key(2),
        );
        // a writes a package to b at +45 s (outbox only); its client's next
        // heartbeat is 90 s after that, past the index expiry (+120 s).
        let t = NOW + 45_000;
        let p = publish("a", "sa", t, json!([pkg("sb", "sa", 1)]));
        assert_eq!(apply(&mut room, &p, t, || key(1)), IndexChange::Unchanged);
        // A poll before the renewal window does not write (no hot key after a join).
        assert_eq!(
            apply_poll(&mut room, "a", "sa", t, NOW + 55_000),
            Ok(IndexChange::Unchanged)
        );
        // Once its renewal is due (by the middle of the window) it writes,
        // to the package write + lifetime.
        assert_eq!(
            apply_poll(&mut room, "a", "sa", t, NOW + 91_000),
            Ok(IndexChange::Write)
        );
        let a = room.entry(&ctx("a")).unwrap();
        assert_eq!(a.expires_ms, t + TTL);
        assert_eq!(a.dk, key(1), "the key is kept");
        // A poll that reports no newer write never renews: dead clients expire exactly.
        assert_eq!(
            apply_poll(&mut room, "b", "sb", NOW, NOW + 150_000),
            Ok(IndexChange::Unchanged)
        );
        let empty = Outboxes::new();
        let at = |now| sessions_in(&room.view(&ctx("b"), Some(&sess("sb")), None, &empty, now));
        assert_eq!(at(t + TTL - 1), vec!["sa"], "no outbox read needed");
        assert!(at(t + TTL).is_empty(), "exact expiry");
    }

    /// Issue 9 §2: a poll with `d` from a context with no entry registers it.
    #[test]
    fn a_poll_with_d_registers_a_missing_entry() {
        let mut room = Room::new();
        assert_eq!(
            apply_poll(&mut room, "a", "sa", NOW, NOW),
            Ok(IndexChange::Write)
        );
        let a = room.entry(&ctx("a")).unwrap();
        assert_eq!(
            (a.joined_ms, a.expires_ms, a.dk.clone()),
            (NOW, NOW + TTL, key(99))
        );
        // Once in, it is a read again.
        assert_eq!(
            apply_poll(&mut room, "a", "sa", NOW, NOW + 1000),
            Ok(IndexChange::Unchanged)
        );
    }

    /// Issue 9 §3: a leave stays a leave; a new session of the tab can join.
    #[test]
    fn a_left_session_cannot_come_back_but_a_new_one_can() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        assert!(room.remove(&ctx("a"), Some(&sess("sa")), &input(&key(1)), NOW + 1000));
        // A heartbeat that started before the leave, landing after it.
        let late = publish("a", "sa", NOW + 500, json!([]));
        let arrival = Arrival::Publish {
            change: PackageChange::Same,
            recipients: &[],
        };
        assert_eq!(
            room.apply(&Claim::of_publish(&late), arrival, NOW + 2000, 32, || key(
                2
            )),
            Err(Error::Left)
        );
        assert_eq!(
            apply_poll(&mut room, "a", "sa", NOW + 500, NOW + 3000),
            Err(Error::Left)
        );
        // Nor can another context take the left session id.
        assert!(apply_poll(&mut room, "x", "sa", NOW, NOW + 3000).is_err());
        // The reload: same tab, new session.
        assert_eq!(
            apply(
                &mut room,
                &publish("a", "sa2", NOW + 4000, json!([])),
                NOW + 4000,
                || key(3)
            ),
            IndexChange::Write
        );
        // Departures are forgotten after a while, and kept bounded.
        room.prune(NOW + 1000 + DEPARTURE_MEMORY_MS);
        assert!(room.departures.is_empty());
    }

    /// Issue 9 §4: packages go to the recipient's context, not to whoever
    /// holds its session id later.
    #[test]
    fn packages_are_bound_to_the_recipients_context() {
        let mut room = Room::new();
        apply(&mut room, &publish("b", "sb", NOW, json!([])), NOW, || {
            key(2)
        });
        let ta = NOW + 60_000;
        apply(&mut room, &publish("a", "sa", ta, json!([])), ta, || key(1));
        let p = publish("a", "sa", ta + 1, json!([pkg("sb", "sa", 1)]));
        let mut outboxes = Outboxes::new();
        outboxes.insert(ctx("a"), outbox_of(&room, &p, ta + 1000));
        let pk = |room: &Room, k: &str, now| {
            room.view(&ctx(k), Some(&sess("sb")), None, &outboxes, now)
                .pk
                .len()
        };
        assert_eq!(pk(&room, "b", ta + 2000), 1);
        // b's entry expires (a's does not); a thief's context claims session "sb".
        let later = NOW + TTL + 1;
        let mut stolen = room.clone();
        apply(
            &mut stolen,
            &publish("thief", "sb", later, json!([])),
            later,
            || key(3),
        );
        let thief = ctx("thief");
        let seen = stolen.view(&thief, Some(&sess("sb")), None, &outboxes, later + 1);
        assert_eq!(sessions_in(&seen), vec!["sa"], "a is still there");
        assert_eq!(pk(&stolen, "thief", later + 1), 0);
    }

    #[test]
    fn outboxes_are_read_only_where_packages_can_wait() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        apply(
            &mut room,
            &publish("b", "sb", NOW, json!([])),
            NOW + 1000,
            || key(2),
        );
        let (a, sa) = (ctx("a"), sess("sa"));
        assert_eq!(
            room.outboxes_to_read(&a, Some(&sa), NOW + 2000, 20),
            vec![ctx("b")]
        );
        assert!(room
            .outboxes_to_read(&a, Some(&sa), NOW + 2000, 0)
            .is_empty());
        assert!(room.outboxes_to_read(&a, None, NOW + 2000, 20).is_empty());
        // Steady: windows closed, nothing announced: nothing to read, even
        // past b's index expiry (liveness is in the index).
        assert!(room
            .outboxes_to_read(&a, Some(&sa), NOW + 50_000, 20)
            .is_empty());
    }

    /// Issue 9 §1: in a full 32-peer room a newcomer's window reads cover
    /// every peer within three polls 1.5 s apart, whatever the context ids sort like.
    #[test]
    fn window_reads_rotate_over_a_large_room() {
        let mut room = Room::new();
        for n in 0..31 {
            let p = publish(&format!("c{n:02}"), &format!("s{n:02}"), NOW, json!([]));
            apply(&mut room, &p, NOW, || key(1));
        }
        apply(
            &mut room,
            &publish("zz", "sz", NOW, json!([])),
            NOW + 1000,
            || key(2),
        );
        let mut seen = std::collections::BTreeSet::new();
        for poll in 0..3 {
            let now = NOW + 2000 + poll * 1500;
            seen.extend(room.outboxes_to_read(&ctx("zz"), Some(&sess("sz")), now, 20));
        }
        assert_eq!(seen.len(), 31);
    }

    #[test]
    fn remove_requires_context_session_and_key() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        let (a, sa, other) = (ctx("a"), sess("sa"), sess("sx"));
        assert!(!room.remove(&a, Some(&sa), &input(&key(2)), NOW));
        assert!(!room.remove(&a, Some(&other), &input(&key(1)), NOW));
        assert!(!room.remove(&ctx("b"), Some(&sa), &input(&key(1)), NOW));
        assert!(room.remove(&a, Some(&sa), &input(&key(1)), NOW));
        assert_eq!(room.live_count(NOW), 0);
    }

    /// Issue 9 §6: absent and undecodable differ.
    #[test]
    fn stored_form_round_trips_and_unknown_documents_are_unreadable() {
        let mut room = Room::new();
        apply(&mut room, &publish("a", "sa", NOW, json!([])), NOW, || {
            key(1)
        });
        let bytes = room.encode();
        assert_eq!(Room::decode(&bytes), Ok(room.clone()));
        assert_eq!(Room::<PeerData>::decode(b"not json"), Err(Unreadable));
        assert_eq!(
            Room::<PeerData>::decode(br#"{"v":3,"e":{}}"#),
            Err(Unreadable)
        );
        let p = publish("a", "sa", NOW, json!([pkg("sb", "sa", 1)]));
        let o = outbox_of(&room, &p, NOW);
        assert_eq!(Outbox::decode(&o.encode()), Some(o));
    }

    #[test]
    fn a_full_room_refuses_newcomers_but_not_its_members() {
        let mut room = Room::new();
        let arrival = Arrival::Publish {
            change: PackageChange::Same,
            recipients: &[],
        };
        for n in 0..3u8 {
            let p = publish(&format!("c{n}"), &format!("s{n}"), NOW, json!([]));
            assert_eq!(
                room.apply(&Claim::of_publish(&p), arrival, NOW, 3, || key(n)),
                Ok(IndexChange::Write)
            );
        }
        let newcomer = publish("c9", "s9", NOW, json!([]));
        assert_eq!(
            room.apply(&Claim::of_publish(&newcomer), arrival, NOW, 3, || key(9)),
            Err(Error::RoomFull)
        );
        let d_change = publish("c0", "s0", NOW + 1, json!([]));
        let mut d_change = d_change;
        d_change.data.symmetric = true;
        assert_eq!(
            room.apply(&Claim::of_publish(&d_change), arrival, NOW, 3, || key(0)),
            Ok(IndexChange::Write)
        );
        // Issue 9 §6: an expired entry holds no slot, pruned or not.
        let later = NOW + TTL;
        assert_eq!(
            room.apply(&Claim::of_publish(&newcomer), arrival, later, 3, || key(9)),
            Ok(IndexChange::Write)
        );
    }

    #[test]
    fn delete_keys_have_at_least_128_bits() {
        const { assert!(DELETE_KEY_BYTES * 8 >= 128) };
        assert_eq!(key(0).as_str().len(), 32);
    }
}
