//! Black-box tests of the signalling protocol through the worker's HTTP layer
//! on the in-memory R2 model (virtual clock).

mod common;

use common::{sessions, Harness, Peer};
use serde_json::{json, Value};

fn ops(reply: &common::Reply) -> (u32, u32) {
    (reply.outcome.ops.class_a, reply.outcome.ops.class_b)
}

#[tokio::test(start_paused = true)]
async fn first_poll_publish_poll_packages_leave_two_peers() {
    let h = Harness::new();
    let mut a = Peer::new("room-one", 1);
    let mut b = Peer::new("room-one", 2);

    // A: first poll is a read and sees nobody; then it publishes at once.
    let r = h.post(&a.first_poll()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"ps": [], "pk": []}));
    assert_eq!(r.response.header("content-type"), Some("application/json"));
    assert_eq!(r.response.header("access-control-allow-origin"), Some("*"));
    assert_eq!(ops(&r), (0, 1));

    let t_a = h.now();
    let r = h.post(&a.publish(t_a, json!([]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["ps"], json!([]));
    let dk_a = r.body["dk"]
        .as_str()
        .expect("dk returned on publish")
        .to_owned();
    assert!(dk_a.len() >= 22, "delete key has at least 128 bits: {dk_a}");
    a.dk = Some(dk_a.clone());
    assert_eq!(
        ops(&r),
        (1, 2),
        "publish = 2 gets (index, own outbox) + 1 put (index)"
    );

    // B: first poll sees A with its d and t appended.
    let r = h.post(&b.first_poll()).await;
    let mut expected = a.d();
    expected.as_array_mut().unwrap().push(json!(t_a));
    assert_eq!(r.body["ps"], json!([expected]));
    assert_eq!(r.body["pk"], json!([]));
    assert!(r.body.get("dk").is_none(), "no dk on a read");

    // B publishes with a package for A.
    let t_b = h.now();
    let pkg = b.package_to(&a, t_b);
    let r = h.post(&b.publish(t_b, json!([pkg]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(sessions(&r.body), vec![a.session.clone()]);
    b.dk = r.body["dk"].as_str().map(str::to_owned);
    assert_ne!(b.dk.as_deref(), Some(dk_a.as_str()));

    // A polls with d (no p): a read that returns B and B's package, untouched.
    let r = h.post(&a.poll(t_a)).await;
    assert_eq!(r.status, 200);
    assert_eq!(sessions(&r.body), vec![b.session.clone()]);
    assert_eq!(r.body["pk"], json!([pkg]));
    assert_eq!(
        ops(&r),
        (0, 2),
        "in the join window: the index and B's outbox"
    );
    // Once the join window has closed, a poll is one read.
    tokio::time::advance(std::time::Duration::from_secs(50)).await;
    let r = h.post(&a.poll(t_a)).await;
    assert_eq!(sessions(&r.body), vec![b.session.clone()]);
    assert_eq!(ops(&r), (0, 1), "steady poll = exactly one R2 read");

    // A heartbeat keeps the delete key.
    let r = h.post(&a.publish(t_a + 1, json!([]))).await;
    assert_eq!(r.body["dk"].as_str(), Some(dk_a.as_str()));

    // B leaves with its key; A no longer sees it.
    let r = h.leave(&b.leave_body(t_b)).await;
    assert_eq!((r.status, r.body.clone()), (200, json!({})));
    let r = h.post(&a.poll(t_a + 1)).await;
    assert_eq!(r.body, json!({"ps": [], "pk": []}));
    // Leaving twice: the entry is gone.
    let r = h.leave(&b.leave_body(t_b)).await;
    assert_eq!(r.status, 404);
}

#[tokio::test(start_paused = true)]
async fn three_peers_packages_reach_only_their_recipient() {
    let h = Harness::new();
    let peers: Vec<Peer> = (1..=3).map(|n| Peer::new("room-three", n)).collect();
    let t = h.now();
    for p in &peers {
        assert_eq!(h.post(&p.publish(t, json!([]))).await.status, 200);
    }
    // Peer 0 sends one package to each of the others.
    let to1 = peers[0].package_to(&peers[1], t);
    let to2 = peers[0].package_to(&peers[2], t);
    h.post(&peers[0].publish(t + 1, json!([to1, to2]))).await;

    let r1 = h.post(&peers[1].poll(t)).await;
    let r2 = h.post(&peers[2].poll(t)).await;
    let r0 = h.post(&peers[0].poll(t + 1)).await;
    assert_eq!(r1.body["pk"], json!([to1]));
    assert_eq!(r2.body["pk"], json!([to2]));
    assert_eq!(
        r0.body["pk"],
        json!([]),
        "a sender does not get its own packages back"
    );
    for (r, me) in [(&r0, 0), (&r1, 1), (&r2, 2)] {
        let mut others: Vec<String> = peers
            .iter()
            .filter(|p| p.session != peers[me].session)
            .map(|p| p.session.clone())
            .collect();
        others.sort();
        assert_eq!(sessions(&r.body), others);
    }
    // A first poll (no d) gets no packages at all.
    let r = h.post(&peers[1].first_poll()).await;
    assert_eq!(r.body["pk"], json!([]));
    // Other rooms see nothing of this one.
    let stranger = Peer::new("room-other", 9);
    let r = h.post(&stranger.poll(t)).await;
    assert_eq!((&r.body["ps"], &r.body["pk"]), (&json!([]), &json!([])));
}

#[tokio::test(start_paused = true)]
async fn same_t_is_not_written_again_and_reload_replaces_entry() {
    let h = Harness::new();
    let a = Peer::new("room-reload", 1);
    let watcher = Peer::new("room-reload", 2);
    let t = h.now();
    let first = h.post(&a.publish(t, json!([]))).await;
    let writes = h.worker.store.stats().writes;
    let again = h.post(&a.publish(t, json!([]))).await;
    assert_eq!(
        h.worker.store.stats().writes,
        writes,
        "same t: nothing written"
    );
    assert_eq!(ops(&again), (0, 2));
    assert_eq!(again.body["dk"], first.body["dk"]);

    // Reload: same context, new session. One entry, the new one.
    let mut reloaded = a.clone();
    reloaded.session = "session-reloaded".into();
    let r = h.post(&reloaded.publish(t + 5, json!([]))).await;
    assert_ne!(
        r.body["dk"], first.body["dk"],
        "a new session gets a new delete key"
    );
    let r = h.post(&watcher.first_poll()).await;
    assert_eq!(sessions(&r.body), vec!["session-reloaded".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn expiry_is_exact_at_read_time() {
    let h = Harness::new();
    let a = Peer::new("room-expiry", 1);
    let b = Peer::new("room-expiry", 2);
    let t = h.now();
    let mut body = a.publish(t, json!([]));
    body["x"] = json!(5000);
    h.post(&body).await;
    let written_at = h.now();

    tokio::time::advance(std::time::Duration::from_millis(4000)).await;
    let r = h.post(&b.first_poll()).await;
    assert_eq!(sessions(&r.body), vec![a.session.clone()]);

    // Just past the expiry (5 s after the write) the entry is never returned,
    // though nothing has removed it from storage.
    let left = written_at + 5000 - h.now();
    tokio::time::advance(std::time::Duration::from_millis(left)).await;
    let r = h.post(&b.first_poll()).await;
    assert_eq!(r.body["ps"], json!([]));

    // Expiry is capped at 15 minutes whatever x asks for.
    let t = h.now();
    let mut body = a.publish(t, json!([]));
    body["x"] = json!(24 * 3600 * 1000);
    h.post(&body).await;
    tokio::time::advance(std::time::Duration::from_millis(15 * 60 * 1000 - 100)).await;
    assert_eq!(
        h.post(&b.first_poll()).await.body["ps"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    tokio::time::advance(std::time::Duration::from_millis(200)).await;
    assert_eq!(h.post(&b.first_poll()).await.body["ps"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn only_the_owner_can_remove_an_entry() {
    let h = Harness::new();
    let mut a = Peer::new("room-owner", 1);
    let b = Peer::new("room-owner", 2);
    let t = h.now();
    a.dk = h.post(&a.publish(t, json!([]))).await.body["dk"]
        .as_str()
        .map(str::to_owned);

    let mut wrong_key = a.clone();
    wrong_key.dk = Some("not-the-key".into());
    assert_eq!(h.leave(&wrong_key.leave_body(t)).await.status, 404);

    let mut wrong_session = a.clone();
    wrong_session.session = "someone-else".into();
    assert_eq!(h.leave(&wrong_session.leave_body(t)).await.status, 404);

    let mut wrong_context = a.clone();
    wrong_context.context = b.context.clone();
    assert_eq!(h.leave(&wrong_context.leave_body(t)).await.status, 404);

    let mut no_key = a.clone();
    no_key.dk = None;
    let r = h.leave(&no_key.leave_body(t)).await;
    assert_eq!((r.status, r.text.as_str()), (400, "Missing delete key"));

    assert_eq!(
        sessions(&h.post(&b.first_poll()).await.body),
        vec![a.session.clone()]
    );
    // A real DELETE method means the same as X-Worker-Method: DELETE.
    let mut req = common::post(&a.leave_body(t));
    req.method = "DELETE".into();
    assert_eq!(h.request(req).await.status, 200);
    assert_eq!(h.post(&b.first_poll()).await.body["ps"], json!([]));
}

#[tokio::test(start_paused = true)]
async fn twenty_simultaneous_publishers_are_all_visible() {
    let h = Harness::new();
    let peers: Vec<Peer> = (0..20).map(|n| Peer::new("room-storm", n)).collect();
    let t = h.now();
    let bodies: Vec<Value> = peers.iter().map(|p| p.publish(t, json!([]))).collect();
    let replies = p2pcf_rs::platform::join_all(bodies.iter().map(|b| h.post(b)).collect()).await;
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text);
    }
    for p in &peers {
        let r = h.post(&p.poll(t)).await;
        assert_eq!(
            r.body["ps"].as_array().unwrap().len(),
            19,
            "{} sees every other peer",
            p.session
        );
    }
    let stats = h.worker.store.stats();
    assert_eq!(stats.writes, 20, "one stored write per publisher");
    println!(
        "20 simultaneous joins: {} class A ({} refused by condition, {} by 429), {} class B, {} ms",
        stats.class_a,
        stats.precondition_failed,
        stats.rate_limited,
        stats.class_b,
        h.now() - t
    );
}

#[tokio::test(start_paused = true)]
async fn steady_poll_costs_one_read_whatever_the_room_size() {
    for n in [2usize, 4, 8, 16] {
        let h = Harness::new();
        let room = format!("room-size-{n}");
        let peers: Vec<Peer> = (0..n).map(|i| Peer::new(&room, i)).collect();
        let t = h.now();
        for p in &peers {
            let r = h.post(&p.publish(t, json!([]))).await;
            assert_eq!(r.status, 200);
        }
        // Steady state: the join windows (45 s) have closed; entries are alive.
        tokio::time::advance(std::time::Duration::from_secs(60)).await;
        let r = h.post(&peers[0].poll(t)).await;
        assert_eq!(r.body["ps"].as_array().unwrap().len(), n - 1);
        assert_eq!(ops(&r), (0, 1));
        let hb = h.post(&peers[0].publish(t + 90_000, json!([]))).await;
        println!(
            "room of {n}: steady poll A={} B={}; heartbeat A={} B={}",
            r.outcome.ops.class_a,
            r.outcome.ops.class_b,
            hb.outcome.ops.class_a,
            hb.outcome.ops.class_b
        );
        assert_eq!(ops(&hb), (1, 2), "heartbeat = two reads + one write");
    }
}

#[tokio::test(start_paused = true)]
async fn poll_response_is_valid_for_the_stock_client() {
    let h = Harness::new();
    let a = Peer::new("room-shape", 1);
    let t = h.now();
    h.post(&a.publish(t, json!([]))).await;
    let r = h.post(&Peer::new("room-shape", 2).first_poll()).await;
    let entry = &r.body["ps"][0];
    assert_eq!(entry.as_array().unwrap().len(), 7, "d + t");
    assert_eq!(entry[6], Value::from(t));
}

/// Issue 9 §7b: the join of the N-th peer costs N+1 Class A with the stock
/// client's real behaviour: its publish, one package write by each of the
/// N-1 others, its answers in one write; the withdrawals that follow each
/// connect (both sides) write nothing.
#[tokio::test(start_paused = true)]
async fn join_of_the_nth_peer_costs_n_plus_1_writes_withdrawals_included() {
    for n in [1usize, 3, 7, 15, 31] {
        let h = Harness::new();
        let room = format!("room-join-{n}");
        let existing: Vec<Peer> = (0..n).map(|i| Peer::new(&room, i)).collect();
        let t0 = h.now();
        for p in &existing {
            h.post(&p.publish(t0, json!([]))).await;
        }
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        let before = h.worker.store.stats();

        // The joiner (A): first poll sees peers, so it publishes on its next step.
        let joiner = Peer::new(&room, 100);
        assert_eq!(
            h.post(&joiner.first_poll()).await.body["ps"]
                .as_array()
                .unwrap()
                .len(),
            n
        );
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        let tj = h.now();
        h.post(&joiner.publish(tj, json!([]))).await;
        // Each existing peer (B) sends its package to the joiner.
        let mut sent_at = Vec::new();
        for p in &existing {
            tokio::time::advance(std::time::Duration::from_millis(300)).await;
            let t = h.now();
            h.post(&p.publish(t, json!([p.package_to(&joiner, t)])))
                .await;
            sent_at.push(t);
        }
        // The joiner gets every package (two polls cover a full room) and
        // answers them all in one write.
        let mut got = std::collections::BTreeSet::new();
        for _ in 0..2 {
            tokio::time::advance(std::time::Duration::from_millis(1500)).await;
            let r = h.post(&joiner.poll(tj)).await;
            for p in r.body["pk"].as_array().unwrap() {
                got.insert(p[1].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(got.len(), n, "every package reached the joiner");
        let ta = h.now();
        let answers: Vec<Value> = existing.iter().map(|p| joiner.package_to(p, ta)).collect();
        h.post(&joiner.publish(ta, Value::Array(answers))).await;
        // Connected: every B withdraws its package, the joiner its answers.
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        for p in &existing {
            let r = h.post(&p.publish(h.now(), json!([]))).await;
            assert_eq!(r.status, 200);
        }
        let r = h.post(&joiner.publish(h.now(), json!([]))).await;
        assert_eq!(r.status, 200);

        let after = h.worker.store.stats();
        let class_a = after.class_a - before.class_a;
        println!(
            "join of peer {}: {} class A, {} class B",
            n + 1,
            class_a,
            after.class_b - before.class_b
        );
        assert_eq!(class_a, (n + 1) as u64 + 1, "N+1 for N = {}", n + 1);
    }
}

/// Issue 9 §1 and §8: a room filling up to 32, one peer every 2 s, where
/// every member hands each newcomer a package and the newcomer answers them
/// all: each newcomer gets every package within two polls, each member its
/// answer, everyone stays listed, and once the windows close the room
/// settles to one read per poll.
#[tokio::test(start_paused = true)]
async fn a_room_filling_to_32_hands_over_every_package_then_settles() {
    let h = Harness::new();
    let n = 32;
    let peers: Vec<Peer> = (0..n).map(|i| Peer::new("room-full-mesh", i)).collect();
    // Each peer's last write (`t`), which its polls report, as the stock client's do.
    let mut last_t = Vec::new();
    for (i, newcomer) in peers.iter().enumerate() {
        let tj = h.now();
        assert_eq!(h.post(&newcomer.publish(tj, json!([]))).await.status, 200);
        last_t.push(tj);
        let members = &peers[..i];
        // Each member's package for the newcomer (earlier ones withdrawn: connected).
        for (k, m) in members.iter().enumerate() {
            let t = h.now();
            let r = h
                .post(&m.publish(t, json!([m.package_to(newcomer, t)])))
                .await;
            assert_eq!(r.status, 200);
            last_t[k] = t;
        }
        let mut from = std::collections::BTreeSet::new();
        for _ in 0..2 {
            tokio::time::advance(std::time::Duration::from_millis(1100)).await;
            let r = h.post(&newcomer.poll(tj)).await;
            assert_eq!(r.body["ps"].as_array().unwrap().len(), i, "everyone listed");
            for pkg in r.body["pk"].as_array().unwrap() {
                assert_eq!(pkg[0].as_str(), Some(newcomer.session.as_str()));
                from.insert(pkg[1].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(
            from.len(),
            i,
            "newcomer {i} got a package from every member"
        );
        let ta = h.now();
        let answers: Vec<Value> = members.iter().map(|m| newcomer.package_to(m, ta)).collect();
        assert_eq!(
            h.post(&newcomer.publish(ta, Value::Array(answers)))
                .await
                .status,
            200
        );
        last_t[i] = ta;
        tokio::time::advance(std::time::Duration::from_millis(1100)).await;
        for (m, t) in members.iter().zip(&last_t) {
            let r = h.post(&m.poll(*t)).await;
            let answer = r.body["pk"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p[1].as_str() == Some(newcomer.session.as_str()));
            assert!(answer, "member {} got newcomer {i}'s answer", m.session);
        }
        tokio::time::advance(std::time::Duration::from_millis(700)).await;
    }
    // The windows close; everyone keeps polling every 5 s.
    for _ in 0..10 {
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        for (p, t) in peers.iter().zip(&last_t) {
            let r = h.post(&p.poll(*t)).await;
            assert_eq!(r.body["ps"].as_array().unwrap().len(), n - 1);
        }
    }
    // A poll that needs no renewal is one read.
    for (p, t) in peers.iter().zip(&last_t) {
        let r = h.post(&p.poll(*t)).await;
        assert_eq!(ops(&r), (0, 1), "a steady poll is one read");
    }
}

/// Issue 9 §1: who is listed never hinges on an outbox read. A peer alive
/// on package writes alone (its index write is old) stays listed while its
/// outbox cannot be read, because its own polls renewed it in the index.
#[tokio::test(start_paused = true)]
async fn a_peer_alive_on_package_writes_stays_listed_when_outboxes_fail() {
    use p2pcf_rs::store::memory::{Fault, Operation};
    let h = Harness::new();
    let (a, b, c) = (
        Peer::new("room-alive", 1),
        Peer::new("room-alive", 2),
        Peer::new("room-alive", 3),
    );
    let t0 = h.now();
    h.post(&a.publish(t0, json!([]))).await;
    h.post(&b.publish(t0, json!([]))).await;
    // c joins at +40 s; b hands it a package at +45 s (outbox only). The
    // stock client's next heartbeat is 90 s after that: past b's index
    // expiry (+120 s).
    tokio::time::advance(std::time::Duration::from_secs(40)).await;
    h.post(&c.publish(h.now(), json!([]))).await;
    tokio::time::advance(std::time::Duration::from_secs(5)).await;
    let tb = h.now();
    assert_eq!(
        ops(&h.post(&b.publish(tb, json!([b.package_to(&c, tb)]))).await).0,
        1,
        "one write: the outbox"
    );
    // Everyone polls every 5 s, as the stock client does; b's polls report
    // its last write, and b heartbeats 90 s after it (same packages). From
    // +130 s (past b's first index expiry) b's outbox cannot be read. a
    // never stops seeing b.
    let mut b_last = tb;
    for round in 0..30 {
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        if round == 17 {
            h.worker.store.inject_where(
                Operation::Get,
                |k| k.contains("/c/"),
                Fault::Unavailable,
                u32::MAX,
            );
        }
        let seen = h.post(&a.poll(t0)).await;
        assert!(
            sessions(&seen.body).contains(&b.session),
            "a lost b at +{} s",
            45 + 5 * (round + 1)
        );
        if h.now() >= b_last + 90_000 {
            b_last = h.now();
            // It may be refused (b's own outbox cannot be read either): the
            // stock client does not care, its polls carry the new t.
            h.post(&b.publish(b_last, json!([b.package_to(&c, tb)])))
                .await;
        } else {
            h.post(&b.poll(b_last)).await;
        }
        h.post(&c.poll(h.now())).await;
    }
}

/// Issue 9 §3: a leave stays a leave. A heartbeat that was in flight when
/// the leave landed cannot bring the entry back; the tab's next page load
/// (a new session) joins normally.
#[tokio::test(start_paused = true)]
async fn a_heartbeat_landing_after_the_leave_does_not_resurrect_the_entry() {
    let h = Harness::new();
    let (mut a, watcher) = (Peer::new("room-ghost", 1), Peer::new("room-ghost", 2));
    let t0 = h.now();
    a.dk = h.post(&a.publish(t0, json!([]))).await.body["dk"]
        .as_str()
        .map(str::to_owned);
    h.post(&watcher.publish(t0, json!([]))).await;
    tokio::time::advance(std::time::Duration::from_secs(100)).await;
    // destroy(): the leave lands while a heartbeat with an older t waits.
    let heartbeat = a.publish(h.now() - 10, json!([]));
    assert_eq!(h.leave(&a.leave_body(h.now())).await.status, 200);
    let late = h.post(&heartbeat).await;
    assert_eq!(
        (late.status, late.text.as_str()),
        (410, "This session left the room; a new session can join")
    );
    // Nor does a stale poll with d register it again.
    let r = h.post(&a.poll(h.now() - 10)).await;
    assert!(r.body.get("dk").is_none());
    assert_eq!(
        h.post(&watcher.poll(t0)).await.body["ps"],
        json!([]),
        "no ghost"
    );
    // The reload: same tab (context), new session.
    let mut reloaded = a.clone();
    reloaded.session = "session-1-reloaded".into();
    assert_eq!(
        h.post(&reloaded.publish(h.now(), json!([]))).await.status,
        200
    );
    assert_eq!(
        sessions(&h.post(&watcher.poll(t0)).await.body),
        vec![reloaded.session.clone()]
    );
}

/// Issue 17 §5: a stock client whose clock is hours off (the original
/// never checked `t`) joins, stays listed through its heartbeats and
/// polls, and its leave removes it: expiry runs on the worker's clock.
#[tokio::test(start_paused = true)]
async fn a_client_whose_clock_is_hours_off_is_served() {
    let h = Harness::new();
    let mut ann = Peer::new("skewed-room", 1);
    let bob = Peer::new("skewed-room", 2);
    let skew = 3 * 3_600_000;
    let mut last_write = h.now() - skew;
    let r = h.post(&ann.publish(last_write, json!([]))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    ann.dk = r.body["dk"].as_str().map(str::to_owned);
    h.post(&bob.publish(h.now(), json!([]))).await;
    for step in 1..=60u64 {
        tokio::time::advance(std::time::Duration::from_secs(5)).await;
        if step % 18 == 0 {
            // The stock client's heartbeat, 90 s after its last write.
            last_write = h.now() - skew;
            assert_eq!(
                h.post(&ann.publish(last_write, json!([]))).await.status,
                200
            );
        } else {
            assert_eq!(h.post(&ann.poll(last_write)).await.status, 200);
        }
        let seen = h.post(&bob.poll(h.now())).await;
        assert!(
            sessions(&seen.body).contains(&ann.session),
            "bob lost ann after {} s",
            step * 5
        );
        if step % 18 == 0 {
            h.post(&bob.publish(h.now(), json!([]))).await;
        }
    }
    assert_eq!(h.leave(&ann.leave_body(last_write)).await.status, 200);
    assert!(!sessions(&h.post(&bob.poll(h.now())).await.body).contains(&ann.session));
}
