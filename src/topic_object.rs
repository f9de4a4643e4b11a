//! A y-webrtc namespace's Durable Object (wasm only): the runtime glue
//! around [`Topics`] and [`y_webrtc`]. One object per namespace
//! (`TOPIC_ROOMS.idFromName(namespace)`, from `/y-webrtc/<namespace>`),
//! SQLite-backed but storing nothing: like y-webrtc's own server, the
//! subscriptions live with the sockets, here in their attachments (a
//! number and its topics), so hibernation and eviction lose nothing and
//! everything in memory is rebuilt from them on wake. `{"type":"ping"}` is
//! answered by the runtime without waking the object (y-webrtc pings after
//! 15 s of silence); while sockets are open an alarm every `SOCKET_IDLE_S`
//! closes those silent for longer (a crashed tab, a dead network), so they
//! cannot fill a namespace. A deploy closes the sockets; y-webrtc
//! reconnects and subscribes again by itself.

use std::cell::{Cell, OnceCell, RefCell};

use wasm_bindgen::JsCast;

use worker::{
    durable_object, DurableObject, Env, Request, Response, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::Config;
use crate::engine::topics::{SocketId, Topic, Topics};
use crate::error::Error;
use crate::platform::Platform;
use crate::room_object::RawState;
use crate::wire::relay::socket::close_for;
use crate::wire::y_webrtc::{self, FrameLimits, PING, PONG};
use crate::worker_entry::WorkerPlatform;

/// What a socket carries through hibernation: its number in this object,
/// when it was accepted (ms), then its topics, a line each (a topic has no
/// control characters).
struct Attachment {
    number: SocketId,
    accepted_ms: u64,
    topics: Vec<Topic>,
}

impl Attachment {
    fn of(ws: &WebSocket) -> Option<Self> {
        let text: String = ws.deserialize_attachment().ok().flatten()?;
        let mut lines = text.split('\n');
        let number = lines.next()?.parse().ok()?;
        let accepted_ms = lines.next()?.parse().ok()?;
        let topics = lines.filter_map(|t| Topic::parse(t).ok()).collect();
        Some(Self {
            number,
            accepted_ms,
            topics,
        })
    }

    fn keep(
        ws: &WebSocket,
        number: SocketId,
        accepted_ms: u64,
        topics: impl Iterator<Item = String>,
    ) -> worker::Result<()> {
        let mut text = format!("{number}\n{accepted_ms}");
        for topic in topics {
            text.push('\n');
            text.push_str(&topic);
        }
        ws.serialize_attachment(text)
    }
}

/// The sockets and their topics, as rebuilt on wake.
struct Held {
    topics: Topics,
    /// In number order.
    sockets: Vec<Socket>,
}

impl Held {
    /// A socket gone: its subscriptions go with it.
    fn forget(&mut self, number: SocketId) {
        self.topics.gone(number);
        self.sockets.retain(|s| s.number != number);
    }
}

struct Socket {
    number: SocketId,
    ws: WebSocket,
    /// When it was accepted, sent a frame or was sent one, as far as this
    /// instance knows (ms). A live y-webrtc client that is sent nothing
    /// for 15 s pings, and the runtime notes when it answered: a socket is
    /// silent when neither moved for `SOCKET_IDLE_S`.
    heard_ms: u64,
}

#[durable_object]
pub struct TopicRoom {
    state: State,
    env: Env,
    held: RefCell<Option<Held>>,
    config: OnceCell<Config>,
    /// Whether an alarm is set, as far as this instance knows.
    alarm_set: Cell<Option<bool>>,
}

impl DurableObject for TopicRoom {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new(PING, PONG) {
            state.set_websocket_auto_response(&pair);
        }
        Self {
            state,
            env,
            held: RefCell::new(None),
            config: OnceCell::new(),
            alarm_set: Cell::new(None),
        }
    }

    /// A WebSocket upgrade the worker admitted (origin, quota, namespace).
    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        let max = self.config().limits.max_live_members;
        if self.with_held(|held| held.sockets.len() >= max) {
            let error = Error::RoomFull;
            return Response::error(error.to_string(), error.status());
        }
        // Random, never reused: a closed socket's late close event must
        // not take a newer socket's subscriptions with it.
        let mut bytes = [0u8; 8];
        WorkerPlatform::BARE.fill_random(&mut bytes);
        let number = SocketId::from_le_bytes(bytes);
        let now = WorkerPlatform::BARE.now_ms();
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        Attachment::keep(&pair.server, number, now, std::iter::empty())?;
        self.with_held(|held| {
            let at = held.sockets.partition_point(|s| s.number < number);
            let socket = Socket {
                number,
                ws: pair.server,
                heard_ms: now,
            };
            held.sockets.insert(at, socket);
        });
        self.watch().await?;
        Response::from_websocket(pair.client)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        let Some(Attachment {
            number,
            accepted_ms,
            ..
        }) = Attachment::of(&ws)
        else {
            let _ = ws.close(Some(4400), Some("Unknown socket"));
            return Ok(());
        };
        let text = match message {
            WebSocketIncomingMessage::String(text) => text,
            // y-webrtc's server reads binary frames as JSON text too.
            WebSocketIncomingMessage::Binary(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    let (code, reason) = close_for(&Error::BadRequest("Frames are JSON text"));
                    return self.close(&ws, number, code, &reason);
                }
            },
        };
        let limits = FrameLimits {
            max_frame_bytes: self.config().limits.max_body_bytes,
            now_ms: WorkerPlatform::BARE.now_ms(),
        };
        let effects = self.with_held(|held| {
            if let Some(me) = held.sockets.iter_mut().find(|s| s.number == number) {
                me.heard_ms = limits.now_ms;
            }
            let effects = y_webrtc::on_frame(&mut held.topics, number, &text, &limits);
            for (to, frame) in &effects.pushes {
                if let Some(socket) = held.sockets.iter_mut().find(|s| s.number == *to) {
                    let _ = socket.ws.send_with_str(frame);
                    socket.heard_ms = limits.now_ms;
                }
            }
            if effects.subscriptions_changed {
                let topics = held.topics.topics_of(number).map(|t| t.as_str().to_owned());
                let _ = Attachment::keep(&ws, number, accepted_ms, topics);
            }
            effects
        });
        for frame in &effects.reply {
            let _ = ws.send_with_str(frame);
        }
        match effects.close {
            Some((code, reason)) => self.close(&ws, number, code, &reason),
            None => Ok(()),
        }
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        // The close handshake's answer (else the client waits, then 1006).
        let _ = ws.close(Some(1000), Some("Closed"));
        self.gone(&ws);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        self.gone(&ws);
        Ok(())
    }

    /// Closes the sockets silent for longer than `SOCKET_IDLE_S`, and
    /// comes back while any is open.
    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm_set.set(Some(false));
        let idle_ms = self.idle_ms();
        let now = WorkerPlatform::BARE.now_ms();
        let raw = self.state.as_raw().unchecked_ref::<RawState>();
        self.with_held(|held| {
            let mut silent = Vec::new();
            for socket in &held.sockets {
                let pinged = raw
                    .auto_response_at(socket.ws.as_ref())
                    .map_or(0, |d| d.get_time() as u64);
                if now.saturating_sub(socket.heard_ms.max(pinged)) > idle_ms {
                    let _ = socket.ws.close(Some(SILENT.0), Some(SILENT.1));
                    silent.push(socket.number);
                }
            }
            silent.into_iter().for_each(|number| held.forget(number));
        });
        self.watch().await?;
        Response::ok("")
    }
}

