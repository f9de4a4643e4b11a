//! The relay room's Durable Object (wasm only): the runtime glue around
//! [`LiveRoom`] and [`socket`](crate::wire::relay::socket). One object per
//! relay room (`RELAY_ROOMS.idFromName(room)`), SQLite-backed, holding the
//! room's sockets with the WebSocket Hibernation API.
//!
//! What survives eviction: the room, as a head and one row per member
//! (storage keys `head` and `m:<id>`), the rows that changed written after
//! each event (pushes leave at once; the caller's ack or welcome once the
//! write is confirmed, anything else for it held behind), and each socket's
//! attachment (its room and member). Everything in memory is rebuilt from
//! those on wake. No timer runs in the object: a member whose socket
//! dropped is checked by an alarm, set only while one is in its resume
//! window. `ping` is answered by the runtime without waking the object.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsCast;
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::web_sys;
use worker::{Env, Response, State, WebSocket, WebSocketIncomingMessage, WebSocketPair};

use crate::config::Config;
use crate::domain::{ContextId, RoomId, SessionId};
use crate::edge::rooms;
use crate::error::Error;
use crate::host::live::LiveRoom;
use crate::object_exports::HostedObject;
use crate::platform::Platform;
use crate::socket_object::{attach_text, attached_text, RawState};
use crate::vec_map::VecMap;
use crate::wire::query;
use crate::wire::relay;
use crate::wire::relay::adapter::RelayMember;
use crate::wire::relay::object;
use crate::wire::relay::socket::{self, close_for, Effects, Out, SocketRoom};
use crate::worker_entry::{body_bytes, WorkerPlatform};

/// The storage key of the room's head (what is not a member's row).
const HEAD_KEY: &str = "head";
/// Each member's row: this prefix and its id.
const ROW_PREFIX: &str = "m:";

fn row_key(context: &ContextId) -> String {
    format!("{ROW_PREFIX}{context}")
}

/// What a socket carries through hibernation, as lines of text: when it
/// was accepted, the room, then the member once it has one.
#[derive(Clone)]
struct Attachment {
    /// The room id.
    r: String,
    /// The member, once its first frame was taken.
    m: Option<String>,
    /// When the socket was accepted, ms (its liveness before its first `ping`).
    t: u64,
}

impl Attachment {
    fn of(ws: &WebSocket) -> Option<Self> {
        let text = attached_text(ws)?;
        let mut lines = text.split('\n');
        let t = lines.next()?.parse().ok()?;
        let r = lines.next()?.to_owned();
        let m = lines.next().map(str::to_owned);
        Some(Self { r, m, t })
    }

    /// Room and member ids are valid, so neither has a line break.
    fn keep(&self, ws: &WebSocket) -> worker::Result<()> {
        let mut text = format!("{}\n{}", self.t, self.r);
        if let Some(m) = &self.m {
            text.push('\n');
            text.push_str(m);
        }
        attach_text(ws, &text)
    }
}

#[wasm_bindgen]
extern "C" {
    /// The object's storage (`ctx.storage`), for the write options
    /// workers-rs 0.8.7 does not take.
    type RawStorage;
    /// `storage.put(entries, options)`.
    #[wasm_bindgen(method, catch, js_name = put)]
    fn put_entries(
        this: &RawStorage,
        entries: &worker::js_sys::Object,
        options: &worker::js_sys::Object,
    ) -> Result<worker::js_sys::Promise, wasm_bindgen::JsValue>;
    /// `storage.get(key)`.
    #[wasm_bindgen(method, catch, js_name = get)]
    fn get_key(
        this: &RawStorage,
        key: &str,
    ) -> Result<worker::js_sys::Promise, wasm_bindgen::JsValue>;
    /// `storage.list(options)`: a `Map` of key to value.
    #[wasm_bindgen(method, catch, js_name = list)]
    fn list_with(
        this: &RawStorage,
        options: &worker::js_sys::Object,
    ) -> Result<worker::js_sys::Promise, wasm_bindgen::JsValue>;
    /// `storage.delete(keys, options)`.
    #[wasm_bindgen(method, catch, js_name = delete)]
    fn delete_keys(
        this: &RawStorage,
        keys: &worker::js_sys::Array,
        options: &worker::js_sys::Object,
    ) -> Result<worker::js_sys::Promise, wasm_bindgen::JsValue>;
}

