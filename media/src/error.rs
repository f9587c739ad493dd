//! What a codec can fail with.

/// A codec call failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// libopus refused.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
    /// libvpx refused (the call, and libvpx's error code).
    #[error("vp8: {call} failed with libvpx error {code}")]
    Vpx {
        /// The libvpx function.
        call: &'static str,
        /// Its `vpx_codec_err_t`.
        code: u32,
    },
    /// A frame whose size does not match the encoder's, or an odd size.
    #[error("video frame of {got:?} where {want:?} was expected")]
    FrameSize {
        /// The frame's width and height.
        got: (u32, u32),
        /// What the encoder takes.
        want: (u32, u32),
    },
}
