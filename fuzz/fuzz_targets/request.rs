//! Fuzzes the request path below HTTP: any bytes through the parser, and any
//! request it accepts through the room rules and the view. Nothing may panic.
//!
//!     cargo +nightly fuzz run request -- -max_total_time=600
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pcf_rs::limits::Limits;
use p2pcf_rs::protocol::{parse_request, Request};
use p2pcf_rs::room::{DeleteKey, Outboxes, Room, DELETE_KEY_BYTES};

const NOW: u64 = 1_795_219_200_000;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let leave = flags & 1 == 1;
    let Ok(request) = parse_request(body, leave, NOW, &Limits::default()) else {
        return;
    };
    // A room that already has someone in it, then the fuzzed request.
    let mut room = Room::decode(br#"{"v":2,"e":{},"m":0}"#);
    let outboxes = Outboxes::new();
    match &request {
        Request::Publish(p) => {
            let _ = room.apply_publish(p, !p.packages.is_empty(), NOW, 32, || {
                DeleteKey::from_random(&[7; DELETE_KEY_BYTES])
            });
            let view = room.view(&p.context, Some(&p.data.session), None, &outboxes, NOW);
            let _ = serde_json::to_vec(&view);
            let _ = Room::decode(&room.encode());
        }
        Request::Poll { context, session, .. } => {
            let view = room.view(context, session.as_ref(), None, &outboxes, NOW);
            let _ = serde_json::to_vec(&view);
        }
        Request::Leave { context, session, delete_key, .. } => {
            let _ = room.remove(context, session.as_ref(), delete_key, NOW);
        }
    }
});
