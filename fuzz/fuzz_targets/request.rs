//! Fuzzes the request path below HTTP: any bytes through the parser, and any
//! request it accepts through the room rules and the view. Nothing may panic.
//!
//!     cargo +nightly fuzz run request -- -max_total_time=600
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pcf_rs::domain::{DeleteKey, DELETE_KEY_BYTES};
use p2pcf_rs::engine::limits::Limits;
use p2pcf_rs::engine::room::{Arrival, Claim, Outbox, Outboxes, Room};
use p2pcf_rs::wire::p2pcf::parse::{parse_request, PeerData, Request};

const NOW: u64 = 1_795_219_200_000;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let leave = flags & 1 == 1;
    let Ok(request) = parse_request(body, leave, &Limits::default()) else {
        return;
    };
    // An empty room, then the fuzzed request.
    let Ok(mut room) = Room::<PeerData>::decode(br#"{"v":2,"e":{},"m":0}"#) else {
        return;
    };
    let outboxes = Outboxes::new();
    let key = || DeleteKey::from_random(&[7; DELETE_KEY_BYTES]);
    match &request {
        Request::Publish(p) => {
            let change = Outbox::compare(None, &p.packages);
            let recipients: Vec<_> = p.packages.iter().map(|p| p.to.clone()).collect();
            let arrival = change.arrival(&recipients);
            let claim = Claim::of_publish(p);
            let _ = room.apply(&claim, arrival, NOW, 32, key);
            let _ = room.address(&p.packages, NOW);
            let view = room.view(&p.context, Some(&p.data.session), None, &outboxes, NOW);
            let _ = p2pcf_rs::json::to_vec(&view);
            let _ = Room::<PeerData>::decode(&room.encode());
        }
        Request::Poll {
            context, presence, ..
        } => {
            if let Some(presence) = presence {
                let claim = Claim::of_presence(context, presence);
                let _ = room.apply(&claim, Arrival::Poll, NOW, 32, key);
            }
            let session = presence.as_ref().map(|p| &p.data.session);
            let view = room.view(context, session, None, &outboxes, NOW);
            let _ = p2pcf_rs::json::to_vec(&view);
        }
        Request::Leave {
            context,
            session,
            delete_key,
            ..
        } => {
            let _ = room.remove(context, session.as_ref(), delete_key, NOW);
        }
    }
});
