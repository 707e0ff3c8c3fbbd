//! The background task of a connected client: the `/meta/connect` heartbeat loop,
//! following the server's advice, and the queue of unsubscribes left by dropped
//! subscriptions.

use std::sync::Arc;

use crier_protocol::{ChannelPattern, Reconnect};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::session::Shared;

/// Runs until the client is closed. Owned by the [`Client`](crate::Client) through an
/// abort-on-drop handle; it also stops by itself when the client's tokens are cancelled.
pub(crate) async fn run(shared: Arc<Shared>, mut unsubs: mpsc::UnboundedReceiver<ChannelPattern>) {
    let heartbeat = async {
        tokio::select! {
            () = shared.loop_cancel.cancelled() => {}
            () = connect_loop(&shared) => {}
        }
    };
    let unsubscriber = async {
        let drain = async {
            while let Some(p) = unsubs.recv().await {
                shared.unsubscribe_dropped(p).await;
            }
        };
        tokio::select! {
            () = shared.root.cancelled() => {}
            () = drain => {}
        }
    };
    tokio::join!(heartbeat, unsubscriber);
}

/// What to do after a connect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Connect again after this many milliseconds.
    Connect(u64),
    /// Drop the session and handshake again after this many milliseconds.
    Handshake(u64),
    /// The server said `reconnect:"none"`: close the client.
    Stop,
}

/// Decides the next step from a connect reply's outcome and the merged advice, as the
/// Faye client does. A failed connect with stale "retry" advice but a 401 still means
/// the session is gone, so that case re-handshakes too rather than looping on 401s.
pub(crate) fn next_step(
    successful: bool,
    error: Option<&str>,
    reconnect: Reconnect,
    interval: u64,
    retry: u64,
) -> Next {
    let unknown_client = error.is_some_and(|e| e.starts_with("401:"));
    match reconnect {
        Reconnect::None => Next::Stop,
        Reconnect::Handshake => Next::Handshake(interval),
        Reconnect::Retry if successful => Next::Connect(interval),
        Reconnect::Retry if unknown_client => Next::Handshake(interval),
        Reconnect::Retry => Next::Connect(interval.max(retry)),
    }
}

async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

async fn connect_loop(shared: &Shared) {
    let retry_ms = u64::try_from(shared.cfg.retry.as_millis()).unwrap_or(u64::MAX);
    // A socket that closes under a held connect (Faye closes it when it destroys the
    // session) is re-opened at once, but only once in a row: a server that keeps
    // closing sockets must not make this loop spin.
    let mut quick_retry = true;
    loop {
        if shared.client_id().is_none() {
            match shared.handshake().await {
                Ok(()) => {
                    shared.resubscribe_all().await;
                    shared.establish();
                    tracing::info!(client_id = ?shared.client_id(), "re-handshake complete");
                }
                Err(ClientError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "handshake failed");
                    if shared.advice().reconnect == Reconnect::None {
                        shared.shutdown();
                        return;
                    }
                    sleep_ms(retry_ms).await;
                    continue;
                }
            }
        }
        match shared.connect_once().await {
            Ok(reply) => {
                quick_retry = true;
                let advice = shared.advice();
                let ok = reply.successful() == Some(true);
                if !ok {
                    tracing::debug!(error = ?reply.error(), "connect refused");
                }
                let interval = advice.interval.unwrap_or(0);
                match next_step(ok, reply.error(), advice.reconnect, interval, retry_ms) {
                    Next::Stop => {
                        tracing::info!("server advised reconnect:none; closing");
                        shared.shutdown();
                        return;
                    }
                    Next::Handshake(ms) => {
                        tracing::info!("server advised a new handshake");
                        shared.lose_session();
                        sleep_ms(ms).await;
                    }
                    Next::Connect(ms) => sleep_ms(ms).await,
                }
            }
            Err(_) if shared.root.is_cancelled() => return,
            Err(ClientError::ConnectionClosed) if quick_retry => {
                tracing::debug!("websocket closed under a connect; reconnecting");
                quick_retry = false;
            }
            Err(e) => {
                quick_retry = false;
                // A network failure says nothing about the session: keep the client id
                // and try again; the server answers 401 if it has forgotten us.
                tracing::warn!(error = %e, "connect failed");
                sleep_ms(retry_ms).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_advice() {
        assert_eq!(next_step(true, None, Reconnect::Retry, 0, 1000), Next::Connect(0));
        assert_eq!(next_step(true, None, Reconnect::Retry, 250, 1000), Next::Connect(250));
        assert_eq!(next_step(false, Some("401:x:Unknown client"), Reconnect::Handshake, 0, 1000), Next::Handshake(0));
        assert_eq!(next_step(false, Some("401:x:Unknown client"), Reconnect::Retry, 0, 1000), Next::Handshake(0));
        assert_eq!(next_step(false, Some("403::Nope"), Reconnect::Retry, 0, 1000), Next::Connect(1000));
        assert_eq!(next_step(true, None, Reconnect::None, 0, 1000), Next::Stop);
    }
}
