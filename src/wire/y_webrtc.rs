//! y-webrtc's signalling protocol, as its own `bin/server.js` speaks it, on
//! [`Topics`]: JSON text frames
//!
//! ```json
//! {"type": "subscribe", "topics": ["room-a", "room-b"]}
//! {"type": "unsubscribe", "topics": ["room-a"]}
//! {"type": "publish", "topic": "room-a", "data": {...}}
//! {"type": "ping"}
//! ```
//!
//! A publish goes to every socket subscribed to its topic, the sender's
//! included, as `{"type": "publish", "topic", "data", "clients": <how many>}`;
//! `ping` is answered `{"type": "pong"}` (by the runtime, without waking the
//! object, where it can). Topics that are not strings are skipped and
//! frames of another `type` ignored, as that server does. Sans-IO: the
//! Durable Object glue hands each frame here and sends what comes back.
//!
//! A frame that breaks a rule closes its socket with `4000 + status` and
//! the reason: `4400` (not JSON, a bad topic name), `4413` (a frame over the
//! size limit, more than [`MAX_TOPICS_PER_SOCKET`](crate::engine::topics::MAX_TOPICS_PER_SOCKET)
//! topics), `4429` (over [`RATE`]: 200 frames or 512 KiB in 10 s).

use std::borrow::Cow;

use crate::engine::topics::{Rate, SocketId, Topic, Topics};
use crate::error::Error;
use crate::json::{self, once, FromJson, Raw, Read, Reader};
use crate::wire::{from_json, relay::socket::close_for, to_json};

/// Where y-webrtc connects: `wss://<worker>/y-webrtc/<namespace>` (or
/// `/y-webrtc` alone, the namespace `default`); each namespace is one
/// Durable Object.
pub const Y_WEBRTC_PATH: &str = "/y-webrtc";
/// What one socket may send in 10 s: 200 frames (every signal of every
/// peer pair of a y-webrtc room is a publish) and 512 KiB (a joiner's
/// offers and candidates to its 20-34 peers are about 200 KiB). Bytes, not
/// only frames: each publish is sent again to every subscriber.
pub const RATE: Rate = Rate {
    frames: 200,
    bytes: 512 * 1024,
    window_ms: 10_000,
};
/// The `pong` for a `ping`, exactly as the runtime's auto-response sends it.
pub const PING: &str = r#"{"type":"ping"}"#;
pub const PONG: &str = r#"{"type":"pong"}"#;

struct Wire<'a> {
    kind: Option<Cow<'a, str>>,
    /// Each as written.
    topics: Vec<&'a str>,
    topic: Option<Cow<'a, str>>,
    data: Option<Raw>,
}

impl<'a> Wire<'a> {
    fn read(r: &mut Reader<'a>) -> Read<Self> {
        let (mut kind, mut topics, mut topic, mut data) = (None, None, None, None);
        r.object(&mut |r, key| match key {
            "type" => once(&mut kind, r.option(Reader::string)),
            "topics" => once(&mut topics, r.list(&mut Reader::raw)),
            "topic" => once(&mut topic, r.option(Reader::string)),
            "data" => once(&mut data, r.option(Raw::read)),
            _ => r.skip(),
        })?;
        Ok(Self {
            kind: kind.flatten(),
            topics: topics.unwrap_or_default(),
            topic: topic.flatten(),
            data: data.flatten(),
        })
    }
}

