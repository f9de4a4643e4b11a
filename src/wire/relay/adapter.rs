//! The relay adapter: joins, sends, polls and leaves of the relay API on
//! the room engine, kept in R2 (`relay/<room>` and one outbox per member).
//! A member is an index entry whose context and session are its peer id and
//! whose delete key is its token; its messages are letters in its
//! [`Mailbox`], carried in its entry or in its outbox.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::parse::{Caller, JoinNonce, RelayRequest};
use crate::config::Config;
use crate::domain::{ContextId, DeleteKeyInput, Millis, RoomId, SessionId};
use crate::engine::hints;
use crate::engine::mailbox::{Letter, Mailbox, MAX_ANSWER_BYTES, MAX_HELD_BYTES};
use crate::engine::room::{Arrival, Claim, Entry, Member, Outbox, Outboxes, Room};
use crate::error::Error;
use crate::host::r2::{
    apply_claim, decode, read_index_and_outbox, read_outboxes_within, read_with, renewal_attempts,
    update, write_outbox, Attempts, RetryPolicy,
};
use crate::platform::Platform;
use crate::store::{Counting, Object, Store};
use crate::wire::{to_json, Reply};

pub use crate::engine::mailbox::{MAX_INLINE_BYTES, MESSAGE_TTL_MS};

/// A member's lifetime after its last request (it polls every few seconds).
pub const MEMBER_TTL_MS: u64 = 60_000;
/// Most outboxes one relay poll reads (each second the next ones: a
/// newcomer in a full room covers every outbox in four polls).
pub const MAX_RELAY_OUTBOX_READS: usize = 8;
/// Most outbox bytes one relay poll decodes (at least one outbox): with
/// [`MAX_RELAY_OUTBOX_READS`], what bounds a poll's CPU whatever the others hold.
pub const MAX_DECODE_BYTES: usize = 160 * 1024;

/// A relay member's public data: its id and the `meta` it joined with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RelayMember {
    pub id: SessionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Box<RawValue>>,
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

/// The R2 key of a relay room's index (apart from p2pcf rooms of the same name).
pub fn room_key(room: &RoomId) -> String {
    format!("relay/{room}")
}

/// The R2 key of a relay member's outbox (peer ids are base64url).
pub fn outbox_key(room: &RoomId, id: &str) -> String {
    format!("relay/{room}/c/{id}")
}

#[derive(Serialize)]
struct PeerOut<'a> {
    id: &'a SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    from: &'a SessionId,
    seq: u64,
    data: &'a RawValue,
}

#[derive(Serialize)]
struct Answer<'a> {
    id: &'a SessionId,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    peers: Vec<PeerOut<'a>>,
    messages: Vec<MessageOut<'a>>,
    /// More messages wait than one answer carries: poll again now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more: bool,
    /// Numbers of messages sent now that had nobody to go to (not stored).
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    undeliverable: &'a [u64],
    hint: hints::Hint,
}

/// One request's surroundings.
struct Run<'a, S, P> {
    store: &'a Counting<'a, S>,
    platform: &'a P,
    policy: &'a RetryPolicy,
    config: &'a Config,
    request: &'a RelayRequest,
    /// The room index's key.
    key: String,
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
        store,
        platform,
        policy,
        config,
        request,
        key: room_key(&request.room),
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

