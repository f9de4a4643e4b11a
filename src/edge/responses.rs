//! Requests and responses in plain Rust: headers looked up in any case,
//! CORS on every response, and the one mapping of [`Error`] to a status and
//! a short plain reason. The Worker entry point only converts the
//! runtime's request and response to and from these.

use crate::error::Error;

pub const ALLOW_METHODS: &str = "GET,HEAD,POST,DELETE,OPTIONS";
#[derive(Clone, Debug, Default)]
pub struct HttpRequest {
    pub method: String,
    /// The full URL, as the client sent it (shown on the status page).
    pub url: String,
    /// Header names in any case; looked up case-insensitively.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn new(status: u16, content_type: Option<&str>, body: Vec<u8>) -> Self {
        let mut headers = vec![
            ("Access-Control-Allow-Origin", "*".to_owned()),
            ("Access-Control-Allow-Methods", ALLOW_METHODS.to_owned()),
            ("Access-Control-Max-Age", "86400".to_owned()),
            (
                "Access-Control-Expose-Headers",
                "Retry-After, X-Poll-Hint, X-R2-Ops".to_owned(),
            ),
            // Lets pages of any origin read `Server-Timing` (the hint) from
            // Resource Timing, as CORS already lets them read the body.
            ("Timing-Allow-Origin", "*".to_owned()),
            ("Cache-Control", "no-store".to_owned()),
            ("X-Content-Type-Options", "nosniff".to_owned()),
        ];
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct.to_owned()));
        }
        Self {
            status,
            headers,
            body,
        }
    }

    pub fn json(body: Vec<u8>) -> Self {
        Self::new(200, Some("application/json"), body)
    }

    pub fn error(e: &Error) -> Self {
        let mut r = Self::new(
            e.status(),
            Some("text/plain; charset=utf-8"),
            e.to_string().into_bytes(),
        );
        if let Some(s) = e.retry_after_s() {
            r.headers.push(("Retry-After", s.to_string()));
        }
        if e.status() == 405 {
            r.headers.push(("Allow", ALLOW_METHODS.to_owned()));
        }
        r
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The response for an error raised outside [`serve`](fn@crate::edge::serve) (e.g. by a platform
/// rate limiter in front of it): status, reason and CORS headers as always.
pub fn error_response(e: &Error) -> HttpResponse {
    HttpResponse::error(e)
}

/// A preflight's answer: the requested headers allowed, or `Allow`.
pub fn options(req: &HttpRequest) -> HttpResponse {
    let mut resp = HttpResponse::new(204, None, Vec::new());
    match (
        req.header("origin"),
        req.header("access-control-request-method"),
        req.header("access-control-request-headers"),
    ) {
        (Some(_), Some(_), Some(headers)) => resp
            .headers
            .push(("Access-Control-Allow-Headers", headers.to_owned())),
        _ => resp
            .headers
            .push(("Allow", "GET, HEAD, POST, DELETE, OPTIONS".to_owned())),
    }
    resp
}
