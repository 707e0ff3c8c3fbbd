//! A socket's held `/meta/connect`, kept as data.
//!
//! Over a socket a connect is held only to be answered at its timeout (messages go out
//! through the socket's pump), and every idle socket has one. Held inside
//! `Engine::process`, it would keep that whole future alive (about 1.2 KiB, sized for
//! every kind of message); as a [`HeldConnect`] it keeps a session, a deadline and a reply
//! stub, and the socket waits with a small [`HeldConnect::interrupted`] future and a timer
//! of its own.

use std::sync::Arc;

use tokio::time::Instant;

use crate::context::{Identity, RequestContext};
use crate::delivery::Outgoing;
use crate::engine::Inner;
use crate::meta::connect::Held;

/// What a socket's batch came to (see `Engine::process_socket`).
#[must_use = "the replies (or the held connect's eventual reply) must be sent"]
pub enum SocketReplies {
    /// The replies, to send now.
    Now(Vec<Outgoing>),
    /// A connect to answer when its hold is over. Boxed: the caller keeps it for the whole
    /// hold, and this enum passes through its state (inline, 144 bytes twice over).
    Held(Box<HeldConnect>),
}

/// A socket's connect being held. Dropping it drops the hold: nothing is lost, as a
/// socket's connect takes no messages.
#[must_use = "a held connect is answered by `answer` (or `finish`)"]
pub struct HeldConnect {
    pub(crate) inner: Arc<Inner>,
    pub(crate) held: Held,
    /// The identity the outgoing extensions see (when they asked for it).
    pub(crate) identity: Option<Arc<Identity>>,
}

impl HeldConnect {
    /// The session whose connect this is.
    pub fn client_id(&self) -> &str {
        self.held.client_id()
    }

    /// When the hold ends if nothing ends it sooner.
    pub fn deadline(&self) -> Instant {
        self.held.deadline()
    }

    /// Waits until the hold is interrupted: a newer connect supersedes it, its session
    /// ends or the engine drains. Not the deadline: a caller that waits here keeps its own
    /// timer (a socket has one for its pings anyway). Cancel-safe, and cheap to make again
    /// each time the caller loops.
    pub fn interrupted(&self) -> impl Future<Output = ()> + Send + '_ {
        self.inner.wait_interrupted(&self.held)
    }

    /// The reply, after the outgoing extensions (for `ctx`). Call it once the hold is over
    /// (interrupted or past its deadline); called sooner, it answers sooner.
    pub async fn answer(self, ctx: &RequestContext) -> Vec<Outgoing> {
        self.inner.answer_connect(&self.held, self.identity, ctx).await
    }

    /// Waits until the hold is interrupted or its deadline passes, then returns its reply:
    /// [`HeldConnect::interrupted`], a timer and [`HeldConnect::answer`] in one, for a
    /// caller with no timer of its own. Call it once (it borrows only to keep the waiting
    /// future small: a consumed argument keeps its own slot in it).
    pub async fn finish(&self, ctx: &RequestContext) -> Vec<Outgoing> {
        self.inner.finish_connect(&self.held, self.identity.clone(), ctx).await
    }
}