/// A member's claim to be here (its data as stored; `t` is the server's clock).
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
    meta: &Option<Box<RawValue>>,
    nonce: Option<&JoinNonce>,
) -> Result<Reply, Error> {
    let id = match nonce {
        Some(nonce) => nonce.member_id(&run.request.room),
        None => {
            let mut bytes = [0u8; 16];
            run.platform.fill_random(&mut bytes);
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }
    };
    let id = SessionId::parse(&id)?;
    let context = ContextId::parse(id.as_str())?;
    let member = RelayMember {
        id: id.clone(),
        meta: meta.clone(),
    };
    let t = Millis::from_u64(run.platform.now_ms());
    let claim = Claim {
        may_join: true,
        ..member_claim(&context, &member, &t)
    };
    let limits = &run.config.limits;
    let mut attempts = Attempts::new(
        run.platform,
        run.policy,
        run.policy.join_budget_ms,
        "nothing was stored; join again",
    );
    let index = read_with(run.store, &mut attempts, &run.key).await?;
    let mut join = apply_claim(&claim, Arrival::Poll, limits.max_peers, run.platform);
    let room = update(
        run.store,
        &mut attempts,
        &run.key,
        index,
        limits.max_room_bytes,
        |r: &mut Room<RelayMember>, now| {
            // A retried join (same nonce) finds its entry: nothing to write.
            let retried = r
                .entry(&context)
                .is_some_and(|e| e.d.id == id && e.is_live(now));
            if retried {
                return Ok(false);
            }
            join(r, now)
        },
    )
    .await?;
    let token = room
        .entry(&context)
        .map(|e| e.dk.as_str().to_owned())
        .ok_or(Error::Left)?;
    answer(run, &id, &context, Some(token), room, &[]).await
}

async fn leave<S: Store, P: Platform>(run: &Run<'_, S, P>, me: &Me<'_>) -> Result<Reply, Error> {
    let mut attempts = Attempts::new(
        run.platform,
        run.policy,
        run.policy.leave_budget_ms,
        "the leave was not stored",
    );
    let index = read_with(run.store, &mut attempts, &run.key).await?;
    let left = update(
        run.store,
        &mut attempts,
        &run.key,
        index,
        run.config.limits.max_room_bytes,
        |r: &mut Room<RelayMember>, now| {
            authenticate(r, me, now)?;
            Ok(r.remove(&me.context, Some(me.id), me.token, now))
        },
    )
    .await?;
    Ok(Reply {
        body: b"{}".to_vec(),
        peers: left.live_count(run.platform.now_ms()),
        hint: None,
    })
}

/// A poll: the index (and the outboxes where messages can wait); renews
/// the caller's entry when due.
async fn poll<S: Store, P: Platform>(run: &Run<'_, S, P>, me: &Me<'_>) -> Result<Reply, Error> {
    let mut attempts = Attempts::new(
        run.platform,
        run.policy,
        run.policy.write_budget_ms,
        "nothing was stored; retry",
    );
    let index = read_with(run.store, &mut attempts, &run.key).await?;
    let room = renew(run, me, index).await?;
    answer(run, me.id, &me.context, None, room, &[]).await
}

/// Renews the caller's entry when its renewal is due (dropping its expired
/// carried letters); a busy index only means "not this time".
async fn renew<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    me: &Me<'_>,
    index: Option<Object>,
) -> Result<Room<RelayMember>, Error> {
    let room: Room<RelayMember> = decode(index.as_ref())?;
    let now = run.platform.now_ms();
    let entry = authenticate(&room, me, now)?;
    let member = entry.d.clone();
    let t = Millis::from_u64(now);
    let claim = member_claim(&me.context, &member, &t);
    let mut renewing = renewal_attempts(run.platform, run.policy, entry, now);
    let mut renew = apply_claim(
        &claim,
        Arrival::Poll,
        run.config.limits.max_peers,
        run.platform,
    );
    let renewed = update(
        run.store,
        &mut renewing,
        &run.key,
        index,
        run.config.limits.max_room_bytes,
        |r: &mut Room<RelayMember>, now| {
            authenticate(r, me, now)?;
            let write = renew(r, now)?;
            if write {
                if let Some(mail) = r.mail_mut(&me.context) {
                    mail.drop_expired(now);
                }
            }
            Ok(write)
        },
    )
    .await;
    match renewed {
        Ok(updated) => Ok(updated),
        Err(Error::Busy { .. } | Error::PayloadTooLarge(_)) => Ok(room),
        Err(e) => Err(e),
    }
}

