//! The relay over a WebSocket: the v1 JSON one frame at a time, on the
//! push host ([`LiveRoom`]), so that a message reaches its addressee the
//! moment it is sent. Sans-IO: the Durable Object glue hands each frame,
//! close and alarm here and sends what comes back.
//!
//! A socket's first frame says who it is: a join (`meta`, `nonce`) or a
//! member coming back (`id`, `token`, `after`), never in the URL. It is
//! answered `{"id", "token" (join), "peers"}`, then what waits for it. Later
//! frames carry `send` or `leave`. The server pushes:
//!
//! ```json
//! {"messages": [{"from", "seq", "data"}]}      each sender's, in seq order
//! {"joined": {"id", "meta"}}    {"left": "<id>"}
//! {"ack": 9, "undeliverable": [9]}             a batch stored (its last seq)
//! {"refused": 9, "status": 429, "error": "...", "retryAfter": 12}
//! ```
//!
//! A frame that breaks the protocol closes the socket with `4000 + status`
//! and the reason (e.g. `4400 Bad JSON`, `4410` past the resume window,
//! `4429` over [`MAX_FRAMES`] frames in [`FRAME_WINDOW_MS`]); a refused
//! batch leaves it open. `ping` is answered `pong`.

use super::adapter::{new_member_id, MessageOut, PeerOut, RelayMember};
use super::parse::{parse_frame, Caller, Frame, RelayRequest};
use crate::domain::{DeleteKey, RoomId, SessionId};
use crate::engine::mailbox::Message;
use crate::error::Error;
use crate::host::live::{Attached, LiveRoom, Push};
use crate::host::r2::new_delete_key;
use crate::json::{self, ToJson, Writer};
use crate::platform::Platform;

/// Most frames one member's socket may send in [`FRAME_WINDOW_MS`] (a
/// handshake is a few dozen; a batch carries up to 64 messages).
pub const MAX_FRAMES: u32 = 100;
pub const FRAME_WINDOW_MS: u64 = 10_000;

/// The room a socket belongs to and its limits.
pub struct SocketRoom<'a, P> {
    pub id: &'a RoomId,
    pub platform: &'a P,
    /// Most members the room takes.
    pub max_members: usize,
    /// Largest frame taken.
    pub max_frame_bytes: usize,
}

/// A frame to send.
pub type Out = (SessionId, String);

/// What a frame, close or alarm does.
#[derive(Debug, Default)]
pub struct Effects {
    /// Frames for the socket the frame came on, in order.
    pub reply: Vec<String>,
    /// Frames for other members' sockets.
    pub pushes: Vec<Out>,
    /// The socket now belongs to this member (remember it in its attachment).
    pub became: Option<SessionId>,
    /// Close the socket with this code and reason.
    pub close: Option<(u16, String)>,
}

impl Effects {
    fn closing(error: &Error) -> Self {
        Self {
            close: Some(close_for(error)),
            ..Self::default()
        }
    }
}

/// The close code and reason for an error: `4000 + status`, its text
/// (cut to the 123 bytes a close frame holds).
pub fn close_for(error: &Error) -> (u16, String) {
    let mut reason = error.to_string();
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason.truncate(end);
    (4000 + error.status(), reason)
}

struct Welcome<'a> {
    id: &'a SessionId,
    token: Option<&'a str>,
    peers: Vec<PeerOut<'a>>,
}

enum Pushed<'a> {
    Messages(Vec<MessageOut<'a>>),
    Joined(PeerOut<'a>),
    Left(&'a SessionId),
}

struct Ack<'a> {
    ack: u64,
    undeliverable: &'a [u64],
}

struct Refused {
    refused: u64,
    status: u16,
    error: String,
    retry_after: Option<u32>,
}

impl ToJson for Welcome<'_> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("id", self.id)
                .field_if("token", self.token)
                .field("peers", &self.peers);
        });
    }
}

/// `{"messages": [...]}`, `{"joined": {...}}` or `{"left": "<id>"}`.
impl ToJson for Pushed<'_> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            match self {
                Pushed::Messages(m) => w.field("messages", m),
                Pushed::Joined(p) => w.field("joined", p),
                Pushed::Left(id) => w.field("left", *id),
            };
        });
    }
}

impl ToJson for Ack<'_> {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("ack", &self.ack);
            if !self.undeliverable.is_empty() {
                w.field("undeliverable", self.undeliverable);
            }
        });
    }
}

impl ToJson for Refused {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("refused", &self.refused)
                .field("status", &u64::from(self.status))
                .field("error", &self.error)
                .field_if("retryAfter", self.retry_after.map(u64::from).as_ref());
        });
    }
}

/// A push as its frame.
pub fn render(push: &Push<RelayMember>) -> String {
    let frame = match push {
        Push::Joined(m) => Pushed::Joined(PeerOut::from(m)),
        Push::Left(id) => Pushed::Left(id),
        Push::Letters { from, letters } => Pushed::Messages(
            letters
                .iter()
                .map(|l| MessageOut {
                    from,
                    seq: l.seq,
                    data: &l.data,
                })
                .collect(),
        ),
    };
    text(&frame)
}

fn text<T: ToJson>(value: &T) -> String {
    json::to_string(value)
}