/// `{"type": "publish", "topic", "data", "clients"}`, written out (the
/// data as it came).
fn published(topic: &Topic, data: Option<&Raw>, clients: usize) -> String {
    let topic = String::from_utf8(to_json(&topic.as_str())).unwrap_or_default();
    match data {
        Some(data) => format!(
            r#"{{"type":"publish","topic":{topic},"data":{},"clients":{clients}}}"#,
            data.get()
        ),
        None => format!(r#"{{"type":"publish","topic":{topic},"clients":{clients}}}"#),
    }
}

/// What a frame does.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Frames for the socket the frame came on.
    pub reply: Vec<String>,
    /// Frames for sockets (the sender's among them for its own publish).
    pub pushes: Vec<(SocketId, String)>,
    /// The socket's topics changed: keep them with it.
    pub subscriptions_changed: bool,
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

/// The limits a frame is checked against.
pub struct FrameLimits {
    pub max_frame_bytes: usize,
    pub now_ms: u64,
}

/// Runs one frame of `socket`.
pub fn on_frame(
    topics: &mut Topics,
    socket: SocketId,
    text: &str,
    limits: &FrameLimits,
) -> Effects {
    if text.len() > limits.max_frame_bytes {
        return Effects::closing(&Error::PayloadTooLarge("Frame too large"));
    }
    if !topics.meter(socket, text.len(), &RATE, limits.now_ms) {
        let reason = "Too many frames: at most 200 or 512 KiB per 10 s per socket".to_owned();
        return Effects {
            close: Some((4000 + Error::RateLimitedFrames.status(), reason)),
            ..Effects::default()
        };
    }
    match run(topics, socket, text) {
        Ok(effects) => effects,
        Err(e) => Effects::closing(&e),
    }
}

fn run(topics: &mut Topics, socket: SocketId, text: &str) -> Result<Effects, Error> {
    let wire = from_json(
        text.as_bytes(),
        "Bad frame: expected a JSON object",
        Wire::read,
    )?;
    let mut effects = Effects::default();
    match wire.kind.as_deref() {
        Some("subscribe") => {
            topics.subscribe(socket, &names(&wire.topics)?)?;
            effects.subscriptions_changed = true;
        }
        Some("unsubscribe") => {
            topics.unsubscribe(socket, &names(&wire.topics)?);
            effects.subscriptions_changed = true;
        }
        Some("publish") => {
            let Some(name) = wire.topic.as_deref() else {
                return Ok(effects);
            };
            let topic = Topic::parse(name)?;
            let receivers: Vec<SocketId> = topics.subscribers(&topic).collect();
            let frame = published(&topic, wire.data.as_ref(), receivers.len());
            effects.pushes = receivers.into_iter().map(|s| (s, frame.clone())).collect();
        }
        Some("ping") => effects.reply.push(PONG.to_owned()),
        _ => {}
    }
    Ok(effects)
}

/// The topic names in a list: strings only (others skipped), each valid.
fn names(raw: &[&str]) -> Result<Vec<Topic>, Error> {
    raw.iter()
        .filter_map(|r| json::as_str(r))
        .map(|name| Topic::parse(&name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_frame_bytes: 64 * 1024,
        now_ms: 0,
    };

    #[test]
    fn a_publish_reaches_every_subscriber_with_the_count() {
        let mut t = Topics::default();
        for s in [1, 2] {
            let e = on_frame(
                &mut t,
                s,
                r#"{"type":"subscribe","topics":["r",7,"q"]}"#,
                &LIMITS,
            );
            assert!(e.subscriptions_changed && e.close.is_none(), "{e:?}");
        }
        on_frame(&mut t, 3, r#"{"type":"subscribe","topics":["q"]}"#, &LIMITS);
        let e = on_frame(
            &mut t,
            2,
            r#"{"type":"publish","topic":"r","data":{"type":"announce","from":"x"}}"#,
            &LIMITS,
        );
        let frame =
            r#"{"type":"publish","topic":"r","data":{"type":"announce","from":"x"},"clients":2}"#;
        assert_eq!(e.pushes, vec![(1, frame.to_owned()), (2, frame.to_owned())]);
        let e = on_frame(
            &mut t,
            1,
            r#"{"type":"unsubscribe","topics":["r"]}"#,
            &LIMITS,
        );
        assert!(e.subscriptions_changed);
        let e = on_frame(
            &mut t,
            2,
            r#"{"type":"publish","topic":"r","data":"x"}"#,
            &LIMITS,
        );
        assert_eq!(e.pushes.len(), 1);
        assert_eq!(
            on_frame(&mut t, 1, PING, &LIMITS).reply,
            vec![PONG.to_owned()]
        );
        // Another type, a publish without a topic: nothing, as y-webrtc's server.
        assert_eq!(
            on_frame(&mut t, 1, r#"{"type":"hello"}"#, &LIMITS),
            Effects::default()
        );
        assert_eq!(
            on_frame(&mut t, 1, r#"{"type":"publish"}"#, &LIMITS),
            Effects::default()
        );
    }

    #[test]
    fn bad_frames_close_with_a_code_and_a_reason() {
        let mut t = Topics::default();
        let code = |t: &mut Topics, text: &str| on_frame(t, 1, text, &LIMITS).close.map(|c| c.0);
        assert_eq!(code(&mut t, "not json"), Some(4400));
        assert_eq!(code(&mut t, "[1,2]"), Some(4400));
        assert_eq!(
            code(&mut t, r#"{"type":"subscribe","topics":[""]}"#),
            Some(4400)
        );
        assert_eq!(
            code(&mut t, r#"{"type":"publish","topic":"a\u0000b"}"#),
            Some(4400)
        );
        let huge = format!(
            r#"{{"type":"publish","topic":"r","data":"{}"}}"#,
            "x".repeat(70_000)
        );
        assert_eq!(code(&mut t, &huge), Some(4413));
        let many: Vec<String> = (0..65).map(|i| format!("\"t{i}\"")).collect();
        let frame = format!(r#"{{"type":"subscribe","topics":[{}]}}"#, many.join(","));
        assert_eq!(code(&mut t, &frame), Some(4413));
        let mut t = Topics::default();
        let closes = (0..=RATE.frames)
            .filter_map(|_| on_frame(&mut t, 9, PING, &LIMITS).close)
            .count();
        assert_eq!(closes, 1, "the frame past the limit closes");
        let mut t = Topics::default();
        let close = (0..=RATE.frames).find_map(|_| on_frame(&mut t, 9, PING, &LIMITS).close);
        let reason = "Too many frames: at most 200 or 512 KiB per 10 s per socket";
        assert_eq!(close, Some((4429, reason.to_owned())));
        // Bytes: the ninth 60 KiB publish is over 512 KiB.
        let mut t = Topics::default();
        let data = "x".repeat(60 * 1024);
        let big = format!(r#"{{"type":"publish","topic":"r","data":"{data}"}}"#);
        let closed = (0..9).position(|_| on_frame(&mut t, 3, &big, &LIMITS).close.is_some());
        assert_eq!(closed, Some(8));
    }
}
