//! The relay API at its edges (issue 17): what one member may cost the
//! others, what a 200 promises, tokens under expiry, joins retried.
//! Each test failed against the code before these rules.

mod common;

use std::time::Duration;

use common::relay::{relay, Member};
use common::{Harness, Peer};
use p2pcf_rs::engine::mailbox::{MAX_ANSWER_BYTES, MAX_HELD_BYTES, MAX_INLINE_BYTES};
use p2pcf_rs::store::memory::{Fault, Operation};
use p2pcf_rs::wire::relay::adapter::MAX_RELAY_OUTBOX_READS;
use serde_json::{json, Value};

async fn advance(ms: u64) {
    tokio::time::advance(Duration::from_millis(ms)).await;
}

fn seqs(r: &common::Reply) -> Vec<u64> {
    r.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

/// An entry's expiry as the stored index says.
fn expiry_of(h: &Harness, key: &str, context: &str) -> u64 {
    let index: Value = serde_json::from_slice(&h.worker.store.peek(key).unwrap()).unwrap();
    index["e"][context]["x"].as_u64().unwrap()
}

fn stored_bytes(h: &Harness, key: &str) -> usize {
    h.worker.store.peek(key).map_or(0, |b| b.len())
}

/// Point 1: 16 members flood the room with 16 KiB broadcasts. Each holds
/// at most its byte cap (the rest refused with 429 + Retry-After), a
/// broadcast is stored once, and a newcomer's poll reads and answers a
/// bounded amount (the rest comes with its next polls, in order).
#[tokio::test(start_paused = true)]
async fn a_broadcast_flood_costs_a_newcomer_a_bounded_poll() {
    let h = Harness::new();
    let mut members = Vec::new();
    for _ in 0..16 {
        members.push(Member::join(&h, "relay-flood", Value::Null).await);
    }
    let big = "x".repeat(16 * 1024 - 2);
    let mut refused = 0;
    for m in &mut members {
        for _ in 0..8 {
            let batch: Vec<Value> = (0..3).map(|_| m.message("*", json!(big))).collect();
            let r = m.sync(&h, batch).await;
            match r.status {
                200 => {}
                429 => {
                    refused += 1;
                    assert!(r.response.header("retry-after").is_some(), "{}", r.text);
                    m.next_seq -= 3; // not stored: the numbers are free again
                }
                s => panic!("{s} {}", r.text),
            }
        }
        let outbox = format!("relay/relay-flood/c/{}", m.id);
        let held = stored_bytes(&h, &outbox);
        assert!(held <= MAX_HELD_BYTES + 4096, "outbox of {held} bytes");
    }
    assert!(refused > 0, "the cap refused some batches");
    // One broadcast to 15 others is stored once.
    let first = &members[0];
    let outbox = format!("relay/relay-flood/c/{}", first.id);
    assert!(stored_bytes(&h, &outbox) < 4 * 16 * 1024 + 2048);

    let mut victim = Member::join(&h, "relay-flood", Value::Null).await;
    let r = victim.sync(&h, vec![]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.len() < MAX_ANSWER_BYTES + 8 * 1024,
        "answer of {} bytes",
        r.text.len()
    );
    let reads = r.outcome.ops.class_b as usize;
    assert!(reads <= 2 + MAX_RELAY_OUTBOX_READS, "{reads} reads");
    println!(
        "relay flood: 16 members x 8 requests x 3 x 16 KiB broadcasts; {refused} requests refused (429); \
         a newcomer's first poll answered {} bytes, {} reads",
        r.text.len(),
        r.outcome.ops.class_b
    );
    // The newcomer joined after the broadcasts: none is for it.
    assert_eq!(r.body["messages"], json!([]));
    // An older member gets all of them, a bounded answer at a time, in order.
    let mut bob = Member {
        after: serde_json::Map::new(),
        ..Member::join(&h, "relay-flood", Value::Null).await
    };
    bob.id.clone_from(&members[15].id);
    bob.token.clone_from(&members[15].token);
    let mut got = 0;
    for _ in 0..30 {
        let r = bob.sync(&h, vec![]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(r.text.len() < MAX_ANSWER_BYTES + 8 * 1024);
        got += r.body["messages"].as_array().unwrap().len();
        // At most MAX_RELAY_OUTBOX_READS outboxes a poll, the next ones a second later.
        advance(1000).await;
    }
    // 15 senders, each holding what its cap allowed (3 broadcasts).
    assert_eq!(got, 15 * 3);
}

/// Point 1: the inline path is capped too, and twelve 15 KiB batches in a
/// row (outside any join window) still leave room for a join.
#[tokio::test(start_paused = true)]
async fn large_batches_in_a_row_leave_room_for_a_join() {
    let h = Harness::new();
    let mut ann = Member::join(&h, "relay-inline", Value::Null).await;
    let mut bob = Member::join(&h, "relay-inline", Value::Null).await;
    for _ in 0..12 {
        advance(5000).await;
        ann.sync(&h, vec![]).await;
        bob.sync(&h, vec![]).await;
    }
    let chunk = "c".repeat(15 * 1024);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let m = ann.message(&bob.id, json!(chunk));
        let r = ann.sync(&h, vec![m]).await;
        if r.status != 200 {
            ann.next_seq -= 1;
        }
        statuses.push(r.status);
        let index = stored_bytes(&h, "relay/relay-inline");
        assert!(index <= 64 * 1024, "index of {index} bytes");
    }
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    let index = String::from_utf8(h.worker.store.peek("relay/relay-inline").unwrap()).unwrap();
    assert!(
        index.len() <= MAX_INLINE_BYTES + 4096,
        "carried {} bytes",
        index.len()
    );
    let cy = h
        .request(relay(
            &json!({"room": "relay-inline", "meta": {"name": "cy"}}),
        ))
        .await;
    assert_eq!(cy.status, 200, "{}", cy.text);
    // Bob gets every stored one, in order.
    let stored = statuses.iter().filter(|s| **s == 200).count() as u64;
    let mut got = Vec::new();
    for _ in 0..10 {
        let r = bob.sync(&h, vec![]).await;
        got.extend(seqs(&r));
        if r.body.get("more").is_none() {
            break;
        }
    }
    assert_eq!(got, (1..=stored).collect::<Vec<_>>());
}

/// Point 2: a number lower than one already sent, or 0, could never be
/// delivered (the receiver's cursor is past it): refused, not a 200.
#[tokio::test(start_paused = true)]
async fn numbers_that_could_never_be_delivered_are_refused() {
    let h = Harness::new();
    let ann = Member::join(&h, "relay-seq", Value::Null).await;
    let mut bob = Member::join(&h, "relay-seq", Value::Null).await;
    let send = |seq: u64, data: &str| {
        h.request(relay(
            &ann.body(vec![json!({"to": bob.id, "seq": seq, "data": data})]),
        ))
    };
    assert_eq!(send(5, "five").await.status, 200);
    let r = send(3, "three").await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("seq already used"), "{}", r.text);
    let r = send(0, "zero").await;
    assert_eq!(
        (r.status, r.text.as_str()),
        (400, "Message seq starts at 1")
    );
    // A retry of 5 (same data) is fine, 5 with other data is not.
    assert_eq!(send(5, "five").await.status, 200);
    assert_eq!(send(5, "other").await.status, 409);
    assert_eq!(send(6, "six").await.status, 200);
    let got = bob.sync(&h, vec![]).await;
    assert_eq!(seqs(&got), vec![5, 6]);
}

