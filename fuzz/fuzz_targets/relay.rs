//! The star's routing header: any bytes decode to an error or a route that encodes to a header
//! of the length read; the host's and a client's decisions about it never panic, never forward
//! to the sender, and never let a client stamp an origin.
#![no_main]
use huddle_fuzz::peer;
use huddle_protocol::relay::{accept, decode, encode, relay};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, u8, Vec<u8>)| {
    let (link, host, data) = input;
    let Ok((route, n)) = decode(&data) else {
        return;
    };
    assert!(n <= data.len());
    // A header is read only with a frame behind it.
    let header = encode(route);
    let framed = [header.as_slice(), &[0]].concat();
    assert_eq!(decode(&framed), Ok((route, header.len())));
    let members: Vec<_> = (0..5).map(peer).collect();
    let (host, link) = (peer(host), peer(link));
    match relay(host, link, route, &members) {
        Ok(decision) => {
            assert!(route.origin.is_none(), "a client's origin is refused");
            assert_eq!(decision.header.origin, Some(link));
            assert!(!decision.forward.contains(&link));
        }
        Err(_) => assert!(route.origin.is_some()),
    }
    if let Ok(origin) = accept(Some(host), link, route) {
        assert_eq!(link, host, "only the host's frames carry origins");
        assert_eq!(Some(origin), route.origin);
    }
});
