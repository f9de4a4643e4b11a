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

use std::fmt;

use crate::domain::{
    sort_by_u64, sort_unstable_by, ContextId, DeleteKey, DeleteKeyInput, Millis, SessionId,
};
use crate::engine::hints::Situation;
use crate::engine::mailbox::Mailbox;
use crate::error::Error;
use crate::json::{self, once, required, Bad, FromJson, Raw, Read, Reader, ToJson, Writer};
use crate::vec_map::VecMap;

/// What the engine needs of a member's public data, whatever the wire
/// protocol: the session id that routes packages to it (p2pcf: `d[0]`; the
/// relay: the peer id). Everything else is carried, compared and returned as is.
pub trait Member: Clone + PartialEq + fmt::Debug + ToJson + FromJson {
    /// How long after the later of two members joined each reads the
    /// other's outbox without being told to.
    const READ_WINDOW_MS: u64 = JOIN_WINDOW_MS;
    /// How long what an outbox holds for a member must stay findable by it
    /// after it was written: past the read window, it is announced.
    const HOLD_MS: u64 = ANNOUNCE_MARGIN_MS;
    /// How long an announcement lasts.
    const ANNOUNCED_FOR_MS: u64 = JOIN_WINDOW_MS;
    /// A heartbeat this much earlier than the renewal window is written at
    /// once (a client on its own schedule); later ones are left to the polls.
    const HEARTBEAT_SLACK_MS: u64 = 0;

    fn session(&self) -> &SessionId;
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
/// How long a leave is remembered: no request of the left session, even
/// one that started before the leave, can bring the entry back.
pub const DEPARTURE_MEMORY_MS: u64 = 120_000;
/// Most departures a room remembers (the oldest is forgotten first).
pub const MAX_DEPARTURES: usize = 64;

/// "The outbox of this entry holds packages for `to`": makes `to` read it.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    pub to: SessionId,
    pub until_ms: u64,
}

/// One participant's entry in the room index. Whether it is in `ps` is
/// decided by this entry alone: live while `expires_ms` lies ahead.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<D> {
    /// The member's public data (p2pcf: `d`).
    pub d: D,
    /// The client's `t` at the last index write.
    pub t: Millis,
    /// Last index write + lifetime, ms since the epoch.
    pub expires_ms: u64,
    /// The lifetime granted per write, ms (`min(x, 15 min)`).
    pub ttl_ms: u64,
    pub dk: DeleteKey,
    /// When this session first became visible, ms since the epoch.
    pub joined_ms: u64,
    /// Recipients outside a join window that must read this outbox.
    pub announced: Vec<Announcement>,
    /// Relay letters carried in the index itself (a small batch that opens
    /// a conversation outside a join window: one write instead of an outbox
    /// write plus an announcement), read by every poll. (Until this format,
    /// `i` held them one copy per recipient; such copies are ignored.)
    pub mail: Mailbox,
}

impl ToJson for Announcement {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("s", &self.to).field("u", &self.until_ms);
        });
    }
}

impl FromJson for Announcement {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut to, mut until_ms) = (None, None);
        r.object(&mut |r, key| match key {
            "s" => once(&mut to, SessionId::read(r)),
            "u" => once(&mut until_ms, r.u64()),
            _ => r.skip(),
        })?;
        Ok(Self {
            to: required(to)?,
            until_ms: required(until_ms)?,
        })
    }
}

impl<D: Member> ToJson for Entry<D> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("d", &self.d)
                .field("t", &self.t)
                .field("x", &self.expires_ms)
                .field("l", &self.ttl_ms)
                .field("dk", &self.dk)
                .field("j", &self.joined_ms);
            if !self.announced.is_empty() {
                w.field("a", &self.announced);
            }
            if !self.mail.is_empty() {
                w.field("b", &self.mail);
            }
        });
    }
}

