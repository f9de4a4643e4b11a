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

use crate::config::Config;
use crate::error::Error;
use crate::hints;
use crate::platform::Platform;
use crate::protocol::{ContextId, DeleteKeyInput, Millis, Package, RoomId, SessionId};
use crate::room::{Arrival, Claim, Member, Outbox, PackageChange, Room, Sent};
use crate::service::{
    apply_claim, decode, read_index_and_outbox, read_outboxes, read_with, renewal_attempts,
    to_json, update, write_outbox, Attempts, Reply, RetryPolicy, MAX_OUTBOX_READS,
};
use crate::store::{Counting, Store};

/// A member's lifetime after its last request (it polls every few seconds).
pub const MEMBER_TTL_MS: u64 = 60_000;
/// Undelivered messages are dropped this long after they were sent.
pub const MESSAGE_TTL_MS: u64 = 60_000;
/// Largest `meta`, serialized.
pub const MAX_META_BYTES: usize = 1024;
/// Largest `data` of one message, serialized.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most messages in one request.
pub const MAX_SEND: usize = 64;
/// Deepest nesting of arrays and objects in `meta` or a message's `data`.
pub const MAX_NESTING: usize = 32;
/// Largest batch carried in the index (see [`crate::room::Entry::inline`]).
pub const MAX_INLINE_BYTES: usize = 16 * 1024;
/// Most undelivered messages one member may hold.
pub const MAX_PENDING: usize = 1024;

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

impl Member for RelayMember {
    fn session(&self) -> &SessionId {
        &self.id
    }
}

/// Who is calling.
#[derive(Debug)]
pub enum Caller {
    /// No id yet: this request joins.
    Joining { meta: Option<Box<RawValue>> },
    /// A member, proven by its token.
    Member {
        id: SessionId,
        token: DeleteKeyInput,
    },
}

/// Where a message goes.
#[derive(Debug)]
pub enum Target {
    One(SessionId),
    /// Every member in the room when it is sent.
    All,
}

#[derive(Debug)]
pub struct Outgoing {
    pub to: Target,
    pub seq: u64,
    pub data: Box<RawValue>,
}

#[derive(Debug)]
pub struct RelayRequest {
    pub room: RoomId,
    pub caller: Caller,
    /// The last `seq` the caller took from each sender.
    pub after: BTreeMap<SessionId, u64>,
    pub send: Vec<Outgoing>,
    pub leave: bool,
}

#[derive(Deserialize)]
struct Wire {
    room: Option<String>,
    id: Option<String>,
    token: Option<String>,
    meta: Option<Box<RawValue>>,
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
            Caller::Joining { meta: wire.meta }
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
        let to = if m.to == "*" {
            Target::All
        } else {
            Target::One(SessionId::parse(&m.to).map_err(|_| Error::BadRequest("Bad recipient"))?)
        };
        send.push(Outgoing {
            to,
            seq: m.seq,
            data: m.data,
        });
    }
    if send.windows(2).any(|w| w[1].seq <= w[0].seq) {
        return Err(Error::BadRequest("Message seq must grow"));
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
pub fn outbox_key(room: &RoomId, id: &SessionId) -> String {
    format!("relay/{room}/c/{id}")
}

/// A message as stored in its sender's outbox (`Sent::raw`).
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    s: u64,
    at: u64,
    #[serde(borrow)]
    d: &'a RawValue,
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
    hint: hints::Hint,
}

fn context_of(id: &SessionId) -> Result<ContextId, Error> {
    ContextId::parse(id.as_str())
}

