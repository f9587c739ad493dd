//! Opus through libopus: 48 kHz mono, 20 ms frames, VoIP mode with in-band FEC and DTX, so a lost
//! packet can be rebuilt from the next one and silence costs a few packets a second.

use crate::{CodecError, FRAME_SAMPLES, SAMPLE_RATE};
use opus::{Application, Bitrate, Channels};

/// The largest Opus packet huddle produces.
const MAX_PACKET: usize = 1_500;

/// An Opus encoder for one local audio track.
pub struct AudioEncoder {
    inner: opus::Encoder,
}

impl AudioEncoder {
    /// An encoder at `bitrate` bits per second (24-32 kbps suits voice), FEC and DTX on, tuned
    /// for `loss_percent` expected loss.
    pub fn new(bitrate: u32, loss_percent: u8) -> Result<Self, CodecError> {
        let mut inner = opus::Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip)?;
        inner.set_bitrate(Bitrate::Bits(bitrate.min(510_000) as i32))?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(i32::from(loss_percent.min(100)))?;
        inner.set_dtx(true)?;
        Ok(Self { inner })
    }

    /// Sets the bitrate (bits per second).
    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), CodecError> {
        Ok(self
            .inner
            .set_bitrate(Bitrate::Bits(bitrate.clamp(6_000, 510_000) as i32))?)
    }

    /// Encodes one 20 ms frame ([`FRAME_SAMPLES`] samples; shorter input is padded with silence).
    /// During silence with DTX on the packet may be 1-2 bytes: send it anyway, it keeps the
    /// receiver's decoder in step.
    pub fn encode(&mut self, pcm: &[f32]) -> Result<Vec<u8>, CodecError> {
        let mut frame = [0f32; FRAME_SAMPLES];
        let n = pcm.len().min(FRAME_SAMPLES);
        frame[..n].copy_from_slice(&pcm[..n]);
        Ok(self.inner.encode_vec_float(&frame, MAX_PACKET)?)
    }
}

/// An Opus decoder for one remote audio track, with loss concealment.
pub struct AudioDecoder {
    inner: opus::Decoder,
}

impl AudioDecoder {
    /// A decoder.
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            inner: opus::Decoder::new(SAMPLE_RATE, Channels::Mono)?,
        })
    }

    /// Decodes a packet into one frame of PCM. A packet that does not decode (a lie, or
    /// corruption) is concealed instead, and reported as the error.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, CodecError> {
        self.run(packet, false)
    }

    /// Rebuilds the lost frame before `next` from `next`'s in-band FEC (concealment if it has
    /// none).
    pub fn recover(&mut self, next: &[u8]) -> Result<Vec<f32>, CodecError> {
        self.run(next, true)
    }

    /// Conceals one lost frame (Opus packet loss concealment).
    pub fn conceal(&mut self) -> Result<Vec<f32>, CodecError> {
        self.run(&[], false)
    }

    fn run(&mut self, packet: &[u8], fec: bool) -> Result<Vec<f32>, CodecError> {
        // 120 ms is the longest frame Opus has: a peer's packet cannot ask for more. Recovery
        // and concealment make as many samples as the buffer holds: one frame.
        let room = if fec || packet.is_empty() { 1 } else { 6 };
        let mut out = vec![0f32; FRAME_SAMPLES * room];
        let n = match self.inner.decode_float(packet, &mut out, fec) {
            Ok(n) => n,
            Err(e) => {
                let _ = self
                    .inner
                    .decode_float(&[], &mut out[..FRAME_SAMPLES], false);
                return Err(e.into());
            }
        };
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SineWave;
    use crate::tone;

    #[test]
    fn a_tone_survives_encoding_loss_and_recovery() {
        let mut source = SineWave::new(440.0, 0.5);
        let mut encoder = AudioEncoder::new(32_000, 10).unwrap();
        let mut decoder = AudioDecoder::new().unwrap();
        let packets: Vec<Vec<u8>> = (0..50)
            .map(|_| encoder.encode(&source.next_frame()).unwrap())
            .collect();
        let mut pcm = Vec::new();
        for (i, packet) in packets.iter().enumerate() {
            let frame = match i % 10 {
                4 => decoder.recover(&packets[i + 1]).unwrap(),
                7 => decoder.conceal().unwrap(),
                _ => decoder.decode(packet).unwrap(),
            };
            assert_eq!(frame.len(), FRAME_SAMPLES);
            pcm.extend(frame);
        }
        let tail = &pcm[pcm.len() / 2..];
        let peak = tone::peak_frequency(tail, 300.0, 800.0);
        assert!((peak - 440.0).abs() <= 2.0, "{peak} Hz");
        assert!(tone::level_db(tail, 440.0) - tone::level_db(tail, 550.0) > 20.0);
    }

    #[test]
    fn garbage_is_concealed_and_reported() {
        let mut decoder = AudioDecoder::new().unwrap();
        assert!(decoder.decode(&[0xff; 7]).is_err());
        // Still usable afterwards.
        let mut encoder = AudioEncoder::new(24_000, 0).unwrap();
        let packet = encoder.encode(&[0.0; FRAME_SAMPLES]).unwrap();
        assert_eq!(decoder.decode(&packet).unwrap().len(), FRAME_SAMPLES);
    }
}
