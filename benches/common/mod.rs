//! What the benches' servers (the floors `benches/*.sh` measure forma against) share: they start
//! only when asked, and stop on the signals `forma serve` stops on.

use std::future::Future;
use std::process::ExitCode;

/// Runs `serve` on a multi-thread runtime, as `forma serve` runs. `cargo bench` passes `--bench`;
/// test runners that list every target (`cargo nextest run --all-targets` asks with `--list`)
/// find nothing to run, and a plain `cargo bench` without PORT starts no server: `hint` says how.
pub fn server_main<F>(name: &str, hint: &str, serve: impl FnOnce() -> F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    if !std::env::args().any(|arg| arg == "--bench") {
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("PORT").is_none() {
        eprintln!("{name}: {hint}");
        return ExitCode::SUCCESS;
    }
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(serve()));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The port to listen on (127.0.0.1 only).
pub fn port() -> anyhow::Result<u16> {
    use anyhow::Context;
    std::env::var("PORT")
        .context("PORT")?
        .parse()
        .context("PORT")
}
