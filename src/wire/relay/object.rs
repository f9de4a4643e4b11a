//! The relay's HTTP calls on a room's object (the push host), so that a
//! client that polls and one on a WebSocket meet in one room: the same
//! request and answer as on R2 ([`super::adapter`]), run on the room held in
//! memory. A poll reads nothing from storage; a join writes its member's
//! row, a send the sender's, a renewal (once per half-life) the caller's.
//! What a call sends reaches connected addressees at once; pollers take
//! theirs with their next poll, by `after`.

use super::adapter::{new_member_id, Answer, MessageOut, PeerOut, RelayMember, MEMBER_TTL_MS};
use super::parse::{Caller, RelayRequest};
use super::socket::{render, Out};
use crate::config::Config;
use crate::domain::{DeleteKey, SessionId};
use crate::engine::hints::hint;
use crate::engine::mailbox::MAX_ANSWER_BYTES;
use crate::error::Error;
use crate::host::live::{LiveRoom, Pushes};
use crate::host::r2::new_delete_key;
use crate::platform::Platform;
use crate::wire::{to_json, Reply};

/// Runs one relay call on the room; the answer, and frames for the
/// connected members.
pub fn handle<P: Platform>(
    live: &mut LiveRoom<RelayMember>,
    request: &RelayRequest,
    platform: &P,
    config: &Config,
) -> (Result<Reply, Error>, Vec<Out>) {
    let now = platform.now_ms();
    let mut pushes = Pushes::new();
    let result = call(live, request, platform, config, now, &mut pushes);
    let frames = pushes.into_iter().map(|(to, p)| (to, render(&p))).collect();
    (result, frames)
}

fn call<P: Platform>(
    live: &mut LiveRoom<RelayMember>,
    request: &RelayRequest,
    platform: &P,
    config: &Config,
    now: u64,
    pushes: &mut Pushes<RelayMember>,
) -> Result<Reply, Error> {
    let (id, token) = match &request.caller {
        Caller::Joining { meta, nonce } => {
            let id = new_member_id(nonce.as_ref(), &request.room, platform)?;
            let member = RelayMember {
                id: id.clone(),
                meta: meta.clone(),
            };
            let max = config.limits.max_live_members;
            let new_key = || new_delete_key(platform);
            let (token, joined) = live.join_polling(member, new_key, MEMBER_TTL_MS, now, max)?;
            pushes.extend(joined);
            (id, Some(token))
        }
        Caller::Member { id, token } => {
            live.authenticate(id, token, now)?;
            if request.leave {
                pushes.extend(live.leave(id, now));
                return Ok(Reply {
                    status: 200,
                    retry_after: None,
                    body: b"{}".to_vec(),
                    members: live.member_count(now),
                    hint: None,
                });
            }
            live.renew(id, MEMBER_TTL_MS, now);
            (id.clone(), None)
        }
    };
    let undeliverable = if request.send.is_empty() {
        Vec::new()
    } else {
        let delivered = live.send(&id, &request.send, now)?;
        pushes.extend(delivered.pushes);
        delivered.undeliverable
    };
    Ok(answer(
        live,
        request,
        &id,
        token.as_ref(),
        &undeliverable,
        config,
        now,
    ))
}

/// The caller's view: the others, its letters after its cursors, the hint.
fn answer(
    live: &LiveRoom<RelayMember>,
    request: &RelayRequest,
    id: &SessionId,
    token: Option<&DeleteKey>,
    undeliverable: &[u64],
    config: &Config,
    now: u64,
) -> Reply {
    let (letters, more) = live.letters_after(id, &request.after, MAX_ANSWER_BYTES, now);
    let hint = hint(&live.situation(id, &config.poll, now), &config.poll);
    let answer = Answer {
        id,
        token: token.map(DeleteKey::as_str),
        peers: live.peers(id, now).map(PeerOut::from).collect(),
        messages: letters
            .into_iter()
            .map(|(from, l)| MessageOut {
                from,
                seq: l.seq,
                data: &l.data,
            })
            .collect(),
        more,
        undeliverable,
        // The object holds every letter: nothing is left unread.
        read_from: None,
        hint,
    };
    Reply {
        status: 200,
        retry_after: None,
        body: to_json(&answer),
        members: live.member_count(now),
        hint: Some(hint),
    }
}
