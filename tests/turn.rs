//! `GET /turn`: short-lived TURN credentials from a shared secret (TURN REST
//! API) or from Cloudflare's TURN service (answered here by a stand-in that
//! checks the documented request), gated like signalling, never leaking a
//! secret. Real coturn and Chromium: tests/browser/turn.test.mjs.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use base64::Engine as _;
use common::Harness;
use hmac::{Hmac, Mac};
use p2pcf_rs::edge::HttpRequest;
use serde_json::{json, Value};

fn harness(vars: &[(&str, &str)]) -> Harness {
    Harness::with_vars(vars, 5)
}

fn get_turn(origin: Option<&str>) -> HttpRequest {
    let mut headers = Vec::new();
    if let Some(o) = origin {
        headers.push(("Origin".to_owned(), o.to_owned()));
    }
    HttpRequest {
        method: "GET".into(),
        url: "https://p2pcf.example.workers.dev/turn".into(),
        headers,
        body: Vec::new(),
    }
}

const REST: [(&str, &str); 3] = [
    (
        "TURN_URLS",
        "turn:127.0.0.1:3478?transport=udp, turns:turn.example:5349",
    ),
    ("TURN_SHARED_SECRET", "the-shared-secret"),
    ("TURN_TTL_S", "600"),
];

#[tokio::test(start_paused = true)]
async fn rest_api_credentials_verify_with_the_shared_secret() {
    let h = harness(&REST);
    let r = h.request(get_turn(None)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.response.header("cache-control"), Some("no-store"));
    let server = &r.body["iceServers"][0];
    assert_eq!(
        server["urls"],
        json!([
            "turn:127.0.0.1:3478?transport=udp",
            "turns:turn.example:5349"
        ])
    );
    let username = server["username"].as_str().unwrap();
    let (expiry, label) = username.split_once(':').unwrap();
    let expiry: u64 = expiry.parse().unwrap();
    assert_eq!(expiry, h.now() / 1000 + 600);
    assert_eq!(r.body["expiresAt"], json!(expiry * 1000));
    assert!(label.starts_with("p2pcf-"));
    // What a TURN server with the same secret computes.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"the-shared-secret").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(server["credential"], json!(expected));
    // Each request gets its own label.
    let again = h.request(get_turn(None)).await;
    assert_ne!(again.body["iceServers"][0]["username"], server["username"]);
    assert!(!r.text.contains("the-shared-secret"));
}

#[tokio::test(start_paused = true)]
async fn not_configured_is_a_404_that_says_how() {
    let h = Harness::new();
    let r = h.request(get_turn(None)).await;
    assert_eq!(r.status, 404);
    assert!(
        r.text.contains("TURN_URLS") && r.text.contains("CF_TURN_KEY_ID"),
        "{}",
        r.text
    );
    assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
    // Preflight works on /turn as everywhere.
    let mut preflight = get_turn(Some("https://app.example"));
    preflight.method = "OPTIONS".into();
    preflight
        .headers
        .push(("Access-Control-Request-Method".into(), "GET".into()));
    preflight.headers.push((
        "Access-Control-Request-Headers".into(),
        "content-type".into(),
    ));
    assert_eq!(h.request(preflight).await.status, 204);
}

/// What the stand-in for Cloudflare saw.
#[derive(Default, Debug)]
struct Seen {
    calls: Vec<(String, String, Value)>,
}

