//! PeerJS's signalling protocol, as its server (`peer` 1.0.2) speaks it, on
//! a [`Directory`]. A client (`new Peer(id?, { host, path: "/peerjs" })`)
//! asks `GET /peerjs/<key>/id` for a fresh id when it has none, then opens
//! `wss://<worker>/peerjs/peerjs?key=<key>&id=<id>&token=<token>` and sends
//! JSON text frames
//!
//! ```json
//! {"type": "OFFER", "dst": "<peer id>", "payload": {...}}
//! {"type": "HEARTBEAT"}
//! ```
//!
//! `OFFER`, `ANSWER`, `CANDIDATE`, `LEAVE` and `EXPIRE` go to the socket
//! holding `dst` as `{"type", "src", "dst", "payload"}`, `src` set here from
//! the sender's socket (no one speaks for another). One for an id nobody
//! holds is held for [`HOLD_MS`](crate::engine::directory::HOLD_MS) and
//! then answered `EXPIRE` ("could not connect to peer"); `LEAVE` and
//! `EXPIRE` are never held. `HEARTBEAT` (every 5 s) is answered by the
//! runtime without waking the object. On connect the server says `OPEN`,
//! `ID-TAKEN` (another token holds the id) or `ERROR` (a bad key, id or
//! token). Other types are ignored, as that server does.
//!
//! A frame that breaks a rule closes its socket with `4000 + status`:
//! `4400` (not JSON), `4413` (over the size limit), `4429` (over [`RATE`]).
//! The key is the namespace: one Durable Object per key (`/peerjs/id`
//! and `/peerjs?key=...` are the default key `peerjs`, for `path: "/"`).

use std::borrow::Cow;

use crate::domain::{PeerJsId, PeerJsToken, RoomId};
use crate::engine::directory::{Claim, Directory};
use crate::engine::limits::Rate;
use crate::engine::SocketId;
use crate::error::Error;
use crate::json::{once, FromJson, Raw, Read, Reader};
use crate::wire::{from_json, relay::socket::close_for, to_json};

/// Where PeerJS is served: `path: "/peerjs"` in the client's options.
pub const PEERJS_PATH: &str = "/peerjs";
/// The key PeerJS uses when none is given.
pub const DEFAULT_KEY: &str = "peerjs";
/// What one socket may send in 10 s: 400 frames (an offer, an answer and
/// ten or so candidates per connection, a few dozen connections) and
/// 512 KiB.
pub const RATE: Rate = Rate {
    frames: 400,
    bytes: 512 * 1024,
    window_ms: 10_000,
};
/// The heartbeat PeerJS sends every 5 s, and what the runtime answers it
/// with (PeerJS ignores a frame without a payload).
pub const HEARTBEAT: &str = r#"{"type":"HEARTBEAT"}"#;
pub const OPEN: &str = r#"{"type":"OPEN"}"#;
const ID_TAKEN: &str = r#"{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}"#;

/// A socket's claim, from its URL's query.
#[derive(Debug, PartialEq)]
pub struct Connect {
    pub key: RoomId,
    pub id: PeerJsId,
    pub token: PeerJsToken,
}

/// Whether `path` is where PeerJS opens its socket (`path: "/peerjs"`, or
/// `"/"` with the default key).
pub fn is_socket_path(path: &str) -> bool {
    path == PEERJS_PATH || path == "/peerjs/peerjs"
}

/// The key, id and token of a socket's URL (percent-decoded, as
/// PeerJS's server reads them).
pub fn connect(url: &str) -> Result<Connect, Error> {
    let param = |name: &str| -> Result<String, Error> {
        let raw = crate::wire::query(url, name)
            .filter(|v| !v.is_empty())
            .ok_or(Error::BadRequest(
                "No id, token, or key supplied to websocket server",
            ))?;
        let plus_as_space = raw.replace('+', " ");
        percent_encoding::percent_decode_str(&plus_as_space)
            .decode_utf8()
            .map(|v| v.into_owned())
            .map_err(|_| Error::BadRequest("Bad PeerJS query: not UTF-8"))
    };
    Ok(Connect {
        key: RoomId::parse(&param("key")?)
            .map_err(|_| Error::BadRequest("Invalid key provided"))?,
        id: PeerJsId::parse(&param("id")?)?,
        token: PeerJsToken::parse(&param("token")?)?,
    })
}

