//! Seats in a running match: a spectator asks to play ([`JoinRollback`]): in a new seat (a
//! drop-in) or in a gone player's (a player whose connection dropped, back as a new peer). The
//! leader (the first seat somebody plays) gathers the requests and seats them at its next resync
//! (see the `resync` module), at most one resync per [`RESYNC_GAP`].

use super::{RollbackMatch, RollbackPhase, RollbackSettings, RollbackStats};
use crate::messages::{Incoming, Outgoing, PeerLeft};
use crate::session::HuddleSession;
use bevy::prelude::*;
use huddle_protocol::resync::MAX_SEATS;
use matchbox_socket::PeerId;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use web_time::Instant;

/// A spectator's game asks to play in the running match: in the seat of a gone player (`seat`: a
/// handle whose player is gone, such as our own before our connection dropped) or, without one
/// (or if that seat is not free), in a new seat. The match's leader seats us at its next resync
/// unless its [`RollbackSettings::drop_ins`] is off; [`RollbackEvent::Resynced`] tells everyone.
///
/// [`RollbackEvent::Resynced`]: super::RollbackEvent::Resynced
#[derive(Message, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JoinRollback {
    /// The seat (player handle) we would like, if its player is gone.
    pub seat: Option<usize>,
}

/// A spectator's request to the leader for a seat.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeatRequest {
    pub(crate) seat: Option<u32>,
}

/// The least time between two resyncs for seating players (each costs every player a short
/// stall): requests that come meanwhile wait for the next one.
pub(crate) const RESYNC_GAP: Duration = Duration::from_secs(1);

/// Seat requests: ours (which seat, to whom) and, as the leader, the others'.
#[derive(Resource, Default, Debug)]
pub(crate) struct Seating {
    /// Our game asked to play ([`JoinRollback`]) in this seat (`None`: a new one): kept until we
    /// play, across a match that has not started for us yet and across resyncs that did not
    /// seat us.
    pub(crate) wish: Option<Option<u32>>,
    /// The leader we sent our wish to (asked again when the leader changes or forgets it).
    pub(crate) asked: Option<PeerId>,
    /// Peers asking us for a seat, in the order they asked (one entry each, at most
    /// [`MAX_SEATS`]).
    pub(crate) requests: Vec<(PeerId, Option<u32>)>,
    /// When the last resync was carried out.
    pub(crate) last_resync: Option<Instant>,
    /// Peers seated once that never synchronized: not seated again (at most [`MAX_SEATS`]).
    barred: Vec<PeerId>,
}

impl Seating {
    /// `peer` was seated and never played: its requests are refused from now on.
    pub(crate) fn bar(&mut self, peer: PeerId) {
        if !self.barred.contains(&peer) {
            if self.barred.len() >= MAX_SEATS {
                self.barred.remove(0);
            }
            self.barred.push(peer);
        }
    }

    /// Whether the leader may seat the requests now.
    pub(crate) fn due(&self, now: Instant) -> bool {
        !self.requests.is_empty()
            && self
                .last_resync
                .is_none_or(|at| now.saturating_duration_since(at) >= RESYNC_GAP)
    }
}

/// The first seat somebody plays whose player we are linked to: the leader.
pub(crate) fn leader(state: &RollbackMatch, huddle: &HuddleSession) -> Option<PeerId> {
    let me = huddle.id();
    state
        .remaining()
        .map(|(_, p)| p)
        .find(|p| Some(*p) == me || huddle.peers().contains(p))
}

