//! Polling hints: how long a client should wait before its next poll, from
//! what the worker already read for this request (no extra R2 operation).
//!
//! * **fast** while packages are waiting for the caller, the room's
//!   membership changed within the fast window, or a join window with the
//!   caller is open (answers can still flow to or from it). Twice the fast
//!   delay for the quiet rest of a join window was measured (`cargo
//!   simulate`, two peers arriving together): 14 % fewer requests, but 0.4 s
//!   later to both packages on average (1 s at worst, 1.5 s for a peer
//!   joining one that was alone), so the window stays fast;
//! * **idle** when the caller has been alone for `idle_after_ms`: the delay
//!   doubles from `slow_ms` with every further `idle_after_ms` alone, up to
//!   `idle_max_ms`;
//! * **slow** otherwise;
//! * never later than `EXPIRY_MARGIN_MS` before the caller's entry expires,
//!   so its heartbeat (sent by the client's next step) lands in time.

use crate::json::{ToJson, Writer};

/// The next poll must come at least this long before the caller's entry expires.
pub const EXPIRY_MARGIN_MS: u64 = 10_000;

/// Delays a deployment can tune with `[vars]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollSettings {
    pub fast_ms: u64,
    pub slow_ms: u64,
    pub idle_after_ms: u64,
    pub idle_max_ms: u64,
    /// How long after a join or leave the room counts as changing.
    pub fast_window_ms: u64,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            fast_ms: 1000,
            slow_ms: 12_000,
            idle_after_ms: 60_000,
            idle_max_ms: 30_000,
            fast_window_ms: 10_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Fast,
    Slow,
    Idle,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Slow => "slow",
            Mode::Idle => "idle",
        }
    }
}

/// The recommendation sent with a poll response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    /// Recommended delay before the next poll, ms.
    pub ms: u64,
    /// The state the delay came from.
    pub mode: Mode,
}

impl ToJson for Hint {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("ms", &self.ms).field("mode", self.mode.as_str());
        });
    }
}

impl Hint {
    /// The `X-Poll-Hint` header value, e.g. `fast; ms=1000`.
    pub fn header(&self) -> String {
        format!("{}; ms={}", self.mode.as_str(), self.ms)
    }

    /// Reads an `X-Poll-Hint` value back (a room's object answered it).
    pub fn parse_header(value: &str) -> Option<Self> {
        let (mode, ms) = value.split_once(';')?;
        let ms = ms.strip_prefix(" ms=")?;
        let mode = match mode {
            "fast" => Mode::Fast,
            "slow" => Mode::Slow,
            "idle" => Mode::Idle,
            _ => return None,
        };
        Some(Self {
            ms: ms.parse().ok()?,
            mode,
        })
    }

    /// The same hint as a `Server-Timing` metric, which a page reads from
    /// its Resource Timing entries (`PerformanceObserver`) without touching
    /// `fetch` (client/hints.js).
    pub fn server_timing(&self) -> String {
        format!("p2pcf-hint;desc={};dur={}", self.mode.as_str(), self.ms)
    }
}

/// What the worker knows about the caller and its room at this request.
#[derive(Clone, Debug, Default)]
pub struct Situation {
    pub now_ms: u64,
    /// The caller's own entry: (joined, expires). `None` before it published.
    pub own: Option<(u64, u64)>,
    /// Other live peers.
    pub others: usize,
    /// Packages for the caller written within the fast window.
    pub packages_for_caller: usize,
    /// A join window between the caller and another peer is open.
    pub in_join_window: bool,
    /// Last join or leave seen in the room (index), ms since the epoch.
    pub membership_changed_ms: u64,
}

