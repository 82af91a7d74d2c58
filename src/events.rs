//! From per-frame scores to events: smoothing, hysteresis, minimum duration.
//!
//! Per label: a causal moving average over the last `smooth` frames; an event opens when the
//! smoothed score reaches the label's **on** threshold and closes when it falls below the
//! **off** threshold (hysteresis, so a score hovering at the threshold does not flicker).
//! Events shorter than `min_duration` are dropped. An onset is announced only once the event
//! has lasted `min_duration` (so live listeners never see an onset that is later retracted);
//! the announced onset *time* is still the frame where the score first crossed.
//!
//! Times: frame `t` is hop `t`, spanning `[t·hop, (t+1)·hop)` samples. An event over frames
//! `t0..t1` (t1 exclusive) has `onset = t0·hop/rate`, `offset = t1·hop/rate`.

use anyhow::{bail, Result};
use serde::Serialize;

use crate::model::ModelInfo;

/// Hysteresis thresholds of one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub on: f32,
    pub off: f32,
}

/// The ratio of the default off threshold to the on threshold (CONTRACT.md §6).
pub const DEFAULT_OFF_RATIO: f32 = 0.7;

/// Default moving-average window in frames (CLI `--smooth`, config `events.smooth`).
pub const DEFAULT_SMOOTH: usize = 5;

/// Default minimum event length in seconds (CLI `--min-duration`, config `events.min_duration`);
/// an onset is announced once the event has lasted this long. 0.03 since 1.5.0: on its training
/// scenes it announced 20 ms sooner than 0.05 at the same event F1 (within 0.01), and on the
/// validation scenes 150 instead of 170 ms median at F1 0.419 vs 0.420 (model card).
pub const DEFAULT_MIN_DURATION: f64 = 0.03;

#[derive(Debug, Clone)]
pub struct EventParams {
    pub thresholds: Vec<Thresholds>,
    /// Moving-average window in frames (1 = no smoothing).
    pub smooth: usize,
    /// Minimum event length in seconds.
    pub min_duration: f64,
}

/// The event logic's own settings, whatever the labels: a smoothing window of at least one
/// frame and a finite, non-negative minimum duration (errors name the CLI flags).
pub fn check_logic(smooth: usize, min_duration: f64) -> Result<()> {
    if smooth == 0 {
        bail!("--smooth must be at least 1 frame");
    }
    if !(min_duration >= 0.0 && min_duration.is_finite()) {
        bail!("--min-duration must be a non-negative number of seconds");
    }
    Ok(())
}

impl EventParams {
    /// Defaults from the model, then user overrides `label=on[:off]`.
    pub fn from_model(
        info: &ModelInfo,
        overrides: &[String],
        smooth: usize,
        min_duration: f64,
    ) -> Result<Self> {
        let mut thresholds: Vec<Thresholds> = info
            .thresholds
            .iter()
            .map(|&on| Thresholds {
                on,
                off: on * DEFAULT_OFF_RATIO,
            })
            .collect();
        for o in overrides {
            let (label, t) = parse_override(o)?;
            let Some(i) = info.label_index(&label) else {
                bail!(
                    "--threshold {o}: the model has no label `{label}` (labels: {})",
                    info.labels.join(", ")
                );
            };
            thresholds[i] = t;
        }
        check_logic(smooth, min_duration)?;
        Ok(Self {
            thresholds,
            smooth,
            min_duration,
        })
    }
}

/// Parses `label=on` or `label=on:off`.
pub fn parse_override(s: &str) -> Result<(String, Thresholds)> {
    let Some((label, v)) = s.split_once('=') else {
        bail!("--threshold {s}: expected LABEL=ON or LABEL=ON:OFF");
    };
    let parse = |x: &str| -> Result<f32> {
        match x.trim().parse::<f32>() {
            Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
            _ => bail!("--threshold {s}: `{x}` is not a number in (0, 1)"),
        }
    };
    let t = match v.split_once(':') {
        Some((on, off)) => Thresholds {
            on: parse(on)?,
            off: parse(off)?,
        },
        None => {
            let on = parse(v)?;
            Thresholds {
                on,
                off: on * DEFAULT_OFF_RATIO,
            }
        }
    };
    if t.off > t.on {
        bail!("--threshold {s}: the off threshold must not exceed the on threshold");
    }
    Ok((label.trim().to_string(), t))
}

/// A finished event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub label: String,
    pub onset: f64,
    pub offset: f64,
    /// Peak smoothed score during the event.
    pub score: f32,
}

/// What the detector reports as frames go by.
#[derive(Debug, Clone, PartialEq)]
pub enum EventUpdate {
    /// An event has lasted `min_duration` and is now announced (live sinks).
    Onset {
        label: String,
        onset: f64,
        score: f32,
    },
    /// An announced event ended.
    Offset(Event),
}

#[derive(Debug, Clone)]
struct LabelState {
    window: Vec<f32>,
    sum: f32,
    pos: usize,
    filled: usize,
    active: bool,
    announced: bool,
    start: u64,
    peak: f32,
}

/// Per-stream event detector.
pub struct EventDetector {
    labels: Vec<String>,
    params: EventParams,
    frame_seconds: f64,
    min_frames: u64,
    states: Vec<LabelState>,
    frame: u64,
    smoothed: Vec<f32>,
}

impl EventDetector {
    pub fn new(labels: &[String], params: EventParams, frame_seconds: f64) -> Self {
        let min_frames = (params.min_duration / frame_seconds - 1e-9).ceil().max(1.0) as u64;
        let st = LabelState {
            window: vec![0.0; params.smooth],
            sum: 0.0,
            pos: 0,
            filled: 0,
            active: false,
            announced: false,
            start: 0,
            peak: 0.0,
        };
        Self {
            labels: labels.to_vec(),
            states: vec![st; labels.len()],
            smoothed: vec![0.0; labels.len()],
            params,
            frame_seconds,
            min_frames,
            frame: 0,
        }
    }

