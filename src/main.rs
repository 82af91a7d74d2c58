//! `mambatag` command line: parses arguments and dispatches to one function per subcommand.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mambatag",
    version,
    about = "Streaming audio tagging: 10 ms hops in, tags out"
)]
struct Cli {
    /// Log verbosity (error, warn, info, debug, trace); RUST_LOG overrides.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Tag audio files (or raw PCM on stdin with `-`) and print events.
    Tag(cli::tag::TagArgs),
    /// Print a model's contract: labels, thresholds, rate, hop, state sizes.
    Inspect(cli::inspect::InspectArgs),
    /// Measure step latency, batched throughput and file real-time factor.
    Bench(cli::bench::BenchArgs),
    /// List audio input devices (index, id, name, default rate/channels/formats).
    Devices(cli::devices::DevicesArgs),
    /// Show live tags from a microphone in the terminal.
    Listen(cli::listen::ListenArgs),
    /// Run the service: live sources, HTTP/SSE/WebSocket API, metrics (see config/mambatag.toml).
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The service logs its events (target mambatag::event) and life cycle at info by default.
    let level = match cli.cmd {
        Cmd::Serve(_) if cli.log == "warn" => "warn,mambatag=info".to_string(),
        _ => cli.log.clone(),
    };
    // ONNX Runtime's own info lines (session option dumps, arena sizes) are noise for users;
    // ask for them explicitly with `--log ort=info`.
    let level = if level.contains("ort") {
        level
    } else {
        format!("{level},ort=warn")
    };
    // symphonia logs its own ERROR/WARN lines for bad files ("probe reached EOF at 1000 bytes",
    // "expected 88200 frames but only read 40960"), without the path, next to the error the
    // source reports for the same file with its path. `--log symphonia=warn` brings them back.
    let level = if level.contains("symphonia") {
        level
    } else {
        format!("{level},symphonia=off")
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not for journald or log files.
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .init();
    // A one-shot command whose reader went away (`mambatag inspect | head`) should end quietly,
    // as Unix tools do, not panic in println! (Rust ignores SIGPIPE by default). The service
    // keeps ignoring it: a client that hangs up must not end the daemon.
    #[cfg(unix)]
    if !matches!(cli.cmd, Cmd::Serve(_)) {
        // SAFETY: sets a signal disposition to its default before any thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let res = match cli.cmd {
        Cmd::Tag(a) => cli::tag::run(a),
        Cmd::Inspect(a) => cli::inspect::run(a),
        Cmd::Bench(a) => cli::bench::run(a),
        Cmd::Devices(a) => cli::devices::run(a),
        Cmd::Listen(a) => cli::listen::run(a),
        Cmd::Serve(a) => cli::serve::run(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mambatag: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
