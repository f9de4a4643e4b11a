//! What the core needs from its runtime besides storage: a clock, a timer,
//! randomness, one kind of outbound request and the relay rooms' objects. The Worker implementation is in `worker_entry`; tests use a
//! virtual clock.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

pub trait Platform {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Resolves after `ms` milliseconds.
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;
    /// Fills `buf` from a cryptographically secure generator in production.
    fn fill_random(&self, buf: &mut [u8]);

    /// POSTs `body` as JSON to `url` with `Authorization: Bearer <bearer>`;
    /// the status and body of the answer. The worker's only outbound call
    /// (Cloudflare's TURN API); by default there is no network.
    fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<(u16, Vec<u8>), String>> {
        let _ = (url, bearer, body);
        std::future::ready(Err("no outbound requests on this platform".to_owned()))
    }

    /// Whether relay rooms live on room objects (the `RELAY_ROOMS` Durable
    /// Object binding); without them they live on R2.
    fn has_room_objects(&self) -> bool {
        false
    }

    /// Which other socket protocols have their Durable Objects bound:
    /// y-webrtc (`TOPIC_ROOMS`), PeerJS (`PEER_ROOMS`).
    fn socket_objects(&self) -> SocketObjects {
        SocketObjects::default()
    }

    /// Sends a relay call's body to its room's object; the object's answer.
    fn call_room(
        &self,
        room: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<Forwarded, String>> {
        let _ = (room, body);
        std::future::ready(Err("no room objects on this platform".to_owned()))
    }

    /// A uniformly distributed number in `0..n` (0 when `n` is 0), for jitter.
    fn random_below(&self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let mut b = [0u8; 8];
        self.fill_random(&mut b);
        u64::from_le_bytes(b) % n
    }
}

/// A call answered by a room's object: its status, headers and body.
#[derive(Debug, Default)]
pub struct Forwarded {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Forwarded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Fills `buf` from the platform CSPRNG (`crypto.getRandomValues` in Workers).
pub fn os_random(buf: &mut [u8]) {
    // getrandom only fails where no CSPRNG exists; a worker without one must not run.
    if let Err(e) = getrandom::fill(buf) {
        panic!("no secure random source: {e}");
    }
}

impl<T: Platform> Platform for &T {
    fn now_ms(&self) -> u64 {
        (**self).now_ms()
    }

    fn sleep(&self, ms: u64) -> impl Future<Output = ()> {
        (**self).sleep(ms)
    }

    fn fill_random(&self, buf: &mut [u8]) {
        (**self).fill_random(buf)
    }

    fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<(u16, Vec<u8>), String>> {
        (**self).post_json(url, bearer, body)
    }

    fn has_room_objects(&self) -> bool {
        (**self).has_room_objects()
    }

    fn socket_objects(&self) -> SocketObjects {
        (**self).socket_objects()
    }

    fn call_room(
        &self,
        room: &str,
        body: &[u8],
    ) -> impl Future<Output = Result<Forwarded, String>> {
        (**self).call_room(room, body)
    }
}

/// Runs futures concurrently on the current task (the runtime is single-threaded).
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, future) in out.iter_mut().zip(futures.iter_mut()) {
            if slot.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// A future on the heap, polled through one pointer. The worker boxes each
/// request kind's future: its state machine is then compiled once, on its
/// own, instead of inlined into one ~100 KB future for every request.
pub type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// Which socket protocols besides the relay a deployment serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketObjects {
    pub y_webrtc: bool,
    pub peerjs: bool,
}
