//! Text outputs of `mambatag tag`.
//!
//! - `jsonl` (default): one object per event `{"file","label","onset","offset","score"}`; with
//!   `--frames` also one per frame `{"file","time","scores":{label:prob}}` where `time` is the
//!   end of the frame in seconds.
//! - `csv`: header `file,label,onset,offset,score`, one row per event. With `--frames`, frame
//!   rows go to a second table `file,time,<label>…` (`NAME.frames.csv` next to the events).
//! - `audacity`: a label track, `onset\toffset\tlabel` per event (Audacity: File → Import →
//!   Labels). No file column: use `--out DIR` for one track per input.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use crate::events::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    Jsonl,
    Csv,
    Audacity,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
            Format::Audacity => "txt",
        }
    }
}

/// Rounds seconds to the microsecond so outputs do not show float noise (0.30000000000000004).
fn secs(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    file: &'a str,
    label: &'a str,
    onset: f64,
    offset: f64,
    score: f32,
}

#[derive(Serialize)]
struct JsonFrame<'a> {
    file: &'a str,
    time: f64,
    scores: serde_json::Map<String, serde_json::Value>,
}

/// Writes events (and optionally frames) of one or many inputs in one format.
pub struct Writer {
    format: Format,
    labels: Vec<String>,
    events: Box<dyn Write + Send>,
    /// Frame rows for CSV (a separate table); JSONL interleaves frames with events.
    frames_csv: Option<Box<dyn Write + Send>>,
    header_done: bool,
    frames_header_done: bool,
}

impl Writer {
    pub fn new(
        format: Format,
        labels: &[String],
        events: Box<dyn Write + Send>,
        frames_csv: Option<Box<dyn Write + Send>>,
    ) -> Self {
        Self {
            format,
            labels: labels.to_vec(),
            events,
            frames_csv,
            header_done: false,
            frames_header_done: false,
        }
    }

    /// Writes the CSV header even when no event follows (an empty table is still a table).
    pub fn begin(&mut self) -> Result<()> {
        if self.format == Format::Csv && !self.header_done {
            writeln!(self.events, "file,label,onset,offset,score")?;
            self.header_done = true;
        }
        Ok(())
    }

    pub fn event(&mut self, file: &str, e: &Event) -> Result<()> {
        self.begin()?;
        match self.format {
            Format::Jsonl => {
                let j = JsonEvent {
                    file,
                    label: &e.label,
                    onset: secs(e.onset),
                    offset: secs(e.offset),
                    score: e.score,
                };
                serde_json::to_writer(&mut self.events, &j)?;
                self.events.write_all(b"\n")?;
            }
            Format::Csv => {
                writeln!(
                    self.events,
                    "{},{},{},{},{}",
                    csv_field(file),
                    csv_field(&e.label),
                    secs(e.onset),
                    secs(e.offset),
                    e.score
                )?;
            }
            Format::Audacity => {
                writeln!(self.events, "{:.6}\t{:.6}\t{}", e.onset, e.offset, e.label)?;
            }
        }
        Ok(())
    }

    /// One frame's scores; `time` is the end of the frame in seconds.
    pub fn frame(&mut self, file: &str, time: f64, scores: &[f32]) -> Result<()> {
        match self.format {
            Format::Jsonl => {
                let mut m = serde_json::Map::with_capacity(scores.len());
                for (l, &s) in self.labels.iter().zip(scores) {
                    m.insert(l.clone(), serde_json::Value::from(s));
                }
                serde_json::to_writer(
                    &mut self.events,
                    &JsonFrame {
                        file,
                        time: secs(time),
                        scores: m,
                    },
                )?;
                self.events.write_all(b"\n")?;
            }
            Format::Csv => {
                let Some(w) = self.frames_csv.as_mut() else {
                    return Ok(());
                };
                if !self.frames_header_done {
                    write!(w, "file,time")?;
                    for l in &self.labels {
                        write!(w, ",{}", csv_field(l))?;
                    }
                    writeln!(w)?;
                    self.frames_header_done = true;
                }
                write!(w, "{},{}", csv_field(file), secs(time))?;
                for s in scores {
                    write!(w, ",{s}")?;
                }
                writeln!(w)?;
            }
            Format::Audacity => {}
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.events.flush()?;
        if let Some(w) = self.frames_csv.as_mut() {
            w.flush()?;
        }
        Ok(())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
