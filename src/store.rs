//! Storage behind a small trait: the few R2 operations the worker uses.
//!
//! * `r2` is the real thing (wasm only);
//! * [`memory`] models R2 for native tests: etag-conditional puts, the
//!   1 write per second per key limit, and Class A / Class B counts;
//! * [`Counting`] wraps either and counts what one request spent.

use std::cell::Cell;

#[cfg(not(target_arch = "wasm32"))]
pub mod memory;
#[cfg(target_arch = "wasm32")]
pub mod r2;

/// An object as read back: its body and the version facts conditions use.
#[derive(Clone, Debug)]
pub struct Object {
    pub body: Vec<u8>,
    pub etag: String,
    /// Upload time of this version, ms since the epoch.
    pub uploaded_ms: u64,
}

/// When a put may happen. R2 evaluates it atomically with the write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Only if no object exists under the key (`etagDoesNotMatch: "*"`).
    Absent,
    /// Only if the current version has this etag (`etagMatches`).
    EtagMatches(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// Durably written; the new version's etag.
    Stored { etag: String },
    /// The precondition did not hold; nothing was written (still a Class A operation).
    PreconditionFailed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// R2 answered 429: more than one write per second to this key.
    RateLimited,
    /// Any other failure (network, R2 internal error); the operation may be retried.
    Unavailable(String),
}

/// R2's code for "too many writes to this object" (HTTP 429).
pub const R2_TOO_MANY_REQUESTS: u32 = 10058;

/// Classifies an error of R2's Workers API by the code R2 puts at the end of
/// its message, e.g. `put: Reduce your concurrent request rate for the same
/// object. (10058)`. Anything else (network, internal errors, messages that
/// merely mention a rate) is [`StoreError::Unavailable`].
pub fn classify_r2_error(message: &str) -> StoreError {
    let code = message
        .trim_end()
        .strip_suffix(')')
        .and_then(|m| m.rsplit_once('('))
        .and_then(|(_, code)| code.parse::<u32>().ok());
    match code {
        Some(R2_TOO_MANY_REQUESTS) => StoreError::RateLimited,
        _ => StoreError::Unavailable(message.to_owned()),
    }
}

/// The storage operations the worker needs. Implementations must be strongly
/// consistent: a get after a successful put sees it.
#[allow(async_fn_in_trait)] // single-threaded (wasm): no Send bound wanted
pub trait Store {
    /// Class B.
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError>;
    /// Class A, also when the precondition fails.
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        pre: Precondition,
    ) -> Result<PutOutcome, StoreError>;
}

/// Operations one request made, by R2 pricing class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Class A: puts, including refused conditional puts and 429s.
    pub class_a: u32,
    /// Class B: gets.
    pub class_b: u32,
}

impl OpCounts {
    pub fn total(&self) -> u32 {
        self.class_a + self.class_b
    }
}

/// Counts the operations made through it (each is also one subrequest).
pub struct Counting<'a, S> {
    inner: &'a S,
    counts: Cell<OpCounts>,
}

impl<'a, S> Counting<'a, S> {
    pub fn new(inner: &'a S) -> Self {
        Self {
            inner,
            counts: Cell::new(OpCounts::default()),
        }
    }

    pub fn counts(&self) -> OpCounts {
        self.counts.get()
    }

    fn bump(&self, f: impl FnOnce(&mut OpCounts)) {
        let mut c = self.counts.get();
        f(&mut c);
        self.counts.set(c);
    }
}

impl<S: Store> Store for Counting<'_, S> {
    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.bump(|c| c.class_b += 1);
        self.inner.get(key).await
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        pre: Precondition,
    ) -> Result<PutOutcome, StoreError> {
        self.bump(|c| c.class_a += 1);
        self.inner.put(key, body, pre).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r2_errors_are_classified_by_their_code() {
        let limited = "put: Reduce your concurrent request rate for the same object. (10058)";
        assert_eq!(classify_r2_error(limited), StoreError::RateLimited);
        for other in [
            "put: We encountered an internal error. Please try again. (10001)",
            "get: Network connection lost.",
            "put: generate rate too high, not an R2 code",
            "put: (10058) in the middle is not the code (10001)",
            "",
        ] {
            assert!(
                matches!(classify_r2_error(other), StoreError::Unavailable(_)),
                "{other}"
            );
        }
    }
}
