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

use std::cell::{OnceCell, RefCell};

use worker::worker_sys::web_sys;
use worker::{Env, Response, State, WebSocket, WebSocketIncomingMessage};

use crate::config::Config;
use crate::engine::topics::{SocketId, Topic, Topics};
use crate::error::Error;
use crate::object_exports::HostedObject;
use crate::platform::Platform;
use crate::socket_object::{self, Alarm, Attachment, Sockets};
use crate::wire::y_webrtc::{self, FrameLimits, PING, PONG};
use crate::worker_entry::WorkerPlatform;

/// The sockets and their topics, as rebuilt on wake.
#[derive(Default)]
struct Held {
    topics: Topics,
    sockets: Sockets,
}

impl Held {
    /// A socket gone: its subscriptions go with it.
    fn forget(&mut self, number: SocketId) {
        self.topics.gone(number);
        self.sockets.forget(number);
    }
}

#[wasm_bindgen::prelude::wasm_bindgen]
pub struct TopicRoom {
    state: State,
    env: Env,
    held: RefCell<Option<Held>>,
    config: OnceCell<Config>,
    alarm: Alarm,
}

durable_object_exports!(TopicRoom);

impl HostedObject for TopicRoom {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new(PING, PONG) {
            state.set_websocket_auto_response(&pair);
        }
        Self {
            state,
            env,
            held: RefCell::new(None),
            config: OnceCell::new(),
            alarm: Alarm::default(),
        }
    }

    /// A WebSocket upgrade the worker admitted (origin, quota, namespace).
    async fn fetch(&self, _req: web_sys::Request) -> worker::Result<Response> {
        let max = self.config().limits.max_live_members;
        if self.with_held(|held| held.sockets.len() >= max) {
            let error = Error::RoomFull;
            return Response::error(error.to_string(), error.status());
        }
        let (client, socket) = socket_object::accept(&self.state, &[])?;
        self.with_held(|held| held.sockets.insert(socket));
        self.watch().await?;
        Response::from_websocket(client)
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
        let text = match socket_object::text_of(message) {
            Ok(text) => text,
            Err((code, reason)) => {
                self.with_held(|held| held.forget(number));
                let _ = ws.close(Some(code), Some(&reason));
                return Ok(());
            }
        };
        let limits = FrameLimits {
            max_frame_bytes: self.config().limits.max_body_bytes,
            now_ms: WorkerPlatform::BARE.now_ms(),
        };
        self.with_held(|held| {
            held.sockets.heard(number, limits.now_ms);
            let effects = y_webrtc::on_frame(&mut held.topics, number, &text, &limits);
            for (to, frame) in &effects.pushes {
                held.sockets.send(*to, frame, limits.now_ms);
            }
            if effects.subscriptions_changed {
                let topics = held.topics.topics_of(number).map(Topic::as_str);
                let _ = Attachment::keep(&ws, number, accepted_ms, topics);
            }
            for frame in &effects.reply {
                let _ = ws.send_with_str(frame);
            }
            if let Some((code, reason)) = effects.close {
                let _ = ws.close(Some(code), Some(&reason));
                held.forget(number);
            }
        });
        Ok(())
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
        self.alarm.ran();
        let idle_ms = self.idle_ms();
        let now = WorkerPlatform::BARE.now_ms();
        self.with_held(|held| {
            for number in held.sockets.close_silent(&self.state, now, idle_ms) {
                held.topics.gone(number);
            }
        });
        self.watch().await?;
        Response::ok("")
    }
}

impl TopicRoom {
    fn config(&self) -> &Config {
        socket_object::config(&self.config, &self.env)
    }

    /// Runs `f` on the sockets and topics, rebuilt from the attachments
    /// of the open sockets the first time after a wake.
    fn with_held<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let mut held = self.held.borrow_mut();
        let held = held.get_or_insert_with(|| {
            let mut rebuilt = Held::default();
            for (a, ws) in Sockets::rebuilt(&self.state) {
                let topics: Vec<Topic> = a
                    .lines
                    .iter()
                    .filter_map(|t| Topic::parse(t).ok())
                    .collect();
                let _ = rebuilt.topics.subscribe(a.number, &topics);
                rebuilt.sockets.insert(socket_object::Socket {
                    number: a.number,
                    ws,
                    heard_ms: a.accepted_ms,
                });
            }
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
        if self.with_held(|held| held.sockets.is_empty()) {
            return Ok(());
        }
        let at = WorkerPlatform::BARE.now_ms() + self.idle_ms();
        self.alarm.by(&self.state.storage(), at).await
    }

    /// A socket that closed or failed: its subscriptions go with it.
    fn gone(&self, ws: &WebSocket) {
        if let Some(a) = Attachment::of(ws) {
            self.with_held(|held| held.forget(a.number));
        }
    }
}
