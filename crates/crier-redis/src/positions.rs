//! Delivery positions into Redis, and back. A session's own cursors are stored when a
//! long-poll response leaves, when the session leaves this node, at shutdown and after a
//! failed store. What sockets stream reaches Redis as the node's marks, written
//! periodically at a cost that does not depend on how many sessions are attached (see
//! `marks`). A session that moves here starts after the marks of the node it left, when
//! they cover it.

use std::collections::HashMap;
use std::sync::Arc;

use crier_engine::BackendError;
use crier_protocol::{ChannelPattern, ClientId};
use fred::prelude::*;
use fred::types::Value;
use futures::StreamExt;

use crate::backend::Shared;
use crate::codec::{Offset, format_offset, parse_offset};
use crate::marks::{VALID_FIELD, WRITE_FIELD};
use crate::metrics::RedisMetrics;
use crate::values::{array, text};

impl Shared {
    /// Stores a session's sent positions.
    pub(crate) async fn store_cursors(
        &self,
        id: &ClientId,
        cursors: Vec<(ChannelPattern, Offset)>,
    ) -> Result<(), BackendError> {
        if cursors.is_empty() {
            return Ok(());
        }
        let mut args: Vec<String> = Vec::with_capacity(cursors.len() * 3);
        for (n, (ms, seq)) in cursors {
            args.push(n.as_str().to_owned());
            args.push(ms.to_string());
            args.push(seq.to_string());
        }
        let _: Value = self
            .scripts
            .cursors
            .evalsha_with_reload(&self.client, vec![self.keys.subs(id)], args)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// The periodic flush: the node's marks, and positions whose store failed.
    pub(crate) async fn flush(&self) {
        self.clear_disowned().await;
        self.write_marks().await;
        let dirty = self.local.lock().take_dirty();
        for id in dirty {
            let cursors = self.local.lock().take_unstored(&id);
            self.store_or_keep(&id, cursors).await;
        }
    }

    /// At shutdown, after a last flush: every session's own positions, so sessions that
    /// resume elsewhere replay nothing they were sent (marks are only a lower bound).
    pub(crate) async fn store_all(&self) {
        let ids = self.local.lock().unstored_sessions();
        futures::stream::iter(ids)
            .for_each_concurrent(32, |id| async move {
                let cursors = self.local.lock().take_unstored(&id);
                self.store_or_keep(&id, cursors).await;
            })
            .await;
    }

    /// Stores positions; if that fails they are kept for the next flush.
    pub(crate) async fn store_or_keep(&self, id: &ClientId, cursors: Vec<(ChannelPattern, Offset)>) {
        if let Err(e) = self.store_cursors(id, cursors.clone()).await {
            tracing::debug!(client_id = %id, error = %e, "storing delivery positions failed");
            self.local.lock().unstore(id, &cursors);
        }
    }

    /// Writes the node's marks: one script call, whatever the number of sessions. One
    /// write at a time: each is computed against what the one before it wrote.
    async fn write_marks(&self) {
        let _one_at_a_time = self.mark_writes.lock().await;
        let w = self.local.lock().take_marks();
        let mut args: Vec<String> = Vec::with_capacity(5 + w.gone.len() + 2 * w.set.len());
        args.push(self.retention_ms.to_string());
        args.push(if w.full { "1" } else { "0" }.to_owned());
        args.push(w.writes.to_string());
        args.push(w.gone.len().to_string());
        args.extend(w.gone.iter().map(|n| n.as_str().to_owned()));
        args.push(WRITE_FIELD.to_owned());
        args.push(w.writes.to_string());
        args.push(VALID_FIELD.to_owned());
        args.push(w.valid.to_string());
        for (n, o) in &w.set {
            args.push(n.as_str().to_owned());
            args.push(format_offset(*o));
        }
        let written: Result<Value, _> =
            self.scripts.marks.evalsha_with_reload(&self.client, vec![self.keys.marks(&self.node)], args).await;
        match written {
            Ok(_) => RedisMetrics::inc(&self.metrics.mark_writes),
            Err(e) => {
                tracing::debug!(error = %e, "writing the node's marks failed");
                self.fail(e);
                self.local.lock().marks.failed();
            }
        }
    }

    /// Before attaching a session here: the node Redis records it on, that attach's
    /// `since`, and that node's marks for the session's names if its latest write covers
    /// the session (none if the session is new, already recorded here, or not covered).
    pub(crate) async fn peek_marks(&self, id: &ClientId) -> PrevMarks {
        let mut prev = PrevMarks::default();
        let read = async {
            let info: Vec<Option<String>> = self.client.hmget(self.keys.session(id), vec!["node", "since"]).await?;
            let mut info = info.into_iter();
            prev.node = info.next().flatten().unwrap_or_default();
            prev.since = info.next().flatten().unwrap_or_default();
            if prev.node == self.node || prev.node.is_empty() {
                return Ok(());
            }
            let Ok(since) = prev.since.parse::<u64>() else { return Ok(()) };
            let names: Vec<String> = self.client.hkeys(self.keys.subs(id)).await?;
            if names.is_empty() {
                return Ok(());
            }
            let mut fields = Vec::with_capacity(names.len() + 1);
            fields.push(VALID_FIELD.to_owned());
            fields.extend(names.iter().cloned());
            let values: Value = self.client.hmget(self.keys.marks(&prev.node), fields).await?;
            let mut values = array(values).unwrap_or_default().into_iter().map(|v| text(&v));
            let valid = values.next().flatten().and_then(|v| v.parse::<u64>().ok());
            // Written before the session's attach there, or while it was in flight.
            if valid.is_none_or(|v| v <= since) {
                return Ok(());
            }
            prev.marks = names
                .iter()
                .zip(values)
                .filter_map(|(n, m)| Some((ChannelPattern::parse(n).ok()?, parse_offset(&m?)?)))
                .collect();
            Ok::<_, fred::error::Error>(())
        };
        if let Err(e) = read.await {
            // Only a lower bound is lost: the session may get duplicates, never gaps.
            tracing::debug!(client_id = %id, error = %e, "reading the previous node's marks failed");
            self.fail(e);
            prev.marks.clear();
        }
        prev
    }

    /// Clears, in Redis, the `since` of sessions this node dropped while Redis may still
    /// record them as attached here; until then the marks do not cover newer attaches.
    async fn clear_disowned(&self) {
        let disowned = self.local.lock().marks.disowned();
        futures::stream::iter(disowned)
            .for_each_concurrent(16, |(id, since)| async move {
                let cleared: Result<Value, _> = self
                    .scripts
                    .disown
                    .evalsha_with_reload(
                        &self.client,
                        vec![self.keys.session(&id)],
                        vec![self.node.clone(), since.to_string()],
                    )
                    .await;
                match cleared {
                    Ok(_) => self.local.lock().marks.cleared(&id, since),
                    Err(e) => {
                        tracing::debug!(client_id = %id, error = %e, "clearing a dropped session's since failed");
                        self.fail(e);
                    }
                }
            })
            .await;
    }
}

/// The node a session is leaving and its marks, read before the attach.
#[derive(Debug, Default)]
pub(crate) struct PrevMarks {
    pub(crate) node: String,
    pub(crate) since: String,
    marks: HashMap<ChannelPattern, Offset>,
}

impl PrevMarks {
    /// Raises each name's start to its mark; returns the names raised, with their start.
    pub(crate) fn raise(&self, names: &mut [(ChannelPattern, Offset)]) -> Vec<(ChannelPattern, Offset)> {
        let mut raised = Vec::new();
        for (name, start) in names.iter_mut() {
            if let Some(mark) = self.marks.get(name)
                && *mark > *start
            {
                *start = *mark;
                raised.push((name.clone(), *mark));
            }
        }
        raised
    }
}

/// An attach in flight: while it lives, mark writes do not cover the session (its names
/// are not known here yet). Dropped before [`Attaching::registered`] (the attach failed or
/// was abandoned), Redis may record the session here anyway: it is disowned, and the node
/// it was leaving is told to check who holds it now.
pub(crate) struct Attaching<'a> {
    shared: &'a Arc<Shared>,
    id: ClientId,
    token: u64,
    /// Mark writes this node started before the attach: recorded as the session's `since`.
    pub(crate) since: u64,
    leaving: Option<String>,
    done: bool,
}

