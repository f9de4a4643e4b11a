//! HTTP in plain Rust: methods, headers, CORS, content types and the mapping
//! of [`Error`] to responses. The Worker entry point only converts
//! `worker::Request`/`Response` to and from [`HttpRequest`]/[`HttpResponse`].

use crate::config::Config;
use crate::error::Error;
use crate::hints::Hint;
use crate::platform::Platform;
use crate::protocol::{parse_request, Request, RoomId};
use crate::quota::{access, Access, QuotaLedger};
use crate::service::{handle, Reply, RetryPolicy};
use crate::status::{self, BucketState};
use crate::store::{Counting, OpCounts, Store, StoreError};

const ALLOW_METHODS: &str = "GET,HEAD,POST,DELETE,OPTIONS";
/// Where the relay API (v1) answers.
pub const RELAY_PATH: &str = "/relay/v1";

#[derive(Clone, Debug, Default)]
pub struct HttpRequest {
    pub method: String,
    /// The full URL, as the client sent it (shown on the status page).
    pub url: String,
    /// Header names in any case; looked up case-insensitively.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    fn new(status: u16, content_type: Option<&str>, body: Vec<u8>) -> Self {
        let mut headers = vec![
            ("Access-Control-Allow-Origin", "*".to_owned()),
            ("Access-Control-Allow-Methods", ALLOW_METHODS.to_owned()),
            ("Access-Control-Max-Age", "86400".to_owned()),
            (
                "Access-Control-Expose-Headers",
                "Retry-After, X-Poll-Hint, X-R2-Ops".to_owned(),
            ),
            // Lets pages of any origin read `Server-Timing` (the hint) from
            // Resource Timing, as CORS already lets them read the body.
            ("Timing-Allow-Origin", "*".to_owned()),
            ("Cache-Control", "no-store".to_owned()),
            ("X-Content-Type-Options", "nosniff".to_owned()),
        ];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct.to_owned()));
        }
        Self {
            status,
            headers,
            body,
        }
    }

    fn json(body: Vec<u8>) -> Self {
        Self::new(200, Some("application/json"), body)
    }

    fn error(e: &Error) -> Self {
        let mut r = Self::new(
            e.status(),
            Some("text/plain; charset=utf-8"),
            e.to_string().into_bytes(),
        );
        if let Some(s) = e.retry_after_s() {
            r.headers.push(("Retry-After", s.to_string()));
        }
        if e.status() == 405 {
            r.headers.push(("Allow", ALLOW_METHODS.to_owned()));
        }
        r
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The response for an error raised outside [`serve`] (e.g. by a platform
/// rate limiter in front of it): status, reason and CORS headers as always.
pub fn error_response(e: &Error) -> HttpResponse {
    HttpResponse::error(e)
}

/// Whether a request is a signalling call (the calls that rate limits count).
pub fn is_signalling(req: &HttpRequest) -> bool {
    matches!(req.method.to_ascii_uppercase().as_str(), "POST" | "DELETE")
}

/// Requests the optional per-client rate limit counts: signalling and `GET /turn`.
pub fn is_rate_limited(req: &HttpRequest) -> bool {
    is_signalling(req) || (req.method.eq_ignore_ascii_case("GET") && path(&req.url) == "/turn")
}

/// Everything a request is served with.
pub struct Services<'a, S, P> {
    /// `None` when the `BUCKET` binding is missing.
    pub store: Option<&'a S>,
    pub platform: &'a P,
    pub config: &'a Config,
    pub ledger: &'a QuotaLedger,
    pub isolate: &'a Isolate,
    pub policy: &'a RetryPolicy,
    /// Shown on the status page, e.g. the crate version.
    pub version: &'a str,
}

/// What the worker did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `status`, `preflight`, `poll`, `publish`, `leave`, or `refused` when
    /// the request failed before it could be parsed.
    pub op: &'static str,
    /// The room, as [`room_tag`]: logs never carry room ids (bearer secrets).
    pub room: Option<String>,
    pub ops: OpCounts,
    /// Live entries in the room after a signalling request.
    pub peers: Option<usize>,
    pub hint: Option<Hint>,
    /// An R2 failure met by the status page (for the owner's log only).
    pub r2_error: Option<String>,
}

