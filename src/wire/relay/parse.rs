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
//! "messages": [{"from", "seq", "data"}], "hint"}`, and `"read_from"` when
//! the answer could not read every outbox it needed: the next poll sends it
//! back and starts there. A member is an index
//! entry whose context and session are its peer id and whose delete key is
//! its token; messages are packages in the sender's outbox, bound to their
//! recipient, read in join windows or when announced, exactly as p2pcf's.
//! `seq` grows per sender; a receiver's `after` (the last `seq` it took from
//! each sender) selects what it has not seen, so a retried send (same `seq`,
//! stored once) or a lost answer (the next poll asks again) delivers each
//! message once, in order. Undelivered messages expire after
//! [`MESSAGE_TTL_MS`](crate::engine::mailbox::MESSAGE_TTL_MS).

use sha1::{Digest, Sha1};

use crate::domain::{Base64, DeleteKeyInput, RoomId, SessionId};
use crate::engine::mailbox::{Message, Recipient};
use crate::error::Error;
use crate::json::{once, required, FromJson, Raw, Read, Reader};
use crate::vec_map::VecMap;
use crate::wire::from_json;

/// Largest `meta`, serialized.
pub const MAX_META_BYTES: usize = 1024;
/// Largest `data` of one message, serialized.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most messages in one request.
pub const MAX_SEND: usize = 64;
/// Deepest nesting of arrays and objects in `meta` or a message's `data`.
pub const MAX_NESTING: usize = 32;

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
    pub fn member_id(&self, room: &RoomId) -> String {
        let digest = Sha1::new()
            .chain_update(b"p2pcf-rs relay join\0")
            .chain_update(room.as_str().as_bytes())
            .chain_update(b"\0")
            .chain_update(self.0.as_bytes())
            .finalize();
        Base64::UrlSafeNoPad.encode(&digest[..16])
    }
}

/// Who is calling.
#[derive(Debug)]
pub enum Caller {
    /// No id yet: this request joins.
    Joining {
        meta: Option<Raw>,
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
    pub after: VecMap<SessionId, u64>,
    /// Where its last answer stopped reading the others' outboxes (its
    /// `read_from`): this poll starts there.
    pub read_from: Option<SessionId>,
    pub send: Vec<Message>,
    pub leave: bool,
}

struct Wire {
    room: Option<String>,
    id: Option<String>,
    token: Option<String>,
    meta: Option<Raw>,
    nonce: Option<String>,
    after: VecMap<String, u64>,
    read_from: Option<String>,
    send: Vec<WireMessage>,
    leave: bool,
}

impl FromJson for Wire {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut room, mut id, mut token, mut meta, mut nonce) = (None, None, None, None, None);
        let (mut after, mut read_from, mut send, mut leave) = (None, None, None, None);
        r.object(&mut |r, key| match key {
            "room" => once(&mut room, r.option(String::read)),
            "id" => once(&mut id, r.option(String::read)),
            "token" => once(&mut token, r.option(String::read)),
            "meta" => once(&mut meta, r.option(Raw::read)),
            "nonce" => once(&mut nonce, r.option(String::read)),
            "after" => once(&mut after, VecMap::read(r)),
            "read_from" => once(&mut read_from, r.option(String::read)),
            "send" => once(&mut send, Vec::read(r)),
            "leave" => once(&mut leave, r.bool()),
            _ => r.skip(),
        })?;
        Ok(Self {
            room: room.flatten(),
            id: id.flatten(),
            token: token.flatten(),
            meta: meta.flatten(),
            nonce: nonce.flatten(),
            after: after.unwrap_or_default(),
            read_from: read_from.flatten(),
            send: send.unwrap_or_default(),
            leave: leave.unwrap_or_default(),
        })
    }
}

struct WireMessage {
    to: String,
    seq: u64,
    data: Raw,
}

impl FromJson for WireMessage {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut to, mut seq, mut data) = (None, None, None);
        r.object(&mut |r, key| match key {
            "to" => once(&mut to, String::read(r)),
            "seq" => once(&mut seq, r.u64()),
            "data" => once(&mut data, Raw::read(r)),
            _ => r.skip(),
        })?;
        Ok(Self {
            to: required(to)?,
            seq: required(seq)?,
            data: required(data)?,
        })
    }
}

/// Parses a relay request; every rule broken is a 4xx with its reason.
pub fn parse(body: &[u8]) -> Result<RelayRequest, Error> {
    let wire = from_json(body, BAD_SHAPE, Wire::read)?;
    let room = RoomId::parse(wire.room.as_deref().unwrap_or_default())?;
    request(wire, room)
}

const BAD_SHAPE: &str = "Bad relay request: expected a JSON object with valid fields";

/// A frame on a relay WebSocket: the same JSON as a request, without the
/// room (the socket's; if given it must match).
#[derive(Debug)]
pub enum Frame {
    /// The socket's first frame: a join, or a member coming back (`id`,
    /// `token`, `after`), which may also send.
    Hello(RelayRequest),
    /// A later frame: messages to send, or the leave.
    Member { send: Vec<Message>, leave: bool },
}

/// Parses a frame of a socket in `room`; `joined` once its hello was taken.
pub fn parse_frame(body: &[u8], room: &RoomId, joined: bool) -> Result<Frame, Error> {
    let wire = from_json(body, BAD_SHAPE, Wire::read)?;
    if wire.room.as_deref().is_some_and(|r| r != room.as_str()) {
        return Err(Error::BadRequest("Room does not match the socket's"));
    }
    if !joined {
        return request(wire, room.clone()).map(Frame::Hello);
    }
    let hello = wire.id.is_some() || wire.token.is_some() || wire.meta.is_some();
    if hello || wire.nonce.is_some() || !wire.after.is_empty() || wire.read_from.is_some() {
        return Err(Error::BadRequest(
            "This socket has joined: later frames carry send or leave",
        ));
    }
    Ok(Frame::Member {
        send: messages(wire.send)?,
        leave: wire.leave,
    })
}

fn request(wire: Wire, room: RoomId) -> Result<RelayRequest, Error> {
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
    let send = messages(wire.send)?;
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
    let read_from = wire
        .read_from
        .map(|id| SessionId::parse(&id).map_err(|_| Error::BadRequest("Bad read_from")))
        .transpose()?;
    Ok(RelayRequest {
        room,
        caller,
        after,
        read_from,
        send,
        leave: wire.leave,
    })
}

/// The messages of a request or frame, each within its limits, `seq` growing.
fn messages(wire: Vec<WireMessage>) -> Result<Vec<Message>, Error> {
    if wire.len() > MAX_SEND {
        return Err(Error::PayloadTooLarge("Too many messages"));
    }
    let mut send = Vec::with_capacity(wire.len());
    for m in wire {
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
    Ok(send)
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
