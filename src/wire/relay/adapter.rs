//! The relay adapter: joins, sends, polls and leaves of the relay API on
//! the room engine, kept in R2 (`relay/<room>` and one outbox per member).
//! A member is an index entry whose context and session are its peer id and
//! whose delete key is its token; its messages are letters in its
//! [`Mailbox`], carried in its entry or in its outbox.

use super::parse::{Caller, JoinNonce, RelayRequest};
use crate::config::Config;
use crate::domain::{sort_by_u64, Base64, ContextId, DeleteKeyInput, Millis, RoomId, SessionId};
use crate::engine::hints::{Hint, PollSettings};
use crate::engine::mailbox::{Letter, Mailbox, MAX_ANSWER_BYTES, MAX_HELD_BYTES};
use crate::engine::room::{Arrival, Claim, Entry, Member, Outbox, Outboxes, ReadOrder, Room};
use crate::error::Error;
use crate::host::r2::{apply_claim, decode, update, Attempts, Keys, R2Room, Reads, RetryPolicy};
use crate::json::{once, required, FromJson, Raw, Read, Reader, ToJson, Writer};
use crate::platform::Platform;
use crate::store::{Counting, Object, Store};
use crate::vec_map::VecMap;
use crate::wire::{to_json, Reply};

pub use crate::engine::mailbox::{MAX_INLINE_BYTES, MESSAGE_TTL_MS};

/// A member's lifetime after its last request (it polls every few seconds).
pub const MEMBER_TTL_MS: u64 = 60_000;
/// Most outboxes one relay poll reads.
pub const MAX_RELAY_OUTBOX_READS: usize = 8;
/// Most outbox bytes one relay poll decodes past the first
/// [`SURE_DECODES`]: with [`MAX_RELAY_OUTBOX_READS`], what bounds a poll's
/// CPU whatever the others hold.
pub const MAX_DECODE_BYTES: usize = 160 * 1024;
/// Outboxes a relay poll always decodes (two full ones fit the budget).
/// While some are left unread the hint is fast, and a reader that sends
/// back `read_from` reads on from where the last answer stopped: a full
/// room (31) within 16 polls, well inside a message's life. One that does
/// not gets a rotation that moves by this many each second.
pub const SURE_DECODES: usize = 2;
const READS: Reads = Reads {
    max: MAX_RELAY_OUTBOX_READS,
    decode_bytes: MAX_DECODE_BYTES,
    sure: SURE_DECODES,
};

/// A relay member's public data: its id and the `meta` it joined with.
#[derive(Clone, Debug)]
pub struct RelayMember {
    pub id: SessionId,
    pub meta: Option<Raw>,
}

impl ToJson for RelayMember {
    fn write(&self, w: &mut Writer) {
        PeerOut::from(self).write(w);
    }
}

impl FromJson for RelayMember {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut id, mut meta) = (None, None);
        r.object(&mut |r, key| match key {
            "id" => once(&mut id, SessionId::read(r)),
            "meta" => once(&mut meta, r.option(Raw::read)),
            _ => r.skip(),
        })?;
        Ok(Self {
            id: required(id)?,
            meta: meta.flatten(),
        })
    }
}

impl PartialEq for RelayMember {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.meta.as_ref().map(|m| m.get()) == other.meta.as_ref().map(|m| m.get())
    }
}

/// A letter must stay findable for its whole life ([`MESSAGE_TTL_MS`]),
/// however late its receiver polls: the read window after a join is longer
/// than p2pcf's by what a letter outlives the join window's margin, and an
/// announcement lasts half a minute past a letter's life, so that a
/// conversation announces itself about once per 30 s (one index write).
impl Member for RelayMember {
    const READ_WINDOW_MS: u64 = crate::engine::room::JOIN_WINDOW_MS + MESSAGE_TTL_MS
        - crate::engine::room::ANNOUNCE_MARGIN_MS;
    const HOLD_MS: u64 = MESSAGE_TTL_MS;
    const ANNOUNCED_FOR_MS: u64 = MESSAGE_TTL_MS + 30_000;

    fn session(&self) -> &SessionId {
        &self.id
    }
}

/// Where the relay keeps a room: `relay/<room>` (apart from p2pcf rooms of
/// the same name), and each member's outbox at `relay/<room>/c/<id>` (ids
/// are base64url already).
pub fn keys(room: &RoomId) -> Keys {
    Keys::new("relay", room, false)
}

