//! The per-stream audio path: source → resample → frame → engine → events.
//!
//! [`Conditioner`] turns native-rate mono pieces into model-rate hops (chunking-invariant);
//! [`tag_source`] runs one source through an engine row with decoding and resampling on a
//! separate thread, so the decoder and the model overlap.

use anyhow::{anyhow, Result};
use crossbeam_channel::bounded;

use crate::engine::Engine;
use crate::events::{Event, EventDetector, EventParams, EventUpdate};
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

    pub fn ready(&self) -> usize {
        self.framer.ready()
    }

    /// Seconds of real (unpadded) audio at the model rate.
    pub fn seconds(&self) -> f64 {
        self.real_samples as f64 / self.resampler.rate_out() as f64
    }
}

/// What [`tag_source`] reports per frame and per event.
pub enum Output<'a> {
    /// Scores of frame `index`; `time` is the end of the frame.
    Frame {
        time: f64,
        scores: &'a [f32],
    },
    Event(Event),
}

#[derive(Debug, Clone, Default)]
pub struct StreamSummary {
    pub frames: u64,
    pub seconds: f64,
    pub events: u64,
}

/// Options for tagging one source.
#[derive(Debug, Clone)]
pub struct TagOptions {
    pub quality: Quality,
    pub events: EventParams,
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

/// Tags one source on row 0 of `engine` (a step engine with capacity ≥ 1): decoding and
/// resampling run on their own thread; the caller's thread runs the model and the events.
pub fn tag_source(
    engine: &mut Engine,
    source: Box<dyn AudioSource>,
    opts: &TagOptions,
    mut emit: impl FnMut(Output<'_>) -> Result<()>,
) -> Result<StreamSummary> {
    let info = engine.info().clone();
    let hop = info.hop;
    let (tx, rx) = bounded::<Result<Vec<f32>>>(4);
    let quality = opts.quality;
    let producer = std::thread::Builder::new()
        .name("decode".into())
        .spawn(move || -> f64 {
            let res = decode_hops(source, info.sample_rate, hop, quality, |block| {
                tx.send(Ok(block)).map_err(|_| anyhow!("engine stopped"))
            });
            match res {
                Ok(seconds) => seconds,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    0.0
                }
            }
        })?;

    engine.reset_row(0)?;
    let advance = {
        let mut a = vec![false; engine.capacity()];
        a[0] = true;
        a
    };
    let mut detector = EventDetector::new(&info.labels, opts.events.clone(), info.hop_seconds());
    let mut updates = Vec::new();
    let mut summary = StreamSummary::default();
    let mut failure = None;
    for block in rx.iter() {
        let block = match block {
            Ok(b) => b,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        for h in block.chunks_exact(hop) {
            engine.input_mut(0).copy_from_slice(h);
            engine.run(&advance)?;
            let scores = engine.scores(0);
            summary.frames += 1;
            emit(Output::Frame {
                time: summary.frames as f64 * info.hop_seconds(),
                scores,
            })?;
            detector.push(scores, &mut updates);
            for u in updates.drain(..) {
                if let EventUpdate::Offset(e) = u {
                    summary.events += 1;
                    emit(Output::Event(e))?;
                }
            }
        }
    }
    drop(rx);
    let seconds = producer
        .join()
        .map_err(|_| anyhow!("decoder thread panicked"))?;
    if let Some(e) = failure {
        return Err(e);
    }
    summary.seconds = seconds;
    detector.finish(seconds, &mut updates);
    for u in updates.drain(..) {
        if let EventUpdate::Offset(e) = u {
            summary.events += 1;
            emit(Output::Event(e))?;
        }
    }
    Ok(summary)
}
