//! The frame header: any bytes decode to an error or to a frame whose header encodes back to the
//! bytes read.
#![no_main]
use huddle_protocol::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((frame, rest)) = Frame::decode(data) {
        let header = frame.header();
        assert!(header.len() + rest.len() <= data.len());
        let (again, tail) = Frame::decode(&header).expect("our own header decodes");
        assert_eq!(again, frame);
        assert!(tail.is_empty());
    }
});
