//! The one error type. Each variant is an HTTP status and a short plain
//! reason; [`crate::edge::responses`] adds CORS headers to every one of them.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The request breaks a protocol rule; the text names which.
    BadRequest(&'static str),
    /// Signalling calls must be `application/json`.
    UnsupportedMediaType,
    /// The body, or a part of it, is larger than the server accepts; the text names which.
    PayloadTooLarge(&'static str),
    /// The room already holds as many peers as allowed.
    RoomFull,
    /// This (context, session) left the room; a new page load (new session) can join.
    Left,
    /// The request contradicts what is stored (a relay message number used
    /// before); the text says how.
    Conflict(&'static str),
    /// A relay member holds as many undelivered message bytes as allowed;
    /// retry once some were taken and expired.
    Backlog { retry_after_s: u32 },
    /// A leave whose entry (context, session, delete key) does not exist.
    NotFound,
    /// A method the worker does not serve.
    MethodNotAllowed,
    /// The room id is refused by the owner's rules (signed rooms); the text says why.
    Forbidden(&'static str),
    /// `ALLOWED_ORIGINS` is set, this origin is not in it and its quota is 0.
    Unauthorized,
    /// `WITHOUT_ORIGIN` refuses requests without an `Origin` header.
    OriginRequired,
    /// This origin used its monthly `ORIGIN_QUOTA`.
    OverQuota,
    /// The optional per-client rate limit (the `RATE_LIMITER` binding) refused the request.
    RateLimited,
    /// A relay socket sent more frames than its per-socket rate allows.
    RateLimitedFrames,
    /// R2 kept refusing or failing; the text says what was and was not stored.
    Busy {
        retry_after_s: u32,
        stored: &'static str,
    },
    /// The room's stored index is in a format this build cannot read; it is left untouched.
    Unreadable { retry_after_s: u32 },
    /// A WebSocket upgrade where the `RELAY_ROOMS` binding (the push
    /// transport's Durable Objects) is missing.
    NoPush,
    /// A y-webrtc upgrade where the `TOPIC_ROOMS` binding is missing.
    NoTopics,
    /// A PeerJS upgrade where the `PEER_ROOMS` binding is missing.
    NoPeerJs,
    /// The `BUCKET` binding is missing: the deployment is not configured.
    NoBucket,
    /// `GET /turn` without a TURN source configured.
    TurnNotConfigured,
    /// The deployment's cap on TURN credentials per minute is reached.
    TurnCapReached { retry_after_s: u32 },
    /// The TURN service answered, but not with credentials; the text says how.
    TurnUpstream(&'static str),
    /// The TURN service could not be reached, or is busy.
    TurnUnavailable,
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized | Error::OriginRequired => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound | Error::TurnNotConfigured => 404,
            Error::Left => 410,
            Error::Conflict(_) => 409,
            Error::MethodNotAllowed => 405,
            Error::PayloadTooLarge(_) => 413,
            Error::UnsupportedMediaType => 415,
            Error::OverQuota
            | Error::RoomFull
            | Error::RateLimited
            | Error::RateLimitedFrames
            | Error::Backlog { .. }
            | Error::TurnCapReached { .. } => 429,
            Error::NoPush | Error::NoTopics | Error::NoPeerJs => 501,
            Error::TurnUpstream(_) => 502,
            Error::Busy { .. }
            | Error::Unreadable { .. }
            | Error::NoBucket
            | Error::TurnUnavailable => 503,
        }
    }

    /// Seconds for the `Retry-After` header, when the client should retry.
    pub fn retry_after_s(&self) -> Option<u32> {
        match self {
            Error::Busy { retry_after_s, .. } | Error::Unreadable { retry_after_s } => {
                Some(*retry_after_s)
            }
            // Someone may leave: a stock client tries again at its next step anyway.
            Error::RoomFull => Some(30),
            Error::RateLimited | Error::TurnUnavailable => Some(10),
            Error::TurnCapReached { retry_after_s } | Error::Backlog { retry_after_s } => {
                Some(*retry_after_s)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Error::Busy { stored, .. } = self {
            return write!(f, "Storage busy: {stored}");
        }
        if let Error::TurnUpstream(why) = self {
            return write!(f, "The TURN service did not give credentials: {why}");
        }
        f.write_str(match self {
            Error::BadRequest(reason) => reason,
            Error::UnsupportedMediaType => "Expected content-type application/json",
            Error::PayloadTooLarge(reason) | Error::Conflict(reason) | Error::Forbidden(reason) => {
                reason
            }
            Error::Backlog { .. } => {
                "Too many messages held for delivery: retry after the time in Retry-After"
            }
            Error::RoomFull => "Room is full",
            Error::NotFound => "No entry with this context, session and delete key",
            Error::MethodNotAllowed => "Method not allowed",
            Error::Unauthorized => "Unauthorized origin",
            Error::OriginRequired => "Requests without an Origin header are not served here",
            Error::OverQuota => "Origin over quota",
            Error::RateLimited => "Too many requests from this client",
            Error::RateLimitedFrames => "Too many frames: at most 100 per 10 s per socket",
            Error::Busy { .. } => "Storage busy",
            Error::Unreadable { .. } => {
                "Room data is in a format this version cannot read; nothing was changed"
            }
            Error::Left => "This session left the room; a new session can join",
            Error::NoBucket => "R2 bucket binding BUCKET is not configured",
            Error::NoPush => "No push transport here (no RELAY_ROOMS binding): use POST /relay/v1",
            Error::NoTopics => "No y-webrtc signalling here (no TOPIC_ROOMS binding)",
            Error::NoPeerJs => "No PeerJS signalling here (no PEER_ROOMS binding)",
            Error::TurnNotConfigured => {
                "TURN is not configured: set TURN_URLS and the secret TURN_SHARED_SECRET, \
                 or CF_TURN_KEY_ID and the secret CF_TURN_KEY_API_TOKEN (see INSTALL.md)"
            }
            Error::TurnCapReached { .. } => "Too many TURN credentials this minute; retry later",
            Error::TurnUpstream(_) => "The TURN service did not give credentials",
            Error::TurnUnavailable => "The TURN service could not be reached; retry later",
        })
    }
}

impl std::error::Error for Error {}
