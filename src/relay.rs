//! The relay API, v1: signalling for any WebRTC library (simple-peer,
//! fast-rtc-swarm, ...) on the same room engine as the p2pcf protocol.
//!
//! One call, `POST <worker>/relay/v1`, joins, sends, polls and leaves:
//!
//! ```json
//! {"room": "my-room", "meta": {"name": "ann"}}                       // join
//! {"room": "my-room", "id": "...", "token": "...",
//!  "after": {"<peer id>": 7}, "send": [{"to": "<peer id>" | "*", "seq": 8, "data": {...}}]}
//! {"room": "my-room", "id": "...", "token": "...", "leave": true}
//! ```
//!
//! answered `{"id", "token" (on join), "peers": [{"id", "meta"}],
//! "messages": [{"from", "seq", "data"}], "hint"}`. A member is an index
//! entry whose context and session are its peer id and whose delete key is
//! its token; messages are packages in the sender's outbox, bound to their
//! recipient, read in join windows or when announced, exactly as p2pcf's.
//! `seq` grows per sender; a receiver's `after` (the last `seq` it took from
//! each sender) selects what it has not seen, so a retried send (same `seq`,
//! stored once) or a lost answer (the next poll asks again) delivers each
//! message once, in order. Undelivered messages expire after
//! [`MESSAGE_TTL_MS`].

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha1::{Digest, Sha1};

use crate::config::Config;
use crate::error::Error;
use crate::hints;
use crate::mailbox::{Letter, Mailbox, Message, Recipient, MAX_ANSWER_BYTES, MAX_HELD_BYTES};
use crate::platform::Platform;
use crate::protocol::{ContextId, DeleteKeyInput, Millis, RoomId, SessionId};
use crate::room::{Arrival, Claim, Entry, Member, Outbox, Outboxes, PackageChange, Room};
use crate::service::{
    apply_claim, decode, read_index_and_outbox, read_outboxes_within, read_with, renewal_attempts,
    to_json, update, write_outbox, Attempts, Reply, RetryPolicy,
};
use crate::store::{Counting, Object, Store};

pub use crate::mailbox::{MAX_INLINE_BYTES, MESSAGE_TTL_MS};

/// A member's lifetime after its last request (it polls every few seconds).
pub const MEMBER_TTL_MS: u64 = 60_000;
/// Largest `meta`, serialized.
pub const MAX_META_BYTES: usize = 1024;
/// Largest `data` of one message, serialized.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most messages in one request.
pub const MAX_SEND: usize = 64;
/// Most outboxes one relay poll reads (each second the next ones: a
/// newcomer in a full room covers every outbox in four polls).
pub const MAX_RELAY_OUTBOX_READS: usize = 8;
/// Most outbox bytes one relay poll decodes (at least one outbox): with
/// [`MAX_RELAY_OUTBOX_READS`], what bounds a poll's CPU whatever the others hold.
pub const MAX_DECODE_BYTES: usize = 160 * 1024;
/// Deepest nesting of arrays and objects in `meta` or a message's `data`.
pub const MAX_NESTING: usize = 32;

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
    const READ_WINDOW_MS: u64 =
        crate::room::JOIN_WINDOW_MS + MESSAGE_TTL_MS - crate::room::ANNOUNCE_MARGIN_MS;
    const HOLD_MS: u64 = MESSAGE_TTL_MS;
    const ANNOUNCED_FOR_MS: u64 = MESSAGE_TTL_MS + 30_000;

    fn session(&self) -> &SessionId {
        &self.id
    }
}

/// A joining client's secret for its join (16-64 of `[A-Za-z0-9_-]`): the
/// member id is derived from it, so a retried join is the same join.
#[derive(Debug)]
pub struct JoinNonce(String);

impl JoinNonce {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let ok = (16..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::BadRequest("Bad nonce"))
        }
    }

    /// 128 bits of SHA-1 over the room and the nonce: the id shows nothing of the nonce.
    fn member_id(&self, room: &RoomId) -> String {
        let digest = Sha1::new()
            .chain_update(b"p2pcf-rs relay join\0")
            .chain_update(room.as_str().as_bytes())
            .chain_update(b"\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
    }
}

/// Who is calling.
#[derive(Debug)]
pub enum Caller {
    /// No id yet: this request joins.
    Joining {
        meta: Option<Box<RawValue>>,
        nonce: Option<JoinNonce>,
    },
    /// A member, proven by its token.
    Member {
        id: SessionId,
        token: DeleteKeyInput,
    },
}

#[derive(Debug)]
pub struct RelayRequest {
    pub room: RoomId,
    pub caller: Caller,
    /// The last `seq` the caller took from each sender.
    pub after: BTreeMap<SessionId, u64>,
    pub send: Vec<Message>,
    pub leave: bool,
}

