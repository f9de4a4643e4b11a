//! A relay member's undelivered messages ("letters") and the rules that keep
//! them, whatever host stores them: numbered per sender, stored once with
//! every recipient, capped in bytes, dropped [`MESSAGE_TTL_MS`] after they
//! were sent, a retry stored once, a reused number refused.
//!
//! A sender's letters live in one or two [`Mailbox`]es (on R2: its outbox
//! and, for a small batch that opens a conversation, its index entry); the
//! highest `seq` ever accepted is kept in each, and the larger of the two is
//! the sender's. A receiver takes a sender's letters in `seq` order, so a
//! number lower than one already accepted could never be delivered: it is
//! refused with 409 instead of answered 200.

use crate::domain::SessionId;
use crate::error::Error;
use crate::json::{once, required, FromJson, Raw, Read, Reader, ToJson, Writer};

/// Undelivered messages are dropped this long after they were sent.
pub const MESSAGE_TTL_MS: u64 = 60_000;
/// Most bytes one member may hold undelivered in its outbox (letters sent in
/// the last [`MESSAGE_TTL_MS`], data and recipients). A WebRTC handshake
/// with trickle ICE is ~1-5 KiB of SDP plus ~30 candidates of ~200 bytes:
/// this holds 6-12 full handshakes a minute, and a receiver reading every
/// outbox of a full room reads at most 31 × this.
pub const MAX_HELD_BYTES: usize = 64 * 1024;
/// Most bytes one member may hold undelivered in its index entry.
pub const MAX_INLINE_BYTES: usize = 16 * 1024;
/// Most message bytes in one answer; the rest comes with the next poll
/// (the answer says `"more": true`).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where a message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    One(SessionId),
    /// Every other member in the room when it is sent.
    All,
}

/// A message as a sender hands it in.
#[derive(Debug)]
pub struct Message {
    pub to: Recipient,
    /// Grows per sender, from 1.
    pub seq: u64,
    pub data: Raw,
}

/// A message as stored: once, with the members it is for.
#[derive(Clone, Debug)]
pub struct Letter {
    pub seq: u64,
    /// When it was accepted, ms since the epoch (server clock).
    pub at_ms: u64,
    /// Its recipients, bound when it was accepted.
    pub to: Vec<SessionId>,
    /// Sent to everyone (`"*"`).
    pub broadcast: bool,
    pub data: Raw,
}

impl PartialEq for Letter {
    fn eq(&self, other: &Self) -> bool {
        self.seq == other.seq
            && self.at_ms == other.at_ms
            && self.to == other.to
            && self.broadcast == other.broadcast
            && self.data.get() == other.data.get()
    }
}

impl Letter {
    /// Bytes it counts against the caps (its stored size, near enough).
    pub fn bytes(&self) -> usize {
        self.data.get().len() + self.to.iter().map(|s| s.as_str().len() + 3).sum::<usize>() + 40
    }

    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.at_ms.saturating_add(MESSAGE_TTL_MS)
    }

    pub fn is_for(&self, reader: &SessionId) -> bool {
        self.to.contains(reader)
    }

    /// The same message handed in again (a retry): same number, target and data.
    fn is_retry_of(&self, m: &Message) -> bool {
        self.seq == m.seq
            && self.data.get() == m.data.get()
            && match &m.to {
                Recipient::All => self.broadcast,
                Recipient::One(to) => !self.broadcast && self.to == [to.clone()],
            }
    }
}

/// One place's share of a sender's letters, and the highest number accepted there.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mailbox {
    pub last_seq: u64,
    pub letters: Vec<Letter>,
}

impl FromJson for Letter {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut seq, mut at_ms, mut to, mut broadcast, mut data) = (None, None, None, None, None);
        r.object(&mut |r, key| match key {
            "q" => once(&mut seq, r.u64()),
            "w" => once(&mut at_ms, r.u64()),
            "r" => once(&mut to, Vec::read(r)),
            "b" => once(&mut broadcast, r.bool()),
            "d" => once(&mut data, Raw::read(r)),
            _ => r.skip(),
        })?;
        Ok(Self {
            seq: required(seq)?,
            at_ms: required(at_ms)?,
            to: required(to)?,
            broadcast: broadcast.unwrap_or_default(),
            data: required(data)?,
        })
    }
}

impl ToJson for Letter {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("q", &self.seq)
                .field("w", &self.at_ms)
                .field("r", &self.to);
            if self.broadcast {
                w.field("b", &true);
            }
            w.field("d", &self.data);
        });
    }
}