impl Outcome {
    fn new(op: &'static str) -> Self {
        Self {
            op,
            ..Self::default()
        }
    }

    /// One structured log line (JSON), as `wrangler tail` shows it.
    pub fn log_line(&self, status: u16, duration_ms: u64) -> String {
        serde_json::json!({
            "op": self.op,
            "status": status,
            "room": self.room,
            "peers": self.peers,
            "r2": {"a": self.ops.class_a, "b": self.ops.class_b},
            "hint": self.hint.map(|h| h.mode.as_str()),
            "error": self.r2_error,
            "ms": duration_ms,
        })
        .to_string()
    }
}

/// The room's tag in log lines (64 bits, hex): it lets one follow a room
/// across log lines without writing its id down. A keyed hash (SipHash-1-3), so that a
/// guessable room id cannot be found by hashing candidates. With the
/// `LOG_KEY` secret the tags are stable across isolates and deploys;
/// without it each isolate uses a random key (tags group within an isolate).
pub fn room_tag(room: &RoomId, key: &[u8; 16]) -> String {
    use std::hash::Hasher as _;
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    h.write(room.as_str().as_bytes());
    format!("{:016x}", h.finish())
}

/// Turns the `LOG_KEY` secret into a 128-bit hash key.
pub fn derive_log_key(secret: &str) -> [u8; 16] {
    use std::hash::Hasher as _;
    let mut h =
        siphasher::sip128::SipHasher13::new_with_keys(0x7032_7063_662d_7273, 0x006c_6f67_2d6b_6579);
    h.write(secret.as_bytes());
    siphasher::sip128::Hasher128::finish128(&h).as_bytes()
}

/// What one isolate keeps between requests besides the quota tallies: the
/// last status-page probe of the bucket and its log key.
pub struct Isolate {
    probe: std::cell::RefCell<Option<(u64, BucketState)>>,
    log_key: [u8; 16],
    /// Credentials minted per minute, counted for the whole deployment.
    turn_ledger: QuotaLedger,
    /// How the last call to the TURN source went (for the status page).
    turn_last: std::cell::RefCell<Option<Result<(), &'static str>>>,
}

/// The status page reads R2 at most once this often per isolate.
pub const PROBE_EVERY_MS: u64 = 10_000;

impl Isolate {
    /// `random` seeds the isolate's own log key (used without `LOG_KEY`).
    pub fn new(random: [u8; 16]) -> Self {
        Self {
            probe: std::cell::RefCell::new(None),
            log_key: random,
            // A one-minute window: re-read and flush every 5 s or 5 credentials.
            turn_ledger: QuotaLedger::with_cadence(5, 5_000),
            turn_last: std::cell::RefCell::new(None),
        }
    }

    fn log_key<'a>(&'a self, config: &'a Config) -> &'a [u8; 16] {
        config.log_key.as_ref().unwrap_or(&self.log_key)
    }
}

/// Answers one request. Never fails: every error becomes a response with CORS headers.
pub async fn serve<S: Store, P: Platform>(
    req: &HttpRequest,
    svc: &Services<'_, S, P>,
) -> (HttpResponse, Outcome) {
    let method = req.method.to_ascii_uppercase();
    match method.as_str() {
        "GET" if path(&req.url) == "/turn" => {
            let mut outcome = Outcome::new("turn");
            let resp = match turn_credentials(req, svc, &mut outcome).await {
                Ok(resp) => resp,
                Err(e) => HttpResponse::error(&e),
            };
            (resp, outcome)
        }
        "GET" | "HEAD" => {
            let (mut resp, ops, r2_error) = status_page(req, svc).await;
            if method == "HEAD" {
                resp.body.clear();
            }
            let mut outcome = Outcome::new("status");
            outcome.ops = ops;
            outcome.r2_error = r2_error;
            (resp, outcome)
        }
        "OPTIONS" => match access(svc.config, req.header("origin")) {
            Ok(_) => (options(req), Outcome::new("preflight")),
            Err(e) => (HttpResponse::error(&e), Outcome::new("preflight")),
        },
        "POST" | "DELETE" => {
            let mut outcome = Outcome::new("refused");
            let Some(store) = svc.store else {
                return (HttpResponse::error(&Error::NoBucket), outcome);
            };
            let counting = Counting::new(store);
            let result = signal(req, &method, &counting, svc, &mut outcome).await;
            outcome.ops = counting.counts();
            let mut resp = match result {
                Ok(reply) => {
                    let mut resp = HttpResponse::json(reply.body);
                    if let Some(hint) = reply.hint {
                        resp.headers.push(("X-Poll-Hint", hint.header()));
                        resp.headers.push(("Server-Timing", hint.server_timing()));
                    }
                    outcome.peers = Some(reply.peers);
                    outcome.hint = reply.hint;
                    resp
                }
                Err(e) => HttpResponse::error(&e),
            };
            let ops = outcome.ops;
            resp.headers
                .push(("X-R2-Ops", format!("A={} B={}", ops.class_a, ops.class_b)));
            (resp, outcome)
        }
        _ => (
            HttpResponse::error(&Error::MethodNotAllowed),
            Outcome::new("refused"),
        ),
    }
}