/// A member as others see it: `{"id", "meta"}`.
pub(super) struct PeerOut<'a> {
    pub id: &'a SessionId,
    pub meta: Option<&'a Raw>,
}

impl<'a> From<&'a RelayMember> for PeerOut<'a> {
    fn from(m: &'a RelayMember) -> Self {
        Self {
            id: &m.id,
            meta: m.meta.as_ref(),
        }
    }
}

/// A message as its receiver gets it: `{"from", "seq", "data"}`.
pub(super) struct MessageOut<'a> {
    pub from: &'a SessionId,
    pub seq: u64,
    pub data: &'a Raw,
}

/// The answer to a relay call (a join, poll or send), on either host.
pub(super) struct Answer<'a> {
    pub id: &'a SessionId,
    pub token: Option<&'a str>,
    pub peers: Vec<PeerOut<'a>>,
    pub messages: Vec<MessageOut<'a>>,
    /// More messages wait than one answer carries: poll again now.
    pub more: bool,
    /// Numbers of messages sent now that had nobody to go to (not stored).
    pub undeliverable: &'a [u64],
    /// The first member whose outbox this answer left unread: send it back
    /// as `read_from`, and the next poll reads on from there.
    pub read_from: Option<&'a str>,
    pub hint: Hint,
}

impl ToJson for PeerOut<'_> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("id", self.id).field_if("meta", self.meta);
        });
    }
}

impl ToJson for MessageOut<'_> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("from", self.from)
                .field("seq", &self.seq)
                .field("data", self.data);
        });
    }
}

impl ToJson for Answer<'_> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("id", self.id)
                .field_if("token", self.token)
                .field("peers", &self.peers)
                .field("messages", &self.messages);
            if self.more {
                w.field("more", &true);
            }
            if !self.undeliverable.is_empty() {
                w.field("undeliverable", self.undeliverable);
            }
            w.field_if("read_from", self.read_from)
                .field("hint", &self.hint);
        });
    }
}

/// One request's surroundings.
struct Run<'a, S, P> {
    room: R2Room<'a, S, P>,
    request: &'a RelayRequest,
    poll: &'a PollSettings,
}

/// A member, as its request claims to be (proven against the stored index
/// by [`authenticate`], inside every read-modify-write).
struct Me<'a> {
    id: &'a SessionId,
    context: ContextId,
    token: &'a DeleteKeyInput,
}

/// Runs one relay request.
pub async fn handle<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    request: &RelayRequest,
) -> Result<Reply, Error> {
    let run = Run {
        room: R2Room::new(store, platform, policy, keys(&request.room), &config.limits),
        request,
        poll: &config.poll,
    };
    match &request.caller {
        Caller::Joining { meta, nonce } => join(&run, meta, nonce.as_ref()).await,
        Caller::Member { id, token } => {
            let me = Me {
                id,
                context: ContextId::parse(id.as_str())?,
                token,
            };
            if request.leave {
                leave(&run, &me).await
            } else if request.send.is_empty() {
                poll(&run, &me).await
            } else {
                send(&run, &me).await
            }
        }
    }
}

/// The caller's live entry, if its token matches.
fn authenticate<'r>(
    room: &'r Room<RelayMember>,
    me: &Me<'_>,
    now: u64,
) -> Result<&'r Entry<RelayMember>, Error> {
    let entry = room
        .entry(&me.context)
        .filter(|e| e.d.id == *me.id && e.is_live(now))
        .ok_or(Error::Left)?;
    if !entry.dk.matches(me.token) {
        return Err(Error::BadRequest("Bad token"));
    }
    Ok(entry)
}

/// A member's claim to be here (its data as stored; its last write is now,
/// on the server's clock).
fn member_claim<'a>(
    context: &'a ContextId,
    member: &'a RelayMember,
    t: &'a Millis,
) -> Claim<'a, RelayMember> {
    Claim {
        context,
        data: member,
        t,
        ttl_ms: MEMBER_TTL_MS,
        may_join: false,
    }
}

/// The other live members' ids.
fn others(room: &Room<RelayMember>, me: &SessionId, now: u64) -> Vec<SessionId> {
    room.live_members(now)
        .filter(|m| m.id != *me)
        .map(|m| m.id.clone())
        .collect()
}

