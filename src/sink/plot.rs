//! `--plot`: one PNG per input with each label's score over time and its events shaded.
//!
//! Scores are kept at a bounded resolution whatever the input's length: when more than
//! [`MAX_POINTS`] points accumulate, neighbours merge (keeping the maximum, so short peaks
//! stay visible) and every later point covers twice as many frames.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::events::Event;

pub const MAX_POINTS: usize = 4096;

pub struct PlotRecorder {
    labels: Vec<String>,
    frame_seconds: f64,
    /// Frames per stored point.
    decim: usize,
    pending: usize,
    acc: Vec<f32>,
    /// points[label][i]: max score over frames `i·decim .. (i+1)·decim`.
    points: Vec<Vec<f32>>,
    events: Vec<Event>,
    frames: u64,
}

impl PlotRecorder {
    pub fn new(labels: &[String], frame_seconds: f64) -> Self {
        Self {
            labels: labels.to_vec(),
            frame_seconds,
            decim: 1,
            pending: 0,
            acc: vec![0.0; labels.len()],
            points: vec![Vec::new(); labels.len()],
            events: Vec::new(),
            frames: 0,
        }
    }

    pub fn frame(&mut self, scores: &[f32]) {
        for (a, &s) in self.acc.iter_mut().zip(scores) {
            *a = a.max(s);
        }
        self.pending += 1;
        self.frames += 1;
        if self.pending == self.decim {
            for (p, a) in self.points.iter_mut().zip(self.acc.iter_mut()) {
                p.push(*a);
                *a = 0.0;
            }
            self.pending = 0;
            if self.points[0].len() >= MAX_POINTS {
                for p in &mut self.points {
                    *p = p
                        .chunks(2)
                        .map(|c| c.iter().cloned().fold(0.0, f32::max))
                        .collect();
                }
                self.decim *= 2;
            }
        }
    }

    pub fn event(&mut self, e: &Event) {
        self.events.push(e.clone());
    }

    /// Draws the PNG. Text needs a TrueType font; DejaVu Sans is looked up in the usual places
    /// (`$MAMBATAG_FONT` first) and the plot is drawn without text if none is found.
    pub fn render(&self, path: &Path, title: &str) -> Result<()> {
        let have_font = ensure_font();
        let n = self.labels.len().max(1);
        let (w, row_h, top) = (1400u32, 90u32, if have_font { 40u32 } else { 10 });
        let h = top + row_h * n as u32 + 30;
        let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        if have_font {
            root.draw(&Text::new(
                title.to_string(),
                (10, 10),
                ("sans-serif", 18).into_font(),
            ))
            .map_err(|e| anyhow!("{e}"))?;
        }
        let end = (self.frames as f64 * self.frame_seconds).max(self.frame_seconds);
        let body = root.margin(top, 20, 10, 10);
        let rows = body.split_evenly((n, 1));
        for (k, area) in rows.iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            let mut b = ChartBuilder::on(area);
            b.margin(4)
                .x_label_area_size(if k + 1 == n && have_font { 24 } else { 0 });
            if have_font {
                b.y_label_area_size(90);
            }
            let mut chart = b
                .build_cartesian_2d(0.0..end, 0.0f64..1.0)
                .map_err(|e| anyhow!("{e}"))?;
            if have_font {
                chart
                    .configure_mesh()
                    .disable_mesh()
                    .y_labels(2)
                    .y_desc(self.labels[k].as_str())
                    .x_desc(if k + 1 == n { "seconds" } else { "" })
                    .draw()
                    .map_err(|e| anyhow!("{e}"))?;
            }
            let spans = self.events.iter().filter(|e| e.label == self.labels[k]);
            chart
                .draw_series(spans.map(|e| {
                    Rectangle::new([(e.onset, 0.0), (e.offset, 1.0)], color.mix(0.2).filled())
                }))
                .map_err(|e| anyhow!("{e}"))?;
            let step = self.decim as f64 * self.frame_seconds;
            let pts = self.points[k]
                .iter()
                .enumerate()
                .map(|(i, &s)| ((i as f64 + 1.0) * step, s as f64));
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(1)))
                .map_err(|e| anyhow!("{e}"))?;
        }
        root.present()
            .map_err(|e| anyhow!("{}: cannot write PNG: {e}", path.display()))?;
        Ok(())
    }
}

fn ensure_font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        let mut candidates: Vec<std::path::PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("MAMBATAG_FONT") {
            candidates.push(p.into());
        }
        candidates.extend(
            [
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/TTF/DejaVuSans.ttf",
                "/usr/share/fonts/dejavu/DejaVuSans.ttf",
                "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            ]
            .map(Into::into),
        );
        for c in candidates {
            if let Ok(bytes) = std::fs::read(&c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found (set MAMBATAG_FONT); plots are drawn without text");
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_stays_bounded_and_peaks_survive() {
        let mut r = PlotRecorder::new(&["a".into()], 0.01);
        for i in 0..100_000 {
            r.frame(&[if i == 77_777 { 0.99 } else { 0.1 }]);
        }
        assert!(r.points[0].len() <= MAX_POINTS);
        assert!(r.points[0].len() >= MAX_POINTS / 2 - 1);
        assert!(
            r.points[0].contains(&0.99),
            "a one-frame peak must stay visible"
        );
    }
}
