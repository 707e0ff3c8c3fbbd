//! Outbound calls from Crier to the app, configured from `hooks.*`:
//!
//! - **`/service` forwarding** ([`ServiceForwarder`]): a publish on a configured
//!   `/service/**` channel is POSTed to the app, and the app's answer becomes the publish
//!   reply (`data`, or an error), which is what CometD's `remoteCall` waits for.
//! - **Event webhooks** ([`EventWebhooks`]): the engine's monitoring events (handshake,
//!   subscribe, unsubscribe, publish, disconnect, presence) POSTed to the app in batches,
//!   with retries, from bounded queues that never slow Bayeux traffic down.
//!
//! `docs/hooks.md` documents both exchanges. Neither is on unless configured; the binary
//! builds them with [`Hooks::new`].

mod call;
mod config;
mod metrics;
mod payload;
mod queue;
mod sender;
mod service;
mod webhooks;

use std::sync::Arc;

pub use config::{EventKind, EventsConfig, HooksConfig, ServiceRoute};
use crier_engine::Extension;
pub use metrics::{ServiceMetrics, WebhookMetrics};
pub use service::ServiceForwarder;
pub use webhooks::EventWebhooks;

/// A configuration that cannot work (the message names the key).
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// A bad setting, e.g. `hooks.service[0].url: not a URL: "x"`.
    #[error("{0}")]
    Config(String),
    /// The HTTP client could not be built.
    #[error("hooks: cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// The configured hooks, built from [`HooksConfig`] with one shared HTTP client.
pub struct Hooks {
    /// The `/service` forwarder, if any route is configured.
    pub forwarder: Option<Arc<ServiceForwarder>>,
    /// The event webhooks, if any URL is configured (start them with
    /// [`EventWebhooks::spawn`] once the engine is built).
    pub webhooks: Option<EventWebhooks>,
}

impl Hooks {
    /// Validates the configuration and builds what it turns on.
    pub fn new(config: &HooksConfig) -> Result<Self, HooksError> {
        config.validate()?;
        let http = client()?;
        let forwarder = if config.service.is_empty() {
            None
        } else {
            Some(Arc::new(ServiceForwarder::new(&config.service, http.clone())?))
        };
        let webhooks = if config.events.enabled() { Some(EventWebhooks::new(&config.events, http)?) } else { None };
        Ok(Hooks { forwarder, webhooks })
    }

    /// The engine extensions to install: the forwarder, and the webhooks' metrics reporter.
    pub fn extensions(&self) -> Vec<Arc<dyn Extension>> {
        let mut out: Vec<Arc<dyn Extension>> = Vec::new();
        if let Some(f) = &self.forwarder {
            out.push(f.clone());
        }
        if let Some(w) = &self.webhooks {
            out.push(w.metrics_extension());
        }
        out
    }
}

/// The HTTP client shared by every hook (connection pools per host). Time-outs are set per
/// request, as each route and the webhooks have their own.
pub fn client() -> Result<reqwest::Client, HooksError> {
    reqwest::Client::builder()
        .user_agent(concat!("crier/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(HooksError::Client)
}