pub fn hint(s: &Situation, settings: &PollSettings) -> Hint {
    let fast = Hint {
        ms: settings.fast_ms,
        mode: Mode::Fast,
    };
    let Some((joined_ms, expires_ms)) = s.own else {
        // Not published yet: the stock client publishes on its next step.
        return fast;
    };
    let changing = s.now_ms
        < s.membership_changed_ms
            .saturating_add(settings.fast_window_ms);
    if s.packages_for_caller > 0 || s.in_join_window || changing {
        return fast;
    }
    let alone_since = joined_ms.max(s.membership_changed_ms);
    let alone_for = s.now_ms.saturating_sub(alone_since);
    let mut chosen = if s.others == 0 && alone_for >= settings.idle_after_ms {
        let doublings = 1 + (alone_for - settings.idle_after_ms) / settings.idle_after_ms.max(1);
        let ms = settings.slow_ms.saturating_mul(1u64 << doublings.min(16));
        Hint {
            ms: ms.min(settings.idle_max_ms).max(settings.slow_ms),
            mode: Mode::Idle,
        }
    } else {
        Hint {
            ms: settings.slow_ms,
            mode: Mode::Slow,
        }
    };
    // Poll again early enough for the heartbeat to refresh the entry.
    let latest = expires_ms
        .saturating_sub(s.now_ms)
        .saturating_sub(EXPIRY_MARGIN_MS)
        .max(settings.fast_ms);
    chosen.ms = chosen.ms.min(latest);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_reads_back() {
        for mode in [Mode::Fast, Mode::Slow, Mode::Idle] {
            let hint = Hint { ms: 1500, mode };
            assert_eq!(Hint::parse_header(&hint.header()), Some(hint));
        }
        for bad in [
            "fast",
            "fast;ms=1",
            "quick; ms=1",
            "fast; ms=x",
            "fast ; ms=1",
        ] {
            assert_eq!(Hint::parse_header(bad), None, "{bad}");
        }
    }

    const NOW: u64 = 1_000_000_000;

    fn steady() -> Situation {
        Situation {
            now_ms: NOW,
            own: Some((NOW - 300_000, NOW + 100_000)),
            others: 3,
            packages_for_caller: 0,
            in_join_window: false,
            membership_changed_ms: NOW - 300_000,
        }
    }

    #[test]
    fn fast_before_publishing_with_packages_in_windows_and_after_changes() {
        let settings = PollSettings::default();
        let fast = Hint {
            ms: 1000,
            mode: Mode::Fast,
        };
        assert_eq!(
            hint(
                &Situation {
                    own: None,
                    ..steady()
                },
                &settings
            ),
            fast
        );
        assert_eq!(
            hint(
                &Situation {
                    packages_for_caller: 1,
                    ..steady()
                },
                &settings
            ),
            fast
        );
        assert_eq!(
            hint(
                &Situation {
                    in_join_window: true,
                    ..steady()
                },
                &settings
            ),
            fast
        );
        assert_eq!(
            hint(
                &Situation {
                    membership_changed_ms: NOW - 9_999,
                    ..steady()
                },
                &settings
            ),
            fast
        );
        assert_eq!(
            hint(
                &Situation {
                    membership_changed_ms: NOW - 10_000,
                    ..steady()
                },
                &settings
            )
            .mode,
            Mode::Slow
        );
    }

    #[test]
    fn slow_in_a_steady_room() {
        assert_eq!(
            hint(&steady(), &PollSettings::default()),
            Hint {
                ms: 12_000,
                mode: Mode::Slow
            }
        );
    }

    #[test]
    fn idle_backs_off_when_alone_and_caps() {
        let settings = PollSettings::default();
        let alone = |for_ms: u64| Situation {
            own: Some((NOW - for_ms, NOW + 110_000)),
            others: 0,
            membership_changed_ms: 0,
            ..steady()
        };
        assert_eq!(hint(&alone(59_000), &settings).mode, Mode::Slow);
        assert_eq!(
            hint(&alone(60_000), &settings),
            Hint {
                ms: 24_000,
                mode: Mode::Idle
            }
        );
        assert_eq!(
            hint(&alone(120_000), &settings),
            Hint {
                ms: 30_000,
                mode: Mode::Idle
            }
        );
        assert_eq!(
            hint(&alone(10_000_000), &settings),
            Hint {
                ms: 30_000,
                mode: Mode::Idle
            }
        );
        // Alone since the last leave, not since joining.
        let left_recently = Situation {
            membership_changed_ms: NOW - 30_000,
            ..alone(600_000)
        };
        assert_eq!(hint(&left_recently, &settings).mode, Mode::Slow);
    }

    #[test]
    fn never_later_than_the_entry_allows() {
        let settings = PollSettings::default();
        let expiring = Situation {
            own: Some((NOW - 600_000, NOW + 25_000)),
            others: 0,
            membership_changed_ms: 0,
            ..steady()
        };
        assert_eq!(
            hint(&expiring, &settings),
            Hint {
                ms: 15_000,
                mode: Mode::Idle
            }
        );
        let almost = Situation {
            own: Some((NOW - 600_000, NOW + 3_000)),
            ..expiring
        };
        assert_eq!(
            hint(&almost, &settings).ms,
            1000,
            "never below the fast delay"
        );
    }

    #[test]
    fn header_form() {
        assert_eq!(
            Hint {
                ms: 1000,
                mode: Mode::Fast
            }
            .header(),
            "fast; ms=1000"
        );
        assert_eq!(
            Hint {
                ms: 12000,
                mode: Mode::Slow
            }
            .server_timing(),
            "p2pcf-hint;desc=slow;dur=12000"
        );
    }
}
