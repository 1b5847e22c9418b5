#![forbid(unsafe_code)]

use std::process::ExitCode;

/// A gateway allocates and frees small buffers on every request; mimalloc's thread-local free
/// lists cut that cost well below glibc's (measured with benches/gateway.sh).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use forma::cli::{self, Cli};
use forma::infra::tls;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tls::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming what to fix; the cause chain is joined with ": ".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
