use std::io::Write;

use clap::Parser;
use switchyard::auth::cli::token_command;
use switchyard::config::{Cli, CliCommand, Config};
use switchyard::server::Server;
use tracing_subscriber::EnvFilter;

/// webrtc-rs logs some per-packet conditions (e.g. media before DTLS is up) at warn;
/// the media path must not log per packet, so its crates only speak up for errors.
const DEFAULT_LOG_FILTER: &str = "switchyard=info,webrtc=error,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_srtp=error,rtc_sctp=error,stun_proto=off,turn_server_proto=off,warn";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Some(CliCommand::Token(args)) = &cli.command {
        return match token_command(&config, args) {
            Ok(text) => {
                print!("{text}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchyard token: {e}");
                std::process::ExitCode::from(2)
            }
        };
    }
    let server = match Server::bind(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchyard: cannot start: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let addr = server.local_addr().expect("bound listener has an address");
    // Tests and scripts read this line to find the port when started with port 0.
    println!("switchyard listening on http://{addr}/");
    let _ = std::io::stdout().flush();
    if let Err(e) = server.serve(shutdown_signal()).await {
        eprintln!("switchyard: {e}");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
