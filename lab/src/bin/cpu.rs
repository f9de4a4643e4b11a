//! CPU cost of handling a poll, measured natively (a proxy for the Worker:
//! same code, compiled for x86_64 instead of wasm32, so treat the figures as
//! a lower bound; V8's wasm is typically within 1.5-2x of native).
//!
//!     cargo cpu     # = cargo run --release -p p2pcf-lab --bin cpu

fn main() {
    bench::run();
}

mod bench {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    use p2pcf_rs::edge::{serve, HttpRequest};
    use p2pcf_rs::platform::Platform;
    use p2pcf_rs::testing::LocalWorker;
    use serde_json::{json, Value};

    /// A clock that only moves when told to, timers that fire at once.
    struct Fixed(std::cell::Cell<u64>);

    impl Platform for Fixed {
        fn now_ms(&self) -> u64 {
            self.0.get()
        }
        fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
            self.0.set(self.0.get() + ms);
            std::future::ready(())
        }
        fn fill_random(&self, buf: &mut [u8]) {
            buf.fill(7);
        }
    }

    /// Drives a future whose every await is ready at once.
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    const NOW: u64 = 1_795_219_200_000;

    /// Serves `poll` `iterations` times (each must answer 200): the time per
    /// request, and the last answer's size and R2 reads.
    fn time_polls<S: p2pcf_rs::store::Store, P: Platform>(
        poll: &HttpRequest,
        services: &p2pcf_rs::edge::Services<'_, S, P>,
        iterations: u32,
    ) -> (std::time::Duration, usize, u32) {
        let start = Instant::now();
        let (mut bytes, mut reads) = (0, 0);
        for _ in 0..iterations {
            let (r, outcome) = block_on(serve(poll, services));
            assert_eq!(r.status, 200);
            bytes = r.body.len();
            reads = outcome.ops.class_b;
        }
        (start.elapsed() / iterations, bytes, reads)
    }

    fn body(n: usize, t: u64, with_p: bool) -> Value {
        let d = json!([
            format!("session-{n:02}-abcdefgh"),
            format!("client-{n:02}"),
            false,
            "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=",
            NOW + n as u64,
            ["203.0.113.9", "2001:db8::9"]
        ]);
        let mut b = json!({"r": "bench-room", "k": format!("context-{n:02}-abcdefghij"), "d": d, "t": t, "x": 120000});
        if with_p {
            b["p"] = json!([]);
        }
        b
    }

    fn request(body: &Value) -> HttpRequest {
        HttpRequest {
            method: "POST".into(),
            url: String::new(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap(),
        }
    }

    pub fn run() {
        for peers in [2usize, 4, 8, 16, 32] {
            let platform = Fixed(std::cell::Cell::new(NOW));
            let worker = LocalWorker::new(&platform, 0);
            let services = worker.services();
            for n in 0..peers {
                platform.0.set(platform.0.get() + 1500);
                let (r, _) = block_on(serve(&request(&body(n, platform.0.get(), true)), &services));
                assert_eq!(r.status, 200);
            }
            // Steady state: join windows closed.
            platform.0.set(platform.0.get() + 50_000);
            // Peer 0's poll, reporting its last write: the join.
            let poll = request(&body(0, NOW + 1500, false));
            let iterations = 20_000u32;
            let start = Instant::now();
            let mut bytes = 0;
            for _ in 0..iterations {
                let (r, outcome) = block_on(serve(&poll, &services));
                assert_eq!((r.status, outcome.ops.class_b), (200, 1));
                bytes = r.body.len();
            }
            let per = start.elapsed() / iterations;
            println!(
                "steady poll, room of {peers:>2}: {:>6.1} µs per request (parse, 1 index read, view, JSON), response {bytes} bytes",
                per.as_secs_f64() * 1e6
            );
        }
        worst_case();
        relay_worst_cases();
    }

    /// The most expensive poll the limits allow: a full room (MAX_PEERS)
    /// whose every member has the largest allowed `d` (64-character ids, the
    /// most reflexive IPs, all IPv6) and an outbox filled to the request body
    /// limit with packages of the largest allowed size (one of them for the
    /// poller), read in the poller's join window (every outbox at once).
    fn worst_case() {
        let platform = Fixed(std::cell::Cell::new(NOW));
        let worker = LocalWorker::new(&platform, 0);
        let services = worker.services();
        let limits = &worker.config.limits;
        let id = |n: usize, c: char| format!("{n:02}{}", c.to_string().repeat(62));
        let ips: Vec<String> = (0..p2pcf_rs::wire::p2pcf::parse::MAX_REFLEXIVE_IPS)
            .map(|i| format!("2001:db8:ffff:ffff:ffff:ffff:ffff:{i:04x}"))
            .collect();
        let d = |n: usize| {
            json!([
                id(n, 's'),
                id(n, 'c'),
                false,
                "q83vASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4k=",
                NOW + n as u64,
                ips
            ])
        };
        let poller = 0usize;
        let body = |n: usize, t: u64, p: Option<Value>| {
            let mut b = json!({"r": "bench-room", "k": id(n, 'k'), "d": d(n), "t": t, "x": 120000});
            if let Some(p) = p {
                b["p"] = p;
            }
            b
        };
        // The poller joins first; the others join and fill their outboxes.
        let (r, _) = block_on(serve(
            &request(&body(poller, NOW, Some(json!([])))),
            &services,
        ));
        assert_eq!(r.status, 200);
        let mut stored_bytes = 0;
        for n in 1..limits.max_peers {
            platform.0.set(platform.0.get() + 1100);
            let t = platform.0.get();
            assert_eq!(
                block_on(serve(&request(&body(n, t, Some(json!([])))), &services))
                    .0
                    .status,
                200
            );
            // Packages as large as allowed (one for each other member, the
            // poller's first), as many as the body limit takes.
            let candidate = "c".repeat(100);
            let mut packages = Vec::new();
            for to in (0..limits.max_peers).filter(|m| *m != n) {
                let mut pkg = json!([id(to, 's'), id(n, 's'), null, null, null, "u", "p", t, []]);
                let mut cands = Vec::new();
                while serde_json::to_vec(&pkg).unwrap().len() + candidate.len() + 3
                    < limits.max_package_bytes
                    && cands.len() < limits.max_candidates
                {
                    cands.push(candidate.clone());
                    pkg[8] = json!(cands);
                }
                packages.push(pkg);
                let b = body(n, t + 1, Some(json!(packages)));
                if serde_json::to_vec(&b).unwrap().len() > limits.max_body_bytes
                    || packages.len() > limits.max_packages
                {
                    packages.pop();
                    break;
                }
            }
            let r = block_on(serve(
                &request(&body(n, t + 1, Some(json!(packages)))),
                &services,
            ))
            .0;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            stored_bytes += serde_json::to_vec(&packages).unwrap().len();
        }
        platform.0.set(platform.0.get() + 1000);
        let poll = request(&body(poller, NOW, None));
        let (per, bytes, reads) = time_polls(&poll, &services, 200);
        let index = worker.store.peek("rooms/bench-room").map_or(0, |b| b.len());
        println!(
            "worst-case poll, room of {}: {:>8.1} µs per request ({reads} reads: index of {index} bytes, {} KiB of outboxes), response {} KiB",
            limits.max_peers,
            per.as_secs_f64() * 1e6,
            stored_bytes / 1024,
            bytes / 1024
        );
    }

    fn relay_request(body: &Value) -> HttpRequest {
        HttpRequest {
            url: "https://bench.example/relay/v1".into(),
            ..request(body)
        }
    }

    /// The most expensive relay requests the limits allow: a full room
    /// (MAX_PEERS) of members with the largest `meta`, every one of them
    /// holding as many undelivered bytes as allowed for the poller, in
    /// 16 KiB messages of the costliest JSON to scan (small numbers), all
    /// read by the poller in its join window; and a sender with a full
    /// outbox sending the largest batch.
    fn relay_worst_cases() {
        use p2pcf_rs::engine::mailbox::MAX_HELD_BYTES;
        use p2pcf_rs::wire::relay::parse::{MAX_MESSAGE_BYTES, MAX_META_BYTES};

        let platform = Fixed(std::cell::Cell::new(NOW));
        let worker = LocalWorker::new(&platform, 0);
        let services = worker.services();
        let peers = worker.config.limits.max_peers;
        let call = |body: &Value| {
            let (r, outcome) = block_on(serve(&relay_request(body), &services));
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            (r.status, v, r.body.len(), outcome)
        };
        let meta = json!({"pad": "m".repeat(MAX_META_BYTES - 12)});
        let mut members = Vec::new();
        for n in 0..peers {
            platform.0.set(platform.0.get() + 1100);
            // (This platform's "random" bytes are constant: the nonce makes the ids.)
            let nonce = format!("bench-member-{n:04}-nonce");
            let (status, v, _, _) =
                call(&json!({"room": "bench-relay", "meta": meta, "nonce": nonce}));
            assert_eq!(status, 200, "{v}");
            members.push((
                v["id"].as_str().unwrap().to_owned(),
                v["token"].as_str().unwrap().to_owned(),
            ));
        }
        let (poller, poller_token) = members[0].clone();
        let numbers = format!("[{}0]", "0,".repeat((MAX_MESSAGE_BYTES - 3) / 2));
        let data: Value = serde_json::from_str(&numbers).unwrap();
        let mut held = 0usize;
        for (id, token) in &members[1..] {
            // (The clock moves with the writes' waits: everyone polls to stay in.)
            for (id, token) in &members {
                let poll = json!({"room": "bench-relay", "id": id, "token": token});
                assert_eq!(call(&poll).0, 200);
            }
            for seq in 1..=64 {
                let body = json!({"room": "bench-relay", "id": id, "token": token,
                    "send": [{"to": poller, "seq": seq, "data": data}]});
                let (status, v, _, _) = call(&body);
                if status == 429 {
                    break;
                }
                assert_eq!(status, 200, "{v}");
                assert!(v.get("undeliverable").is_none(), "{v}");
                held += MAX_MESSAGE_BYTES;
            }
        }
        let poll = relay_request(
            &json!({"room": "bench-relay", "id": poller, "token": poller_token, "after": {}}),
        );
        let (per, bytes, reads) = time_polls(&poll, &services, 100);
        let index = worker
            .store
            .peek("relay/bench-relay")
            .map_or(0, |b| b.len());
        println!(
            "relay worst-case poll, room of {peers}: {:>8.1} µs per request ({reads} reads: index of {index} bytes, {} KiB held for the poller, cap {} KiB a member), response {} KiB",
            per.as_secs_f64() * 1e6,
            held / 1024,
            MAX_HELD_BYTES / 1024,
            bytes / 1024
        );

        // A member whose outbox is full sends the largest batch it may: refused (429) after reading it.
        let (id, token) = &members[1];
        for seq in 500.. {
            let body = json!({"room": "bench-relay", "id": id, "token": token,
                "send": [{"to": "*", "seq": seq, "data": data}]});
            if call(&body).0 == 429 {
                break;
            }
        }
        let batch: Vec<Value> = (0..3)
            .map(|i| json!({"to": "*", "seq": 10_000 + i, "data": data}))
            .collect();
        let send =
            relay_request(&json!({"room": "bench-relay", "id": id, "token": token, "send": batch}));
        let iterations = 100u32;
        let start = Instant::now();
        for _ in 0..iterations {
            let (r, _) = block_on(serve(&send, &services));
            assert_eq!(r.status, 429);
        }
        let per = start.elapsed() / iterations;
        println!(
            "relay worst-case send (full outbox, 3 x 16 KiB broadcast refused): {:>8.1} µs per request",
            per.as_secs_f64() * 1e6
        );
    }
}
