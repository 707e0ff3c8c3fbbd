//! The extensions pipeline: incoming and outgoing hooks, as Faye's `addExtension`.
//!
//! An incoming hook sees every message before it is handled, meta channels included; setting
//! `error` on the message stops it and returns it to the sender as a failure, and returning
//! [`Verdict::Drop`] drops it silently (no reply, as a Faye extension calling back `null`).
//! An outgoing hook sees every reply and every delivered message; for a delivery the context
//! is the *recipient's* request, which allows per-recipient filtering.

use async_trait::async_trait;
use crier_protocol::Message;
use serde_json::Value;

use crate::context::{Identity, RequestContext};

/// What an extension decided about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on (possibly with the message changed, or with `error` set).
    Pass,
    /// Drop the message without a reply.
    Drop,
}

/// A Bayeux extension. Both hooks default to passing the message through unchanged.
#[async_trait]
pub trait Extension: Send + Sync + 'static {
    /// Called for each incoming message before it is handled.
    async fn incoming(&self, _message: &mut Message, _ctx: &RequestContext) -> Verdict {
        Verdict::Pass
    }

    /// Called for each reply and each delivered message before it is sent.
    async fn outgoing(&self, _message: &mut Message, _ctx: &RequestContext) -> Verdict {
        Verdict::Pass
    }

    /// Called for a handshake that passed every incoming hook, before the session exists:
    /// the identity to bind to the new session (the first extension to return one wins), or
    /// an error string that refuses the handshake (e.g. `403::Invalid token`).
    async fn identify(&self, _handshake: &Message, _ctx: &RequestContext) -> Result<Option<Identity>, String> {
        Ok(None)
    }

    /// Called for a publish to a `/service/**` channel after the incoming hooks:
    /// `Some(Ok(data))` answers the sender with `data` in the publish reply (CometD's
    /// remote call: the reply carries the request's `id`), `Some(Err(error))` fails the
    /// publish with that Bayeux error string; either way the message is not broadcast.
    /// `None` leaves it to the next extension, and if none answers it is published as
    /// usual (Faye's behaviour).
    async fn service(&self, _message: &Message, _ctx: &RequestContext) -> Option<Result<Value, String>> {
        None
    }

    /// Whether [`Extension::incoming`] needs the session's identity in the context (it
    /// costs a lookup per message for sessions attached to another node).
    fn wants_identity(&self) -> bool {
        false
    }

    /// Counters and gauges this extension keeps, as `(name, help, value)`, for `/metrics`.
    fn metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        Vec::new()
    }

    /// Whether [`Extension::outgoing`] does anything. When no extension needs outgoing
    /// hooks, deliveries skip them and each message is encoded once for all recipients.
    fn has_outgoing(&self) -> bool {
        true
    }
}

/// The ordered list of installed extensions.
#[derive(Default, Clone)]
pub(crate) struct Pipeline {
    exts: Vec<std::sync::Arc<dyn Extension>>,
    any_outgoing: bool,
    any_identity: bool,
}

impl Pipeline {
    pub(crate) fn new(exts: Vec<std::sync::Arc<dyn Extension>>) -> Self {
        let any_outgoing = exts.iter().any(|e| e.has_outgoing());
        let any_identity = exts.iter().any(|e| e.wants_identity());
        Pipeline { exts, any_outgoing, any_identity }
    }

    pub(crate) fn metrics(&self) -> Vec<(&'static str, &'static str, i64)> {
        self.exts.iter().flat_map(|e| e.metrics()).collect()
    }

    pub(crate) fn wants_identity(&self) -> bool {
        self.any_identity
    }

    /// The identity for a new session: the first extension's answer, or its refusal.
    pub(crate) async fn identify(&self, m: &Message, ctx: &RequestContext) -> Result<Option<Identity>, String> {
        for e in &self.exts {
            if let Some(identity) = e.identify(m, ctx).await? {
                return Ok(Some(identity));
            }
        }
        Ok(None)
    }

    /// The first extension's answer to a `/service/**` publish, if any answers.
    pub(crate) async fn service(&self, m: &Message, ctx: &RequestContext) -> Option<Result<Value, String>> {
        for e in &self.exts {
            if let Some(answer) = e.service(m, ctx).await {
                return Some(answer);
            }
        }
        None
    }

    pub(crate) fn has_outgoing(&self) -> bool {
        self.any_outgoing
    }

    /// Runs the incoming hooks in order; stops at the first that drops the message.
    pub(crate) async fn incoming(&self, m: &mut Message, ctx: &RequestContext) -> Verdict {
        for e in &self.exts {
            if e.incoming(m, ctx).await == Verdict::Drop {
                return Verdict::Drop;
            }
        }
        Verdict::Pass
    }

    /// Runs the outgoing hooks in order; stops at the first that drops the message.
    pub(crate) async fn outgoing(&self, m: &mut Message, ctx: &RequestContext) -> Verdict {
        if !self.any_outgoing {
            return Verdict::Pass;
        }
        for e in &self.exts {
            if e.has_outgoing() && e.outgoing(m, ctx).await == Verdict::Drop {
                return Verdict::Drop;
            }
        }
        Verdict::Pass
    }
}
