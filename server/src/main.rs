//! `huddle_server`: run the signaling server.

use clap::Parser;
use huddle_server::ServerConfig;
use tracing_subscriber::EnvFilter;

/// A signaling server for huddle games (matchbox protocol).
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ServerConfig,
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long, env = "HUDDLE_LOG", default_value = "info,tower_http=warn")]
    log: String,
}

/// What else the binary does.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints a join token for a room (what a game's backend mints for its players).
    Token {
        /// The room's path, as in its URL (`lobby` for `ws://host/lobby?next=2`).
        #[arg(long)]
        room: String,
        /// The server's auth secret.
        #[arg(long, env = "HUDDLE_AUTH_SECRET", hide_env_values = true)]
        secret: String,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// The player's name (a kick bans it from the room with the address).
        #[arg(long)]
        name: Option<String>,
        /// The player's role (`moderator` may kick anyone in the room).
        #[arg(long)]
        role: Option<String>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Token {
        room,
        secret,
        ttl_secs,
        name,
        role,
    }) = cli.command
    {
        let claims = huddle_server::token::Claims { name, role };
        let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(ttl_secs);
        return match huddle_server::token::mint_with(secret.as_bytes(), &room, expires, &claims) {
            Ok(token) => {
                println!("{token}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    let server = match huddle_server::start(cli.config) {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match server.serve_until(shutdown_signal()).await {
        Ok(()) => {
            tracing::info!("shut down");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("server failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
