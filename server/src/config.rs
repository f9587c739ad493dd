//! Server settings: limits and the bind address. Each is a CLI flag with an environment variable.

use std::net::SocketAddr;

/// Settings of a huddle signaling server.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HUDDLE_BIND", default_value = "0.0.0.0:3536")]
    pub bind: SocketAddr,
    /// Most peers in one room; `?capacity=N` may ask for fewer, never more.
    #[arg(long, env = "HUDDLE_MAX_ROOM_PEERS", default_value_t = 64)]
    pub max_room_peers: usize,
    /// Most open peer websockets on the server.
    #[arg(long, env = "HUDDLE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Largest websocket message a peer may send, in bytes; a larger one closes its connection.
    #[arg(long, env = "HUDDLE_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,
    /// Signals per second a connection may send, sustained.
    #[arg(long, env = "HUDDLE_SIGNAL_RATE", default_value_t = 100.0)]
    pub signal_rate: f64,
    /// Signals a connection may send in one burst.
    #[arg(long, env = "HUDDLE_SIGNAL_BURST", default_value_t = 500)]
    pub signal_burst: u32,
    /// Dropped signals (malformed, invalid or over the rate) after which a connection is closed.
    #[arg(long, env = "HUDDLE_MAX_VIOLATIONS", default_value_t = 200)]
    pub max_violations: u32,
    /// Messages queued for one peer at most; a peer that does not read while more come is
    /// closed (its queue never grows past this).
    #[arg(long, env = "HUDDLE_MAX_QUEUED_MESSAGES", default_value_t = 64)]
    pub max_queued_messages: usize,
    /// Bytes of messages queued for one peer at most (counted with those being written to it);
    /// a peer that does not read while more come is closed.
    #[arg(long, env = "HUDDLE_MAX_QUEUED_BYTES", default_value_t = 1 << 20)]
    pub max_queued_bytes: usize,
    /// Seconds a connection may stay silent (matchbox clients send a keep-alive every 10 s)
    /// before it is closed.
    #[arg(long, env = "HUDDLE_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,
    /// Seconds a connection has to send a whole HTTP request head (the websocket upgrade
    /// request, or a request to `/rooms`, `/metrics`, ...), and to send the next one on a
    /// kept-alive connection; it is closed otherwise.
    #[arg(long, env = "HUDDLE_HANDSHAKE_TIMEOUT_SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,
    /// Most open (or opening) websockets from one IP address.
    #[arg(
        long,
        env = "HUDDLE_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256
    )]
    pub max_connections_per_address: usize,
    /// Secret for join tokens: when set, a peer needs `?token=` minted with it for the room
    /// (`huddle_server token`, or `huddle_server::token::mint` in the game's backend).
    #[arg(long, env = "HUDDLE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// Options fixed for the rooms whose name starts with a prefix, as `PREFIX?name=value&...`
    /// (`next`, `topology`, `capacity`, `private`); repeat the flag, or separate with `;` in
    /// the environment. The longest matching prefix applies; what it does not name stays the
    /// client's.
    #[arg(long, env = "HUDDLE_ROOM_POLICY", value_delimiter = ';')]
    pub room_policy: Vec<crate::policy::RoomPolicy>,
    /// TLS certificate chain (PEM): with `--tls-key`, the server speaks `wss://`/`https://`.
    #[arg(long, env = "HUDDLE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM) for `--tls-cert`.
    #[arg(long, env = "HUDDLE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Longest ban, in seconds, a room's host or the operator may give a kicked peer's address.
    #[arg(long, env = "HUDDLE_MAX_BAN_SECS", default_value_t = 3600)]
    pub max_ban_secs: u64,
    /// Longest room name in bytes (names use letters, digits and `-_.~`).
    #[arg(long, env = "HUDDLE_MAX_ROOM_NAME", default_value_t = 128)]
    pub max_room_name: usize,
    /// STUN servers handed to peers by `GET /ice/<room>` (`stun:host:port`; repeat the flag, or
    /// separate with `,` in the environment).
    #[arg(long, env = "HUDDLE_STUN_URL", value_delimiter = ',')]
    pub stun_url: Vec<String>,
    /// TURN servers handed to peers by `GET /ice/<room>`, with short-lived credentials made with
    /// `--turn-secret` (`turn:host:3478`, `turns:host:5349`; repeat, or `,` in the environment).
    #[arg(
        long,
        env = "HUDDLE_TURN_URL",
        value_delimiter = ',',
        requires = "turn_secret"
    )]
    pub turn_url: Vec<String>,
    /// The secret shared with the TURN server (coturn's `static-auth-secret` with
    /// `use-auth-secret`): credentials are made from it, it never leaves the server.
    #[arg(long, env = "HUDDLE_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,
    /// How long TURN credentials stay valid, in seconds.
    #[arg(long, env = "HUDDLE_TURN_TTL_SECS", default_value_t = 3600)]
    pub turn_ttl_secs: u64,
    /// The secret resume tokens are signed with: give every instance (and every restart) the
    /// same one so players resume their places across them. Without it, a random secret per
    /// process: a place survives a dropped connection, not a restart.
    #[arg(long, env = "HUDDLE_RESUME_SECRET", hide_env_values = true)]
    pub resume_secret: Option<String>,
    /// How long a place is held for a peer whose connection dropped, in seconds (0: not held;
    /// its room hears at once that it left).
    #[arg(long, env = "HUDDLE_RESUME_GRACE_SECS", default_value_t = 20)]
    pub resume_grace_secs: u64,
    /// Redis to share rooms with other instances through (`redis://host:6379/`): peers of one
    /// room may be on different instances behind a load balancer. Needs `--resume-secret`, the
    /// same on every instance. Without it, rooms live in this process's memory.
    #[arg(long, env = "HUDDLE_REDIS")]
    pub redis: Option<String>,
    /// Prefix of every Redis key and channel the instances use (several deployments can share
    /// one Redis under different prefixes).
    #[arg(long, env = "HUDDLE_REDIS_PREFIX", default_value = "huddle")]
    pub redis_prefix: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 3536)),
            max_room_peers: 64,
            max_connections: 100_000,
            max_frame_bytes: 65_536,
            signal_rate: 100.0,
            signal_burst: 500,
            max_violations: 200,
            max_queued_messages: 64,
            max_queued_bytes: 1 << 20,
            max_connections_per_address: 256,
            auth_secret: None,
            room_policy: Vec::new(),
            max_ban_secs: 3600,
            tls_cert: None,
            tls_key: None,
            idle_timeout_secs: 60,
            handshake_timeout_secs: 10,
            max_room_name: 128,
            stun_url: Vec::new(),
            turn_url: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: 3600,
            resume_secret: None,
            resume_grace_secs: 20,
            redis: None,
            redis_prefix: "huddle".into(),
        }
    }
}

impl ServerConfig {
    /// The defaults, listening on an ephemeral loopback port: for tests and embedding.
    pub fn loopback() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServerConfig,
    }

    #[test]
    fn cli_defaults_match_default() {
        let cli = Cli::try_parse_from(["huddle_server"]).unwrap();
        assert_eq!(cli.config, ServerConfig::default());
        let cli =
            Cli::try_parse_from(["x", "--bind", "127.0.0.1:0", "--max-room-peers", "8"]).unwrap();
        assert_eq!(cli.config.max_room_peers, 8);
        assert_eq!(cli.config.bind.port(), 0);
    }
}