impl ToJson for Mailbox {
    fn write(&self, w: &mut Writer) {
        w.object(|w| {
            w.field("n", &self.last_seq);
            if !self.letters.is_empty() {
                w.field("m", &self.letters);
            }
        });
    }
}

impl FromJson for Mailbox {
    fn read(r: &mut Reader<'_>) -> Read<Self> {
        let (mut last_seq, mut letters) = (None, None);
        r.object(&mut |r, key| match key {
            "n" => once(&mut last_seq, r.u64()),
            "m" => once(&mut letters, Vec::read(r)),
            _ => r.skip(),
        })?;
        Ok(Self {
            last_seq: last_seq.unwrap_or_default(),
            letters: letters.unwrap_or_default(),
        })
    }
}

/// What [`Mailbox::accept`] did with a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Letters stored now (retries of stored ones are not counted).
    pub stored: usize,
    /// Numbers of messages with nobody to deliver them to (an addressee
    /// that is not in the room, a broadcast in an empty room): not stored.
    pub undeliverable: Vec<u64>,
    /// Everyone the batch's letters are for (stored now or before).
    pub recipients: Vec<SessionId>,
}

impl Accepted {
    fn add_recipients(&mut self, to: &[SessionId]) {
        for s in to {
            if !self.recipients.contains(s) {
                self.recipients.push(s.clone());
            }
        }
    }
}

impl Mailbox {
    pub fn is_empty(&self) -> bool {
        self.last_seq == 0 && self.letters.is_empty()
    }

    /// Bytes held (see [`Letter::bytes`]).
    pub fn bytes(&self) -> usize {
        self.letters.iter().map(Letter::bytes).sum()
    }

    pub fn drop_expired(&mut self, now_ms: u64) {
        self.letters.retain(|l| l.is_live(now_ms));
    }

    pub fn holds_live(&self, now_ms: u64) -> bool {
        self.letters.iter().any(|l| l.is_live(now_ms))
    }

    /// Takes `batch` from its sender, whose other place holds `elsewhere`.
    /// `members` are the others in the room now, who a broadcast is for and
    /// who an addressed message may go to. A retry of a held letter is
    /// stored once; a number not above the sender's highest is refused
    /// (409), and so is a batch that would hold more than `cap_bytes`
    /// undelivered (429, with the seconds until the oldest letter expires).
    /// Nothing is kept of a refused batch.
    pub fn accept(
        &mut self,
        elsewhere: &Mailbox,
        batch: &[Message],
        members: &[SessionId],
        now_ms: u64,
        cap_bytes: usize,
    ) -> Result<Accepted, Error> {
        let before = self.clone();
        self.drop_expired(now_ms);
        let mut accepted = Accepted::default();
        for m in batch {
            let to: Vec<SessionId> = match &m.to {
                Recipient::All => members.to_vec(),
                Recipient::One(id) => members.iter().filter(|s| *s == id).cloned().collect(),
            };
            let highest = self.last_seq.max(elsewhere.last_seq);
            if m.seq <= highest {
                let mut held = self.letters.iter().chain(&elsewhere.letters);
                if let Some(letter) = held.find(|l| l.is_retry_of(m)) {
                    accepted.add_recipients(&letter.to);
                    continue;
                }
                if to.is_empty() {
                    // A retry of one that had nobody to go to (or a new one
                    // with nobody): either way, nothing to store.
                    accepted.undeliverable.push(m.seq);
                    continue;
                }
                *self = before;
                return Err(Error::Conflict(
                    "Message seq already used: each message needs a seq above the last one sent",
                ));
            }
            self.last_seq = m.seq;
            if to.is_empty() {
                accepted.undeliverable.push(m.seq);
                continue;
            }
            accepted.add_recipients(&to);
            self.letters.push(Letter {
                seq: m.seq,
                at_ms: now_ms,
                to,
                broadcast: m.to == Recipient::All,
                data: m.data.clone(),
            });
            accepted.stored += 1;
        }
        if accepted.stored > 0 && self.bytes() > cap_bytes {
            let oldest = self.letters.iter().map(|l| l.at_ms).min().unwrap_or(now_ms);
            let wait_ms = (oldest + MESSAGE_TTL_MS).saturating_sub(now_ms);
            *self = before;
            return Err(Error::Backlog {
                retry_after_s: u32::try_from(wait_ms.div_ceil(1000).max(1)).unwrap_or(60),
            });
        }
        Ok(accepted)
    }

