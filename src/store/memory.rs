//! An in-memory model of an R2 bucket for native tests and simulations.
//!
//! It models what the worker's correctness and cost depend on:
//! * strong consistency and etag-conditional puts (`Absent`, `EtagMatches`);
//! * R2's limit of one write per second per key: a put less than
//!   [`MemoryStore::WRITE_INTERVAL_MS`] after the last accepted write to the
//!   same key fails with [`StoreError::RateLimited`] (checked before the
//!   precondition, like a front-door limit);
//! * latency: every operation waits `latency_ms` on the platform's clock and
//!   takes effect at the end, so concurrent requests interleave as they do
//!   against R2;
//! * counts of Class A (every put, refused or not) and Class B (every get).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use super::{Object, Precondition, PutOutcome, Store, StoreError};
use crate::platform::Platform;

/// Totals since the store was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every put (Class A), including the two kinds of refusal below.
    pub class_a: u64,
    /// Every get (Class B).
    pub class_b: u64,
    /// Puts refused because their precondition failed.
    pub precondition_failed: u64,
    /// Puts refused with 429 (over one write per second on the key).
    pub rate_limited: u64,
    /// Puts that stored an object.
    pub writes: u64,
}

pub struct MemoryStore<P> {
    platform: P,
    latency_ms: u64,
    objects: RefCell<HashMap<String, Object>>,
    last_write_ms: RefCell<HashMap<String, u64>>,
    next_etag: Cell<u64>,
    stats: Cell<Stats>,
}

impl<P: Platform> MemoryStore<P> {
    /// R2 accepts at most one write per second to the same key.
    pub const WRITE_INTERVAL_MS: u64 = 1000;

    pub fn new(platform: P, latency_ms: u64) -> Self {
        Self {
            platform,
            latency_ms,
            objects: RefCell::default(),
            last_write_ms: RefCell::default(),
            next_etag: Cell::new(1),
            stats: Cell::new(Stats::default()),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats.get()
    }

    /// The body stored under `key`, read without counting an operation.
    pub fn peek(&self, key: &str) -> Option<Vec<u8>> {
        self.objects.borrow().get(key).map(|o| o.body.clone())
    }

    /// Number of objects stored.
    pub fn len(&self) -> usize {
        self.objects.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bump(&self, f: impl FnOnce(&mut Stats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }
}

impl<P: Platform> Store for MemoryStore<P> {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.platform.sleep(self.latency_ms).await;
        self.bump(|s| s.class_b += 1);
        Ok(self.objects.borrow().get(key).cloned())
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        pre: Precondition,
    ) -> Result<PutOutcome, StoreError> {
        self.platform.sleep(self.latency_ms).await;
        self.bump(|s| s.class_a += 1);
        let now = self.platform.now_ms();
        if let Some(last) = self.last_write_ms.borrow().get(key) {
            if now < last + Self::WRITE_INTERVAL_MS {
                self.bump(|s| s.rate_limited += 1);
                return Err(StoreError::RateLimited);
            }
        }
        let mut objects = self.objects.borrow_mut();
        let holds = match (&pre, objects.get(key)) {
            (Precondition::Absent, current) => current.is_none(),
            (Precondition::EtagMatches(etag), Some(current)) => &current.etag == etag,
            (Precondition::EtagMatches(_), None) => false,
        };
        if !holds {
            self.bump(|s| s.precondition_failed += 1);
            return Ok(PutOutcome::PreconditionFailed);
        }
        let n = self.next_etag.get();
        self.next_etag.set(n + 1);
        let etag = format!("etag-{n}");
        objects.insert(
            key.to_owned(),
            Object {
                body,
                etag: etag.clone(),
                uploaded_ms: now,
            },
        );
        self.last_write_ms.borrow_mut().insert(key.to_owned(), now);
        self.bump(|s| s.writes += 1);
        Ok(PutOutcome::Stored { etag })
    }
}
