//! Security properties, each with a test (see SECURITY.md).

mod common;

use common::{post, sessions, Harness, Peer};
use p2pcf_rs::config::Config;
use p2pcf_rs::edge::HttpRequest;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn packages_reach_only_the_addressed_session_in_the_same_room() {
    let h = Harness::new();
    let (a, b, c) = (
        Peer::new("room-sec", 1),
        Peer::new("room-sec", 2),
        Peer::new("room-sec", 3),
    );
    let t = h.now();
    for p in [&a, &b, &c] {
        h.post(&p.publish(t, json!([]))).await;
    }
    let for_b = a.package_to(&b, t);
    h.post(&a.publish(t + 1, json!([for_b]))).await;
    assert_eq!(h.post(&b.poll(t)).await.body["pk"], json!([for_b]));
    assert_eq!(
        h.post(&c.poll(t)).await.body["pk"],
        json!([]),
        "not to another member"
    );
    // A peer of another room that happens to use b's session id gets nothing.
    let mut twin = b.clone();
    twin.room = "room-elsewhere".into();
    twin.context = "ctx-twin".into();
    h.post(&twin.publish(t, json!([]))).await;
    let r = h.post(&twin.poll(t)).await;
    assert_eq!(
        (r.body["ps"].clone(), r.body["pk"].clone()),
        (json!([]), json!([])),
        "nothing crosses rooms"
    );
}

#[tokio::test(start_paused = true)]
async fn claiming_another_members_session_id_gets_nothing() {
    let h = Harness::new();
    let (a, b) = (Peer::new("room-claim", 1), Peer::new("room-claim", 2));
    let t = h.now();
    h.post(&a.publish(t, json!([]))).await;
    h.post(&b.publish(t, json!([]))).await;
    h.post(&a.publish(t + 1, json!([a.package_to(&b, t)])))
        .await;
    // Mallory, in the room under her own context, claims b's session id.
    let mut mallory = b.clone();
    mallory.context = "ctx-mallory".into();
    let r = h.post(&mallory.publish(t, json!([]))).await;
    assert_eq!((r.status, r.text.as_str()), (400, "Session id in use"));
    // Polling with b's session but without b's entry yields no packages.
    assert_eq!(h.post(&mallory.poll(t)).await.body["pk"], json!([]));
    assert_eq!(
        h.post(&b.poll(t)).await.body["pk"].as_array().map(Vec::len),
        Some(1)
    );
}

