//! The `sealroom` binary; everything lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = sealroom_cli::Cli::parse();
    let default = match cli.command {
        sealroom_cli::Command::Serve(_) => "info",
        // The demo prints its own INSECURE SIMULATION banner and progress.
        sealroom_cli::Command::Demo(_) => "error",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = sealroom_cli::run(cli).await {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
