//! The game's message types: their ids on the wire, their channels, and how to decode them.

use crate::messages::{Incoming, Outgoing};
use crate::schedule::HuddleSystems;
use crate::session::HuddleSession;
use bevy::prelude::*;
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

/// The bincode configuration of game messages, with a decode limit so a hostile length prefix
/// cannot make us allocate.
pub(crate) fn decode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<{ 64 * 1024 * 1024 }>,
> {
    bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>()
}

fn deliver<T: HuddleMessage>(world: &mut World, from: PeerId, bytes: &[u8]) -> Result<(), String> {
    match bincode::serde::decode_from_slice::<T, _>(bytes, decode_config()) {
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
