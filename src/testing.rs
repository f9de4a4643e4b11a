//! The worker without the Workers runtime (native only): its real HTTP
//! layer ([`serve`](fn@crate::edge::serve)) over the in-memory R2 model, on a virtual clock
//! (tokio's paused time) with seeded randomness.
//!
//! The black-box tests in `tests/` and the lab (`lab/`: the cost simulator
//! and the CPU bench) drive the worker through [`LocalWorker`], so they run
//! exactly the code the Worker runs, minus `worker_entry`.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use crate::config::Config;
use crate::edge::access::QuotaLedger;
use crate::edge::{serve, HttpRequest, HttpResponse, Isolate, Outcome, Services};
use crate::host::r2::RetryPolicy;
use crate::platform::Platform;
use crate::store::memory::MemoryStore;

/// 2026-11-21T00:00:00Z: virtual time starts here.
pub const EPOCH_MS: u64 = 1_795_219_200_000;

/// A stand-in for the network: (url, bearer token, body) to (status, body).
pub type Outbound = Box<dyn Fn(&str, &str, &[u8]) -> Result<(u16, Vec<u8>), String>>;

/// Virtual clock (tokio paused time), seeded randomness (splitmix64), and
/// an optional stand-in for outbound requests.
pub struct SimPlatform {
    start: tokio::time::Instant,
    rng: Cell<u64>,
    outbound: std::cell::RefCell<Option<Outbound>>,
}

impl SimPlatform {
    /// Must be created inside a tokio runtime with paused time.
    pub fn new(seed: u64) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            rng: Cell::new(seed),
            outbound: std::cell::RefCell::new(None),
        }
    }

    /// Answers the worker's outbound requests with `f` from now on.
    pub fn set_outbound(&self, f: Outbound) {
        *self.outbound.borrow_mut() = Some(f);
    }

    pub fn next_u64(&self) -> u64 {
        let mut z = self.rng.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Milliseconds since the simulation started.
    pub fn elapsed_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Sleeps until `elapsed_ms() == at`, if that is still ahead.
    pub async fn sleep_until(&self, at: u64) {
        let now = self.elapsed_ms();
        if at > now {
            self.sleep(at - now).await;
        }
    }
}

impl Platform for SimPlatform {
    fn now_ms(&self) -> u64 {
        EPOCH_MS + self.elapsed_ms()
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        tokio::time::sleep(Duration::from_millis(ms))
    }

    fn fill_random(&self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<(u16, Vec<u8>), String>> {
        let answer = match &*self.outbound.borrow() {
            Some(f) => f(url, bearer, body),
            None => Err("no network in the simulation".to_owned()),
        };
        std::future::ready(answer)
    }
}

/// This worker over the in-memory R2 model, serving requests as the Worker
/// would. `P` is the clock and randomness: [`SimPlatform`] in tests and the
/// simulator, a fixed clock in the CPU bench.
pub struct LocalWorker<'a, P: Platform> {
    /// The R2 model: its operation counts, faults and latency.
    pub store: MemoryStore<&'a P>,
    pub platform: &'a P,
    pub config: Config,
    pub ledger: QuotaLedger,
    pub isolate: Isolate,
    pub policy: RetryPolicy,
}

impl<'a, P: Platform> LocalWorker<'a, P> {
    /// Default configuration; every R2 operation takes `latency_ms`.
    pub fn new(platform: &'a P, latency_ms: u64) -> Self {
        Self::with_config(platform, Config::default(), latency_ms)
    }

    pub fn with_config(platform: &'a P, config: Config, latency_ms: u64) -> Self {
        Self {
            store: MemoryStore::new(platform, latency_ms),
            platform,
            config,
            ledger: QuotaLedger::default(),
            isolate: Isolate::new([7; 16]),
            policy: RetryPolicy::default(),
        }
    }

    /// What `serve` needs, borrowed from this worker.
    pub fn services(&self) -> Services<'_, MemoryStore<&'a P>, P> {
        Services {
            store: Some(&self.store),
            platform: self.platform,
            config: &self.config,
            ledger: &self.ledger,
            isolate: &self.isolate,
            policy: &self.policy,
            version: "local",
        }
    }

    /// Serves one request as the Worker would.
    pub async fn serve(&self, request: &HttpRequest) -> (HttpResponse, Outcome) {
        serve(request, &self.services()).await
    }
}
