//! Room requests as the server reads them (path and query pairs) and room URLs as the plugin
//! reads them: never a panic; what parses prints back to a URL that parses to the same request.
#![no_main]
use huddle_protocol::room::{RoomRequest, RoomUrl};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, Vec<(&str, &str)>, &str, u16)| {
    let (path, pairs, url, max) = input;
    if let Ok(request) = RoomRequest::from_query(Some(path), pairs) {
        let _ = request.capacity_within(usize::from(max));
        let _ = (request.topology(), request.size(), request.query());
    }
    if let Ok(room) = url.parse::<RoomUrl>() {
        let printed = room.to_string();
        let again: RoomUrl = printed.parse().expect("a printed room URL parses");
        assert_eq!(again, room, "{url} -> {printed}");
    }
});
