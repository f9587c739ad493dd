//! The game's message types: their ids on the wire, their channels, and how to decode them.

use crate::messages::{Incoming, Outgoing};
use crate::schedule::HuddleSystems;
use crate::session::HuddleSession;
use bevy::prelude::*;
use bincode::error::DecodeError;
use matchbox_socket::PeerId;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::TypeId;
use std::hash::Hasher;

pub use huddle_protocol::endpoint::Channel;

/// A type that can travel as a game message.
pub trait HuddleMessage: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> HuddleMessage for T {}

pub(crate) type Deliver = fn(&mut World, PeerId, &[u8]) -> Result<(), String>;

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) rust_type: TypeId,
    pub(crate) name: &'static str,
    pub(crate) channel: Channel,
    pub(crate) deliver: Deliver,
}

/// The registered message types. Ids are given by sorting the type names, so peers agree on them
/// whatever order the types were registered in; a hash of names and channels detects peers built
/// with another message set.
#[derive(Resource, Debug, Default, Clone)]
pub struct MessageRegistry {
    entries: Vec<Entry>,
}

/// Memory a message may claim while it decodes, per byte it has: a few bytes from a peer that
/// claim a huge `Vec` or `String` fail at once instead of allocating it. Any honest message fits
/// (a one-byte varint `u64` or `String` header stands for 8 or 24 bytes in memory).
const CLAIM_PER_BYTE: usize = 64;

/// Decodes a game message with a memory limit that follows its size: [`CLAIM_PER_BYTE`] times
/// its bytes, in tiers from 64 KiB to 64 MiB (bincode's limit is a constant).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), DecodeError> {
    use bincode::serde::decode_from_slice as from;
    let standard = bincode::config::standard();
    match bytes.len().saturating_mul(CLAIM_PER_BYTE) {
        n if n <= 1 << 16 => from(bytes, standard.with_limit::<{ 1 << 16 }>()),
        n if n <= 1 << 20 => from(bytes, standard.with_limit::<{ 1 << 20 }>()),
        n if n <= 1 << 24 => from(bytes, standard.with_limit::<{ 1 << 24 }>()),
        _ => from(bytes, standard.with_limit::<{ 1 << 26 }>()),
    }
}

fn deliver<T: HuddleMessage>(world: &mut World, from: PeerId, bytes: &[u8]) -> Result<(), String> {
    match decode::<T>(bytes) {
        Ok((message, n)) if n == bytes.len() => {
            world.write_message(Incoming { from, message });
            Ok(())
        }
        Ok((_, n)) => Err(format!("{} trailing bytes", bytes.len() - n)),
        Err(e) => Err(e.to_string()),
    }
}

impl MessageRegistry {
    fn add<T: HuddleMessage>(&mut self, channel: Channel) -> bool {
        let rust_type = TypeId::of::<T>();
        if self.entries.iter().any(|e| e.rust_type == rust_type) {
            return false;
        }
        self.entries.push(Entry {
            rust_type,
            name: std::any::type_name::<T>(),
            channel,
            deliver: deliver::<T>,
        });
        self.entries.sort_by(|a, b| a.name.cmp(b.name));
        true
    }

    /// The wire id and channel of a type.
    pub(crate) fn id_of(&self, rust_type: TypeId) -> Option<(u32, Channel)> {
        self.entries
            .iter()
            .position(|e| e.rust_type == rust_type)
            .map(|i| (i as u32, self.entries[i].channel))
    }

    pub(crate) fn entry(&self, id: u32) -> Option<&Entry> {
        self.entries.get(id as usize)
    }

    /// Type names in id order.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| format!("{}:{:?}", short_name(e.name), e.channel))
            .collect()
    }

    /// A hash of the type names and channels (FNV-1a: stable across builds and platforms).
    pub fn hash(&self) -> u64 {
        let mut h = fnv::FnvHasher::default();
        for e in &self.entries {
            h.write(e.name.as_bytes());
            h.write_u8(0);
            h.write_u8(match e.channel {
                Channel::Reliable => 1,
                Channel::Unreliable => 2,
            });
        }
        h.finish()
    }
}

/// `my_game::net::Move` → `Move`, for readable errors.
fn short_name(name: &str) -> &str {
    name.rsplit("::").next().unwrap_or(name)
}