/// `{allowUnconfirmed: true}`: pushes leave without waiting for the write
/// to be confirmed; what a member relies on (an ack, a welcome, a relay
/// answer) waits for `storage.sync()` instead.
fn unconfirmed() -> worker::js_sys::Object {
    let options = worker::js_sys::Object::new();
    let _ = worker::js_sys::Reflect::set(
        &options,
        &"allowUnconfirmed".into(),
        &wasm_bindgen::JsValue::TRUE,
    );
    options
}

/// The close of a socket silent for longer than `SOCKET_IDLE_S`: a crashed
/// tab or a dead network. Its member gets its resume window, as for a drop.
const SILENT: (u16, &str) = (4408, "No frame or ping for too long: send ping every 30 s");

#[wasm_bindgen::prelude::wasm_bindgen]
pub struct RelayRoom {
    state: State,
    env: Env,
    live: RefCell<Option<LiveRoom<RelayMember>>>,
    /// The open sockets by member, scanned once per wake and kept as
    /// sockets join and go (a push must not read every attachment).
    by_member: RefCell<Option<VecMap<SessionId, WebSocket>>>,
    /// The alarm this object has set (ms), as far as it knows.
    alarm: Cell<Option<Option<u64>>>,
    /// The last frame of each member's socket since this object woke.
    heard: RefCell<VecMap<SessionId, u64>>,
    config: OnceCell<Config>,
    /// Writes issued (unconfirmed) and writes known confirmed, counted.
    writes: Cell<u64>,
    confirmed: Cell<u64>,
    /// The promises of unconfirmed writes, awaited by [`Self::confirm`].
    pending: RefCell<Vec<worker::js_sys::Promise>>,
    /// Per member whose socket waits for a write to be confirmed (its ack
    /// or welcome): what it is sent meanwhile, in order, after that.
    held: RefCell<VecMap<SessionId, VecDeque<Held>>>,
}

durable_object_exports!(RelayRoom);

/// A frame or close held for a member's socket until `after` writes are
/// confirmed (0: only behind what is ahead of it).
struct Held {
    after: u64,
    out: Outgoing,
}

enum Outgoing {
    Frame(String),
    Close(u16, String),
}

impl HostedObject for RelayRoom {
    fn new(state: State, env: Env) -> Self {
        if let Ok(pair) = worker::worker_sys::WebSocketRequestResponsePair::new("ping", "pong") {
            state.set_websocket_auto_response(&pair);
        }
        Self {
            state,
            env,
            live: RefCell::new(None),
            by_member: RefCell::new(None),
            alarm: Cell::new(None),
            heard: RefCell::new(VecMap::new()),
            config: OnceCell::new(),
            writes: Cell::new(0),
            confirmed: Cell::new(0),
            pending: RefCell::new(Vec::new()),
            held: RefCell::new(VecMap::new()),
        }
    }

