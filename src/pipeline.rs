//! The per-stream audio path: source → resample → frame → engine → events.
//!
//! [`Conditioner`] turns native-rate mono pieces into model-rate hops (chunking-invariant);
//! [`decode_hops`] reads a whole source through it in blocks (the batch runner's lane threads
//! call it, so decoding overlaps the model).

use anyhow::Result;

use crate::frame::Framer;
use crate::resample::{MonoResampler, Quality};
use crate::source::AudioSource;

/// Resampler + framer for one stream.
pub struct Conditioner {
    resampler: MonoResampler,
    framer: Framer,
    scratch: Vec<f32>,
    /// Model-rate samples that carried real audio (for the end time of the stream).
    real_samples: u64,
}

impl Conditioner {
    pub fn new(rate_in: u32, rate_out: u32, hop: usize, quality: Quality) -> Result<Self> {
        Ok(Self {
            resampler: MonoResampler::new(rate_in, rate_out, quality)?,
            framer: Framer::new(hop),
            scratch: Vec::new(),
            real_samples: 0,
        })
    }

    /// Adds native-rate mono samples.
    pub fn push(&mut self, mono: &[f32]) -> Result<()> {
        self.scratch.clear();
        self.resampler.push(mono, &mut self.scratch)?;
        self.real_samples += self.scratch.len() as u64;
        self.framer.push(&self.scratch);
        Ok(())
    }

    /// End of stream: flushes the resampler and pads the last partial hop with zeros.
    pub fn finish(&mut self) -> Result<()> {
        self.scratch.clear();
        self.resampler.finish(&mut self.scratch)?;
        self.real_samples += self.scratch.len() as u64;
        self.framer.push(&self.scratch);
        self.framer.pad_last();
        Ok(())
    }

    pub fn next_hop(&mut self) -> Option<&[f32]> {
        self.framer.next_hop()
    }

    /// Seconds of real (unpadded) audio at the model rate.
    pub fn seconds(&self) -> f64 {
        self.real_samples as f64 / self.resampler.rate_out() as f64
    }
}

#[derive(Debug, Clone, Default)]
pub struct StreamSummary {
    pub frames: u64,
    pub seconds: f64,
    pub events: u64,
}

/// Blocks of model-rate hops travel from the decoding thread in pieces of this many hops.
const HOPS_PER_BLOCK: usize = 100;

/// Reads `source` to the end, resampling to `rate_out` and cutting hops; hands blocks of whole
/// hops (the last one zero-padded) to `send`. Returns the seconds of real audio.
pub fn decode_hops(
    mut source: Box<dyn AudioSource>,
    rate_out: u32,
    hop: usize,
    quality: Quality,
    mut send: impl FnMut(Vec<f32>) -> Result<()>,
) -> Result<f64> {
    let rate_in = source.info().rate;
    let mut cond: Option<Conditioner> = None;
    let mut mono = Vec::new();
    let mut block = Vec::with_capacity(hop * HOPS_PER_BLOCK);
    loop {
        mono.clear();
        let more = source.read(&mut mono)?;
        if cond.is_none() {
            // Formats that leave the rate out of the header know it after the first packet.
            let r = if rate_in != 0 {
                rate_in
            } else {
                source.info().rate
            };
            cond = Some(Conditioner::new(r, rate_out, hop, quality)?);
        }
        let c = cond.as_mut().unwrap();
        if more {
            c.push(&mono)?;
        } else {
            c.finish()?;
        }
        while let Some(h) = c.next_hop() {
            block.extend_from_slice(h);
            if block.len() >= hop * HOPS_PER_BLOCK {
                send(std::mem::replace(
                    &mut block,
                    Vec::with_capacity(hop * HOPS_PER_BLOCK),
                ))?;
            }
        }
        if !more {
            break;
        }
    }
    if !block.is_empty() {
        send(block)?;
    }
    Ok(cond.map_or(0.0, |c| c.seconds()))
}
