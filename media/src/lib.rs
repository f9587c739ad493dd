//! # huddle_media
//!
//! The parts of huddle's media engine that need neither Bevy nor a network: the codecs the
//! browsers mandate (Opus through libopus, VP8 through libvpx), the synthetic sources a game or
//! a test sends ([`source::SineWave`], [`source::TestPattern`]), and the readers that check what
//! arrived ([`tone`]: a Goertzel detector; [`source::TestPattern::read_index`]), and the
//! microphone's processing ([`process`], with [`echo`] cancellation).
//!
//! The plugin's `media` feature wires these to webrtc-rs tracks and to Bevy. Native only; without the default `codecs` feature (a browser
//! build) the pure parts remain.
//!
//! Audio is 48 kHz mono in 20 ms frames ([`FRAME_SAMPLES`] samples of `f32` in -1..=1); video is
//! I420 ([`VideoFrame`]).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "codecs")]
pub mod audio;
#[cfg(feature = "codecs")]
pub mod echo;
#[cfg(feature = "codecs")]
mod error;
pub mod frame;
pub mod process;
pub mod resample;
pub mod source;
pub mod tone;
#[cfg(feature = "codecs")]
pub mod vp8;

#[cfg(feature = "codecs")]
pub use error::CodecError;
pub use frame::VideoFrame;

/// Audio sample rate (Opus's native rate).
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms audio frame.
pub const FRAME_SAMPLES: usize = 960;
