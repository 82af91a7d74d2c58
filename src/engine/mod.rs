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

pub mod fused;
pub mod slots;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{IoBinding, RunOptions, Session};
use ort::value::{Shape, Tensor, TensorRefMut};

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

/// Which graph of a model package runs: the standard-op one or the one with the fused Mamba
/// operators (`step-fused.onnx` / `chunk-fused.onnx`, see [`fused`]).
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
pub enum Kernels {
    /// The fastest graph the package has for the device: on a GPU the layer step graph
    /// (`step-layer.onnx`), else the fused graphs; the standard graph when there is neither.
    #[default]
    Auto,
    /// Only standard ONNX operators (runs on any ONNX runtime).
    Onnx,
    /// The fused graph (`*-fused.onnx`); an error if the package has none.
    Fused,
    /// The layer step graph (`step-layer.onnx`: one `MambaLayer` op per layer, the front end,
    /// embedding and head one op each); chunk graphs use their fused graph. An error if the
    /// package has no layer graph.
    Layer,
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
    pub kernels: Kernels,
    pub cuda: CudaOptions,
    /// Touch state rows only through ONNX Runtime copies, as on a GPU (tests run the device
    /// code path on the CPU EP with this).
    pub force_device_row_ops: bool,
    /// `--kernels auto`: the largest batch that runs the layer step graph before the engine
    /// switches to the fused one (`None`: [`LAYER_MAX_BATCH`] on a GPU,
    /// [`LAYER_MAX_BATCH_CPU`] on the CPU).
    pub layer_max_batch: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            threads: 1,
            kernels: Kernels::default(),
            cuda: CudaOptions::default(),
            force_device_row_ops: false,
            layer_max_batch: None,
        }
    }
}

/// Frames per call of a chunk graph whose metadata names none.
pub const DEFAULT_CHUNK_FRAMES: usize = 250;

/// Largest batch that runs the layer step graph on a GPU under `--kernels auto`: above it the
/// fused step graph (cuBLAS projections) is faster (H200, BENCHMARKS.md: equal at 256 streams,
/// fused 4 % faster at 1,024 and 24 % at 16,384).
pub const LAYER_MAX_BATCH: usize = 512;
/// The same on the CPU: none. The layer op beats ONNX Runtime's MatMuls for one stream (47 vs
/// 52 µs per step on the 2-core CI machine) and loses from two on (its matrix-vector loops read
/// the weights once per row), but running it for a lone stream would make that stream's scores
/// differ (at float rounding) from the same stream's in a batch, which the CPU path keeps
/// bit-identical. `--kernels layer` runs it anyway.
pub const LAYER_MAX_BATCH_CPU: usize = 0;

/// A session with its state tensors for `capacity` streams.
pub struct Engine {
    session: Session,
    /// `--kernels auto` with the layer step graph: the fused step graph, for batches over
    /// [`LAYER_MAX_BATCH`] on a GPU or [`LAYER_MAX_BATCH_CPU`] on the CPU (its path until first
    /// needed, then its session). Both graphs have
    /// the same inputs, outputs and states (CONTRACT.md §7), so the state buffers carry over.
    big: Option<BigBatch>,
    info: ModelInfo,
    device: Device,
    /// Hops per call: 1 for the step graph, `T` for the chunk graph.
    frames_per_call: usize,
    cap: usize,
    /// Page-locks `audio`/`scores` on CUDA; declared before them so it unlocks before they
    /// are freed.
    #[cfg(feature = "cuda")]
    pins: Option<fused::cuda::HostPins>,
    /// Driver-API copies for the per-step audio/scores transfers (CUDA; `None`: ORT's copies).
    #[cfg(feature = "cuda")]
    copier: Option<fused::cuda::Copier>,
    /// Host-side audio and scores (what callers read and write).
    audio: Tensor<f32>,
    scores: Tensor<f32>,
    /// Device-side copies bound to the session when the model runs off the host (CUDA); on the
    /// CPU EP the host tensors are bound directly.
    dev_io: Option<(Tensor<f32>, Tensor<f32>)>,
    /// Two sets of state tensors; `states[cur]` holds the current state.
    states: [Vec<Tensor<f32>>; 2],
    bindings: [IoBinding; 2],
    /// Run options per binding (CUDA graphs need one graph id per binding).
    run_opts: Option<[RunOptions; 2]>,
    /// CUDA graphs are on.
    graphs: bool,
    /// ORT does not synchronise at the end of a run ([`Engine::copies_on_stream`]).
    no_sync: bool,
    /// Batch allocations so far: each one gets its own pair of CUDA graph ids, since a captured
    /// graph replays the addresses and shapes it was captured with.
    generation: usize,
    cur: usize,
    /// Where tensors are allocated.
    allocs: Allocs,
    /// States are host memory and rows are touched directly (false on CUDA, or when forced to
    /// exercise the device path on CPU in tests).
    host_rows: bool,
    timings: Timings,
    /// The sessions' own CUDA stream (declared last: dropped after the sessions).
    #[cfg(feature = "cuda")]
    stream: Option<fused::cuda::Stream>,
}

