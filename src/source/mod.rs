//! Where audio comes from: files (symphonia), raw PCM on stdin or a pipe.
//!
//! A source yields **mono** `f32` samples at its native rate in pieces of any size;
//! resampling and framing happen downstream. Sources refuse audio they cannot represent
//! honestly (non-finite samples, absurd headers) with an error that names the input.

pub mod file;
mod mp4edit;
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
    refuse_non_finite(out, start, pos, rate)
}

/// [`downmix`] for planar channels (one slice per channel, all the same length), as decoders
/// hand them out: the same sums in the same order, so the same values, without first
/// interleaving them.
pub fn downmix_planes(planes: &[Vec<f32>], pos: u64, rate: u32, out: &mut Vec<f32>) -> Result<()> {
    let start = out.len();
    match planes {
        [mono] => out.extend_from_slice(mono),
        [l, r] => out.extend(l.iter().zip(r).map(|(a, b)| (a + b) * 0.5)),
        _ => {
            let frames = planes.first().map_or(0, Vec::len);
            let inv = 1.0 / planes.len() as f32;
            out.resize(start + frames, 0.0);
            let mix = &mut out[start..];
            for plane in planes {
                for (m, s) in mix.iter_mut().zip(plane) {
                    *m += s;
                }
            }
            mix.iter_mut().for_each(|m| *m *= inv);
        }
    }
    refuse_non_finite(out, start, pos, rate)
}

/// A NaN or Inf in any channel makes the mix non-finite: cut `out` before the first one and
/// say where it was.
fn refuse_non_finite(out: &mut Vec<f32>, start: usize, pos: u64, rate: u32) -> Result<()> {
    if let Some(i) = out[start..].iter().position(|s| !s.is_finite()) {
        out.truncate(start + i);
        let t = (pos + i as u64) as f64 / rate as f64;
        anyhow::bail!("non-finite sample (NaN or Inf) at {t:.3} s; refusing to tag corrupt audio");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The planar mix (files) gives the interleaved mix's values (stdin PCM), for mono, stereo
    /// and more channels, and stops at the same non-finite sample.
    #[test]
    fn planar_and_interleaved_mixes_agree() {
        for channels in 1..=5usize {
            let frames = 1001;
            let planes: Vec<Vec<f32>> = (0..channels)
                .map(|c| {
                    (0..frames)
                        .map(|i| ((i * 7 + c * 13) % 97) as f32 / 48.5 - 1.0)
                        .collect()
                })
                .collect();
            let inter: Vec<f32> = (0..frames)
                .flat_map(|i| planes.iter().map(move |p| p[i]))
                .collect();
            let (mut a, mut b) = (vec![0.25], vec![0.25]);
            downmix(&inter, channels, 0, 48_000, &mut a).unwrap();
            downmix_planes(&planes, 0, 48_000, &mut b).unwrap();
            assert_eq!(a.len(), frames + 1);
            assert_eq!(a, b, "{channels} channels");

            let mut bad = planes.clone();
            bad[channels - 1][480] = f32::NAN;
            let mut out = Vec::new();
            let e = downmix_planes(&bad, 48_000, 48_000, &mut out).unwrap_err();
            assert_eq!(
                out.len(),
                480,
                "{channels} channels: mix kept up to the NaN"
            );
            assert!(e.to_string().contains("at 1.010 s"), "{e}");
        }
    }
}
