//! The remote tracks' decoding threads, by the peer whose tracks they are, across media
//! connections: when a star's host leaves, the next host forwards the same voices and cameras
//! on new connections, and they feed the threads that already play them. The game sees no end
//! and no new start of a track that did not really restart (its `RemoteAudio` and voice asset
//! stay the same); the jitter buffer takes the new numbering as a jump.
//!
//! Keys come from the connection's peer and from stream ids a host names: at most
//! [`MAX_PUBLISHERS`], and the driver keeps only lobby members.

use super::local::lock;
use super::remote::{AvSync, Inlet, RemoteAudio, RemoteVideo, VoicePacket};
use matchbox_socket::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Publishers kept at most.
pub(crate) const MAX_PUBLISHERS: usize = 128;

type Voice = (Inlet<VoicePacket>, Arc<RemoteAudio>);
type Camera = (Inlet<rtc::rtp::Packet>, Arc<RemoteVideo>);

/// One publisher's threads.
#[derive(Default)]
struct Kept {
    sync: Arc<AvSync>,
    audio: Option<Voice>,
    video: Option<Camera>,
}

/// Every publisher's decoding threads, shared by all media connections.
#[derive(Default)]
pub(crate) struct Decoders {
    kept: Mutex<HashMap<PeerId, Kept>>,
}

impl Decoders {
    /// `origin`'s voice thread: the one that plays it already, or a new one from `spawn`.
    /// `None` when full of other publishers.
    pub(crate) fn audio(
        &self,
        origin: PeerId,
        spawn: impl FnOnce(Arc<AvSync>) -> Voice,
    ) -> Option<(Voice, Arc<AvSync>)> {
        let mut kept = lock(&self.kept);
        let entry = Self::entry(&mut kept, origin)?;
        let sync = entry.sync.clone();
        let voice = entry
            .audio
            .get_or_insert_with(|| spawn(sync.clone()))
            .clone();
        Some((voice, sync))
    }

    /// `origin`'s camera thread, as [`Self::audio`].
    pub(crate) fn video(
        &self,
        origin: PeerId,
        spawn: impl FnOnce(Arc<AvSync>) -> Camera,
    ) -> Option<(Camera, Arc<AvSync>)> {
        let mut kept = lock(&self.kept);
        let entry = Self::entry(&mut kept, origin)?;
        let sync = entry.sync.clone();
        let camera = entry
            .video
            .get_or_insert_with(|| spawn(sync.clone()))
            .clone();
        Some((camera, sync))
    }

    fn entry(kept: &mut HashMap<PeerId, Kept>, origin: PeerId) -> Option<&mut Kept> {
        if !kept.contains_key(&origin) && kept.len() >= MAX_PUBLISHERS {
            return None;
        }
        Some(kept.entry(origin).or_default())
    }

    /// Ends `origin`'s threads (once the connections that fed them are gone too).
    pub(crate) fn forget(&self, origin: PeerId) {
        lock(&self.kept).remove(&origin);
    }

    /// Keeps only the publishers `keep` says.
    pub(crate) fn retain(&self, keep: impl Fn(&PeerId) -> bool) {
        lock(&self.kept).retain(|origin, _| keep(origin));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::remote::{spawn_audio, spawn_video};
    use huddle_media::echo::FarEnd;

    fn peer(i: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(i))
    }

    #[test]
    fn a_publisher_keeps_its_threads_and_strangers_are_bounded() {
        let decoders = Decoders::default();
        let far = Arc::new(FarEnd::default());
        let spawn = |sync| spawn_audio(Default::default(), far.clone(), sync);
        let (first, _) = decoders.audio(peer(1), spawn).expect("room");
        let (again, _) = decoders.audio(peer(1), spawn).expect("room");
        assert!(Arc::ptr_eq(&first.1, &again.1), "the same voice");
        let (camera, _) = decoders.video(peer(1), spawn_video).expect("room");
        for i in 2..=MAX_PUBLISHERS as u128 {
            assert!(decoders.video(peer(i), spawn_video).is_some());
        }
        assert!(decoders.video(peer(100_000), spawn_video).is_none());
        decoders.retain(|p| *p == peer(1));
        assert!(decoders.video(peer(100_000), spawn_video).is_some());
        let (still, _) = decoders.video(peer(1), spawn_video).expect("room");
        assert!(Arc::ptr_eq(&camera.1, &still.1));
        decoders.forget(peer(1));
        let (new, _) = decoders.audio(peer(1), spawn).expect("room");
        assert!(!Arc::ptr_eq(&first.1, &new.1), "forgotten: a new voice");
    }
}
