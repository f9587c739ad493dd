//! # huddle_server
//!
//! The signaling server for huddle games. It speaks the unmodified matchbox protocol (stock
//! `matchbox_socket` clients work with it) and adds what a public server needs:
//!
//! - **rooms** by URL path, each with its own lock, so a join costs O(peers in the room);
//!   `?next=N` forms a fresh room from each N arrivals on a path;
//! - **mesh rooms** (default), where a newcomer is introduced to everyone, and **star rooms**
//!   (`?topology=star`), where it is introduced to the host only and a departing host is replaced by
//!   the oldest remaining peer, who is introduced to all others;
//! - **hosts**: the oldest peer of each room, shown by `GET /rooms`;
//! - **its own websocket layer** (axum): small read buffers, messages over the limit refused as
//!   they arrive, a bounded queue per peer (a peer that does not read is closed, never buffered
//!   without limit), an idle timeout, and a deadline for each HTTP request head (a client that
//!   opens connections and sends nothing holds nothing for long);
//! - **limits**: signals stay inside their room and must be well-formed SDP or ICE candidates;
//!   oversized messages close the connection; per-connection signal rate; `?capacity=N` per room;
//!   room names of letters, digits and `-_.~`, of bounded length; connections per address;
//! - **room policies** (`--room-policy`): options fixed per room-name prefix, so the first
//!   arrival cannot squat a room with its query;
//! - **TLS** (`--tls-cert`, `--tls-key`): `wss://` through rustls;
//! - **ICE servers** (`--stun-url`, `--turn-url`, `--turn-secret`): `GET /ice/<room>` hands a peer
//!   the STUN servers and short-lived TURN credentials (coturn's `use-auth-secret` scheme);
//! - **join tokens** (`--auth-secret`): rooms admit only peers with a token for them
//!   ([`token::mint`] in the game's backend, or `huddle_server token`);
//! - **many instances** (`--redis`): instances behind a load balancer share their rooms through
//!   Redis, so a room's peers may be on different instances; one that dies is noticed by its
//!   lapsed heartbeat and its peers leave their rooms;
//! - **operations**: `GET /health`, Prometheus `GET /metrics`, `GET /rooms` (rooms made with
//!   `?private=1` are not listed), graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> Result<(), huddle_server::ServerError> {
//! let server = huddle_server::start(huddle_server::ServerConfig::loopback())?;
//! println!("join at {}", server.room_url("lobby"));
//! server.shutdown().await
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod close;
mod cluster;
pub mod config;
mod connection;
mod expiring;
mod http;
pub mod ice;
pub mod metrics;
pub mod policy;
pub mod rate_limit;
pub mod registry;
pub mod request;
pub mod resume;
pub mod room;
mod serve;
mod server;
mod state;
pub mod tls;
pub mod token;
mod upgrade;

pub use close::{CLOSE_GOING_AWAY, CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_REPLACED, CLOSE_TOO_BIG};
pub use cluster::{ClusterError, HEARTBEAT, HEARTBEAT_TTL};
pub use config::ServerConfig;
pub use metrics::{DropReason, Metrics, RefusalReason};
pub use registry::RoomInfo;
pub use request::{Admitted, RoomRequest, Topology};
pub use server::{start, RunningServer, ServerError};
pub use state::{Refusal, ServerState, ROOMS_REFRESH};
