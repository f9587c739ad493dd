//! Control messages: any bytes decode to nothing or to a message that encodes and decodes to
//! itself; a hello's version is read without a panic.
#![no_main]
use huddle_protocol::control::{hello_version, Control};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hello_version(data);
    if let Some(control) = Control::decode(data) {
        let bytes = control.encode();
        assert_eq!(Control::decode(&bytes), Some(control));
    }
});