    /// A relay call (POST, the worker checked it) or a WebSocket upgrade the
    /// worker admitted (origin, quota, room rules).
    async fn fetch(&self, req: web_sys::Request) -> worker::Result<Response> {
        if req.method() == "POST" {
            let body = body_bytes(req.array_buffer()).await?;
            return self.relay_call(&body).await;
        }
        let url = req.url();
        let room = query(&url, "room").unwrap_or_default().to_owned();
        if RoomId::parse(&room).is_err() {
            return Response::error("Bad room id", 400);
        }
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        let t = WorkerPlatform::BARE.now_ms();
        Attachment {
            r: room,
            m: None,
            t,
        }
        .keep(&pair.server)?;
        Response::from_websocket(pair.client)
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        let Some(attachment) = Attachment::of(&ws) else {
            let _ = ws.close(Some(4400), Some("Unknown socket"));
            return Ok(());
        };
        let WebSocketIncomingMessage::String(text) = message else {
            let _ = ws.close(Some(1003), Some("Binary frames are not taken"));
            return Ok(());
        };
        let Ok(room) = RoomId::parse(&attachment.r) else {
            return Ok(());
        };
        let member = attachment
            .m
            .as_deref()
            .and_then(|m| SessionId::parse(m).ok());
        if let Some(m) = &member {
            let now = WorkerPlatform::BARE.now_ms();
            self.heard.borrow_mut().insert(m.clone(), now);
        }
        self.load().await?;
        let effects = {
            let config = self.config();
            let settings = rooms::settings_for(&room, config, WorkerPlatform::BARE.now_ms());
            let mut live = self.live.borrow_mut();
            match (settings, live.as_mut()) {
                (Ok(settings), Some(live)) => {
                    let socket_room = SocketRoom {
                        id: &room,
                        platform: &WorkerPlatform::BARE,
                        max_members: settings.limits.max_live_members,
                        max_frame_bytes: settings.limits.max_body_bytes,
                    };
                    socket::on_frame(live, &socket_room, member.as_ref(), &text)
                }
                (Err(e), _) => closing(&e),
                (_, None) => closing(&Error::Unreadable { retry_after_s: 10 }),
            }
        };
        self.settle(&ws, &attachment, member, effects).await
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        self.gone(&ws, u16::try_from(code).unwrap_or(1006)).await
    }

    async fn websocket_error(&self, ws: WebSocket, _error: worker::Error) -> worker::Result<()> {
        self.gone(&ws, 1006).await
    }

    async fn alarm(&self) -> worker::Result<Response> {
        self.alarm.set(Some(None));
        self.load().await?;
        let silent = self.close_silent();
        let now = WorkerPlatform::BARE.now_ms();
        let pushes = match self.live.borrow_mut().as_mut() {
            Some(live) => {
                for member in &silent {
                    live.dropped(member, now);
                }
                socket::on_alarm(live, now)
            }
            None => Vec::new(),
        };
        self.persist()?;
        self.deliver(pushes);
        self.confirm().await?;
        Response::ok("")
    }
}

/// Sends a frame on a socket, or closes it.
fn send(ws: &WebSocket, out: Outgoing) {
    let _ = match out {
        Outgoing::Frame(frame) => ws.send_with_str(&frame),
        Outgoing::Close(code, reason) => ws.close(Some(code), Some(&reason)),
    };
}

fn refusal(error: &Error) -> worker::Result<Response> {
    let headers = worker::Headers::new();
    if let Some(s) = error.retry_after_s() {
        headers.set("Retry-After", &s.to_string())?;
    }
    Ok(Response::error(error.to_string(), error.status())?.with_headers(headers))
}

fn closing(error: &Error) -> Effects {
    Effects {
        close: Some(close_for(error)),
        ..Effects::default()
    }
}

impl RelayRoom {
    /// The deployment's settings, read once per instance (not per event).
    fn config(&self) -> &Config {
        self.config.get_or_init(|| {
            Config::from_vars(|name| self.env.var(name).ok().map(|v| v.to_string()))
        })
    }

