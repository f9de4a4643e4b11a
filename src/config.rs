//! Configuration from the worker's `[vars]`.

use crate::hints::PollSettings;
use crate::limits::Limits;

/// Monthly request quota for origins not in `ALLOWED_ORIGINS` when
/// `ORIGIN_QUOTA` is not set (as in the original worker).
pub const DEFAULT_ORIGIN_QUOTA: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Origins always allowed (`ALLOWED_ORIGINS`, comma-separated).
    pub allowed_origins: Vec<String>,
    /// Requests per calendar month (UTC) for any other origin; 0 refuses them.
    pub origin_quota: u64,
    /// Polling hints (`POLL_FAST_MS`, `POLL_SLOW_MS`, `POLL_IDLE_AFTER_MS`,
    /// `POLL_IDLE_MAX_MS`, `POLL_FAST_WINDOW_MS`).
    pub poll: PollSettings,
    /// Abuse limits (`MAX_*`).
    pub limits: Limits,
    /// `GET /turn` (`TURN_*`, `CF_TURN_*`; secrets inside never print).
    pub turn: crate::turn::TurnSettings,
    /// Key of the room tags in log lines, derived from the `LOG_KEY` secret
    /// (`None`: each isolate picks a random one). Never shown.
    pub log_key: Option<[u8; 16]>,
    /// Problems found while reading the variables, shown on the status page.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_vars(|_| None)
    }
}

impl Config {
    /// Reads the variables through `var` (name to value).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut warnings = Vec::new();
        let allowed_origins: Vec<String> = var("ALLOWED_ORIGINS")
            .unwrap_or_default()
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        let origin_quota = match var("ORIGIN_QUOTA").map(|q| q.trim().to_owned()) {
            Some(q) if !q.is_empty() => q.parse().unwrap_or_else(|_| {
                warnings.push(format!(
                    "ORIGIN_QUOTA={q:?} is not a whole number; using {DEFAULT_ORIGIN_QUOTA}"
                ));
                DEFAULT_ORIGIN_QUOTA
            }),
            // With an allow-list and no quota, other origins are refused.
            _ if !allowed_origins.is_empty() => 0,
            _ => DEFAULT_ORIGIN_QUOTA,
        };
        let defaults = PollSettings::default();
        let mut ms = |name: &str, default: u64| match var(name).map(|v| v.trim().to_owned()) {
            Some(v) if !v.is_empty() => match v.parse::<u64>() {
                Ok(n) if (100..=3_600_000).contains(&n) => n,
                _ => {
                    warnings.push(format!(
                        "{name}={v:?} is not a number of ms in 100..3600000; using {default}"
                    ));
                    default
                }
            },
            _ => default,
        };
        let poll = PollSettings {
            fast_ms: ms("POLL_FAST_MS", defaults.fast_ms),
            slow_ms: ms("POLL_SLOW_MS", defaults.slow_ms),
            idle_after_ms: ms("POLL_IDLE_AFTER_MS", defaults.idle_after_ms),
            idle_max_ms: ms("POLL_IDLE_MAX_MS", defaults.idle_max_ms),
            fast_window_ms: ms("POLL_FAST_WINDOW_MS", defaults.fast_window_ms),
        };
        let d = Limits::default();
        let mut size =
            |name: &str, default: usize, max: usize| match var(name).map(|v| v.trim().to_owned()) {
                Some(v) if !v.is_empty() => match v.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => n,
                    _ => {
                        warnings.push(format!(
                            "{name}={v:?} is not a whole number in 1..{max}; using {default}"
                        ));
                        default
                    }
                },
                _ => default,
            };
        let limits = Limits {
            max_body_bytes: size("MAX_BODY_BYTES", d.max_body_bytes, 1 << 20),
            max_packages: size("MAX_PACKAGES", d.max_packages, 1024),
            max_candidates: size("MAX_CANDIDATES", d.max_candidates, 1024),
            max_package_bytes: size("MAX_PACKAGE_BYTES", d.max_package_bytes, 1 << 20),
            max_peers: size("MAX_PEERS", d.max_peers, 256),
            max_room_bytes: size("MAX_ROOM_BYTES", d.max_room_bytes, 8 << 20),
        };
        let turn = crate::turn::TurnSettings::from_vars(&var, &mut warnings);
        let log_key = var("LOG_KEY")
            .filter(|k| !k.trim().is_empty())
            .map(|k| crate::http::derive_log_key(k.trim()));
        Self {
            allowed_origins,
            origin_quota,
            poll,
            limits,
            turn,
            log_key,
            warnings,
        }
    }
}
