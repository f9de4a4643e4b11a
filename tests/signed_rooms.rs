//! Owner control: with `ROOM_SECRET`, only signed room ids are served, in
//! both protocols and for `GET /turn`; a refusal says why and costs no R2
//! operation. `WITHOUT_ORIGIN` decides about requests without an `Origin`.

mod common;

use common::relay::relay;
use common::{Harness, Peer};
use p2pcf_rs::config::Secret;
use p2pcf_rs::edge::rooms::sign;
use p2pcf_rs::edge::HttpRequest;
use serde_json::json;

const SECRET: &str = "the-room-secret";
const PREVIOUS: &str = "last-months-secret";

fn harness() -> Harness {
    Harness::with_vars(
        &[
            ("ROOM_SECRET", SECRET),
            ("ROOM_SECRET_PREVIOUS", PREVIOUS),
            ("TURN_URLS", "turn:127.0.0.1:3478"),
            ("TURN_SHARED_SECRET", "turn-secret"),
        ],
        5,
    )
}

/// `name` signed with `secret` for `for_s` seconds from the harness's now.
fn signed(h: &Harness, name: &str, secret: &str, for_s: i64) -> String {
    let until = (h.now() / 1000) as i64 + for_s;
    sign(name, until as u64, &Secret::new(secret.into()))
        .unwrap()
        .as_str()
        .to_owned()
}

const NOT_SIGNED: &str = "Room id not signed: this deployment serves only signed room ids";
const FORGED: &str = "Room id signature does not match";
const EXPIRED: &str = "Room id expired: ask for a new one";

/// The refusals every protocol gives, as (room id, status, text).
fn cases(h: &Harness) -> Vec<(String, u16, &'static str)> {
    let good = signed(h, "team", SECRET, 600);
    let mut forged = good.clone();
    forged.replace_range(
        good.len() - 1..,
        if good.ends_with('A') { "B" } else { "A" },
    );
    vec![
        ("team-chat".into(), 403, NOT_SIGNED),
        (forged, 403, FORGED),
        (signed(h, "team", "another-secret", 600), 403, FORGED),
        (signed(h, "team", SECRET, -1), 403, EXPIRED),
        (good, 200, ""),
        (signed(h, "team", PREVIOUS, 600), 200, ""),
    ]
}

