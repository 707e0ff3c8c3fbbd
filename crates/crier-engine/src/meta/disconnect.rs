//! `/meta/disconnect`: ends a session; a connect held for it returns at once.

use crier_protocol::{BayeuxError, Message};

use crate::engine::Inner;
use crate::metrics::Metrics;

impl Inner {
    pub(crate) async fn disconnect(&self, m: &Message) -> Message {
        let mut r = m.response();
        let raw_id = m.client_id();
        let session = match self.client_of(m).await {
            Ok(s) => s,
            Err(e) => {
                r.remove("clientId");
                r.fail(e);
                return r;
            }
        };
        let exists = session.is_some();
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
        if let Some(id) = session
            && let Err(e) = self.destroy(&id).await
        {
            Metrics::inc(&self.metrics.backend_errors);
            r.fail(super::backend_error(&e));
        }
        r
    }
}
