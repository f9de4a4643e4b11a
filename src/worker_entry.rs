//! The Workers runtime adapter: reads the runtime's request into an
//! [`HttpRequest`], serves it with the R2 store, writes the answer back as
//! the runtime's response (on `web_sys` types: workers-rs' `Request` and
//! `Response` wrappers would add their conversions to the wasm).

use std::future::Future;
use std::time::Duration;

use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::js_sys::{self, Promise, Uint8Array};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::{self, web_sys};
use worker::{Env, Headers, Response};

use crate::config::Config;
use crate::edge::access::QuotaLedger;
use crate::edge::isolate::room_tag;
use crate::edge::serve::{admit_socket, is_rate_limited, path, SocketPlace};
use crate::edge::{error_response, serve, HttpRequest, HttpResponse, Isolate, Outcome, Services};
use crate::error::Error;
use crate::host::r2::RetryPolicy;
use crate::object_exports::thrown;
use crate::platform::{os_random, Forwarded, Platform, SocketObjects};
use crate::runtime_error::js_error_text;
use crate::store::r2::R2Store;
use crate::wire::peerjs;

/// The runtime's clock, timers, randomness and, when bound, the relay
/// rooms' objects (`RELAY_ROOMS`).
pub(crate) struct WorkerPlatform {
    pub(crate) rooms: Option<worker::ObjectNamespace>,
    pub(crate) sockets: SocketObjects,
}

impl WorkerPlatform {
    /// Without room objects (what the objects themselves use).
    pub(crate) const BARE: WorkerPlatform = WorkerPlatform {
        rooms: None,
        sockets: SocketObjects {
            y_webrtc: false,
            peerjs: false,
        },
    };
}

impl Platform for WorkerPlatform {
    fn now_ms(&self) -> u64 {
        worker::Date::now().as_millis()
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        worker::Delay::from(Duration::from_millis(ms))
    }

    fn fill_random(&self, buf: &mut [u8]) {
        os_random(buf);
    }

    fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<(u16, Vec<u8>), String>> {
        let (url, bearer, body) = (url.to_owned(), format!("Bearer {bearer}"), body.to_vec());
        async move {
            let call = async {
                let request = post_request(
                    &url,
                    &[
                        ("Authorization", &bearer),
                        ("Content-Type", "application/json"),
                    ],
                    &body,
                )?;
                let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
                let response = answer(scope.fetch_with_request(&request)).await?;
                Ok::<_, JsValue>((
                    response.status(),
                    body_bytes(response.array_buffer()).await?,
                ))
            };
            let timeout = worker::Delay::from(Duration::from_millis(OUTBOUND_TIMEOUT_MS));
            match futures_util::future::select(std::pin::pin!(call), timeout).await {
                futures_util::future::Either::Left((result, _)) => result.map_err(js_error_text),
                futures_util::future::Either::Right(_) => Err("timed out".to_owned()),
            }
        }
    }

    fn has_room_objects(&self) -> bool {
        self.rooms.is_some()
    }

    fn socket_objects(&self) -> SocketObjects {
        self.sockets
    }

