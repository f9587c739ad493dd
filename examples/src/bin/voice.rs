//! Voice chat: join a room, speak (a tone of PITCH Hz here; `MicSource::Push` takes a game's own
//! samples), hear everyone, and print who is speaking at what pitch. Native, feature `media`.
//! `cargo run -p huddle_examples --bin voice [ROOM_URL [PITCH [SECONDS]]]` in two terminals.
#[cfg(not(target_arch = "wasm32"))]
fn main() {
    native::main();
}

/// Media is native only so far: the page build has no voice example.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use bevy::app::ScheduleRunnerPlugin;
    use bevy::prelude::*;
    use bevy_huddle::media::{tone, LocalMedia, MediaSettings, MicSource, RemoteMedia, SineWave};
    use bevy_huddle::prelude::*;
    use std::time::Duration;

    pub fn main() {
        let mut args = std::env::args().skip(1);
        let room = args.next().unwrap_or("ws://127.0.0.1:3536/voice".into());
        let pitch: f32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(440.0);
        let stay: Option<f32> = args.next().and_then(|s| s.parse().ok());
        let mut config = HuddleConfig::room(room);
        config.media = MediaSettings::on();
        App::new()
            .add_plugins(
                MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(16))),
            )
            .add_plugins(bevy::log::LogPlugin {
                filter: bevy_huddle::LOG_FILTER.into(),
                ..Default::default()
            })
            .add_plugins(HuddlePlugin::new(config))
            .add_systems(Startup, move |mut media: ResMut<LocalMedia>| {
                media.start_microphone(MicSource::SineWave(SineWave::new(pitch, 0.3)));
            })
            .add_systems(Update, listen)
            .add_systems(
                Last,
                move |time: Res<Time>, mut exit: MessageWriter<AppExit>| {
                    if stay.is_some_and(|s| time.elapsed_secs() > s) {
                        exit.write(AppExit::Success);
                    }
                },
            )
            .run();
    }

    /// Reads every voice; once a second says who speaks at what pitch.
    fn listen(
        remote: Res<RemoteMedia>,
        time: Res<Time>,
        mut heard: Local<Vec<(PeerId, Vec<f32>)>>,
    ) {
        for peer in remote.peers() {
            let Some(voice) = remote.audio(peer) else {
                continue;
            };
            match heard.iter_mut().find(|(p, _)| *p == peer) {
                Some((_, pcm)) => pcm.extend(voice.take_pcm()),
                None => heard.push((peer, voice.take_pcm())),
            }
        }
        if time.elapsed_secs().fract() < time.delta_secs() {
            for (peer, pcm) in heard.drain(..).filter(|(_, pcm)| tone::rms_db(pcm) > -50.0) {
                let pitch = tone::peak_frequency(&pcm, 100.0, 1000.0);
                info!("{peer} speaks at {pitch:.0} Hz");
            }
        }
    }
}
