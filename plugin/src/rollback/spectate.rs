//! Spectating: a spectator replays the final inputs a player feeds it, paced so it never steps
//! past them, and catches up when behind; players serve the feed.

use super::snapshot::{self, Owed, SnapshotRequest, SnapshotWait};
use super::socket::codec;
use super::RollbackSettings;
use super::{FeedFrames, FeedRequest, InputLog, RollbackMatch, RollbackPhase, RollbackStats};
use crate::messages::{Incoming, Outgoing, PeerLeft};
use crate::session::HuddleSession;
use bevy::ecs::schedule::ScheduleLabel;
use bevy::platform::collections::HashMap;
use bevy::prelude::*;
use bevy_ggrs::{LocalInputs, ReadInputs, RollbackFrameCount, RollbackFrameRate, Session};
use ggrs::Config;
use matchbox_socket::PeerId;

/// The spectators we feed: peer -> (players it expects, next frame to send).
#[derive(Default, Debug)]
pub(crate) struct Subscribers(HashMap<PeerId, (usize, i32)>);

/// Spectators fed at most (more requests are ignored until one leaves).
const MAX_SUBSCRIBERS: usize = 64;
/// Feed batches sent to one spectator per update at most: a spectator catching up steps 4x at
/// most, far below this, and a request for the whole log is spread over updates instead of
/// queueing hundreds of reliable messages at once.
const BATCHES_PER_UPDATE: usize = 8;

impl Subscribers {
    /// A feed request from `from` for frames from `first` on, expecting `players`. Players of
    /// our match feed themselves and are refused; a repeated request cannot wind a feed back
    /// (a spectator asks once per feeder, from the first frame it lacks). Whether it was taken.
    fn request(&mut self, from: PeerId, players: usize, first: i32, ours: &[PeerId]) -> bool {
        if ours.contains(&from) {
            return false;
        }
        let first = first.max(1);
        let room = self.0.len() < MAX_SUBSCRIBERS;
        match self.0.get_mut(&from) {
            Some((expects, next)) => {
                *expects = players;
                *next = (*next).max(first);
            }
            None if room => {
                self.0.insert(from, (players, first));
            }
            None => return false,
        }
        true
    }
}

/// The game's `ReadInputs` schedule, set aside while we watch.
#[derive(Resource)]
struct GameReadInputs(Schedule);

/// Run condition of bevy_ggrs's systems: a spectator may only step when the feed holds every
/// frame this update can step (bevy_ggrs steps `delta / frame time` frames, rounded down, plus
/// one at most).
pub(crate) fn spectator_has_inputs(
    m: Res<RollbackMatch>,
    log: Res<InputLog>,
    frame: Option<Res<RollbackFrameCount>>,
    rate: Option<Res<RollbackFrameRate>>,
    time: Res<Time>,
) -> bool {
    if m.phase != RollbackPhase::Spectating {
        return true;
    }
    let fps = rate.map(|r| r.0).unwrap_or(60).max(1) as f64;
    let steps = (time.delta_secs_f64() * fps).floor() as i32 + 1;
    let at = frame.map(|f| f.0).unwrap_or(0);
    log.last_final() - at >= steps
}

/// A spectator has no inputs of its own: its `ReadInputs` replays the feed instead of the game's.
pub(super) fn set_aside_read_inputs<C: Config<Address = PeerId>>(world: &mut World) {
    let mut replay = Schedule::new(ReadInputs);
    replay.add_systems(replay_inputs::<C>);
    replace_read_inputs(world, replay);
}

/// Sets the game's `ReadInputs` aside (once: it stays aside until
/// [`restore_read_inputs`]) and runs `replacement` instead.
pub(super) fn replace_read_inputs(world: &mut World, replacement: Schedule) {
    let mut schedules = world.resource_mut::<Schedules>();
    let current = schedules
        .remove(ReadInputs.intern())
        .unwrap_or_else(|| Schedule::new(ReadInputs));
    schedules.insert(replacement);
    if !world.contains_resource::<GameReadInputs>() {
        world.insert_resource(GameReadInputs(current));
    }
}

/// Runs the game's `ReadInputs`, set aside by [`replace_read_inputs`].
pub(super) fn run_game_read_inputs(world: &mut World) {
    if world.contains_resource::<GameReadInputs>() {
        world.resource_scope(|world, mut game: Mut<GameReadInputs>| game.0.run(world));
    }
}