/// Issue 9 §4: once a session's entry is gone (left or expired), another
/// context taking that session id receives nothing that was addressed to it.
#[tokio::test(start_paused = true)]
async fn a_session_id_claimed_after_its_entry_is_gone_gets_nothing() {
    for leaves in [true, false] {
        let h = Harness::new();
        let (a, mut b) = (Peer::new("room-gone", 1), Peer::new("room-gone", 2));
        let t = h.now();
        h.post(&a.publish(t, json!([]))).await;
        b.dk = h.post(&b.publish(t, json!([]))).await.body["dk"]
            .as_str()
            .map(str::to_owned);
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        let for_b = a.package_to(&b, h.now());
        h.post(&a.publish(h.now(), json!([for_b]))).await;
        assert_eq!(h.post(&b.poll(t)).await.body["pk"], json!([for_b]));
        let mut mallory = b.clone();
        mallory.context = "ctx-mallory".into();
        if leaves {
            assert_eq!(h.leave(&b.leave_body(t)).await.status, 200);
            // A left session cannot be taken at all for a while.
            let r = h.post(&mallory.publish(h.now(), json!([]))).await;
            assert_eq!((r.status, r.text.as_str()), (400, "Session id in use"));
        } else {
            // b vanishes; its entry expires 120 s after its last write.
            tokio::time::advance(std::time::Duration::from_secs(119)).await;
            h.post(&a.poll(t)).await;
            assert_eq!(
                h.post(&mallory.publish(h.now(), json!([]))).await.status,
                200
            );
        }
        // Whatever mallory does, a's package for b's session is not hers.
        let r = h.post(&mallory.poll(h.now())).await;
        assert_eq!(r.body["pk"], json!([]), "leaves = {leaves}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_context_cannot_touch_another_contexts_entry() {
    let h = Harness::new();
    let (mut a, b) = (Peer::new("room-own", 1), Peer::new("room-own", 2));
    let t = h.now();
    a.dk = h.post(&a.publish(t, json!([]))).await.body["dk"]
        .as_str()
        .map(str::to_owned);
    h.post(&b.publish(t, json!([]))).await;
    // b cannot leave on a's behalf with a's session, nor with a guessed key.
    let mut forged = b.clone();
    forged.session = a.session.clone();
    forged.dk = a.dk.clone();
    assert_eq!(
        h.leave(&forged.leave_body(t)).await.status,
        404,
        "right key, wrong context"
    );
    let mut guessed = a.clone();
    guessed.dk = Some("A".repeat(32));
    assert_eq!(h.leave(&guessed.leave_body(t)).await.status, 404);
    let observer = Peer::new("room-own", 9);
    assert_eq!(
        sessions(&h.post(&observer.first_poll()).await.body).len(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn errors_carry_no_keys_packages_or_room_ids() {
    let h = Harness::new();
    let (mut a, b) = (
        Peer::new("room-quiet-secret", 1),
        Peer::new("room-quiet-secret", 2),
    );
    // The log lines themselves are checked on the built worker's real
    // output (tests/workerd/http.test.mjs); here, the error texts.
    let t = h.now();
    let r = h.post(&a.publish(t, json!([a.package_to(&b, t)]))).await;
    a.dk = r.body["dk"].as_str().map(str::to_owned);
    let key = a.dk.clone().unwrap();
    let mut wrong = a.clone();
    wrong.session = "other".into();
    let r = h.leave(&wrong.leave_body(t)).await;
    assert_eq!(r.status, 404);
    assert!(
        !r.text.contains(&key) && !r.text.contains("room-quiet-secret"),
        "{}",
        r.text
    );
}

fn with_origin(req: &mut HttpRequest, origin: &str) {
    req.headers.push(("Origin".into(), origin.into()));
}

#[tokio::test(start_paused = true)]
async fn origin_rules_as_a_browser_sees_them() {
    let config =
        Config::from_vars(|n| (n == "ALLOWED_ORIGINS").then(|| "https://app.example".into()));
    let h = Harness::with_config(config, 10);
    let body = Peer::new("room-origin-sec", 1).first_poll();
    // The preflight of a refused origin fails (401), readable thanks to CORS.
    let mut preflight = HttpRequest {
        method: "OPTIONS".into(),
        headers: vec![
            ("Access-Control-Request-Method".into(), "POST".into()),
            (
                "Access-Control-Request-Headers".into(),
                "content-type".into(),
            ),
        ],
        ..Default::default()
    };
    with_origin(&mut preflight, "https://evil.example");
    let r = h.request(preflight.clone()).await;
    assert_eq!(
        (r.status, r.response.header("access-control-allow-origin")),
        (401, Some("*"))
    );
    let mut allowed = preflight;
    allowed.headers.retain(|(k, _)| k != "Origin");
    with_origin(&mut allowed, "https://app.example");
    assert_eq!(h.request(allowed).await.status, 204);
    // A near miss is not the listed origin.
    for near in [
        "https://app.example/",
        "http://app.example",
        "https://app.example:444",
        "https://APP.example.evil",
    ] {
        let mut req = post(&body);
        with_origin(&mut req, near);
        assert_eq!(h.request(req).await.status, 401, "{near}");
    }
    // Without an Origin header (not a browser) the request is not checked.
    assert_eq!(h.request(post(&body)).await.status, 200);
}
