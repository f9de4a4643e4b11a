//! What the Durable Objects that hold sockets and store nothing share (wasm
//! only): a y-webrtc namespace's ([`TopicRoom`](crate::topic_object)) and a
//! PeerJS key's ([`PeerRoom`](crate::peer_object)). Each socket carries
//! its state in its attachment (a random number, when it was accepted, then
//! the protocol's lines), so hibernation loses nothing; the sockets are
//! kept in memory in number order; one alarm closes those silent for longer
//! than `SOCKET_IDLE_S` (no frame from or to them, no auto-answered ping),
//! so dead tabs cannot fill a place.

use std::cell::Cell;

use wasm_bindgen::JsCast;
use worker::{Env, State, Storage, WebSocket, WebSocketIncomingMessage, WebSocketPair};

use crate::config::Config;
use crate::domain::sort_by_u64;
use crate::engine::SocketId;
use crate::error::Error;
use crate::platform::Platform;
use crate::wire::relay::socket::close_for;
use crate::worker_entry::WorkerPlatform;

#[wasm_bindgen::prelude::wasm_bindgen]
extern "C" {
    /// The object's state (`ctx`), for what workers-rs 0.8.7 does not bind.
    pub(crate) type RawState;
    /// `ctx.getWebSocketAutoResponseTimestamp(ws)`: when the runtime last
    /// answered this socket's `ping`.
    #[wasm_bindgen(method, js_name = getWebSocketAutoResponseTimestamp)]
    pub(crate) fn auto_response_at(
        this: &RawState,
        ws: &worker::web_sys::WebSocket,
    ) -> Option<worker::js_sys::Date>;
}

/// The close of a socket silent for longer than `SOCKET_IDLE_S`.
pub(crate) const SILENT: (u16, &str) = (4408, "No frame or ping for too long");

/// What a socket carries through hibernation: its number, when it was
/// accepted (ms), then the protocol's lines (none has a line break).
pub(crate) struct Attachment {
    pub number: SocketId,
    pub accepted_ms: u64,
    pub lines: Vec<String>,
}

impl Attachment {
    pub fn of(ws: &WebSocket) -> Option<Self> {
        let text = attached_text(ws)?;
        let mut lines = text.split('\n');
        let number = lines.next()?.parse().ok()?;
        let accepted_ms = lines.next()?.parse().ok()?;
        Some(Self {
            number,
            accepted_ms,
            lines: lines.map(str::to_owned).collect(),
        })
    }

    pub fn keep<'a>(
        ws: &WebSocket,
        number: SocketId,
        accepted_ms: u64,
        lines: impl Iterator<Item = &'a str>,
    ) -> worker::Result<()> {
        let mut text = format!("{number}\n{accepted_ms}");
        for line in lines {
            text.push('\n');
            text.push_str(line);
        }
        attach_text(ws, &text)
    }
}

/// A socket's attachment, where it is text. Attachments are kept as plain
/// JS strings, not through workers-rs' serde conversion (~2 KB of wasm gzip).
pub(crate) fn attached_text(ws: &WebSocket) -> Option<String> {
    use worker::worker_sys::ext::WebSocketExt;
    ws.as_ref().deserialize_attachment().ok()?.as_string()
}

/// Sets a socket's attachment to `text` (see [`attached_text`]).
pub(crate) fn attach_text(ws: &WebSocket, text: &str) -> worker::Result<()> {
    use worker::worker_sys::ext::WebSocketExt;
    (ws.as_ref().serialize_attachment(text.into())).map_err(worker::Error::from)
}

pub(crate) struct Socket {
    pub number: SocketId,
    pub ws: WebSocket,
    /// When it was accepted, sent a frame or was sent one, as far as this
    /// instance knows (ms).
    pub heard_ms: u64,
}

/// The open sockets, in number order.
#[derive(Default)]
pub(crate) struct Sockets(Vec<Socket>);

