//! Routing: each request goes to the status page, a preflight, `GET /turn`
//! or one wire protocol, after the origin rules, the content type, the body
//! size and the room rules. Never fails: every [`Error`] becomes a response
//! with CORS headers ([`HttpResponse::error`]).

use crate::config::Config;
use crate::domain::RoomId;
use crate::edge::access::{access, Access, QuotaLedger};
use crate::edge::isolate::{room_tag, Isolate, Outcome, PROBE_EVERY_MS};
use crate::edge::responses::{options, HttpRequest, HttpResponse};
use crate::edge::rooms;
use crate::edge::status::{self, BucketState};
use crate::engine::hints::Hint;
use crate::error::Error;
use crate::host::r2::RetryPolicy;
use crate::platform::{Boxed, Platform};
use crate::store::{Counting, OpCounts, Store, StoreError};
use crate::wire::p2pcf::{self, parse_request, Request};
use crate::wire::peerjs;
use crate::wire::y_webrtc::Y_WEBRTC_PATH;
use crate::wire::{query, relay, Reply};

/// Where the relay API (v1) answers.
pub const RELAY_PATH: &str = "/relay/v1";

/// Where an admitted WebSocket goes: a relay room's object, a y-webrtc
/// namespace's or a PeerJS key's.
#[derive(Debug, PartialEq)]
pub enum SocketPlace {
    Relay(RoomId),
    YWebrtc(RoomId),
    PeerJs(RoomId),
}

/// A WebSocket upgrade (the relay's push transport, or y-webrtc's
/// signalling): the same origin rules, quota and room rules as a
/// signalling call, decided before the socket is handed to its object.
pub async fn admit_socket<S: Store, P: Platform>(
    req: &HttpRequest,
    svc: &Services<'_, S, P>,
) -> Result<SocketPlace, Error> {
    let place = socket_place(path(&req.url), &req.url)?;
    if let Access::Metered { origin, quota } = access(svc.config, req.header("origin"))? {
        let store = svc.store.ok_or(Error::NoBucket)?;
        let counting = Counting::new(store);
        svc.ledger
            .admit(&counting, svc.platform, origin, quota)
            .await?;
    }
    let (SocketPlace::Relay(room) | SocketPlace::YWebrtc(room) | SocketPlace::PeerJs(room)) =
        &place;
    rooms::settings_for(room, svc.config, svc.platform.now_ms())?;
    Ok(place)
}