/// A `GET` under [`PEERJS_PATH`].
#[derive(Debug, PartialEq)]
pub enum HttpCall {
    /// `GET /peerjs/<key>/id` (`/peerjs/id`: the default key): a fresh id.
    NewId(RoomId),
    /// `GET /peerjs/<key>/peers`: the list of peers, which this server
    /// does not give out (PeerJS's `allow_discovery` off: 401).
    Peers,
}

/// The PeerJS call a `GET` path names, if it is one.
pub fn http_call(path: &str) -> Option<Result<HttpCall, Error>> {
    let rest = path.strip_prefix(PEERJS_PATH)?.strip_prefix('/')?;
    let (key, call) = match rest.rsplit_once('/') {
        Some((key, call)) => (key, call),
        None => (DEFAULT_KEY, rest),
    };
    let key = RoomId::parse(key).map_err(|_| Error::BadRequest("Invalid key provided"));
    match call {
        "id" => Some(key.map(HttpCall::NewId)),
        "peers" => Some(key.map(|_| HttpCall::Peers)),
        _ => None,
    }
}

/// A fresh id: a random UUID (version 4), as PeerJS's server makes them.
pub fn new_id(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        id.push(char::from(HEX[usize::from(b >> 4)]));
        id.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    id
}

/// `{"type": "ERROR", "payload": {"msg": ...}}`: a refused connect.
pub fn error_frame(reason: &str) -> String {
    let msg = quoted(reason);
    format!(r#"{{"type":"ERROR","payload":{{"msg":{msg}}}}}"#)
}

/// What a connect, a frame or an expiry does.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    /// Frames to send, in order.
    pub sends: Vec<(SocketId, String)>,
    /// Sockets to close (after the sends), with code and reason.
    pub closes: Vec<(SocketId, u16, String)>,
    /// Frames were held or handed over: the next expiry may have moved.
    pub held_changed: bool,
}

impl Effects {
    fn closing(socket: SocketId, error: &Error) -> Self {
        let (code, reason) = close_for(error);
        Self {
            closes: vec![(socket, code, reason)],
            ..Self::default()
        }
    }
}

/// `socket` connected with `connect`: `OPEN` and whatever was held for its
/// id, or `ID-TAKEN` and a close.
pub fn on_connect(dir: &mut Directory, socket: SocketId, connect: Connect, now_ms: u64) -> Effects {
    let id = connect.id.clone();
    let mut effects = Effects::default();
    match dir.claim(socket, connect.id, connect.token, now_ms) {
        Claim::Taken => {
            effects.sends.push((socket, ID_TAKEN.to_owned()));
            let (code, reason) = close_for(&Error::Conflict("ID is taken"));
            effects.closes.push((socket, code, reason));
            return effects;
        }
        Claim::Reclaimed { old } => {
            let reason = "Replaced by a newer connection with this id".to_owned();
            effects.closes.push((old, 4409, reason));
        }
        Claim::Open => {}
    }
    effects.sends.push((socket, OPEN.to_owned()));
    let held = dir.take_held(&id);
    effects.held_changed = !held.is_empty();
    effects.sends.extend(held.into_iter().map(|f| (socket, f)));
    effects
}

/// The limits a frame is checked against.
pub struct FrameLimits {
    pub max_frame_bytes: usize,
    pub now_ms: u64,
}

struct Wire<'a> {
    kind: Option<Cow<'a, str>>,
    dst: Option<Cow<'a, str>>,
    payload: Option<Raw>,
}

impl<'a> Wire<'a> {
    fn read(r: &mut Reader<'a>) -> Read<Self> {
        let (mut kind, mut dst, mut payload) = (None, None, None);
        r.object(&mut |r, key| match key {
            "type" => once(&mut kind, r.option(Reader::string)),
            "dst" => once(&mut dst, r.option(Reader::string)),
            "payload" => once(&mut payload, r.option(Raw::read)),
            _ => r.skip(),
        })?;
        Ok(Self {
            kind: kind.flatten(),
            dst: dst.flatten(),
            payload: payload.flatten(),
        })
    }
}

