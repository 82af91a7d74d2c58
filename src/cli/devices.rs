//! `mambatag devices`: input devices with their index, name and formats.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: DevicesArgs) -> Result<ExitCode> {
    let devices = mambatag::live::capture::list_devices()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
        return Ok(ExitCode::SUCCESS);
    }
    if devices.is_empty() {
        println!("no input devices");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:>3}  {:<1} {:<28} {:<34} {:>8} {:>3}  formats",
        "#", "", "id", "name", "rate", "ch"
    );
    for d in devices {
        let rates = d
            .rates
            .map(|(a, b)| {
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}–{b}")
                }
            })
            .unwrap_or_default();
        println!(
            "{:>3}  {:<1} {:<28} {:<34} {:>8} {:>3}  {} (default {}; rates {})",
            d.index,
            if d.default { "*" } else { "" },
            d.id,
            d.name,
            d.default_rate.map(|r| r.to_string()).unwrap_or("-".into()),
            d.default_channels
                .map(|c| c.to_string())
                .unwrap_or("-".into()),
            d.formats.join(","),
            d.default_format.unwrap_or("-".into()),
            rates
        );
    }
    println!(
        "\n* marks the default. Pick one by id, index or name: `mambatag listen -D ID`, or \
         `device = \"ID\"` in a mic [[source]] of the serve configuration."
    );
    Ok(ExitCode::SUCCESS)
}