async fn signal<S: Store, P: Platform>(
    req: &HttpRequest,
    method: &str,
    store: &Counting<'_, S>,
    svc: &Services<'_, S, P>,
    outcome: &mut Outcome,
) -> Result<Reply, Error> {
    if let Access::Metered { origin, quota } = access(svc.config, req.header("origin"))? {
        svc.ledger.admit(store, svc.platform, origin, quota).await?;
    }
    if !is_json(req.header("content-type")) {
        return Err(Error::UnsupportedMediaType);
    }
    let limits = &svc.config.limits;
    if req.body.len() > limits.max_body_bytes {
        return Err(Error::PayloadTooLarge("Request body too large"));
    }
    // The relay API for other WebRTC libraries; p2pcf answers on every other path.
    if path(&req.url) == RELAY_PATH {
        let request = crate::relay::parse(&req.body)?;
        outcome.room = Some(room_tag(&request.room, svc.isolate.log_key(svc.config)));
        outcome.op = "relay";
        return crate::relay::handle(store, svc.platform, svc.policy, svc.config, &request).await;
    }
    let leave = method == "DELETE"
        || req
            .header("x-worker-method")
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("DELETE"));
    let request = parse_request(&req.body, leave, limits)?;
    let room = match &request {
        Request::Poll { room, .. } | Request::Leave { room, .. } => room,
        Request::Publish(p) => &p.room,
    };
    outcome.room = Some(room_tag(room, svc.isolate.log_key(svc.config)));
    outcome.op = match request {
        Request::Poll { .. } => "poll",
        Request::Publish(_) => "publish",
        Request::Leave { .. } => "leave",
    };
    handle(store, svc.platform, svc.policy, svc.config, &request).await
}

/// The path of a request URL (`http://host/turn?x` -> `/turn`); `/` when empty.
fn path(url: &str) -> &str {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let from_path = if url.contains("://") {
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    } else {
        after_scheme
    };
    let path = from_path.split(['?', '#']).next().unwrap_or("/");
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// `GET /turn`: short-lived TURN credentials, under the same origin rules as
/// signalling and a per-deployment cap per minute.
async fn turn_credentials<S: Store, P: Platform>(
    req: &HttpRequest,
    svc: &Services<'_, S, P>,
    outcome: &mut Outcome,
) -> Result<HttpResponse, Error> {
    let Some(store) = svc.store else {
        return Err(Error::NoBucket);
    };
    let counting = Counting::new(store);
    let result = async {
        if let Access::Metered { origin, quota } = access(svc.config, req.header("origin"))? {
            svc.ledger
                .admit(&counting, svc.platform, origin, quota)
                .await?;
        }
        let settings = &svc.config.turn;
        if settings.source.is_none() {
            return Err(Error::TurnNotConfigured);
        }
        let now = svc.platform.now_ms();
        let minute = now / 60_000;
        svc.isolate
            .turn_ledger
            .admit_key(
                &counting,
                svc.platform,
                format!("turn/{minute}"),
                settings.max_per_minute,
            )
            .await
            .map_err(|_| Error::TurnCapReached {
                retry_after_s: (60 - (now / 1000) % 60) as u32,
            })?;
        let minted = crate::turn::mint(settings, svc.platform).await;
        *svc.isolate.turn_last.borrow_mut() = Some(match &minted {
            Ok(_) => Ok(()),
            Err(Error::TurnUpstream(why)) => Err(why),
            Err(_) => Err("unreachable"),
        });
        minted
    }
    .await;
    outcome.ops = counting.counts();
    let credentials = result?;
    let body = serde_json::to_vec(&credentials).unwrap_or_default();
    Ok(HttpResponse::json(body))
}

/// `application/json`, in any case, with optional parameters and whitespace.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mt| mt.trim().eq_ignore_ascii_case("application/json"))
}