/// Runs one relay request.
pub async fn handle<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    request: &RelayRequest,
) -> Result<Reply, Error> {
    let key = room_key(&request.room);
    let max_bytes = config.limits.max_room_bytes;
    let max_peers = config.limits.max_peers;
    let now = platform.now_ms();
    let t = Millis::from_u64(now);

    let (id, joining) = match &request.caller {
        Caller::Joining { .. } => {
            let mut bytes = [0u8; 16];
            platform.fill_random(&mut bytes);
            let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            (SessionId::parse(&id)?, true)
        }
        Caller::Member { id, .. } => (id.clone(), false),
    };
    let context = context_of(&id)?;
    let own_key = outbox_key(&request.room, &id);
    let mut attempts = Attempts::new(
        platform,
        policy,
        if joining {
            policy.join_budget_ms
        } else {
            policy.write_budget_ms
        },
        "nothing was stored; retry with the same seq",
    );
    // A poll reads the index alone; a send also its own outbox.
    let (index, own) = if request.send.is_empty() {
        (read_with(store, &mut attempts, &key).await?, None)
    } else {
        read_index_and_outbox(store, &mut attempts, &key, &own_key).await?
    };
    let room: Room<RelayMember> = decode(index.as_ref())?;

    // A member proves itself with its token on every call.
    let member = match &request.caller {
        Caller::Joining { meta } => RelayMember {
            id: id.clone(),
            meta: meta.clone(),
        },
        Caller::Member { token, .. } => {
            let entry = room
                .entry(&context)
                .filter(|e| e.d.id == id && e.is_live(now))
                .ok_or(Error::Left)?;
            if !entry.dk.matches(token) {
                return Err(Error::BadRequest("Bad token"));
            }
            if request.leave {
                let mut attempts = Attempts::new(
                    platform,
                    policy,
                    policy.leave_budget_ms,
                    "the leave was not stored",
                );
                let left = update(
                    store,
                    &mut attempts,
                    &key,
                    index,
                    max_bytes,
                    |r: &mut Room<RelayMember>, now| Ok(r.remove(&context, Some(&id), token, now)),
                )
                .await?;
                return Ok(Reply {
                    body: b"{}".to_vec(),
                    peers: left.live_count(platform.now_ms()),
                    hint: None,
                });
            }
            entry.d.clone()
        }
    };
    let claim = Claim {
        context: &context,
        data: &member,
        t: &t,
        ttl_ms: MEMBER_TTL_MS,
    };
    room.check(&claim, now)?;

    // Each message, once per recipient (a broadcast goes to everyone here now).
    let mut fresh: Vec<Package> = Vec::new();
    let recipients: Vec<SessionId> = room
        .live_members(now)
        .filter(|m| m.id != id)
        .map(|m| m.id.clone())
        .collect();
    for m in &request.send {
        let to: Vec<&SessionId> = match &m.to {
            Target::One(to) => vec![to],
            Target::All => recipients.iter().collect(),
        };
        let raw = serde_json::value::to_raw_value(&Stored {
            s: m.seq,
            at: now,
            d: &m.data,
        })
        .map_err(|_| Error::BadRequest("Bad message"))?;
        for to in to {
            fresh.push(Package {
                to: to.clone(),
                raw: raw.clone(),
            });
        }
    }
    let change = if fresh.is_empty() {
        PackageChange::Same
    } else {
        PackageChange::New
    };
    let publish = Arrival::Publish {
        change,
        packages: &fresh,
    };
    // (A request without messages is a poll: it only renews, when due.)
    let needs_write = joining
        || (!fresh.is_empty()
            && apply_claim(&claim, publish, max_peers, platform)(&mut room.clone(), now)
                == Ok(true));

    // A batch that opens a conversation outside a join window needs the
    // index anyway (to announce it): a small one rides in the index itself,
    // one write in all; follow-ups go to the outbox the announcement covers.
    let inline_bytes: usize = fresh.iter().map(|p| p.raw.get().len()).sum();
    if needs_write && !joining && inline_bytes <= MAX_INLINE_BYTES {
        let carried = update(
            store,
            &mut attempts,
            &key,
            index.clone(),
            max_bytes,
            |r: &mut Room<RelayMember>, now| {
                apply_claim(&claim, publish, max_peers, platform)(r, now)?;
                let addressed = r.address(&fresh, now);
                let Some(inline) = r.inline_mut(&context) else {
                    return Ok(false);
                };
                keep_unexpired(inline, now);
                for sent in addressed {
                    replace_retried(inline, &sent);
                    inline.push(sent);
                }
                Ok(true)
            },
        )
        .await;
        match carried {
            Ok(index) => {
                return answer(
                    store, platform, policy, config, request, &id, &context, None, index,
                )
                .await
            }
            // The room is too full to carry it: outbox and announcement.
            Err(Error::PayloadTooLarge(_)) => {}
            Err(e) => return Err(e),
        }
    }

    // Messages go to the sender's outbox first (with the unexpired ones it
    // holds), each bound to its recipient's context.
    if !fresh.is_empty() {
        let mut kept: Vec<Sent> = own
            .as_ref()
            .and_then(|o| Outbox::decode(&o.body))
            .filter(|o| o.session == id)
            .map(|o| o.p)
            .unwrap_or_default();
        keep_unexpired(&mut kept, now);
        for sent in room.address(&fresh, now) {
            replace_retried(&mut kept, &sent);
            kept.push(sent);
        }
        if kept.len() > MAX_PENDING {
            return Err(Error::PayloadTooLarge("Too many undelivered messages"));
        }
        let outbox = |now| Outbox {
            session: id.clone(),
            t: Millis::from_u64(now),
            expires_ms: now + MEMBER_TTL_MS,
            ttl_ms: MEMBER_TTL_MS,
            p: kept.clone(),
        };
        write_outbox(store, &mut attempts, &own_key, own, outbox).await?;
        attempts.stored = "your messages were stored, but the room index was not updated \
             (some may not be seen until you retry with the same seq)";
    }

    let index = if needs_write {
        update(
            store,
            &mut attempts,
            &key,
            index,
            max_bytes,
            apply_claim(&claim, publish, max_peers, platform),
        )
        .await?
    } else {
        // The caller's entry is live (its token was checked against it).
        let mut renewing = match room.entry(&context) {
            Some(entry) => renewal_attempts(platform, policy, entry, now),
            None => Attempts::new(platform, policy, policy.poll_write_budget_ms, ""),
        };
        let mut renew = apply_claim(&claim, Arrival::Poll, max_peers, platform);
        // A renewal also drops the caller's expired carried messages.
        let renew_and_prune = |r: &mut Room<RelayMember>, now| {
            let write = renew(r, now)?;
            if write {
                if let Some(inline) = r.inline_mut(&context) {
                    keep_unexpired(inline, now);
                }
            }
            Ok(write)
        };
        match update(
            store,
            &mut renewing,
            &key,
            index,
            max_bytes,
            renew_and_prune,
        )
        .await
        {
            Ok(updated) => updated,
            Err(e @ Error::Unreadable { .. }) => return Err(e),
            Err(_) => room,
        }
    };
    let token = index
        .entry(&context)
        .filter(|_| joining)
        .map(|e| e.dk.as_str().to_owned());
    answer(
        store, platform, policy, config, request, &id, &context, token, index,
    )
    .await
}

