//! R2 faults injected into the memory model (errors, 429s, slow calls, on
//! gets and on puts): a few are absorbed by retries inside the request;
//! endless ones give 503 with Retry-After and CORS, nothing half-written is
//! visible, and the client's retry then succeeds and loses nothing.

mod common;

use common::{sessions, Harness, Peer};
use p2pcf_rs::store::memory::{Fault, Operation};
use serde_json::json;

const FAULTS: [Fault; 2] = [Fault::Unavailable, Fault::RateLimited];
const OPERATIONS: [Operation; 2] = [Operation::Get, Operation::Put];

/// A room with one member, and a joiner whose publish carries a package.
async fn room_with_member(h: &Harness) -> (Peer, Peer) {
    let member = Peer::new("room-faults", 1);
    let joiner = Peer::new("room-faults", 2);
    assert_eq!(
        h.post(&member.publish(h.now(), json!([]))).await.status,
        200
    );
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    (member, joiner)
}

#[tokio::test(start_paused = true)]
async fn a_few_faults_are_retried_and_the_write_lands() {
    for operation in OPERATIONS {
        for fault in FAULTS {
            let h = Harness::new();
            let (member, joiner) = room_with_member(&h).await;
            h.worker.store.inject(operation, fault.clone(), 3);
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

#[tokio::test(start_paused = true)]
async fn endless_faults_give_503_and_nothing_half_written_is_visible() {
    for operation in OPERATIONS {
        for fault in FAULTS {
            let h = Harness::new();
            let (member, joiner) = room_with_member(&h).await;
            h.worker.store.inject(operation, fault.clone(), u32::MAX);
            let t = h.now();
            let publish = joiner.publish(t, json!([joiner.package_to(&member, t)]));
            let r = h.post(&publish).await;
            assert_eq!(r.status, 503, "{operation:?} {fault:?}");
            assert_eq!(r.response.header("retry-after"), Some("2"));
            assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
            assert_eq!(r.text, "Storage busy, nothing was stored; retry later");
            h.worker.store.clear_faults();
            // Neither the joiner nor its package is visible.
            let seen = h.post(&member.poll(t)).await;
            assert_eq!(seen.body["ps"], json!([]), "{operation:?} {fault:?}");
            assert_eq!(seen.body["pk"], json!([]));
            // The client's next attempt lands, whole.
            tokio::time::advance(std::time::Duration::from_secs(2)).await;
            assert_eq!(h.post(&publish).await.status, 200);
            let seen = h.post(&member.poll(t)).await;
            assert_eq!(sessions(&seen.body), vec![joiner.session.clone()]);
            assert_eq!(seen.body["pk"].as_array().map(Vec::len), Some(1));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_poll_during_an_outage_is_a_503_too() {
    let h = Harness::new();
    let (member, _) = room_with_member(&h).await;
    h.worker
        .store
        .inject(Operation::Get, Fault::Unavailable, u32::MAX);
    let r = h.post(&member.poll(h.now())).await;
    assert_eq!(
        (r.status, r.response.header("retry-after")),
        (503, Some("2"))
    );
}
