//! huddle's peer-to-peer protocol as plain state machines and codecs: no sockets, no Bevy.

pub mod chunk;
pub mod control;
pub mod election;
pub mod frame;
pub mod relay;
