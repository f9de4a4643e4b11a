//! R2 faults injected into the memory model (errors, 429s, slow calls, a
//! skewed clock; on gets or puts, on the index or the outboxes): a few are
//! absorbed by retries; endless ones give 503 with Retry-After and CORS and a
//! text that says what was stored, and then the stock client's *real* next
//! step (a poll with `d`, not a re-sent publish) puts things right.

mod common;

use std::time::Duration;

use common::{sessions, Harness, Peer};
use p2pcf_rs::store::memory::{Fault, Operation};
use serde_json::json;

const FAULTS: [Fault; 2] = [Fault::Unavailable, Fault::RateLimited];
const OPERATIONS: [Operation; 2] = [Operation::Get, Operation::Put];

fn index_key(key: &str) -> bool {
    !key.contains("/c/")
}

fn outbox_key(key: &str) -> bool {
    key.contains("/c/")
}

/// A room with one member, and a joiner whose publish carries a package.
async fn room_with_member(h: &Harness) -> (Peer, Peer) {
    let member = Peer::new("room-faults", 1);
    let joiner = Peer::new("room-faults", 2);
    assert_eq!(
        h.post(&member.publish(h.now(), json!([]))).await.status,
        200
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    (member, joiner)
}

#[tokio::test(start_paused = true)]
async fn a_few_faults_are_retried_and_the_write_lands() {
    for operation in OPERATIONS {
        for fault in FAULTS {
            let h = Harness::new();
            let (member, joiner) = room_with_member(&h).await;
            h.worker.store.inject(operation, fault.clone(), 2);
            let t = h.now();
            let r = h
                .post(&joiner.publish(t, json!([joiner.package_to(&member, t)])))
                .await;
            assert_eq!(r.status, 200, "{operation:?} {fault:?}: {}", r.text);
            h.worker.store.clear_faults();
            let seen = h.post(&member.poll(t)).await;
            assert_eq!(sessions(&seen.body), vec![joiner.session.clone()]);
            assert_eq!(
                seen.body["pk"].as_array().map(Vec::len),
                Some(1),
                "the package too"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn slow_calls_only_make_the_request_slower() {
    for operation in OPERATIONS {
        let h = Harness::new();
        let (member, joiner) = room_with_member(&h).await;
        h.worker
            .store
            .inject(operation, Fault::Slow(3000), u32::MAX);
        let t = h.now();
        assert_eq!(h.post(&joiner.publish(t, json!([]))).await.status, 200);
        assert_eq!(
            sessions(&h.post(&member.poll(t)).await.body),
            vec![joiner.session.clone()]
        );
    }
}

/// Issue 9 §2 and §8: the outbox lands, the index does not. The 503 says
/// so; the stock client never re-sends that publish, but its next poll
/// (with `d`) registers it, and the stored package then reaches the member.
#[tokio::test(start_paused = true)]
async fn outbox_stored_index_refused_then_the_next_poll_registers() {
    for fault in FAULTS {
        let h = Harness::new();
        let (member, joiner) = room_with_member(&h).await;
        h.worker
            .store
            .inject_where(Operation::Put, index_key, fault.clone(), u32::MAX);
        let t = h.now();
        let r = h
            .post(&joiner.publish(t, json!([joiner.package_to(&member, t)])))
            .await;
        assert_eq!(r.status, 503, "{fault:?}");
        assert_eq!(r.response.header("retry-after"), Some("2"));
        assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            r.text,
            "Storage busy: your packages were stored, but you are not in the room yet (your next poll with d adds you)"
        );
        h.worker.store.clear_faults();
        // Nothing of the joiner is visible yet.
        let seen = h.post(&member.poll(t)).await;
        assert_eq!(seen.body["ps"], json!([]), "{fault:?}");
        assert_eq!(seen.body["pk"], json!([]));
        // The stock client's next step: a poll with d and the same t.
        tokio::time::advance(Duration::from_millis(1500)).await;
        let registered = h.post(&joiner.poll(t)).await;
        assert_eq!(registered.status, 200);
        assert!(
            registered.body["dk"].is_string(),
            "the joiner gets its delete key"
        );
        let seen = h.post(&member.poll(t)).await;
        assert_eq!(sessions(&seen.body), vec![joiner.session.clone()]);
        assert_eq!(seen.body["pk"].as_array().map(Vec::len), Some(1));
    }
}

/// The outbox write fails: nothing is stored and the 503 says so; the next
/// poll still registers the joiner (its package is lost, as the text said).
#[tokio::test(start_paused = true)]
async fn outbox_refused_nothing_stored_then_the_next_poll_registers() {
    let h = Harness::new();
    let (member, joiner) = room_with_member(&h).await;
    h.worker
        .store
        .inject_where(Operation::Put, outbox_key, Fault::Unavailable, u32::MAX);
    let t = h.now();
    let r = h
        .post(&joiner.publish(t, json!([joiner.package_to(&member, t)])))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text,
        "Storage busy: nothing was stored; you are not in the room yet (your next poll with d adds you)"
    );
    assert_eq!(h.post(&member.poll(t)).await.body["ps"], json!([]));
    h.worker.store.clear_faults();
    assert_eq!(h.post(&joiner.poll(t)).await.status, 200);
    let seen = h.post(&member.poll(t)).await;
    assert_eq!(sessions(&seen.body), vec![joiner.session.clone()]);
    assert_eq!(seen.body["pk"], json!([]));
}

/// Issue 9 §2: a heartbeat of a live entry gives up within a few seconds
/// (the stock client cannot poll meanwhile); the entry stays listed and a
/// later poll renews it.
#[tokio::test(start_paused = true)]
async fn a_busy_heartbeat_answers_soon_and_the_entry_stays() {
    let h = Harness::new();
    let (member, joiner) = room_with_member(&h).await;
    assert_eq!(
        h.post(&joiner.publish(h.now(), json!([]))).await.status,
        200
    );
    // A heartbeat that comes late, inside the renewal window (10 s left).
    tokio::time::advance(Duration::from_secs(108)).await;
    h.worker
        .store
        .inject_where(Operation::Put, index_key, Fault::RateLimited, u32::MAX);
    let heartbeat_t = h.now();
    let started = h.now();
    let r = h.post(&member.publish(heartbeat_t, json!([]))).await;
    let took = h.now() - started;
    assert_eq!(r.status, 503);
    assert!(
        took <= 3_500,
        "a heartbeat blocked the client for {took} ms"
    );
    assert_eq!(
        r.text,
        "Storage busy: nothing was stored; your entry stays in the room and your next poll renews it"
    );
    h.worker.store.clear_faults();
    assert_eq!(
        sessions(&h.post(&joiner.poll(h.now())).await.body),
        vec![member.session.clone()]
    );
    // The member's next poll (with the heartbeat's t) renews it.
    tokio::time::advance(Duration::from_secs(2)).await;
    let renew = h.post(&member.poll(heartbeat_t)).await;
    assert_eq!(renew.outcome.ops.class_a, 1, "the poll renewed the entry");
    tokio::time::advance(Duration::from_secs(20)).await;
    assert_eq!(
        sessions(&h.post(&joiner.poll(h.now())).await.body),
        vec![member.session.clone()],
        "still listed past the old expiry"
    );
}

/// Issue 9 §6: while R2 is down a request spends a few calls, not 45.
#[tokio::test(start_paused = true)]
async fn an_outage_costs_a_few_calls_and_answers_503() {
    let h = Harness::new();
    let (member, joiner) = room_with_member(&h).await;
    h.worker
        .store
        .inject(Operation::Get, Fault::Unavailable, u32::MAX);
    let r = h.post(&member.poll(h.now())).await;
    assert_eq!(
        (r.status, r.response.header("retry-after")),
        (503, Some("2"))
    );
    assert!(r.outcome.ops.total() <= 3, "{:?}", r.outcome.ops);
    h.worker.store.clear_faults();
    h.worker
        .store
        .inject(Operation::Put, Fault::Unavailable, u32::MAX);
    let started = h.now();
    let r = h.post(&joiner.publish(h.now(), json!([]))).await;
    assert_eq!(r.status, 503);
    assert!(r.outcome.ops.total() <= 6, "{:?}", r.outcome.ops);
    assert!(h.now() - started < 3000);
}

/// Issue 9 §6: a worker clock that trails R2's `uploaded` by a minute costs
/// at most one short wait per version, never a 503.
#[tokio::test(start_paused = true)]
async fn a_clock_behind_r2_waits_at_most_once() {
    let h = Harness::new();
    h.worker.store.set_upload_skew_ms(60_000);
    let (member, joiner) = room_with_member(&h).await;
    let started = h.now();
    let r = h.post(&joiner.publish(h.now(), json!([]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        h.now() - started <= 1_500,
        "waited {} ms",
        h.now() - started
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let r = h.post(&member.publish(h.now(), json!([]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Issue 9 §6: "absent" and "cannot read" differ. A room index this build
/// cannot decode (a newer format after a rollback, say) is answered 503 and
/// never written over.
#[tokio::test(start_paused = true)]
async fn an_unreadable_index_is_a_503_and_stays_as_it_was() {
    use p2pcf_rs::store::{Precondition, Store};
    let h = Harness::new();
    let future = br#"{"v":99,"e":{"ctx-future":{"anything":true}}}"#.to_vec();
    h.worker
        .store
        .put("rooms/room-future", future.clone(), Precondition::Absent)
        .await
        .unwrap();
    let p = Peer::new("room-future", 1);
    let t = h.now();
    for body in [p.publish(t, json!([])), p.poll(t)] {
        let r = h.post(&body).await;
        assert_eq!(r.status, 503);
        assert_eq!(
            r.text,
            "Room data is in a format this version cannot read; nothing was changed"
        );
    }
    assert_eq!(h.worker.store.peek("rooms/room-future"), Some(future));
}
