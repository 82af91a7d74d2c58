//! Finding and starting ONNX Runtime.
//!
//! mambatag links ONNX Runtime dynamically (`ort`'s `load-dynamic`), so the same binary runs
//! with the CPU build or the CUDA build of the library. [`init`] looks for the library in a
//! fixed order and turns every failure into one message that says how to install it:
//!
//! 1. `ORT_DYLIB_PATH` (a file);
//! 2. a project-local copy: `.ort/` next to the executable, in its ancestors (so
//!    `target/release/mambatag` finds the repository's `.ort/`), or in the working directory;
//! 3. a pip-installed `onnxruntime` / `onnxruntime-gpu` (`onnxruntime/capi/libonnxruntime.so.*`);
//! 4. the system library path (`libonnxruntime.so`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The command that installs the library the way this project expects.
pub const INSTALL_HINT: &str =
    "install it with `scripts/fetch-onnxruntime.sh` (puts ONNX Runtime 1.31.1 into .ort/), \
or `pip install onnxruntime==1.31.1`, or point ORT_DYLIB_PATH at libonnxruntime.so";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("ONNX Runtime not found (looked at: {searched}); {INSTALL_HINT}")]
    NotFound { searched: String },
    #[error("ONNX Runtime at {path} could not be loaded: {reason}; {INSTALL_HINT}")]
    LoadFailed { path: String, reason: String },
}

/// A loaded ONNX Runtime: where it came from and the environment sessions are built in.
#[derive(Clone)]
pub struct Runtime {
    pub path: PathBuf,
    pub env: ort::environment::Environment,
}

static INIT: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process.
pub fn init() -> anyhow::Result<Runtime> {
    let res = INIT.get_or_init(|| init_inner().map_err(|e| e.to_string()));
    match res {
        Ok(r) => Ok(r.clone()),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

fn init_inner() -> Result<Runtime, RuntimeError> {
    let path = locate().map_err(|searched| RuntimeError::NotFound { searched })?;
    let env = ort::init_from(&path).map_err(|e| RuntimeError::LoadFailed {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let env = env
        .with_name("mambatag")
        .build()
        .map_err(|e| RuntimeError::LoadFailed {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    tracing::debug!(path = %path.display(), "ONNX Runtime loaded");
    Ok(Runtime { path, env })
}

/// The first place a library is, in order of preference; or every place looked at (for the
/// error message). Asking `python3` for its site-packages costs a process start, so it happens
/// only when no project-local copy exists.
fn locate() -> Result<PathBuf, String> {
    let mut searched: Vec<String> = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        // An explicit path that does not exist is an error, not a hint to look elsewhere.
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(format!("ORT_DYLIB_PATH={} (no such file)", p.display()));
        }
        return Ok(p);
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).map(|d| d.join(".ort")));
    }
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd.join(".ort"));
    }
    for d in dirs {
        let p = d.join("libonnxruntime.so");
        searched.push(p.display().to_string());
        if p.is_file() {
            return Ok(p);
        }
    }
    for sp in python_site_dirs() {
        let capi = sp.join("onnxruntime").join("capi");
        searched.push(capi.display().to_string());
        if let Ok(rd) = std::fs::read_dir(&capi) {
            let lib = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                })
                .min();
            if let Some(p) = lib {
                return Ok(p);
            }
        }
    }
    for d in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
    ] {
        let p = Path::new(d).join("libonnxruntime.so");
        searched.push(p.display().to_string());
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(searched.join(", "))
}

/// Python site-packages folders, from the active virtualenv and from `python3` itself.
fn python_site_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        if let Ok(rd) = std::fs::read_dir(Path::new(&venv).join("lib")) {
            out.extend(rd.flatten().map(|e| e.path().join("site-packages")));
        }
    }
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import site,sys; print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(o) = py {
        if o.status.success() {
            out.extend(
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(PathBuf::from),
            );
        }
    }
    out
}
