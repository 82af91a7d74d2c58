use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use mambatag::engine::Engine;

use super::ModelArgs;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Model package directory or .onnx file (default: models/default).
    pub path: Option<std::path::PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InspectArgs) -> Result<ExitCode> {
    let margs = ModelArgs {
        model: a.path.clone(),
        device: Default::default(),
        threads: 1,
        // each file below is loaded as itself (no swap to its fused sibling)
        kernels: mambatag::engine::Kernels::Onnx,
        cuda_graph: false,
        tf32: false,
        cuda_device: 0,
    };
    let pkg = margs.package()?;
    let mut graphs = vec![pkg.step.clone()];
    graphs.extend(pkg.chunk.clone());
    // fused-operator variants shipped next to them
    let fused: Vec<_> = graphs
        .iter()
        .flat_map(|g| ["fused", "layer"].map(|s| mambatag::engine::sibling(g, s)))
        .flatten()
        .filter(|f| f.is_file())
        .collect();
    graphs.extend(fused);
    let mut infos = Vec::new();
    for g in &graphs {
        let e = Engine::load(g, &margs.engine_options(), 1, 1)?;
        infos.push((g.clone(), e.info().clone(), std::fs::metadata(g)?.len()));
    }
    let (_, info, _) = &infos[0];
    if a.json {
        let states: Vec<_> = info
            .states
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "shape": s.dims, "bytes_per_stream": s.elems() * 4}))
            .collect();
        let thresholds: serde_json::Map<String, serde_json::Value> = info
            .labels
            .iter()
            .zip(&info.thresholds)
            .map(|(l, t)| (l.clone(), serde_json::json!(t)))
            .collect();
        let graphs: Vec<_> = infos
            .iter()
            .map(|(p, i, sz)| serde_json::json!({"path": p, "graph": format!("{:?}", i.graph).to_lowercase(), "bytes": sz, "chunk_frames": i.chunk_frames}))
            .collect();
        let j = serde_json::json!({
            "name": info.name, "version": info.version, "license": info.license,
            "description": info.description, "contract": info.contract,
            "sample_rate": info.sample_rate, "hop": info.hop,
            "labels": info.labels, "thresholds": thresholds,
            "states": states, "state_bytes_per_stream": info.state_bytes_per_stream(),
            "graphs": graphs,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("model       {} {}", info.name, info.version);
    println!("license     {}", info.license);
    if let Some(d) = &info.description {
        println!("description {d}");
    }
    println!("contract    v{}", info.contract);
    println!(
        "audio       {} Hz, hop {} samples ({} ms)",
        info.sample_rate,
        info.hop,
        info.hop_seconds() * 1000.0
    );
    for (p, i, sz) in &infos {
        let extra = i
            .chunk_frames
            .map(|t| format!(", {t} frames per call"))
            .unwrap_or_default();
        println!(
            "graph       {:?}: {} ({} bytes{extra})",
            i.graph,
            p.display(),
            sz
        );
    }
    let shared = pkg.root.join("weights.bin");
    if let Ok(m) = std::fs::metadata(&shared) {
        println!(
            "weights     {} ({} bytes, ONNX external data shared by the graphs)",
            shared.display(),
            m.len()
        );
    }
    println!("labels      {} (onset threshold)", info.labels.len());
    for (l, t) in info.labels.iter().zip(&info.thresholds) {
        println!("  {l:<12} {t:.3}");
    }
    println!(
        "state       {} tensors, {} bytes per stream",
        info.states.len(),
        info.state_bytes_per_stream()
    );
    for s in &info.states {
        let dims = s
            .dims
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" × ");
        println!("  {:<22} [B × {dims}]  {} bytes", s.name, s.elems() * 4);
    }
    Ok(ExitCode::SUCCESS)
}
