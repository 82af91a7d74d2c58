//! The model contract (`models/CONTRACT.md`), checked at load time.
//!
//! A model package is a directory with `step.onnx` (and optionally `chunk.onnx`), or a single
//! `.onnx` file. [`ModelInfo::from_session`] reads the graph's inputs, outputs and metadata and
//! refuses anything that breaks the contract with a message naming what is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::{TensorElementType, ValueType};

/// The contract versions this engine understands.
pub const CONTRACT_VERSIONS: &[&str] = &["1"];
/// Prefix of recurrent-state inputs; outputs add [`STATE_NEXT_SUFFIX`].
pub const STATE_PREFIX: &str = "state.";
pub const STATE_NEXT_SUFFIX: &str = ".next";

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{path}: not a model: no such file or directory")]
    Missing { path: String },
    #[error("{path}: model directory has no step.onnx")]
    NoStepGraph { path: String },
    #[error("{path}: breaks the mambatag model contract: {problem}")]
    Broken { path: String, problem: String },
}

/// Which graph of a package a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphKind {
    Step,
    Chunk,
}

/// One recurrent state tensor as the graph declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSpec {
    /// Input name, e.g. `state.layer0.ssm`; the output is `<name>.next`.
    pub name: String,
    /// Dimensions after the batch dimension.
    pub dims: Vec<usize>,
}

impl StateSpec {
    /// Elements per stream.
    pub fn elems(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn next_name(&self) -> String {
        format!("{}{}", self.name, STATE_NEXT_SUFFIX)
    }
}

/// Everything the engine needs to know about a model, read from the graph itself.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub graph: GraphKind,
    pub contract: String,
    pub name: String,
    pub version: String,
    pub license: String,
    pub description: Option<String>,
    pub sample_rate: u32,
    pub hop: usize,
    pub labels: Vec<String>,
    /// Onset thresholds, one per label (same order as `labels`).
    pub thresholds: Vec<f32>,
    pub states: Vec<StateSpec>,
    /// Preferred frames per call (chunk graph only).
    pub chunk_frames: Option<usize>,
}

