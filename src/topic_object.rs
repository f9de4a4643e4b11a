//! A y-webrtc namespace's Durable Object (wasm only): the runtime glue
//! around [`Topics`] and [`y_webrtc`]. One object per namespace
//! (`TOPIC_ROOMS.idFromName(namespace)`, from `/y-webrtc/<namespace>`),
//! SQLite-backed but storing nothing: like y-webrtc's own server, the
//! subscriptions live with the sockets, here in their attachments (a
//! number and its topics), so hibernation and eviction lose nothing and
//! everything in memory is rebuilt from them on wake. `{"type":"ping"}` is
//! answered by the runtime without waking the object. A deploy closes the
//! sockets; y-webrtc reconnects and subscribes again by itself.

use std::cell::{OnceCell, RefCell};

use worker::{
    durable_object, DurableObject, Env, Request, Response, State, WebSocket,
    WebSocketIncomingMessage, WebSocketPair,
};

use crate::config::Config;
use crate::engine::topics::{SocketId, Topic, Topics};
use crate::error::Error;
use crate::platform::Platform;
use crate::wire::relay::socket::close_for;
use crate::wire::y_webrtc::{self, FrameLimits, PING, PONG};
use crate::worker_entry::WorkerPlatform;

/// What a socket carries through hibernation: its number in this object,
/// then its topics, a line each (a topic has no control characters).
struct Attachment {
    number: SocketId,
    topics: Vec<Topic>,
}

impl Attachment {
    fn of(ws: &WebSocket) -> Option<Self> {
        let text: String = ws.deserialize_attachment().ok().flatten()?;
        let mut lines = text.split('\n');
        let number = lines.next()?.parse().ok()?;
        let topics = lines.filter_map(|t| Topic::parse(t).ok()).collect();
        Some(Self { number, topics })
    }

    fn keep(
        ws: &WebSocket,
        number: SocketId,
        topics: impl Iterator<Item = String>,
    ) -> worker::Result<()> {
        let mut text = number.to_string();
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
    sockets: Vec<(SocketId, WebSocket)>,
}

#[durable_object]
pub struct TopicRoom {
    state: State,
    env: Env,
    held: RefCell<Option<Held>>,
    config: OnceCell<Config>,
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
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        Attachment::keep(&pair.server, number, std::iter::empty())?;
        self.with_held(|held| {
            let at = held.sockets.partition_point(|(n, _)| *n < number);
            held.sockets.insert(at, (number, pair.server));
        });
        Response::from_websocket(pair.client)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        let Some(number) = socket_number(&ws) else {
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
            let effects = y_webrtc::on_frame(&mut held.topics, number, &text, &limits);
            for (to, frame) in &effects.pushes {
                if let Some((_, socket)) = held.sockets.iter().find(|(n, _)| n == to) {
                    let _ = socket.send_with_str(frame);
                }
            }
            if effects.subscriptions_changed {
                let topics = held.topics.topics_of(number).map(|t| t.as_str().to_owned());
                let _ = Attachment::keep(&ws, number, topics);
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
        self.gone(&ws);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        self.gone(&ws);
        Ok(())
    }
}

/// The number a socket was given when it was accepted.
fn socket_number(ws: &WebSocket) -> Option<SocketId> {
    Attachment::of(ws).map(|a| a.number)
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
                rebuilt.sockets.push((a.number, ws));
            }
            rebuilt.sockets.sort_by_key(|(n, _)| *n);
            rebuilt
        });
        f(held)
    }

    /// A socket that closed or failed: its subscriptions go with it.
    fn gone(&self, ws: &WebSocket) {
        if let Some(number) = socket_number(ws) {
            self.with_held(|held| {
                held.topics.gone(number);
                held.sockets.retain(|(n, _)| *n != number);
            });
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
        self.with_held(|held| {
            held.topics.gone(number);
            held.sockets.retain(|(n, _)| *n != number);
        });
        Ok(())
    }
}
