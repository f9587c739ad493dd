//! The rollback plugin's own resources, shared by its systems.

use bevy::prelude::*;
use huddle_protocol::departure::Departures;
use matchbox_socket::PeerId;
use web_time::Instant;

/// The host's word on who plays in the match, once heard (forgotten when the match is abandoned
/// or we leave the lobby, so that a new match can start).
#[derive(Resource, Default, Debug)]
pub(crate) struct Plan {
    pub(super) players: Option<Vec<PeerId>>,
    /// When we took the plan (a player waits for its links to the others from then on).
    pub(super) since: Option<Instant>,
    /// A match of this lobby was abandoned: the next one starts when the game asks
    /// ([`StartRollback`]), not by itself.
    pub(super) abandoned: bool,
}

impl Plan {
    /// Takes the host's plan.
    pub(super) fn take(&mut self, players: Vec<PeerId>) {
        self.players = Some(players);
        self.since = Some(Instant::now());
    }
}

/// Whether each player's input was predicted in the newest frame we simulated
/// ([`RollbackStats::newest_frame`]).
#[derive(Resource, Default, Debug)]
pub(crate) struct NewestInputs {
    pub(super) predicted: Vec<bool>,
}

/// The players that are going: what we agree on with the other players, and what waits to be
/// disconnected from the GGRS session.
#[derive(Resource, Default, Debug)]
pub(crate) struct Departing {
    /// Agreements on gone players' last inputs.
    pub(super) agree: Departures,
    /// Agreed (handle, last input): disconnected once our frame is not one past it.
    pub(super) agreed: Vec<(usize, i32)>,
    /// Gone while we were the only other player left: nobody to agree with.
    pub(super) alone: Vec<usize>,
    /// Since when we hold the other players' GGRS packets back.
    pub(super) holding: Option<Instant>,
    /// Players GGRS has not heard from for a while, and since when it tells so.
    pub(super) silent: Vec<(usize, Instant)>,
    /// Players that said they are in the background ([`AwayNotice`](super::AwayNotice)): their
    /// silence may last `away_timeout`. One entry per player of the match at most.
    pub(super) away: Vec<usize>,
    /// Players back from the background, and when they said so. One entry per player at most.
    pub(super) back: Vec<(usize, Instant)>,
    /// Players another player ended the match over ([`Abandoning`](super::Abandoning)): once we
    /// see one of them go, we end it too. One entry per player of the match at most.
    pub(super) abandoned_over: Vec<usize>,
}
