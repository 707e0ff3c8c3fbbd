//! `/service/**` forwarding: an engine extension that answers a publish on a configured
//! channel with what the app answers to an HTTP POST (CometD's `remoteCall`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use crier_engine::{Extension, RequestContext};
use crier_protocol::{ChannelName, ChannelPattern, Message};
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::HooksError;
use crate::call::{CallError, parse_answer, read_limited, request_body};
use crate::config::{ServiceRoute, check_url, header_map};
use crate::metrics::{ServiceMetrics, inc};

/// A route, checked and ready.
struct Route {
    pattern: ChannelPattern,
    url: reqwest::Url,
    headers: HeaderMap,
    timeout: Duration,
    /// Bounds the calls in progress; a publish that finds none free fails at once, so a slow
    /// app cannot pile up waiting requests (and their held HTTP connections) on the node.
    permits: Semaphore,
    max_response_bytes: usize,
}

/// Forwards `/service` publishes to the app; see `docs/hooks.md` for the exchange.
pub struct ServiceForwarder {
    http: reqwest::Client,
    routes: Vec<Route>,
    metrics: Arc<ServiceMetrics>,
}

/// Counts a call in progress for as long as it lives (a dropped request included).
struct InFlight<'a>(&'a ServiceMetrics);

impl<'a> InFlight<'a> {
    fn start(m: &'a ServiceMetrics) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ServiceForwarder {
    /// Checks the routes (errors name the key, as `hooks.service[i].url`) and shares one
    /// HTTP client between them.
    pub fn new(routes: &[ServiceRoute], http: reqwest::Client) -> Result<Self, HooksError> {
        let mut out = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            let key = format!("hooks.service[{i}]");
            r.validate(&key)?;
            out.push(Route {
                pattern: r.pattern(&key)?,
                url: check_url(&format!("{key}.url"), &r.url)?,
                headers: header_map(&format!("{key}.headers"), &r.headers)?,
                timeout: r.timeout(),
                permits: Semaphore::new(r.max_in_flight),
                max_response_bytes: r.max_response_bytes,
            });
        }
        Ok(ServiceForwarder { http, routes: out, metrics: Arc::new(ServiceMetrics::default()) })
    }

    /// The forwarder's counters (also reported through [`Extension::metrics`]).
    pub fn metrics(&self) -> Arc<ServiceMetrics> {
        self.metrics.clone()
    }

    async fn call(
        &self,
        route: &Route,
        m: &Message,
        channel: &ChannelName,
        ctx: &RequestContext,
    ) -> Result<Value, CallError> {
        let Ok(_permit) = route.permits.try_acquire() else {
            inc(&self.metrics.busy);
            return Err(CallError::Busy);
        };
        let _in_flight = InFlight::start(&self.metrics);
        inc(&self.metrics.forwarded);
        let send = self
            .http
            .post(route.url.clone())
            .headers(route.headers.clone())
            .timeout(route.timeout)
            .json(&request_body(m, channel, ctx))
            .send();
        let result = async {
            let r = send.await.map_err(CallError::from_reqwest)?;
            if !r.status().is_success() {
                return Err(CallError::Status(r.status()));
            }
            parse_answer(&read_limited(r, route.max_response_bytes).await?)
        }
        .await;
        match &result {
            Ok(_) => {}
            Err(CallError::App(_)) => inc(&self.metrics.app_errors),
            Err(e) => {
                inc(&self.metrics.failed);
                if matches!(e, CallError::Timeout) {
                    inc(&self.metrics.timeouts);
                }
                tracing::warn!(channel = %channel, url = %route.url, error = %e, "service call failed");
            }
        }
        result
    }
}

#[async_trait]
impl Extension for ServiceForwarder {
    async fn service(&self, m: &Message, ctx: &RequestContext) -> Option<Result<Value, String>> {
        // The engine validated the channel already; an unparsable one is simply not ours.
        let channel = ChannelName::parse(m.channel()?).ok()?;
        let route = self.routes.iter().find(|r| r.pattern.matches(&channel))?;
        Some(self.call(route, m, &channel, ctx).await.map_err(|e| e.to_bayeux(&channel)))
    }

    fn metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        self.metrics.snapshot()
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}