/// The session that runs a batch of `cap` (binding and running go through here): on an engine
/// with a second step graph, that graph's session (loaded on first use) for a batch over its
/// switch point; else `main`.
fn session_for<'a>(
    main: &'a mut Session,
    big: &'a mut Option<BigBatch>,
    cap: usize,
) -> Result<&'a mut Session> {
    match big {
        Some(b) if cap > b.max => {
            if b.session.is_none() {
                let rt = crate::runtime::init()?;
                b.session = Some(build_session(&rt, &b.path, &b.opts, b.stream)?.0);
                tracing::debug!("batch {cap} > {}: running {}", b.max, b.path.display());
            }
            Ok(b.session.as_mut().expect("loaded above"))
        }
        _ => Ok(main),
    }
}

/// The second step graph of an engine (see [`Engine::big`]).
struct BigBatch {
    path: std::path::PathBuf,
    opts: EngineOptions,
    /// The engine's compute stream (see [`build_session`]).
    stream: usize,
    /// Largest batch the main (layer) graph runs.
    max: usize,
    session: Option<Session>,
}

/// Where the time of [`Engine::run`] goes, summed since the last [`Engine::take_timings`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    pub calls: u64,
    /// Audio host → device (CUDA only).
    pub input: Duration,
    /// The session run itself.
    pub model: Duration,
    /// Scores device → host (CUDA only).
    pub output: Duration,
    /// The run returned once queued, and `output` includes waiting for it (a GPU step engine
    /// whose copies go through its own stream).
    pub overlapped: bool,
}

impl Engine {
    /// Loads one graph (`step.onnx` or `chunk.onnx`) for `capacity` streams.
    /// `frames_per_call` is ignored for the step graph; for the chunk graph it is `T`
    /// (0: the model's preferred `mambatag.chunk_frames`).
    pub fn load(
        path: &Path,
        opts: &EngineOptions,
        capacity: usize,
        frames_per_call: usize,
    ) -> Result<Self> {
        let rt = crate::runtime::init()?;
        // the layer graph is the fast one on a GPU (a dozen launches per step); on the CPU the
        // fused graph's ONNX Runtime MatMuls beat the layer op's plain loops at batch > 1
        let gpu = match opts.device {
            Device::Cpu => false,
            Device::Cuda => true,
            Device::Auto => cfg!(feature = "cuda"),
        };
        let default_max = |gpu| {
            if gpu {
                LAYER_MAX_BATCH
            } else {
                LAYER_MAX_BATCH_CPU
            }
        };
        let layer_max = opts.layer_max_batch.unwrap_or(default_max(gpu));
        let graph = graph_for(path, opts.kernels, capacity.max(1) <= layer_max)?;
        // On a GPU the sessions run on a stream of the engine's own, so that the audio upload
        // can be queued ahead of each run (MAMBATAG_ORT_STREAM=1: ORT's stream, for A/B runs).
        #[cfg(feature = "cuda")]
        let stream = (opts.device != Device::Cpu
            && std::env::var_os("MAMBATAG_ORT_STREAM").is_none())
        .then(|| fused::cuda::Stream::new(opts.cuda.device_id).ok())
        .flatten();
        #[cfg(feature = "cuda")]
        let stream_ptr = stream.as_ref().map_or(0, |s| s.as_ptr() as usize);
        #[cfg(not(feature = "cuda"))]
        let stream_ptr = 0usize;
        let big = match (opts.kernels, sibling(path, "fused")) {
            (Kernels::Auto, Some(f)) if f.is_file() && graph.ends_with("step-layer.onnx") => {
                Some(BigBatch {
                    path: f,
                    opts: opts.clone(),
                    stream: stream_ptr,
                    max: layer_max,
                    session: None,
                })
            }
            _ => None,
        };
        let path = graph.as_path();
        let (mut session, device) = build_session(&rt, path, opts, stream_ptr)?;
        let mut big = big;
        if let Some(b) = big.as_mut().filter(|_| device == Device::Cpu) {
            // `--device auto` without a GPU: the CPU's switch point
            b.max = opts.layer_max_batch.unwrap_or(default_max(false));
            b.opts.device = Device::Cpu;
        }
        let info = ModelInfo::from_session(&session, path)?;
        let frames_per_call = match info.graph {
            GraphKind::Step => 1,
            // 0 = the model's preferred chunk (metadata `mambatag.chunk_frames`).
            GraphKind::Chunk if frames_per_call == 0 => {
                info.chunk_frames.unwrap_or(DEFAULT_CHUNK_FRAMES).max(1)
            }
            GraphKind::Chunk => frames_per_call,
        };
        let on_gpu = device == Device::Cuda;
        let allocs = Allocs::new(&session, on_gpu, opts.cuda.device_id)?;
        let graphs = on_gpu && opts.cuda.cuda_graph;
        let cap = capacity.max(1);
        // On CUDA, audio and scores live in device tensors bound once, filled and read with
        // `copy_into`. (Binding the host tensors directly and re-binding the audio each call —
        // ORT copying inside the run — measured 12–25 % slower on an H200, and CUDA graphs
        // need fixed device addresses anyway.)
        let mut t = Tensors::alloc(&info, cap, frames_per_call, &allocs)
            .map_err(|e| batch_alloc_error(&info, cap, frames_per_call, e))?;
        let bindings = t.bind(session_for(&mut session, &mut big, cap)?, &info)?;
        let mut e = Self {
            bindings,
            session,
            big,
            info,
            device,
            frames_per_call,
            cap,
            #[cfg(feature = "cuda")]
            pins: None,
            #[cfg(feature = "cuda")]
            copier: None,
            audio: t.audio,
            scores: t.scores,
            dev_io: t.dev_io,
            states: t.states,
            run_opts: None,
            graphs,
            no_sync: false,
            generation: 0,
            cur: 0,
            allocs,
            host_rows: !on_gpu && !opts.force_device_row_ops,
            timings: Timings::default(),
            #[cfg(feature = "cuda")]
            stream,
        };
        e.pin_host_io();
        e.no_sync = e.copies_on_stream();
        e.run_opts = run_options(0, e.graphs, e.no_sync)?;
        e.zero_all()?;
        Ok(e)
    }

