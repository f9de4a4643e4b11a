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
//! * counts of Class A (every put, refused or not) and Class B (every get);
//! * injected faults on gets or puts: errors, 429s and slow calls.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};

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
    /// LIST calls (Class A; only the model of the original worker makes them).
    pub lists: u64,
    /// DELETE calls (free).
    pub deletes: u64,
    /// Most puts attempted on one key within any one-second window.
    pub peak_puts_per_key_second: u64,
}

/// Which operations a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Get,
    Put,
}

/// A fault the model can inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails (network, R2 internal error).
    Unavailable,
    /// R2 answers 429.
    RateLimited,
    /// The call succeeds after this many extra ms.
    Slow(u64),
}

/// (operation, which keys, fault, how many more times).
type InjectedFault = (Operation, fn(&str) -> bool, Fault, u32);

pub struct MemoryStore<P> {
    platform: P,
    latency_ms: u64,
    objects: RefCell<HashMap<String, Object>>,
    last_write_ms: RefCell<HashMap<String, u64>>,
    next_etag: Cell<u64>,
    stats: Cell<Stats>,
    /// Recent put attempts per key, for the peak rate.
    recent_puts: RefCell<HashMap<String, VecDeque<u64>>>,
    /// Injected faults: (operation, which keys, fault, how many more times).
    faults: RefCell<Vec<InjectedFault>>,
    /// R2's clock minus the worker's, ms: stamped on `uploaded`.
    upload_skew_ms: Cell<i64>,
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
            recent_puts: RefCell::default(),
            faults: RefCell::default(),
            upload_skew_ms: Cell::new(0),
        }
    }

    /// Makes R2's clock run `ms` ahead of the worker's (negative: behind):
    /// the `uploaded` time of every later write is stamped with it.
    pub fn set_upload_skew_ms(&self, ms: i64) {
        self.upload_skew_ms.set(ms);
    }

    /// Makes the next `times` calls of `operation` meet `fault`
    /// (`u32::MAX`: until [`MemoryStore::clear_faults`]).
    pub fn inject(&self, operation: Operation, fault: Fault, times: u32) {
        self.inject_where(operation, |_| true, fault, times);
    }

    /// As [`MemoryStore::inject`], for the keys `which` accepts only.
    pub fn inject_where(
        &self,
        operation: Operation,
        which: fn(&str) -> bool,
        fault: Fault,
        times: u32,
    ) {
        self.faults
            .borrow_mut()
            .push((operation, which, fault, times));
    }

    pub fn clear_faults(&self) {
        self.faults.borrow_mut().clear();
    }

    /// Takes the fault for this call, if one is pending.
    fn fault(&self, operation: Operation, key: &str) -> Option<Fault> {
        let mut faults = self.faults.borrow_mut();
        let slot = faults
            .iter_mut()
            .find(|(op, which, _, n)| *op == operation && which(key) && *n > 0)?;
        if slot.3 != u32::MAX {
            slot.3 -= 1;
        }
        Some(slot.2.clone())
    }

    /// Applies an injected fault: waits for `Slow`, fails for the others.
    async fn meet_fault(&self, operation: Operation, key: &str) -> Result<(), StoreError> {
        match self.fault(operation, key) {
            None => Ok(()),
            Some(Fault::Slow(ms)) => {
                self.platform.sleep(ms).await;
                Ok(())
            }
            Some(Fault::RateLimited) => Err(StoreError::RateLimited),
            Some(Fault::Unavailable) => Err(StoreError::Unavailable("injected fault".to_owned())),
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

    /// Counts a put attempt (Class A) and tracks the busiest key's rate.
    fn count_put(&self, key: &str, now: u64) {
        let mut recent = self.recent_puts.borrow_mut();
        let window = recent.entry(key.to_owned()).or_default();
        window.push_back(now);
        while window.front().is_some_and(|&t| t + 1000 <= now) {
            window.pop_front();
        }
        let in_window = window.len() as u64;
        self.bump(|s| {
            s.class_a += 1;
            s.peak_puts_per_key_second = s.peak_puts_per_key_second.max(in_window);
        });
    }

    /// Whether R2 would refuse a write to `key` now (429); counts it if so.
    fn rate_limited(&self, key: &str, now: u64) -> bool {
        let limited = self
            .last_write_ms
            .borrow()
            .get(key)
            .is_some_and(|last| now < last + Self::WRITE_INTERVAL_MS);
        if limited {
            self.bump(|s| s.rate_limited += 1);
        }
        limited
    }

    /// Stores `body` as a new version and returns its etag.
    fn write(&self, key: &str, body: Vec<u8>, now: u64) -> String {
        let n = self.next_etag.get();
        self.next_etag.set(n + 1);
        let etag = format!("etag-{n}");
        self.objects.borrow_mut().insert(
            key.to_owned(),
            Object {
                body,
                etag: etag.clone(),
                uploaded_ms: now.saturating_add_signed(self.upload_skew_ms.get()),
            },
        );
        self.last_write_ms.borrow_mut().insert(key.to_owned(), now);
        self.bump(|s| s.writes += 1);
        etag
    }

    /// An unconditional put (Class A), as the original worker made them.
    pub async fn put_unconditional(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
        self.platform.sleep(self.latency_ms).await;
        let now = self.platform.now_ms();
        self.count_put(key, now);
        if self.rate_limited(key, now) {
            return Err(StoreError::RateLimited);
        }
        self.write(key, body, now);
        Ok(())
    }

    /// LIST with a prefix (Class A): every key and body under it. R2 returns
    /// custom metadata with a listing; the body stands in for it here.
    pub async fn list(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        self.platform.sleep(self.latency_ms).await;
        self.bump(|s| {
            s.class_a += 1;
            s.lists += 1;
        });
        let mut out: Vec<(String, Vec<u8>)> = self
            .objects
            .borrow()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| (k.clone(), o.body.clone()))
            .collect();
        out.sort();
        out
    }

    /// DELETE (free).
    pub async fn delete(&self, key: &str) {
        self.platform.sleep(self.latency_ms).await;
        self.bump(|s| s.deletes += 1);
        self.objects.borrow_mut().remove(key);
    }
}

impl<P: Platform> Store for MemoryStore<P> {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.platform.sleep(self.latency_ms).await;
        self.bump(|s| s.class_b += 1);
        self.meet_fault(Operation::Get, key).await?;
        Ok(self.objects.borrow().get(key).cloned())
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        pre: Precondition,
    ) -> Result<PutOutcome, StoreError> {
        self.platform.sleep(self.latency_ms).await;
        self.meet_fault(Operation::Put, key).await?;
        let now = self.platform.now_ms();
        self.count_put(key, now);
        if self.rate_limited(key, now) {
            return Err(StoreError::RateLimited);
        }
        let holds = match (&pre, self.objects.borrow().get(key)) {
            (Precondition::Absent, current) => current.is_none(),
            (Precondition::EtagMatches(etag), Some(current)) => &current.etag == etag,
            (Precondition::EtagMatches(_), None) => false,
        };
        if !holds {
            self.bump(|s| s.precondition_failed += 1);
            return Ok(PutOutcome::PreconditionFailed);
        }
        Ok(PutOutcome::Stored {
            etag: self.write(key, body, now),
        })
    }
}
