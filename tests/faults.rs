//! R2 refusing writes: retried inside the request; when retries run out the
//! client gets 503 with Retry-After and CORS, and nothing was stored.

mod common;

use std::cell::Cell;

use common::{post, Peer, SimPlatform};
use p2pcf_rs::config::Config;
use p2pcf_rs::http::{serve, Services};
use p2pcf_rs::quota::QuotaLedger;
use p2pcf_rs::service::RetryPolicy;
use p2pcf_rs::store::memory::MemoryStore;
use p2pcf_rs::store::{Object, Precondition, PutOutcome, Store, StoreError};
use serde_json::{json, Value};

/// Fails the first `failures` puts with `error`, then behaves like R2.
struct Refusing<'a> {
    inner: MemoryStore<&'a SimPlatform>,
    failures: Cell<u32>,
    error: StoreError,
}

impl Store for Refusing<'_> {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        pre: Precondition,
    ) -> Result<PutOutcome, StoreError> {
        if self.failures.get() > 0 {
            self.failures.set(self.failures.get() - 1);
            return Err(self.error.clone());
        }
        self.inner.put(key, body, pre).await
    }
}

async fn publish_through(
    failures: u32,
    error: StoreError,
) -> (u16, Value, Option<String>, Option<String>, usize) {
    let platform: &'static SimPlatform = Box::leak(Box::new(SimPlatform::new(3)));
    let store = Refusing {
        inner: MemoryStore::new(platform, 10),
        failures: Cell::new(failures),
        error,
    };
    let (config, ledger, policy) = (
        Config::default(),
        QuotaLedger::default(),
        RetryPolicy::default(),
    );
    let services = Services {
        store: Some(&store),
        platform,
        config: &config,
        ledger: &ledger,
        policy: &policy,
        version: "test",
    };
    let peer = Peer::new("room-faults", 1);
    let (resp, _) = serve(&post(&peer.publish(common::EPOCH_MS, json!([]))), &services).await;
    let body = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (
        resp.status,
        body,
        resp.header("retry-after").map(str::to_owned),
        resp.header("access-control-allow-origin")
            .map(str::to_owned),
        store.inner.len(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_few_refusals_are_retried_and_the_write_lands() {
    for error in [
        StoreError::RateLimited,
        StoreError::Unavailable("internal error".into()),
    ] {
        let (status, body, _, _, stored) = publish_through(3, error.clone()).await;
        assert_eq!(status, 200, "{error:?}");
        assert!(body["dk"].is_string());
        assert_eq!(stored, 1, "the room was written");
    }
}

#[tokio::test(start_paused = true)]
async fn endless_refusals_give_503_with_retry_after_and_store_nothing() {
    for error in [
        StoreError::RateLimited,
        StoreError::Unavailable("internal error".into()),
    ] {
        let (status, _, retry_after, cors, stored) = publish_through(u32::MAX, error.clone()).await;
        assert_eq!(status, 503, "{error:?}");
        assert_eq!(retry_after.as_deref(), Some("2"));
        assert_eq!(cors.as_deref(), Some("*"));
        assert_eq!(stored, 0, "nothing half-written");
    }
}