/// The place a socket's path names: `/relay/v1?room=<room>`,
/// `/y-webrtc/<namespace>` (`/y-webrtc` alone: `default`), or
/// `/peerjs/peerjs?key=<key>&id=<id>&token=<token>` (`/peerjs?...` too).
fn socket_place(path: &str, url: &str) -> Result<SocketPlace, Error> {
    if path == RELAY_PATH {
        let room = RoomId::parse(query(url, "room").unwrap_or_default())?;
        return Ok(SocketPlace::Relay(room));
    }
    if peerjs::is_socket_path(path) {
        return Ok(SocketPlace::PeerJs(peerjs::connect(url)?.key));
    }
    let namespace = match path.strip_prefix(Y_WEBRTC_PATH) {
        Some("" | "/") => "default",
        Some(rest) => rest.strip_prefix('/').unwrap_or(""),
        None => {
            return Err(Error::BadRequest(
                "WebSocket upgrades go to /relay/v1, /y-webrtc/<namespace> or /peerjs/peerjs",
            ))
        }
    };
    Ok(SocketPlace::YWebrtc(RoomId::parse(namespace)?))
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

/// Answers one request. Never fails: every error becomes a response with CORS headers.
pub async fn serve<S: Store, P: Platform>(
    req: &HttpRequest,
    svc: &Services<'_, S, P>,
) -> (HttpResponse, Outcome) {
    let method = req.method.to_ascii_uppercase();
    match method.as_str() {
        "GET" if path(&req.url) == "/turn" => {
            let mut outcome = Outcome::new("turn");
            let resp = match boxed(turn_credentials(req, svc, &mut outcome)).await {
                Ok(resp) => resp,
                Err(e) => HttpResponse::error(&e),
            };
            (resp, outcome)
        }
        "GET" if peerjs::http_call(path(&req.url)).is_some() => {
            let resp = peerjs_http(req, svc).unwrap_or_else(|e| HttpResponse::error(&e));
            (resp, Outcome::new("peerjs"))
        }
        "GET" | "HEAD" => {
            let (mut resp, ops, r2_error) = boxed(status_page(req, svc)).await;
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
            let result = boxed(signal(req, &method, &counting, svc, &mut outcome)).await;
            outcome.ops = counting.counts();
            let mut resp = match result {
                Ok(reply) if reply.status != 200 => {
                    let mut resp = HttpResponse::new(
                        reply.status,
                        Some("text/plain; charset=utf-8"),
                        reply.body,
                    );
                    if let Some(after) = reply.retry_after {
                        resp.headers.push(("Retry-After", after));
                    }
                    resp
                }
                Ok(reply) => {
                    let mut resp = HttpResponse::json(reply.body);
                    if let Some(hint) = reply.hint {
                        resp.headers.push(("X-Poll-Hint", hint.header()));
                        resp.headers.push(("Server-Timing", hint.server_timing()));
                    }
                    outcome.peers = Some(reply.members);
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
        let request = relay::parse(&req.body)?;
        outcome.room = Some(room_tag(&request.room, svc.isolate.log_key(svc.config)));
        outcome.op = "relay";
        let config = rooms::settings_for(&request.room, svc.config, svc.platform.now_ms())?;
        if svc.platform.has_room_objects() {
            return boxed(on_object(&request.room, &req.body, svc.platform)).await;
        }
        return boxed(relay::handle(
            store,
            svc.platform,
            svc.policy,
            &config,
            &request,
        ))
        .await;
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
    // Before any room read: a refused id costs no R2 operation.
    let config = rooms::settings_for(room, svc.config, svc.platform.now_ms())?;
    boxed(p2pcf::handle(
        store,
        svc.platform,
        svc.policy,
        &config,
        &request,
    ))
    .await
}

/// A relay call for a room that lives on its object: the object runs it
/// and answers (its refusals too).
async fn on_object<P: Platform>(room: &RoomId, body: &[u8], platform: &P) -> Result<Reply, Error> {
    let answer = platform
        .call_room(room.as_str(), body)
        .await
        .map_err(|_| Error::Busy {
            retry_after_s: 1,
            stored: "the room did not answer; retry with the same seq (a message is stored once)",
        })?;
    Ok(Reply {
        status: answer.status,
        retry_after: answer.header("retry-after").map(str::to_owned),
        hint: answer.header("x-poll-hint").and_then(Hint::parse_header),
        members: answer
            .header("x-members")
            .and_then(|m| m.parse().ok())
            .unwrap_or(0),
        body: answer.body,
    })
}

/// Boxes a future (see [`Boxed`]).
fn boxed<'a, T>(f: impl std::future::Future<Output = T> + 'a) -> Boxed<'a, T> {
    Box::pin(f)
}

/// The path of a request URL (`http://host/turn?x` -> `/turn`); `/` when empty.
pub fn path(url: &str) -> &str {
    // (Found bytewise: a `&str` pattern brings the two-way searcher, 1 KB gzip.)
    let scheme_end = url.as_bytes().windows(3).position(|w| w == b"://");
    let from_path = match scheme_end {
        Some(i) => {
            let after_scheme = url.get(i + 3..).unwrap_or_default();
            let path_at = after_scheme.find('/');
            path_at.and_then(|i| after_scheme.get(i..)).unwrap_or("/")
        }
        None => url,
    };
    let path = from_path.split(['?', '#']).next().unwrap_or("/");
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

/// PeerJS's HTTP calls: a fresh id (a random UUID: nothing to look up,
/// the Durable Object is not asked), or the peer list, which is not given
/// out. The origin rules and the key's room rules hold as for its socket.
fn peerjs_http<S, P: Platform>(
    req: &HttpRequest,
    svc: &Services<'_, S, P>,
) -> Result<HttpResponse, Error> {
    access(svc.config, req.header("origin"))?;
    match peerjs::http_call(path(&req.url)) {
        Some(Ok(peerjs::HttpCall::NewId(key))) => {
            rooms::settings_for(&key, svc.config, svc.platform.now_ms())?;
            let mut bytes = [0u8; 16];
            svc.platform.fill_random(&mut bytes);
            let id = peerjs::new_id(bytes).into_bytes();
            Ok(HttpResponse::new(
                200,
                Some("text/plain; charset=utf-8"),
                id,
            ))
        }
        Some(Ok(peerjs::HttpCall::Peers)) => Err(Error::Forbidden(
            "Peer discovery is off: PeerJS peers are not listed",
        )),
        Some(Err(e)) => Err(e),
        None => Err(Error::NotFound),
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
        let room = turn_proof(req, svc)?;
        let now = svc.platform.now_ms();
        let minute = now / 60_000;
        let capped = |_| Error::TurnCapReached {
            retry_after_s: (60 - (now / 1000) % 60) as u32,
        };
        let ledger = &svc.isolate.turn_ledger;
        if let Some(room) = room {
            let key = format!("turn/{minute}/{room}");
            let cap = settings.max_per_room_per_minute;
            ledger
                .admit_key(&counting, svc.platform, key, cap)
                .await
                .map_err(capped)?;
        }
        let key = format!("turn/{minute}");
        ledger
            .admit_key(&counting, svc.platform, key, settings.max_per_minute)
            .await
            .map_err(capped)?;
        let minted = crate::edge::turn::mint(settings, svc.platform).await;
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
    let body = crate::json::to_vec(&credentials);
    Ok(HttpResponse::json(body))
}

/// With signed rooms, credentials go only to callers that show a signed,
/// unexpired room id (header `X-Room`), checked before anything is counted.
/// Returns the room, whose own cap then applies.
fn turn_proof<S, P: Platform>(
    req: &HttpRequest,
    svc: &Services<'_, S, P>,
) -> Result<Option<RoomId>, Error> {
    let secrets = &svc.config.room_secrets;
    if secrets.is_empty() {
        return Ok(None);
    }
    let room = req
        .header("x-room")
        .and_then(|r| RoomId::parse(r.trim()).ok())
        .ok_or(Error::Forbidden(
            "TURN needs a signed room id in the X-Room header on this deployment",
        ))?;
    rooms::admit(&room, secrets, svc.platform.now_ms())?;
    Ok(Some(room))
}

/// `application/json`, in any case, with optional parameters and whitespace.
fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mt| mt.trim().eq_ignore_ascii_case("application/json"))
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
    let self_test = rooms::self_test_room(&svc.config.room_secrets, svc.platform);
    let page = status::Page {
        version: svc.version,
        url,
        turn_last,
        self_test_room: self_test.as_ref().map(RoomId::as_str),
        room_objects: svc.platform.has_room_objects(),
        socket_objects: svc.platform.socket_objects(),
    };
    let html = status::render(&state, svc.config, &page);
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
    fn the_path_of_a_url() {
        for (url, expected) in [
            ("http://host/turn?x=1", "/turn"),
            ("https://host", "/"),
            ("https://host/", "/"),
            ("https://host/relay/v1/#frag", "/relay/v1"),
            ("/y-webrtc/ns?room=1", "/y-webrtc/ns"),
            ("", "/"),
        ] {
            assert_eq!(path(url), expected, "{url}");
        }
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

    #[test]
    fn a_socket_path_names_its_place() {
        let place = |url: &str| socket_place(path(url), url);
        let room = |r: &str| RoomId::parse(r).unwrap();
        assert_eq!(
            place("https://w.dev/relay/v1?room=abcd"),
            Ok(SocketPlace::Relay(room("abcd")))
        );
        for url in ["https://w.dev/y-webrtc", "https://w.dev/y-webrtc/"] {
            assert_eq!(place(url), Ok(SocketPlace::YWebrtc(room("default"))));
        }
        assert_eq!(
            place("https://w.dev/y-webrtc/my-app?x=1"),
            Ok(SocketPlace::YWebrtc(room("my-app")))
        );
        for url in [
            "https://w.dev/peerjs?key=peerjs&id=a&token=t",
            "https://w.dev/peerjs/peerjs?key=peerjs&id=a&token=t&version=1.5.5",
        ] {
            assert_eq!(place(url), Ok(SocketPlace::PeerJs(room("peerjs"))));
        }
        for bad in [
            "https://w.dev/peerjs/peerjs?key=peerjs&id=a",
            "https://w.dev/peerjs/peerjs?key=abc&id=a&token=t",
            "https://w.dev/y-webrtc/a/b",
            "https://w.dev/y-webrtcx",
            "https://w.dev/relay/v1",
            "https://w.dev/",
        ] {
            assert!(place(bad).is_err(), "{bad}");
        }
    }
}