    /// A relay call over HTTP: run on the room held here, answered as the
    /// worker answers it (its refusals with status, text and `Retry-After`).
    async fn relay_call(&self, body: &[u8]) -> worker::Result<Response> {
        let request = match relay::parse(body) {
            Ok(request) => request,
            Err(e) => return refusal(&e),
        };
        self.load().await?;
        let config = self.config();
        let now = WorkerPlatform::BARE.now_ms();
        let (result, pushes) = match (
            rooms::settings_for(&request.room, config, now),
            self.live.borrow_mut().as_mut(),
        ) {
            (Ok(settings), Some(live)) => {
                object::handle(live, &request, &WorkerPlatform::BARE, &settings)
            }
            (Err(e), _) => (Err(e), Vec::new()),
            (_, None) => (Err(Error::Unreadable { retry_after_s: 10 }), Vec::new()),
        };
        // The answer says "stored": it leaves once the writes are confirmed.
        self.persist()?;
        self.deliver(pushes);
        self.confirm().await?;
        match result {
            Ok(reply) => {
                let headers = worker::Headers::new();
                headers.set("Content-Type", "application/json")?;
                headers.set("X-Members", &reply.members.to_string())?;
                if let Some(hint) = reply.hint {
                    headers.set("X-Poll-Hint", &hint.header())?;
                }
                Ok(Response::from_bytes(reply.body)?.with_headers(headers))
            }
            Err(e) => refusal(&e),
        }
    }

    /// Closes the sockets silent for longer than `SOCKET_IDLE_S` (no frame
    /// and no answered `ping`); returns their members.
    fn close_silent(&self) -> Vec<SessionId> {
        let idle_ms = self.config().limits.socket_idle_s as u64 * 1000;
        let now = WorkerPlatform::BARE.now_ms();
        let heard = self.heard.borrow();
        let mut silent = Vec::new();
        for ws in self.state.get_websockets() {
            let Some(a) = Attachment::of(&ws) else {
                continue;
            };
            let member = a.m.as_deref().and_then(|m| SessionId::parse(m).ok());
            let pinged = self
                .state
                .as_raw()
                .unchecked_ref::<RawState>()
                .auto_response_at(ws.as_ref())
                .map_or(0, |d| d.get_time() as u64);
            let framed = member
                .as_ref()
                .and_then(|m| heard.get(m))
                .copied()
                .unwrap_or(0);
            if now.saturating_sub(a.t.max(pinged).max(framed)) > idle_ms {
                let _ = ws.close(Some(SILENT.0), Some(SILENT.1));
                silent.extend(member);
            }
        }
        if !silent.is_empty() {
            self.by_member.replace(None);
            let mut held = self.held.borrow_mut();
            silent.iter().for_each(|m| drop(held.remove(m)));
        }
        silent
    }

    /// The open sockets by member.
    fn sockets(&self) -> VecMap<SessionId, WebSocket> {
        self.state
            .get_websockets()
            .into_iter()
            .filter_map(|ws| {
                let a = Attachment::of(&ws)?;
                let id = SessionId::parse(a.m.as_deref()?).ok()?;
                Some((id, ws))
            })
            .collect()
    }

    /// Rebuilds the room from storage (its head and one row per member) and
    /// the open sockets, once per wake.
    async fn load(&self) -> worker::Result<()> {
        let storage = self.state.storage();
        if self.alarm.get().is_none() {
            let at = storage.get_alarm().await?.map(|ms| ms.max(0) as u64);
            self.alarm.set(Some(at));
        }
        if self.live.borrow().is_some() {
            return Ok(());
        }
        // Read through the raw binding: workers-rs' typed `get` and `list`
        // convert through serde (~1.5 KB of wasm gzip for two calls).
        let raw = storage.as_raw().unchecked_ref::<RawStorage>();
        let head = JsFuture::from(raw.get_key(HEAD_KEY)?).await?.as_string();
        let options = worker::js_sys::Object::new();
        worker::js_sys::Reflect::set(&options, &"prefix".into(), &ROW_PREFIX.into())?;
        let listed: worker::js_sys::Map = JsFuture::from(raw.list_with(&options)?)
            .await?
            .unchecked_into();
        let mut rows = Vec::new();
        for entry in listed.entries() {
            let pair: worker::js_sys::Array = entry?.into();
            let (key, row) = (pair.get(0).as_string(), pair.get(1).as_string());
            let context = key
                .as_deref()
                .and_then(|k| k.strip_prefix(ROW_PREFIX))
                .and_then(|k| ContextId::parse(k).ok());
            if let (Some(context), Some(row)) = (context, row) {
                rows.push((context, row));
            }
        }
        let members: Vec<SessionId> = self.sockets().into_keys().collect();
        let now = WorkerPlatform::BARE.now_ms();
        let window = self.config().limits.resume_window_s as u64 * 1000;
        let rows = rows.iter().map(|(k, r)| (k.clone(), r.as_bytes()));
        let head = head.as_deref().map(str::as_bytes);
        match LiveRoom::restore(head, rows, members, window, now) {
            Ok(live) => *self.live.borrow_mut() = Some(live),
            Err(_) => worker::console_error!("relay room: stored rows unreadable"),
        }
        Ok(())
    }

