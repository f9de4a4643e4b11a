//! A PeerJS key's Durable Object (wasm only): the runtime glue around a
//! [`Directory`] and [`peerjs`]. One object per key
//! (`PEER_ROOMS.idFromName(key)`), SQLite-backed but storing nothing: each
//! socket carries its id and token in its attachment, and memory is
//! rebuilt from them on wake. PeerJS's `HEARTBEAT` (every 5 s) is answered
//! by the runtime without waking the object. Signals for an id nobody
//! holds wait in memory for 5 s: the object is not evicted while an alarm
//! is that close, and a deploy closes the sockets they came from anyway.

use std::cell::{OnceCell, RefCell};

use worker::worker_sys::web_sys;
use worker::{Env, Response, State, WebSocket, WebSocketIncomingMessage};

use crate::config::Config;
use crate::domain::{PeerJsId, PeerJsToken};
use crate::engine::directory::{Claim, Directory};
use crate::engine::SocketId;
use crate::error::Error;
use crate::object_exports::HostedObject;
use crate::platform::Platform;
use crate::socket_object::{self, Alarm, Attachment, Socket, Sockets};
use crate::wire::peerjs::{self, Effects, FrameLimits, HEARTBEAT};
use crate::worker_entry::{refusal_socket, WorkerPlatform};

/// The peers and their sockets, as rebuilt on wake.
#[derive(Default)]
struct Held {
    dir: Directory,
    sockets: Sockets,
}

impl Held {
    /// Sends and closes what `effects` says. A send that fails is a peer
    /// gone: its socket is closed and `sender`, if any, hears `LEAVE`.
    fn apply(&mut self, effects: Effects, sender: Option<SocketId>, now_ms: u64) {
        for (to, frame) in effects.sends {
            if self.sockets.send(to, &frame, now_ms) || Some(to) == sender {
                continue;
            }
            let gone = self.dir.release(to);
            self.sockets.forget(to);
            let from = sender.and_then(|s| self.dir.id_of(s).cloned().map(|id| (s, id)));
            if let (Some(gone), Some((s, from))) = (gone, from) {
                self.sockets.send(s, &peerjs::left(&gone, &from), now_ms);
            }
        }
        for (number, code, reason) in effects.closes {
            self.sockets.close(number, code, &reason);
            self.dir.release(number);
        }
    }

    fn forget(&mut self, number: SocketId) {
        self.dir.release(number);
        self.sockets.forget(number);
    }
}

#[wasm_bindgen::prelude::wasm_bindgen]
pub struct PeerRoom {
    state: State,
    env: Env,
    held: RefCell<Option<Held>>,
    config: OnceCell<Config>,
    alarm: Alarm,
}

durable_object_exports!(PeerRoom);

