//! A room held by one authority that pushes: the host a Durable Object
//! runs, sans-IO. The room is the engine's value (members, tokens, each
//! sender's letters with their byte caps, expiry and retry rules), kept in
//! memory and stored one row per member plus a head ([`Changes`]: a send
//! writes the sender's row, a join its own, whatever the room's size);
//! what is pushed to whom is decided here, sent by the glue.
//!
//! * A connected member's entry never expires ([`CONNECTED`]); its socket
//!   is its liveness. A socket that drops gives its member a window
//!   ([`RESUME_WINDOW_MS`] by default) to come back with its id, token and cursors; a
//!   clean close or a leave removes it at once. Only then (or when the
//!   window ends, [`LiveRoom::expire`]) do the others hear that it left.
//! * Each connected member has [`Cursors`]: per sender, the highest `seq`
//!   pushed to it. A letter is pushed when its sender's cursor is below it,
//!   in `seq` order, so each is pushed once per connection; letters stay
//!   until they expire, so a member that resumes with the cursors it
//!   received up to gets the rest, and nothing twice.
//! * What must survive an eviction is the room's rows and which member
//!   each open socket is (its attachment); [`LiveRoom::restore`] rebuilds
//!   the rest.

use crate::domain::{ContextId, DeleteKey, DeleteKeyInput, Millis, SessionId};
use crate::engine::hints::{PollSettings, Situation};
use crate::engine::mailbox::{Letter, Mailbox, Message, MAX_HELD_BYTES};
use crate::engine::room::{Arrival, Claim, Member, Outboxes, Room, Unreadable};
use crate::error::Error;
use crate::vec_map::VecMap;

/// The expiry of a connected member's entry: never, while its socket is open.
pub const CONNECTED: u64 = u64::MAX / 4;
/// How long a member whose socket dropped (not closed) may come back, by
/// default (`RESUME_WINDOW_S`).
pub const RESUME_WINDOW_MS: u64 = 60_000;

/// Per sender, the highest `seq` a member has been pushed (or, on resume,
/// says it received).
pub type Cursors = VecMap<SessionId, u64>;

/// Something to send to one connected member.
#[derive(Clone, Debug, PartialEq)]
pub enum Push<D> {
    /// A member joined.
    Joined(D),
    /// A member left, closed its socket or did not come back in time.
    Left(SessionId),
    /// Letters of one sender, in `seq` order.
    Letters {
        from: SessionId,
        letters: Vec<Letter>,
    },
}

/// Pushes, each with its addressee.
pub type Pushes<D> = Vec<(SessionId, Push<D>)>;

/// What a member that joined or came back is told, and what the others are.
#[derive(Debug)]
pub struct Attached<D> {
    /// The member's token (on a join).
    pub token: Option<DeleteKey>,
    /// The other live members.
    pub peers: Vec<D>,
    /// Letters waiting for it (pushes to itself), then pushes to the others.
    pub pushes: Pushes<D>,
}

/// What a batch of messages did.
#[derive(Debug)]
pub struct Delivered<D> {
    /// Numbers of messages with nobody to go to (not stored).
    pub undeliverable: Vec<u64>,
    pub pushes: Pushes<D>,
}

/// What to write after a change: the head if it changed, the rows of the
/// members changed, the rows of the members gone.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub head: Option<Vec<u8>>,
    pub put: Vec<(ContextId, Vec<u8>)>,
    pub delete: Vec<ContextId>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.head.is_none() && self.put.is_empty() && self.delete.is_empty()
    }
}

/// One room, held in memory by the object that owns it.
#[derive(Debug)]
pub struct LiveRoom<D> {
    room: Room<D>,
    connected: VecMap<SessionId, Cursors>,
    /// Per connected member: the start of its current rate window and the
    /// frames counted in it (in memory only: a quiet object may forget).
    meters: VecMap<SessionId, (u64, u32)>,
    /// Members whose row changed since the last [`LiveRoom::take_changes`].
    touched: VecMap<ContextId, ()>,
    /// Members that have a row.
    stored: Vec<ContextId>,
    /// The head as last stored.
    head: Vec<u8>,
    /// How long a dropped member may come back.
    window_ms: u64,
}

fn context_of(id: &SessionId) -> Result<ContextId, Error> {
    ContextId::parse(id.as_str())
}