/// Runs one frame of `socket`.
pub fn on_frame(
    dir: &mut Directory,
    socket: SocketId,
    text: &str,
    limits: &FrameLimits,
) -> Effects {
    if text.len() > limits.max_frame_bytes {
        return Effects::closing(socket, &Error::PayloadTooLarge("Frame too large"));
    }
    if dir.id_of(socket).is_none() {
        return Effects::closing(socket, &Error::BadRequest("Unknown socket"));
    }
    if !dir.meter(socket, text.len(), &RATE, limits.now_ms) {
        let reason = "Too many frames: at most 400 or 512 KiB per 10 s per socket".to_owned();
        let code = 4000 + Error::RateLimitedFrames.status();
        return Effects {
            closes: vec![(socket, code, reason)],
            ..Effects::default()
        };
    }
    match relay(dir, socket, text, limits.now_ms) {
        Ok(effects) => effects,
        Err(e) => Effects::closing(socket, &e),
    }
}

fn relay(dir: &mut Directory, socket: SocketId, text: &str, now_ms: u64) -> Result<Effects, Error> {
    let wire = from_json(
        text.as_bytes(),
        "Bad frame: expected a JSON object",
        Wire::read,
    )?;
    let kind = match wire.kind.as_deref() {
        Some(k @ ("OFFER" | "ANSWER" | "CANDIDATE" | "LEAVE" | "EXPIRE")) => k,
        _ => return Ok(Effects::default()),
    };
    let src = dir
        .id_of(socket)
        .ok_or(Error::BadRequest("Unknown socket"))?
        .clone();
    let mut effects = Effects::default();
    let Some(dst) = wire.dst.as_deref() else {
        // A `LEAVE` to no one: the sender is leaving the server.
        if kind == "LEAVE" {
            effects.closes.push((socket, 1000, "Left".to_owned()));
        }
        return Ok(effects);
    };
    let Ok(dst) = PeerJsId::parse(dst) else {
        // No one can ever hold that id.
        effects.sends.push((socket, expired(dst, &src)));
        return Ok(effects);
    };
    let frame = transmission(kind, &src, &dst, wire.payload.as_ref());
    match dir.socket_of(&dst) {
        Some(to) => effects.sends.push((to, frame)),
        None if kind == "LEAVE" || kind == "EXPIRE" => {}
        None if dir.hold(&src, &dst, frame, now_ms) => effects.held_changed = true,
        None => effects.sends.push((socket, expired(dst.as_str(), &src))),
    }
    Ok(effects)
}