    /// The live letters for `reader` numbered above `after`.
    pub fn for_reader<'a>(
        &'a self,
        reader: &'a SessionId,
        after: u64,
        now_ms: u64,
    ) -> impl Iterator<Item = &'a Letter> + 'a {
        self.letters
            .iter()
            .filter(move |l| l.seq > after && l.is_live(now_ms) && l.is_for(reader))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    fn msg(to: Option<&str>, seq: u64, data: &str) -> Message {
        Message {
            to: to.map_or(Recipient::All, |t| Recipient::One(id(t))),
            seq,
            data: Raw::parse(&format!("\"{data}\"")).unwrap(),
        }
    }

    const NOW: u64 = 1_795_219_200_000;

    #[test]
    fn a_broadcast_is_stored_once_with_its_recipients() {
        let mut mb = Mailbox::default();
        let members = [id("bob"), id("cy"), id("dee")];
        let a = mb
            .accept(
                &Mailbox::default(),
                &[msg(None, 1, "hi")],
                &members,
                NOW,
                MAX_HELD_BYTES,
            )
            .unwrap();
        assert_eq!(a.stored, 1);
        assert_eq!(mb.letters.len(), 1);
        assert_eq!(mb.letters[0].to, members);
        assert!(mb.for_reader(&id("cy"), 0, NOW).next().is_some());
        assert!(mb.for_reader(&id("cy"), 1, NOW).next().is_none());
    }

    #[test]
    fn retries_are_stored_once_and_reused_numbers_refused() {
        let mut mb = Mailbox::default();
        let members = [id("bob")];
        let other = Mailbox::default();
        let batch = [msg(Some("bob"), 1, "a"), msg(Some("bob"), 2, "b")];
        mb.accept(&other, &batch, &members, NOW, MAX_HELD_BYTES)
            .unwrap();
        let again = mb
            .accept(&other, &batch, &members, NOW + 5, MAX_HELD_BYTES)
            .unwrap();
        assert_eq!(again.stored, 0);
        assert_eq!(mb.letters.len(), 2);
        // seq 5, then seq 3: 3 could never be delivered (the cursor is at 5).
        mb.accept(
            &other,
            &[msg(Some("bob"), 5, "c")],
            &members,
            NOW,
            MAX_HELD_BYTES,
        )
        .unwrap();
        let held = mb.clone();
        let e = mb
            .accept(
                &other,
                &[msg(Some("bob"), 3, "d")],
                &members,
                NOW,
                MAX_HELD_BYTES,
            )
            .unwrap_err();
        assert_eq!(e.status(), 409);
        assert_eq!(mb, held, "nothing kept of a refused batch");
        // The other place's highest number counts too.
        let elsewhere = Mailbox {
            last_seq: 9,
            letters: vec![],
        };
        let e = mb
            .accept(
                &elsewhere,
                &[msg(Some("bob"), 7, "e")],
                &members,
                NOW,
                MAX_HELD_BYTES,
            )
            .unwrap_err();
        assert_eq!(e.status(), 409);
        // The same number with other data is not a retry.
        let e = mb
            .accept(
                &other,
                &[msg(Some("bob"), 5, "other")],
                &members,
                NOW,
                MAX_HELD_BYTES,
            )
            .unwrap_err();
        assert_eq!(e.status(), 409);
    }

    #[test]
    fn bytes_are_capped_until_letters_expire() {
        let mut mb = Mailbox::default();
        let members = [id("bob")];
        let big = "x".repeat(15_000);
        for seq in 1..=4 {
            mb.accept(
                &Mailbox::default(),
                &[msg(None, seq, &big)],
                &members,
                NOW,
                MAX_HELD_BYTES,
            )
            .unwrap();
        }
        let e = mb
            .accept(
                &Mailbox::default(),
                &[msg(None, 5, &big)],
                &members,
                NOW + 10_000,
                MAX_HELD_BYTES,
            )
            .unwrap_err();
        assert_eq!((e.status(), e.retry_after_s()), (429, Some(50)));
        assert_eq!(mb.last_seq, 4);
        let ok = mb
            .accept(
                &Mailbox::default(),
                &[msg(None, 5, &big)],
                &members,
                NOW + MESSAGE_TTL_MS,
                MAX_HELD_BYTES,
            )
            .unwrap();
        assert_eq!(
            (ok.stored, mb.letters.len()),
            (1, 1),
            "expired letters make room"
        );
    }

    #[test]
    fn a_message_for_nobody_is_not_stored_but_numbered() {
        let mut mb = Mailbox::default();
        let a = mb
            .accept(
                &Mailbox::default(),
                &[msg(Some("gone"), 1, "a"), msg(None, 2, "b")],
                &[],
                NOW,
                MAX_HELD_BYTES,
            )
            .unwrap();
        assert_eq!(a.undeliverable, vec![1, 2]);
        assert!(mb.letters.is_empty());
        assert_eq!(mb.last_seq, 2);
    }
}