impl Sockets {
    /// The sockets `state` holds, from their attachments (oldest first).
    pub fn rebuilt(state: &State) -> Vec<(Attachment, WebSocket)> {
        let mut all: Vec<(Attachment, WebSocket)> = state
            .get_websockets()
            .into_iter()
            .filter_map(|ws| Attachment::of(&ws).map(|a| (a, ws)))
            .collect();
        // By (accepted, number): two stable passes of the sort every caller shares.
        sort_by_u64(&mut all, |(a, _)| a.number);
        sort_by_u64(&mut all, |(a, _)| a.accepted_ms);
        all
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn insert(&mut self, socket: Socket) {
        let at = self.0.partition_point(|s| s.number < socket.number);
        self.0.insert(at, socket);
    }

    fn find(&mut self, number: SocketId) -> Option<&mut Socket> {
        let i = self.0.binary_search_by_key(&number, |s| s.number).ok()?;
        self.0.get_mut(i)
    }

    /// A frame came from `number` at `now_ms`.
    pub fn heard(&mut self, number: SocketId, now_ms: u64) {
        if let Some(s) = self.find(number) {
            s.heard_ms = now_ms;
        }
    }

    /// Sends `frame` to `number`; `false` if it is not here or the send failed.
    pub fn send(&mut self, number: SocketId, frame: &str, now_ms: u64) -> bool {
        let Some(s) = self.find(number) else {
            return false;
        };
        s.heard_ms = now_ms;
        s.ws.send_with_str(frame).is_ok()
    }

    /// Closes `number` (if here) and forgets it.
    pub fn close(&mut self, number: SocketId, code: u16, reason: &str) {
        if let Some(s) = self.find(number) {
            let _ = s.ws.close(Some(code), Some(reason));
        }
        self.forget(number);
    }

    pub fn forget(&mut self, number: SocketId) {
        self.0.retain(|s| s.number != number);
    }

    /// Closes the sockets with no frame and no answered ping for longer
    /// than `idle_ms`, and gives their numbers.
    pub fn close_silent(&mut self, state: &State, now_ms: u64, idle_ms: u64) -> Vec<SocketId> {
        let raw = state.as_raw().unchecked_ref::<RawState>();
        let silent: Vec<SocketId> = self
            .0
            .iter()
            .filter(|s| {
                let pinged = raw
                    .auto_response_at(s.ws.as_ref())
                    .map_or(0, |d| d.get_time() as u64);
                now_ms.saturating_sub(s.heard_ms.max(pinged)) > idle_ms
            })
            .map(|s| s.number)
            .collect();
        for &number in &silent {
            self.close(number, SILENT.0, SILENT.1);
        }
        silent
    }
}

/// A frame's text: binary frames are read as UTF-8 text too (as
/// y-webrtc's and PeerJS's servers do); else the close to send.
pub(crate) fn text_of(message: WebSocketIncomingMessage) -> Result<String, (u16, String)> {
    match message {
        WebSocketIncomingMessage::String(text) => Ok(text),
        WebSocketIncomingMessage::Binary(bytes) => String::from_utf8(bytes)
            .map_err(|_| close_for(&Error::BadRequest("Frames are JSON text"))),
    }
}

/// Accepts a new socket with `lines` in its attachment: the pair (its
/// client end goes in the 101) and the socket to hold.
pub(crate) fn accept(state: &State, lines: &[&str]) -> worker::Result<(WebSocket, Socket)> {
    // Random, never reused: a closed socket's late close event must not
    // take a newer socket's state with it.
    let mut bytes = [0u8; 8];
    WorkerPlatform::BARE.fill_random(&mut bytes);
    let number = SocketId::from_le_bytes(bytes);
    let now = WorkerPlatform::BARE.now_ms();
    let pair = WebSocketPair::new()?;
    state.accept_web_socket(&pair.server);
    Attachment::keep(&pair.server, number, now, lines.iter().copied())?;
    let socket = Socket {
        number,
        ws: pair.server,
        heard_ms: now,
    };
    Ok((pair.client, socket))
}

/// The deployment's settings, read once per instance (not per event).
pub(crate) fn config<'a>(cell: &'a std::cell::OnceCell<Config>, env: &Env) -> &'a Config {
    cell.get_or_init(|| Config::from_vars(|name| env.var(name).ok().map(|v| v.to_string())))
}

/// The object's one alarm, as far as this instance knows.
#[derive(Default)]
pub(crate) struct Alarm(Cell<Option<Option<u64>>>);

impl Alarm {
    /// The alarm just ran: none is set.
    pub fn ran(&self) {
        self.0.set(Some(None));
    }

    /// Makes sure the alarm goes off at `at_ms` or sooner: one write when
    /// none is set or the set one is later, none otherwise.
    pub async fn by(&self, storage: &Storage, at_ms: u64) -> worker::Result<()> {
        let set = match self.0.get() {
            Some(set) => set,
            None => storage.get_alarm().await?.map(|t| t.max(0) as u64),
        };
        if set.is_some_and(|t| t <= at_ms) {
            self.0.set(Some(set));
            return Ok(());
        }
        let now = WorkerPlatform::BARE.now_ms();
        // An i64 is an offset from now (workers-rs `ScheduledTime`).
        storage
            .set_alarm(at_ms.saturating_sub(now).max(1) as i64)
            .await?;
        self.0.set(Some(Some(at_ms)));
        Ok(())
    }
}
