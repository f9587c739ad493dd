//! The lobby demo's voice and camera (native): every player speaks and shows its camera, a voice
//! fades with the distance between squares (proximity chat), and headless runs print what each
//! player hears (frequency, level) and sees (frame index). Without a microphone or camera in the
//! loop the sources are synthetic: a tone per player and a test pattern.

use crate::lobby::Squares;
use bevy::prelude::*;
use bevy_huddle::media::{
    proximity_volume, tone, CameraSource, LocalMedia, MicSource, RemoteMedia, SineWave, TestPattern,
};
use bevy_huddle::prelude::*;
use std::collections::BTreeMap;

/// Voice and camera for the lobby demo.
pub struct LobbyMedia {
    /// The tone this player speaks, in Hz.
    pub tone: f32,
    /// Start the microphone and the camera at once (headless runs; the window toggles them).
    pub autostart: bool,
}

/// What this player hears and sees of each peer, refreshed once a second.
#[derive(Resource, Default, Debug)]
pub struct Heard(pub BTreeMap<PeerId, Hearing>);

/// One peer's voice and camera as received.
#[derive(Debug, Clone, Default)]
pub struct Hearing {
    /// The strongest frequency of its voice (Hz), if it was audible.
    pub frequency: Option<f32>,
    /// Its level (dBFS).
    pub level_db: f32,
    /// The index its test pattern shows, if a frame arrived.
    pub frame: Option<u32>,
}

/// The microphone's tone, for toggling.
#[derive(Resource, Clone, Copy)]
pub struct Voice(pub f32);

impl Plugin for LobbyMedia {
    fn build(&self, app: &mut App) {
        app.insert_resource(Voice(self.tone))
            .init_resource::<Heard>()
            .add_systems(Update, (proximity, listen));
        if self.autostart {
            app.add_systems(
                Startup,
                |mut media: ResMut<LocalMedia>, voice: Res<Voice>| {
                    toggle_microphone(&mut media, voice.0);
                    toggle_camera(&mut media);
                },
            );
        }
    }
}

/// Starts the microphone (a tone) or stops it.
pub fn toggle_microphone(media: &mut LocalMedia, tone: f32) {
    if media.tracks().audio {
        media.stop_microphone();
    } else {
        media.start_microphone(MicSource::SineWave(SineWave::new(tone, 0.3)));
    }
}

/// Starts the camera (a test pattern) or stops it.
pub fn toggle_camera(media: &mut LocalMedia) {
    if media.tracks().video {
        media.stop_camera();
    } else {
        media.start_camera(CameraSource::TestPattern(TestPattern::new(160, 120, 15)));
    }
}

/// A voice is full within 150 units of our square and silent past 600.
fn proximity(squares: Res<Squares>, roster: Res<Roster>, mut remote: ResMut<RemoteMedia>) {
    let Some(me) = roster.me.and_then(|me| squares.0.get(&me)).copied() else {
        return;
    };
    let peers: Vec<PeerId> = remote.peers().collect();
    for peer in peers {
        if let Some(at) = squares.0.get(&peer) {
            let distance = (at.x - me.x).hypot(at.y - me.y);
            remote.set_volume(peer, proximity_volume(distance, 150.0, 600.0));
        }
    }
}

/// Gathers each peer's voice for a second, then reads its tone and its latest frame.
fn listen(
    remote: Res<RemoteMedia>,
    time: Res<Time>,
    mut pcm: Local<BTreeMap<PeerId, Vec<f32>>>,
    mut last: Local<f32>,
    mut heard: ResMut<Heard>,
) {
    for peer in remote.peers() {
        if let Some(voice) = remote.audio(peer) {
            pcm.entry(peer).or_default().extend(voice.take_pcm());
        }
    }
    if time.elapsed_secs() - *last < 1.0 {
        return;
    }
    *last = time.elapsed_secs();
    heard.0.clear();
    for peer in remote.peers() {
        let samples = pcm.remove(&peer).unwrap_or_default();
        let level_db = tone::rms_db(&samples);
        let frequency = (level_db > -50.0).then(|| tone::peak_frequency(&samples, 100.0, 1000.0));
        let frame = remote
            .video(peer)
            .and_then(|v| v.latest_frame())
            .and_then(|f| TestPattern::read_index(&f));
        heard.0.insert(
            peer,
            Hearing {
                frequency,
                level_db,
                frame,
            },
        );
    }
    pcm.clear();
}