impl<D: Member> FromJson for Entry<D> {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut d, mut t, mut expires_ms, mut ttl_ms) = (None, None, None, None);
        let (mut dk, mut joined_ms, mut announced, mut mail) = (None, None, None, None);
        r.object(&mut |r, key| match key {
            "d" => once(&mut d, D::read(r)),
            "t" => once(&mut t, Millis::read(r)),
            "x" => once(&mut expires_ms, r.u64()),
            "l" => once(&mut ttl_ms, r.u64()),
            "dk" => once(&mut dk, DeleteKey::read(r)),
            "j" => once(&mut joined_ms, r.u64()),
            "a" => once(&mut announced, Vec::read(r)),
            "b" => once(&mut mail, Mailbox::read(r)),
            _ => r.skip(),
        })?;
        Ok(Self {
            d: required(d)?,
            t: required(t)?,
            expires_ms: required(expires_ms)?,
            ttl_ms: required(ttl_ms)?,
            dk: required(dk)?,
            joined_ms: required(joined_ms)?,
            announced: announced.unwrap_or_default(),
            mail: mail.unwrap_or_default(),
        })
    }
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
        // Not `f64::clamp`: its panic message alone brings float formatting
        // (~10 KB gzip) into the wasm.
        (t.as_f64() + offset).max(0.0).min(now_ms as f64) as u64
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
#[derive(Clone, Debug)]
pub struct Sent {
    pub to: SessionId,
    pub k: Option<ContextId>,
    pub raw: Raw,
}

impl ToJson for Sent {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("to", &self.to)
                .field_if("k", self.k.as_ref())
                .field("raw", &self.raw);
        });
    }
}

impl FromJson for Sent {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut to, mut k, mut raw) = (None, None, None);
        r.object(&mut |r, key| match key {
            "to" => once(&mut to, SessionId::read(r)),
            "k" => once(&mut k, r.option(ContextId::read)),
            "raw" => once(&mut raw, Raw::read(r)),
            _ => r.skip(),
        })?;
        Ok(Self {
            to: required(to)?,
            k: k.flatten(),
            raw: required(raw)?,
        })
    }
}

impl PartialEq for Sent {
    fn eq(&self, other: &Self) -> bool {
        self.to == other.to && self.k == other.k && self.raw.get() == other.raw.get()
    }
}

/// The order in which a poll reads the outboxes it needs, when it cannot
/// read them all at once.
#[derive(Clone, Copy, Debug)]
pub enum ReadOrder<'a> {
    /// Each second `step` further on in each list (announced, then join
    /// windows): polls in consecutive seconds that each take in at least
    /// `step` cover them all while the room does not change.
    EachSecond(usize),
    /// In key order from the first at or after this cursor, wrapping: the
    /// reader sends back where its last answer stopped (see
    /// `wire::relay`), so joins and leaves in between skip nobody.
    From(&'a ContextId),
}

/// The packages one context sends, in an R2 object of its own
/// (`rooms/<room>/c/<context>`), written only by that context's requests.
#[derive(Clone, Debug, PartialEq)]
pub struct Outbox {
    pub session: SessionId,
    pub t: Millis,
    /// Write time + the writer's lifetime: how fresh the packages are, and
    /// how long this write keeps its writer alive (see [`Room::fold`]).
    pub expires_ms: u64,
    /// The writer's lifetime (0 in outboxes written before it was stored).
    pub ttl_ms: u64,
    pub p: Vec<Sent>,
    /// A relay member's letters (p2pcf outboxes have none).
    pub mail: Mailbox,
}

impl ToJson for Outbox {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("s", &self.session)
                .field("t", &self.t)
                .field("x", &self.expires_ms)
                .field("l", &self.ttl_ms)
                .field("p", &self.p);
            if !self.mail.is_empty() {
                w.field("b", &self.mail);
            }
        });
    }
}

impl Outbox {
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Self::read_from(bytes, true)
    }

    /// Only its writer and write stamps, its packages and letters skipped
    /// unbuilt: all that [`Room::fold`] needs, for a fraction of the CPU.
    pub fn decode_stamp(bytes: &[u8]) -> Option<Self> {
        Self::read_from(bytes, false)
    }

    /// Reads an outbox; without `whole`, only its stamps.
    fn read_from(bytes: &[u8], whole: bool) -> Option<Self> {
        let mut r = Reader::new(bytes).ok()?;
        let (mut session, mut t, mut expires_ms, mut ttl_ms) = (None, None, None, None);
        let (mut p, mut mail) = (None, None);
        r.object(&mut |r, key| match key {
            "s" => once(&mut session, SessionId::read(r)),
            "t" => once(&mut t, Millis::read(r)),
            "x" => once(&mut expires_ms, r.u64()),
            "l" => once(&mut ttl_ms, r.u64()),
            "p" if whole => once(&mut p, Vec::read(r)),
            "b" if whole => once(&mut mail, Mailbox::read(r)),
            _ => r.skip(),
        })
        .ok()?;
        r.end().ok()?;
        Some(Self {
            session: session?,
            t: t?,
            expires_ms: expires_ms?,
            ttl_ms: ttl_ms.unwrap_or_default(),
            p: if whole { p? } else { Vec::new() },
            mail: mail.unwrap_or_default(),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        json::to_vec(self)
    }
}

/// Outboxes read for one request, by context.
pub type Outboxes = VecMap<ContextId, Outbox>;

/// A left (context, session): remembered so that a request of that session
/// which started before the leave cannot re-create the entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Departure {
    pub k: ContextId,
    pub s: SessionId,
    pub until_ms: u64,
}

