//! Raw interleaved PCM from stdin or any reader (`ffmpeg … -f s16le - | mambatag tag -`).

use std::io::Read;

use anyhow::{anyhow, bail, Result};

use super::{check_format, downmix, AudioSource, SourceInfo};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PcmFormat {
    S16le,
    F32le,
}

impl PcmFormat {
    pub fn bytes(self) -> usize {
        match self {
            PcmFormat::S16le => 2,
            PcmFormat::F32le => 4,
        }
    }
}

pub struct PcmSource<R: Read + Send> {
    info: SourceInfo,
    reader: R,
    format: PcmFormat,
    bytes: Vec<u8>,
    /// Bytes at the start of `bytes` left over from the last read (a partial frame).
    carry: usize,
    samples: Vec<f32>,
    frames_read: u64,
}

const READ_BYTES: usize = 64 * 1024;

impl<R: Read + Send> PcmSource<R> {
    pub fn new(
        name: &str,
        reader: R,
        rate: u32,
        channels: usize,
        format: PcmFormat,
    ) -> Result<Self> {
        check_format(rate, channels).map_err(|e| anyhow!("{e}"))?;
        Ok(Self {
            info: SourceInfo {
                name: name.to_string(),
                rate,
                channels,
                codec: format!("{format:?}").to_lowercase(),
                duration: None,
            },
            reader,
            format,
            bytes: vec![0; READ_BYTES],
            carry: 0,
            samples: Vec::new(),
            frames_read: 0,
        })
    }
}

impl<R: Read + Send> AudioSource for PcmSource<R> {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn read(&mut self, out: &mut Vec<f32>) -> Result<bool> {
        let frame_bytes = self.format.bytes() * self.info.channels;
        loop {
            let n = match self.reader.read(&mut self.bytes[self.carry..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => bail!("read error: {e}"),
            };
            if n == 0 {
                if self.carry > 0 {
                    tracing::warn!(
                        input = %self.info.name,
                        "ignoring {} trailing bytes that do not make a whole frame",
                        self.carry
                    );
                }
                if self.frames_read == 0 {
                    bail!("no audio: the input ended before one whole sample frame");
                }
                return Ok(false);
            }
            let have = self.carry + n;
            let whole = have / frame_bytes * frame_bytes;
            if whole == 0 {
                self.carry = have;
                continue;
            }
            self.samples.clear();
            match self.format {
                PcmFormat::S16le => self.samples.extend(
                    self.bytes[..whole]
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0),
                ),
                PcmFormat::F32le => self.samples.extend(
                    self.bytes[..whole]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
            }
            downmix(
                &self.samples,
                self.info.channels,
                self.frames_read,
                self.info.rate,
                out,
            )?;
            self.frames_read += (whole / frame_bytes) as u64;
            self.bytes.copy_within(whole..have, 0);
            self.carry = have - whole;
            return Ok(true);
        }
    }
}
