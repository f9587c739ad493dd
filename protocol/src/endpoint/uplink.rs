//! Upload probes ([`crate::uplink`]): as host, each member's headroom measured (on joining, then
//! every `REMEASURE`) and given to the election; as member, a train sent when the host asks.

use super::Endpoint;
use crate::control::Control;
use crate::lane::Lane;
use crate::uplink::{probe_train, MeterOutput};
use matchbox_protocol::PeerId;
use std::time::Duration;

impl Endpoint {
    /// As host with `host_by_upload`: queue members not measured lately, carry out the meter's
    /// asks, hand its measurements to the election. Otherwise forget every measurement.
    pub(super) fn probe_uploads(&mut self, now: Duration) {
        if !self.config.settings.host_by_upload || !self.hosting() {
            self.meter.clear();
            return;
        }
        for peer in &self.joined {
            if self.links.get(peer).is_some_and(|l| l.connected) {
                self.meter.want(*peer, now);
            }
        }
        while let Some(out) = self.meter.poll(now) {
            match out {
                MeterOutput::Ask { peer, id } => {
                    let ask = Control::UploadProbe { id }.encode();
                    self.send_now(Lane::Control, peer, ask);
                }
                MeterOutput::Measured {
                    peer,
                    bits_per_second,
                } => {
                    if let Some(link) = self.links.get_mut(&peer) {
                        link.stats.upload_headroom = Some(bits_per_second);
                    }
                    if let Some(e) = self.election.as_mut() {
                        let outs = e.upload_measured(peer, bits_per_second);
                        self.apply(outs);
                    }
                }
                MeterOutput::Failed { .. } => {}
            }
        }
    }

    /// A probe frame from `peer` over its own link.
    pub(super) fn probe_frame(&mut self, peer: PeerId, id: u32, index: u32, len: usize) {
        let before = self.meter.dropped();
        self.meter.frame(peer, id, index, len, self.now);
        self.counters.probes_dropped += self.meter.dropped() - before;
    }

    /// `peer` asks for probe train `id`: sent if it is our host and has not asked lately.
    pub(super) fn probe_asked(&mut self, peer: PeerId, id: u32, now: Duration) {
        if self.host() != Some(peer) || self.hosting() || !self.answerer.may_answer(peer, now) {
            self.counters.probes_dropped += 1;
            return;
        }
        for frame in probe_train(id) {
            self.send_now(Lane::Unreliable, peer, frame);
        }
    }
}