/// A batch of messages: checked against what the sender holds (numbers,
/// bytes) before anything is stored, then carried in the index (a small
/// batch that opens a conversation: one write) or put in the sender's
/// outbox, then announced in the index when its readers need telling.
async fn send<S: Store, P: Platform>(run: &Run<'_, S, P>, me: &Me<'_>) -> Result<Reply, Error> {
    let (store, platform, policy) = (run.store, run.platform, run.policy);
    let mut attempts = Attempts::new(
        platform,
        policy,
        policy.write_budget_ms,
        "nothing was stored; retry with the same seq",
    );
    let own_key = outbox_key(&run.request.room, me.id.as_str());
    let (index, own) = read_index_and_outbox(store, &mut attempts, &run.key, &own_key).await?;
    let room: Room<RelayMember> = decode(index.as_ref())?;
    let now = platform.now_ms();
    let entry = authenticate(&room, me, now)?;
    let carried = entry.mail.clone();
    let mut boxed = own_outbox(own.as_ref(), me.id)
        .map(|o| o.mail)
        .unwrap_or_default();
    boxed.drop_expired(now);
    // Refused (409, 429) before anything is stored.
    let members = others(&room, me.id, now);
    let trial = boxed
        .clone()
        .accept(&carried, &run.request.send, &members, now, MAX_HELD_BYTES)?;
    let member = entry.d.clone();
    let t = Millis::from_u64(now);
    let claim = member_claim(&me.context, &member, &t);
    let max_peers = run.config.limits.max_peers;
    let publish = Arrival::Publish {
        heartbeat: false,
        recipients: &trial.recipients,
    };
    let needs_index = apply_claim(&claim, publish, max_peers, platform)(&mut room.clone(), now)?;
    if trial.stored == 0 {
        // Retries of stored letters (whose announcement may not have
        // landed), or letters for nobody: nothing new to store.
        let room = if needs_index {
            announce(run, me, &mut attempts, &claim, publish, index).await?
        } else {
            renew(run, me, index).await?
        };
        return answer(run, me.id, &me.context, None, room, &trial.undeliverable).await;
    }

    // It rides in the index only when the outbox holds nothing it could overtake.
    if needs_index && !boxed.holds_live(now) {
        match carry(run, me, &mut attempts, &claim, &boxed, index.clone()).await {
            Ok((room, undeliverable)) => {
                return answer(run, me.id, &me.context, None, room, &undeliverable).await
            }
            // Too large for the index: outbox and announcement.
            Err(Error::PayloadTooLarge(_) | Error::Backlog { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let stored = write_outbox(store, &mut attempts, &own_key, own, |current, now| {
        let mut outbox = own_outbox(current, me.id).unwrap_or_else(|| Outbox {
            session: me.id.clone(),
            t: Millis::from_u64(now),
            expires_ms: 0,
            ttl_ms: 0,
            p: Vec::new(),
            mail: Mailbox::default(),
        });
        let members = others(&room, me.id, now);
        let accepted =
            outbox
                .mail
                .accept(&carried, &run.request.send, &members, now, MAX_HELD_BYTES)?;
        outbox.t = Millis::from_u64(now);
        outbox.expires_ms = now + MEMBER_TTL_MS;
        outbox.ttl_ms = MEMBER_TTL_MS;
        Ok((outbox, accepted.undeliverable))
    })
    .await?;
    attempts.stored = "your messages were stored, but the room index was not updated \
         (some may not be seen until you retry with the same seq)";
    let room = if needs_index {
        announce(run, me, &mut attempts, &claim, publish, index).await?
    } else {
        renew(run, me, index).await?
    };
    answer(run, me.id, &me.context, None, room, &stored).await
}

/// Writes the caller's entry with the announcement its letters need.
async fn announce<S: Store, P: Platform>(
    run: &Run<'_, S, P>,
    me: &Me<'_>,
    attempts: &mut Attempts<'_, P>,
    claim: &Claim<'_, RelayMember>,
    publish: Arrival<'_>,
    index: Option<Object>,
) -> Result<Room<RelayMember>, Error> {
    let limits = &run.config.limits;
    let mut apply = apply_claim(claim, publish, limits.max_peers, run.platform);
    update(
        run.store,
        attempts,
        &run.key,
        index,
        limits.max_room_bytes,
        |r, now| {
            authenticate(r, me, now)?;
            apply(r, now)
        },
    )
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
    me: &Me<'_>,
    attempts: &mut Attempts<'_, P>,
    claim: &Claim<'_, RelayMember>,
    boxed: &Mailbox,
    index: Option<Object>,
) -> Result<(Room<RelayMember>, Vec<u64>), Error> {
    let mut undeliverable = Vec::new();
    let limits = &run.config.limits;
    let room = update(
        run.store,
        attempts,
        &run.key,
        index,
        limits.max_room_bytes / 2,
        |r: &mut Room<RelayMember>, now| {
            authenticate(r, me, now)?;
            let members = others(r, me.id, now);
            let mut mail = r
                .entry(&me.context)
                .map(|e| e.mail.clone())
                .unwrap_or_default();
            let accepted =
                mail.accept(boxed, &run.request.send, &members, now, MAX_INLINE_BYTES)?;
            let publish = Arrival::Publish {
                heartbeat: false,
                recipients: &accepted.recipients,
            };
            apply_claim(claim, publish, limits.max_peers, run.platform)(r, now)?;
            if let Some(carried) = r.mail_mut(&me.context) {
                *carried = mail;
            }
            undeliverable = accepted.undeliverable;
            Ok(true)
        },
    )
    .await?;
    Ok((room, undeliverable))
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
    let now = run.platform.now_ms();
    let budget = run
        .policy
        .max_ops
        .saturating_sub(run.store.counts().total());
    let wanted = index.outboxes_to_read(context, Some(id), now, usize::MAX);
    let limit = MAX_RELAY_OUTBOX_READS.min(budget as usize);
    let to_read = index.outboxes_to_read(context, Some(id), now, limit);
    let room = &run.request.room;
    let key = |k: &ContextId| outbox_key(room, k.as_str());
    let outboxes = read_outboxes_within(run.store, key, to_read, MAX_DECODE_BYTES).await;
    let peers: Vec<PeerOut<'_>> = index
        .live_members(now)
        .filter(|m| m.id != *id)
        .map(|m| PeerOut {
            id: &m.id,
            meta: m.meta.as_deref(),
        })
        .collect();
    let (messages, more) = letters_for(&index, &outboxes, &wanted, id, &run.request.after, now);
    let situation = index.situation(
        context,
        Some(id),
        &outboxes,
        run.config.poll.fast_window_ms,
        now,
    );
    let hint = hints::hint(&situation, &run.config.poll);
    let answer = Answer {
        id,
        token: token.as_deref(),
        peers,
        messages,
        more,
        undeliverable,
        hint,
    };
    Ok(Reply {
        body: to_json(&answer),
        peers: index.live_count(now),
        hint: Some(hint),
    })
}

/// Each sender's letters for `reader` above its cursor, in order, from the
/// sender's entry and its outbox. A sender whose outbox the reader needed
/// but could not read gives nothing this time, so that no letter is taken
/// past one still waiting there. At most [`MAX_ANSWER_BYTES`] (at least
/// one letter): a prefix per sender, the rest next time (`true`).
fn letters_for<'a>(
    index: &'a Room<RelayMember>,
    outboxes: &'a Outboxes,
    wanted: &[ContextId],
    reader: &'a SessionId,
    after: &BTreeMap<SessionId, u64>,
    now: u64,
) -> (Vec<MessageOut<'a>>, bool) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (k, sender) in index.entries_live(now) {
        if sender.d.id == *reader {
            continue;
        }
        let outbox = outboxes.get(k).filter(|o| o.session == sender.d.id);
        if outbox.is_none() && wanted.contains(k) {
            continue;
        }
        let seen = after.get(&sender.d.id).copied().unwrap_or(0);
        let boxed = outbox
            .into_iter()
            .flat_map(|o| o.mail.for_reader(reader, seen, now));
        let mut letters: Vec<&Letter> = sender
            .mail
            .for_reader(reader, seen, now)
            .chain(boxed)
            .collect();
        letters.sort_by_key(|l| l.seq);
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