impl<D: Member> LiveRoom<D> {
    /// Rebuilds a room from what was stored and the members whose sockets
    /// are still open. Their cursors need no storing: a connected member is
    /// pushed every letter for it the moment it is stored (or when it
    /// attaches), so each cursor is its sender's highest `seq`. A member
    /// stored as connected whose socket is gone (the object was reset) gets
    /// its resume window from now.
    pub fn restore<'a>(
        head: Option<&[u8]>,
        rows: impl IntoIterator<Item = (ContextId, &'a [u8])>,
        sockets: impl IntoIterator<Item = SessionId>,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Self, Unreadable> {
        let room = Room::from_rows(head, rows)?;
        let mut live = Self {
            stored: room.contexts().cloned().collect(),
            head: room.encode_head(),
            room,
            connected: VecMap::new(),
            meters: VecMap::new(),
            touched: VecMap::new(),
            window_ms,
        };
        let sent: Cursors = live
            .room
            .entries_live(now_ms)
            .filter(|(_, e)| e.mail.last_seq > 0)
            .map(|(_, e)| (e.d.session().clone(), e.mail.last_seq))
            .collect();
        for id in sockets {
            let owned = context_of(&id)
                .is_ok_and(|context| live.room.owns_live_entry(&context, &id, now_ms));
            if owned {
                live.connected.insert(id, sent.clone());
            }
        }
        let orphans: Vec<SessionId> = live
            .room
            .live_members(now_ms)
            .map(|m| m.session().clone())
            .filter(|id| !live.connected.contains_key(id))
            .collect();
        for id in orphans {
            live.dropped(&id, now_ms);
        }
        Ok(live)
    }

    /// What changed since the last call, to be written before anything
    /// pushed since then leaves.
    pub fn take_changes(&mut self) -> Changes {
        // Both in key order.
        let current: Vec<ContextId> = self.room.contexts().cloned().collect();
        let delete = (self.stored.iter())
            .filter(|k| current.binary_search(k).is_err())
            .cloned()
            .collect();
        let put = std::mem::take(&mut self.touched)
            .into_keys()
            .filter_map(|k| self.room.encode_entry(&k).map(|row| (k, row)))
            .collect();
        self.stored = current;
        let head = self.room.encode_head();
        let head = (head != self.head).then(|| {
            self.head = head.clone();
            head
        });
        Changes { head, put, delete }
    }

    /// Whether any member is connected (its socket open).
    pub fn has_connected(&self) -> bool {
        !self.connected.is_empty()
    }

    pub fn is_connected(&self, id: &SessionId) -> bool {
        self.connected.contains_key(id)
    }

    /// Live members, connected or within their resume window.
    pub fn member_count(&self, now_ms: u64) -> usize {
        self.room.live_count(now_ms)
    }

    /// When the next member's resume window ends, if one is open.
    pub fn next_alarm(&self, now_ms: u64) -> Option<u64> {
        self.room.next_expiry(now_ms).filter(|at| *at < CONNECTED)
    }

    /// The alarm to set after an event, if one must be (`known`: the one
    /// set). The room needs one when a member's window or poller's entry
    /// ends, and while sockets are open one `idle_ms` from now to close the
    /// silent ones. It is only ever moved earlier: each set is a row
    /// written, and a later or needless alarm just fires and finds nothing.
    pub fn alarm_to_set(&self, known: Option<u64>, now_ms: u64, idle_ms: u64) -> Option<u64> {
        let watch = self.has_connected().then(|| now_ms.saturating_add(idle_ms));
        let next = match (self.next_alarm(now_ms), watch) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        match known {
            Some(k) if k <= next => None,
            _ => Some(next),
        }
    }

    /// A new member on a new socket. `new_key` makes its token; a join
    /// retried with the id of a live member (a derived id) gets that
    /// member back, with its token, instead of a second one.
    pub fn join(
        &mut self,
        member: D,
        new_key: impl FnOnce() -> DeleteKey,
        now_ms: u64,
        max_members: usize,
    ) -> Result<Attached<D>, Error> {
        let id = member.session().clone();
        let (context, token, joined) = self.admit(member, new_key, now_ms, max_members)?;
        self.room.hold(&context, CONNECTED, now_ms);
        let mut attached = self.attach(&id, Cursors::new(), now_ms);
        attached.token = Some(token);
        attached.pushes.extend(joined);
        Ok(attached)
    }

    /// A new member that polls (the HTTP relay API): live for `ttl_ms` after
    /// each call ([`LiveRoom::renew`]). Returns its token and the pushes
    /// that tell the connected members.
    pub fn join_polling(
        &mut self,
        member: D,
        new_key: impl FnOnce() -> DeleteKey,
        ttl_ms: u64,
        now_ms: u64,
        max_members: usize,
    ) -> Result<(DeleteKey, Pushes<D>), Error> {
        let (context, token, joined) = self.admit(member, new_key, now_ms, max_members)?;
        self.room
            .hold(&context, now_ms.saturating_add(ttl_ms), now_ms);
        Ok((token, joined))
    }

    /// Registers `member` (or finds it again, for a retried join), with the
    /// pushes that announce a new one.
    fn admit(
        &mut self,
        member: D,
        new_key: impl FnOnce() -> DeleteKey,
        now_ms: u64,
        max_members: usize,
    ) -> Result<(ContextId, DeleteKey, Pushes<D>), Error> {
        let id = member.session().clone();
        let context = context_of(&id)?;
        let retried = self.room.owns_live_entry(&context, &id, now_ms);
        if !retried {
            let t = Millis::from_u64(now_ms);
            let claim = Claim {
                context: &context,
                data: &member,
                t: &t,
                ttl_ms: self.window_ms,
                may_join: true,
            };
            self.room
                .apply(&claim, Arrival::Poll, now_ms, max_members, new_key)?;
        }
        self.touched.insert(context.clone(), ());
        let token = self
            .room
            .entry(&context)
            .map(|e| e.dk.clone())
            .ok_or(Error::Left)?;
        let pushes = if retried {
            Vec::new()
        } else {
            self.to_others(&id, &Push::Joined(member))
        };
        Ok((context, token, pushes))
    }

    /// Proves `id` with its token: 410 once it left or expired, 400 for a
    /// wrong token.
    pub fn authenticate(
        &self,
        id: &SessionId,
        token: &DeleteKeyInput,
        now_ms: u64,
    ) -> Result<(), Error> {
        let entry = self
            .room
            .entry(&context_of(id)?)
            .filter(|e| e.d.session() == id && e.is_live(now_ms))
            .ok_or(Error::Left)?;
        if entry.dk.matches(token) {
            Ok(())
        } else {
            Err(Error::BadRequest("Bad token"))
        }
    }

    /// A polling member's call: it lives `ttl_ms` more, written once half of
    /// that has passed (one row write per half-life, not one per poll).
    pub fn renew(&mut self, id: &SessionId, ttl_ms: u64, now_ms: u64) {
        let Ok(context) = context_of(id) else {
            return;
        };
        let due = self.room.entry(&context).is_some_and(|e| {
            e.expires_ms != CONNECTED && e.expires_ms < now_ms.saturating_add(ttl_ms / 2)
        });
        if due
            && self
                .room
                .hold(&context, now_ms.saturating_add(ttl_ms), now_ms)
        {
            self.touched.insert(context, ());
        }
    }

    /// A member coming back on a new socket with its token and the cursors
    /// it received up to. Refused with 410 once it left or its window ended.
    pub fn resume(
        &mut self,
        id: &SessionId,
        token: &DeleteKeyInput,
        after: Cursors,
        now_ms: u64,
    ) -> Result<Attached<D>, Error> {
        self.authenticate(id, token, now_ms)?;
        let context = context_of(id)?;
        if self.room.hold(&context, CONNECTED, now_ms) {
            self.touched.insert(context, ());
        }
        Ok(self.attach(id, after, now_ms))
    }

    /// The other live members.
    pub fn peers(&self, me: &SessionId, now_ms: u64) -> impl Iterator<Item = &D> + '_ {
        let me = me.clone();
        self.room
            .live_members(now_ms)
            .filter(move |m| *m.session() != me)
    }

