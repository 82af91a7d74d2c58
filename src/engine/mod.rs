//! The engine: one ONNX Runtime session and a batch of stream slots.
//!
//! Each row `b` of the `[B, …]` batch is a *slot* holding one stream's recurrent state. A call
//! ([`Engine::run`]) feeds every row its next hop (or `T` hops for a chunk graph) and advances
//! every row's state; rows flagged as idle get their old state copied back, so a stream that
//! had no audio this round is not disturbed. State lives in two sets of tensors that ping-pong
//! through two pre-built [`IoBinding`]s: the outputs of one call are the inputs of the next,
//! nothing is copied between calls, only the audio goes in and the scores come out.
//!
//! Slot management (which stream sits in which row, growing `B` in powers of two) is
//! [`slots::SlotTable`]; this type only owns the tensors.

pub mod slots;

use std::path::Path;

use anyhow::{bail, Context, Result};
use ort::memory::Allocator;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, Session};
use ort::value::Tensor;

use crate::model::{GraphKind, ModelInfo};

/// Where the model runs.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Deserialize,
    serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// ONNX Runtime's CPU execution provider.
    #[default]
    Cpu,
    /// CUDA execution provider; an error if it cannot be registered.
    Cuda,
    /// CUDA when available, else CPU (with one log line saying why).
    Auto,
}

/// CUDA execution provider settings (used with `--features cuda`).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CudaOptions {
    pub device_id: i32,
    /// Arena limit in bytes (0 = no limit).
    pub memory_limit: usize,
    pub tf32: bool,
    pub cuda_graph: bool,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: Device,
    /// ONNX Runtime intra-op threads per engine. One gives the steadiest latency.
    pub threads: usize,
    pub cuda: CudaOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            threads: 1,
            cuda: CudaOptions::default(),
        }
    }
}

/// A session with its state tensors for `capacity` streams.
pub struct Engine {
    session: Session,
    info: ModelInfo,
    device: Device,
    /// Hops per call: 1 for the step graph, `T` for the chunk graph.
    frames_per_call: usize,
    cap: usize,
    audio: Tensor<f32>,
    scores: Tensor<f32>,
    /// Two sets of state tensors; `states[cur]` holds the current state.
    states: [Vec<Tensor<f32>>; 2],
    bindings: [IoBinding; 2],
    cur: usize,
}