fn options(req: &HttpRequest) -> HttpResponse {
    let mut resp = HttpResponse::new(204, None, Vec::new());
    match (
        req.header("origin"),
        req.header("access-control-request-method"),
        req.header("access-control-request-headers"),
    ) {
        (Some(_), Some(_), Some(headers)) => resp
            .headers
            .push(("Access-Control-Allow-Headers", headers.to_owned())),
        _ => resp
            .headers
            .push(("Allow", "GET, HEAD, POST, DELETE, OPTIONS".to_owned())),
    }
    resp
}

/// Reads one (absent) key to prove the bucket answers: 1 Class B operation.
async fn status_page<S: Store, P: Platform>(
    req: &HttpRequest,
    svc: &Services<'_, S, P>,
) -> (HttpResponse, OpCounts, Option<String>) {
    let mut r2_error = None;
    let now = svc.platform.now_ms();
    let cached = svc
        .isolate
        .probe
        .borrow()
        .clone()
        .filter(|(at, _)| now < at + PROBE_EVERY_MS)
        .map(|(_, state)| state);
    let (state, ops) = match (svc.store, cached) {
        (None, _) => (BucketState::Missing, OpCounts::default()),
        (Some(_), Some(state)) => (state, OpCounts::default()),
        (Some(store), None) => {
            let counting = Counting::new(store);
            // Strangers see only the kind of failure; the owner finds the
            // details in the log (`wrangler tail`).
            let state = match counting.get(status::PROBE_KEY).await {
                Ok(_) => BucketState::Working,
                Err(StoreError::RateLimited) => BucketState::Failing("R2 is rate limiting"),
                Err(StoreError::Unavailable(e)) => {
                    r2_error = Some(e);
                    BucketState::Failing("R2 did not answer")
                }
            };
            *svc.isolate.probe.borrow_mut() = Some((now, state.clone()));
            (state, counting.counts())
        }
    };
    let status = if state == BucketState::Working {
        200
    } else {
        503
    };
    // The worker's own address: the URL without path, query or fragment.
    let url = req
        .url
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('/');
    let turn_last = *svc.isolate.turn_last.borrow();
    let html = status::render(&state, svc.config, svc.version, url, turn_last);
    (
        HttpResponse::new(status, Some("text/html; charset=utf-8"), html.into_bytes()),
        ops,
        r2_error,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_json_without_room_ids() {
        let room = RoomId::parse("secret-room").unwrap();
        let outcome = Outcome {
            op: "poll",
            r2_error: None,
            room: Some(room_tag(&room, &[7; 16])),
            ops: OpCounts {
                class_a: 0,
                class_b: 1,
            },
            peers: Some(3),
            hint: None,
        };
        let line = outcome.log_line(200, 12);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["op"], "poll");
        assert_eq!(v["status"], 200);
        assert_eq!(v["peers"], 3);
        assert_eq!(v["r2"]["b"], 1);
        assert_eq!(v["ms"], 12);
        assert!(!line.contains("secret-room"));
        assert_eq!(v["room"].as_str().unwrap().len(), 16);
        assert_eq!(room_tag(&room, &[7; 16]), room_tag(&room, &[7; 16]));
        // Keyed: without the key the tag cannot be recomputed from a guess.
        assert_ne!(room_tag(&room, &[7; 16]), room_tag(&room, &[8; 16]));
        assert_ne!(derive_log_key("a"), derive_log_key("b"));
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json ",
            "Application/JSON; charset=utf-8",
            " application/json;charset=UTF-8",
        ] {
            assert!(is_json(Some(ok)), "{ok:?}");
        }
        for bad in [
            "text/plain",
            "application/jsonx",
            "",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json(Some(bad)), "{bad:?}");
        }
        assert!(!is_json(None));
    }
}