    fn call_room(
        &self,
        room: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<Forwarded, String>> {
        let stub = self.rooms.as_ref().map(|rooms| object_stub(rooms, room));
        let body = body.to_vec();
        async move {
            let answer = async {
                let stub = stub.ok_or("no room objects")??;
                let request = post_request("https://room.internal/relay", &[], &body)?;
                let response = answer(stub.fetch_with_request(&request)?).await?;
                let headers = ["retry-after", "x-poll-hint", "x-members"]
                    .iter()
                    .filter_map(|name| {
                        let value = response.headers().get(name).ok().flatten()?;
                        Some(((*name).to_owned(), value))
                    })
                    .collect();
                Ok::<_, JsValue>(Forwarded {
                    status: response.status(),
                    headers,
                    body: body_bytes(response.array_buffer()).await?,
                })
            };
            answer.await.map_err(js_error_text)
        }
    }
}

/// The stub of the Durable Object named `name` in `objects`, on the
/// runtime's own types (workers-rs' `Stub` takes and gives its own
/// `Request`/`Response`, whose conversions cost ~2 KB of wasm gzip).
fn object_stub(
    objects: &worker::ObjectNamespace,
    name: &str,
) -> Result<worker_sys::DurableObject, JsValue> {
    let objects: &worker_sys::DurableObjectNamespace = objects.as_ref().unchecked_ref();
    objects.get(&objects.id_from_name(name)?)
}

/// The response a `fetch` promise settles with.
async fn answer(promise: Promise) -> Result<web_sys::Response, JsValue> {
    Ok(JsFuture::from(promise).await?.unchecked_into())
}

/// The bytes an `arrayBuffer()` promise settles with.
pub(crate) async fn body_bytes(promise: Result<Promise, JsValue>) -> Result<Vec<u8>, JsValue> {
    Ok(Uint8Array::new(&JsFuture::from(promise?).await?).to_vec())
}

/// A POST with these headers and body.
fn post_request(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<web_sys::Request, JsValue> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let all = web_sys::Headers::new()?;
    for (name, value) in headers {
        all.set(name, value)?;
    }
    init.set_headers(&all);
    init.set_body(&Uint8Array::from(body));
    web_sys::Request::new_with_str_and_init(url, &init)
}

/// How long the TURN API may take before `/turn` answers 503.
const OUTBOUND_TIMEOUT_MS: u64 = 5_000;

thread_local! {
    /// Per-isolate origin tallies (see `quota`).
    static LEDGER: &'static QuotaLedger = Box::leak(Box::default());
    /// Per-isolate status probe and log key (see `http::Isolate`).
    static ISOLATE: &'static Isolate = Box::leak(Box::new(Isolate::new({
        let mut key = [0u8; 16];
        os_random(&mut key);
        key
    })));
}

/// The `fetch` export, as `#[event(fetch)]` writes it but on the
/// runtime's own request and response (workers-rs' conversions and its
/// error path cost ~3 KB of wasm gzip).
mod fetch_export {
    use wasm_bindgen::prelude::wasm_bindgen;
    use wasm_bindgen::JsValue;
    use worker::worker_sys::web_sys;

    #[wasm_bindgen(js_name = fetch, js_sys = worker::js_sys, wasm_bindgen_futures = worker::wasm_bindgen_futures)]
    pub async fn fetch(
        req: web_sys::Request,
        env: worker::Env,
        _ctx: worker::worker_sys::Context,
    ) -> Result<JsValue, JsValue> {
        match super::fetch(req, env).await {
            Ok(response) => Ok(response.into()),
            Err(e) => {
                // What `#[event(fetch)]` answers when the runtime fails us.
                worker::console_error!("{}", super::js_error_text(e));
                let response =
                    worker::Response::error("INTERNAL SERVER ERROR", 500).map_err(super::thrown)?;
                Ok(web_sys::Response::from(response).into())
            }
        }
    }
}

async fn fetch(req: web_sys::Request, env: Env) -> Result<web_sys::Response, JsValue> {
    console_error_panic_hook::set_once();
    let config = Config::from_vars(|name| env.var(name).ok().map(|v| v.to_string()));
    if is_upgrade(&req) {
        return relay_socket(req, &env, &config).await;
    }
    let (request, rest) = read_request(&req, config.limits.max_body_bytes).await;
    if let Some(rest) = rest {
        // The rest of an oversized body is read (and dropped) before the
        // 413: an answer before the body ends breaks the connection it came
        // on under `wrangler dev`, whose next request then fails and whose
        // process exits. Bounded in bytes and time.
        drain(rest).await;
    }
    let store = env.bucket("BUCKET").ok().map(R2Store::new);
    let ledger = LEDGER.with(|l| *l);
    let isolate = ISOLATE.with(|i| *i);
    let policy = RetryPolicy::default();
    let platform = WorkerPlatform {
        rooms: env.durable_object("RELAY_ROOMS").ok(),
        sockets: SocketObjects {
            y_webrtc: env.durable_object("TOPIC_ROOMS").is_ok(),
            peerjs: env.durable_object("PEER_ROOMS").is_ok(),
        },
    };
    let services = Services {
        store: store.as_ref(),
        platform: &platform,
        config: &config,
        ledger,
        isolate,
        policy: &policy,
        version: concat!(
            env!("CARGO_PKG_VERSION"),
            " (build ",
            env!("P2PCF_BUILD"),
            ")"
        ),
    };
    let started = WorkerPlatform::BARE.now_ms();
    if let Some(refused) = rate_limit(&env, &request).await {
        let outcome = Outcome {
            op: "limited",
            ..Outcome::default()
        };
        worker::console_log!("{}", outcome.log_line(refused.status, 0));
        return write_response(refused);
    }
    let (response, outcome) = serve(&request, &services).await;
    let duration = WorkerPlatform::BARE.now_ms().saturating_sub(started);
    // One JSON line per request, for `wrangler tail` and Workers Logs.
    worker::console_log!("{}", outcome.log_line(response.status, duration));
    write_response(response)
}