/// `ReadInputs` of a spectator: every player's inputs of the next frame, from the log.
pub(super) fn replay_inputs<C: Config<Address = PeerId>>(
    mut commands: Commands,
    frame: Res<RollbackFrameCount>,
    log: Res<InputLog>,
    state: Res<RollbackMatch>,
    mut stats: ResMut<RollbackStats>,
) {
    let players = state.players.len();
    let decoded = log.get(frame.0 + 1).and_then(|bytes| {
        bincode::serde::decode_from_slice::<Vec<C::Input>, _>(bytes, codec())
            .ok()
            .map(|(inputs, _)| inputs)
            .filter(|inputs| inputs.len() == players)
    });
    let inputs = decoded.unwrap_or_else(|| {
        // Cannot happen while `spectator_has_inputs` paces us; bevy_ggrs needs inputs anyway.
        stats.spectator_starved += 1;
        vec![C::Input::default(); players]
    });
    commands.insert_resource(LocalInputs::<C>(inputs.into_iter().enumerate().collect()));
}

/// A spectator takes in the feed, keeps a player feeding it (the first one still in the match:
/// every player keeps the whole log; after a host change the host may be a spectator), and
/// catches up: while far behind, the app's virtual clock runs up to 4x so bevy_ggrs steps several
/// frames an update. A player that does not answer the snapshot request in time and that we
/// have no link to (gone before we came: the plan we were told still names it) is passed over
/// for the next one.
#[allow(clippy::too_many_arguments)]
pub(crate) fn follow_feed(
    mut state: ResMut<RollbackMatch>,
    huddle: Option<Res<HuddleSession>>,
    mut frames: MessageReader<Incoming<FeedFrames>>,
    mut feed: MessageWriter<Outgoing<FeedRequest>>,
    mut log: ResMut<InputLog>,
    frame: Option<Res<RollbackFrameCount>>,
    mut time: ResMut<Time<Virtual>>,
    (mut wait, mut ask): (
        ResMut<SnapshotWait>,
        MessageWriter<Outgoing<SnapshotRequest>>,
    ),
) {
    if state.phase != RollbackPhase::Spectating {
        frames.clear();
        return;
    }
    for batch in frames.read() {
        if Some(batch.from) != state.feeder {
            continue;
        }
        let FeedFrames {
            epoch,
            first,
            frames,
        } = batch.message.clone();
        if epoch != state.epoch {
            // Frames of a session before (or after) a resync we took (or will take).
            continue;
        }
        if !log.receive(first, frames) {
            debug!("huddle: a feed batch out of order from {}", batch.from);
        }
    }
    let unanswered = wait.reply.is_none()
        && wait
            .since
            .is_some_and(|t| t.elapsed() >= snapshot::SNAPSHOT_WAIT);
    let linked = |p: PeerId| huddle.as_deref().is_some_and(|h| h.peers().contains(&p));
    if let (Some(asked), true) = (wait.asked, unanswered) {
        // Gone before we came: the next player is asked below.
        if linked(asked) || !wait.pass_over(asked, &mut state) {
            // No answer to our snapshot request: the feed from the first frame instead.
            wait.asked = None;
            wait.since = None;
            wait.owed = Some(Owed::Feed(asked));
        }
    }
    let feeder = state
        .remaining()
        .map(|(_, p)| p)
        .find(|p| !wait.passed_over.contains(p));
    if let Some(player) = feeder.filter(|p| Some(*p) != state.feeder) {
        state.feeder = Some(player);
        if wait.asked.is_some() {
            // Still waiting for a snapshot: the next feeder gives it.
            snapshot::ask(&mut wait, player);
        } else {
            wait.owed = Some(Owed::Feed(player));
        }
    }
    // What we owe a player goes once our link to it is up (a request to a peer we are not
    // linked to yet would be refused: the spectator waited for nothing, then replayed).
    let players = u32::try_from(state.players.len()).unwrap_or(u32::MAX);
    match wait.owed {
        Some(Owed::Snapshot(player)) if linked(player) => {
            wait.owed = None;
            // Its time to answer counts from now.
            wait.since = Some(web_time::Instant::now());
            ask.write(Outgoing::to_peer(player, SnapshotRequest { players }));
        }
        Some(Owed::Feed(player)) if linked(player) => {
            wait.owed = None;
            let from = log.last_final() + 1;
            feed.write(Outgoing::to_peer(player, FeedRequest { players, from }));
        }
        _ => {}
    }
    let behind = log.last_final() - frame.map_or(0, |f| f.0);
    // Faster the further behind, never slower than the players: a spectator steps only frames
    // it holds (`spectator_has_inputs`), so it closes in on the feed instead of keeping the lag
    // it had when it came within reach.
    let speed = (1.0 + behind as f32 / 15.0).clamp(1.0, 4.0);
    if (time.relative_speed() - speed).abs() > 0.05 {
        time.set_relative_speed(speed);
    }
}

