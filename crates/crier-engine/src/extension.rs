//! The extensions pipeline: incoming and outgoing hooks, as Faye's `addExtension`.
//!
//! An incoming hook sees every message before it is handled, meta channels included; setting
//! `error` on the message stops it and returns it to the sender as a failure, and returning
//! [`Verdict::Drop`] drops it silently (no reply, as a Faye extension calling back `null`).
//! An outgoing hook sees every reply and every delivered message; for a delivery the context
//! is the *recipient's* request, which allows per-recipient filtering.

use async_trait::async_trait;
use crier_protocol::Message;

use crate::context::RequestContext;

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
}

impl Pipeline {
    pub(crate) fn new(exts: Vec<std::sync::Arc<dyn Extension>>) -> Self {
        let any_outgoing = exts.iter().any(|e| e.has_outgoing());
        Pipeline { exts, any_outgoing }
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
