//! Server counters, served as Prometheus/OpenMetrics text by `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Reason = [(&'static str, &'static str); 1];

/// Why a signal was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The receiver is not in the sender's room.
    NotInRoom,
    /// Star room: two clients may not signal each other.
    NotIntroduced,
    /// The websocket message was not a matchbox request in JSON.
    MalformedRequest,
    /// The payload was not a well-formed `PeerSignal` (bad SDP or ICE candidate).
    InvalidSignal,
    /// The sender exceeded its signal rate.
    RateLimited,
    /// A kick from a peer that is not its room's host.
    NotHost,
    /// The rooms shared through Redis could not be reached.
    Unavailable,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotInRoom => "not_in_room",
            DropReason::NotIntroduced => "not_introduced",
            DropReason::MalformedRequest => "malformed_request",
            DropReason::InvalidSignal => "invalid_signal",
            DropReason::RateLimited => "rate_limited",
            DropReason::NotHost => "not_host",
            DropReason::Unavailable => "unavailable",
        }
    }
}

/// Why a connection was refused or closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// The room holds as many peers as its capacity.
    RoomFull,
    /// The URL's query parameters were invalid.
    BadRequest,
    /// The server holds as many connections as it may.
    ServerFull,
    /// The client's address holds as many connections as one address may.
    AddressFull,
    /// No valid join token.
    Unauthorized,
    /// Kicked by its room's host or the operator: the connection was closed.
    Kicked,
    /// Banned from the room for a while after a kick.
    Banned,
    /// A websocket message above the frame limit.
    FrameTooLarge,
    /// Too many dropped signals (flood or garbage): the connection was closed.
    Abuse,
    /// Its queue filled while it did not read: the connection was closed.
    SlowReader,
    /// Silent past the idle timeout: the connection was closed.
    Idle,
    /// A resume token that is forged, for another room, or whose place is gone.
    Resume,
    /// The rooms shared through Redis could not be reached or changed.
    Unavailable,
}

impl RefusalReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::RoomFull => "room_full",
            RefusalReason::BadRequest => "bad_request",
            RefusalReason::ServerFull => "server_full",
            RefusalReason::AddressFull => "address_full",
            RefusalReason::Unauthorized => "unauthorized",
            RefusalReason::Kicked => "kicked",
            RefusalReason::Banned => "banned",
            RefusalReason::FrameTooLarge => "frame_too_large",
            RefusalReason::Abuse => "abuse",
            RefusalReason::SlowReader => "slow_reader",
            RefusalReason::Idle => "idle",
            RefusalReason::Resume => "resume",
            RefusalReason::Unavailable => "unavailable",
        }
    }
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open websocket peers (joined a room).
    pub connections: Gauge,
    /// Rooms held.
    pub rooms: Gauge,
    /// Peers that joined a room.
    pub joins: Counter,
    /// Peers that left a room.
    pub leaves: Counter,
    /// Hosts promoted because the previous host left.
    pub host_changes: Counter,
    /// Signals relayed to their receiver.
    pub signals_relayed: Counter,
    /// Peers that came back to their place with a resume token.
    pub resumes: Counter,
    /// Places held for peers whose connection dropped (waiting for them to resume).
    pub held: Gauge,
    signals_dropped: Family<Reason, Counter>,
    refusals: Family<Reason, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("huddle");
        let connections = Gauge::default();
        let rooms = Gauge::default();
        let joins = Counter::default();
        let leaves = Counter::default();
        let host_changes = Counter::default();
        let signals_relayed = Counter::default();
        let resumes = Counter::default();
        let held = Gauge::default();
        let signals_dropped = Family::<Reason, Counter>::default();
        let refusals = Family::<Reason, Counter>::default();
        registry.register("connections", "Open peer websockets", connections.clone());
        registry.register("rooms", "Rooms held", rooms.clone());
        registry.register("joins", "Peers that joined a room", joins.clone());
        registry.register("leaves", "Peers that left a room", leaves.clone());
        registry.register(
            "host_changes",
            "Hosts promoted after the previous host left",
            host_changes.clone(),
        );
        registry.register(
            "signals_relayed",
            "Signals relayed to their receiver",
            signals_relayed.clone(),
        );
        registry.register(
            "resumes",
            "Peers that came back to their place with a resume token",
            resumes.clone(),
        );
        registry.register(
            "held",
            "Places held for peers whose connection dropped",
            held.clone(),
        );
        registry.register(
            "signals_dropped",
            "Signals not relayed, by reason",
            signals_dropped.clone(),
        );
        registry.register(
            "refusals",
            "Connections refused or closed by the server, by reason",
            refusals.clone(),
        );
        // Every reason appears from the start, at zero, so dashboards see the series.
        for r in [
            DropReason::NotInRoom,
            DropReason::NotIntroduced,
            DropReason::MalformedRequest,
            DropReason::InvalidSignal,
            DropReason::RateLimited,
            DropReason::NotHost,
            DropReason::Unavailable,
        ] {
            let _ = signals_dropped.get_or_create(&[("reason", r.as_str())]);
        }
        for r in [
            RefusalReason::RoomFull,
            RefusalReason::BadRequest,
            RefusalReason::ServerFull,
            RefusalReason::AddressFull,
            RefusalReason::Unauthorized,
            RefusalReason::Kicked,
            RefusalReason::Banned,
            RefusalReason::FrameTooLarge,
            RefusalReason::Abuse,
            RefusalReason::SlowReader,
            RefusalReason::Idle,
            RefusalReason::Resume,
            RefusalReason::Unavailable,
        ] {
            let _ = refusals.get_or_create(&[("reason", r.as_str())]);
        }
        Self {
            registry,
            connections,
            rooms,
            joins,
            leaves,
            host_changes,
            signals_relayed,
            resumes,
            held,
            signals_dropped,
            refusals,
        }
    }
}

impl Metrics {
    /// Counts a dropped signal.
    pub fn dropped(&self, reason: DropReason) {
        self.signals_dropped
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// Counts a refused or closed connection.
    pub fn refused(&self, reason: RefusalReason) {
        self.refusals
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// Signals dropped for `reason` so far.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.signals_dropped
            .get_or_create(&[("reason", reason.as_str())])
            .get()
    }

    /// Connections refused or closed for `reason` so far.
    pub fn refused_count(&self, reason: RefusalReason) -> u64 {
        self.refusals
            .get_or_create(&[("reason", reason.as_str())])
            .get()
    }

    /// The metrics in OpenMetrics text format (which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_reasons() {
        let m = Metrics::default();
        m.dropped(DropReason::NotInRoom);
        m.dropped(DropReason::NotInRoom);
        m.refused(RefusalReason::RoomFull);
        m.joins.inc();
        let text = m.render();
        assert!(
            text.contains(r#"huddle_signals_dropped_total{reason="not_in_room"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"huddle_refusals_total{reason="room_full"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"huddle_refusals_total{reason="abuse"} 0"#),
            "{text}"
        );
        assert!(text.contains("huddle_joins_total 1"), "{text}");
        assert_eq!(m.dropped_count(DropReason::NotInRoom), 2);
    }
}