    /// A step engine whose scores download waits for the sessions' stream, so that ORT need
    /// not synchronise at the end of a run (one wait per step instead of two). Chunk engines
    /// keep ORT's synchronisation: a few µs per call do not matter there, and their run time
    /// then stays measurable on its own.
    fn copies_on_stream(&self) -> bool {
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.copier {
            return self.frames_per_call == 1
                && c.on_stream()
                && std::env::var_os("MAMBATAG_RUN_SYNC").is_none();
        }
        false
    }

    /// On CUDA: page-lock the host audio/scores buffers (see [`fused::cuda::HostPins`]).
    fn pin_host_io(&mut self) {
        #[cfg(feature = "cuda")]
        if self.dev_io.is_some() && std::env::var_os("MAMBATAG_NO_PIN").is_none() {
            let id = self.allocs.device_id;
            self.pins = None;
            let na = self.audio.shape().num_elements() * 4;
            let ns = self.scores.shape().num_elements() * 4;
            let ranges = [
                (self.audio.data_ptr_mut(), na),
                (self.scores.data_ptr_mut(), ns),
            ];
            let (p, n) = fused::cuda::HostPins::new(id, &ranges);
            tracing::debug!("page-locked {n} of 2 host I/O buffers");
            self.pins = Some(p);
            if self.copier.is_none() && std::env::var_os("MAMBATAG_ORT_COPIES").is_none() {
                let stream = self
                    .stream
                    .as_ref()
                    .map_or(std::ptr::null_mut(), |s| s.as_ptr());
                self.copier = fused::cuda::Copier::new(id, stream)
                    .map_err(|e| tracing::debug!("driver copies unavailable ({e}); using ORT's"))
                    .ok();
            }
        }
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// Time spent in runs since the last call.
    pub fn take_timings(&mut self) -> Timings {
        std::mem::take(&mut self.timings)
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
        let t0 = Instant::now();
        self.upload()?;
        let t1 = Instant::now();
        let session = session_for(&mut self.session, &mut self.big, self.cap)?;
        let outputs = match &self.run_opts {
            Some(o) => session.run_binding_with_options(&self.bindings[self.cur], &o[self.cur]),
            None => session.run_binding(&self.bindings[self.cur]),
        }
        .context("model step failed")?;
        drop(outputs);
        let t2 = Instant::now();
        self.download()?;
        let t3 = Instant::now();
        self.timings.calls += 1;
        self.timings.overlapped = self.no_sync;
        self.timings.input += t1 - t0;
        self.timings.model += t2 - t1;
        self.timings.output += t3 - t2;
        let prev = self.cur;
        self.cur = 1 - self.cur;
        if advance.iter().any(|a| !a) {
            let idle: Vec<usize> = (0..self.cap).filter(|&r| !advance[r]).collect();
            for i in 0..self.info.states.len() {
                let n = self.info.states[i].elems();
                if self.host_rows {
                    let [a, b] = &mut self.states;
                    let (old, new) = if prev == 0 { (a, b) } else { (b, a) };
                    let o = old[i].extract_tensor().1;
                    let nw = new[i].extract_tensor_mut().1;
                    for &row in &idle {
                        nw[row * n..(row + 1) * n].copy_from_slice(&o[row * n..(row + 1) * n]);
                    }
                } else {
                    // Device memory: stage the old state through the host. (A raw row view
                    // cannot be the *source* of an ort copy: ort 2.0.0-rc.15 deadlocks cloning
                    // a borrowed source inside `copy_into`; views work as targets.)
                    let old = self.read_state(prev, i)?;
                    for &row in &idle {
                        self.write_row(1 - prev, i, row, &old[row * n..(row + 1) * n])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Audio host → device before a call (CUDA only): through the driver where it loaded
    /// (`copier`), else ONNX Runtime's copy.
    fn upload(&mut self) -> Result<()> {
        let Some((a, _)) = self.dev_io.as_mut() else {
            return Ok(());
        };
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.copier {
            let bytes = self.audio.shape().num_elements() * 4;
            // SAFETY: `a` is the device twin of `audio` (same shape).
            // step engines queue the upload ahead of the run; chunk engines copy synchronously
            // (megabytes per call: the run's own time then stays measurable)
            let queue = self.frames_per_call == 1;
            return unsafe { c.to_device(a.data_ptr_mut(), self.audio.data_ptr(), bytes, queue) }
                .context("copying audio to the device");
        }
        self.audio
            .copy_into(a)
            .context("copying audio to the device")
    }

    /// Scores device → host after a call (CUDA only), as [`Engine::upload`].
    fn download(&mut self) -> Result<()> {
        let Some((_, s)) = self.dev_io.as_ref() else {
            return Ok(());
        };
        #[cfg(feature = "cuda")]
        if let Some(c) = &self.copier {
            let bytes = self.scores.shape().num_elements() * 4;
            // SAFETY: `s` is the device twin of `scores` (same shape).
            return unsafe { c.to_host(self.scores.data_ptr_mut(), s.data_ptr(), bytes) }
                .context("copying scores from the device");
        }
        s.copy_into(&mut self.scores)
            .context("copying scores from the device")
    }

    /// Zeroes row `row`'s state: a new stream starts there.
    pub fn reset_row(&mut self, row: usize) -> Result<()> {
        let zeros: Vec<Vec<f32>> = self
            .info
            .states
            .iter()
            .map(|s| vec![0.0; s.elems()])
            .collect();
        self.restore_row(row, &zeros)
    }

    /// Copies row `row`'s state out to host memory (one vector per state tensor).
    pub fn snapshot_row(&mut self, row: usize) -> Result<Vec<Vec<f32>>> {
        if row >= self.cap {
            bail!("row {row} is outside the batch of {}", self.cap);
        }
        let mut out = Vec::with_capacity(self.info.states.len());
        for i in 0..self.info.states.len() {
            let n = self.info.states[i].elems();
            if self.host_rows {
                out.push(
                    self.states[self.cur][i].extract_tensor().1[row * n..(row + 1) * n].to_vec(),
                );
            } else {
                out.push(self.read_state(self.cur, i)?[row * n..(row + 1) * n].to_vec());
            }
        }
        Ok(out)
    }

    /// Puts a state taken with [`Engine::snapshot_row`] into row `row`.
    pub fn restore_row(&mut self, row: usize, snap: &[Vec<f32>]) -> Result<()> {
        if row >= self.cap {
            bail!("row {row} is outside the batch of {}", self.cap);
        }
        if snap.len() != self.info.states.len() {
            bail!(
                "snapshot has {} state tensors, model has {}",
                snap.len(),
                self.info.states.len()
            );
        }
        for (spec, s) in self.info.states.iter().zip(snap) {
            if s.len() != spec.elems() {
                bail!(
                    "snapshot of `{}` has {} values, expected {}",
                    spec.name,
                    s.len(),
                    spec.elems()
                );
            }
        }
        for (i, s) in snap.iter().enumerate() {
            self.write_row(self.cur, i, row, s)?;
        }
        Ok(())
    }

    /// Writes one row of state tensor `i` of set `set`.
    fn write_row(&mut self, set: usize, i: usize, row: usize, data: &[f32]) -> Result<()> {
        let n = self.info.states[i].elems();
        let t = &mut self.states[set][i];
        if self.host_rows {
            t.extract_tensor_mut().1[row * n..(row + 1) * n].copy_from_slice(data);
        } else {
            let dims = &self.info.states[i].dims;
            let host = Tensor::from_array((row_shape(dims), data.to_vec()))?;
            host.copy_into(row_view(t, row, dims)?)?;
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
        let mut old: Vec<Vec<f32>> = Vec::new();
        for i in 0..self.info.states.len() {
            old.push(self.read_state(self.cur, i)?);
        }
        let mut t = Tensors::alloc(&self.info, capacity, self.frames_per_call, &self.allocs)
            .map_err(|e| batch_alloc_error(&self.info, capacity, self.frames_per_call, e))?;
        self.bindings = t.bind(
            session_for(&mut self.session, &mut self.big, capacity)?,
            &self.info,
        )?;
        #[cfg(feature = "cuda")]
        {
            self.pins = None; // unlock the old buffers before they are freed
        }
        self.audio = t.audio;
        self.scores = t.scores;
        self.dev_io = t.dev_io;
        self.states = t.states;
        self.cur = 0;
        self.cap = capacity;
        self.pin_host_io();
        if self.graphs {
            self.generation += 1;
        }
        self.no_sync = self.copies_on_stream();
        self.run_opts = run_options(self.generation, self.graphs, self.no_sync)?;
        self.zero_all()?;
        for (i, o) in old.iter().enumerate() {
            let n = self.info.states[i].elems();
            let mut data = vec![0.0f32; capacity * n];
            data[..keep * n].copy_from_slice(&o[..keep * n]);
            self.write_state(0, i, &data)?;
        }
        Ok(())
    }

    fn zero_all(&mut self) -> Result<()> {
        for set in 0..2 {
            for i in 0..self.info.states.len() {
                let z = vec![0.0f32; self.cap * self.info.states[i].elems()];
                self.write_state(set, i, &z)?;
            }
        }
        self.audio.extract_tensor_mut().1.fill(0.0);
        Ok(())
    }

    fn read_state(&mut self, set: usize, i: usize) -> Result<Vec<f32>> {
        let t = &mut self.states[set][i];
        if self.host_rows {
            return Ok(t.extract_tensor().1.to_vec());
        }
        let shape: Vec<i64> = t.shape().iter().copied().collect();
        let mut host = Tensor::<f32>::new(&Allocator::default(), shape)?;
        t.copy_into(&mut host)?;
        Ok(host.extract_tensor().1.to_vec())
    }

    fn write_state(&mut self, set: usize, i: usize, data: &[f32]) -> Result<()> {
        let t = &mut self.states[set][i];
        if self.host_rows {
            t.extract_tensor_mut().1.copy_from_slice(data);
            return Ok(());
        }
        let shape: Vec<i64> = t.shape().iter().copied().collect();
        let host = Tensor::from_array((shape, data.to_vec()))?;
        host.copy_into(t)?;
        Ok(())
    }
}

/// Run options that replay CUDA graph `2g` for binding 0 and `2g + 1` for binding 1. ORT
/// captures a graph the first time an id runs and replays it afterwards with the same device
/// addresses and shapes, so every new set of tensors (a resize) needs new ids.
/// Run options of the two bindings: a CUDA graph id per binding and batch allocation
/// (`generation`) when `graphs`; `no_sync`: ONNX Runtime does not synchronise the device at the
/// end of a run (the engine's scores download on the same stream waits for it instead).
/// `None` when neither applies.
fn run_options(generation: usize, graphs: bool, no_sync: bool) -> Result<Option<[RunOptions; 2]>> {
    if !graphs && !no_sync {
        return Ok(None);
    }
    let mk = |id: usize| -> Result<RunOptions> {
        let mut r = RunOptions::new()?;
        if graphs {
            r.set("gpu_graph_id", id.to_string())?;
        }
        if no_sync {
            r.set("disable_synchronize_execution_providers", "1")?;
        }
        Ok(r)
    };
    Ok(Some([mk(2 * generation)?, mk(2 * generation + 1)?]))
}

fn row_shape(dims: &[usize]) -> Vec<i64> {
    std::iter::once(1i64)
        .chain(dims.iter().map(|&d| d as i64))
        .collect()
}

/// A `[1, dims…]` view of row `row` of a state tensor, wherever its memory is, so rows of
/// device-resident state are written by ONNX Runtime itself (no CUDA code in this crate).
/// Only ever a copy *target* (see `Engine::run`).
fn row_view<'a>(t: &mut Tensor<f32>, row: usize, dims: &[usize]) -> Result<TensorRefMut<'a, f32>> {
    let n: usize = dims.iter().product();
    let info = t.memory_info().to_owned();
    let base = t.data_ptr_mut() as *mut f32;
    // SAFETY: callers pass `row < B`, so the row lies inside the tensor's allocation; the
    // view is used and dropped before the tensor is.
    let v = unsafe {
        TensorRefMut::<f32>::from_raw(
            info,
            base.add(row * n) as *mut std::ffi::c_void,
            Shape::new(row_shape(dims)),
        )
    }?;
    Ok(v)
}

/// Where an engine's tensors live.
struct Allocs {
    /// State (and, with `device_io`, the bound audio/scores): GPU memory on CUDA.
    state: Allocator,
    /// The host audio/scores callers touch.
    host: Allocator,
    device_io: bool,
    /// CUDA device of the session (page-locking and driver copies use it).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    device_id: i32,
}

impl Allocs {
    fn new(session: &Session, on_gpu: bool, device_id: i32) -> Result<Self> {
        if !on_gpu {
            return Ok(Self {
                state: Allocator::default(),
                host: Allocator::default(),
                device_io: false,
                device_id,
            });
        }
        let state = Allocator::new(
            session,
            MemoryInfo::new(
                AllocationDevice::CUDA,
                device_id,
                AllocatorType::Device,
                MemoryType::Default,
            )?,
        )?;
        // The host side is ordinary memory: ort's `copy_into` from the device into CUDA_PINNED
        // tensors fails with ORT 1.31 ("dst_data != src_data", seen on an H200). The engine
        // page-locks these ordinary buffers through the driver instead (`pin_host_io`).
        let host = Allocator::default();
        Ok(Self {
            state,
            host,
            device_io: true,
            device_id,
        })
    }
}

/// The tensors of one batch size.
struct Tensors {
    audio: Tensor<f32>,
    scores: Tensor<f32>,
    dev_io: Option<(Tensor<f32>, Tensor<f32>)>,
    states: [Vec<Tensor<f32>>; 2],
}

impl Tensors {
    fn alloc(info: &ModelInfo, cap: usize, t: usize, allocs: &Allocs) -> Result<Self> {
        let (host, state_alloc, device_io) = (&allocs.host, &allocs.state, allocs.device_io);
        // Host memory the buffers will take (the states too when they live on the host):
        // refused up front when it is more than the machine has free, because the kernel's
        // overcommit would grant it and the OOM killer end the process once it is touched.
        let per = io_bytes_per_stream(info, t)
            + if device_io {
                0
            } else {
                2 * info.state_bytes_per_stream()
            };
        let need = per as f64 * cap as f64;
        if let Some(avail) = mem_available() {
            if need > avail as f64 {
                bail!(
                    "needs {} of host memory and {} is available (MemAvailable, or less under \
                     a cgroup memory limit)",
                    human_bytes(need),
                    human_bytes(avail as f64)
                );
            }
        }
        let (audio_shape, scores_shape): (Vec<i64>, Vec<i64>) = if info.graph == GraphKind::Step {
            (
                vec![cap as i64, info.hop as i64],
                vec![cap as i64, info.num_labels() as i64],
            )
        } else {
            (
                vec![cap as i64, (t * info.hop) as i64],
                vec![cap as i64, t as i64, info.num_labels() as i64],
            )
        };
        let audio = Tensor::<f32>::new(host, audio_shape.clone())?;
        let scores = Tensor::<f32>::new(host, scores_shape.clone())?;
        let dev_io = if device_io {
            Some((
                Tensor::<f32>::new(state_alloc, audio_shape)?,
                Tensor::<f32>::new(state_alloc, scores_shape)?,
            ))
        } else {
            None
        };
        let mut states: [Vec<Tensor<f32>>; 2] = [Vec::new(), Vec::new()];
        for set in states.iter_mut() {
            for spec in &info.states {
                let mut shape = vec![cap as i64];
                shape.extend(spec.dims.iter().map(|&d| d as i64));
                set.push(Tensor::<f32>::new(state_alloc, shape)?);
            }
        }
        Ok(Self {
            audio,
            scores,
            dev_io,
            states,
        })
    }

    /// Binding `k` reads state set `k` and writes set `1 - k`. Bound tensors are shared with
    /// the binding (no copies), so writing into the bound audio tensor before a call is enough.
    fn bind(&mut self, session: &Session, info: &ModelInfo) -> Result<[IoBinding; 2]> {
        let mut mk = |from: usize| -> Result<IoBinding> {
            let mut b = session.create_binding()?;
            match self.dev_io.as_mut() {
                Some((a, s)) => {
                    b.bind_input("audio", &*a)?;
                    b.bind_output("scores", s)?;
                }
                None => {
                    b.bind_input("audio", &self.audio)?;
                    b.bind_output("scores", &mut self.scores)?;
                }
            }
            let [s0, s1] = &mut self.states;
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
}

/// The error for a batch whose buffers could not be had, with their size.
fn batch_alloc_error(
    info: &ModelInfo,
    capacity: usize,
    t: usize,
    e: anyhow::Error,
) -> anyhow::Error {
    let per = batch_bytes_per_stream(info, t);
    anyhow!(
        "a batch of {capacity} streams: could not allocate its buffers ({}: {per} bytes per \
         stream for two state sets, audio and scores): {e:#}",
        human_bytes(per as f64 * capacity as f64)
    )
}

/// `1.5 GB`, `617.6 TB`, `12.0 kB`.
fn human_bytes(b: f64) -> String {
    let (v, unit) = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB")]
        .into_iter()
        .find(|&(u, _)| b >= u)
        .map_or((b / 1e3, "kB"), |(u, n)| (b / u, n));
    format!("{v:.1} {unit}")
}

/// Memory this process can still take without swapping, in bytes: the kernel's `MemAvailable`,
/// lowered to the room left under the process's cgroup memory limit when there is one (a
/// container's limit is not in `/proc/meminfo`). `None` where neither says.
fn mem_available() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let meminfo = read("/proc/meminfo").and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    });
    // (limit file, usage file) of cgroup v2 and v1, at the process's own cgroup and at the
    // mount's root (what a container with its own cgroup namespace sees)
    let mut files = Vec::new();
    for line in read("/proc/self/cgroup").unwrap_or_default().lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctrl, path) = (parts.next(), parts.next(), parts.next().unwrap_or("/"));
        let path = path.trim_end_matches('/');
        match ctrl {
            Some("") => {
                for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                    files.push((
                        format!("{base}{path}/memory.max"),
                        format!("{base}{path}/memory.current"),
                    ));
                }
            }
            Some(c) if c.split(',').any(|c| c == "memory") => {
                let base = "/sys/fs/cgroup/memory";
                for dir in [format!("{base}{path}"), base.to_string()] {
                    files.push((
                        format!("{dir}/memory.limit_in_bytes"),
                        format!("{dir}/memory.usage_in_bytes"),
                    ));
                }
            }
            _ => {}
        }
    }
    let cgroup = files
        .iter()
        .filter_map(|(limit, usage)| {
            let limit: u64 = read(limit)?.trim().parse().ok()?; // "max": no limit
            let usage: u64 = read(usage)?.trim().parse().ok()?;
            Some(limit.saturating_sub(usage))
        })
        .min();
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Bytes of the buffers one stream of a batch takes ([`Tensors::alloc`]): the state twice (the
/// ping-pong sets), one call's audio and its scores.
fn batch_bytes_per_stream(info: &ModelInfo, frames_per_call: usize) -> usize {
    2 * info.state_bytes_per_stream() + io_bytes_per_stream(info, frames_per_call)
}

/// Bytes of one stream's audio and scores for one call (host memory on every device).
fn io_bytes_per_stream(info: &ModelInfo, frames_per_call: usize) -> usize {
    4 * frames_per_call.max(1) * (info.hop + info.num_labels())
}

/// The graph file that runs for `path` (a standard graph such as `step.onnx`) under `kernels`
/// on a GPU (`gpu`) or not: its layer sibling (`step-layer.onnx`) or fused sibling
/// (`step-fused.onnx`) when allowed and present.
pub fn graph_for(path: &Path, kernels: Kernels, gpu: bool) -> Result<std::path::PathBuf> {
    let fused = sibling(path, "fused").filter(|f| f.is_file());
    let layer = sibling(path, "layer").filter(|f| f.is_file());
    let chunk = path
        .file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.starts_with("chunk"));
    let missing = |what: &str, suffix: &str| {
        anyhow!(
            "{}: --kernels {what}, but there is no {what} graph {} next to it (export one with \
             `python3 -m models.export`, or use --kernels onnx)",
            path.display(),
            sibling(path, suffix)
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "(not a .onnx file)".into())
        )
    };
    match kernels {
        Kernels::Onnx => Ok(path.to_path_buf()),
        Kernels::Auto => Ok(layer
            .filter(|_| gpu)
            .or(fused)
            .unwrap_or_else(|| path.to_path_buf())),
        Kernels::Fused => fused.ok_or_else(|| missing("fused", "fused")),
        Kernels::Layer => match (layer, fused) {
            (Some(l), _) => Ok(l),
            // there is no layer chunk graph: chunks run their fused graph
            (None, Some(f)) if chunk => Ok(f),
            _ => Err(missing("layer", "layer")),
        },
    }
}

/// `dir/step.onnx` -> `dir/step-fused.onnx` (`None` if `path` is already fused or not `.onnx`).
pub fn fused_sibling(path: &Path) -> Option<std::path::PathBuf> {
    sibling(path, "fused")
}

/// `dir/step.onnx` -> `dir/step-{suffix}.onnx` (`None` if `path` is already a fused or layer
/// graph, or not `.onnx`).
pub fn sibling(path: &Path, suffix: &str) -> Option<std::path::PathBuf> {
    let stem = path.file_stem()?.to_str()?;
    if path.extension()? != "onnx" || stem.ends_with("-fused") || stem.ends_with("-layer") {
        return None;
    }
    Some(path.with_file_name(format!("{stem}-{suffix}.onnx")))
}

/// `stream`: on CUDA, the `CUstream` (as an address; 0 = ORT's own) the session computes on.
fn build_session(
    rt: &crate::runtime::Runtime,
    path: &Path,
    opts: &EngineOptions,
    stream: usize,
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
    let (builder, device) = match opts.device {
        Device::Cpu => (builder, Device::Cpu),
        Device::Cuda | Device::Auto => register_cuda(builder, opts, rt, stream)?,
    };
    // ONNX Runtime's own profiler (node timings as JSON), for performance work only.
    let builder = match std::env::var_os("MAMBATAG_ORT_PROFILE") {
        Some(prefix) => builder.with_profiling(prefix).map_err(map)?,
        None => builder,
    };
    // The fused operators (harmless for graphs that do not use them).
    let cuda_id = (device == Device::Cuda).then_some(opts.cuda.device_id);
    let mut builder = builder
        .with_operators(fused::domain(cuda_id)?)
        .map_err(map)?;
    // ONNX Runtime adds a custom op domain to a process-wide table with an unguarded
    // check-then-insert, so two sessions created at once on different threads can fail with
    // "domain is already exist": create sessions one at a time.
    static SESSION_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = SESSION_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let session = builder.commit_from_file(path).map_err(|e| {
        let hint = linked_out_hint(path, &e.to_string());
        anyhow::Error::from(e).context(format!("{}: cannot load model{hint}", path.display()))
    })?;
    Ok((session, device))
}

/// ONNX Runtime refuses external data (the package's `weights.bin`) that resolves outside the
/// graph's folder, e.g. a package assembled with a symbolic link to the weights elsewhere; its
/// message names neither the link nor the fix. For that error, the link and what to do.
fn linked_out_hint(graph: &Path, ort_message: &str) -> String {
    if !ort_message.contains("escapes model directory") {
        return String::new();
    }
    let dir = graph.parent().unwrap_or(Path::new("."));
    let canon_dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let linked_out = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|e| {
            let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
            let target = std::fs::canonicalize(e.path()).ok()?;
            (is_link && target.parent() != Some(canon_dir.as_path()))
                .then_some((e.file_name(), target))
        });
    match linked_out {
        Some((name, target)) => format!(
            " ({} is a symbolic link to {}, outside the model's folder, and ONNX Runtime reads \
             external weights only from inside it: copy the file into the folder, or link the \
             whole folder instead)",
            name.to_string_lossy(),
            target.display()
        ),
        None => " (an external-data file of this graph resolves outside the model's folder, \
                 which ONNX Runtime refuses: copy it into the folder)"
            .to_string(),
    }
}

#[cfg(feature = "cuda")]
fn register_cuda(
    builder: ort::session::builder::SessionBuilder,
    opts: &EngineOptions,
    rt: &crate::runtime::Runtime,
    stream: usize,
) -> Result<(ort::session::builder::SessionBuilder, Device)> {
    use ort::ep;
    let c = &opts.cuda;
    let mut cuda = ep::CUDA::default()
        .with_device_id(c.device_id)
        .with_tf32(c.tf32)
        .with_cuda_graph(c.cuda_graph);
    if stream != 0 {
        // SAFETY: a live stream of this device that outlives the session (Engine::stream).
        cuda = unsafe { cuda.with_compute_stream(stream as *mut ()) };
    }
    if c.memory_limit > 0 {
        cuda = cuda.with_memory_limit(c.memory_limit);
    }
    match builder.with_execution_providers([cuda.build().error_on_failure()]) {
        Ok(b) => Ok((b, Device::Cuda)),
        Err(e) if opts.device == Device::Auto => {
            tracing::info!("CUDA unavailable ({e}); running on CPU");
            Ok((e.recover(), Device::Cpu))
        }
        Err(e) => bail!(
            "--device cuda: the CUDA execution provider could not be registered: {e} \
             (is the ONNX Runtime at {} a GPU build? `pip install onnxruntime-gpu==1.31.1` needs \
             CUDA 13; point ORT_DYLIB_PATH at its libonnxruntime.so)",
            rt.path.display()
        ),
    }
}

#[cfg(not(feature = "cuda"))]
fn register_cuda(
    builder: ort::session::builder::SessionBuilder,
    opts: &EngineOptions,
    _rt: &crate::runtime::Runtime,
    _stream: usize,
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