impl<'a> Attaching<'a> {
    pub(crate) fn begin(shared: &'a Arc<Shared>, id: &ClientId) -> Self {
        let (token, since) = shared.local.lock().marks.begin_attach();
        Attaching { shared, id: id.clone(), token, since, leaving: None, done: false }
    }

    /// The node Redis recorded the session on before this attach.
    pub(crate) fn leaving(&mut self, node: &str) {
        if !node.is_empty() && node != self.shared.node {
            self.leaving = Some(node.to_owned());
        }
    }

    /// The session is registered here with all its names: later writes cover it (unless it
    /// was dropped again meanwhile).
    pub(crate) fn registered(mut self) {
        let mut local = self.shared.local.lock();
        if !local.set_since(&self.id, self.since) {
            local.marks.disown(&self.id, self.since);
        }
        local.marks.end_attach(self.token);
        self.done = true;
    }
}

impl Drop for Attaching<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut local = self.shared.local.lock();
            local.marks.disown(&self.id, self.since);
            local.marks.end_attach(self.token);
        }
        // If the attach script ran, that node must stop holding the session (it checks
        // with Redis first, so a needless `close` is harmless).
        if let Some(node) = self.leaving.take() {
            self.shared.notify(node, "close", &self.id);
        }
    }
}

/// A subscribe in flight here: the name's mark cannot rise past where it was. Dropped
/// before [`Joining::done`], the subscription may be in Redis but not registered here: the
/// marks stop covering the session.
pub(crate) struct Joining<'a> {
    shared: &'a Shared,
    id: ClientId,
    name: ChannelPattern,
    done: bool,
}

impl<'a> Joining<'a> {
    pub(crate) fn begin(shared: &'a Shared, id: &ClientId, name: &ChannelPattern) -> Self {
        shared.local.lock().marks.begin_join(name);
        Joining { shared, id: id.clone(), name: name.clone(), done: false }
    }

    pub(crate) fn done(mut self) {
        self.done = true;
    }
}

impl Drop for Joining<'_> {
    fn drop(&mut self) {
        let mut local = self.shared.local.lock();
        local.marks.end_join(&self.name);
        if !self.done {
            local.disown_attached(&self.id);
        }
    }
}