    /// Letters for `reader` after its cursors, each sender's in `seq` order,
    /// at most `max_bytes` of data (at least one letter); `true` when more wait.
    pub fn letters_after<'a>(
        &'a self,
        reader: &'a SessionId,
        after: &Cursors,
        max_bytes: usize,
        now_ms: u64,
    ) -> (Vec<(&'a SessionId, &'a Letter)>, bool) {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (_, sender) in self.room.entries_live(now_ms) {
            let from = sender.d.session();
            if from == reader {
                continue;
            }
            let seen = after.get(from).copied().unwrap_or(0);
            for letter in sender.mail.for_reader(reader, seen, now_ms) {
                bytes += letter.data.get().len() + 64;
                if bytes > max_bytes && !out.is_empty() {
                    return (out, true);
                }
                out.push((from, letter));
            }
        }
        (out, false)
    }

    /// What a polling member's hint is computed from.
    pub fn situation(&self, id: &SessionId, settings: &PollSettings, now_ms: u64) -> Situation {
        match context_of(id) {
            Ok(context) => self.room.situation(
                &context,
                Some(id),
                &Outboxes::new(),
                settings.fast_window_ms,
                now_ms,
            ),
            Err(_) => Situation::default(),
        }
    }

    /// The ids of the live members but `me`.
    fn ids_but(&self, me: &SessionId, now_ms: u64) -> Vec<SessionId> {
        self.peers(me, now_ms)
            .map(|m| m.session().clone())
            .collect()
    }

    /// Connects `id` with `after` and hands it what waits for it.
    fn attach(&mut self, id: &SessionId, after: Cursors, now_ms: u64) -> Attached<D> {
        self.connected.insert(id.clone(), after);
        let pushes = self
            .ids_but(id, now_ms)
            .iter()
            .filter_map(|from| self.letters_for(id, from, now_ms))
            .collect();
        Attached {
            token: None,
            peers: self
                .room
                .live_members(now_ms)
                .filter(|m| m.session() != id)
                .cloned()
                .collect(),
            pushes,
        }
    }

    /// Letters from `from` that `to` has not been pushed, advancing its cursor.
    fn letters_for(
        &mut self,
        to: &SessionId,
        from: &SessionId,
        now_ms: u64,
    ) -> Option<(SessionId, Push<D>)> {
        let cursors = self.connected.get_mut(to)?;
        let after = cursors.get(from).copied().unwrap_or(0);
        let mail = self.room.entry(&context_of(from).ok()?).map(|e| &e.mail)?;
        let letters: Vec<Letter> = mail.for_reader(to, after, now_ms).cloned().collect();
        let last = letters.last()?.seq;
        cursors.insert(from.clone(), last);
        let push = Push::Letters {
            from: from.clone(),
            letters,
        };
        Some((to.clone(), push))
    }

    /// Counts one frame of `id`; `false` once it sent more than `max` in
    /// the current `window_ms` (one member must not make a room's object busy).
    pub fn meter(&mut self, id: &SessionId, max: u32, window_ms: u64, now_ms: u64) -> bool {
        let (start, count) = self.meters.get_or_insert_with(id.clone(), || (now_ms, 0));
        if now_ms >= start.saturating_add(window_ms) {
            (*start, *count) = (now_ms, 0);
        }
        *count += 1;
        *count <= max
    }

    /// `push` for every connected member but `except`.
    fn to_others(&self, except: &SessionId, push: &Push<D>) -> Pushes<D> {
        self.connected
            .keys()
            .filter(|id| *id != except)
            .map(|id| (id.clone(), push.clone()))
            .collect()
    }

    /// A batch from a member (connected, or proven by its token): accepted
    /// by the engine's rules (numbers, retries, bytes held) or refused
    /// whole, then pushed to every connected addressee.
    pub fn send(
        &mut self,
        from: &SessionId,
        batch: &[Message],
        now_ms: u64,
    ) -> Result<Delivered<D>, Error> {
        let context = context_of(from)?;
        if !self.room.owns_live_entry(&context, from, now_ms) {
            return Err(Error::Left);
        }
        let others = self.ids_but(from, now_ms);
        let mail = self.room.mail_mut(&context).ok_or(Error::Left)?;
        let accepted = mail.accept(&Mailbox::default(), batch, &others, now_ms, MAX_HELD_BYTES)?;
        if accepted.stored > 0 {
            self.touched.insert(context, ());
        }
        let pushes = accepted
            .recipients
            .iter()
            .filter_map(|to| self.letters_for(to, from, now_ms))
            .collect();
        Ok(Delivered {
            undeliverable: accepted.undeliverable,
            pushes,
        })
    }

    /// A leave, or a socket closed on purpose: the member is removed and
    /// the others told at once.
    pub fn leave(&mut self, id: &SessionId, now_ms: u64) -> Pushes<D> {
        self.connected.remove(id);
        self.meters.remove(id);
        let Ok(context) = context_of(id) else {
            return Vec::new();
        };
        let Some(key) = self.room.entry(&context).map(|e| e.dk.as_str().to_owned()) else {
            return Vec::new();
        };
        let Ok(key) = DeleteKeyInput::parse(&key) else {
            return Vec::new();
        };
        if !self.room.remove(&context, Some(id), &key, now_ms) {
            return Vec::new();
        }
        self.to_others(id, &Push::Left(id.clone()))
    }

    /// A socket that dropped (no close from the member): its member may
    /// come back within the resume window.
    pub fn dropped(&mut self, id: &SessionId, now_ms: u64) {
        self.connected.remove(id);
        self.meters.remove(id);
        if let Ok(context) = context_of(id) {
            let until = now_ms.saturating_add(self.window_ms);
            if self.room.hold(&context, until, now_ms) {
                self.touched.insert(context, ());
            }
        }
    }

    /// Removes members whose resume window ended; the others are told who
    /// left. (Expired letters go when their sender next sends.)
    pub fn expire(&mut self, now_ms: u64) -> Pushes<D> {
        let gone: Vec<SessionId> = self
            .room
            .expired_members(now_ms)
            .map(|m| m.session().clone())
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        self.room.prune(now_ms);
        gone.iter()
            .flat_map(|id| self.to_others(id, &Push::Left(id.clone())))
            .collect()
    }
}