fn is_upgrade(req: &web_sys::Request) -> bool {
    req.headers()
        .get("upgrade")
        .ok()
        .flatten()
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// A request's method, URL and headers (not its body).
fn request_head(req: &web_sys::Request) -> HttpRequest {
    HttpRequest {
        method: req.method(),
        // The raw string: parsing it with the `url` crate would pull ~200 KB of IDNA tables into the wasm.
        url: req.url(),
        headers: Headers(req.headers()).entries().collect(),
        body: Vec::new(),
    }
}

/// A WebSocket upgrade: admitted by the edge's rules, then handed to the
/// Durable Object that keeps the socket: its relay room's (`RELAY_ROOMS`)
/// its y-webrtc namespace's (`TOPIC_ROOMS`) or its PeerJS key's
/// (`PEER_ROOMS`).
async fn relay_socket(
    req: web_sys::Request,
    env: &Env,
    config: &Config,
) -> Result<web_sys::Response, JsValue> {
    let request = request_head(&req);
    let store = env.bucket("BUCKET").ok().map(R2Store::new);
    let policy = RetryPolicy::default();
    let services = Services {
        store: store.as_ref(),
        platform: &WorkerPlatform::BARE,
        config,
        ledger: LEDGER.with(|l| *l),
        isolate: ISOLATE.with(|i| *i),
        policy: &policy,
        version: "",
    };
    let mut outcome = Outcome::new("socket");
    let admitted = match rate_limit(env, &request).await {
        Some(refused) => Err(refused),
        None => admit_socket(&request, &services)
            .await
            .map_err(|e| error_response(&e)),
    };
    let target = admitted.and_then(|place| {
        let (binding, missing, room) = match place {
            SocketPlace::Relay(room) => ("RELAY_ROOMS", Error::NoPush, room),
            SocketPlace::YWebrtc(namespace) => ("TOPIC_ROOMS", Error::NoTopics, namespace),
            SocketPlace::PeerJs(key) => ("PEER_ROOMS", Error::NoPeerJs, key),
        };
        outcome.room = Some(room_tag(&room, services.isolate.log_key(config)));
        let objects = env
            .durable_object(binding)
            .map_err(|_| error_response(&missing))?;
        Ok((room, objects))
    });
    let response = match target {
        Ok((room, objects)) => {
            let stub = object_stub(&objects, room.as_str())?;
            answer(stub.fetch_with_request(&req)?).await
        }
        Err(refused) => {
            worker::console_log!("{}", outcome.log_line(refused.status, 0));
            if peerjs::is_socket_path(path(&request.url)) {
                // PeerJS shows a refused connect's `ERROR` frame, not a status.
                let reason = String::from_utf8_lossy(&refused.body);
                let code = 4000 + refused.status;
                let socket = refusal_socket(&peerjs::error_frame(&reason), code, &reason);
                return socket.map(Into::into).map_err(thrown);
            }
            return write_response(refused);
        }
    };
    worker::console_log!("{}", outcome.log_line(101, 0));
    response
}

/// A socket that only says why it is refused, then closes (the close's
/// reason cut to the 123 bytes a close frame holds).
pub(crate) fn refusal_socket(frame: &str, code: u16, reason: &str) -> worker::Result<Response> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = reason.get(..end).unwrap_or_default();
    let pair = worker::WebSocketPair::new()?;
    pair.server.accept()?;
    pair.server.send_with_str(frame)?;
    pair.server.close(Some(code), Some(reason))?;
    Response::from_websocket(pair.client)
}