#[derive(Deserialize)]
struct Wire {
    room: Option<String>,
    id: Option<String>,
    token: Option<String>,
    meta: Option<Box<RawValue>>,
    nonce: Option<String>,
    #[serde(default)]
    after: BTreeMap<String, u64>,
    #[serde(default)]
    send: Vec<WireMessage>,
    #[serde(default)]
    leave: bool,
}

#[derive(Deserialize)]
struct WireMessage {
    to: String,
    seq: u64,
    data: Box<RawValue>,
}

/// Parses a relay request; every rule broken is a 4xx with its reason.
pub fn parse(body: &[u8]) -> Result<RelayRequest, Error> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            Error::BadRequest("Bad relay request: expected a JSON object with valid fields")
        } else {
            Error::BadRequest("Bad JSON")
        }
    })?;
    let room = RoomId::parse(wire.room.as_deref().unwrap_or_default())?;
    let caller = match (wire.id, wire.token) {
        (None, None) => {
            if let Some(meta) = &wire.meta {
                if meta.get().len() > MAX_META_BYTES {
                    return Err(Error::PayloadTooLarge("Meta too large"));
                }
                if nesting(meta.get()) > MAX_NESTING {
                    return Err(Error::BadRequest("Meta nested too deeply"));
                }
            }
            let nonce = wire.nonce.as_deref().map(JoinNonce::parse).transpose()?;
            Caller::Joining {
                meta: wire.meta,
                nonce,
            }
        }
        (Some(id), Some(token)) => Caller::Member {
            id: SessionId::parse(&id).map_err(|_| Error::BadRequest("Bad peer id"))?,
            token: DeleteKeyInput::parse(&token).map_err(|_| Error::BadRequest("Bad token"))?,
        },
        _ => return Err(Error::BadRequest("A member sends both id and token")),
    };
    if wire.send.len() > MAX_SEND {
        return Err(Error::PayloadTooLarge("Too many messages"));
    }
    let mut send = Vec::with_capacity(wire.send.len());
    for m in wire.send {
        if m.data.get().len() > MAX_MESSAGE_BYTES {
            return Err(Error::PayloadTooLarge("Message too large"));
        }
        if nesting(m.data.get()) > MAX_NESTING {
            return Err(Error::BadRequest("Message nested too deeply"));
        }
        if m.seq == 0 {
            return Err(Error::BadRequest("Message seq starts at 1"));
        }
        let to = if m.to == "*" {
            Recipient::All
        } else {
            Recipient::One(SessionId::parse(&m.to).map_err(|_| Error::BadRequest("Bad recipient"))?)
        };
        send.push(Message {
            to,
            seq: m.seq,
            data: m.data,
        });
    }
    if send.windows(2).any(|w| w[1].seq <= w[0].seq) {
        return Err(Error::BadRequest("Message seq must grow"));
    }
    if matches!(caller, Caller::Joining { .. }) && (!send.is_empty() || wire.leave) {
        return Err(Error::BadRequest(
            "A join sends no messages and does not leave",
        ));
    }
    let after = wire
        .after
        .into_iter()
        .map(|(k, v)| {
            Ok((
                SessionId::parse(&k).map_err(|_| Error::BadRequest("Bad after"))?,
                v,
            ))
        })
        .collect::<Result<_, Error>>()?;
    Ok(RelayRequest {
        room,
        caller,
        after,
        send,
        leave: wire.leave,
    })
}

/// How deeply arrays and objects nest in valid JSON text (brackets inside
/// strings do not count).
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
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
        change: PackageChange::New,
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
                change: PackageChange::New,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_ignores_brackets_in_strings() {
        assert_eq!(nesting("1"), 0);
        assert_eq!(nesting(r#"{"a":[1,{"b":"[[[["}]}"#), 3);
        assert_eq!(nesting(r#""\"[""#), 0);
        assert_eq!(nesting(&("[".repeat(40) + &"]".repeat(40))), 40);
    }

    #[test]
    fn parse_refuses_what_the_api_does_not_take() {
        let deep = format!(
            r#"{{"room":"room-x","send":[{{"to":"*","seq":1,"data":{}}}]}}"#,
            "[".repeat(33) + &"]".repeat(33)
        );
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err(),
            Error::BadRequest("Message nested too deeply")
        );
        let member = r#""id":"abc","token":"tok","send":[{"to":"*","seq":1,"data":[[1]]}]"#;
        assert!(parse(format!(r#"{{"room":"room-x",{member}}}"#).as_bytes()).is_ok());
        // A join carries no messages; numbers start at 1.
        assert_eq!(
            parse(br#"{"room":"room-x","send":[{"to":"*","seq":1,"data":1}]}"#).unwrap_err(),
            Error::BadRequest("A join sends no messages and does not leave")
        );
        let zero =
            r#"{"room":"room-x","id":"abc","token":"tok","send":[{"to":"*","seq":0,"data":1}]}"#;
        assert_eq!(
            parse(zero.as_bytes()).unwrap_err(),
            Error::BadRequest("Message seq starts at 1")
        );
    }
}