/// `{"type", "src", "dst", "payload"}`, written out (the payload as it came).
fn transmission(kind: &str, src: &PeerJsId, dst: &PeerJsId, payload: Option<&Raw>) -> String {
    let head = format!(
        r#"{{"type":"{kind}","src":{},"dst":{}"#,
        quoted(src.as_str()),
        quoted(dst.as_str())
    );
    match payload {
        Some(p) => format!(r#"{head},"payload":{}}}"#, p.get()),
        None => format!("{head}}}"),
    }
}

fn quoted(s: &str) -> String {
    String::from_utf8(to_json(&s)).unwrap_or_default()
}

/// `EXPIRE` from `peer` to `to`: what `to` sent `peer` was not delivered.
fn expired(peer: &str, to: &PeerJsId) -> String {
    format!(
        r#"{{"type":"EXPIRE","src":{},"dst":{}}}"#,
        quoted(peer),
        quoted(to.as_str())
    )
}

/// `LEAVE` from `peer` to `to`: `peer`'s socket is gone (a send to it failed).
pub fn left(peer: &PeerJsId, to: &PeerJsId) -> String {
    transmission("LEAVE", peer, to, None)
}

/// Drops what expired unheld: an `EXPIRE` to each sender still connected,
/// once per addressee.
pub fn on_tick(dir: &mut Directory, now_ms: u64) -> Effects {
    let mut effects = Effects::default();
    for (from, to) in dir.expire(now_ms) {
        effects.held_changed = true;
        if let Some(socket) = dir.socket_of(&from) {
            effects.sends.push((socket, expired(to.as_str(), &from)));
        }
    }
    effects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::directory::HOLD_MS;

    const LIMITS: FrameLimits = FrameLimits {
        max_frame_bytes: 64 * 1024,
        now_ms: 0,
    };

    fn join(dir: &mut Directory, socket: SocketId, id: &str, token: &str) -> Effects {
        let url = format!("wss://w/peerjs/peerjs?key=app1&id={id}&token={token}&version=1.5.5");
        on_connect(dir, socket, connect(&url).unwrap(), 0)
    }

    #[test]
    fn the_query_is_read_as_peerjs_server_reads_it() {
        let c = connect("wss://w/peerjs?key=peerjs&id=my%20peer&token=a+b").unwrap();
        assert_eq!(c.key.as_str(), "peerjs");
        assert_eq!(c.id.as_str(), "my peer");
        assert_eq!(c.token.as_str(), "a b");
        let err = |url: &str| connect(url).unwrap_err().to_string();
        assert_eq!(
            err("wss://w/peerjs?key=peerjs&id=a"),
            "No id, token, or key supplied to websocket server"
        );
        assert_eq!(
            err("wss://w/peerjs?key=k&id=a&token=t"),
            "Invalid key provided"
        );
        assert_eq!(
            err("wss://w/peerjs?key=peerjs&id=a!&token=t"),
            "Bad PeerJS id"
        );
        assert_eq!(
            err("wss://w/peerjs?key=peerjs&id=a&token=%0A"),
            "Bad PeerJS token"
        );
        assert!(is_socket_path("/peerjs") && is_socket_path("/peerjs/peerjs"));
        assert!(!is_socket_path("/peerjs/x"));
        let key = |k: &str| RoomId::parse(k).unwrap();
        assert_eq!(
            http_call("/peerjs/id"),
            Some(Ok(HttpCall::NewId(key("peerjs"))))
        );
        assert_eq!(
            http_call("/peerjs/app1/id"),
            Some(Ok(HttpCall::NewId(key("app1"))))
        );
        assert_eq!(http_call("/peerjs/app1/peers"), Some(Ok(HttpCall::Peers)));
        assert!(matches!(http_call("/peerjs/a/id"), Some(Err(_))));
        assert_eq!(http_call("/peerjs/app1/other"), None);
        assert_eq!(http_call("/status"), None);
        let id = new_id([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let bytes: [u8; 16] = std::array::from_fn(|i| i as u8);
        assert_eq!(new_id(bytes), "00010203-0405-4607-8809-0a0b0c0d0e0f");
        assert!(PeerJsId::parse(&id).is_ok());
    }

    #[test]
    fn signals_reach_their_addressee_with_the_senders_id() {
        let mut d = Directory::default();
        assert_eq!(join(&mut d, 1, "a", "ta").sends, vec![(1, OPEN.to_owned())]);
        join(&mut d, 2, "b", "tb");
        let e = on_frame(
            &mut d,
            1,
            r#"{"type":"OFFER","src":"forged","dst":"b","payload":{"sdp":"v=0","connectionId":"dc_1"}}"#,
            &LIMITS,
        );
        let frame =
            r#"{"type":"OFFER","src":"a","dst":"b","payload":{"sdp":"v=0","connectionId":"dc_1"}}"#;
        assert_eq!(e.sends, vec![(2, frame.to_owned())]);
        let e = on_frame(&mut d, 2, r#"{"type":"LEAVE","dst":"a"}"#, &LIMITS);
        assert_eq!(
            e.sends,
            vec![(1, r#"{"type":"LEAVE","src":"b","dst":"a"}"#.to_owned())]
        );
        for ignored in [HEARTBEAT, r#"{"type":"HELLO","dst":"b"}"#, r#"{"dst":"b"}"#] {
            assert_eq!(on_frame(&mut d, 1, ignored, &LIMITS), Effects::default());
        }
        let e = on_frame(&mut d, 1, r#"{"type":"OFFER","dst":"no one!"}"#, &LIMITS);
        let expire = r#"{"type":"EXPIRE","src":"no one!","dst":"a"}"#;
        assert_eq!(e.sends, vec![(1, expire.to_owned())]);
        let e = on_frame(&mut d, 1, r#"{"type":"LEAVE"}"#, &LIMITS);
        assert_eq!(e.closes, vec![(1, 1000, "Left".to_owned())]);
    }

    #[test]
    fn a_signal_for_an_absent_peer_waits_for_it_then_expires_once() {
        let mut d = Directory::default();
        join(&mut d, 1, "a", "ta");
        let offer = r#"{"type":"OFFER","dst":"b","payload":{"n":1}}"#;
        let candidate = r#"{"type":"CANDIDATE","dst":"b","payload":{"n":2}}"#;
        for f in [offer, candidate, r#"{"type":"LEAVE","dst":"b"}"#] {
            assert!(on_frame(&mut d, 1, f, &LIMITS).sends.is_empty());
        }
        let e = join(&mut d, 2, "b", "tb");
        let sends: Vec<&str> = e.sends.iter().map(|(_, f)| f.as_str()).collect();
        assert_eq!(
            sends,
            [
                OPEN,
                r#"{"type":"OFFER","src":"a","dst":"b","payload":{"n":1}}"#,
                r#"{"type":"CANDIDATE","src":"a","dst":"b","payload":{"n":2}}"#
            ]
        );
        on_frame(&mut d, 1, offer.replace("\"b\"", "\"c\"").as_str(), &LIMITS);
        on_frame(
            &mut d,
            1,
            candidate.replace("\"b\"", "\"c\"").as_str(),
            &LIMITS,
        );
        assert_eq!(on_tick(&mut d, HOLD_MS - 1).sends, vec![]);
        let e = on_tick(&mut d, HOLD_MS);
        let expire = r#"{"type":"EXPIRE","src":"c","dst":"a"}"#;
        assert_eq!(e.sends, vec![(1, expire.to_owned())]);
        assert_eq!(on_tick(&mut d, 2 * HOLD_MS), Effects::default());
    }

    #[test]
    fn a_reconnect_with_the_token_takes_the_id_back_and_another_is_refused() {
        let mut d = Directory::default();
        join(&mut d, 1, "a", "ta");
        let e = join(&mut d, 2, "a", "not-ta");
        assert_eq!(e.sends, vec![(2, ID_TAKEN.to_owned())]);
        assert_eq!(e.closes, vec![(2, 4409, "ID is taken".to_owned())]);
        let e = join(&mut d, 3, "a", "ta");
        assert_eq!(e.sends, vec![(3, OPEN.to_owned())]);
        assert_eq!(e.closes[0].0, 1);
        assert_eq!(d.socket_of(&PeerJsId::parse("a").unwrap()), Some(3));
    }

    #[test]
    fn bad_frames_close_with_a_code_and_a_reason() {
        let mut d = Directory::default();
        join(&mut d, 1, "a", "ta");
        let code = |d: &mut Directory, text: &str| on_frame(d, 1, text, &LIMITS).closes[0].1;
        assert_eq!(code(&mut d, "not json"), 4400);
        assert_eq!(code(&mut d, "[1]"), 4400);
        assert_eq!(
            code(&mut d, &format!(r#"{{"x":"{}"}}"#, "y".repeat(70_000))),
            4413
        );
        // An unknown socket cannot send.
        let e = on_frame(&mut d, 9, r#"{"type":"OFFER","dst":"a"}"#, &LIMITS);
        assert_eq!(e.closes, vec![(9, 4400, "Unknown socket".to_owned())]);
        let mut d = Directory::default();
        join(&mut d, 1, "a", "ta");
        let close =
            (0..=RATE.frames).find_map(|_| on_frame(&mut d, 1, HEARTBEAT, &LIMITS).closes.pop());
        let reason = "Too many frames: at most 400 or 512 KiB per 10 s per socket";
        assert_eq!(close, Some((1, 4429, reason.to_owned())));
    }
}
