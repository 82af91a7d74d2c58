//! mambatag: streaming audio tagging with a recurrent Mamba model.
//!
//! The pipeline reads off the module tree:
//! [`source`] (files, raw PCM) → [`resample`] → [`frame`] → [`engine`] (ONNX Runtime session,
//! stream slots holding recurrent state) → [`events`] (smoothing, hysteresis, onsets/offsets) →
//! [`sink`] (JSONL/CSV/Audacity). [`pipeline`] wires one stream through all of it; [`model`]
//! checks the model contract (`models/CONTRACT.md`); [`runtime`] finds ONNX Runtime.

pub mod api;
pub mod batch;
pub mod daemon;
pub mod engine;
pub mod events;
pub mod frame;
pub mod live;
pub mod model;
pub mod pipeline;
pub mod resample;
pub mod runtime;
pub mod sink;
pub mod source;

use std::path::{Path, PathBuf};

/// Finds the default model package: `$MAMBATAG_MODEL`, then `models/default` next to the
/// executable's repository or the working directory, then `/usr/share/mambatag/models/default`.
pub fn default_model_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MAMBATAG_MODEL") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    dirs.push(PathBuf::from("/usr/share/mambatag"));
    dirs.into_iter()
        .map(|d| d.join("models").join("default"))
        .find(|p| p.join("step.onnx").is_file())
}
