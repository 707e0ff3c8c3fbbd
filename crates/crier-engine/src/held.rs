//! A socket's held `/meta/connect`, kept as data.
//!
//! Over a socket a connect is held only to be answered at its timeout (messages go out
//! through the socket's pump), and every idle socket has one. Held inside
//! `Engine::process`, it would keep that whole future alive (about 1.2 KiB, sized for
//! every kind of message); as a [`HeldConnect`] it keeps a session, a deadline and a reply
//! stub, and [`HeldConnect::finish`]'s small future.

use std::sync::Arc;

use crate::context::{Identity, RequestContext};
use crate::delivery::Outgoing;
use crate::engine::Inner;
use crate::meta::connect::Held;

/// What a socket's batch came to (see `Engine::process_socket`).
#[must_use = "the replies (or the held connect's eventual reply) must be sent"]
pub enum SocketReplies {
    /// The replies, to send now.
    Now(Vec<Outgoing>),
    /// A connect to answer when [`HeldConnect::finish`] returns.
    Held(HeldConnect),
}

/// A socket's connect being held. Dropping it drops the hold: nothing is lost, as a
/// socket's connect takes no messages.
#[must_use = "a held connect is answered by awaiting `finish`"]
pub struct HeldConnect {
    pub(crate) inner: Arc<Inner>,
    pub(crate) held: Held,
    /// The identity the outgoing extensions see (when they asked for it).
    pub(crate) identity: Option<Arc<Identity>>,
}

impl HeldConnect {
    /// Waits until the connect is superseded, its session ends, the engine drains or its
    /// hold time passes, then returns its reply (after outgoing extensions, for `ctx`).
    /// Call it once: it borrows rather than consumes, only to keep the waiting future
    /// small (a consumed argument keeps its own slot in it), and each call answers.
    pub async fn finish(&self, ctx: &RequestContext) -> Vec<Outgoing> {
        self.inner.finish_connect(&self.held, self.identity.clone(), ctx).await
    }
}
