//! The public view of the lobby, and the commands that join and leave it.

use crate::messages::{write_events, HuddleError, Role};
use crate::registry::MessageRegistry;
use crate::schedule::{LobbyState, SignalingState};
use crate::session::HuddleSession;
use bevy::prelude::*;
use matchbox_socket::PeerId;
use std::collections::HashMap;

/// Who is in the lobby, as this peer sees it. Updated every frame in `HuddleSystems::Receive`.
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    /// Our id, once the server assigned it.
    pub me: Option<PeerId>,
    /// The agreed host.
    pub host: Option<PeerId>,
    /// Everyone in the lobby, ourselves included, in join order (the host first): the order of
    /// succession every peer agrees on.
    pub members: Vec<PeerId>,
    /// Who hosts if the host leaves now: with
    /// [`ProtocolSettings::host_by_upload`](crate::ProtocolSettings) the member the host measured
    /// the most upload headroom of, else the next in `members`.
    pub next_host: Option<PeerId>,
    /// The peers we have a working link to, in the order they joined our lobby.
    pub peers: Vec<PeerId>,
    /// Our role on each link.
    pub roles: HashMap<PeerId, Role>,
    /// Each peer's player metadata as it sent it (ours too), encoded: read it with
    /// [`Roster::metadata`].
    pub metadata: HashMap<PeerId, Vec<u8>>,
}

impl Roster {
    /// Whether we are the host.
    pub fn is_host(&self) -> bool {
        self.me.is_some() && self.me == self.host
    }

    /// `peer`'s player metadata decoded as `T` (the type the game gave
    /// [`HuddleConfig::with_metadata`](crate::HuddleConfig::with_metadata)); `None` if it sent
    /// none or something else.
    pub fn metadata<T: serde::de::DeserializeOwned>(&self, peer: PeerId) -> Option<T> {
        let bytes = self.metadata.get(&peer)?;
        let config = bincode::config::standard().with_limit::<1024>();
        bincode::serde::decode_from_slice(bytes, config)
            .ok()
            .map(|(value, _)| value)
    }

    pub(crate) fn from_session(session: &HuddleSession) -> Self {
        let peers = session.peers().to_vec();
        let roles = peers
            .iter()
            .filter_map(|p| session.role(*p).map(|r| (*p, r)))
            .collect();
        let endpoint = session.endpoint();
        let mut metadata: HashMap<PeerId, Vec<u8>> = peers
            .iter()
            .filter_map(|p| Some((*p, endpoint.peer_meta(*p)?.to_vec())))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        if let Some(me) = session.id() {
            let ours = &endpoint.config().meta;
            if !ours.is_empty() {
                metadata.insert(me, ours.clone());
            }
        }
        Self {
            me: session.id(),
            host: session.host(),
            members: session.succession(),
            next_host: endpoint.next_host(),
            peers,
            roles,
            metadata,
        }
    }
}

/// Joining and leaving from systems: `commands.connect_huddle(url)`, `commands.leave_huddle()`.
pub trait HuddleCommandsExt {
    /// Joins the room at `room_url` (leaving the current one first).
    fn connect_huddle(&mut self, room_url: impl Into<String>);
    /// Leaves the room: every peer is announced as left, the state goes to `Offline`.
    fn leave_huddle(&mut self);
    /// As the room's host: has the signaling server remove `peer` and refuse its address in
    /// this room for `ban` (huddle_server; see [`HuddleSession::kick`]).
    fn kick(&mut self, peer: PeerId, ban: std::time::Duration);
    /// Asks the signaling server at `server` (a room URL such as `ws://host:3536/lobby`, or
    /// `http(s)://host:port`) for its public rooms (`GET /rooms`); the answer comes as a
    /// [`RoomList`](crate::RoomList) message, in a later frame. Over `https://` the
    /// `HuddleConfig::root_certificates`, if any, are the roots trusted.
    fn list_rooms(&mut self, server: impl Into<String>);
}