/// A join: a new entry with a fresh id and token. With a `nonce`, the id is
/// derived from it, so a join retried after a lost answer finds its entry
/// and gets the same token instead of leaving a ghost.
async fn join<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    meta: &Option<Raw>,
    nonce: Option<&JoinNonce>,
) -> Result<Reply, Error> {
    let id = new_member_id(nonce, &run.request.room, run.room.platform)?;
    let context = ContextId::parse(id.as_str())?;
    let member = RelayMember {
        id: id.clone(),
        meta: meta.clone(),
    };
    let t = Millis::from_u64(run.room.platform.now_ms());
    let claim = Claim {
        may_join: true,
        ..member_claim(&context, &member, &t)
    };
    let room = &run.room;
    let mut attempts = room.attempts(room.policy.join_budget_ms, "nothing was stored; join again");
    let index = room.read(&mut attempts).await?;
    let folds = heartbeats(run, &decode(index.as_ref())?, &context).await;
    let mut join = apply_claim(&claim, Arrival::Poll, room.max_peers, room.platform);
    let joined = room
        .update(&mut attempts, index, |r: &mut Room<RelayMember>, now| {
            // A retried join (same nonce) finds its entry: nothing to write.
            let retried = r
                .entry(&context)
                .is_some_and(|e| e.d.id == id && e.is_live(now));
            if retried {
                return Ok(false);
            }
            let wrote = join(r, now)?;
            if wrote {
                r.fold(&folds, now);
            }
            Ok(wrote)
        })
        .await?;
    let token = joined
        .entry(&context)
        .map(|e| e.dk.as_str().to_owned())
        .ok_or(Error::Left)?;
    answer(run, &id, &context, Some(token), joined, &[]).await
}

/// A joining member's id: derived from its nonce (a retried join is the
/// same member), else 128 random bits, base64url.
pub(super) fn new_member_id<P: Platform>(
    nonce: Option<&JoinNonce>,
    room: &RoomId,
    platform: &P,
) -> Result<SessionId, Error> {
    let id = match nonce {
        Some(nonce) => nonce.member_id(room),
        None => {
            let mut bytes = [0u8; 16];
            platform.fill_random(&mut bytes);
            Base64::UrlSafeNoPad.encode(&bytes)
        }
    };
    SessionId::parse(&id)
}

async fn leave<S: Store, P: Platform>(run: &Run<'_, S, P>, me: &Me<'_>) -> Result<Reply, Error> {
    let remove = |r: &mut Room<RelayMember>, now| {
        authenticate(r, me, now)?;
        Ok(r.remove(&me.context, Some(me.id), me.token, now))
    };
    let members = run.room.leave("the leave was not stored", remove).await?;
    Ok(Reply {
        status: 200,
        retry_after: None,
        body: b"{}".to_vec(),
        members,
        hint: None,
    })
}

/// A poll: the index (and the outboxes where messages can wait); renews
/// the caller's entry when due.
async fn poll<S: Store, P: Platform>(run: &Run<'_, S, P>, me: &Me<'_>) -> Result<Reply, Error> {
    let room = &run.room;
    let mut attempts = room.attempts(room.policy.write_budget_ms, "nothing was stored; retry");
    let index = room.read(&mut attempts).await?;
    let renewed = renew(run, me, index).await?;
    answer(run, me.id, &me.context, None, renewed, &[]).await
}

