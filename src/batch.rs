//! Many streams through one engine: the batch runner behind `mambatag tag`.
//!
//! Each of `L` **lanes** is one row of the engine's batch with its own decoding thread
//! (decode → resample → hops, bounded channel, so memory stays flat in file length). The engine
//! thread runs every active lane in lockstep, `T` hops per call (`T` = 1 for the step graph,
//! the chunk size for the chunk graph). When a lane's input ends, its row is reset and its
//! thread takes the next input from the shared queue, so files of any length keep all lanes
//! busy. Results are reported per input through callbacks; a failing input ends only its lane's
//! current stream.

use std::collections::VecDeque;

use anyhow::{anyhow, Result};
use std::sync::Mutex;

use crossbeam_channel::{bounded, unbounded, Receiver};

use crate::engine::Engine;
use crate::events::{Event, EventDetector, EventParams, EventUpdate};
use crate::pipeline::{decode_hops, StreamSummary};
use crate::resample::Quality;
use crate::source::AudioSource;

enum LaneMsg {
    Start(usize),
    Block(Vec<f32>),
    End(Result<f64>),
}

/// What the runner tells the caller.
pub enum Report<'a> {
    /// Scores of one frame of input `job`; `time` is the end of the frame in seconds.
    Frame {
        job: usize,
        time: f64,
        scores: &'a [f32],
    },
    Event {
        job: usize,
        event: Event,
    },
    Done {
        job: usize,
        result: Result<StreamSummary>,
    },
}

#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub lanes: usize,
    pub quality: Quality,
    pub events: EventParams,
    /// Also report per-frame scores.
    pub frames: bool,
}

struct Lane {
    rx: Receiver<LaneMsg>,
    job: Option<usize>,
    buf: VecDeque<f32>,
    /// The input ended: `Some(seconds)` once its End arrived.
    ending: Option<f64>,
    detector: Option<EventDetector>,
    frames: u64,
    events: u64,
    /// No more inputs for this lane.
    closed: bool,
}