impl HuddleCommandsExt for Commands<'_, '_> {
    fn connect_huddle(&mut self, room_url: impl Into<String>) {
        let url = room_url.into();
        self.queue(move |world: &mut World| connect(world, &url));
    }

    fn leave_huddle(&mut self) {
        self.queue(leave);
    }

    fn kick(&mut self, peer: PeerId, ban: std::time::Duration) {
        self.queue(move |world: &mut World| {
            if let Some(session) = world.get_resource::<HuddleSession>() {
                session.kick(peer, ban);
            }
        });
    }

    fn list_rooms(&mut self, server: impl Into<String>) {
        let server = server.into();
        self.queue(move |world: &mut World| {
            let roots = world
                .get_resource::<crate::HuddleSettings>()
                .map(|s| s.0.root_certificates.clone())
                .unwrap_or_default();
            crate::rooms::request(world, &server, roots);
        });
    }
}

/// Opens a session to `url` in `world` (once the server's ICE servers came, with
/// `HuddleConfig::ice_from_server`).
pub(crate) fn connect(world: &mut World, url: &str) {
    leave(world);
    let config = world
        .get_resource::<crate::HuddleSettings>()
        .map(|s| s.0.clone())
        .unwrap_or_default();
    if config.ice_from_server {
        crate::server_ice::request(world, url, config.root_certificates.clone());
        set_state(world, LobbyState::Connecting);
        return;
    }
    connect_with(world, url, &config);
}

/// Opens a session to `url` with `config`.
pub(crate) fn connect_with(world: &mut World, url: &str, config: &crate::HuddleConfig) {
    let types = world
        .get_resource::<MessageRegistry>()
        .map_or((MessageRegistry::default().hash(), Vec::new()), |r| {
            (r.hash(), r.names())
        });
    match HuddleSession::connect(url, config, types) {
        Ok(session) => {
            world.insert_resource(session);
            set_state(world, LobbyState::Connecting);
        }
        Err(e) => {
            world.write_message(HuddleError::from(e));
            set_state(world, LobbyState::Offline);
        }
    }
}

/// Closes the session, if any (and forgets a join waiting for its ICE servers).
pub(crate) fn leave(world: &mut World) {
    crate::server_ice::forget(world);
    if world.get_resource::<HuddleSession>().is_none() {
        set_state(world, LobbyState::Offline);
    }
    if let Some(mut session) = world.remove_resource::<HuddleSession>() {
        let events = session.leave();
        write_events(world, events, |_, _, _, _| {});
        world.insert_resource(Roster::default());
        set_state(world, LobbyState::Offline);
    }
}

pub(crate) fn set_state<S: bevy::state::state::FreelyMutableState + Copy>(
    world: &mut World,
    state: S,
) {
    let current = world.get_resource::<State<S>>().map(|s| *s.get());
    let Some(mut next) = world.get_resource_mut::<NextState<S>>() else {
        return;
    };
    // A transition may still be pending (a join refused in the frame that asked for it): the
    // latest word wins, also when it is the state we are in now.
    let pending = match *next {
        NextState::Pending(s) | NextState::PendingIfNeq(s) => Some(s),
        NextState::Unchanged => None,
    };
    if pending.is_some_and(|p| p != state) {
        NextState::set_if_neq(&mut next, state);
    } else if pending.is_none() && current != Some(state) {
        next.set(state);
    }
}

/// Events of a session that ended by itself.
pub(crate) fn ended(world: &mut World, mut session: HuddleSession, error: HuddleError) {
    let events = session.leave();
    write_events(world, events, |_, _, _, _| {});
    warn!("huddle: {error}");
    world.write_message(error);
    world.insert_resource(Roster::default());
    set_state(world, LobbyState::Offline);
    set_state(world, SignalingState::Offline);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_check() {
        let me = PeerId(uuid::Uuid::from_u128(1));
        let mut r = Roster::default();
        assert!(!r.is_host());
        r.me = Some(me);
        r.host = Some(me);
        assert!(r.is_host());
    }
}