impl ToJson for Departure {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("k", &self.k)
                .field("s", &self.s)
                .field("u", &self.until_ms);
        });
    }
}

impl FromJson for Departure {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut k, mut s, mut until_ms) = (None, None, None);
        r.object(&mut |r, key| match key {
            "k" => once(&mut k, ContextId::read(r)),
            "s" => once(&mut s, SessionId::read(r)),
            "u" => once(&mut until_ms, r.u64()),
            _ => r.skip(),
        })?;
        Ok(Self {
            k: required(k)?,
            s: required(s)?,
            until_ms: required(until_ms)?,
        })
    }
}

/// A stored index this build cannot read (newer format, or damaged). It is
/// never written over: the request answers 503 and the document stays.
#[derive(Debug, PartialEq, Eq)]
pub struct Unreadable;

/// The room index, as stored: every participant's entry by context id.
#[derive(Clone, Debug, PartialEq)]
pub struct Room<D> {
    /// Format version of the stored document.
    v: u32,
    entries: VecMap<ContextId, Entry<D>>,
    /// Last join or leave written to the index, ms since the epoch.
    membership_changed_ms: u64,
    pub(crate) departures: Vec<Departure>,
}

impl<D: Member> ToJson for Room<D> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("v", &u64::from(self.v))
                .field("e", &self.entries)
                .field("m", &self.membership_changed_ms);
            if !self.departures.is_empty() {
                w.field("g", &self.departures);
            }
        });
    }
}

impl<D: Member> FromJson for Room<D> {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut v, mut entries, mut membership_changed_ms, mut departures) =
            (None, None, None, None);
        r.object(&mut |r, key| match key {
            "v" => once(&mut v, r.u64()),
            "e" => once(&mut entries, VecMap::read(r)),
            "m" => once(&mut membership_changed_ms, r.u64()),
            "g" => once(&mut departures, Vec::read(r)),
            _ => r.skip(),
        })?;
        Ok(Self {
            v: u32::try_from(required(v)?).map_err(|_| Bad::Shape)?,
            entries: required(entries)?,
            membership_changed_ms: membership_changed_ms.unwrap_or_default(),
            departures: departures.unwrap_or_default(),
        })
    }
}

/// Whether a request needs the index written.
#[derive(Debug, PartialEq, Eq)]
pub enum IndexChange {
    /// Nothing the index holds changed.
    Unchanged,
    /// The entry was created or changed: write the index.
    Write,
}

/// A member saying "I am here": its context, data, last write and lifetime.
#[derive(Debug)]
pub struct Claim<'a, D> {
    pub context: &'a ContextId,
    pub data: &'a D,
    /// The member's last write on the clock it reports: p2pcf's `t` (the
    /// client's clock, mapped to the server's through the offset seen at
    /// the last index write); the relay's is the server's own.
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

/// The request a claim comes with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arrival<'a> {
    /// A poll with `d`: registers the caller if it has no entry, renews its
    /// entry when it wrote since the last index write and the entry nears expiry.
    Poll,
    /// A keep-alive the host writes to the index now (p2pcf: a heartbeat
    /// while the index key is idle; else it goes to the outbox and a renewal
    /// folds it in later).
    Heartbeat,
    /// A write of the member's data and messages. `recipients`: of the
    /// messages not stored before (empty when nothing is new);
    /// `heartbeat`: nothing but liveness changed (the same messages again).
    Publish {
        recipients: &'a [SessionId],
        heartbeat: bool,
    },
}

impl<D: Member> Room<D> {
    const VERSION: u32 = 2;

    pub fn new() -> Self {
        Self {
            v: Self::VERSION,
            entries: VecMap::new(),
            membership_changed_ms: 0,
            departures: Vec::new(),
        }
    }

