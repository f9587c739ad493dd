//! The plugin's systems: thin shells that move the session's events into Bevy.

use crate::lobby::{ended, set_state, Roster};
use crate::registry::MessageRegistry;
use crate::schedule::LobbyState;
use crate::session::{HuddleSession, HuddleStats, SessionEvent};
use bevy::prelude::*;

/// `PreUpdate`: reads the network.
pub(crate) fn receive(world: &mut World) {
    let Some(mut session) = world.remove_resource::<HuddleSession>() else {
        return;
    };
    if let Some(result) = session.finished() {
        ended(world, session, result);
        return;
    }
    let events = session.poll();
    let lobby = if session.id().is_some() && session.host().is_some() {
        LobbyState::InLobby
    } else {
        LobbyState::Connecting
    };
    world.insert_resource(session);
    write_events(world, events);
    if let Some(session) = world.get_resource::<HuddleSession>() {
        let roster = Roster::from_session(session);
        let stats = session.stats.clone();
        if world.get_resource::<Roster>() != Some(&roster) {
            world.insert_resource(roster);
        }
        world.insert_resource(stats);
    }
    set_state(world, lobby);
}

/// Writes session events as Bevy messages, decoding game messages with the registry.
pub(crate) fn write_events(world: &mut World, events: Vec<SessionEvent>) {
    let registry = world.get_resource::<MessageRegistry>().cloned();
    let mut undecodable = 0u64;
    for event in events {
        match event {
            SessionEvent::Joined(m) => {
                world.write_message(m);
            }
            SessionEvent::Left(m) => {
                world.write_message(m);
            }
            SessionEvent::Host(m) => {
                world.write_message(m);
            }
            SessionEvent::Error(e) => {
                warn!("huddle: {e}");
                world.write_message(e);
            }
            SessionEvent::Deliver {
                type_id,
                from,
                bytes,
            } => {
                let deliver = registry
                    .as_ref()
                    .and_then(|r| r.entry(type_id))
                    .map(|e| e.deliver);
                match deliver {
                    Some(deliver) => {
                        if let Err(e) = deliver(world, from, &bytes) {
                            debug!("dropped an undecodable message from {from}: {e}");
                            undecodable += 1;
                        }
                    }
                    None => undecodable += 1,
                }
            }
        }
    }
    if undecodable > 0 {
        if let Some(mut session) = world.get_resource_mut::<HuddleSession>() {
            session.stats.frames_dropped += undecodable;
        }
        world
            .get_resource_or_insert_with(HuddleStats::default)
            .frames_dropped += undecodable;
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
