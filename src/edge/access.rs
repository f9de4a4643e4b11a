//! Who may call, by origin (`ALLOWED_ORIGINS`, `ORIGIN_QUOTA`,
//! `WITHOUT_ORIGIN`), with the original worker's semantics by default:
//!
//! * a request without an `Origin` header is not checked (it is not a
//!   browser's), unless `WITHOUT_ORIGIN` refuses it or gives it a monthly
//!   quota of its own (counted as the origin `without-origin`);
//! * an origin in `ALLOWED_ORIGINS` is always allowed and not counted;
//! * any other origin gets `ORIGIN_QUOTA` signalling requests per calendar
//!   month (UTC): 401 when the quota is 0, 429 once it is used up.
//!
//! Counting costs few R2 operations: each Worker isolate keeps a tally per
//! origin, re-reads the stored count at most once a minute and adds its own
//! requests to it with a conditional put every [`FLUSH_EVERY`] requests or
//! once a minute. The count is therefore exact except for increments an
//! isolate had not flushed when it was evicted (fewer than [`FLUSH_EVERY`] per
//! eviction), and a decision can lag other isolates' traffic by up to a minute
//! (so the quota can be overshot by what other isolates served in that minute).

use std::cell::RefCell;

use crate::config::{Config, WithoutOrigin};
use crate::error::Error;
use crate::platform::Platform;
use crate::store::{Counting, Precondition, PutOutcome, Store};
use crate::vec_map::VecMap;

/// Requests an isolate counts before it adds them to the stored count.
pub const FLUSH_EVERY: u64 = 20;
/// How long an isolate trusts the stored count it read, and the longest it
/// keeps unflushed increments, ms.
pub const REFRESH_MS: u64 = 60_000;
/// Most origins an isolate keeps a tally for. Past this the least recently
/// read tally is dropped (its unflushed requests, fewer than
/// [`FLUSH_EVERY`], go uncounted), so a stream of made-up origins cannot
/// grow the isolate's memory.
pub const MAX_TALLIES: usize = 256;
/// The name requests without an `Origin` header are counted under.
pub const WITHOUT_ORIGIN: &str = "without-origin";
/// Longest `Origin` header accepted; it becomes part of an R2 key.
const MAX_ORIGIN_LEN: usize = 256;

/// What the access rules say about a request, before any counting.
#[derive(Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// No check needed (no Origin header, or an allowed origin).
    Free,
    /// Allowed while this origin's monthly count is below `quota`.
    Metered { origin: &'a str, quota: u64 },
}

/// Applies the allow-list and the zero-quota rule.
pub fn access<'a>(config: &Config, origin: Option<&'a str>) -> Result<Access<'a>, Error> {
    let Some(origin) = origin else {
        return match config.without_origin {
            WithoutOrigin::Allow => Ok(Access::Free),
            WithoutOrigin::Refuse | WithoutOrigin::Quota(0) => Err(Error::OriginRequired),
            WithoutOrigin::Quota(quota) => Ok(Access::Metered {
                origin: WITHOUT_ORIGIN,
                quota,
            }),
        };
    };
    if config.allowed_origins.iter().any(|o| o == origin) {
        return Ok(Access::Free);
    }
    if config.origin_quota == 0 {
        return Err(Error::Unauthorized);
    }
    if origin.len() > MAX_ORIGIN_LEN {
        return Err(Error::BadRequest("Bad origin"));
    }
    Ok(Access::Metered {
        origin,
        quota: config.origin_quota,
    })
}

/// The R2 key of an origin's count for the month containing `now_ms`.
pub fn counter_key(origin: &str, now_ms: u64) -> String {
    let (year, month) = year_month(now_ms);
    let mut key = format!("quota/{year:04}-{month:02}/");
    for b in origin.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            key.push(char::from(b));
        } else {
            key.push_str(&format!("%{b:02X}"));
        }
    }
    key
}

