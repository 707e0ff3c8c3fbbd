//! Monitoring events, the ones Faye's `bind` exposes.

use crier_protocol::{ChannelName, ChannelPattern, ClientId};

/// Something a client did, or that happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session was created.
    Handshake(ClientId),
    /// A session subscribed to a name or pattern it did not have.
    Subscribe(ClientId, ChannelPattern),
    /// A session lost a subscription (explicitly, or because it was destroyed).
    Unsubscribe(ClientId, ChannelPattern),
    /// A message was accepted (the publisher's client id, if it sent one).
    Publish(Option<String>, ChannelName),
    /// A session ended (explicit disconnect, expiry, or queue overflow).
    Disconnect(ClientId),
}
