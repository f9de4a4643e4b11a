//! Topics: publish and subscribe among the sockets held in one place, the
//! model of y-webrtc's signalling server. A socket subscribes to topics (a
//! y-webrtc room name each); a publish reaches every socket subscribed to
//! its topic, the publisher's included, once. Nothing is stored: the
//! subscriptions live with the sockets (their attachments on a Durable
//! Object) and go with them.
//!
//! Limits, so that no socket makes the others' work expensive: topic names
//! of at most [`MAX_TOPIC_BYTES`], at most [`MAX_TOPICS_PER_SOCKET`] topics a
//! socket, and frames and bytes per socket and window ([`Topics::meter`]).

use crate::engine::limits::Meter;
use crate::error::Error;

/// Longest topic name taken (y-webrtc's are room names).
pub const MAX_TOPIC_BYTES: usize = 256;
/// Most topics one socket may subscribe to.
pub const MAX_TOPICS_PER_SOCKET: usize = 64;

pub use crate::engine::limits::Rate;
pub use crate::engine::SocketId;

/// A topic name: 1 to [`MAX_TOPIC_BYTES`] bytes, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    pub fn parse(name: &str) -> Result<Self, Error> {
        if name.is_empty() || name.len() > MAX_TOPIC_BYTES {
            return Err(Error::BadRequest("Bad topic: 1 to 256 bytes"));
        }
        if name.chars().any(char::is_control) {
            return Err(Error::BadRequest("Bad topic: no control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Each socket's topics and frame meter, in socket order (plain lists: a
/// namespace holds hundreds of sockets, each a few topics).
#[derive(Debug, Default)]
pub struct Topics {
    sockets: Vec<Subscriber>,
}

#[derive(Debug)]
struct Subscriber {
    socket: SocketId,
    topics: Vec<Topic>,
    meter: Meter,
}

impl Topics {
    fn entry(&mut self, socket: SocketId, now_ms: u64) -> &mut Subscriber {
        let i = match self.sockets.binary_search_by_key(&socket, |s| s.socket) {
            Ok(i) => i,
            Err(i) => {
                let new = Subscriber {
                    socket,
                    topics: Vec::new(),
                    meter: Meter::new(now_ms),
                };
                self.sockets.insert(i, new);
                i
            }
        };
        &mut self.sockets[i]
    }

    fn find(&self, socket: SocketId) -> Option<&Subscriber> {
        let i = self
            .sockets
            .binary_search_by_key(&socket, |s| s.socket)
            .ok()?;
        self.sockets.get(i)
    }

    /// Subscribes `socket` to `topics` (those it has already are kept);
    /// refused whole past [`MAX_TOPICS_PER_SOCKET`].
    pub fn subscribe(&mut self, socket: SocketId, topics: &[Topic]) -> Result<(), Error> {
        let mine = &mut self.entry(socket, 0).topics;
        let mut added = mine.clone();
        for topic in topics {
            if !added.contains(topic) {
                added.push(topic.clone());
            }
        }
        if added.len() > MAX_TOPICS_PER_SOCKET {
            return Err(Error::PayloadTooLarge("Too many topics for one socket"));
        }
        *mine = added;
        Ok(())
    }

    /// Unsubscribes `socket` from `topics` (those it does not have are ignored).
    pub fn unsubscribe(&mut self, socket: SocketId, topics: &[Topic]) {
        if let Ok(i) = self.sockets.binary_search_by_key(&socket, |s| s.socket) {
            self.sockets[i].topics.retain(|t| !topics.contains(t));
        }
    }

    /// A socket that closed: all its subscriptions go.
    pub fn gone(&mut self, socket: SocketId) {
        self.sockets.retain(|s| s.socket != socket);
    }

    /// The sockets subscribed to `topic`, each once, in socket order.
    pub fn subscribers<'a>(&'a self, topic: &'a Topic) -> impl Iterator<Item = SocketId> + 'a {
        self.sockets
            .iter()
            .filter(move |s| s.topics.contains(topic))
            .map(|s| s.socket)
    }

    /// What `socket` subscribes to (kept with the socket, to rebuild from).
    pub fn topics_of(&self, socket: SocketId) -> impl Iterator<Item = &Topic> {
        self.find(socket).into_iter().flat_map(|s| s.topics.iter())
    }

    /// Counts one frame of `bytes` from `socket`; `false` once it sent
    /// more than `rate.frames` frames or `rate.bytes` bytes in the current
    /// `rate.window_ms`.
    pub fn meter(&mut self, socket: SocketId, bytes: usize, rate: &Rate, now_ms: u64) -> bool {
        self.entry(socket, now_ms).meter.count(bytes, rate, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> Vec<Topic> {
        names.iter().map(|n| Topic::parse(n).unwrap()).collect()
    }

    #[test]
    fn a_publish_reaches_each_subscriber_once_until_it_leaves() {
        let mut t = Topics::default();
        t.subscribe(1, &topics(&["doc-a", "doc-b"])).unwrap();
        t.subscribe(2, &topics(&["doc-a", "doc-a"])).unwrap();
        t.subscribe(3, &topics(&["doc-b"])).unwrap();
        let a = &topics(&["doc-a"])[0];
        assert_eq!(t.subscribers(a).collect::<Vec<_>>(), vec![1, 2]);
        t.unsubscribe(2, &topics(&["doc-a", "never"]));
        assert_eq!(t.subscribers(a).collect::<Vec<_>>(), vec![1]);
        t.gone(1);
        assert_eq!(t.subscribers(a).count(), 0);
        assert_eq!(t.topics_of(1).count(), 0);
        assert_eq!(
            t.topics_of(3).map(Topic::as_str).collect::<Vec<_>>(),
            ["doc-b"]
        );
    }

    #[test]
    fn topics_and_subscriptions_are_bounded() {
        assert!(Topic::parse("").is_err());
        assert!(Topic::parse(&"x".repeat(MAX_TOPIC_BYTES + 1)).is_err());
        assert!(Topic::parse("a\nb").is_err());
        assert!(Topic::parse("ümlaut room").is_ok());
        let mut t = Topics::default();
        let many: Vec<Topic> = (0..MAX_TOPICS_PER_SOCKET)
            .map(|i| Topic::parse(&format!("t{i}")).unwrap())
            .collect();
        t.subscribe(1, &many).unwrap();
        // Again: nothing new, taken.
        t.subscribe(1, &many).unwrap();
        assert!(t.subscribe(1, &topics(&["one-more"])).is_err());
        assert_eq!(t.topics_of(1).count(), MAX_TOPICS_PER_SOCKET);
    }

    #[test]
    fn the_meter_counts_frames_and_bytes_per_window() {
        let rate = Rate {
            frames: 3,
            bytes: 100,
            window_ms: 1000,
        };
        let mut t = Topics::default();
        assert!((0..3).all(|_| t.meter(7, 10, &rate, 0)));
        assert!(!t.meter(7, 10, &rate, 999));
        assert!(t.meter(7, 10, &rate, 1000));
        assert!(t.meter(8, 10, &rate, 999));
        assert!(t.meter(9, 100, &rate, 0));
        assert!(!t.meter(9, 1, &rate, 1), "over the bytes");
    }
}
