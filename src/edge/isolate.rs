//! What one isolate keeps between requests, and what each request leaves
//! for the logs: the status page's last bucket probe, the TURN ledger, the
//! log key and the [`Outcome`] of a request.

use std::cell::RefCell;

use crate::config::Config;
use crate::domain::RoomId;
use crate::edge::access::QuotaLedger;
use crate::edge::status::BucketState;
use crate::engine::hints::Hint;
use crate::store::OpCounts;

/// What the worker did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `status`, `preflight`, `poll`, `publish`, `leave`, or `refused` when
    /// the request failed before it could be parsed.
    pub op: &'static str,
    /// The room, as [`room_tag`]: logs never carry room ids (bearer secrets).
    pub room: Option<String>,
    pub ops: OpCounts,
    /// Live entries in the room after a signalling request.
    pub peers: Option<usize>,
    pub hint: Option<Hint>,
    /// An R2 failure met by the status page (for the owner's log only).
    pub r2_error: Option<String>,
}

impl Outcome {
    pub fn new(op: &'static str) -> Self {
        Self {
            op,
            ..Self::default()
        }
    }

    /// One structured log line (JSON), as `wrangler tail` shows it.
    pub fn log_line(&self, status: u16, duration_ms: u64) -> String {
        // Fields in the order a JSON object of them always printed (sorted).
        #[derive(serde::Serialize)]
        struct Line<'a> {
            error: &'a Option<String>,
            hint: Option<&'static str>,
            ms: u64,
            op: &'static str,
            peers: Option<usize>,
            r2: R2,
            room: &'a Option<String>,
            status: u16,
        }
        #[derive(serde::Serialize)]
        struct R2 {
            a: u32,
            b: u32,
        }
        let line = Line {
            error: &self.r2_error,
            hint: self.hint.map(|h| h.mode.as_str()),
            ms: duration_ms,
            op: self.op,
            peers: self.peers,
            r2: R2 {
                a: self.ops.class_a,
                b: self.ops.class_b,
            },
            room: &self.room,
            status,
        };
        String::from_utf8(crate::wire::to_json(&line)).unwrap_or_default()
    }
}

/// The room's tag in log lines (64 bits, hex): it lets one follow a room
/// across log lines without writing its id down. A keyed hash (SipHash-1-3), so that a
/// guessable room id cannot be found by hashing candidates. With the
/// `LOG_KEY` secret the tags are stable across isolates and deploys;
/// without it each isolate uses a random key (tags group within an isolate).
pub fn room_tag(room: &RoomId, key: &[u8; 16]) -> String {
    use std::hash::Hasher as _;
    let mut h = siphasher::sip::SipHasher13::new_with_key(key);
    h.write(room.as_str().as_bytes());
    format!("{:016x}", h.finish())
}

/// What one isolate keeps between requests besides the quota tallies: the
/// last status-page probe of the bucket and its log key.
pub struct Isolate {
    pub(crate) probe: RefCell<Option<(u64, BucketState)>>,
    log_key: [u8; 16],
    /// Credentials minted per minute, counted for the whole deployment.
    pub(crate) turn_ledger: QuotaLedger,
    /// How the last call to the TURN source went (for the status page).
    pub(crate) turn_last: RefCell<Option<Result<(), &'static str>>>,
}

/// The status page reads R2 at most once this often per isolate.
pub const PROBE_EVERY_MS: u64 = 10_000;

impl Isolate {
    /// `random` seeds the isolate's own log key (used without `LOG_KEY`).
    pub fn new(random: [u8; 16]) -> Self {
        Self {
            probe: RefCell::new(None),
            log_key: random,
            // A one-minute window: re-read and flush every 5 s or 5 credentials.
            turn_ledger: QuotaLedger::with_cadence(5, 5_000),
            turn_last: RefCell::new(None),
        }
    }

    pub(crate) fn log_key<'a>(&'a self, config: &'a Config) -> &'a [u8; 16] {
        config.log_key.as_ref().unwrap_or(&self.log_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::derive_log_key;

    #[test]
    fn log_lines_are_json_without_room_ids() {
        let room = RoomId::parse("secret-room").unwrap();
        let outcome = Outcome {
            op: "poll",
            r2_error: None,
            room: Some(room_tag(&room, &[7; 16])),
            ops: OpCounts {
                class_a: 0,
                class_b: 1,
            },
            peers: Some(3),
            hint: None,
        };
        let line = outcome.log_line(200, 12);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["op"], "poll");
        assert_eq!(v["status"], 200);
        assert_eq!(v["peers"], 3);
        assert_eq!(v["r2"]["b"], 1);
        assert_eq!(v["ms"], 12);
        assert!(!line.contains("secret-room"));
        assert_eq!(v["room"].as_str().unwrap().len(), 16);
        assert_eq!(room_tag(&room, &[7; 16]), room_tag(&room, &[7; 16]));
        // Keyed: without the key the tag cannot be recomputed from a guess.
        assert_ne!(room_tag(&room, &[7; 16]), room_tag(&room, &[8; 16]));
        assert_ne!(derive_log_key("a"), derive_log_key("b"));
    }
}