/// Puts the game's `ReadInputs` back (after watching).
pub(super) fn restore_read_inputs(world: &mut World) {
    if let Some(GameReadInputs(game)) = world.remove_resource::<GameReadInputs>() {
        world.resource_mut::<Schedules>().insert(game);
    }
}

/// The newest frame (bevy_ggrs numbering) whose inputs of ours every other remaining player has
/// acknowledged. Our final frames past it must not reach a spectator: we hold our own input of a
/// frame at once, the others only once it arrives, and if we vanished before it did, they play
/// that frame with our input as disconnected, not as we sent it.
///
/// GGRS keeps our inputs a player has not acknowledged (`send_queue_len`); our newest input is
/// for GGRS frame `current + input_delay - 1` (one more at a stall, which only makes this lower
/// than it could be). GGRS frame `g`'s inputs run in bevy_ggrs frame `g + 1`.
pub(super) fn held_by_all<C: Config<Address = PeerId>>(
    p2p: &ggrs::P2PSession<C>,
    state: &RollbackMatch,
    input_delay: usize,
) -> i32 {
    let newest = state
        .frame_offset
        .saturating_add(p2p.current_frame())
        .saturating_add(input_delay as i32 - 1);
    p2p.remote_player_handles()
        .into_iter()
        .filter(|h| !state.disconnected.contains(h))
        .map(|h| match p2p.network_stats(h) {
            Ok(stats) => newest.saturating_sub(stats.send_queue_len as i32) + 1,
            // No stats in the first second: nothing is known to be held yet.
            Err(_) => 0,
        })
        .min()
        .unwrap_or(i32::MAX)
}

/// Sends each subscribed spectator the final frames it has not had yet (and every other player
/// holds our inputs of, see [`held_by_all`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn serve_feed<C: Config<Address = PeerId>>(
    mut requests: MessageReader<Incoming<FeedRequest>>,
    state: Res<RollbackMatch>,
    log: Res<InputLog>,
    session: Option<Res<Session<C>>>,
    settings: Res<RollbackSettings>,
    (mut subscribers, mut epoch): (Local<Subscribers>, Local<u32>),
    mut out: MessageWriter<Outgoing<FeedFrames>>,
    mut left: MessageReader<PeerLeft>,
) {
    for gone in left.read() {
        subscribers.0.remove(&gone.peer);
    }
    for request in requests.read() {
        // A request may come before our match started: keep it.
        let players = request.message.players as usize;
        let taken =
            subscribers.request(request.from, players, request.message.from, &state.players);
        if !taken {
            debug!("huddle: a feed request from {} refused", request.from);
        }
    }
    // Only players keep a log, and only of a match of the size the spectator expects.
    let (RollbackPhase::Playing, Some(Session::P2P(p2p))) = (state.phase, session.as_deref())
    else {
        return;
    };
    let upto = held_by_all(p2p, &state, settings.input_delay);
    if *epoch != state.epoch {
        // A resync: our log starts after its snapshot, and every spectator took it too.
        *epoch = state.epoch;
        let first = state.frame_offset.saturating_add(1);
        for (_, next) in subscribers.0.values_mut() {
            *next = (*next).min(first);
        }
    }
    // Someone who asked before the match started and turned out to play feeds itself.
    subscribers
        .0
        .retain(|peer, _| !state.players.contains(peer));
    for (peer, (players, next)) in subscribers.0.iter_mut() {
        if *players != state.players.len() {
            continue;
        }
        for _ in 0..BATCHES_PER_UPDATE {
            let Some((first, frames)) = log.batch_from(*next, upto) else {
                break;
            };
            *next = first.saturating_add(frames.len() as i32);
            out.write(Outgoing::to_peer(
                *peer,
                FeedFrames {
                    epoch: state.epoch,
                    first,
                    frames,
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollback::test_peer as peer;

    /// A player cannot subscribe, a repeated request cannot rewind the feed, and the set of
    /// subscribers is bounded.
    #[test]
    fn feed_requests_are_checked() {
        let mut subs = Subscribers::default();
        let players = [peer(1), peer(2)];
        assert!(!subs.request(peer(1), 2, 1, &players), "a player");
        assert!(subs.request(peer(9), 2, 500, &players));
        assert!(subs.request(peer(9), 2, 1, &players), "asked again");
        assert_eq!(subs.0.get(&peer(9)), Some(&(2, 500)), "not wound back");
        assert!(subs.request(peer(9), 2, i32::MIN, &players));
        assert_eq!(subs.0.get(&peer(9)), Some(&(2, 500)));
        for n in 10..200 {
            subs.request(peer(n), 2, 1, &players);
        }
        assert_eq!(subs.0.len(), MAX_SUBSCRIBERS);
        assert!(!subs.request(peer(1000), 2, 1, &players), "full");
    }
}
