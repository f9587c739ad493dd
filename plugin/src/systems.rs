//! The plugin's systems: thin shells that move the session's events into Bevy.

use crate::lobby::{ended, set_state, Roster};
use crate::messages::write_events;
use crate::registry::MessageRegistry;
use crate::schedule::LobbyState;
use crate::session::{HuddleSession, HuddleStats};
use bevy::prelude::*;
use matchbox_socket::PeerId;

/// `PreUpdate`: reads the network.
pub(crate) fn receive(world: &mut World) {
    let Some(finished) = world
        .get_resource_mut::<HuddleSession>()
        .map(|mut s| s.finished())
    else {
        return;
    };
    if let Some(error) = finished {
        if let Some(session) = world.remove_resource::<HuddleSession>() {
            ended(world, session, error);
        }
        return;
    }
    let (events, lobby, signaling, roster, notices) =
        world.resource_scope(|_, mut session: Mut<HuddleSession>| {
            let events = session.poll();
            let signaling = session.signaling();
            let notices = session.take_notices();
            let lobby = if session.id().is_some() && session.host().is_some() {
                LobbyState::InLobby
            } else {
                LobbyState::Connecting
            };
            let roster = session
                .lobby_changed()
                .then(|| Roster::from_session(&session));
            (events, lobby, signaling, roster, notices)
        });
    for notice in notices {
        warn!("huddle: {notice}");
        world.write_message(notice);
    }
    let mut undecodable = 0u64;
    write_events(world, events, |world, type_id, from, bytes| {
        if !deliver(world, type_id, from, bytes) {
            undecodable += 1;
        }
    });
    if let (Some(roster), Some(mut current)) = (roster, world.get_resource_mut::<Roster>()) {
        current.set_if_neq(roster);
    }
    let stats = world.get_resource_mut::<HuddleSession>().map(|mut s| {
        s.count_undecodable(undecodable);
        s.stats()
    });
    if let (Some(stats), Some(mut current)) = (stats, world.get_resource_mut::<HuddleStats>()) {
        current.set_if_neq(stats);
    }
    set_state(world, lobby);
    set_state(world, signaling);
}

/// Decodes a game message with the registry and writes it as `Incoming<T>`; `false` if it was
/// not one of ours or did not decode.
fn deliver(world: &mut World, type_id: u32, from: PeerId, bytes: &[u8]) -> bool {
    let deliver = world
        .get_resource::<MessageRegistry>()
        .and_then(|r| r.entry(type_id))
        .map(|e| e.deliver);
    match deliver.map(|d| d(world, from, bytes)) {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            debug!("dropped an undecodable message from {from}: {e}");
            false
        }
        None => false,
    }
}

/// `PostUpdate`: sends what was queued.
pub(crate) fn flush(
    session: Option<ResMut<HuddleSession>>,
    conditioner: Option<Res<crate::conditioner::LinkConditioner>>,
) {
    if let Some(mut session) = session {
        session.flush(conditioner.map(|c| *c).unwrap_or_default());
    }
}

/// `Startup`: joins the configured room.
pub(crate) fn auto_connect(world: &mut World) {
    let url = world
        .get_resource::<crate::HuddleSettings>()
        .and_then(|s| s.0.room_url.clone());
    if let Some(url) = url {
        crate::lobby::connect(world, &url);
    }
}
