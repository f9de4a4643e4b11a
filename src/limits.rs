//! Abuse limits, each configurable by `[vars]`, each refused with a clear 4xx.
//!
//! | limit | var | default | refused with |
//! |---|---|---|---|
//! | request body | `MAX_BODY_BYTES` | 64 KiB | 413 |
//! | packages per request | `MAX_PACKAGES` | 64 | 413 |
//! | candidates per package | `MAX_CANDIDATES` | 64 | 413 |
//! | bytes per package | `MAX_PACKAGE_BYTES` | 16 KiB | 413 |
//! | peers per room | `MAX_PEERS` | 32 | 429 (room full) |
//! | stored bytes per room (index) | `MAX_ROOM_BYTES` | 512 KiB | 413 |
//!
//! 32 peers: the stock client builds a full mesh (every peer keeps a WebRTC
//! connection to every other), which its author recommends keeping small,
//! and a newcomer reads at most 20 outboxes per poll, so 32 is covered in two polls.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_packages: usize,
    pub max_candidates: usize,
    pub max_package_bytes: usize,
    pub max_peers: usize,
    pub max_room_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_packages: 64,
            max_candidates: 64,
            max_package_bytes: 16 * 1024,
            max_peers: 32,
            max_room_bytes: 512 * 1024,
        }
    }
}
