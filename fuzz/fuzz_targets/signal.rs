//! The one check of SDP and ICE signals (server and plugin): any text gives a verdict, never a
//! panic; the same text as a matchbox signal's JSON gets the same verdict as checked directly.
#![no_main]
use huddle_protocol::signal::{check_candidate, check_json, check_sdp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (&str, &str)| {
    let (json, text) = input;
    let _ = check_json(json);
    let _ = check_candidate(text);
    let direct = check_sdp(text).is_ok();
    let wrapped = serde_json::json!({ "Offer": text }).to_string();
    assert_eq!(check_json(&wrapped).is_ok(), direct);
});