    /// Frames seen so far.
    pub fn frames(&self) -> u64 {
        self.frame
    }

    /// Smoothed scores of the last frame.
    pub fn smoothed(&self) -> &[f32] {
        &self.smoothed
    }

    /// Labels whose event is open and announced.
    pub fn active_labels(&self) -> impl Iterator<Item = &str> {
        self.labels
            .iter()
            .zip(&self.states)
            .filter(|(_, s)| s.announced)
            .map(|(l, _)| l.as_str())
    }

    /// Feeds one frame's scores (one per label).
    pub fn push(&mut self, scores: &[f32], out: &mut Vec<EventUpdate>) {
        let t = self.frame;
        for (i, st) in self.states.iter_mut().enumerate() {
            let x = scores[i];
            let n = st.window.len();
            st.sum += x - st.window[st.pos];
            st.window[st.pos] = x;
            st.pos = (st.pos + 1) % n;
            st.filled = (st.filled + 1).min(n);
            // Recompute exactly now and then so float drift cannot accumulate on endless streams.
            if st.pos == 0 {
                st.sum = st.window.iter().sum();
            }
            let s = (st.sum / st.filled as f32).clamp(0.0, 1.0);
            self.smoothed[i] = s;
            let th = self.params.thresholds[i];
            if !st.active {
                if s >= th.on {
                    st.active = true;
                    st.announced = false;
                    st.start = t;
                    st.peak = s;
                }
            } else if s < th.off {
                if st.announced {
                    out.push(EventUpdate::Offset(Event {
                        label: self.labels[i].clone(),
                        onset: st.start as f64 * self.frame_seconds,
                        offset: t as f64 * self.frame_seconds,
                        score: st.peak,
                    }));
                }
                st.active = false;
                st.announced = false;
            } else {
                st.peak = st.peak.max(s);
            }
            if st.active && !st.announced && t + 1 - st.start >= self.min_frames {
                st.announced = true;
                out.push(EventUpdate::Onset {
                    label: self.labels[i].clone(),
                    onset: st.start as f64 * self.frame_seconds,
                    score: st.peak,
                });
            }
        }
        self.frame += 1;
    }

    /// Ends the stream at `end` seconds: closes open events that are long enough.
    pub fn finish(&mut self, end: f64, out: &mut Vec<EventUpdate>) {
        for (i, st) in self.states.iter_mut().enumerate() {
            if st.active && st.announced {
                let onset = st.start as f64 * self.frame_seconds;
                out.push(EventUpdate::Offset(Event {
                    label: self.labels[i].clone(),
                    onset,
                    offset: end.max(onset),
                    score: st.peak,
                }));
            }
            st.active = false;
            st.announced = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(on: f32, off: f32, smooth: usize, min: f64) -> EventDetector {
        let p = EventParams {
            thresholds: vec![Thresholds { on, off }],
            smooth,
            min_duration: min,
        };
        EventDetector::new(&["x".to_string()], p, 0.01)
    }

    fn run(d: &mut EventDetector, xs: &[f32]) -> Vec<EventUpdate> {
        let mut out = Vec::new();
        for &x in xs {
            d.push(&[x], &mut out);
        }
        out
    }

    #[test]
    fn hysteresis_keeps_one_event_through_a_dip() {
        let mut d = det(0.5, 0.3, 1, 0.0);
        let mut xs = vec![0.0; 10];
        xs.extend([0.6, 0.6, 0.4, 0.45, 0.6, 0.6]);
        xs.extend([0.1; 5]);
        let out = run(&mut d, &xs);
        let offs: Vec<_> = out
            .iter()
            .filter_map(|u| match u {
                EventUpdate::Offset(e) => Some(e.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(offs.len(), 1);
        assert!((offs[0].onset - 0.10).abs() < 1e-9);
        assert!((offs[0].offset - 0.16).abs() < 1e-9);
        assert!((offs[0].score - 0.6).abs() < 1e-6);
    }

    #[test]
    fn short_blips_are_dropped_and_long_ones_announced_after_min_duration() {
        let mut d = det(0.5, 0.3, 1, 0.05);
        let mut xs = vec![0.9, 0.9, 0.0, 0.0];
        xs.extend([0.9; 8]);
        xs.push(0.0);
        let out = run(&mut d, &xs);
        assert_eq!(out.len(), 2, "{out:?}");
        match &out[0] {
            EventUpdate::Onset { onset, .. } => assert!((onset - 0.04).abs() < 1e-9),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn smoothing_delays_and_flattens() {
        let mut d = det(0.5, 0.3, 4, 0.0);
        let out = run(&mut d, &[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        // mean over 4 never reaches 0.5 after the first frames' partial windows: 1.0, 0.5, 0.67...
        assert!(matches!(out[0], EventUpdate::Onset { .. }));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn finish_closes_open_events_at_the_end() {
        let mut d = det(0.5, 0.3, 1, 0.0);
        let mut out = run(&mut d, &[0.0, 0.8, 0.9]);
        d.finish(0.025, &mut out);
        match out.last().unwrap() {
            EventUpdate::Offset(e) => {
                assert!((e.offset - 0.025).abs() < 1e-9);
                assert!((e.score - 0.9).abs() < 1e-6);
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn overrides_parse_and_reject() {
        assert_eq!(
            parse_override("speech=0.6:0.4").unwrap().1,
            Thresholds { on: 0.6, off: 0.4 }
        );
        assert!(parse_override("speech").is_err());
        assert!(parse_override("speech=1.5").is_err());
        assert!(parse_override("speech=0.3:0.6").is_err());
    }
}