impl HostedObject for PeerRoom {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) =
            worker::worker_sys::WebSocketRequestResponsePair::new(HEARTBEAT, HEARTBEAT)
        {
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

    /// A PeerJS socket the worker admitted (origin, quota, key, id, token).
    async fn fetch(&self, req: web_sys::Request) -> worker::Result<Response> {
        let connect = match peerjs::connect(&req.url()) {
            Ok(connect) => connect,
            Err(e) => {
                return refusal_socket(&peerjs::error_frame(&e.to_string()), 4400, &e.to_string())
            }
        };
        let max = self.config().limits.max_live_members;
        if self.with_held(|held| held.sockets.len() >= max) {
            let full = "Server has reached its concurrent user limit";
            return refusal_socket(
                &peerjs::error_frame(full),
                4429,
                Error::RoomFull.to_string().as_str(),
            );
        }
        let lines = [connect.id.as_str(), connect.token.as_str()];
        let (client, socket) = socket_object::accept(&self.state, &lines)?;
        let now = WorkerPlatform::BARE.now_ms();
        self.with_held(|held| {
            let number = socket.number;
            held.sockets.insert(socket);
            let effects = peerjs::on_connect(&mut held.dir, number, connect, now);
            held.apply(effects, None, now);
        });
        self.watch().await?;
        Response::from_websocket(client)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        let Some(Attachment { number, .. }) = Attachment::of(&ws) else {
            let _ = ws.close(Some(4400), Some("Unknown socket"));
            return Ok(());
        };
        let limits = FrameLimits {
            max_frame_bytes: self.config().limits.max_body_bytes,
            now_ms: WorkerPlatform::BARE.now_ms(),
        };
        let held_changed = self.with_held(|held| {
            let text = match socket_object::text_of(message) {
                Ok(text) => text,
                Err((code, reason)) => {
                    held.sockets.close(number, code, &reason);
                    held.dir.release(number);
                    return false;
                }
            };
            held.sockets.heard(number, limits.now_ms);
            let effects = peerjs::on_frame(&mut held.dir, number, &text, &limits);
            let changed = effects.held_changed;
            held.apply(effects, Some(number), limits.now_ms);
            changed
        });
        if held_changed {
            self.watch().await?;
        }
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

    /// Expires held signals (their senders hear `EXPIRE`), closes sockets
    /// silent for longer than `SOCKET_IDLE_S`, and comes back while either
    /// is left.
    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm.ran();
        let idle_ms = self.config().limits.socket_idle_s as u64 * 1000;
        let now = WorkerPlatform::BARE.now_ms();
        self.with_held(|held| {
            let effects = peerjs::on_tick(&mut held.dir, now);
            held.apply(effects, None, now);
            for number in held.sockets.close_silent(&self.state, now, idle_ms) {
                held.dir.release(number);
            }
        });
        self.watch().await?;
        Response::ok("")
    }
}

impl PeerRoom {
    fn config(&self) -> &Config {
        socket_object::config(&self.config, &self.env)
    }

    /// Runs `f` on the peers and sockets, rebuilt from the attachments of
    /// the open sockets the first time after a wake (oldest first, so a
    /// reconnect's socket holds its id again).
    fn with_held<T>(&self, f: impl FnOnce(&mut Held) -> T) -> T {
        let mut held = self.held.borrow_mut();
        let held = held.get_or_insert_with(|| {
            let mut rebuilt = Held::default();
            for (a, ws) in Sockets::rebuilt(&self.state) {
                let (Some(id), Some(token)) = (a.lines.first(), a.lines.get(1)) else {
                    continue;
                };
                let (Ok(id), Ok(token)) = (PeerJsId::parse(id), PeerJsToken::parse(token)) else {
                    continue;
                };
                match rebuilt.dir.claim(a.number, id, token, a.accepted_ms) {
                    Claim::Taken => continue,
                    Claim::Reclaimed { old } => rebuilt.sockets.forget(old),
                    Claim::Open => {}
                }
                rebuilt.sockets.insert(Socket {
                    number: a.number,
                    ws,
                    heard_ms: a.accepted_ms,
                });
            }
            rebuilt
        });
        f(held)
    }

    /// Sets the alarm for the next held signal's expiry, or `SOCKET_IDLE_S`
    /// ahead while sockets are open, whichever is sooner.
    async fn watch(&self) -> worker::Result<()> {
        let idle_ms = self.config().limits.socket_idle_s as u64 * 1000;
        let now = WorkerPlatform::BARE.now_ms();
        let at = self.with_held(|held| {
            let idle = (!held.sockets.is_empty()).then_some(now + idle_ms);
            match (idle, held.dir.next_expiry()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        });
        match at {
            Some(at) => self.alarm.by(&self.state.storage(), at).await,
            None => Ok(()),
        }
    }

    /// A socket that closed or failed: its id is free again.
    fn gone(&self, ws: &WebSocket) {
        if let Some(a) = Attachment::of(ws) {
            self.with_held(|held| held.forget(a.number));
        }
    }
}