    /// Reads a stored index. A document of another version or one that
    /// does not parse is [`Unreadable`], never an empty room: writing over
    /// it would silently wipe the room (a rollback, a stricter validator).
    pub fn decode(bytes: &[u8]) -> Result<Self, Unreadable> {
        json::from_slice::<Self>(bytes)
            .ok()
            .filter(|r| r.v == Self::VERSION)
            .ok_or(Unreadable)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data structures to a Vec cannot fail.
        json::to_vec(self)
    }

    /// The room without its entries, for a host that stores one row per
    /// member ([`Room::encode_entry`]); [`Room::from_rows`] puts it back together.
    pub fn encode_head(&self) -> Vec<u8> {
        let head = Room::<D> {
            v: self.v,
            entries: VecMap::new(),
            membership_changed_ms: self.membership_changed_ms,
            departures: self.departures.clone(),
        };
        json::to_vec(&head)
    }

    /// One member's entry as stored in its own row.
    pub fn encode_entry(&self, context: &ContextId) -> Option<Vec<u8>> {
        let entry = self.entries.get(context)?;
        Some(json::to_vec(entry))
    }

    /// The contexts that have an entry, live or not.
    pub fn contexts(&self) -> impl Iterator<Item = &ContextId> {
        self.entries.keys()
    }