/// The optional per-client rate limit: when a `RATE_LIMITER` binding
/// (Workers rate limiting) exists, each client IP's signalling calls and
/// TURN credential requests are counted there. Without the binding, or if it fails, nothing is limited.
async fn rate_limit(env: &Env, request: &HttpRequest) -> Option<HttpResponse> {
    if !is_rate_limited(request) {
        return None;
    }
    use worker::js_sys::{Object, Reflect};
    use worker::wasm_bindgen::JsCast;
    use worker::wasm_bindgen_futures::JsFuture;
    let limiter = env.rate_limiter("RATE_LIMITER").ok()?;
    let client = request.header("cf-connecting-ip").unwrap_or("unknown");
    // `limit({ key })` on the binding itself: workers-rs' `limit` converts
    // through serde (~1 KB of wasm gzip). A failing limiter refuses nothing.
    let options = Object::new();
    Reflect::set(&options, &"key".into(), &client.into()).ok()?;
    let raw = limiter
        .as_ref()
        .unchecked_ref::<worker::worker_sys::RateLimiter>();
    let outcome = JsFuture::from(raw.limit(options).ok()?).await.ok()?;
    let success = Reflect::get(&outcome, &"success".into()).ok()?;
    (success.as_bool() == Some(false)).then(|| error_response(&Error::RateLimited))
}

/// Most bytes of an oversized body read (and dropped) before its 413
/// (copying them costs ~1 ms of CPU per 4 MiB).
const MAX_DRAIN_BYTES: usize = 8 << 20;
/// Longest wait for the rest of an oversized body before its 413.
const MAX_DRAIN_MS: u64 = 2_000;

/// Reads the rest of an oversized body, dropping it, up to
/// [`MAX_DRAIN_BYTES`] and [`MAX_DRAIN_MS`].
async fn drain(rest: BodyReader) {
    let read = async {
        let mut drained = 0usize;
        while let Some(chunk) = rest.next().await {
            drained += chunk.len();
            if drained > MAX_DRAIN_BYTES {
                break;
            }
        }
    };
    let timeout = worker::Delay::from(Duration::from_millis(MAX_DRAIN_MS));
    futures_util::future::select(std::pin::pin!(read), timeout).await;
}

#[wasm_bindgen]
extern "C" {
    /// A `ReadableStreamDefaultReader` (bound here: web-sys's binding needs
    /// a feature workers-rs does not turn on).
    type StreamReader;
    #[wasm_bindgen(method)]
    fn read(this: &StreamReader) -> Promise;
}

/// A request body's chunks as they arrive.
struct BodyReader(StreamReader);

impl BodyReader {
    fn of(req: &web_sys::Request) -> Option<Self> {
        Some(Self(req.body()?.get_reader().unchecked_into()))
    }

    /// The next chunk; `None` at the end, or when the stream fails.
    async fn next(&self) -> Option<Vec<u8>> {
        let result = JsFuture::from(self.0.read()).await.ok()?;
        let field = |name: &str| js_sys::Reflect::get(&result, &name.into()).ok();
        if field("done")?.as_bool() != Some(false) {
            return None;
        }
        Some(Uint8Array::new(&field("value")?).to_vec())
    }
}

/// Reads method, headers and the body, chunk by chunk, stopping one byte
/// past the size limit (a chunked body has no `Content-Length` to trust). An
/// oversized body becomes one byte past the limit, which `serve` refuses
/// with 413, and the reader of its unread rest; an unreadable one is empty (a 400).
async fn read_request(
    req: &web_sys::Request,
    max_body_bytes: usize,
) -> (HttpRequest, Option<BodyReader>) {
    let mut request = request_head(req);
    let declared_too_large = request
        .header("content-length")
        .and_then(|l| l.trim().parse::<usize>().ok())
        .filter(|l| *l > max_body_bytes);
    let body = &mut request.body;
    let mut rest = None;
    if let Some(declared) = declared_too_large {
        body.resize(max_body_bytes + 1, 0);
        if declared <= MAX_DRAIN_BYTES {
            rest = BodyReader::of(req);
        }
    } else if let Some(reader) = BodyReader::of(req) {
        while let Some(chunk) = reader.next().await {
            body.extend_from_slice(&chunk[..chunk.len().min(max_body_bytes + 1 - body.len())]);
            if body.len() > max_body_bytes {
                rest = Some(reader);
                break;
            }
        }
    }
    (request, rest)
}

/// The runtime's response for `response`: its status, headers and body.
fn write_response(response: HttpResponse) -> Result<web_sys::Response, JsValue> {
    let headers = web_sys::Headers::new()?;
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    let init = web_sys::ResponseInit::new();
    init.set_status(response.status);
    init.set_headers(&headers);
    let body = Uint8Array::from(response.body.as_slice());
    web_sys::Response::new_with_opt_buffer_source_and_init(Some(&body), &init)
}