/// Point 2: two requests of one member in flight at once (a retry while the
/// first still runs) both answered 200: both batches are delivered.
#[tokio::test(start_paused = true)]
async fn two_requests_in_flight_both_land() {
    let h = Harness::new();
    let mut ann = Member::join(&h, "relay-race", Value::Null).await;
    let mut bob = Member::join(&h, "relay-race", Value::Null).await;
    let first = ann.message(&bob.id, json!("first"));
    let second = ann.message(&bob.id, json!("second"));
    let a = relay(&ann.body(vec![first]));
    let b = relay(&ann.body(vec![second]));
    let (ra, rb) = tokio::join!(h.request(a), h.request(b));
    assert_eq!(
        (ra.status, rb.status),
        (200, 200),
        "{} / {}",
        ra.text,
        rb.text
    );
    let got = bob.sync(&h, vec![]).await;
    assert_eq!(seqs(&got), vec![1, 2], "{}", got.text);
}

/// Point 2: a later message carried in the index while an earlier one sits
/// in the outbox, and the receiver's read of that outbox fails: nothing of
/// that sender is taken past the earlier one.
#[tokio::test(start_paused = true)]
async fn an_unread_outbox_holds_back_later_letters() {
    let h = Harness::new();
    let ann = Member::join(&h, "relay-order", Value::Null).await;
    let mut bob = Member::join(&h, "relay-order", Value::Null).await;
    let mut ann = ann;
    advance(5000).await;
    // Inside the join window: the outbox.
    let one = ann.message(&bob.id, json!("one"));
    assert_eq!(ann.sync(&h, vec![one]).await.status, 200);
    advance(25_000).await;
    // The window closes within 20 s: this one needs the index.
    let two = ann.message(&bob.id, json!("two"));
    assert_eq!(ann.sync(&h, vec![two]).await.status, 200);
    h.worker.store.inject_where(
        Operation::Get,
        |k| k.contains("/c/"),
        Fault::Unavailable,
        u32::MAX,
    );
    let r = bob.sync(&h, vec![]).await;
    assert_eq!(r.status, 200);
    assert_eq!(seqs(&r), Vec::<u64>::new(), "nothing taken past seq 1");
    h.worker.store.clear_faults();
    let r = bob.sync(&h, vec![]).await;
    assert_eq!(seqs(&r), vec![1, 2]);
}

