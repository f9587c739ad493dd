//! A link conditioner in the plugin's send path: added latency, jitter and loss per channel, set
//! at runtime through the [`LinkConditioner`] resource. Works natively and in the browser (the
//! delays themselves are [`huddle_protocol::conditioner`]'s).

use bevy::prelude::Resource;
pub use huddle_protocol::conditioner::Conditions;

/// Conditions applied to what this peer sends; `None` sends untouched. Change it any time.
#[derive(Resource, Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConditioner {
    /// The reliable game channel.
    pub reliable: Option<Conditions>,
    /// The unreliable game channel, the raw (GGRS) channel, and pings (so RTT and loss show the
    /// conditions).
    pub unreliable: Option<Conditions>,
    /// The voices this peer *receives* (feature `media`): RTP packets are lost, delayed and
    /// reordered before the jitter buffer, which must then conceal and reorder them.
    pub media: Option<Conditions>,
}

impl LinkConditioner {
    /// The same conditions on both channels.
    pub fn both(conditions: Conditions) -> Self {
        Self {
            reliable: Some(conditions),
            unreliable: Some(conditions),
            media: None,
        }
    }
}
