//! CPU cost of handling a poll, measured natively (a proxy for the Worker:
//! same code, compiled for x86_64 instead of wasm32, so treat the figures as
//! a lower bound; V8's wasm is typically within 1.5-2x of native).
//!
//!     cargo run --release --bin cpu

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    bench::run();
}

#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod bench {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    use std::time::Instant;

    use p2pcf_rs::config::Config;
    use p2pcf_rs::http::{serve, HttpRequest, Services};
    use p2pcf_rs::platform::Platform;
    use p2pcf_rs::quota::QuotaLedger;
    use p2pcf_rs::service::RetryPolicy;
    use p2pcf_rs::store::memory::MemoryStore;
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
            let store = MemoryStore::new(&platform, 0);
            let (config, ledger, policy) = (
                Config::default(),
                QuotaLedger::default(),
                RetryPolicy::default(),
            );
            let services = Services {
                store: Some(&store),
                platform: &platform,
                config: &config,
                ledger: &ledger,
                policy: &policy,
                version: "bench",
            };
            for n in 0..peers {
                platform.0.set(platform.0.get() + 1500);
                let (r, _) = block_on(serve(&request(&body(n, platform.0.get(), true)), &services));
                assert_eq!(r.status, 200);
            }
            // Steady state: join windows closed.
            platform.0.set(platform.0.get() + 50_000);
            let poll = request(&body(0, platform.0.get() - 10_000, false));
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
    }
}
