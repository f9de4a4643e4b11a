//! What one isolate keeps between requests, and what each request leaves
//! for the logs: the status page's last bucket probe, the TURN ledger, the
//! log key and the [`Outcome`] of a request.

use std::cell::RefCell;

use crate::config::Config;
use crate::domain::RoomId;
use crate::edge::access::QuotaLedger;
use crate::edge::status::BucketState;
use crate::engine::hints::Hint;
use crate::json::{ToJson, Writer};
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
        crate::json::to_string(&Line {
            outcome: self,
            status,
            duration_ms,
        })
    }
}

/// An outcome as its log line shows it.
struct Line<'a> {
    outcome: &'a Outcome,
    status: u16,
    duration_ms: u64,
}

impl ToJson for Line<'_> {
    fn write(&self, w: &mut Writer) {
        let o = self.outcome;
        w.object(|w| {
            w.field("error", &o.r2_error)
                .field("hint", &o.hint.map(|h| h.mode.as_str()))
                .field("ms", &self.duration_ms)
                .field("op", o.op)
                .field("peers", &o.peers.map(|n| n as u64))
                .field("r2", &R2(o.ops.class_a, o.ops.class_b))
                .field("room", &o.room)
                .field("status", &u64::from(self.status));
        });
    }
}

/// R2 operations of classes A and B.
struct R2(u32, u32);

impl ToJson for R2 {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("a", &u64::from(self.0))
                .field("b", &u64::from(self.1));
        });
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