/// Renews the caller's entry when its renewal is due (dropping its expired
/// carried letters); a busy index only means "not this time".
async fn renew<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    me: &Me<'_>,
    index: Option<Object>,
) -> Result<Room<RelayMember>, Error> {
    let room: Room<RelayMember> = decode(index.as_ref())?;
    let now = run.room.platform.now_ms();
    let entry = authenticate(&room, me, now)?;
    let urgent = entry.renewal_urgent(now);
    // Only a renewal that falls due writes: it takes others' heartbeats along.
    let folds = match entry.in_renewal_window(now) {
        true => heartbeats(run, &room, &me.context).await,
        false => Outboxes::new(),
    };
    let member = entry.d.clone();
    let t = Millis::from_u64(now);
    let claim = member_claim(&me.context, &member, &t);
    let check = |r: &mut Room<RelayMember>, now| {
        authenticate(r, me, now)?;
        Ok(r.fold(&folds, now) > 0)
    };
    let drop_expired = |r: &mut Room<RelayMember>, now, written: bool| {
        if let Some(mail) = r.mail_mut(&me.context).filter(|_| written) {
            mail.drop_expired(now);
        }
    };
    let renewed = run
        .room
        .renew(index, &claim, Some(entry), check, drop_expired)
        .await;
    match renewed {
        Ok(updated) => Ok(updated),
        Err(Error::Busy { .. }) if urgent => {
            // The next write of the index takes it from there; if that
            // fails too, the next poll tries again.
            let _ = heartbeat(run, me).await;
            Ok(room)
        }
        Err(Error::Busy { .. } | Error::PayloadTooLarge(_)) => Ok(room),
        Err(e) => Err(e),
    }
}

/// Most outboxes an index write reads to fold in the heartbeats of members
/// about to expire.
const MAX_HEARTBEAT_READS: usize = 4;

/// The outboxes of other members close to expiry. A write of the index
/// folds their heartbeats in ([`Room::fold`]): a member whose own renewals
/// keep losing a busy index to others' sends is renewed by those sends.
async fn heartbeats<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    room: &Room<RelayMember>,
    me: &ContextId,
) -> Outboxes {
    let now = run.room.platform.now_ms();
    let wanted = room.urgent_renewals(me, now, MAX_HEARTBEAT_READS);
    if wanted.is_empty() {
        return Outboxes::new();
    }
    run.room.read_stamps(wanted).await
}

/// A member's heartbeat, written to its own outbox (a key nobody else
/// writes) when its renewal is urgent and the index too busy to take it.
async fn heartbeat<S: Store, P: Platform>(run: &Run<'_, S, P>, me: &Me<'_>) -> Result<(), Error> {
    let mut attempts = run.room.attempts(run.room.policy.poll_write_budget_ms, "");
    let build = |held: Option<&Object>, now| {
        let mut outbox = own_outbox(held, me.id).unwrap_or_else(|| empty_outbox(me.id, now));
        outbox.mail.drop_expired(now);
        stamp(&mut outbox, now);
        Ok((outbox, ()))
    };
    run.room
        .write_outbox(&mut attempts, &me.context, None, build)
        .await
}

/// A new outbox of `id`'s, with nothing in it.
fn empty_outbox(id: &SessionId, now: u64) -> Outbox {
    Outbox {
        session: id.clone(),
        t: Millis::from_u64(now),
        expires_ms: 0,
        ttl_ms: 0,
        p: Vec::new(),
        mail: Mailbox::default(),
    }
}

/// Marks an outbox written now: its writer lives [`MEMBER_TTL_MS`] from
/// here, once an index write folds it in.
fn stamp(outbox: &mut Outbox, now: u64) {
    outbox.t = Millis::from_u64(now);
    outbox.expires_ms = now + MEMBER_TTL_MS;
    outbox.ttl_ms = MEMBER_TTL_MS;
}