/// A spectator's side: [`JoinRollback`] becomes a request to the leader: once we watch (a
/// wish made before is kept), again to a new leader, and again after a resync that did not seat
/// us (the leader had decided before our request came).
pub(crate) fn ask(
    mut joins: MessageReader<JoinRollback>,
    state: Res<RollbackMatch>,
    huddle: Option<Res<HuddleSession>>,
    mut seating: ResMut<Seating>,
    mut out: MessageWriter<Outgoing<SeatRequest>>,
) {
    if let Some(join) = joins.read().last() {
        seating.wish = Some(join.seat.and_then(|s| u32::try_from(s).ok()));
        seating.asked = None;
    }
    match state.phase {
        RollbackPhase::Spectating => {}
        // Not watching yet: the wish waits.
        RollbackPhase::Waiting => return,
        RollbackPhase::Playing | RollbackPhase::Leaving | RollbackPhase::Ended => {
            seating.wish = None;
            seating.asked = None;
            return;
        }
    }
    let (Some(seat), Some(leader)) = (
        seating.wish,
        huddle.as_deref().and_then(|h| leader(&state, h)),
    ) else {
        return;
    };
    if seating.asked != Some(leader) {
        seating.asked = Some(leader);
        out.write(Outgoing::to_peer(leader, SeatRequest { seat }));
    }
}

/// The leader's side: requests from peers that do not play (one each, bounded), unless the game
/// turned drop-ins off.
pub(crate) fn hear(
    mut requests: MessageReader<Incoming<SeatRequest>>,
    mut left: MessageReader<PeerLeft>,
    state: Res<RollbackMatch>,
    settings: Res<RollbackSettings>,
    mut seating: ResMut<Seating>,
    mut stats: ResMut<RollbackStats>,
) {
    for gone in left.read() {
        seating.requests.retain(|(p, _)| *p != gone.peer);
    }
    for request in requests.read() {
        let seated = state.remaining().any(|(_, p)| p == request.from);
        let known = seating.requests.iter().any(|(p, _)| *p == request.from);
        let playing = state.phase == RollbackPhase::Playing;
        let barred = seating.barred.contains(&request.from);
        let full = seating.requests.len() >= MAX_SEATS;
        if !settings.drop_ins || seated || barred || !playing || full {
            stats.seats_refused += 1;
            continue;
        }
        if known {
            seating.requests.retain(|(p, _)| *p != request.from);
        }
        seating.requests.push((request.from, request.message.seat));
    }
}

/// The seats after seating `requests` (linked peers only, each once): a gone seat it asks for,
/// else a new one. Returns the seats and the seats still gone.
pub(crate) fn seat(
    seats: &[PeerId],
    gone: &[usize],
    requests: &[(PeerId, Option<u32>)],
    linked: &[PeerId],
) -> (Vec<PeerId>, Vec<usize>) {
    let mut seats = seats.to_vec();
    let mut gone = gone.to_vec();
    for (peer, wanted) in requests {
        if seats.contains(peer) || !linked.contains(peer) {
            continue;
        }
        let free = wanted
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| gone.contains(s));
        match free {
            Some(s) => {
                seats[s] = *peer;
                gone.retain(|g| *g != s);
            }
            None if seats.len() < MAX_SEATS => seats.push(*peer),
            None => {}
        }
    }
    (seats, gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollback::test_peer as id;

    #[test]
    fn newcomers_take_the_gone_seat_they_ask_for_or_a_new_one() {
        let seats = [id(1), id(2), id(3)];
        let linked = [id(1), id(3), id(7), id(8), id(9)];
        let requests = [
            (id(7), Some(1)),
            (id(8), Some(1)),
            (id(9), Some(0)),
            (id(3), None),
            (id(6), None),
        ];
        let (seated, gone) = seat(&seats, &[1], &requests, &linked);
        // 7 takes the gone seat 1; 8 asked for it too late and gets a new one; 9 asked for a
        // living player's seat and gets a new one; 3 plays already; 6 is not linked.
        assert_eq!(seated, vec![id(1), id(7), id(3), id(8), id(9)]);
        assert!(gone.is_empty());
        let crowd: Vec<(PeerId, Option<u32>)> = (100..100 + MAX_SEATS as u128)
            .map(|i| (id(i), None))
            .collect();
        let linked: Vec<PeerId> = crowd.iter().map(|(p, _)| *p).collect();
        let (seated, _) = seat(&seats, &[], &crowd, &linked);
        assert_eq!(seated.len(), MAX_SEATS, "bounded");
    }
}