impl ModelInfo {
    pub fn num_labels(&self) -> usize {
        self.labels.len()
    }
    /// Bytes of recurrent state one stream carries.
    pub fn state_bytes_per_stream(&self) -> usize {
        self.states.iter().map(|s| s.elems() * 4).sum()
    }
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }
    /// Seconds of audio per frame.
    pub fn hop_seconds(&self) -> f64 {
        self.hop as f64 / self.sample_rate as f64
    }

    /// Reads and checks the contract from a loaded session.
    pub fn from_session(session: &Session, path: &Path) -> Result<Self, ContractError> {
        let broken = |problem: String| ContractError::Broken {
            path: path.display().to_string(),
            problem,
        };
        let meta = session
            .metadata()
            .map_err(|e| broken(format!("cannot read metadata: {e}")))?;
        let get = |key: &str| -> Result<String, ContractError> {
            meta.custom(key)
                .ok_or_else(|| broken(format!("metadata key `{key}` is missing")))
        };
        let contract = get("mambatag.contract")?;
        if !CONTRACT_VERSIONS.contains(&contract.as_str()) {
            return Err(broken(format!(
                "contract version {contract} is not supported (this build knows {})",
                CONTRACT_VERSIONS.join(", ")
            )));
        }
        let graph = match get("mambatag.graph")?.as_str() {
            "step" => GraphKind::Step,
            "chunk" => GraphKind::Chunk,
            other => {
                return Err(broken(format!(
                    "mambatag.graph is `{other}`, expected `step` or `chunk`"
                )))
            }
        };
        let parse_num = |key: &str| -> Result<u64, ContractError> {
            let v = get(key)?;
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    broken(format!(
                        "metadata `{key}` = `{v}` is not a positive integer"
                    ))
                })
        };
        let sample_rate = parse_num("mambatag.sample_rate")?;
        if !(1000..=384_000).contains(&sample_rate) {
            return Err(broken(format!(
                "sample rate {sample_rate} Hz is out of range"
            )));
        }
        let hop = parse_num("mambatag.hop")? as usize;
        let labels: Vec<String> = serde_json::from_str(&get("mambatag.labels")?).map_err(|e| {
            broken(format!(
                "mambatag.labels is not a JSON array of strings: {e}"
            ))
        })?;
        if labels.is_empty() {
            return Err(broken("mambatag.labels is empty".into()));
        }
        let thr_map: BTreeMap<String, f32> = serde_json::from_str(&get("mambatag.thresholds")?)
            .map_err(|e| {
                broken(format!(
                    "mambatag.thresholds is not a JSON object label→number: {e}"
                ))
            })?;
        let mut thresholds = Vec::with_capacity(labels.len());
        for l in &labels {
            let t = *thr_map.get(l).ok_or_else(|| {
                broken(format!("mambatag.thresholds has no entry for label `{l}`"))
            })?;
            if !(t > 0.0 && t < 1.0) {
                return Err(broken(format!(
                    "threshold for `{l}` is {t}, must be in (0, 1)"
                )));
            }
            thresholds.push(t);
        }
        let name = get("mambatag.model_name")?;
        let version = get("mambatag.model_version")?;
        let license = get("mambatag.license")?;
        let description = meta.custom("mambatag.description");
        let chunk_frames =
            match meta.custom("mambatag.chunk_frames") {
                Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                    broken(format!("mambatag.chunk_frames `{v}` is not an integer"))
                })?),
                None => None,
            };
        drop(meta);

        // Inputs: `audio` plus states.
        let mut states = Vec::new();
        let mut audio_seen = false;
        for input in session.inputs() {
            let (shape, ty) = tensor_shape(input.dtype())
                .ok_or_else(|| broken(format!("input `{}` is not a tensor", input.name())))?;
            if ty != TensorElementType::Float32 {
                return Err(broken(format!(
                    "input `{}` is {ty:?}, expected float32",
                    input.name()
                )));
            }
            if input.name() == "audio" {
                audio_seen = true;
                if shape.len() != 2 {
                    return Err(broken(format!(
                        "input `audio` has rank {}, expected [B, samples]",
                        shape.len()
                    )));
                }
                if graph == GraphKind::Step && shape[1] != hop as i64 {
                    return Err(broken(format!(
                        "input `audio` takes {} samples per call but metadata hop is {hop}",
                        shape[1]
                    )));
                }
            } else if let Some(rest) = input.name().strip_prefix(STATE_PREFIX) {
                if rest.is_empty() || shape.is_empty() {
                    return Err(broken(format!(
                        "state input `{}` has no batch dimension",
                        input.name()
                    )));
                }
                let dims: Option<Vec<usize>> = shape[1..]
                    .iter()
                    .map(|&d| usize::try_from(d).ok().filter(|d| *d > 0))
                    .collect();
                let dims = dims.ok_or_else(|| {
                    broken(format!(
                        "state `{}` has shape {shape:?}: every dimension after the batch must be fixed",
                        input.name()
                    ))
                })?;
                states.push(StateSpec {
                    name: input.name().to_string(),
                    dims,
                });
            } else {
                return Err(broken(format!(
                    "unexpected input `{}` (only `audio` and `state.*` are allowed)",
                    input.name()
                )));
            }
        }
        if !audio_seen {
            return Err(broken("input `audio` is missing".into()));
        }
        let outputs: BTreeMap<&str, (Vec<i64>, TensorElementType)> = session
            .outputs()
            .iter()
            .filter_map(|o| tensor_shape(o.dtype()).map(|s| (o.name(), s)))
            .collect();
        let (scores_shape, _) = outputs
            .get("scores")
            .ok_or_else(|| broken("output `scores` is missing".into()))?;
        let want_rank = if graph == GraphKind::Step { 2 } else { 3 };
        if scores_shape.len() != want_rank {
            return Err(broken(format!(
                "output `scores` has rank {}, expected {want_rank}",
                scores_shape.len()
            )));
        }
        let c = *scores_shape.last().unwrap();
        if c >= 0 && c as usize != labels.len() {
            return Err(broken(format!(
                "output `scores` has {c} classes but metadata lists {} labels",
                labels.len()
            )));
        }
        for s in &states {
            let next = s.next_name();
            let (shape, _) = outputs
                .get(next.as_str())
                .ok_or_else(|| broken(format!("state `{}` has no output `{next}`", s.name)))?;
            let dims: Vec<i64> = s.dims.iter().map(|&d| d as i64).collect();
            if shape.len() != dims.len() + 1 || shape[1..] != dims[..] {
                return Err(broken(format!(
                    "output `{next}` has shape {shape:?}, expected [B, {}]",
                    dims.iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(ModelInfo {
            path: path.to_path_buf(),
            graph,
            contract,
            name,
            version,
            license,
            description,
            sample_rate: sample_rate as u32,
            hop,
            labels,
            thresholds,
            states,
            chunk_frames,
        })
    }
}

fn tensor_shape(t: &ValueType) -> Option<(Vec<i64>, TensorElementType)> {
    match t {
        ValueType::Tensor { ty, shape, .. } => Some((shape.iter().copied().collect(), *ty)),
        _ => None,
    }
}

/// Paths of the graphs in a model package.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    pub root: PathBuf,
    pub step: PathBuf,
    pub chunk: Option<PathBuf>,
}

impl ModelPackage {
    /// Accepts a package directory or a single `.onnx` step graph.
    pub fn locate(path: &Path) -> Result<Self, ContractError> {
        if path.is_dir() {
            let step = path.join("step.onnx");
            if !step.is_file() {
                return Err(ContractError::NoStepGraph {
                    path: path.display().to_string(),
                });
            }
            let chunk = Some(path.join("chunk.onnx")).filter(|p| p.is_file());
            Ok(Self {
                root: path.to_path_buf(),
                step,
                chunk,
            })
        } else if path.is_file() {
            let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
            Ok(Self {
                root,
                step: path.to_path_buf(),
                chunk: None,
            })
        } else {
            Err(ContractError::Missing {
                path: path.display().to_string(),
            })
        }
    }
}