fn rendered(pushes: Vec<(SessionId, Push<RelayMember>)>) -> Vec<Out> {
    pushes.into_iter().map(|(to, p)| (to, render(&p))).collect()
}

/// One text frame from a socket that belongs to `member` (`None` until
/// its first frame is taken).
pub fn on_frame<P: Platform>(
    live: &mut LiveRoom<RelayMember>,
    room: &SocketRoom<'_, P>,
    member: Option<&SessionId>,
    frame: &str,
) -> Effects {
    if frame.len() > room.max_frame_bytes {
        return Effects::closing(&Error::PayloadTooLarge("Frame too large"));
    }
    let now = room.platform.now_ms();
    if member.is_some_and(|me| !live.meter(me, MAX_FRAMES, FRAME_WINDOW_MS, now)) {
        return Effects::closing(&Error::RateLimitedFrames);
    }
    if frame == "ping" {
        return Effects {
            reply: vec!["pong".to_owned()],
            ..Effects::default()
        };
    }
    let parsed = parse_frame(frame.as_bytes(), room.id, member.is_some());
    let result = match (parsed, member) {
        (Ok(Frame::Hello(request)), _) => hello(live, room, request),
        (Ok(Frame::Member { send, leave }), Some(me)) => {
            Ok(member_frame(live, room, me, &send, leave))
        }
        (Ok(Frame::Member { .. }), None) => Err(Error::BadRequest("Join first")),
        (Err(e), _) => Err(e),
    };
    result.unwrap_or_else(|e| Effects::closing(&e))
}

/// A socket's first frame: a join or a member coming back (which may send too).
fn hello<P: Platform>(
    live: &mut LiveRoom<RelayMember>,
    room: &SocketRoom<'_, P>,
    request: RelayRequest,
) -> Result<Effects, Error> {
    let now = room.platform.now_ms();
    let (id, attached) = match request.caller {
        Caller::Joining { meta, nonce } => {
            let id = new_member_id(nonce.as_ref(), room.id, room.platform)?;
            let member = RelayMember {
                id: id.clone(),
                meta,
            };
            let new_key = || new_delete_key(room.platform);
            let attached = live.join(member, new_key, now, room.max_members)?;
            (id, attached)
        }
        Caller::Member { id, token } => {
            let attached = live.resume(&id, &token, request.after, now)?;
            (id, attached)
        }
    };
    let mut effects = welcome(&id, attached);
    if !request.send.is_empty() || request.leave {
        let more = member_frame(live, room, &id, &request.send, request.leave);
        effects.reply.extend(more.reply);
        effects.pushes.extend(more.pushes);
        effects.close = more.close;
    }
    Ok(effects)
}

/// The welcome frame, then what waits for the member; pushes for the others.
fn welcome(id: &SessionId, attached: Attached<RelayMember>) -> Effects {
    let first = Welcome {
        id,
        token: attached.token.as_ref().map(DeleteKey::as_str),
        peers: attached.peers.iter().map(PeerOut::from).collect(),
    };
    let mut reply = vec![text(&first)];
    let mut pushes = Vec::new();
    for (to, push) in attached.pushes {
        if to == *id {
            reply.push(render(&push));
        } else {
            pushes.push((to, render(&push)));
        }
    }
    Effects {
        reply,
        pushes,
        became: Some(id.clone()),
        close: None,
    }
}

/// A member's batch (acked, or refused with the socket left open) or leave
/// (the socket closes with 1000).
fn member_frame<P: Platform>(
    live: &mut LiveRoom<RelayMember>,
    room: &SocketRoom<'_, P>,
    me: &SessionId,
    send: &[Message],
    leave: bool,
) -> Effects {
    let now = room.platform.now_ms();
    let mut effects = Effects::default();
    if let Some(last) = send.last().map(|m| m.seq) {
        match live.send(me, send, now) {
            Ok(delivered) => {
                let ack = Ack {
                    ack: last,
                    undeliverable: &delivered.undeliverable,
                };
                effects.reply.push(text(&ack));
                effects.pushes = rendered(delivered.pushes);
            }
            Err(Error::Left) => return Effects::closing(&Error::Left),
            Err(e) => effects.reply.push(text(&Refused {
                refused: last,
                status: e.status(),
                error: e.to_string(),
                retry_after: e.retry_after_s(),
            })),
        }
    }
    if leave {
        effects.pushes.extend(rendered(live.leave(me, now)));
        effects.close = Some((1000, "Left".to_owned()));
    }
    effects
}

/// A socket closed: by its member (1000, 1005 for `close()` without a
/// code, 1001 for a tab that closes: a leave) or dropped (1006 and the
/// rest: it may come back).
pub fn on_close(
    live: &mut LiveRoom<RelayMember>,
    member: &SessionId,
    code: u16,
    now_ms: u64,
) -> Vec<Out> {
    if matches!(code, 1000 | 1001 | 1005) {
        rendered(live.leave(member, now_ms))
    } else {
        live.dropped(member, now_ms);
        Vec::new()
    }
}

/// The room's alarm: members whose resume window ended are gone.
pub fn on_alarm(live: &mut LiveRoom<RelayMember>, now_ms: u64) -> Vec<Out> {
    rendered(live.expire(now_ms))
}
