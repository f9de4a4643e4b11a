//! Abuse limits, each configurable by `[vars]`, each refused with a clear 4xx.
//!
//! | limit | var | default | refused with |
//! |---|---|---|---|
//! | request body | `MAX_BODY_BYTES` | 64 KiB | 413 |
//! | packages per request (one per recipient) | `MAX_PACKAGES` | 32 | 413 |
//! | candidates per package | `MAX_CANDIDATES` | 32 | 413 |
//! | bytes per package | `MAX_PACKAGE_BYTES` | 4 KiB | 413 |
//! | peers per room | `MAX_PEERS` | 32 | 429 (room full) |
//! | members per pushed relay room (on its Durable Object) | `MAX_LIVE_MEMBERS` | 256 | close 4429 (room full) |
//! | how long a pushed member whose socket dropped may come back | `RESUME_WINDOW_S` | 60 | then it is gone; a resume is 4410 |
//! | how long a socket may stay silent (no frame, no `ping`) | `SOCKET_IDLE_S` | 75 | closed 4408, its member dropped |
//! | stored bytes per room (index) | `MAX_ROOM_BYTES` | 128 KiB | 413 |
//!
//! Fixed by the protocol code: 8 reflexive IPs per peer (400), one package
//! per recipient (400), ids of 64 characters.
//!
//! 32 peers: the stock client builds a full mesh (every peer keeps a WebRTC
//! connection to every other), which its author recommends keeping small,
//! and a newcomer reads at most 31 outboxes per p2pcf poll (every other
//! member's, in one poll), 8 per relay poll (the next 8 each second).

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_packages: usize,
    pub max_candidates: usize,
    pub max_package_bytes: usize,
    pub max_peers: usize,
    pub max_room_bytes: usize,
    pub max_live_members: usize,
    pub resume_window_s: usize,
    pub socket_idle_s: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_packages: 32,
            max_candidates: 32,
            max_package_bytes: 4 * 1024,
            max_peers: 32,
            max_room_bytes: 128 * 1024,
            max_live_members: 256,
            resume_window_s: 60,
            socket_idle_s: 75,
        }
    }
}

/// What one socket may send in a window.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub frames: u32,
    pub bytes: usize,
    pub window_ms: u64,
}

/// The frames and bytes one socket sent in its current window.
#[derive(Clone, Copy, Debug)]
pub struct Meter {
    start_ms: u64,
    frames: u32,
    bytes: usize,
}

impl Meter {
    pub fn new(now_ms: u64) -> Self {
        Self {
            start_ms: now_ms,
            frames: 0,
            bytes: 0,
        }
    }

    /// Counts one frame of `bytes`; `false` once more than `rate.frames`
    /// frames or `rate.bytes` bytes came in the current `rate.window_ms`.
    pub fn count(&mut self, bytes: usize, rate: &Rate, now_ms: u64) -> bool {
        if now_ms >= self.start_ms.saturating_add(rate.window_ms) {
            *self = Self::new(now_ms);
        }
        self.frames += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.frames <= rate.frames && self.bytes <= rate.bytes
    }
}
