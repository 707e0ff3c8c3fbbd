//! Embedding Crier with your own rules: a complete single-node server whose custom
//! extension refuses publishes containing banned words and tags every delivered message with
//! the recipient's transport. Run it with `cargo run -p crier-example-custom-extension`, then
//! point a Faye client at `http://127.0.0.1:8000/faye`.

use std::sync::Arc;

use async_trait::async_trait;
use crier_engine::{Engine, EngineConfig, Extension, MemoryBackend, RequestContext, Verdict};
use crier_protocol::Message;
use crier_server::ServerConfig;

/// Refuses publishes whose data mentions a banned word; marks deliveries per recipient.
struct Moderation {
    banned: Vec<String>,
}

#[async_trait]
impl Extension for Moderation {
    async fn incoming(&self, message: &mut Message, ctx: &RequestContext) -> Verdict {
        let is_publish = message.channel().is_some_and(|c| !c.starts_with("/meta/"));
        let text = message.data().map(|d| d.to_string().to_lowercase()).unwrap_or_default();
        if is_publish && self.banned.iter().any(|w| text.contains(w.as_str())) {
            // Setting `error` refuses the message; the publisher gets this error back.
            let from = ctx.request.as_ref().and_then(|r| r.remote_addr).map(|a| a.to_string()).unwrap_or_default();
            eprintln!("refused a publish from {from}");
            message.set("error", "403::Message refused by moderation");
        }
        Verdict::Pass
    }

    async fn outgoing(&self, message: &mut Message, ctx: &RequestContext) -> Verdict {
        // For a delivered message the context is the recipient's request.
        if message.data().is_some() {
            message.set("ext", serde_json::json!({"via": ctx.transport.label()}));
        }
        Verdict::Pass
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder(EngineConfig::default(), Arc::new(MemoryBackend::new()))
        .extension(Arc::new(Moderation { banned: vec!["spam".to_owned()] }))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
    eprintln!("listening on http://{}/faye", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    crier_server::serve(listener, engine, ServerConfig::default(), shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crier_engine::{RequestInfo, Transport};

    #[tokio::test]
    async fn refuses_banned_words_and_passes_the_rest() {
        let ext = Moderation { banned: vec!["spam".to_owned()] };
        let ctx = RequestContext::new(Transport::LongPolling, RequestInfo::default());
        let mut bad =
            Message(serde_json::json!({"channel":"/chat","data":"Buy SPAM"}).as_object().cloned().unwrap_or_default());
        ext.incoming(&mut bad, &ctx).await;
        assert_eq!(bad.error(), Some("403::Message refused by moderation"));
        let mut ok =
            Message(serde_json::json!({"channel":"/chat","data":"hello"}).as_object().cloned().unwrap_or_default());
        ext.incoming(&mut ok, &ctx).await;
        assert_eq!(ok.error(), None);
    }
}