/// A batch of messages: checked against what the sender holds (numbers,
/// bytes) before anything is stored, then carried in the index (a small
/// batch that opens a conversation: one write) or put in the sender's
/// outbox, then announced in the index when its readers need telling.
async fn send<S: Store, P: Platform>(run: &Run<'_, S, P>, me: &Me<'_>) -> Result<Reply, Error> {
    let room = &run.room;
    let stored = "nothing was stored; retry with the same seq";
    let mut attempts = room.attempts(room.policy.write_budget_ms, stored);
    let (index, own) = room.read_with_outbox(&mut attempts, &me.context).await?;
    let current: Room<RelayMember> = decode(index.as_ref())?;
    let now = room.platform.now_ms();
    let entry = authenticate(&current, me, now)?;
    let carried = entry.mail.clone();
    let mut boxed = own_outbox(own.as_ref(), me.id)
        .map(|o| o.mail)
        .unwrap_or_default();
    boxed.drop_expired(now);
    // Refused (409, 429) before anything is stored.
    let members = others(&current, me.id, now);
    let trial = boxed
        .clone()
        .accept(&carried, &run.request.send, &members, now, MAX_HELD_BYTES)?;
    let member = entry.d.clone();
    let t = Millis::from_u64(now);
    let claim = member_claim(&me.context, &member, &t);
    let publish = Arrival::Publish {
        recipients: &trial.recipients,
        heartbeat: false,
    };
    let mut dry_run = apply_claim(&claim, publish, room.max_peers, room.platform);
    let batch = Batch {
        me,
        claim: &claim,
        publish,
        needs_index: dry_run(&mut current.clone(), now)?,
        folds: heartbeats(run, &current, &me.context).await,
    };
    if trial.stored == 0 {
        // Retries of stored letters (whose announcement may not have
        // landed), or letters for nobody: nothing new to store.
        let index = batch.index(run, &mut attempts, index).await?;
        return answer(run, me.id, &me.context, None, index, &trial.undeliverable).await;
    }
    // It rides in the index only when the outbox holds nothing it could overtake.
    if batch.needs_index && !boxed.holds_live(now) {
        match carry(run, &batch, &mut attempts, &boxed, index.clone()).await {
            Ok((index, undeliverable)) => {
                return answer(run, me.id, &me.context, None, index, &undeliverable).await
            }
            // Too large for the index: outbox and announcement.
            Err(Error::PayloadTooLarge(_) | Error::Backlog { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let undeliverable = post(run, me, &mut attempts, &current, &carried, own).await?;
    attempts.stored = "your messages were stored, but the room index was not updated \
         (some may not be seen until you retry with the same seq)";
    let index = batch.index(run, &mut attempts, index).await?;
    answer(run, me.id, &me.context, None, index, &undeliverable).await
}

/// A batch being sent, with the entry write it needs.
struct Batch<'a> {
    me: &'a Me<'a>,
    claim: &'a Claim<'a, RelayMember>,
    publish: Arrival<'a>,
    /// Whether the sender's entry must be written (an announcement).
    needs_index: bool,
    /// Heartbeats of members about to expire, folded into the write.
    folds: Outboxes,
}

impl Batch<'_> {
    /// The index after the batch: its announcement written when needed,
    /// else the sender's entry renewed when due.
    async fn index<S: Store, P: Platform>(
        &self,
        run: &Run<'_, S, P>,
        attempts: &mut Attempts<'_, P>,
        index: Option<Object>,
    ) -> Result<Room<RelayMember>, Error> {
        if !self.needs_index {
            return renew(run, self.me, index).await;
        }
        let room = &run.room;
        let mut apply = apply_claim(self.claim, self.publish, room.max_peers, room.platform);
        room.update(attempts, index, |r: &mut Room<RelayMember>, now| {
            authenticate(r, self.me, now)?;
            let wrote = apply(r, now)?;
            if wrote {
                r.fold(&self.folds, now);
            }
            Ok(wrote)
        })
        .await
    }
}

/// Puts the batch in the sender's outbox (rebuilt on the version read after
/// a conflict). Returns the numbers of messages that had nobody to go to.
async fn post<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    me: &Me<'_>,
    attempts: &mut Attempts<'_, P>,
    current: &Room<RelayMember>,
    carried: &Mailbox,
    own: Option<Object>,
) -> Result<Vec<u64>, Error> {
    let build = |held: Option<&Object>, now| {
        let mut outbox = own_outbox(held, me.id).unwrap_or_else(|| empty_outbox(me.id, now));
        let members = others(current, me.id, now);
        let accepted =
            outbox
                .mail
                .accept(carried, &run.request.send, &members, now, MAX_HELD_BYTES)?;
        stamp(&mut outbox, now);
        Ok((outbox, accepted.undeliverable))
    };
    run.room
        .write_outbox(attempts, &me.context, own, build)
        .await
}

/// The caller's outbox, if it is its own (not one of an earlier member).
fn own_outbox(object: Option<&Object>, id: &SessionId) -> Option<Outbox> {
    object
        .and_then(|o| Outbox::decode(&o.body))
        .filter(|o| o.session == *id)
}

/// Puts the batch in the caller's index entry, with the announcement it
/// needs, in one write. Refused (to go to the outbox instead) when the
/// entry would carry more than [`MAX_INLINE_BYTES`] or the index would
/// grow past half its limit (the other half stays for joins).
async fn carry<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    batch: &Batch<'_>,
    attempts: &mut Attempts<'_, P>,
    boxed: &Mailbox,
    index: Option<Object>,
) -> Result<(Room<RelayMember>, Vec<u64>), Error> {
    let (room, me) = (&run.room, batch.me);
    let mut undeliverable = Vec::new();
    let carried = update(
        room.store,
        attempts,
        room.keys.index(),
        index,
        room.max_room_bytes / 2,
        &mut |r: &mut Room<RelayMember>, now| {
            authenticate(r, me, now)?;
            let members = others(r, me.id, now);
            let mut mail = r
                .entry(&me.context)
                .map(|e| e.mail.clone())
                .unwrap_or_default();
            let accepted =
                mail.accept(boxed, &run.request.send, &members, now, MAX_INLINE_BYTES)?;
            let publish = Arrival::Publish {
                recipients: &accepted.recipients,
                heartbeat: false,
            };
            apply_claim(batch.claim, publish, room.max_peers, room.platform)(r, now)?;
            r.fold(&batch.folds, now);
            if let Some(held) = r.mail_mut(&me.context) {
                *held = mail;
            }
            undeliverable = accepted.undeliverable;
            Ok(true)
        },
    )
    .await?;
    Ok((carried, undeliverable))
}