/// UTC year and month of a Unix time in ms (civil-from-days, proleptic Gregorian).
fn year_month(now_ms: u64) -> (u64, u64) {
    let z = now_ms / 86_400_000 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

#[derive(Clone, Debug, Default)]
struct Tally {
    /// Count as last read from (or written to) R2.
    stored: u64,
    stored_etag: Option<String>,
    read_at_ms: Option<u64>,
    /// This isolate's requests not yet added to the stored count.
    pending: u64,
    first_pending_ms: u64,
    flushing: bool,
}

/// Per-isolate tallies, shared by the requests an isolate serves.
pub struct QuotaLedger {
    tallies: RefCell<VecMap<String, Tally>>,
    flush_every: u64,
    refresh_ms: u64,
}

impl Default for QuotaLedger {
    fn default() -> Self {
        Self::with_cadence(FLUSH_EVERY, REFRESH_MS)
    }
}

impl QuotaLedger {
    /// A ledger that flushes every `flush_every` counts or `refresh_ms`, and
    /// re-reads a stored count after `refresh_ms` (shorter for short windows).
    pub fn with_cadence(flush_every: u64, refresh_ms: u64) -> Self {
        Self {
            tallies: RefCell::default(),
            flush_every,
            refresh_ms,
        }
    }

    /// Counts one request from `origin`, or refuses it with 429 when the
    /// month's quota is used up. Storage failures never refuse a request.
    pub async fn admit<S: Store, P: Platform>(
        &self,
        store: &Counting<'_, S>,
        platform: &P,
        origin: &str,
        quota: u64,
    ) -> Result<(), Error> {
        let key = counter_key(origin, platform.now_ms());
        self.admit_key(store, platform, key, quota).await
    }

    /// Counts one event under the R2 counter `key`, or refuses it with
    /// [`Error::OverQuota`] once the stored count plus this isolate's
    /// unflushed ones reach `quota`.
    pub async fn admit_key<S: Store, P: Platform>(
        &self,
        store: &Counting<'_, S>,
        platform: &P,
        key: String,
        quota: u64,
    ) -> Result<(), Error> {
        let now = platform.now_ms();
        self.make_room_for(&key);
        let stale = self
            .tallies
            .borrow()
            .get(&key)
            .and_then(|t| t.read_at_ms)
            .is_none_or(|at| now.saturating_sub(at) >= self.refresh_ms);
        if stale {
            self.refresh(store, &key, now).await;
        }
        let flush = {
            let mut tallies = self.tallies.borrow_mut();
            let tally = tallies.get_or_insert_with(key.clone(), Tally::default);
            if tally.stored.saturating_add(tally.pending) >= quota {
                return Err(Error::OverQuota);
            }
            if tally.pending == 0 {
                tally.first_pending_ms = now;
            }
            tally.pending += 1;
            let due = tally.pending >= self.flush_every
                || now.saturating_sub(tally.first_pending_ms) >= self.refresh_ms;
            if due && !tally.flushing {
                tally.flushing = true;
                Some(std::mem::take(&mut tally.pending))
            } else {
                None
            }
        };
        if let Some(delta) = flush {
            self.flush(store, &key, delta, platform.now_ms()).await;
        }
        Ok(())
    }

    /// Drops the least recently read tally (preferring ones with nothing
    /// pending) when a new origin would go past [`MAX_TALLIES`].
    fn make_room_for(&self, key: &str) {
        let mut tallies = self.tallies.borrow_mut();
        while tallies.len() >= MAX_TALLIES && !tallies.contains_key(key) {
            let victim = tallies
                .iter()
                .filter(|(_, t)| !t.flushing)
                .min_by_key(|(_, t)| (t.pending > 0, t.read_at_ms))
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => tallies.remove(&k),
                None => break,
            };
        }
    }

    /// Origins with a tally in this isolate.
    pub fn tracked(&self) -> usize {
        self.tallies.borrow().len()
    }

    async fn refresh<S: Store>(&self, store: &Counting<'_, S>, key: &str, now: u64) {
        if let Ok(object) = store.get(key).await {
            let mut tallies = self.tallies.borrow_mut();
            let tally = tallies.get_or_insert_with(key.to_owned(), Tally::default);
            tally.stored = object.as_ref().map_or(0, |o| parse_count(&o.body));
            tally.stored_etag = object.map(|o| o.etag);
            tally.read_at_ms = Some(now);
        }
    }

    /// Adds `delta` to the stored count (conditional put, one re-read on
    /// conflict). What cannot be added now stays pending for a later request.
    async fn flush<S: Store>(&self, store: &Counting<'_, S>, key: &str, delta: u64, now: u64) {
        let mut added = false;
        for _ in 0..2 {
            let (stored, etag) = {
                let tallies = self.tallies.borrow();
                let t = tallies.get(key).cloned().unwrap_or_default();
                (t.stored, t.stored_etag)
            };
            let total = stored + delta;
            let pre = etag.map_or(Precondition::Absent, Precondition::EtagMatches);
            match store.put(key, total.to_string().into_bytes(), pre).await {
                Ok(PutOutcome::Stored { etag }) => {
                    let mut tallies = self.tallies.borrow_mut();
                    let t = tallies.get_or_insert_with(key.to_owned(), Tally::default);
                    t.stored = total;
                    t.stored_etag = Some(etag);
                    t.read_at_ms = Some(now);
                    added = true;
                    break;
                }
                Ok(PutOutcome::PreconditionFailed) => self.refresh(store, key, now).await,
                Err(_) => break,
            }
        }
        let mut tallies = self.tallies.borrow_mut();
        let t = tallies.get_or_insert_with(key.to_owned(), Tally::default);
        t.flushing = false;
        if !added {
            t.pending += delta;
        }
    }
}

fn parse_count(body: &[u8]) -> u64 {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_month_is_utc_calendar() {
        assert_eq!(year_month(0), (1970, 1));
        // 2024-02-29T23:59:59.999Z and the next millisecond.
        assert_eq!(year_month(1_709_251_199_999), (2024, 2));
        assert_eq!(year_month(1_709_251_200_000), (2024, 3));
        // 2026-12-31T23:59:59Z
        assert_eq!(year_month(1_798_761_599_000), (2026, 12));
    }

    #[test]
    fn counter_key_escapes_origin() {
        assert_eq!(
            counter_key("https://a.example:8443", 0),
            "quota/1970-01/https%3A%2F%2Fa.example%3A8443"
        );
    }

    #[test]
    fn access_rules_match_the_original() {
        let open = Config::default();
        assert_eq!(access(&open, None), Ok(Access::Free));
        assert_eq!(
            access(&open, Some("https://x.test")),
            Ok(Access::Metered {
                origin: "https://x.test",
                quota: 10_000
            })
        );
        let listed = Config::from_vars(|n| {
            (n == "ALLOWED_ORIGINS").then(|| "https://a.test, https://b.test".into())
        });
        assert_eq!(access(&listed, Some("https://b.test")), Ok(Access::Free));
        assert_eq!(
            access(&listed, Some("https://c.test")),
            Err(Error::Unauthorized)
        );
        assert_eq!(access(&listed, None), Ok(Access::Free));
        let both = Config::from_vars(|n| match n {
            "ALLOWED_ORIGINS" => Some("https://a.test".into()),
            "ORIGIN_QUOTA" => Some("5".into()),
            _ => None,
        });
        assert_eq!(
            access(&both, Some("https://c.test")),
            Ok(Access::Metered {
                origin: "https://c.test",
                quota: 5
            })
        );
    }
}
