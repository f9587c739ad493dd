//! The plugin's systems: thin shells that move the session's events into Bevy.

use crate::lobby::{ended, set_state, Roster};
use crate::registry::MessageRegistry;
use crate::schedule::LobbyState;
use crate::session::{HuddleSession, HuddleStats, SessionEvent};
use bevy::prelude::*;

/// `PreUpdate`: reads the network.
pub(crate) fn receive(world: &mut World) {
    let Some(finished) = world
        .get_resource_mut::<HuddleSession>()
        .map(|mut s| s.finished())
    else {
        return;
    };
    if let Some(result) = finished {
        if let Some(session) = world.remove_resource::<HuddleSession>() {
            ended(world, session, result);
        }
        return;
    }
    let (events, lobby, roster) = world.resource_scope(|_, mut session: Mut<HuddleSession>| {
        let events = session.poll();
        let lobby = if session.id().is_some() && session.host().is_some() {
            LobbyState::InLobby
        } else {
            LobbyState::Connecting
        };
        (events, lobby, session.roster_dirty)
    });
    write_events(world, events);
    if roster {
        if let Some(mut session) = world.get_resource_mut::<HuddleSession>() {
            session.roster_dirty = false;
            let roster = Roster::from_session(&session);
            if let Some(mut current) = world.get_resource_mut::<Roster>() {
                current.set_if_neq(roster);
            }
        }
    }
    let stats = world
        .get_resource::<HuddleSession>()
        .map(|s| s.stats.clone());
    if let (Some(stats), Some(mut current)) = (stats, world.get_resource_mut::<HuddleStats>()) {
        current.set_if_neq(stats);
    }
    set_state(world, lobby);
}

/// Writes session events as Bevy messages, decoding game messages with the registry.
pub(crate) fn write_events(world: &mut World, events: Vec<SessionEvent>) {
    if events.is_empty() {
        return;
    }
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
                let deliver = world
                    .get_resource::<MessageRegistry>()
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