/// Runs inputs `0..n` through `engines`, each on its own thread with `opts.lanes` lanes, all
/// taking inputs from one queue (more engines use more cores: one ORT thread each keeps the
/// batched calls efficient). `open(i)` opens input `i` on a lane's decoding thread; `report` is
/// called under a lock, from whichever engine thread has something to say.
pub fn run<O>(
    engines: &mut [Engine],
    n: usize,
    open: &O,
    opts: &BatchOptions,
    report: impl FnMut(Report<'_>) -> Result<()> + Send,
) -> Result<()>
where
    O: Fn(usize) -> Result<Box<dyn AudioSource>> + Sync,
{
    if n == 0 || engines.is_empty() {
        return Ok(());
    }
    let (job_tx, job_rx) = unbounded::<usize>();
    for j in 0..n {
        job_tx.send(j).unwrap();
    }
    drop(job_tx);
    let report = Mutex::new(report);
    let lanes = opts.lanes.clamp(1, n.div_ceil(engines.len()));
    std::thread::scope(|scope| -> Result<()> {
        let handles: Vec<_> = engines
            .iter_mut()
            .enumerate()
            .map(|(i, e)| {
                let jobs = job_rx.clone();
                let report = &report;
                std::thread::Builder::new()
                    .name(format!("engine{i}"))
                    .spawn_scoped(scope, move || {
                        run_engine(e, jobs, lanes, open, opts, report)
                    })
            })
            .collect::<std::io::Result<_>>()?;
        for h in handles {
            h.join().map_err(|_| anyhow!("engine thread panicked"))??;
        }
        Ok(())
    })
}

fn run_engine<O, R>(
    engine: &mut Engine,
    job_rx: Receiver<usize>,
    lanes: usize,
    open: &O,
    opts: &BatchOptions,
    report: &Mutex<R>,
) -> Result<()>
where
    O: Fn(usize) -> Result<Box<dyn AudioSource>> + Sync,
    R: FnMut(Report<'_>) -> Result<()>,
{
    let report = |r: Report<'_>| -> Result<()> {
        (report.lock().map_err(|_| anyhow!("reporter poisoned"))?)(r)
    };
    let info = engine.info().clone();
    let hop = info.hop;
    let t_call = engine.frames_per_call();
    if engine.capacity() < lanes {
        engine.resize(lanes)?;
    }
    let mut lane_state = Vec::with_capacity(lanes);
    std::thread::scope(|scope| -> Result<()> {
        for k in 0..lanes {
            // Enough blocks buffered to cover a few calls of T hops.
            let (tx, rx) = bounded::<LaneMsg>(8 + 2 * t_call / 100);
            let jobs = job_rx.clone();
            let quality = opts.quality;
            let rate = info.sample_rate;
            std::thread::Builder::new()
                .name(format!("lane{k}"))
                .spawn_scoped(scope, move || {
                    for job in jobs.iter() {
                        if tx.send(LaneMsg::Start(job)).is_err() {
                            return;
                        }
                        let res = open(job).and_then(|src| {
                            decode_hops(src, rate, hop, quality, |b| {
                                tx.send(LaneMsg::Block(b))
                                    .map_err(|_| anyhow!("engine stopped"))
                            })
                        });
                        if tx.send(LaneMsg::End(res)).is_err() {
                            return;
                        }
                    }
                })?;
            lane_state.push(Lane {
                rx,
                job: None,
                buf: VecDeque::new(),
                ending: None,
                detector: None,
                frames: 0,
                events: 0,
                closed: false,
            });
        }
        let frame_s = info.hop_seconds();
        let mut updates = Vec::new();
        let mut advance = vec![false; engine.capacity()];
        let mut valid = vec![0usize; lane_state.len()];
        let need = t_call * hop;
        loop {
            // Fill every lane with T hops, or learn that its input ended.
            for (k, lane) in lane_state.iter_mut().enumerate() {
                while !lane.closed
                    && lane.ending.is_none()
                    && (lane.job.is_none() || lane.buf.len() < need)
                {
                    match lane.rx.recv() {
                        Ok(LaneMsg::Start(job)) => {
                            engine.reset_row(k)?;
                            lane.job = Some(job);
                            lane.buf.clear();
                            lane.frames = 0;
                            lane.events = 0;
                            lane.detector = Some(EventDetector::new(
                                &info.labels,
                                opts.events.clone(),
                                frame_s,
                            ));
                        }
                        Ok(LaneMsg::Block(b)) => lane.buf.extend(b),
                        Ok(LaneMsg::End(Ok(secs))) => lane.ending = Some(secs),
                        Ok(LaneMsg::End(Err(e))) => {
                            let job = lane.job.take().expect("End follows Start");
                            lane.buf.clear();
                            report(Report::Done {
                                job,
                                result: Err(e),
                            })?;
                        }
                        Err(_) => lane.closed = true,
                    }
                }
            }
            // Which lanes step, and with how many real hops.
            let mut any = false;
            valid.fill(0);
            for (k, lane) in lane_state.iter_mut().enumerate() {
                advance[k] = false;
                if lane.job.is_none() {
                    continue;
                }
                let have = lane.buf.len() / hop;
                let take = have.min(t_call);
                if take == 0 {
                    continue;
                }
                valid[k] = take;
                advance[k] = true;
                any = true;
                let input = engine.input_mut(k);
                for (dst, src) in input.iter_mut().zip(lane.buf.drain(..take * hop)) {
                    *dst = src;
                }
                // A short last call of a chunk graph: zero-pad; the padded frames are dropped
                // and the row is reset before its next input.
                input[take * hop..].fill(0.0);
            }
            if any {
                engine.run(&advance)?;
            }
            let c = info.num_labels();
            for (k, lane) in lane_state.iter_mut().enumerate() {
                let Some(job) = lane.job else { continue };
                let scores = engine.scores(k);
                let det = lane.detector.as_mut().unwrap();
                for f in 0..valid[k] {
                    let s = &scores[f * c..(f + 1) * c];
                    lane.frames += 1;
                    if opts.frames {
                        report(Report::Frame {
                            job,
                            time: lane.frames as f64 * frame_s,
                            scores: s,
                        })?;
                    }
                    det.push(s, &mut updates);
                    for u in updates.drain(..) {
                        if let EventUpdate::Offset(event) = u {
                            lane.events += 1;
                            report(Report::Event { job, event })?;
                        }
                    }
                }
                if let Some(secs) = lane.ending {
                    if lane.buf.len() < hop {
                        det.finish(secs, &mut updates);
                        for u in updates.drain(..) {
                            if let EventUpdate::Offset(event) = u {
                                lane.events += 1;
                                report(Report::Event { job, event })?;
                            }
                        }
                        let summary = StreamSummary {
                            frames: lane.frames,
                            seconds: secs,
                            events: lane.events,
                        };
                        report(Report::Done {
                            job,
                            result: Ok(summary),
                        })?;
                        lane.job = None;
                        lane.ending = None;
                        lane.buf.clear();
                    }
                }
            }
            if lane_state.iter().all(|l| l.closed && l.job.is_none()) {
                break;
            }
        }
        Ok(())
    })?;
    Ok(())
}
