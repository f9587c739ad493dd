//! # huddle_protocol
//!
//! huddle's peer-to-peer protocol as plain state machines and codecs: no Bevy, no sockets, no
//! clock of its own. It builds natively and for wasm32, and both the plugin (`bevy_huddle`) and
//! the signaling server (`huddle_server`) use it.
//!
//! - [`endpoint::Endpoint`]: one peer's side of a lobby, sans-IO in the manner of quinn-proto. It
//!   takes signaling observations, link changes, received packets and the current time, and
//!   returns packets to send ([`endpoint::Transmit`]), events for the game
//!   ([`endpoint::Event`]) and its next timeout. Hello handshake, early frames, chunking and its
//!   window, star relaying with its reliability, pings and link give-up all live there.
//! - [`conditioner`]: latency, jitter and loss to put in a send path (the plugin's link
//!   conditioner, and the tests' simulated network).
//! - Codecs: [`frame`] (game frames), [`relay`] (the star's routing header), [`control`] (the
//!   control channel's messages), [`chunk`] (reassembly of large messages).
//! - Agreements: [`election`] (who hosts, in what succession), [`departure`] (a rollback match's
//!   gone player's last input), [`resync`] (checking a rollback match's resync offer);
//!   [`ggrs_filter`] (what a player may say in a GGRS packet), [`ggrs_sync`] (GGRS's handshake in
//!   one round trip); [`uplink`] (measuring a member's upload headroom, which ranks the
//!   host's heirs).
//! - Contracts with the server: [`room`] (the room URL: `?next`, `?capacity`, `?topology`,
//!   `?private`) and [`signal`] (the one check of SDP/ICE signals, used by server and plugin).
//!
//! Every byte from the network may be a lie: decoders return errors, never panic, and every
//! buffer keyed by peer input has a bound.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod chunk;
pub mod conditioner;
pub mod control;
pub mod departure;
pub mod election;
pub mod endpoint;
pub mod frame;
pub mod ggrs_filter;
pub mod ggrs_sync;
pub mod lane;
pub mod media;
pub mod reconnect;
pub mod relay;
pub mod resync;
pub mod room;
pub mod signal;
pub mod uplink;

pub use endpoint::{Endpoint, EndpointConfig, Event, Transmit};
pub use lane::Lane;
pub use matchbox_protocol::PeerId;
pub use room::{RoomRequest, RoomUrl, Topology};
