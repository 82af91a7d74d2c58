//! `mambatag serve --config PATH`: the service (see `mambatag::daemon`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use mambatag::daemon::config::Loaded;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML; see config/mambatag.toml).
    #[arg(short, long, default_value = "/etc/mambatag/mambatag.toml")]
    pub config: PathBuf,
    /// Check the configuration and the model, print a summary and exit.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    if a.check {
        let loaded = Loaded::read(&a.config)?;
        let pkg = loaded.model_package()?;
        let engine = mambatag::engine::Engine::load(
            &pkg.step,
            &mambatag::engine::EngineOptions {
                device: loaded.device(),
                threads: loaded.config.threads,
                ..Default::default()
            },
            1,
            1,
        )?;
        loaded.event_params(engine.info())?;
        println!(
            "{}: ok ({} source(s), model {} {})",
            a.config.display(),
            loaded.config.sources.len(),
            engine.info().name,
            engine.info().version
        );
        return Ok(ExitCode::SUCCESS);
    }
    mambatag::daemon::serve(&a.config)?;
    Ok(ExitCode::SUCCESS)
}
