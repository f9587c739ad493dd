//! What huddle sends of each kind: its codec (Opus, VP8) and a track description with one
//! stream of a given SSRC, for our own tracks and a star host's forwarded ones alike.

use huddle_protocol::media::MediaKind;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};

/// The codec's MIME type.
pub(crate) fn mime(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => MIME_TYPE_OPUS,
        MediaKind::Video => MIME_TYPE_VP8,
    }
}

/// The RTP clock rate of `kind`'s timestamps.
pub(crate) fn clock_rate(kind: MediaKind) -> u32 {
    match kind {
        MediaKind::Audio => 48_000,
        MediaKind::Video => 90_000,
    }
}

/// The track's label ("voice", "camera").
pub(crate) fn label(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "voice",
        MediaKind::Video => "camera",
    }
}

/// A track of `kind` in stream `stream`, named `id`, sent as one stream of `ssrc`.
pub(crate) fn track(kind: MediaKind, stream: String, id: String, ssrc: u32) -> MediaStreamTrack {
    let (codec_kind, channels, fmtp) = match kind {
        MediaKind::Audio => (RtpCodecKind::Audio, 2, "minptime=10;useinbandfec=1"),
        MediaKind::Video => (RtpCodecKind::Video, 0, ""),
    };
    MediaStreamTrack::new(
        stream,
        id,
        label(kind).to_owned(),
        codec_kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime(kind).to_owned(),
                clock_rate: clock_rate(kind),
                channels,
                sdp_fmtp_line: fmtp.to_owned(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )
}