impl Engine {
    /// Loads one graph (`step.onnx` or `chunk.onnx`) for `capacity` streams.
    /// `frames_per_call` is ignored for the step graph; for the chunk graph it is `T`.
    pub fn load(
        path: &Path,
        opts: &EngineOptions,
        capacity: usize,
        frames_per_call: usize,
    ) -> Result<Self> {
        let rt = crate::runtime::init()?;
        let (session, device) = build_session(&rt, path, opts)?;
        let info = ModelInfo::from_session(&session, path)?;
        let frames_per_call = match info.graph {
            GraphKind::Step => 1,
            GraphKind::Chunk => frames_per_call.max(1),
        };
        let cap = capacity.max(1);
        let (audio, mut scores, mut states) = alloc_tensors(&info, cap, frames_per_call)?;
        let bindings = make_bindings(&session, &info, &audio, &mut scores, &mut states)?;
        Ok(Self {
            session,
            info,
            device,
            frames_per_call,
            cap,
            audio,
            scores,
            states,
            bindings,
            cur: 0,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// The device the session actually runs on (after `auto` resolved).
    pub fn device(&self) -> Device {
        self.device
    }
    pub fn capacity(&self) -> usize {
        self.cap
    }
    pub fn frames_per_call(&self) -> usize {
        self.frames_per_call
    }
    /// Samples one row takes per call.
    pub fn samples_per_call(&self) -> usize {
        self.frames_per_call * self.info.hop
    }

    /// The audio input of row `row`, to fill before [`Engine::run`].
    pub fn input_mut(&mut self, row: usize) -> &mut [f32] {
        let n = self.samples_per_call();
        let (_, data) = self.audio.extract_tensor_mut();
        &mut data[row * n..(row + 1) * n]
    }

    /// Scores of row `row` from the last call: `frames_per_call × labels`, frame-major.
    pub fn scores(&self, row: usize) -> &[f32] {
        let n = self.frames_per_call * self.info.num_labels();
        let (_, data) = self.scores.extract_tensor();
        &data[row * n..(row + 1) * n]
    }

    /// Runs one call over the whole batch. Rows whose `advance` flag is false keep the state
    /// they had before the call (their scores are computed but meaningless).
    pub fn run(&mut self, advance: &[bool]) -> Result<()> {
        debug_assert_eq!(advance.len(), self.cap);
        let outputs = self
            .session
            .run_binding(&self.bindings[self.cur])
            .context("model step failed")?;
        drop(outputs);
        let prev = self.cur;
        self.cur = 1 - self.cur;
        if advance.iter().any(|a| !a) {
            for (i, spec) in self.info.states.iter().enumerate() {
                let n = spec.elems();
                let [a, b] = &mut self.states;
                let (old, new) = if prev == 0 { (&*a, b) } else { (&*b, a) };
                let old = old[i].extract_tensor().1;
                let new = new[i].extract_tensor_mut().1;
                for (row, _) in advance.iter().enumerate().filter(|(_, adv)| !**adv) {
                    new[row * n..(row + 1) * n].copy_from_slice(&old[row * n..(row + 1) * n]);
                }
            }
        }
        Ok(())
    }

    /// Zeroes row `row`'s state: a new stream starts there.
    pub fn reset_row(&mut self, row: usize) {
        for (spec, t) in self
            .info
            .states
            .iter()
            .zip(self.states[self.cur].iter_mut())
        {
            let n = spec.elems();
            t.extract_tensor_mut().1[row * n..(row + 1) * n].fill(0.0);
        }
    }

    /// Copies row `row`'s state out (one vector per state tensor).
    pub fn snapshot_row(&self, row: usize) -> Vec<Vec<f32>> {
        self.info
            .states
            .iter()
            .zip(self.states[self.cur].iter())
            .map(|(spec, t)| {
                let n = spec.elems();
                t.extract_tensor().1[row * n..(row + 1) * n].to_vec()
            })
            .collect()
    }

    /// Puts a state taken with [`Engine::snapshot_row`] into row `row`.
    pub fn restore_row(&mut self, row: usize, snap: &[Vec<f32>]) -> Result<()> {
        if snap.len() != self.info.states.len() {
            bail!(
                "snapshot has {} state tensors, model has {}",
                snap.len(),
                self.info.states.len()
            );
        }
        for ((spec, t), s) in self
            .info
            .states
            .iter()
            .zip(self.states[self.cur].iter_mut())
            .zip(snap)
        {
            let n = spec.elems();
            if s.len() != n {
                bail!(
                    "snapshot of `{}` has {} values, expected {n}",
                    spec.name,
                    s.len()
                );
            }
            t.extract_tensor_mut().1[row * n..(row + 1) * n].copy_from_slice(s);
        }
        Ok(())
    }

    /// Changes the batch capacity, keeping rows `0..min(old, new)` (state included).
    pub fn resize(&mut self, capacity: usize) -> Result<()> {
        let capacity = capacity.max(1);
        if capacity == self.cap {
            return Ok(());
        }
        let keep = self.cap.min(capacity);
        let snaps: Vec<Vec<Vec<f32>>> = (0..keep).map(|r| self.snapshot_row(r)).collect();
        let (audio, mut scores, mut states) =
            alloc_tensors(&self.info, capacity, self.frames_per_call)?;
        self.bindings = make_bindings(&self.session, &self.info, &audio, &mut scores, &mut states)?;
        self.audio = audio;
        self.scores = scores;
        self.states = states;
        self.cur = 0;
        self.cap = capacity;
        for (r, s) in snaps.iter().enumerate() {
            self.restore_row(r, s)?;
        }
        Ok(())
    }
}

type Tensors = (Tensor<f32>, Tensor<f32>, [Vec<Tensor<f32>>; 2]);

fn alloc_tensors(info: &ModelInfo, cap: usize, t: usize) -> Result<Tensors> {
    let alloc = Allocator::default();
    let audio_shape: Vec<i64> = if info.graph == GraphKind::Step {
        vec![cap as i64, info.hop as i64]
    } else {
        vec![cap as i64, (t * info.hop) as i64]
    };
    let scores_shape: Vec<i64> = if info.graph == GraphKind::Step {
        vec![cap as i64, info.num_labels() as i64]
    } else {
        vec![cap as i64, t as i64, info.num_labels() as i64]
    };
    let mut audio = Tensor::<f32>::new(&alloc, audio_shape)?;
    audio.extract_tensor_mut().1.fill(0.0);
    let scores = Tensor::<f32>::new(&alloc, scores_shape)?;
    let mut sets: [Vec<Tensor<f32>>; 2] = [Vec::new(), Vec::new()];
    for set in sets.iter_mut() {
        for spec in &info.states {
            let mut shape = vec![cap as i64];
            shape.extend(spec.dims.iter().map(|&d| d as i64));
            let mut t = Tensor::<f32>::new(&alloc, shape)?;
            t.extract_tensor_mut().1.fill(0.0);
            set.push(t);
        }
    }
    Ok((audio, scores, sets))
}

/// Binding `k` reads state set `k` and writes set `1 - k`. Bound tensors are shared with the
/// binding (no copies on the CPU EP), so writing into `audio` before a call is enough.
fn make_bindings(
    session: &Session,
    info: &ModelInfo,
    audio: &Tensor<f32>,
    scores: &mut Tensor<f32>,
    states: &mut [Vec<Tensor<f32>>; 2],
) -> Result<[IoBinding; 2]> {
    let mut mk = |from: usize| -> Result<IoBinding> {
        let mut b = session.create_binding()?;
        b.bind_input("audio", audio)?;
        b.bind_output("scores", &mut *scores)?;
        let [s0, s1] = &mut *states;
        let (ins, outs) = if from == 0 { (&*s0, s1) } else { (&*s1, s0) };
        for (i, spec) in info.states.iter().enumerate() {
            b.bind_input(spec.name.as_str(), &ins[i])?;
            b.bind_output(spec.next_name(), &mut outs[i])?;
        }
        Ok(b)
    };
    let b0 = mk(0)?;
    let b1 = mk(1)?;
    Ok([b0, b1])
}

fn build_session(
    rt: &crate::runtime::Runtime,
    path: &Path,
    opts: &EngineOptions,
) -> Result<(Session, Device)> {
    fn map(e: ort::Error<ort::session::builder::SessionBuilder>) -> ort::Error<()> {
        ort::Error::<()>::from(e)
    }
    let builder = Session::builder(&rt.env)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(map)?
        .with_intra_threads(opts.threads.max(1))
        .map_err(map)?
        .with_inter_threads(1)
        .map_err(map)?;
    let (mut builder, device) = match opts.device {
        Device::Cpu => (builder, Device::Cpu),
        Device::Cuda | Device::Auto => register_cuda(builder, opts)?,
    };
    let session = builder
        .commit_from_file(path)
        .with_context(|| format!("{}: cannot load model", path.display()))?;
    Ok((session, device))
}

#[cfg(feature = "cuda")]
fn register_cuda(
    builder: ort::session::builder::SessionBuilder,
    opts: &EngineOptions,
) -> Result<(ort::session::builder::SessionBuilder, Device)> {
    use ort::ep;
    let c = &opts.cuda;
    let mut cuda = ep::CUDA::default()
        .with_device_id(c.device_id)
        .with_tf32(c.tf32)
        .with_cuda_graph(c.cuda_graph);
    if c.memory_limit > 0 {
        cuda = cuda.with_memory_limit(c.memory_limit);
    }
    match builder.with_execution_providers([cuda.build().error_on_failure()]) {
        Ok(b) => Ok((b, Device::Cuda)),
        Err(e) if opts.device == Device::Auto => {
            tracing::info!("CUDA unavailable ({e}); running on CPU");
            Ok((e.recover(), Device::Cpu))
        }
        Err(e) => bail!("--device cuda: the CUDA execution provider could not be registered: {e}"),
    }
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(
    builder: ort::session::builder::SessionBuilder,
    opts: &EngineOptions,
) -> Result<(ort::session::builder::SessionBuilder, Device)> {
    if opts.device == Device::Auto {
        tracing::info!(
            "this build has no CUDA support (build with --features cuda); running on CPU"
        );
        Ok((builder, Device::Cpu))
    } else {
        bail!("--device cuda: this mambatag was built without CUDA support; rebuild with `cargo build --release --features cuda`")
    }
}
