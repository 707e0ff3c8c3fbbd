//! HTTP POST transport: one request body is one batch, the response body is the reply
//! batch (for a long-poll connect, `[connectReply, ...deliveries]`).

use std::time::Duration;

use crier_protocol::{Message, decode_batch, encode_batch};
use reqwest::Url;
use reqwest::header::CONTENT_TYPE;

use crate::error::ClientError;
use crate::transport::LIMITS;

/// Posts batches to one endpoint over a shared `reqwest::Client` (and its pool).
#[derive(Debug, Clone)]
pub(crate) struct HttpTransport {
    client: reqwest::Client,
    url: Url,
}

/// The most of an error body kept in [`ClientError::HttpStatus`].
const BODY_EXCERPT: usize = 200;

impl HttpTransport {
    pub(crate) fn new(client: reqwest::Client, url: Url) -> Self {
        HttpTransport { client, url }
    }

    /// Sends `msgs` as one JSON array (`Content-Type: application/json`, which Faye reads
    /// as a raw JSON body) and returns every message of the response. The whole exchange,
    /// body included, is bounded by `timeout`.
    pub(crate) async fn post(&self, msgs: &[Message], timeout: Duration) -> Result<Vec<Message>, ClientError> {
        let body = encode_batch(msgs);
        let exchange = async {
            let resp =
                self.client.post(self.url.clone()).header(CONTENT_TYPE, "application/json").body(body).send().await?;
            let status = resp.status();
            let bytes = resp.bytes().await?;
            if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes);
                let body = text.chars().take(BODY_EXCERPT).collect();
                return Err(ClientError::HttpStatus { status: status.as_u16(), body });
            }
            decode_batch(&bytes, &LIMITS).map_err(|e| ClientError::Decode(e.to_string()))
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| ClientError::Timeout(timeout))?
    }
}