/// Point 3: a member whose entry expires while its request waits for the
/// index is never registered anew behind its back (its token would stop
/// working): it is told 410 and joins again.
#[tokio::test(start_paused = true)]
async fn a_member_never_loses_its_token() {
    let h = Harness::new();
    let mut ann = Member::join(&h, "relay-token", Value::Null).await;
    let mut bob = Member::join(&h, "relay-token", Value::Null).await;
    for _ in 0..11 {
        advance(5000).await;
        bob.sync(&h, vec![]).await;
    }
    // ann sends just before her entry expires, while R2 refuses the index
    // write for a while.
    let expiry = expiry_of(&h, "relay/relay-token", &ann.id);
    advance(expiry - h.now() - 300).await;
    h.worker.store.inject_where(
        Operation::Put,
        |k| !k.contains("/c/"),
        Fault::RateLimited,
        2,
    );
    let hello = ann.message(&bob.id, json!("hello"));
    let r = ann.sync(&h, vec![hello]).await;
    h.worker.store.clear_faults();
    assert!(
        matches!(r.status, 200 | 410 | 503),
        "{} {}",
        r.status,
        r.text
    );
    // Whatever happened, her token never turns into a "Bad token".
    let again = ann.sync(&h, vec![]).await;
    assert_ne!(again.text, "Bad token");
    assert!(
        matches!(again.status, 200 | 410),
        "{} {}",
        again.status,
        again.text
    );
}