/// Registers game message types on the [`App`].
pub trait AddHuddleMessage {
    /// Registers `T` on `channel`: systems then send it with `MessageWriter<Outgoing<T>>` and
    /// read it with `MessageReader<Incoming<T>>`. Every peer must register the same types.
    fn add_huddle_message<T: HuddleMessage>(&mut self, channel: Channel) -> &mut Self;
}

impl AddHuddleMessage for App {
    fn add_huddle_message<T: HuddleMessage>(&mut self, channel: Channel) -> &mut Self {
        let added = self
            .world_mut()
            .get_resource_or_insert_with(MessageRegistry::default)
            .add::<T>(channel);
        if added {
            self.add_message::<Outgoing<T>>()
                .add_message::<Incoming<T>>()
                .add_systems(PostUpdate, queue_outgoing::<T>.in_set(HuddleSystems::Send));
        }
        self
    }
}

/// Encodes this frame's `Outgoing<T>` into the session's send queues.
fn queue_outgoing<T: HuddleMessage>(
    mut outgoing: MessageReader<Outgoing<T>>,
    session: Option<ResMut<HuddleSession>>,
    registry: Res<MessageRegistry>,
    mut errors: MessageWriter<crate::messages::HuddleError>,
) {
    let Some(mut session) = session else {
        outgoing.clear();
        return;
    };
    let Some((id, channel)) = registry.id_of(TypeId::of::<T>()) else {
        outgoing.clear();
        return;
    };
    for out in outgoing.read() {
        let payload = match bincode::serde::encode_to_vec(&out.message, bincode::config::standard())
        {
            Ok(p) => p,
            Err(e) => {
                errors.write(crate::messages::HuddleError::Send {
                    type_name: std::any::type_name::<T>(),
                    why: e.to_string(),
                });
                continue;
            }
        };
        if let Err(why) = session.endpoint_mut().send(id, channel, &payload, &out.to) {
            errors.write(crate::messages::HuddleError::Send {
                type_name: std::any::type_name::<T>(),
                why: why.to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten bytes that claim a 1 MiB `String` are refused for the claim, before anything is
    /// allocated (bincode allocates a string's claimed length before reading it: with the flat
    /// 64 MiB limit these bytes allocated 1 MiB, and 64 MiB with a bigger claim); honest
    /// messages of every size decode.
    #[test]
    fn a_claim_larger_than_the_message_allows_is_refused_at_once() {
        let mut lie = Vec::new();
        lie.push(252u8); // varint: a u32 length follows
        lie.extend((1u32 << 20).to_le_bytes());
        lie.extend([0; 5]);
        assert!(matches!(
            decode::<String>(&lie),
            Err(DecodeError::LimitExceeded)
        ));
        for n in [0usize, 10, 70_000, 2_000_000] {
            let honest: Vec<u64> = (0..n as u64).map(|x| x % 100).collect();
            let bytes = bincode::serde::encode_to_vec(&honest, bincode::config::standard())
                .expect("encodes");
            let (back, used) = decode::<Vec<u64>>(&bytes).expect("decodes");
            assert_eq!((back.len(), used), (n, bytes.len()));
            let strings: Vec<String> = (0..n / 10).map(|_| String::new()).collect();
            let bytes = bincode::serde::encode_to_vec(&strings, bincode::config::standard())
                .expect("encodes");
            assert!(decode::<Vec<String>>(&bytes).is_ok(), "{n} empty strings");
        }
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct A;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct B;

    #[test]
    fn ids_do_not_depend_on_registration_order() {
        let mut r1 = MessageRegistry::default();
        r1.add::<A>(Channel::Reliable);
        r1.add::<B>(Channel::Unreliable);
        let mut r2 = MessageRegistry::default();
        r2.add::<B>(Channel::Unreliable);
        r2.add::<A>(Channel::Reliable);
        assert!(!r2.add::<A>(Channel::Reliable), "added once");
        assert_eq!(r1.hash(), r2.hash());
        assert_eq!(r1.id_of(TypeId::of::<B>()), r2.id_of(TypeId::of::<B>()));
        let mut r3 = MessageRegistry::default();
        r3.add::<A>(Channel::Unreliable);
        r3.add::<B>(Channel::Unreliable);
        assert_ne!(r1.hash(), r3.hash(), "channels count");
        assert_eq!(r1.names(), ["A:Reliable", "B:Unreliable"]);
    }
}
