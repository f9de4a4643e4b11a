//! Polling hints through the HTTP layer: they follow the room as a second
//! peer joins and leaves, in the body and in the `X-Poll-Hint` header.

mod common;

use std::time::Duration;

use common::{Harness, Peer};
use serde_json::json;

fn mode(r: &common::Reply) -> (String, u64) {
    let mode = r.hint["mode"].as_str().unwrap_or("none").to_owned();
    let ms = r.hint["ms"].as_u64().unwrap_or(0);
    assert_eq!(
        r.response.header("x-poll-hint"),
        Some(format!("{mode}; ms={ms}").as_str()),
        "header and body agree"
    );
    assert_eq!(
        r.response.header("server-timing"),
        Some(format!("p2pcf-hint;desc={mode};dur={ms}").as_str()),
        "Server-Timing and body agree"
    );
    (mode, ms)
}

async fn wait(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn hints_follow_joins_leaves_and_solitude() {
    let h = Harness::new();
    let mut a = Peer::new("room-hints", 1);
    let mut b = Peer::new("room-hints", 2);

    // Before publishing: fast (the stock client publishes on its next step).
    assert_eq!(mode(&h.post(&a.first_poll()).await), ("fast".into(), 1000));
    let t_a = h.now();
    let r = h.post(&a.publish(t_a, json!([]))).await;
    a.dk = r.body["dk"].as_str().map(str::to_owned);
    assert_eq!(mode(&r).0, "fast", "the room just changed");
    wait(15).await;
    assert_eq!(mode(&h.post(&a.poll(t_a)).await), ("slow".into(), 12_000));

    // Alone for a minute: idle, backing off; heartbeats keep the entry alive.
    wait(50).await;
    let t_a = h.now();
    h.post(&a.publish(t_a, json!([]))).await;
    assert_eq!(mode(&h.post(&a.poll(t_a)).await), ("idle".into(), 24_000));
    wait(60).await;
    assert_eq!(mode(&h.post(&a.poll(t_a)).await), ("idle".into(), 30_000));
    wait(35).await;
    // 95 s after the last write the entry expires in 25 s: poll within 15 s.
    let (m, ms) = mode(&h.post(&a.poll(t_a)).await);
    assert!(m == "idle" && (14_900..=15_000).contains(&ms), "{m} {ms}");
    let t_a = h.now();
    h.post(&a.publish(t_a, json!([]))).await;

    // B joins: both poll fast while their join window is open.
    let t_b = h.now();
    let r = h.post(&b.publish(t_b, json!([]))).await;
    b.dk = r.body["dk"].as_str().map(str::to_owned);
    assert_eq!(mode(&r).0, "fast");
    assert_eq!(mode(&h.post(&a.poll(t_a)).await).0, "fast");
    wait(30).await;
    assert_eq!(
        mode(&h.post(&a.poll(t_a)).await).0,
        "fast",
        "still in the 45 s join window"
    );
    wait(20).await;
    assert_eq!(
        mode(&h.post(&a.poll(t_a)).await).0,
        "slow",
        "windows closed: a steady room"
    );
    // A package for A (announced, being outside the window) makes A poll fast.
    let t_b = h.now();
    h.post(&b.publish(t_b, json!([b.package_to(&a, t_b)])))
        .await;
    let r = h.post(&a.poll(t_a)).await;
    assert_eq!(r.body["pk"].as_array().map(Vec::len), Some(1));
    assert_eq!(mode(&r).0, "fast");

    // B leaves: A is told to poll fast, then slow, then idle.
    assert_eq!(h.leave(&b.leave_body(t_b)).await.status, 200);
    assert_eq!(mode(&h.post(&a.poll(t_a)).await).0, "fast");
    wait(11).await;
    assert_eq!(mode(&h.post(&a.poll(t_a)).await), ("slow".into(), 12_000));
    wait(50).await;
    let t_a = h.now();
    h.post(&a.publish(t_a, json!([]))).await;
    assert_eq!(mode(&h.post(&a.poll(t_a)).await), ("idle".into(), 24_000));
    // A leave carries no hint.
    let r = h.leave(&a.leave_body(t_a)).await;
    assert_eq!((r.status, r.response.header("x-poll-hint")), (200, None));
    assert_eq!(r.response.header("server-timing"), None);
}

#[tokio::test(start_paused = true)]
async fn hints_are_configurable_by_vars() {
    let config = p2pcf_rs::config::Config::from_vars(|n| match n {
        "POLL_FAST_MS" => Some("700".into()),
        "POLL_SLOW_MS" => Some("4000".into()),
        "POLL_IDLE_MAX_MS" => Some("nonsense".into()),
        _ => None,
    });
    assert_eq!(config.poll.fast_ms, 700);
    assert_eq!(config.poll.slow_ms, 4000);
    assert_eq!(
        config.poll.idle_max_ms, 30_000,
        "bad values fall back to the default"
    );
    assert_eq!(config.warnings.len(), 1);
    let h = Harness::with_config(config, 10);
    let a = Peer::new("room-vars", 1);
    assert_eq!(mode(&h.post(&a.first_poll()).await), ("fast".into(), 700));
}