/// Point 3, p2pcf: an entry that expires while a poll's renewal waits is
/// registered anew; the poll hands the client the new delete key, so its
/// leave still removes it (no ghost).
#[tokio::test(start_paused = true)]
async fn a_p2pcf_entry_registered_anew_hands_over_its_new_key() {
    let h = Harness::new();
    let mut ann = Peer::new("token-room", 1);
    let bob = Peer::new("token-room", 2);
    let t0 = h.now();
    let r = h.post(&ann.publish(t0, json!([]))).await;
    ann.dk = r.body["dk"].as_str().map(str::to_owned);
    assert!(ann.dk.is_some());
    h.post(&bob.publish(t0, json!([]))).await;
    // Near the end of its lifetime ann polls, reporting a write it made
    // later (t newer: a renewal is due), while R2 keeps the index busy
    // until the entry has expired.
    let expiry = expiry_of(&h, "rooms/token-room", &ann.context);
    advance(expiry - h.now() - 200).await;
    h.worker.store.inject_where(
        Operation::Put,
        |k| !k.contains("/c/"),
        Fault::RateLimited,
        1,
    );
    let r = h.post(&ann.poll(h.now() - 1000)).await;
    h.worker.store.clear_faults();
    assert_eq!(r.status, 200, "{}", r.text);
    if let Some(dk) = r.body["dk"].as_str() {
        ann.dk = Some(dk.to_owned());
    }
    let left = h.leave(&ann.leave_body(h.now())).await;
    assert!(matches!(left.status, 200 | 404), "{}", left.text);
    let listed = common::sessions(&h.post(&bob.poll(h.now())).await.body);
    assert!(
        !listed.contains(&ann.session),
        "ann left, yet the room lists her: {listed:?} (leave: {} {})",
        left.status,
        left.text
    );
}

/// Point 4 (server side): a join retried after a lost answer, with the
/// same nonce, is the same join: same id, same token, no ghost.
#[tokio::test(start_paused = true)]
async fn a_retried_join_is_the_same_join() {
    let h = Harness::new();
    let join = json!({"room": "relay-join", "meta": {"n": 1}, "nonce": "n0nce-0123456789abcdef"});
    let first = h.request(relay(&join)).await;
    let second = h.request(relay(&join)).await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert_eq!(second.status, 200, "{}", second.text);
    assert_eq!(first.body["id"], second.body["id"]);
    assert_eq!(first.body["token"], second.body["token"]);
    assert_eq!(second.outcome.ops.class_a, 0, "the retry writes nothing");
    let other = h.request(relay(&json!({"room": "relay-join"}))).await;
    assert_eq!(other.body["peers"].as_array().unwrap().len(), 1, "no ghost");
    // The id shows nothing of the nonce, and another room gives another id.
    let id = first.body["id"].as_str().unwrap();
    assert!(!id.contains("n0nce"));
    let elsewhere = h
        .request(relay(
            &json!({"room": "relay-join-2", "nonce": "n0nce-0123456789abcdef"}),
        ))
        .await;
    assert_ne!(elsewhere.body["id"], first.body["id"]);
}