/// The answer: who is here, and the letters for the caller it has not
/// taken, from the index and the outboxes it must read, at most
/// [`MAX_ANSWER_BYTES`] of them (`more` says the rest waits).
async fn answer<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    id: &SessionId,
    context: &ContextId,
    token: Option<String>,
    index: Room<RelayMember>,
    undeliverable: &[u64],
) -> Result<Reply, Error> {
    let cursor = match &run.request.read_from {
        Some(from) => Some(ContextId::parse(from.as_str())?),
        None => None,
    };
    let order = cursor
        .as_ref()
        .map_or(ReadOrder::EachSecond(SURE_DECODES), ReadOrder::From);
    let look = run
        .room
        .look(&index, context, Some(id), READS, order, run.poll)
        .await;
    let now = look.now;
    let peers: Vec<PeerOut<'_>> = index
        .live_members(now)
        .filter(|m| m.id != *id)
        .map(PeerOut::from)
        .collect();
    let after = &run.request.after;
    let (messages, more) = letters_for(&index, &look.outboxes, &look.unread, id, after, now);
    let answer = Answer {
        id,
        token: token.as_deref(),
        peers,
        messages,
        more,
        undeliverable,
        read_from: look.unread.first().map(ContextId::as_str),
        hint: look.hint,
    };
    Ok(Reply {
        status: 200,
        retry_after: None,
        body: to_json(&answer),
        members: index.live_count(now),
        hint: Some(look.hint),
    })
}

/// Each sender's letters for `reader` above its cursor, in order, from the
/// sender's entry and its outbox. A sender whose outbox was left `unread`
/// gives nothing this time, so that no letter is taken past one still
/// waiting there (one with no outbox at all gives its entry's letters). At most [`MAX_ANSWER_BYTES`] (at least
/// one letter): a prefix per sender, the rest next time (`true`).
fn letters_for<'a>(
    index: &'a Room<RelayMember>,
    outboxes: &'a Outboxes,
    unread: &[ContextId],
    reader: &'a SessionId,
    after: &VecMap<SessionId, u64>,
    now: u64,
) -> (Vec<MessageOut<'a>>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (k, sender) in index.entries_live(now) {
        if sender.d.id == *reader {
            continue;
        }
        if unread.contains(k) {
            continue;
        }
        let outbox = outboxes.get(k).filter(|o| o.session == sender.d.id);
        let seen = after.get(&sender.d.id).copied().unwrap_or(0);
        let boxed = outbox
            .into_iter()
            .flat_map(|o| o.mail.for_reader(reader, seen, now));
        let mut letters: Vec<&Letter> = sender
            .mail
            .for_reader(reader, seen, now)
            .chain(boxed)
            .collect();
        sort_by_u64(&mut letters, |l| l.seq);
        letters.dedup_by_key(|l| l.seq);
        for l in letters {
            let size = l.data.get().len() + 64;
            if bytes + size > MAX_ANSWER_BYTES && !out.is_empty() {
                return (out, true);
            }
            bytes += size;
            out.push(MessageOut {
                from: &sender.d.id,
                seq: l.seq,
                data: &l.data,
            });
        }
    }
    (out, false)
}
