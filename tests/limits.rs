//! Abuse limits: each refused with a clear 4xx and CORS, nothing stored,
//! each configurable by `[vars]`.

mod common;

use common::{post, Harness, Peer};
use serde_json::{json, Value};

fn harness(vars: &[(&str, &str)]) -> Harness {
    Harness::with_vars(vars, 10)
}

async fn refused(h: &Harness, body: &Value, status: u16, reason: &str) {
    let writes = h.worker.store.stats().writes;
    let r = h.post(body).await;
    assert_eq!((r.status, r.text.as_str()), (status, reason));
    assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(h.worker.store.stats().writes, writes, "nothing stored");
}

#[tokio::test(start_paused = true)]
async fn defaults_refuse_oversized_requests_and_packages() {
    let h = Harness::new();
    let a = Peer::new("room-limits", 1);
    let b = Peer::new("room-limits", 2);
    let t = h.now();

    let mut big = post(&a.first_poll());
    big.body = format!(
        r#"{{"r":"room-limits","k":"x","pad":"{}"}}"#,
        "x".repeat(70_000)
    )
    .into_bytes();
    let r = h.request(big).await;
    assert_eq!((r.status, r.text.as_str()), (413, "Request body too large"));

    let many: Vec<Value> = (0..33).map(|_| a.package_to(&b, t)).collect();
    refused(
        &h,
        &a.publish(t, Value::Array(many)),
        413,
        "Too many packages",
    )
    .await;

    let mut package = a.package_to(&b, t);
    package[8] = json!((0..33)
        .map(|i| format!("candidate:{i} 1 udp 1 192.0.2.1 {i} typ host"))
        .collect::<Vec<_>>());
    refused(
        &h,
        &a.publish(t, json!([package])),
        413,
        "Too many candidates in a package",
    )
    .await;

    let mut package = a.package_to(&b, t);
    package[3] = json!("p".repeat(5 * 1024));
    refused(
        &h,
        &a.publish(t, json!([package])),
        413,
        "Package too large",
    )
    .await;

    // One package per recipient, as the stock client keeps them.
    refused(
        &h,
        &a.publish(t, json!([a.package_to(&b, t), a.package_to(&b, t)])),
        400,
        "Two packages for one recipient",
    )
    .await;

    // Within the limits all is well: a package to each of 32 peers.
    let ok: Vec<Value> = (0..32)
        .map(|n| a.package_to(&Peer::new("room-limits", 100 + n), t))
        .collect();
    assert_eq!(h.post(&a.publish(t, Value::Array(ok))).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_full_room_answers_429_with_retry_after() {
    let h = harness(&[("MAX_PEERS", "3")]);
    let t = h.now();
    for n in 0..3 {
        assert_eq!(
            h.post(&Peer::new("room-full", n).publish(t, json!([])))
                .await
                .status,
            200
        );
    }
    let late = Peer::new("room-full", 9);
    let r = h.post(&late.publish(t, json!([]))).await;
    assert_eq!((r.status, r.text.as_str()), (429, "Room is full"));
    assert_eq!(r.response.header("retry-after"), Some("30"));
    // Members keep their place: a heartbeat is not a join.
    assert_eq!(
        h.post(&Peer::new("room-full", 0).publish(t + 1, json!([])))
            .await
            .status,
        200
    );
    // The latecomer can still read the room.
    assert_eq!(
        h.post(&late.first_poll()).await.body["ps"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test(start_paused = true)]
async fn limits_follow_vars() {
    let h = harness(&[
        ("MAX_BODY_BYTES", "2000"),
        ("MAX_PACKAGES", "1"),
        ("MAX_CANDIDATES", "1"),
        ("MAX_PACKAGE_BYTES", "400"),
        ("MAX_ROOM_BYTES", "1200"),
    ]);
    let a = Peer::new("room-vars", 1);
    let b = Peer::new("room-vars", 2);
    let t = h.now();
    refused(
        &h,
        &a.publish(t, json!([a.package_to(&b, t), a.package_to(&b, t)])),
        413,
        "Too many packages",
    )
    .await;
    let mut two = a.package_to(&b, t);
    two[8] = json!(["candidate:1", "candidate:2"]);
    refused(
        &h,
        &a.publish(t, json!([two])),
        413,
        "Too many candidates in a package",
    )
    .await;
    let mut fat = a.package_to(&b, t);
    fat[3] = json!("p".repeat(400));
    refused(&h, &a.publish(t, json!([fat])), 413, "Package too large").await;
    let mut big = post(&a.first_poll());
    big.body = format!(
        r#"{{"r":"room-vars","k":"x","pad":"{}"}}"#,
        "x".repeat(2000)
    )
    .into_bytes();
    assert_eq!(h.request(big).await.status, 413);
    // The index grows by ~250 bytes a peer: the fifth does not fit in 1200.
    let mut statuses = Vec::new();
    for n in 0..6 {
        statuses.push(
            h.post(&Peer::new("room-vars", 10 + n).publish(t, json!([])))
                .await
                .status,
        );
    }
    let size = h
        .worker
        .store
        .peek("rooms/room-vars")
        .map_or(0, |b| b.len());
    assert!(statuses.starts_with(&[200, 200, 200]), "{statuses:?}");
    assert!(statuses.contains(&413), "{statuses:?}, index {size} bytes");
    assert!(size <= 1200);
    let r = h
        .post(&Peer::new("room-vars", 99).publish(t, json!([])))
        .await;
    assert_eq!((r.status, r.text.as_str()), (413, "Room too large"));
}
