//! Audio files through symphonia: wav (pcm/float/µ-law/A-law/adpcm), flac, mp3, ogg-vorbis,
//! aac/m4a, alac, aiff, caf, mkv/webm.

use std::fs::File;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::{check_format, downmix_planes, AudioSource, SourceInfo};

pub struct FileSource {
    info: SourceInfo,
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// one buffer per channel, reused across packets (planar: no interleaving pass)
    planes: Vec<Vec<f32>>,
    frames_read: u64,
    decode_errors: u32,
    /// the container's frame count, where it states one (after the edit list's trim)
    declared_frames: Option<u64>,
    /// decoded frames still to drop before the audio starts (MP4 priming, see `mp4edit`)
    skip: u64,
    /// frames to emit in all (the MP4 edit's duration; `u64::MAX`: all of them)
    keep: u64,
}

/// Consecutive undecodable packets tolerated before a file counts as corrupt.
const MAX_DECODE_ERRORS: u32 = 16;

/// How many frames a stream may end short of the length its header declares before it counts
/// as truncated. Exact containers (WAV, AIFF, FLAC, and MP3/Vorbis with their length headers)
/// end on the declared frame; codecs that pad to whole packets may end a packet short (ALAC in
/// CAF: 16 frames); 4,608 (four MP3 frames, more than a Vorbis or AAC packet) covers those. A
/// cut inside the last ~0.1 s of a 44.1 kHz file therefore goes unnoticed.
const TRUNCATION_SLACK: u64 = 4608;

impl FileSource {
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!("no such file"),
            _ => anyhow!("cannot read: {e}"),
        })?;
        if meta.is_dir() {
            bail!("is a directory (use -r to tag the files in it)");
        }
        if meta.len() == 0 {
            bail!("empty file (0 bytes)");
        }
        // An MP4/M4A cut short: said as such here (symphonia's own errors do not say it).
        if meta.is_file() {
            super::mp4edit::check_complete(path, meta.len())?;
        }
        let file = File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(
                &hint,
                mss,
                FormatOptions::default(),
                MetadataOptions::default(),
            )
            .map_err(|e| match e {
                SymError::Unsupported(_) => {
                    anyhow!("not a supported audio file (unknown or corrupt container)")
                }
                SymError::IoError(_) => anyhow!("corrupt or truncated header"),
                other => anyhow!("corrupt header: {other}"),
            })?;
        let track = format
            .default_track(TrackType::Audio)
            .ok_or_else(|| anyhow!("no audio track"))?;
        let params = track
            .codec_params
            .as_ref()
            .and_then(|p| p.audio())
            .ok_or_else(|| anyhow!("audio track has no codec parameters"))?
            .clone();
        let track_id = track.id;
        // MP4/M4A: apply the edit list symphonia leaves alone (AAC priming and padding).
        let trim = match (format.format_info().short_name, params.sample_rate) {
            ("isomp4", Some(r)) if r > 0 => super::mp4edit::trim(path, track_id, r),
            _ => None,
        };
        let declared_frames = match trim {
            Some(t) => t.declared_frames(track.num_frames),
            None => track.num_frames,
        };
        let duration = match (declared_frames, params.sample_rate) {
            (Some(n), Some(r)) if r > 0 => Some(n as f64 / r as f64),
            _ => None,
        };
        let codec_name = symphonia::default::get_codecs()
            .get_audio_decoder(params.codec)
            .map(|c| c.codec.info.short_name.to_string());
        let Some(codec) = codec_name else {
            bail!(
                "unsupported codec {} in the audio track (convert it first, e.g. `ffmpeg -i IN \
                 OUT.flac`)",
                codec_label(params.codec)
            );
        };
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| anyhow!("unsupported codec {codec}: {e}"))?;
        // The header's rate and channels; checked again on the first decoded buffer.
        let rate = params.sample_rate.unwrap_or(0);
        let channels = params.channels.as_ref().map_or(0, |c| c.count());
        if rate != 0 || channels != 0 {
            // A field the header leaves out (0) is checked on the first decoded buffer instead.
            let (r, c) = (
                if rate == 0 { super::MIN_RATE } else { rate },
                channels.max(1),
            );
            check_format(r, if channels == 0 { 1 } else { c }).map_err(|e| anyhow!("{e}"))?;
        }
        Ok(Self {
            info: SourceInfo {
                name,
                rate,
                channels,
                codec,
                duration,
            },
            format,
            decoder,
            track_id,
            planes: Vec::new(),
            frames_read: 0,
            decode_errors: 0,
            declared_frames,
            skip: trim.map_or(0, |t| t.skip),
            keep: trim.map_or(u64::MAX, |t| t.keep),
        })
    }
}