/// A letter stays findable for its whole life: a receiver that polls late
/// (a background tab) still gets a message sent inside the join window,
/// after the join window itself has closed.
#[tokio::test(start_paused = true)]
async fn a_late_receiver_still_finds_its_letters() {
    let h = Harness::new();
    let mut ann = Member::join(&h, "relay-late", Value::Null).await;
    let mut bob = Member::join(&h, "relay-late", Value::Null).await;
    advance(20_000).await;
    let hello = ann.message(&bob.id, json!("hello"));
    assert_eq!(ann.sync(&h, vec![hello]).await.status, 200);
    // bob's next poll comes 38 s later: past the 45 s after the join.
    advance(38_000).await;
    let r = bob.sync(&h, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(seqs(&r), vec![1]);
}

/// A member of `room` whose outbox holds 60 KiB of mail for `sink`, then
/// one letter for `reader` (behind the rest, so in the outbox and announced).
async fn heavy_sender(h: &Harness, room: &str, sink: &str, reader: &str) -> Member {
    let mut m = Member::join(h, room, Value::Null).await;
    let filler = "f".repeat(15 * 1024);
    let batch: Vec<Value> = (0..4).map(|_| m.message(sink, json!(filler))).collect();
    let r = m.sync(h, batch).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let letter = m.message(reader, json!("hello"));
    let r = m.sync(h, vec![letter]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    m
}

/// A poll decodes two of the others' outboxes whatever their size, then
/// what fits its budget, and names the first it left in `read_from`.
/// Sending that back, a reader takes every sender's mail within about
/// n/2 polls, while members join and announce between its polls (a
/// rotation by the clock alone skipped some for a minute: lost letters).
#[tokio::test(start_paused = true)]
async fn a_reader_sending_read_from_back_misses_no_outbox_while_the_room_changes() {
    let h = Harness::new();
    let room = "relay-cursor";
    let mut reader = Member::join(&h, room, Value::Null).await;
    let mut sink = Member::join(&h, room, Value::Null).await;
    let mut senders = Vec::new();
    for _ in 0..12 {
        senders.push(heavy_sender(&h, room, &sink.id, &reader.id).await);
    }
    let mut heard = std::collections::BTreeSet::new();
    let mut polls = 0;
    while heard.len() < 20 && polls < 16 {
        let r = reader.sync(&h, vec![]).await;
        assert_eq!(r.status, 200, "{}", r.text);
        polls += 1;
        for m in r.body["messages"].as_array().unwrap() {
            assert_eq!(m["data"], json!("hello"));
            assert!(
                heard.insert(m["from"].as_str().unwrap().to_owned()),
                "twice: {m}"
            );
        }
        assert_eq!(sink.sync(&h, vec![]).await.status, 200);
        if senders.len() < 20 {
            senders.push(heavy_sender(&h, room, &sink.id, &reader.id).await);
        }
        advance(1000).await;
    }
    println!("relay cursor: 20 senders of 60 KiB outboxes, read by one reader in {polls} polls");
    assert_eq!(
        heard.len(),
        20,
        "heard {} of 20 senders in {polls} polls",
        heard.len()
    );
    assert!(polls <= 14, "{polls} polls");
}

/// A member whose renewals keep losing the index to others' writes leaves
/// a heartbeat in its own outbox; the next write of the index by anyone
/// folds it in, and the member stays.
#[tokio::test(start_paused = true)]
async fn a_member_that_cannot_renew_is_renewed_by_the_next_writer() {
    let h = Harness::new();
    let room = "relay-heartbeat";
    let mut ann = Member::join(&h, room, Value::Null).await;
    let mut bob = Member::join(&h, room, Value::Null).await;
    let index = format!("relay/{room}");
    // Bob keeps polling; Ann is quiet until her renewal is urgent.
    for _ in 0..10 {
        advance(5_100).await;
        assert_eq!(bob.sync(&h, vec![]).await.status, 200);
    }
    let expiry = expiry_of(&h, &index, &ann.id);
    fn is_index(key: &str) -> bool {
        key == "relay/relay-heartbeat"
    }
    h.worker
        .store
        .inject_where(Operation::Put, is_index, Fault::RateLimited, u32::MAX);
    let r = ann.sync(&h, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    h.worker.store.clear_faults();
    assert_eq!(
        expiry_of(&h, &index, &ann.id),
        expiry,
        "the index was refused"
    );
    let outbox: Value = serde_json::from_slice(
        &h.worker
            .store
            .peek(&format!("{index}/c/{}", ann.id))
            .unwrap(),
    )
    .unwrap();
    assert!(outbox["x"].as_u64().unwrap() > expiry, "{outbox}");
    // Bob's next write of the index (a message) takes Ann's heartbeat along.
    let m = bob.message(&ann.id, json!("still there?"));
    assert_eq!(bob.sync(&h, vec![m]).await.status, 200);
    assert!(expiry_of(&h, &index, &ann.id) > expiry);
    advance(expiry - h.now() + 1_000).await;
    let r = ann.sync(&h, vec![]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["messages"][0]["data"],
        json!("still there?"),
        "{}",
        r.text
    );
}
