pub mod bench;
pub mod devices;
pub mod inspect;
pub mod listen;
pub mod serve;
pub mod tag;

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;

use mambatag::engine::{CudaOptions, Device, EngineOptions, Kernels};
use mambatag::model::ModelPackage;

/// Options shared by every subcommand that runs a model.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model package directory (with step.onnx) or a .onnx file. Default: models/default.
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Where to run the model.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// ONNX Runtime intra-op threads per engine.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Graph to run: the package's fused-operator graph (auto: when it has one) or the
    /// standard-ONNX one.
    #[arg(long, value_enum, default_value_t = Kernels::Auto)]
    pub kernels: Kernels,
    /// CUDA: capture and replay the step as a CUDA graph (fixed shapes per batch size).
    #[arg(long)]
    pub cuda_graph: bool,
    /// CUDA: allow TF32 matrix multiplies (faster, ~1e-4 less exact).
    #[arg(long)]
    pub tf32: bool,
    /// CUDA: device index.
    #[arg(long, default_value_t = 0)]
    pub cuda_device: i32,
}

/// Event options shared by `tag` and `listen`.
#[derive(Args, Debug, Clone)]
pub struct EventArgs {
    /// Per-label thresholds, LABEL=ON or LABEL=ON:OFF (repeatable). Defaults come from the model.
    #[arg(long = "threshold", value_name = "LABEL=ON[:OFF]")]
    pub thresholds: Vec<String>,
    /// Moving-average window over frames before thresholding.
    #[arg(long, default_value_t = mambatag::events::DEFAULT_SMOOTH)]
    pub smooth: usize,
    /// Events shorter than this many seconds are dropped; an onset is announced once the event
    /// has lasted this long.
    #[arg(long, default_value_t = mambatag::events::DEFAULT_MIN_DURATION)]
    pub min_duration: f64,
}

impl ModelArgs {
    /// Refuses option values that ONNX Runtime would reinterpret (`--threads 0` is its "one
    /// thread per core") or reject later with a less clear message.
    pub fn check(&self) -> Result<()> {
        if self.threads == 0 {
            anyhow::bail!("--threads 0: at least one thread per engine is needed");
        }
        if self.cuda_device < 0 {
            anyhow::bail!(
                "--cuda-device {}: a CUDA device index is 0 or more (`nvidia-smi -L` lists them)",
                self.cuda_device
            );
        }
        Ok(())
    }

    /// Finds the model package (after `check`).
    pub fn package(&self) -> Result<ModelPackage> {
        self.check()?;
        let path = match &self.model {
            Some(p) => p.clone(),
            None => mambatag::default_model_path().ok_or_else(|| {
                anyhow!("no model given and no models/default found; pass --model PATH (e.g. models/test-tiny)")
            })?,
        };
        Ok(ModelPackage::locate(&path)?)
    }

    pub fn engine_options(&self) -> EngineOptions {
        EngineOptions {
            device: self.device,
            threads: self.threads,
            kernels: self.kernels,
            cuda: CudaOptions {
                device_id: self.cuda_device,
                tf32: self.tf32,
                cuda_graph: self.cuda_graph,
                ..Default::default()
            },
            ..Default::default()
        }
    }
}
