//! Where audio comes from: files (symphonia), raw PCM on stdin or a pipe.
//!
//! A source yields **mono** `f32` samples at its native rate in pieces of any size;
//! resampling and framing happen downstream. Sources refuse audio they cannot represent
//! honestly (non-finite samples, absurd headers) with an error that names the input.

pub mod file;
pub mod pcm;

use anyhow::Result;

pub use file::FileSource;
pub use pcm::{PcmFormat, PcmSource};

/// Largest channel count and rate accepted from a header; anything beyond is treated as corrupt.
pub const MAX_CHANNELS: usize = 64;
pub const MAX_RATE: u32 = 768_000;
pub const MIN_RATE: u32 = 1_000;

#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// A name for messages and outputs (the path, or `-`).
    pub name: String,
    pub rate: u32,
    pub channels: usize,
    /// Codec or sample format, for messages.
    pub codec: String,
    /// Duration in seconds when the container says.
    pub duration: Option<f64>,
}

pub trait AudioSource: Send {
    fn info(&self) -> &SourceInfo;
    /// Appends the next mono samples to `out`; returns `Ok(false)` at the end of the stream.
    fn read(&mut self, out: &mut Vec<f32>) -> Result<bool>;
}

/// Checks a header's rate and channel count.
pub fn check_format(rate: u32, channels: usize) -> std::result::Result<(), String> {
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(format!(
            "absurd sample rate {rate} Hz (accepted: {MIN_RATE}–{MAX_RATE})"
        ));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(format!(
            "absurd channel count {channels} (accepted: 1–{MAX_CHANNELS})"
        ));
    }
    Ok(())
}

/// Averages interleaved channels into `out`, refusing NaN/Inf. `pos` is the number of frames
/// already read (for the message).
pub fn downmix(
    interleaved: &[f32],
    channels: usize,
    pos: u64,
    rate: u32,
    out: &mut Vec<f32>,
) -> Result<()> {
    let start = out.len();
    match channels {
        1 => out.extend_from_slice(interleaved),
        // a loop of its own, so that the common stereo case vectorises
        2 => out.extend(interleaved.chunks_exact(2).map(|f| (f[0] + f[1]) * 0.5)),
        _ => {
            let inv = 1.0 / channels as f32;
            out.extend(
                interleaved
                    .chunks_exact(channels)
                    .map(|f| f.iter().sum::<f32>() * inv),
            );
        }
    }
    // a NaN or Inf in any channel makes the mix non-finite
    if let Some(i) = out[start..].iter().position(|s| !s.is_finite()) {
        out.truncate(start + i);
        let t = (pos + i as u64) as f64 / rate as f64;
        anyhow::bail!("non-finite sample (NaN or Inf) at {t:.3} s; refusing to tag corrupt audio");
    }
    Ok(())
}
