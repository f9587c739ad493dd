//! The data channels of a link, by name. matchbox negotiates channels by index, so the list is
//! the same in every build, whatever features are on.

/// Largest data channel message matchbox/webrtc deliver (larger ones vanish silently).
pub const MAX_DATA_CHANNEL_MESSAGE: usize = 65_536;

/// One data channel of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Reliable, ordered: the plugin's own protocol (hellos, succession, acknowledgements).
    Control,
    /// Reliable, ordered: game messages on the reliable channel.
    Reliable,
    /// Unreliable, unordered: game messages on the unreliable channel, and pings.
    Unreliable,
    /// Unreliable, unordered, opaque bytes for an engine of the game's (GGRS): the endpoint only
    /// checks that the peer is in the lobby.
    Raw,
}

impl Lane {
    /// Every lane, in channel index order.
    pub const ALL: [Lane; 4] = [Lane::Control, Lane::Reliable, Lane::Unreliable, Lane::Raw];

    /// The data channel index of this lane.
    pub fn index(self) -> usize {
        match self {
            Lane::Control => 0,
            Lane::Reliable => 1,
            Lane::Unreliable => 2,
            Lane::Raw => 3,
        }
    }

    /// Whether the channel retransmits and keeps order.
    pub fn is_reliable(self) -> bool {
        matches!(self, Lane::Control | Lane::Reliable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_the_channel_list() {
        for (i, lane) in Lane::ALL.into_iter().enumerate() {
            assert_eq!(lane.index(), i);
        }
        assert!(Lane::Control.is_reliable() && !Lane::Raw.is_reliable());
    }
}
