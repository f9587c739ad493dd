//! What two attacks cost each signaling server in memory: a fresh server per attack, with its
//! default settings (huddle_server's limits are what is measured).
//!
//! - **Slow reader**: a member reads nothing while a room mate sends it valid ~60 KiB offers at
//!   90 a second (huddle_server's default rate limit is 100) for `--attack-secs`. Reported: the
//!   server's peak resident memory over its memory before, and whether the reader was closed.
//! - **32 MiB message**: a client sends one 32 MiB text message, as a single frame and as 32
//!   frames of 1 MiB. Reported: the peak growth, and how it ended.

use crate::{Args, Kind, Server};
use futures::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An offer SDP of the shape real browsers send (it passes huddle_server's check), padded.
fn offer(pad: usize) -> serde_json::Value {
    let sdp = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\n\
         m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
         a=ice-ufrag:abcd\r\na=ice-pwd:efghijklmnopqrstuvwxyz\r\na=mid:0\r\n\
         a=sctp-port:5000\r\na=x-pad:{}\r\n",
        "p".repeat(pad)
    );
    serde_json::json!({ "Offer": sdp })
}

/// Connects and reads the id the server assigns.
async fn join(url: &str) -> Result<(Ws, serde_json::Value), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .map_err(|_| "no id within 5 s".to_string())?;
        if let Some(Ok(Message::Text(text))) = message {
            let event: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
            if let Some(id) = event.get("IdAssigned") {
                return Ok((ws, id.clone()));
            }
        } else {
            return Err("closed before an id".into());
        }
    }
}

/// The slow-reader attack on a fresh `kind` server: (peak growth in KiB, whether the reader was
/// closed (its room mate told it left), offers sent).
async fn slow_reader(kind: Kind, args: &Args) -> Result<(f64, bool, usize), String> {
    let server = Server::start_with(kind, args, false)?;
    let url = format!("ws://{}/deaf", server.addr);
    let (deaf, deaf_id) = join(&url).await?;
    let (talker, _) = join(&url).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let (mut tx, mut rx) = talker.split();
    // The talker reads what comes to it (the deaf peer's departure).
    let heard_left = tokio::spawn(async move {
        while let Some(Ok(message)) = rx.next().await {
            if let Message::Text(text) = message {
                if text.as_str().contains("PeerLeft") {
                    return true;
                }
            }
        }
        false
    });
    let request =
        serde_json::json!({ "Signal": { "receiver": deaf_id, "data": offer(60 * 1024) } })
            .to_string();
    let start = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / 90);
    while start.elapsed() < Duration::from_secs(args.attack_secs) {
        tick.tick().await;
        if tx.send(Message::text(request.clone())).await.is_err() {
            break;
        }
        sent += 1;
    }
    let peak = server.peak_rss_kib();
    let closed = heard_left.is_finished() && heard_left.await.unwrap_or(false);
    drop(deaf);
    Ok((peak - before, closed, sent))
}

/// Sends a 32 MiB text message on a fresh `kind` server, in `frames` frames: (peak growth in
/// KiB, how it ended).
async fn huge_message(kind: Kind, args: &Args, frames: usize) -> Result<(f64, String), String> {
    let server = Server::start_with(kind, args, false)?;
    let (mut ws, _) = join(&format!("ws://{}/huge", server.addr)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib();
    let size = 32 << 20;
    let chunk = vec![b'x'; size / frames];
    let mut sent = 0;
    let mut went = 0;
    for i in 0..frames {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(chunk.clone(), opcode, i + 1 == frames);
        if ws.send(Message::Frame(frame)).await.is_err() {
            break;
        }
        sent += chunk.len();
        went += 1;
    }
    // What the server answers: a close (refused), or nothing (taken).
    let ended = match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(frame))))) => format!("closed ({})", u16::from(frame.code)),
        Ok(Some(Ok(Message::Close(None)))) | Ok(None) => "closed".to_string(),
        Ok(Some(Err(_))) => "connection reset".to_string(),
        Ok(Some(Ok(_))) => "answered".to_string(),
        Err(_) => "still open".to_string(),
    };
    let peak = server.peak_rss_kib();
    Ok((
        peak - before,
        format!(
            "{ended}; {went} of {frames} frames ({} MiB) went out whole",
            sent >> 20
        ),
    ))
}

/// Runs both attacks on both servers and prints a table.
pub(crate) async fn run(args: &Args) -> Result<(), String> {
    println!("| attack | server | peak memory growth | outcome |\n|---|---|---|---|");
    for kind in [Kind::Stock, Kind::Huddle] {
        let (growth, closed, sent) = slow_reader(kind, args).await?;
        println!(
            "| slow reader, {sent} offers of 60 KiB in {} s | {} | {:.1} MiB | {} |",
            args.attack_secs,
            kind.name(),
            growth / 1024.0,
            if closed {
                "reader closed"
            } else {
                "reader kept, nothing closed"
            }
        );
    }
    for frames in [1, 32] {
        for kind in [Kind::Stock, Kind::Huddle] {
            let (growth, ended) = huge_message(kind, args, frames).await?;
            let how = if frames == 1 {
                "one frame"
            } else {
                "1 MiB frames"
            };
            println!(
                "| 32 MiB message, {how} | {} | {:.1} MiB | {ended} |",
                kind.name(),
                growth / 1024.0
            );
        }
    }
    Ok(())
}