impl AudioSource for FileSource {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        loop {
            if self.frames_read >= self.keep {
                self.check_complete()?;
                return Ok(false);
            }
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => {
                    self.check_complete()?;
                    return Ok(false);
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    bail!(
                        "truncated: the stream ends early after {:.3} s",
                        self.seconds_read()
                    );
                }
                Err(SymError::ResetRequired) => {
                    bail!("the stream changes format midway (chained streams are not supported)")
                }
                Err(e) => bail!("read error after {:.3} s: {e}", self.seconds_read()),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => {
                    self.decode_errors = 0;
                    d
                }
                Err(SymError::DecodeError(e)) => {
                    self.decode_errors += 1;
                    if self.decode_errors > MAX_DECODE_ERRORS {
                        bail!("corrupt audio data after {:.3} s: {e}", self.seconds_read());
                    }
                    tracing::warn!(file = %self.info.name, "skipping undecodable packet: {e}");
                    continue;
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    bail!(
                        "truncated: the stream ends early after {:.3} s",
                        self.seconds_read()
                    );
                }
                Err(e) => bail!("decode error after {:.3} s: {e}", self.seconds_read()),
            };
            let spec = decoded.spec();
            let rate = spec.rate();
            let channels = spec.channels().count();
            check_format(rate, channels).map_err(|e| anyhow!("{e}"))?;
            if self.info.rate == 0 {
                self.info.rate = rate;
            }
            if self.info.channels == 0 {
                self.info.channels = channels;
            }
            if rate != self.info.rate || channels != self.info.channels {
                bail!(
                    "format changes midway ({} Hz × {} → {rate} Hz × {channels}); not supported",
                    self.info.rate,
                    self.info.channels
                );
            }
            if decoded.frames() == 0 {
                continue;
            }
            self.planes.resize_with(channels, Vec::new);
            for plane in &mut self.planes {
                plane.resize(decoded.frames(), 0.0);
            }
            decoded.copy_to_slice_planar(&mut self.planes);
            let n = decoded.frames() as u64;
            let drop = self.skip.min(n);
            self.skip -= drop;
            let take = (n - drop).min(self.keep - self.frames_read);
            if take == 0 {
                continue;
            }
            if drop > 0 || take < n {
                for plane in &mut self.planes {
                    plane.drain(..drop as usize);
                    plane.truncate(take as usize);
                }
            }
            downmix_planes(&self.planes, self.frames_read, rate, out)?;
            self.frames_read += take;
            return Ok(true);
        }
    }
}

/// A readable name for a codec no registered decoder handles (the ones a user is likely to
/// meet), else its id.
fn codec_label(id: symphonia::core::codecs::audio::AudioCodecId) -> String {
    use symphonia::core::codecs::audio::well_known::*;
    let name = match id {
        CODEC_ID_OPUS => "Opus",
        CODEC_ID_SPEEX => "Speex",
        CODEC_ID_MUSEPACK => "Musepack",
        CODEC_ID_MP1 => "MPEG Layer 1",
        CODEC_ID_MP2 => "MPEG Layer 2",
        CODEC_ID_AC3 => "AC-3",
        CODEC_ID_EAC3 => "E-AC-3",
        CODEC_ID_DCA => "DTS",
        CODEC_ID_WMA => "WMA",
        CODEC_ID_WAVPACK => "WavPack",
        CODEC_ID_MONKEYS_AUDIO => "Monkey's Audio",
        CODEC_ID_TTA => "TTA",
        CODEC_ID_TRUEHD => "TrueHD",
        _ => return format!("(id {id})"),
    };
    name.to_string()
}

impl FileSource {
    /// At the end of the stream: an error if the header declared more frames than came (some
    /// demuxers, FLAC's and MP3's among them, end a cut file without an I/O error), or if no
    /// sample came at all (a header and nothing else: tagging it would print nothing and exit 0,
    /// as if the audio had been heard and was silent).
    fn check_complete(&self) -> Result<()> {
        if let Some(declared) = self.declared_frames {
            if self.frames_read + TRUNCATION_SLACK < declared {
                bail!(
                    "truncated: the stream ends after {:.3} s of the {:.3} s its header declares",
                    self.seconds_read(),
                    self.seconds(declared)
                );
            }
        }
        if self.frames_read == 0 {
            bail!("no audio: the stream holds no samples");
        }
        Ok(())
    }

    fn seconds_read(&self) -> f64 {
        self.seconds(self.frames_read)
    }

    /// `frames` at the stream's rate (0 while the rate is unknown).
    fn seconds(&self, frames: u64) -> f64 {
        if self.info.rate == 0 {
            0.0
        } else {
            frames as f64 / self.info.rate as f64
        }
    }
}
