//! Every validation rule, the error responses, preflight, the status page and
//! the origin rules, through the worker's HTTP layer (in-memory R2).

mod common;

use common::{post, Harness, Peer, FINGERPRINT};
use p2pcf_rs::config::Config;
use p2pcf_rs::edge::HttpRequest;
use serde_json::{json, Value};

fn assert_cors(r: &common::Reply) {
    assert_eq!(
        r.response.header("access-control-allow-origin"),
        Some("*"),
        "CORS on {} {}",
        r.status,
        r.text
    );
    assert!(r.response.header("access-control-allow-methods").is_some());
}

async fn expect_400(h: &Harness, body: Value, reason: &str) {
    let before = h.worker.store.stats().writes;
    let r = h.post(&body).await;
    assert_eq!((r.status, r.text.as_str()), (400, reason), "body: {body}");
    assert_cors(&r);
    assert_eq!(
        r.response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(
        h.worker.store.stats().writes,
        before,
        "a refused request stores nothing"
    );
}

#[tokio::test(start_paused = true)]
async fn every_validation_rule_is_a_400_with_its_reason() {
    let h = Harness::new();
    let p = Peer::new("room-valid", 1);
    let now = h.now();
    let good = p.publish(now, json!([]));
    assert_eq!(h.post(&good).await.status, 200);

    let with = |field: &str, value: Value| {
        let mut b = good.clone();
        b[field] = value;
        b
    };
    let with_d = |i: usize, value: Value| {
        let mut b = good.clone();
        b["d"][i] = value;
        b
    };
    let without = |field: &str| {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(field);
        b
    };

    // Room id: 4..64 of [A-Za-z0-9_-].
    for bad in [
        json!("abc"),
        json!("a".repeat(65)),
        json!("room/one"),
        json!("room one"),
        json!("..%2F"),
        json!("rüüm"),
        json!(12345),
        json!(null),
    ] {
        expect_400(&h, with("r", bad), "Bad room id").await;
    }
    expect_400(&h, without("r"), "Bad room id").await;
    assert_eq!(h.post(&with("r", json!("a".repeat(64)))).await.status, 200);
    assert_eq!(h.post(&with("r", json!("Ab_-9"))).await.status, 200);

    // Context id: 1..64.
    for bad in [json!(""), json!("k".repeat(65)), json!(7), json!(null)] {
        expect_400(&h, with("k", bad), "Bad context id").await;
    }
    expect_400(&h, without("k"), "Bad context id").await;

    // Expiration: a number in (0, 24 h].
    for bad in [
        json!(0),
        json!(-1),
        json!(86_400_001),
        json!("120000"),
        json!(null),
    ] {
        expect_400(&h, with("x", bad), "Bad expiration").await;
    }
    // Timestamp: any finite number of ms from 0 to 2^53 (the client's own
    // clock, however far off: expiry is the worker's clock).
    for bad in [json!(-1), json!(1e16), json!("now"), json!(null)] {
        expect_400(&h, with("t", bad), "Bad timestamp").await;
    }
    for skewed in [
        h.now() - 605_000,
        h.now() + 605_000,
        h.now() - 3 * 3_600_000,
    ] {
        assert_eq!(h.post(&with("t", json!(skewed))).await.status, 200);
    }

    // d: an array of exactly six.
    expect_400(&h, with("d", json!("data")), "Bad data").await;
    expect_400(&h, with("d", json!([1, 2, 3])), "Bad data length").await;
    let mut seven = good["d"].clone();
    seven.as_array_mut().unwrap().push(json!(1));
    expect_400(&h, with("d", seven), "Bad data length").await;
    for bad in [json!(""), json!("s".repeat(65)), json!(5)] {
        expect_400(&h, with_d(0, bad), "Bad session id").await;
    }
    for bad in [json!(""), json!("c".repeat(65)), json!(false)] {
        expect_400(&h, with_d(1, bad), "Bad client id").await;
    }
    for bad in [json!("false"), json!(0), json!(null)] {
        expect_400(&h, with_d(2, bad), "Bad is symmetric").await;
    }
    for bad in [
        json!(&FINGERPRINT[..43]),
        json!(format!("{FINGERPRINT}A")),
        json!("!".repeat(44)),
        json!(44),
    ] {
        expect_400(&h, with_d(3, bad), "Bad dtls fingerprint").await;
    }
    for bad in [json!(0), json!("1"), json!(null)] {
        expect_400(&h, with_d(4, bad), "Bad joined at timestamp").await;
    }
    for bad in [
        json!("1.2.3.4"),
        json!(["1.2.3"]),
        json!(["256.1.1.1"]),
        json!(["::g"]),
        json!([7]),
        json!(null),
    ] {
        expect_400(&h, with_d(5, bad), "Bad reflexive IPs").await;
    }
    for ok in [
        json!([]),
        json!(["198.51.100.1", "2001:db8::1", "fe80::1%eth0"]),
    ] {
        assert_eq!(h.post(&with_d(5, ok)).await.status, 200);
    }

    // Packages: an array of arrays, each starting with a session id.
    for bad in [json!("p"), json!({"a": 1}), json!(7)] {
        expect_400(&h, with("p", bad), "Bad packages").await;
    }
    for bad in [
        json!([1]),
        json!([[]]),
        json!([[5, "x"]]),
        json!([["s".repeat(65)]]),
        json!([[null]]),
    ] {
        expect_400(&h, with("p", bad), "Bad package").await;
    }
    // Issue 9 §4: element 1 (sender) must be the publisher's own session.
    for bad in [
        json!([["peer"]]),
        json!([["peer", null]]),
        json!([["peer", "someone-else", null, null, null, "u", "p", 1, []]]),
        json!([["peer", "session-1x", null, null, null, "u", "p", 1, []]]),
    ] {
        expect_400(&h, with("p", bad), "Package sender is not this session").await;
    }
    // Issue 9 §5: a few reflexive IPs, not hundreds.
    let many: Vec<String> = (0..9).map(|i| format!("198.51.100.{i}")).collect();
    expect_400(&h, with_d(5, json!(many)), "Too many reflexive IPs").await;

    // Not JSON, or not an object.
    for raw in [&b"{"[..], b"not json", b"", b"[1,2]", b"\"r\""] {
        let mut req = post(&json!({}));
        req.body = raw.to_vec();
        let r = h.request(req).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert_cors(&r);
    }
    // Duplicated keys are refused rather than silently resolved.
    let mut req = post(&json!({}));
    req.body = br#"{"r":"room-valid","r":"room-other","k":"x"}"#.to_vec();
    assert_eq!(h.request(req).await.status, 400);
}

#[tokio::test(start_paused = true)]
async fn methods_content_types_and_preflight() {
    let h = Harness::new();
    let body = Peer::new("room-http", 1).first_poll();

    // Content type: application/json with any case, parameters, whitespace.
    for ct in [
        "application/json",
        "application/json ",
        "APPLICATION/JSON; charset=utf-8",
    ] {
        let mut req = post(&body);
        req.headers = vec![("content-type".into(), ct.into())];
        assert_eq!(h.request(req).await.status, 200, "{ct:?}");
    }
    for headers in [
        vec![],
        vec![("Content-Type".to_owned(), "text/plain".to_owned())],
    ] {
        let mut req = post(&body);
        req.headers = headers;
        let r = h.request(req).await;
        assert_eq!(
            (r.status, r.text.as_str()),
            (415, "Expected content-type application/json")
        );
        assert_cors(&r);
    }

    // Unknown method: 405 with Allow, and CORS.
    let r = h
        .request(HttpRequest {
            method: "PUT".into(),
            ..post(&body)
        })
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.response.header("allow"),
        Some("GET,HEAD,POST,DELETE,OPTIONS")
    );
    assert_cors(&r);

    // CORS preflight echoes the requested headers.
    let r = h
        .request(HttpRequest {
            method: "OPTIONS".into(),
            url: String::new(),
            headers: vec![
                ("Origin".into(), "https://app.test".into()),
                ("Access-Control-Request-Method".into(), "POST".into()),
                (
                    "Access-Control-Request-Headers".into(),
                    "content-type,x-worker-method".into(),
                ),
            ],
            body: vec![],
        })
        .await;
    assert!((200..300).contains(&r.status));
    assert_eq!(
        r.response.header("access-control-allow-headers"),
        Some("content-type,x-worker-method")
    );
    assert_eq!(r.response.header("access-control-max-age"), Some("86400"));
    assert_eq!(
        r.response.header("access-control-allow-methods"),
        Some("GET,HEAD,POST,DELETE,OPTIONS")
    );
    // A plain OPTIONS gets an Allow header.
    let r = h
        .request(HttpRequest {
            method: "OPTIONS".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        r.response.header("allow"),
        Some("GET, HEAD, POST, DELETE, OPTIONS")
    );

    // Oversized bodies: 413.
    let mut req = post(&body);
    req.body = vec![b' '; p2pcf_rs::engine::limits::Limits::default().max_body_bytes + 1];
    assert_eq!(h.request(req).await.status, 413);
}

#[tokio::test(start_paused = true)]
async fn status_page_reports_the_bucket() {
    let h = Harness::new();
    let r = h
        .request(HttpRequest {
            method: "GET".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("R2 bucket is configured and answering"),
        "{}",
        r.text
    );
    assert_eq!(
        r.response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(
        (r.outcome.ops.class_a, r.outcome.ops.class_b),
        (0, 1),
        "one real R2 read"
    );
    // Issue 9 §6: not a free R2-read amplifier: the probe is cached 10 s.
    let get = || HttpRequest {
        method: "GET".into(),
        ..Default::default()
    };
    assert_eq!(h.request(get()).await.outcome.ops.class_b, 0);
    tokio::time::advance(std::time::Duration::from_secs(10)).await;
    assert_eq!(h.request(get()).await.outcome.ops.class_b, 1);
}

/// Issue 9 §6: strangers learn neither the allowed origins nor R2's raw
/// errors from the status page; the owner's log has the error.
#[tokio::test(start_paused = true)]
async fn status_page_keeps_origins_and_raw_errors_to_itself() {
    use p2pcf_rs::store::memory::{Fault, Operation};
    let config = Config::from_vars(|n| match n {
        "ALLOWED_ORIGINS" => Some("https://private-app.example, https://other.example".into()),
        "LOG_KEY" => Some("a secret of the owner".into()),
        _ => None,
    });
    let h = Harness::with_config(config, 10);
    h.worker
        .store
        .inject(Operation::Get, Fault::Unavailable, u32::MAX);
    let r = h
        .request(HttpRequest {
            method: "GET".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(r.status, 503);
    assert!(r.text.contains("R2 did not answer"), "{}", r.text);
    assert!(r.text.contains("2 origins listed"), "{}", r.text);
    for secret in ["private-app", "injected fault", "a secret of the owner"] {
        assert!(!r.text.contains(secret), "the page shows {secret}");
    }
    assert_eq!(r.outcome.r2_error.as_deref(), Some("injected fault"));
}

#[tokio::test(start_paused = true)]
async fn missing_bucket_is_explained() {
    use p2pcf_rs::edge::{serve, Services};
    use p2pcf_rs::store::memory::MemoryStore;
    let h = Harness::new();
    let services: Services<'_, MemoryStore<&common::SimPlatform>, _> = Services {
        store: None,
        platform: h.platform,
        config: &h.worker.config,
        ledger: &h.worker.ledger,
        isolate: &p2pcf_rs::edge::Isolate::new([7; 16]),
        policy: &h.worker.policy,
        version: "test",
    };
    let (page, _) = serve(
        &HttpRequest {
            method: "GET".into(),
            ..Default::default()
        },
        &services,
    )
    .await;
    let text = String::from_utf8(page.body).unwrap();
    assert_eq!(page.status, 503);
    assert!(
        text.contains("No R2 bucket is bound") && text.contains("wrangler r2 bucket create"),
        "{text}"
    );
    let (r, _) = serve(&post(&Peer::new("room-x", 1).first_poll()), &services).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

fn from_origin(body: &Value, origin: &str) -> HttpRequest {
    let mut req = post(body);
    req.headers.push(("Origin".into(), origin.into()));
    req
}

#[tokio::test(start_paused = true)]
async fn allowed_origins_and_quota() {
    let config = Config::from_vars(|n| match n {
        "ALLOWED_ORIGINS" => Some("https://good.test".into()),
        _ => None,
    });
    let h = Harness::with_config(config, 10);
    let body = Peer::new("room-origin", 1).first_poll();
    assert_eq!(
        h.request(from_origin(&body, "https://good.test"))
            .await
            .status,
        200
    );
    let r = h.request(from_origin(&body, "https://evil.test")).await;
    assert_eq!((r.status, r.text.as_str()), (401, "Unauthorized origin"));
    assert_cors(&r);
    // No Origin header: not a browser, not checked (as the original).
    assert_eq!(h.post(&body).await.status, 200);

    let config = Config::from_vars(|n| (n == "ORIGIN_QUOTA").then(|| "25".into()));
    let h = Harness::with_config(config, 10);
    for i in 0..25 {
        let r = h.request(from_origin(&body, "https://busy.test")).await;
        assert_eq!(r.status, 200, "request {i} is within quota");
    }
    let r = h.request(from_origin(&body, "https://busy.test")).await;
    assert_eq!((r.status, r.text.as_str()), (429, "Origin over quota"));
    assert_cors(&r);
    assert_eq!(
        h.request(from_origin(&body, "https://other.test"))
            .await
            .status,
        200,
        "quotas are per origin"
    );
    let stats = h.worker.store.stats();
    println!(
        "27 metered requests: {} class A, {} class B (room reads included)",
        stats.class_a, stats.class_b
    );
    assert!(
        stats.class_a <= 3,
        "the count is flushed in batches, not per request"
    );
}

/// Issue 9 §5: a stream of made-up origins cannot grow an isolate's memory.
#[tokio::test(start_paused = true)]
async fn origin_tallies_stay_bounded() {
    let config = Config::from_vars(|n| (n == "ORIGIN_QUOTA").then(|| "1000".into()));
    let h = Harness::with_config(config, 0);
    let body = Peer::new("room-tally", 1).first_poll();
    for i in 0..(p2pcf_rs::edge::access::MAX_TALLIES + 50) {
        let r = h
            .request(from_origin(&body, &format!("https://made-up-{i}.example")))
            .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        h.worker.ledger.tracked(),
        p2pcf_rs::edge::access::MAX_TALLIES
    );
}