#[tokio::test(start_paused = true)]
async fn p2pcf_serves_signed_rooms_only() {
    let h = harness();
    for (n, (room, status, text)) in cases(&h).into_iter().enumerate() {
        let peer = Peer::new(&room, n);
        let now = h.now();
        for body in [peer.first_poll(), peer.publish(now, json!([]))] {
            let r = h.post(&body).await;
            assert_eq!(r.status, status, "{room}: {}", r.text);
            if status != 200 {
                assert_eq!(r.text, text, "{room}");
                assert_eq!(r.outcome.ops.total(), 0, "{room}: a refusal reads nothing");
                assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_relay_serves_signed_rooms_only() {
    let h = harness();
    for (room, status, text) in cases(&h) {
        let r = h.request(relay(&json!({"room": room, "meta": 1}))).await;
        assert_eq!(r.status, status, "{room}: {}", r.text);
        if status != 200 {
            assert_eq!(r.text, text, "{room}");
            assert_eq!(r.outcome.ops.total(), 0, "{room}: a refusal reads nothing");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_room_stops_being_served_when_its_signature_expires() {
    let h = harness();
    let room = signed(&h, "short", SECRET, 30);
    let peer = Peer::new(&room, 1);
    assert_eq!(h.post(&peer.first_poll()).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_secs(31)).await;
    let r = h.post(&peer.first_poll()).await;
    assert_eq!((r.status, r.text.as_str()), (403, EXPIRED));
}

/// A `GET` of `url`, with `X-Room` when given.
fn get(url: &str, room: Option<&str>) -> HttpRequest {
    let headers = room
        .map(|room| vec![("X-Room".to_owned(), room.to_owned())])
        .unwrap_or_default();
    HttpRequest {
        method: "GET".into(),
        url: url.into(),
        headers,
        body: Vec::new(),
    }
}

fn get_turn(room: Option<&str>) -> HttpRequest {
    get("https://p2pcf.example.workers.dev/turn", room)
}

#[tokio::test(start_paused = true)]
async fn turn_needs_a_signed_room() {
    let h = harness();
    let r = h.request(get_turn(None)).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.text,
        "TURN needs a signed room id in the X-Room header on this deployment"
    );
    assert_eq!(r.outcome.ops.total(), 0);
    for (room, status, text) in cases(&h) {
        let r = h.request(get_turn(Some(&room))).await;
        assert_eq!(r.status, status, "{room}: {}", r.text);
        if status == 200 {
            assert!(r.body["iceServers"][0]["credential"].is_string());
        } else {
            assert_eq!(r.text, text);
            assert_eq!(r.outcome.ops.total(), 0, "{room}: a refusal counts nothing");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_secret_every_room_and_turn_call_is_served() {
    let h = Harness::with_vars(
        &[
            ("TURN_URLS", "turn:127.0.0.1:3478"),
            ("TURN_SHARED_SECRET", "turn-secret"),
        ],
        5,
    );
    assert_eq!(
        h.post(&Peer::new("team-chat", 1).first_poll()).await.status,
        200
    );
    assert_eq!(h.request(get_turn(None)).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn requests_without_origin_follow_the_switch() {
    let browser = |mut req: HttpRequest| {
        req.headers
            .push(("Origin".into(), "https://app.example".into()));
        req
    };
    let poll = Peer::new("team-chat", 1).first_poll();

    let refuse = Harness::with_vars(&[("WITHOUT_ORIGIN", "refuse")], 5);
    let r = refuse.post(&poll).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (401, "Requests without an Origin header are not served here")
    );
    assert_eq!(r.outcome.ops.total(), 0);
    let r = refuse.request(browser(common::post(&poll))).await;
    assert_eq!(r.status, 200, "a browser's request is judged by its origin");

    // A quota of their own, counted together as `without-origin`.
    let metered = Harness::with_vars(&[("WITHOUT_ORIGIN", "3")], 5);
    for _ in 0..3 {
        assert_eq!(metered.post(&poll).await.status, 200);
    }
    let r = metered.post(&poll).await;
    assert_eq!((r.status, r.text.as_str()), (429, "Origin over quota"));

    let open = Harness::with_vars(&[], 5);
    for _ in 0..5 {
        assert_eq!(open.post(&poll).await.status, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn the_status_page_signs_a_two_member_room_for_its_self_test() {
    let h = harness();
    let page = h
        .request(get("https://p2pcf.example.workers.dev/", None))
        .await;
    let marker = "<meta name=\"p2pcf-self-test-room\" content=\"";
    let at = page.text.find(marker).expect("a signed self-test room") + marker.len();
    let room = &page.text[at..at + page.text[at..].find('"').unwrap()];
    assert!(room.starts_with("self-test-"), "{room}");
    let now = h.now();
    for n in 0..2 {
        let r = h.post(&Peer::new(room, n).publish(now, json!([]))).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let third = h.post(&Peer::new(room, 2).publish(now, json!([]))).await;
    assert_eq!((third.status, third.text.as_str()), (429, "Room is full"));
    // Any other signed room takes the deployment's MAX_PEERS.
    let team = signed(&h, "team", SECRET, 600);
    for n in 0..3 {
        let r = h.post(&Peer::new(&team, n).publish(now, json!([]))).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // Without a secret the page signs nothing.
    let open = Harness::with_vars(&[], 5);
    let page = open
        .request(get("https://p2pcf.example.workers.dev/", None))
        .await;
    assert!(!page.text.contains(marker));
}

#[tokio::test(start_paused = true)]
async fn one_signed_room_mints_at_most_its_own_cap_a_minute() {
    let h = Harness::with_vars(
        &[
            ("ROOM_SECRET", SECRET),
            ("TURN_URLS", "turn:127.0.0.1:3478"),
            ("TURN_SHARED_SECRET", "turn-secret"),
            ("TURN_MAX_PER_ROOM_PER_MINUTE", "2"),
        ],
        5,
    );
    let (team, other) = (
        signed(&h, "team", SECRET, 600),
        signed(&h, "other", SECRET, 600),
    );
    for _ in 0..2 {
        assert_eq!(h.request(get_turn(Some(&team))).await.status, 200);
    }
    let r = h.request(get_turn(Some(&team))).await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (429, "Too many TURN credentials this minute; retry later")
    );
    assert!(r.response.header("retry-after").is_some());
    assert_eq!(
        h.request(get_turn(Some(&other))).await.status,
        200,
        "another room has its own"
    );
    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    assert_eq!(
        h.request(get_turn(Some(&team))).await.status,
        200,
        "the next minute"
    );
}
