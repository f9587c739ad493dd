//! Helpers for huddle's end-to-end tests: stock matchbox peers, raw websocket clients, and
//! bounded waits. The tests themselves live in `tests/`.
//!
//! WebRTC tests must run inside a network namespace with only loopback (see README): webrtc-rs
//! would otherwise use the machine's external interface.

use futures::{SinkExt, StreamExt};
use matchbox_protocol::PeerId;
use matchbox_socket::{ChannelConfig, PeerState, RtcIceServerConfig, WebRtcSocket};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use huddle_server;

pub mod apps;
pub mod browser;
pub mod cluster;
pub mod forged_media;
pub mod rollback;
pub mod tones;

/// Channel index of the reliable channel of [`StockPeer`]s.
pub const RELIABLE: usize = 0;
/// Channel index of the unreliable channel of [`StockPeer`]s.
pub const UNRELIABLE: usize = 1;

/// Sends logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=huddle_server=debug`).
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// Polls `check` every 10 ms until it returns true or `limit` passes; returns whether it did.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `fut` with a time limit, panicking with `what` when it runs out.
pub async fn bounded<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A server with default limits on an ephemeral loopback port.
pub fn server() -> huddle_server::RunningServer {
    server_with(huddle_server::ServerConfig::loopback())
}

/// A server with `config` (its bind address should be on loopback).
pub fn server_with(config: huddle_server::ServerConfig) -> huddle_server::RunningServer {
    init_logs();
    huddle_server::start(config).expect("server starts")
}

/// A runtime of one worker thread, for servers beside tests that are not async (Bevy apps).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A huddle_server on a runtime of its own, for tests that are not async (Bevy apps).
pub fn server_on_runtime() -> (tokio::runtime::Runtime, huddle_server::RunningServer) {
    server_with_on_runtime(huddle_server::ServerConfig::loopback())
}

/// [`server_on_runtime`] with `config`.
pub fn server_with_on_runtime(
    config: huddle_server::ServerConfig,
) -> (tokio::runtime::Runtime, huddle_server::RunningServer) {
    let rt = runtime();
    let server = {
        let _guard = rt.enter();
        server_with(config)
    };
    (rt, server)
}

/// A self-signed certificate for 127.0.0.1, written as PEM files under the temp directory (named
/// for `test`): `(certificate file, key file, certificate DER)`.
pub fn self_signed_tls(test: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("a certificate");
    let dir = std::env::temp_dir().join(format!("huddle-tls-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("cert written");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key written");
    (cert, key, certified.cert.der().to_vec())
}

/// Stock matchbox_signaling full-mesh server (what matchbox_server runs) on a runtime of its own.
pub fn stock_server_on_runtime() -> (tokio::runtime::Runtime, std::net::SocketAddr) {
    init_logs();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let addr = {
        let _guard = rt.enter();
        let mut server =
            matchbox_signaling::SignalingServer::full_mesh_builder(([127, 0, 0, 1], 0)).build();
        let addr = server.bind().expect("bind");
        rt.spawn(server.serve());
        addr
    };
    (rt, addr)
}

/// A stock matchbox_socket 0.15 peer (channel 0 reliable, channel 1 unreliable, no ICE servers),
/// with its message loop on a task.
pub struct StockPeer {
    /// The socket.
    pub socket: WebRtcSocket,
    task: JoinHandle<Result<(), matchbox_socket::Error>>,
    /// Peers currently connected.
    pub connected: BTreeSet<PeerId>,
    /// Messages received: (channel, sender, payload).
    pub inbox: Vec<(usize, PeerId, Vec<u8>)>,
}

impl StockPeer {
    /// Connects to `url` (e.g. `ws://127.0.0.1:port/room`).
    pub fn connect(url: &str) -> Self {
        Self::connect_with(
            url,
            &[ChannelConfig::reliable(), ChannelConfig::unreliable()],
        )
    }

    /// Connects with bevy_huddle's channel layout (control, reliable, unreliable, GGRS), to
    /// play a hostile peer in a huddle lobby.
    pub fn connect_huddle_layout(url: &str) -> Self {
        let r = ChannelConfig::reliable();
        let u = ChannelConfig::unreliable();
        Self::connect_with(url, &[r, r, u, u])
    }

    /// Connects with a channel list of its own.
    pub fn connect_with(url: &str, channels: &[ChannelConfig]) -> Self {
        let mut builder = WebRtcSocket::builder(url)
            .ice_server(RtcIceServerConfig {
                urls: vec![],
                username: None,
                credential: None,
            })
            .reconnect_attempts(Some(1));
        for c in channels {
            builder = builder.add_channel(*c);
        }
        let (socket, fut) = builder.build();
        Self {
            socket,
            task: tokio::spawn(fut),
            connected: BTreeSet::new(),
            inbox: Vec::new(),
        }
    }

    /// Picks up peer state changes and received messages.
    pub fn poll(&mut self) {
        if let Ok(changes) = self.socket.try_update_peers() {
            for (peer, state) in changes {
                match state {
                    PeerState::Connected => self.connected.insert(peer),
                    PeerState::Disconnected => self.connected.remove(&peer),
                };
            }
        }
        for ch in 0..4 {
            if let Ok(channel) = self.socket.get_channel_mut(ch) {
                for (from, packet) in channel.receive() {
                    self.inbox.push((ch, from, packet.to_vec()));
                }
            }
        }
    }

    /// The id the server assigned, once known.
    pub fn id(&mut self) -> Option<PeerId> {
        self.socket.id()
    }

    /// Sends `payload` to `peer` on channel `ch`.
    pub fn send(&mut self, ch: usize, peer: PeerId, payload: &[u8]) {
        if let Ok(channel) = self.socket.get_channel_mut(ch) {
            let _ = channel.try_send(payload.to_vec().into(), peer);
        }
    }

    /// Whether the message loop is still running (it ends on error or panic).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// How the message loop ended, if it has: `Err` carries a panic or the socket's error.
    pub async fn loop_result(self) -> Option<Result<(), String>> {
        if !self.task.is_finished() {
            self.task.abort();
            return None;
        }
        Some(match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("socket error: {e}")),
            Err(e) => Err(format!("message loop ended abnormally: {e}")),
        })
    }

    /// Leaves: stops the message loop, which closes the websocket and the peer connections.
    pub fn leave(self) {
        self.task.abort();
    }
}