/// The close of a socket silent for longer than `SOCKET_IDLE_S`.
const SILENT: (u16, &str) = (4408, "No frame or ping for too long");

/// The number a socket was given when it was accepted.
fn socket_number(ws: &WebSocket) -> Option<SocketId> {
    Attachment::of(ws).map(|a| a.number)
}

impl Attachment {
    /// This socket, as the object holds it after a wake.
    fn socket(self, ws: WebSocket) -> Socket {
        Socket {
            number: self.number,
            ws,
            heard_ms: self.accepted_ms,
        }
    }
}

impl TopicRoom {
    /// The deployment's settings, read once per instance (not per event).
    fn config(&self) -> &Config {
        self.config.get_or_init(|| {
            Config::from_vars(|name| self.env.var(name).ok().map(|v| v.to_string()))
        })
    }

    /// Runs `f` on the sockets and topics, rebuilt from the attachments
    /// of the open sockets the first time after a wake.
    fn with_held<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let mut held = self.held.borrow_mut();
        let held = held.get_or_insert_with(|| {
            let mut rebuilt = Held {
                topics: Topics::default(),
                sockets: Vec::new(),
            };
            for ws in self.state.get_websockets() {
                let Some(a) = Attachment::of(&ws) else {
                    continue;
                };
                let _ = rebuilt.topics.subscribe(a.number, &a.topics);
                rebuilt.sockets.push(a.socket(ws));
            }
            rebuilt.sockets.sort_by_key(|s| s.number);
            rebuilt
        });
        f(held)
    }

    fn idle_ms(&self) -> u64 {
        self.config().limits.socket_idle_s as u64 * 1000
    }

    /// Sets the alarm `SOCKET_IDLE_S` ahead if sockets are open and none is
    /// set: one alarm (one row written) per idle period, none while empty.
    async fn watch(&self) -> worker::Result<()> {
        let storage = self.state.storage();
        let set = match self.alarm_set.get() {
            Some(set) => set,
            None => storage.get_alarm().await?.is_some(),
        };
        let open = self.with_held(|held| !held.sockets.is_empty());
        if open && !set {
            // An i64 is an offset from now (workers-rs `ScheduledTime`).
            storage.set_alarm(self.idle_ms() as i64).await?;
        }
        self.alarm_set.set(Some(set || open));
        Ok(())
    }

    /// A socket that closed or failed: its subscriptions go with it.
    fn gone(&self, ws: &WebSocket) {
        if let Some(number) = socket_number(ws) {
            self.with_held(|held| held.forget(number));
        }
    }

    /// Closes a socket that broke a rule, and forgets it.
    fn close(
        &self,
        ws: &WebSocket,
        number: SocketId,
        code: u16,
        reason: &str,
    ) -> worker::Result<()> {
        let _ = ws.close(Some(code), Some(reason));
        self.with_held(|held| held.forget(number));
        Ok(())
    }
}
