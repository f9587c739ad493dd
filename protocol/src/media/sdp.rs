//! What huddle reads from a peer's session description itself: the id its RTP header
//! extensions are sent under (`a=extmap:<id>[/<direction>] <uri>`, RFC 8285), e.g. the audio
//! level (RFC 6464) that says how loud a voice packet is without decoding it.
//!
//! The description comes from the network: a line that does not fit, an id outside 1..=255, or
//! a line past the first 64 KiB is ignored.

/// The URI of the client-to-mixer audio level header extension (RFC 6464).
pub const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";

/// The SDP read at most (huddle's own descriptions are a few KiB).
const MAX_SDP: usize = 64 * 1024;

/// The id under which `sdp`'s first media section of `media` ("audio", "video") sends the
/// header extension `uri`, if it does.
pub fn extension_id(sdp: &str, media: &str, uri: &str) -> Option<u8> {
    let mut end = sdp.len().min(MAX_SDP);
    while !sdp.is_char_boundary(end) {
        end -= 1;
    }
    let mut in_section = false;
    for line in sdp[..end].lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if in_section {
                return None;
            }
            in_section = m.split(' ').next() == Some(media);
            continue;
        }
        if !in_section {
            continue;
        }
        let Some(map) = line.strip_prefix("a=extmap:") else {
            continue;
        };
        let mut parts = map.split_whitespace();
        let (Some(id), Some(found)) = (parts.next(), parts.next()) else {
            continue;
        };
        if found != uri {
            continue;
        }
        let id = id.split('/').next().unwrap_or_default();
        return id.parse::<u8>().ok().filter(|id| *id != 0);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=extmap:5/sendrecv urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\n\
        a=extmap:7 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n";

    #[test]
    fn finds_the_id_in_its_own_media_section() {
        assert_eq!(extension_id(SDP, "audio", AUDIO_LEVEL_URI), Some(5));
        assert_eq!(extension_id(SDP, "video", AUDIO_LEVEL_URI), Some(7));
        assert_eq!(extension_id(SDP, "application", AUDIO_LEVEL_URI), None);
        assert_eq!(extension_id(SDP, "audio", "urn:x"), None);
    }

    #[test]
    fn lies_and_garbage_find_nothing() {
        for id in ["0", "256", "-1", "99999999999999999999", "", "x"] {
            let sdp = format!("m=audio 9 RTP 111\r\na=extmap:{id} {AUDIO_LEVEL_URI}\r\n");
            assert_eq!(extension_id(&sdp, "audio", AUDIO_LEVEL_URI), None, "{id}");
        }
        let mut huge = "m=audio 9 RTP 111\r\n".to_owned();
        huge.push_str(&"a=x\r\n".repeat(20_000));
        huge.push_str(&format!("a=extmap:4 {AUDIO_LEVEL_URI}\r\n"));
        assert_eq!(extension_id(&huge, "audio", AUDIO_LEVEL_URI), None);
        assert_eq!(
            extension_id("m=audio\u{0}\u{ff}", "audio", AUDIO_LEVEL_URI),
            None
        );
        // A multi-byte character at the 64 KiB boundary does not split.
        let edge = "é".repeat(MAX_SDP);
        assert_eq!(extension_id(&edge, "audio", AUDIO_LEVEL_URI), None);
    }
}
