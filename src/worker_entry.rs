//! The Workers runtime adapter: converts `worker::Request` to
//! [`HttpRequest`], serves it with the R2 store, converts the answer back.

use std::future::Future;
use std::time::Duration;

use worker::{ByteStream, Env, Fetch, Headers, Request, Response};

use crate::config::Config;
use crate::edge::access::QuotaLedger;
use crate::edge::isolate::room_tag;
use crate::edge::serve::{admit_socket, is_rate_limited, SocketPlace};
use crate::edge::{error_response, serve, HttpRequest, HttpResponse, Isolate, Outcome, Services};
use crate::error::Error;
use crate::host::r2::RetryPolicy;
use crate::platform::{os_random, Forwarded, Platform, SocketObjects};
use crate::runtime_error::error_text;
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
                let mut response = Fetch::Request(request).send().await?;
                let status = response.status_code();
                Ok::<_, worker::Error>((status, response.bytes().await?))
            };
            let timeout = worker::Delay::from(Duration::from_millis(OUTBOUND_TIMEOUT_MS));
            match futures_util::future::select(std::pin::pin!(call), timeout).await {
                futures_util::future::Either::Left((result, _)) => {
                    result.map_err(|e| error_text(&e))
                }
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
        let call = self.rooms.as_ref().map(|rooms| {
            (
                rooms.id_from_name(room).and_then(|id| id.get_stub()),
                body.to_vec(),
            )
        });
        async move {
            let (stub, body) = call.ok_or("no room objects")?;
            let answer = async {
                let request = post_request("https://room.internal/relay", &[], &body)?;
                let mut response = stub?.fetch_with_request(request).await?;
                let headers = ["retry-after", "x-poll-hint", "x-members"]
                    .iter()
                    .filter_map(|name| {
                        let value = response.headers().get(name).ok().flatten()?;
                        Some(((*name).to_owned(), value))
                    })
                    .collect();
                Ok::<_, worker::Error>(Forwarded {
                    status: response.status_code(),
                    headers,
                    body: response.bytes().await?,
                })
            };
            answer.await.map_err(|e| error_text(&e))
        }
    }
}

/// A POST with these headers and body, built on `web_sys` directly:
/// `worker::RequestInit` converts through its `cf` options, which would
/// link their whole serializer (~12 KB of wasm) for nothing.
fn post_request(url: &str, headers: &[(&str, &str)], body: &[u8]) -> worker::Result<Request> {
    let init = worker::web_sys::RequestInit::new();
    init.set_method("POST");
    let all = Headers::new();
    for (name, value) in headers {
        all.set(name, value)?;
    }
    init.set_headers(&all.0);
    init.set_body(&worker::js_sys::Uint8Array::from(body));
    let request = worker::web_sys::Request::new_with_str_and_init(url, &init)
        .map_err(|_| worker::Error::RustError("bad request for fetch".to_owned()))?;
    Ok(request.into())
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

/// The `fetch` export, as `#[event(fetch)]` writes it but for its error
/// path, which formats `worker::Error` through `Box<dyn Error>` and
/// `unwrap` (`Debug`): ~1 KB of wasm gzip.
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
        let response = match super::fetch(worker::Request::from(req), env).await {
            Ok(response) => response,
            Err(e) => {
                // What `#[event(fetch)]` answers when the runtime fails us.
                worker::console_error!("{}", super::error_text(&e));
                worker::Response::error("INTERNAL SERVER ERROR", 500)?
            }
        };
        Ok(web_sys::Response::from(response).into())
    }
}

async fn fetch(req: Request, env: Env) -> worker::Result<Response> {
    console_error_panic_hook::set_once();
    let config = Config::from_vars(|name| env.var(name).ok().map(|v| v.to_string()));
    if is_upgrade(&req) {
        return relay_socket(req, &env, &config).await;
    }
    let (request, rest) = read_request(req, config.limits.max_body_bytes).await;
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

fn is_upgrade(req: &Request) -> bool {
    req.headers()
        .get("upgrade")
        .ok()
        .flatten()
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
}

/// A WebSocket upgrade: admitted by the edge's rules, then handed to the
/// Durable Object that keeps the socket: its relay room's (`RELAY_ROOMS`)
/// its y-webrtc namespace's (`TOPIC_ROOMS`) or its PeerJS key's
/// (`PEER_ROOMS`).
async fn relay_socket(req: Request, env: &Env, config: &Config) -> worker::Result<Response> {
    let request = HttpRequest {
        method: req.method().to_string(),
        url: req.inner().url(),
        headers: req.headers().entries().collect(),
        body: Vec::new(),
    };
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
            let stub = objects.id_from_name(room.as_str())?.get_stub()?;
            stub.fetch_with_request(req).await
        }
        Err(refused) => {
            worker::console_log!("{}", outcome.log_line(refused.status, 0));
            if peerjs::is_socket_path(&req.path()) {
                // PeerJS shows a refused connect's `ERROR` frame, not a status.
                let reason = String::from_utf8_lossy(&refused.body);
                let code = 4000 + refused.status;
                return refusal_socket(&peerjs::error_frame(&reason), code, &reason);
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
    let reason = &reason[..end];
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
async fn drain(mut rest: ByteStream) {
    use futures_util::StreamExt as _;
    let read = async {
        let mut drained = 0usize;
        while let Some(Ok(chunk)) = rest.next().await {
            drained += chunk.len();
            if drained > MAX_DRAIN_BYTES {
                break;
            }
        }
    };
    let timeout = worker::Delay::from(Duration::from_millis(MAX_DRAIN_MS));
    futures_util::future::select(std::pin::pin!(read), timeout).await;
}

/// Reads method, headers and the body, chunk by chunk, stopping one byte
/// past the size limit (a chunked body has no `Content-Length` to trust). An
/// oversized body becomes one byte past the limit, which `serve` refuses
/// with 413, and the stream of its unread rest; an unreadable one is empty (a 400).
async fn read_request(
    mut req: Request,
    max_body_bytes: usize,
) -> (HttpRequest, Option<ByteStream>) {
    use futures_util::StreamExt as _;
    let headers: Vec<(String, String)> = req.headers().entries().collect();
    let declared_too_large = req
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|l| l.trim().parse::<usize>().ok())
        .filter(|l| *l > max_body_bytes);
    let mut body = Vec::new();
    let mut rest = None;
    if let Some(declared) = declared_too_large {
        body.resize(max_body_bytes + 1, 0);
        if declared <= MAX_DRAIN_BYTES {
            rest = req.stream().ok();
        }
    } else if let Ok(mut stream) = req.stream() {
        while let Some(Ok(chunk)) = stream.next().await {
            body.extend_from_slice(&chunk[..chunk.len().min(max_body_bytes + 1 - body.len())]);
            if body.len() > max_body_bytes {
                rest = Some(stream);
                break;
            }
        }
    }
    let request = HttpRequest {
        method: req.method().to_string(),
        // The raw string: parsing it with the `url` crate would pull ~200 KB of IDNA tables into the wasm.
        url: req.inner().url(),
        headers,
        body,
    };
    (request, rest)
}

fn write_response(response: HttpResponse) -> worker::Result<Response> {
    let headers = Headers::new();
    for (name, value) in &response.headers {
        headers.set(name, value)?;
    }
    let body = (!response.body.is_empty()).then_some(response.body);
    Ok(Response::from_bytes(body.unwrap_or_default())?
        .with_status(response.status)
        .with_headers(headers))
}