    /// A room from its head and its entries' rows; any row this build
    /// cannot read makes the whole room [`Unreadable`].
    pub fn from_rows<'a>(
        head: Option<&[u8]>,
        rows: impl IntoIterator<Item = (ContextId, &'a [u8])>,
    ) -> Result<Self, Unreadable> {
        let mut room = match head {
            Some(bytes) => Self::decode(bytes)?,
            None => Self::new(),
        };
        for (context, bytes) in rows {
            let entry = json::from_slice(bytes).map_err(|_| Unreadable)?;
            room.entries.insert(context, entry);
        }
        Ok(room)
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

    /// Sets when `context`'s live entry expires, for a host that sees its
    /// members' liveness itself (a Durable Object holds their sockets: a
    /// connected member stays, a dropped one gets a window to come back).
    /// Returns whether there was such an entry.
    pub fn hold(&mut self, context: &ContextId, until_ms: u64, now_ms: u64) -> bool {
        match self.entries.get_mut(context).filter(|e| e.is_live(now_ms)) {
            Some(entry) => {
                entry.expires_ms = until_ms;
                true
            }
            None => false,
        }
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

    /// The data of every member whose entry has expired but is still
    /// stored (the next [`Room::prune`] drops them).
    pub fn expired_members(&self, now_ms: u64) -> impl Iterator<Item = &D> {
        self.entries
            .values()
            .filter(move |e| !e.is_live(now_ms))
            .map(|e| &e.d)
    }

    /// The earliest moment a live entry expires, if any is live.
    pub fn next_expiry(&self, now_ms: u64) -> Option<u64> {
        self.entries
            .values()
            .filter(|e| e.is_live(now_ms))
            .map(|e| e.expires_ms)
            .min()
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
            sort_by_u64(&mut self.departures, |d| d.until_ms);
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
            return self.register(claim, arrival, now_ms, max_peers, new_key);
        };
        let Some((written_ms, announced)) = self.rewrite(current, claim, arrival, now_ms) else {
            return Ok(IndexChange::Unchanged);
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

    /// A claim without a live entry: a new entry, unless the claim may not
    /// join or the room is full.
    fn register(
        &mut self,
        claim: &Claim<'_, D>,
        arrival: Arrival<'_>,
        now_ms: u64,
        max_peers: usize,
        new_key: impl FnOnce() -> DeleteKey,
    ) -> Result<IndexChange, Error> {
        if !claim.may_join {
            return Err(Error::Left);
        }
        self.prune(now_ms);
        let others = self.entries.keys().filter(|k| *k != claim.context).count();
        if others >= max_peers {
            return Err(Error::RoomFull);
        }
        let announced = match arrival {
            Arrival::Publish { recipients, .. } => self.announcements(claim, recipients, now_ms),
            Arrival::Poll | Arrival::Heartbeat => Vec::new(),
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
        Ok(IndexChange::Write)
    }

    /// Whether a claim on the live entry `current` rewrites it, and if so
    /// the time of the write it stands for and the announcements it carries.
    fn rewrite(
        &self,
        current: &Entry<D>,
        claim: &Claim<'_, D>,
        arrival: Arrival<'_>,
        now_ms: u64,
    ) -> Option<(u64, Vec<Announcement>)> {
        let newer = claim.t.as_f64() > current.t.as_f64();
        match arrival {
            Arrival::Poll => {
                // The client's last write, as it reports it, mapped to server time.
                let at = current.server_time_of(claim.t, now_ms);
                let extends = at.saturating_add(claim.ttl_ms) > current.expires_ms;
                let due = now_ms >= current.renewal_due_ms(claim.context);
                (newer && extends && (due || current.d != *claim.data))
                    .then(|| (at, current.valid_announcements(now_ms)))
            }
            Arrival::Heartbeat => (newer || current.d != *claim.data)
                .then(|| (now_ms, current.valid_announcements(now_ms))),
            Arrival::Publish {
                recipients,
                heartbeat,
            } => {
                if current.t == *claim.t && current.d == *claim.data {
                    return None; // a retry of a stored write
                }
                let announced = self.announcements(claim, recipients, now_ms);
                // A heartbeat inside the window (the stock client's, 30 s
                // before the expiry) is left to the polls that follow; an
                // earlier one is written.
                let left = current.expires_ms.saturating_sub(now_ms);
                let early_heartbeat =
                    heartbeat && left > current.renewal_window() + D::HEARTBEAT_SLACK_MS;
                let needed = current.d != *claim.data
                    || current.renewal_urgent(now_ms)
                    || early_heartbeat
                    || announced != current.valid_announcements(now_ms);
                needed.then_some((now_ms, announced))
            }
        }
    }

    /// Announcements the caller's entry must carry: still-valid earlier ones,
    /// plus recipients of new packages whose join window with the caller
    /// closes within [`ANNOUNCE_MARGIN_MS`].
    fn announcements(
        &self,
        claim: &Claim<'_, D>,
        recipients: &[SessionId],
        now_ms: u64,
    ) -> Vec<Announcement> {
        let own = self.own(claim.context, claim.data.session(), now_ms);
        let mut out = own.map_or_else(Vec::new, |e| e.valid_announcements(now_ms));
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
        self.other_entries_by_expiry(context, now_ms, limit, |k, e| now_ms >= e.renewal_due_ms(k))
    }

    /// Other entries close enough to expiry that their renewal is urgent,
    /// soonest first, at most `limit`: a relay write reads their outboxes
    /// and folds the heartbeats they left there in (see [`Room::fold`]).
    pub fn urgent_renewals(
        &self,
        context: &ContextId,
        now_ms: u64,
        limit: usize,
    ) -> Vec<ContextId> {
        self.other_entries_by_expiry(context, now_ms, limit, |_, e| e.renewal_urgent(now_ms))
    }

    /// The live entries other than `context`'s that pass `keep`, soonest
    /// expiry first, at most `limit`.
    fn other_entries_by_expiry(
        &self,
        context: &ContextId,
        now_ms: u64,
        limit: usize,
        keep: impl Fn(&ContextId, &Entry<D>) -> bool,
    ) -> Vec<ContextId> {
        let mut due: Vec<(&ContextId, &Entry<D>)> = self
            .entries
            .iter()
            .filter(|(k, e)| *k != context && e.is_live(now_ms) && keep(k, e))
            .collect();
        sort_by_u64(&mut due, |(_, e)| e.expires_ms);
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

    /// The outboxes a view for `context`/`session` needs, at most `limit`,
    /// in the order to read them (see [`ReadOrder`]): in a steady room
    /// none, and a poll is one read.
    pub fn outboxes_to_read(
        &self,
        context: &ContextId,
        session: Option<&SessionId>,
        now_ms: u64,
        limit: usize,
        order: ReadOrder<'_>,
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
        match order {
            ReadOrder::EachSecond(step) => {
                let offset = (now_ms / 1000) as usize;
                for list in [&mut announced, &mut windows] {
                    if !list.is_empty() {
                        let n = list.len();
                        list.rotate_left(offset.wrapping_mul(step.max(1)) % n);
                    }
                }
            }
            ReadOrder::From(cursor) => {
                // One list in key order, from the cursor on.
                announced.append(&mut windows);
                // Unstable: equal ids are indistinguishable.
                sort_unstable_by(&mut announced, |a, b| a < b);
                let start = announced.partition_point(|k| k < cursor);
                announced.rotate_left(start);
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

impl<D: Member> Default for Room<D> {
    fn default() -> Self {
        Self::new()
    }
}