/// Polls every peer until `done(peers)` or `limit`; returns whether `done` became true.
pub async fn settle(
    peers: &mut [StockPeer],
    limit: Duration,
    mut done: impl FnMut(&mut [StockPeer]) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        for p in peers.iter_mut() {
            p.poll();
        }
        if done(peers) {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every peer is connected to every other (a full mesh).
pub async fn full_mesh(peers: &mut [StockPeer], limit: Duration) -> bool {
    let n = peers.len();
    settle(peers, limit, |ps| {
        ps.iter().all(|p| p.connected.len() == n - 1)
    })
    .await
}

/// Sends one message from every peer to every other on both channels and checks that each
/// arrives with the right sender (see [`exchange`]).
pub async fn exchange_all(peers: &mut [StockPeer], limit: Duration) -> Result<(), String> {
    let n = peers.len();
    let links: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
        .collect();
    exchange(peers, &links, limit).await
}

/// For each `(from, to)` index pair, sends one message on each channel (repeating the unreliable
/// one until it arrives) and checks that it arrives at `to` with `from` as its sender.
pub async fn exchange(
    peers: &mut [StockPeer],
    links: &[(usize, usize)],
    limit: Duration,
) -> Result<(), String> {
    let ids: Vec<PeerId> = peers
        .iter_mut()
        .map(|p| p.id().ok_or("peer without id"))
        .collect::<Result<_, _>>()?;
    let payload = |ch: usize, from: PeerId, to: PeerId| format!("{ch}:{from}->{to}").into_bytes();
    for p in peers.iter_mut() {
        p.inbox.clear();
    }
    for &(i, j) in links {
        peers[i].send(RELIABLE, ids[j], &payload(RELIABLE, ids[i], ids[j]));
    }
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        for p in peers.iter_mut() {
            p.poll();
        }
        let mut missing = Vec::new();
        for &(i, j) in links {
            for ch in [RELIABLE, UNRELIABLE] {
                let want = payload(ch, ids[i], ids[j]);
                let arrived = peers[j]
                    .inbox
                    .iter()
                    .any(|(c, f, m)| *c == ch && *f == ids[i] && *m == want);
                if !arrived {
                    missing.push((i, j, ch));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("messages missing (from, to, channel): {missing:?}"));
        }
        // Unreliable messages may be lost: send again those not seen yet.
        for &(i, j, ch) in &missing {
            if ch == UNRELIABLE {
                peers[i].send(UNRELIABLE, ids[j], &payload(UNRELIABLE, ids[i], ids[j]));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw websocket client speaking the matchbox protocol by hand: for abuse tests.
pub struct RawClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The id the server assigned.
    pub id: PeerId,
}

impl RawClient {
    /// Connects and reads the `IdAssigned` event.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let connected = tokio_tungstenite::connect_async(url).await;
        Self::handshake(connected).await
    }

    /// [`RawClient::connect`] from the loopback address `source` (e.g. `127.0.0.2`: another
    /// player's machine, as far as the server sees); plain `ws://` only.
    pub async fn connect_from(url: &str, source: std::net::IpAddr) -> Result<Self, String> {
        let host = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_default();
        let addr: std::net::SocketAddr = host.parse().map_err(|e| format!("{host}: {e}"))?;
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(std::net::SocketAddr::new(source, 0))
            .map_err(|e| e.to_string())?;
        let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
        let connected = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await;
        Self::handshake(connected).await
    }

    async fn handshake(
        connected: Result<
            (
                WebSocketStream<MaybeTlsStream<TcpStream>>,
                tokio_tungstenite::tungstenite::handshake::client::Response,
            ),
            tokio_tungstenite::tungstenite::Error,
        >,
    ) -> Result<Self, String> {
        let (mut ws, _) = connected.map_err(|e| match e {
            // A refusal before the upgrade: show the status and the server's reason.
            tokio_tungstenite::tungstenite::Error::Http(response) => format!(
                "HTTP {}: {}",
                response.status(),
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
            ),
            e => e.to_string(),
        })?;
        let first = bounded(Duration::from_secs(5), "IdAssigned", ws.next())
            .await
            .ok_or("closed before IdAssigned")?
            .map_err(|e| e.to_string())?;
        let event: serde_json::Value =
            serde_json::from_str(first.to_text().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        let id = serde_json::from_value(event["IdAssigned"].clone()).map_err(|e| e.to_string())?;
        Ok(Self { ws, id })
    }

    /// The close frame the server sends within 5 s, skipping other messages (`None`: the
    /// connection ended without one, or nothing came).
    pub async fn next_close(
        &mut self,
    ) -> Option<tokio_tungstenite::tungstenite::protocol::CloseFrame> {
        loop {
            match self.next_within(Duration::from_secs(5)).await {
                Ok(Some(Message::Close(frame))) => return frame,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The resume token the server sends after our id when the URL asked (`?resumable`).
    pub async fn resume_token(&mut self) -> Option<String> {
        let event = self.next_event(Duration::from_secs(5)).await?;
        event.get("Resume")?.as_str().map(str::to_string)
    }

    /// Ends the connection the way a dropped network does: no close frame.
    pub fn drop_connection(self) {
        drop(self.ws);
    }

    /// The next peer the server says left, within 5 s, skipping other events.
    pub async fn next_left(&mut self) -> Option<PeerId> {
        loop {
            let event = self.next_event(Duration::from_secs(5)).await?;
            if let Some(left) = event.get("PeerLeft") {
                return serde_json::from_value(left.clone()).ok();
            }
        }
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), String> {
        self.ws
            .send(Message::text(text.into()))
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends `message` as it is (a raw frame, say).
    pub async fn send_raw(&mut self, message: Message) -> Result<(), String> {
        self.ws.send(message).await.map_err(|e| e.to_string())
    }

    /// Sends a binary message.
    pub async fn ws_binary(&mut self, bytes: Vec<u8>) -> Result<(), String> {
        self.ws
            .send(Message::binary(bytes))
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends a signal with `data` (the `PeerSignal` JSON) to `to`.
    pub async fn signal(&mut self, to: PeerId, data: serde_json::Value) -> Result<(), String> {
        let req = serde_json::json!({ "Signal": { "receiver": to, "data": data } });
        self.send_text(req.to_string()).await
    }

    /// The next message within `limit`, if any (`Err` when the connection ended).
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Message>, String> {
        match tokio::time::timeout(limit, self.ws.next()).await {
            Err(_) => Ok(None),
            Ok(None) => Err("connection ended".into()),
            Ok(Some(Err(e))) => Err(e.to_string()),
            Ok(Some(Ok(m))) => Ok(Some(m)),
        }
    }

    /// The next JSON event within `limit`, skipping nothing.
    pub async fn next_event(&mut self, limit: Duration) -> Option<serde_json::Value> {
        match self.next_within(limit).await {
            Ok(Some(Message::Text(t))) => serde_json::from_str(t.as_str()).ok(),
            _ => None,
        }
    }
}

/// `GET path` over plain HTTP/1.1; returns the whole response (status line, headers, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    http_request(addr, "GET", path, None).await
}

/// `POST path` over plain HTTP/1.1, with `Authorization: Bearer <bearer>` if given; returns the
/// whole response.
pub async fn http_post(addr: std::net::SocketAddr, path: &str, bearer: Option<&str>) -> String {
    http_request(addr, "POST", path, bearer).await
}

async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    bounded(Duration::from_secs(5), "HTTP request", async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let auth = bearer.map_or(String::new(), |b| format!("Authorization: Bearer {b}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
}

/// A real offer SDP shape (parses, has ICE credentials and a fingerprint).
pub const VALID_SDP: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=fingerprint:sha-256 AB:CD\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
    c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz\r\n\
    a=mid:0\r\na=sctp-port:5000\r\n";

/// Runs the calling test again in a network namespace of its own (loopback only, inside the
/// suite's), so it may shape that namespace's traffic (`tc`) without touching other tests.
/// Returns `true` in the outer run (the inner run passed: the caller returns) and `false` in the
/// inner run (the caller goes on with its body). `test` is the test function's name.
pub fn in_own_namespace(test: &str, limit: Duration) -> bool {
    if std::env::var("HUDDLE_OWN_NAMESPACE").as_deref() == Ok(test) {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = std::process::Command::new("unshare")
        .args([
            "-rn",
            "sh",
            "-c",
            "ip link set lo up && ip route add 224.0.0.0/4 dev lo && exec \"$0\" --exact \"$1\" --nocapture",
        ])
        .arg(exe)
        .arg(test)
        .env("HUDDLE_OWN_NAMESPACE", test)
        .spawn()
        .expect("unshare");
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the inner test") {
            assert!(
                status.success(),
                "{test} failed in its own namespace: {status}"
            );
            return true;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{test} did not finish within {limit:?} in its own namespace");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