    /// Sends a frame's effects, remembers who the socket is, writes the
    /// room if it changed and sets the alarm the room needs. The others get
    /// their pushes at once; this member's ack or welcome says "stored", so
    /// it leaves once the write is confirmed, and whatever else is sent to
    /// this member meanwhile leaves after it.
    async fn settle(
        &self,
        ws: &WebSocket,
        attachment: &Attachment,
        member: Option<SessionId>,
        effects: Effects,
    ) -> worker::Result<()> {
        if let Some(id) = &effects.became {
            let mut a = attachment.clone();
            a.m = Some(id.to_string());
            a.keep(ws)?;
            // The new member's socket joins the map (no rescan per join).
            if let Some(sockets) = self.by_member.borrow_mut().as_mut() {
                sockets.insert(id.clone(), ws.clone());
            }
        }
        let wrote = self.persist()?;
        let mut out: VecDeque<Outgoing> = effects.reply.into_iter().map(Outgoing::Frame).collect();
        out.extend(
            effects
                .close
                .map(|(code, reason)| Outgoing::Close(code, reason)),
        );
        let member = effects.became.or(member);
        let hold = member.filter(|m| wrote || self.held.borrow().contains_key(m));
        match hold {
            Some(member) if !out.is_empty() => {
                let after = self.writes.get();
                let mut held = self.held.borrow_mut();
                let queue = held.get_or_insert_with(member, VecDeque::new);
                queue.extend(out.into_iter().map(|out| Held { after, out }));
            }
            _ => out.into_iter().for_each(|o| send(ws, o)),
        }
        self.deliver(effects.pushes);
        self.confirm().await
    }

    /// A socket closed or failed: a leave or a drop of its member, unless
    /// another open socket is that member's (it came back already).
    async fn gone(&self, ws: &WebSocket, code: u16) -> worker::Result<()> {
        let _ = ws.close(Some(1000), Some("Closed"));
        if let Some(sockets) = self.by_member.borrow_mut().as_mut() {
            sockets.retain(|_, open| open != ws);
        }
        let Some(a) = Attachment::of(ws) else {
            return Ok(());
        };
        let Some(Ok(member)) = a.m.as_deref().map(SessionId::parse) else {
            return Ok(());
        };
        self.held.borrow_mut().remove(&member);
        let still_open = self
            .state
            .get_websockets()
            .iter()
            .filter(|other| *other != ws)
            .filter_map(Attachment::of)
            .any(|other| other.m.as_deref() == Some(member.as_str()));
        if still_open {
            return Ok(());
        }
        self.load().await?;
        let pushes = match self.live.borrow_mut().as_mut() {
            Some(live) => socket::on_close(live, &member, code, WorkerPlatform::BARE.now_ms()),
            None => Vec::new(),
        };
        self.persist()?;
        self.deliver(pushes);
        self.confirm().await
    }

