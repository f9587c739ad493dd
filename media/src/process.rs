//! Microphone processing before the encoder (native; browsers do this in `getUserMedia`), in
//! WebRTC's order: echo cancellation (AEC3 through `sonora`, [`crate::echo`]), noise
//! suppression (RNNoise through the pure-Rust `nnnoiseless`: it takes non-stationary noise such
//! as keyboards better than WebRTC's spectral suppressor), automatic gain control toward a
//! speaking level, and a voice-activity gate that sends silence (which DTX makes almost free)
//! when nobody speaks.

#[cfg(feature = "codecs")]
mod processor;
#[cfg(feature = "codecs")]
pub use processor::Processor;

/// What to do to the microphone's sound.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MicProcessing {
    /// Remove the played-out remote voices that the microphone picks up again (needs the
    /// reference: [`Processor::with_reference`]).
    pub echo_cancellation: bool,
    /// Suppress stationary noise (fans, hum, hiss).
    pub noise_suppression: bool,
    /// Bring speech toward -20 dBFS (at most +20 dB, at least -12 dB).
    pub gain_control: bool,
    /// Send silence while no voice is detected (after a 200 ms hangover).
    pub voice_gate: bool,
}

impl Default for MicProcessing {
    fn default() -> Self {
        Self {
            echo_cancellation: true,
            noise_suppression: true,
            gain_control: true,
            voice_gate: true,
        }
    }
}

impl MicProcessing {
    /// Nothing done: the sound goes to the encoder as it came.
    pub const OFF: Self = Self {
        echo_cancellation: false,
        noise_suppression: false,
        gain_control: false,
        voice_gate: false,
    };
}