fn cloudflare(h: &Harness, answer: (u16, &'static str)) -> Rc<RefCell<Seen>> {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let log = seen.clone();
    h.platform.set_outbound(Box::new(move |url, bearer, body| {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        log.borrow_mut()
            .calls
            .push((url.to_owned(), bearer.to_owned(), body));
        Ok((answer.0, answer.1.as_bytes().to_vec()))
    }));
    seen
}

const CF: [(&str, &str); 4] = [
    ("CF_TURN_KEY_ID", "0123456789abcdef"),
    ("CF_TURN_KEY_API_TOKEN", "the-key-api-token"),
    ("CF_TURN_API_BASE", "http://127.0.0.1:9/"),
    ("TURN_TTL_S", "900"),
];

const CF_ANSWER: &str = r#"{"iceServers":[{"urls":["stun:stun.cloudflare.com:3478","stun:stun.cloudflare.com:53"]},{"urls":["turn:turn.cloudflare.com:3478?transport=udp","turn:turn.cloudflare.com:53?transport=udp","turn:turn.cloudflare.com:3478?transport=tcp","turns:turn.cloudflare.com:5349?transport=tcp","turns:turn.cloudflare.com:443?transport=tcp"],"username":"cf-user","credential":"cf-credential"}]}"#;

#[tokio::test(start_paused = true)]
async fn cloudflare_is_asked_as_documented_and_port_53_is_dropped() {
    let h = harness(&CF);
    let seen = cloudflare(&h, (201, CF_ANSWER));
    let r = h.request(get_turn(None)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let calls = &seen.borrow().calls;
    assert_eq!(calls.len(), 1);
    let (url, bearer, body) = &calls[0];
    assert_eq!(
        url,
        "http://127.0.0.1:9/v1/turn/keys/0123456789abcdef/credentials/generate-ice-servers"
    );
    assert_eq!(bearer, "the-key-api-token");
    assert_eq!(body, &json!({"ttl": 900}));
    let servers = r.body["iceServers"].as_array().unwrap();
    let urls: Vec<&str> = servers
        .iter()
        .flat_map(|s| s["urls"].as_array().unwrap())
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        urls.iter()
            .all(|u| !u.contains(":53?") && !u.ends_with(":53")),
        "{urls:?}"
    );
    assert_eq!(urls.len(), 5);
    assert_eq!(servers[1]["username"], "cf-user");
    assert_eq!(r.body["expiresAt"], json!(h.now() + 900_000));
}

#[tokio::test(start_paused = true)]
async fn cloudflare_failures_are_502_or_503_never_an_empty_success() {
    for (answer, status, text) in [
        (
            (401, r#"{"error":"unauthorized"}"#),
            502,
            "The TURN service did not give credentials: the TURN key or its token was refused",
        ),
        (
            (404, "not found"),
            502,
            "The TURN service did not give credentials: no such TURN key",
        ),
        (
            (201, r#"{"iceServers":[]}"#),
            502,
            "The TURN service did not give credentials: no usable iceServers",
        ),
        (
            (200, "<html>oops</html>"),
            502,
            "The TURN service did not give credentials: an answer without iceServers",
        ),
        (
            (500, "internal"),
            503,
            "The TURN service could not be reached; retry later",
        ),
    ] {
        let h = harness(&CF);
        cloudflare(&h, answer);
        let r = h.request(get_turn(None)).await;
        assert_eq!((r.status, r.text.as_str()), (status, text));
        assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
        assert!(!r.text.contains("the-key-api-token"));
    }
    // Unreachable: the simulation has no network.
    let h = harness(&CF);
    let r = h.request(get_turn(None)).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.response.header("retry-after"), Some("10"));
    // The status page says which kind is configured and that the last call failed.
    let page = h
        .request(HttpRequest {
            method: "GET".into(),
            ..Default::default()
        })
        .await;
    assert!(
        page.text.contains("Cloudflare TURN") && page.text.contains("failed (unreachable)"),
        "{}",
        page.text
    );
    assert!(!page.text.contains("the-key-api-token") && !page.text.contains("0123456789abcdef"));
}

#[tokio::test(start_paused = true)]
async fn origins_quota_and_the_per_minute_cap_gate_credentials() {
    let mut vars = REST.to_vec();
    vars.push(("ALLOWED_ORIGINS", "https://app.example"));
    vars.push(("TURN_MAX_PER_MINUTE", "3"));
    let h = harness(&vars);
    assert_eq!(
        h.request(get_turn(Some("https://evil.example")))
            .await
            .status,
        401
    );
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..5 {
            v.push(
                h.request(get_turn(Some("https://app.example")))
                    .await
                    .status,
            );
        }
        v
    };
    assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
    let r = h.request(get_turn(None)).await;
    assert_eq!(r.text, "Too many TURN credentials this minute; retry later");
    let wait: u64 = r.response.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    tokio::time::advance(std::time::Duration::from_secs(wait)).await;
    assert_eq!(h.request(get_turn(None)).await.status, 200, "a new minute");
    // Over an origin's monthly quota, as for signalling.
    let mut vars = REST.to_vec();
    vars.push(("ORIGIN_QUOTA", "2"));
    let h = harness(&vars);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            h.request(get_turn(Some("https://busy.example")))
                .await
                .status,
        );
    }
    assert_eq!(statuses, vec![200, 200, 429]);
}

#[tokio::test(start_paused = true)]
async fn secrets_stay_out_of_the_status_page_and_logs() {
    let h = harness(&REST);
    let r = h.request(get_turn(None)).await;
    let line = r.outcome.log_line(r.status, 1);
    assert_eq!(r.outcome.op, "turn");
    for text in [&line, &r.text] {
        assert!(!text.contains("the-shared-secret"));
    }
    let page = h
        .request(HttpRequest {
            method: "GET".into(),
            ..Default::default()
        })
        .await;
    assert!(page.text.contains("TURN REST API"), "{}", page.text);
    assert!(page.text.contains("last call: worked"));
    assert!(!page.text.contains("the-shared-secret"));
}