    fn deliver(&self, pushes: Vec<Out>) {
        if pushes.is_empty() {
            return;
        }
        let mut cache = self.by_member.borrow_mut();
        let sockets = cache.get_or_insert_with(|| self.sockets());
        let mut held = self.held.borrow_mut();
        for (to, frame) in pushes {
            if let Some(queue) = held.get_mut(&to) {
                queue.push_back(Held {
                    after: 0,
                    out: Outgoing::Frame(frame),
                });
            } else if let Some(ws) = sockets.get(&to) {
                let _ = ws.send_with_str(&frame);
            }
        }
    }

    /// Waits until every write issued so far is confirmed (on disk; on
    /// Cloudflare, replicated), then sends what was held for it.
    async fn confirm(&self) -> worker::Result<()> {
        let target = self.writes.get();
        if target > self.confirmed.get() {
            let pending = std::mem::take(&mut *self.pending.borrow_mut());
            for promise in pending {
                JsFuture::from(promise).await?;
            }
            self.state.storage().sync().await?;
            self.confirmed.set(self.confirmed.get().max(target));
        }
        self.release();
        Ok(())
    }

    /// Sends, in order, what is held for members up to the first frame
    /// still waiting for a write.
    fn release(&self) {
        let confirmed = self.confirmed.get();
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            return;
        }
        let mut cache = self.by_member.borrow_mut();
        let sockets = cache.get_or_insert_with(|| self.sockets());
        held.retain(|member, queue| {
            while queue.front().is_some_and(|h| h.after <= confirmed) {
                let Some(h) = queue.pop_front() else { break };
                if let Some(ws) = sockets.get(member) {
                    send(ws, h.out);
                }
            }
            !queue.is_empty()
        });
    }

    /// Issues the writes of what changed (the head, members' rows) and
    /// moves the alarm earlier if the room needs it, without holding pushes
    /// until they are confirmed (`allowUnconfirmed`); returns whether it
    /// wrote. [`Self::confirm`] waits for them.
    fn persist(&self) -> worker::Result<bool> {
        // (`load` read the alarm on wake.)
        let known = self.alarm.get().flatten();
        let idle_ms = self.config().limits.socket_idle_s as u64 * 1000;
        let now = WorkerPlatform::BARE.now_ms();
        let (changes, set_alarm) = match self.live.borrow_mut().as_mut() {
            Some(live) => (live.take_changes(), live.alarm_to_set(known, now, idle_ms)),
            None => return Ok(false),
        };
        let storage = self.state.storage();
        let raw = storage.as_raw().unchecked_ref::<RawStorage>();
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap_or_default();
        let mut pending = Vec::new();
        let entries = worker::js_sys::Object::new();
        let rows = changes.head.map(|h| (HEAD_KEY.to_owned(), h));
        let rows = rows
            .into_iter()
            .chain(changes.put.into_iter().map(|(c, r)| (row_key(&c), r)));
        let mut puts = 0;
        for (key, row) in rows {
            worker::js_sys::Reflect::set(&entries, &key.into(), &text(row).into())?;
            puts += 1;
        }
        if puts > 0 {
            pending.push(raw.put_entries(&entries, &unconfirmed())?);
        }
        if !changes.delete.is_empty() {
            let keys: worker::js_sys::Array = changes
                .delete
                .iter()
                .map(|c| wasm_bindgen::JsValue::from(row_key(c)))
                .collect();
            pending.push(raw.delete_keys(&keys, &unconfirmed())?);
        }
        if let Some(n) = set_alarm {
            let at = worker::js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(n as f64));
            pending.push(storage.as_raw().set_alarm(at, unconfirmed())?);
            self.alarm.set(Some(Some(n)));
        }
        if pending.is_empty() {
            return Ok(false);
        }
        self.pending.borrow_mut().extend(pending);
        self.writes.set(self.writes.get() + 1);
        Ok(true)
    }
}
