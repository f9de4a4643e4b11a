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

#[tokio::test(start_paused = true)]
async fn join_of_the_next_peer_costs_n_plus_2_writes() {
    for n in [1usize, 3, 7, 15] {
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
        // Each existing peer (B) sends its package to the joiner, a poll interval apart.
        for p in &existing {
            tokio::time::advance(std::time::Duration::from_millis(1500)).await;
            let t = h.now();
            h.post(&p.publish(t, json!([p.package_to(&joiner, t)])))
                .await;
        }
        // The joiner got every package and answers them all in one write.
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        let r = h.post(&joiner.poll(tj)).await;
        assert_eq!(r.body["pk"].as_array().unwrap().len(), n);
        let t = h.now();
        let answers: Vec<Value> = existing.iter().map(|p| joiner.package_to(p, t)).collect();
        h.post(&joiner.publish(t, Value::Array(answers))).await;

        let after = h.worker.store.stats();
        let class_a = after.class_a - before.class_a;
        println!(
            "join of peer {}: {} class A, {} class B",
            n + 1,
            class_a,
            after.class_b - before.class_b
        );
        assert_eq!(class_a, n as u64 + 2);
    }
}
