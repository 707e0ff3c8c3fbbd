//! `/meta/disconnect`: ends a session; a connect held for it returns at once.

use crier_protocol::{BayeuxError, ClientId, Message};

use crate::engine::Inner;
use crate::metrics::Metrics;

impl Inner {
    pub(crate) async fn disconnect(&self, m: &Message) -> Message {
        let mut r = m.response();
        let raw_id = m.client_id();
        let id = raw_id.and_then(ClientId::parse);
        let exists = match &id {
            Some(id) => match self.session(id).await {
                Ok(s) => s.is_some(),
                Err(e) => {
                    Metrics::inc(&self.metrics.backend_errors);
                    r.remove("clientId");
                    r.fail(super::backend_error(&e));
                    return r;
                }
            },
            None => false,
        };
        let error = if raw_id.is_none() {
            Some(BayeuxError::missing("clientId").to_string())
        } else if !exists {
            Some(BayeuxError::unknown_client(raw_id.unwrap_or_default()).to_string())
        } else {
            m.error().map(str::to_owned)
        };
        if let Some(e) = error {
            r.remove("clientId");
            r.fail(e);
            return r;
        }
        if let Some(id) = id
            && let Err(e) = self.destroy(&id).await
        {
            Metrics::inc(&self.metrics.backend_errors);
            r.fail(super::backend_error(&e));
        }
        r
    }
}
