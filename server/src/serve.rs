//! The HTTP server loop: accepts connections (plain TCP or TLS), serves each with hyper's HTTP/1
//! with a deadline for the request head, and lets websocket upgrades go on by themselves.
//!
//! axum's own `serve` cannot set hyper's header-read timeout, so a client that opens a connection
//! and sends nothing (or one header line a minute) would hold a socket and a task for ever. Here
//! every connection must bring a whole request head within `--handshake-timeout-secs`, also
//! between keep-alive requests; once upgraded, the websocket's own idle timeout takes over.
//! Connections still speaking HTTP are at most `--max-connections` at once (those past it wait
//! in the kernel's accept queue).

use crate::tls::PeerAddr;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;
use tracing::debug;

/// Serves `router` on `listener` until `shutdown` resolves: then no new connection is taken, and
/// those in the middle of a request finish it.
pub(crate) async fn serve<L>(
    mut listener: L,
    router: Router,
    head_timeout: Duration,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = SocketAddr>,
{
    let (closing_tx, closing) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        let Ok(permit) = permit else { break };
        let (io, from) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let mut closing = closing.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(PeerAddr(from)));
                router.clone().oneshot(request.map(axum::body::Body::new))
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(head_timeout);
            let connection = http
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            debug!(%from, "connection ended: {e}");
                        }
                        break;
                    }
                    _ = closing.changed() => connection.as_mut().graceful_shutdown(),
                }
            }
            drop(permit);
        });
    }
    let _ = closing_tx.send(true);
    // Connections finishing a request hold a permit: wait for them (bounded by the head
    // timeout and the handlers).
    let _ = permits
        .acquire_many(u32::try_from(max_connections.max(1)).unwrap_or(u32::MAX))
        .await;
}