/// Drops messages older than [`MESSAGE_TTL_MS`].
fn keep_unexpired(list: &mut Vec<Sent>, now: u64) {
    list.retain(|s| {
        serde_json::from_str::<Stored<'_>>(s.raw.get()).is_ok_and(|m| m.at + MESSAGE_TTL_MS > now)
    });
}

/// A retried send (same recipient and seq) replaces the stored copy.
fn replace_retried(list: &mut Vec<Sent>, sent: &Sent) {
    let seq = |s: &Sent| {
        serde_json::from_str::<Stored<'_>>(s.raw.get())
            .map(|m| m.s)
            .ok()
    };
    let new = seq(sent);
    list.retain(|s| s.to != sent.to || seq(s) != new);
}

/// The answer: who is here, and the messages for the caller it has not
/// taken, from the outboxes it must read and from the index itself.
#[allow(clippy::too_many_arguments)]
async fn answer<S: Store, P: Platform>(
    store: &Counting<'_, S>,
    platform: &P,
    policy: &RetryPolicy,
    config: &Config,
    request: &RelayRequest,
    id: &SessionId,
    context: &ContextId,
    token: Option<String>,
    index: Room<RelayMember>,
) -> Result<Reply, Error> {
    let now = platform.now_ms();
    let budget = policy.max_ops.saturating_sub(store.counts().total());
    let wanted = index.outboxes_to_read(
        context,
        Some(id),
        now,
        MAX_OUTBOX_READS.min(budget as usize),
    );
    let outboxes = read_outboxes(
        store,
        |k: &ContextId| format!("relay/{}/c/{k}", request.room),
        wanted,
    )
    .await;
    let peers: Vec<PeerOut<'_>> = index
        .live_members(now)
        .filter(|m| m.id != *id)
        .map(|m| PeerOut {
            id: &m.id,
            meta: m.meta.as_deref(),
        })
        .collect();
    let mut messages: Vec<MessageOut<'_>> = Vec::new();
    for (k, sender) in index.entries_live(now) {
        if k == context {
            continue;
        }
        let seen = request.after.get(&sender.d.id).copied().unwrap_or(0);
        let carried = sender.inline.iter();
        let boxed = outboxes
            .get(k)
            .filter(|o| o.session == sender.d.id)
            .into_iter()
            .flat_map(|o| o.p.iter());
        for sent in carried.chain(boxed) {
            if sent.to != *id || sent.k.as_ref() != Some(context) {
                continue;
            }
            if let Ok(m) = serde_json::from_str::<Stored<'_>>(sent.raw.get()) {
                if m.s > seen && m.at + MESSAGE_TTL_MS > now {
                    messages.push(MessageOut {
                        from: &sender.d.id,
                        seq: m.s,
                        data: m.d,
                    });
                }
            }
        }
    }
    messages.sort_by(|a, b| (a.from, a.seq).cmp(&(b.from, b.seq)));
    messages.dedup_by(|a, b| a.from == b.from && a.seq == b.seq);
    let situation = index.situation(
        context,
        Some(id),
        &outboxes,
        config.poll.fast_window_ms,
        now,
    );
    let hint = hints::hint(&situation, &config.poll);
    let answer = Answer {
        id,
        token: token.as_deref(),
        peers,
        messages,
        hint,
    };
    Ok(Reply {
        body: to_json(&answer),
        peers: index.live_count(now),
        hint: Some(hint),
    })
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
        assert!(parse(br#"{"room":"room-x","send":[{"to":"*","seq":1,"data":[[1]]}]}"#).is_ok());
    }
}
