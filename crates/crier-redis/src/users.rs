//! Users, presence, subscriber listings and node heartbeats: the Redis side of the server
//! API (see `crier_engine::Engine::api_*`). Key names are in `keys.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use crier_engine::{BackendError, ChannelsPage, Delivery, Millis, NodeStats, Presence, PresenceChange, PresenceStatus};
use crier_protocol::{ChannelName, ChannelPattern, ClientId};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::backend::Shared;
use crate::keys::user_hex;
use crate::values::{array, int, text};

fn status(s: &str) -> Option<PresenceStatus> {
    match s {
        "online" => Some(PresenceStatus::Online),
        "away" => Some(PresenceStatus::Away),
        "offline" => Some(PresenceStatus::Offline),
        _ => None,
    }
}

fn millis(v: Option<&Value>) -> Option<Millis> {
    v.and_then(text).and_then(|t| t.parse().ok())
}

impl Shared {
    /// Runs one presence operation; the new status if it changed.
    pub(crate) async fn presence_op(
        &self,
        op: &str,
        user: &str,
        id: &ClientId,
        now: Millis,
    ) -> Result<Option<PresenceChange>, BackendError> {
        let hex = user_hex(user);
        let keys = vec![
            self.keys.user_sessions(&hex),
            self.keys.user_away(&hex),
            self.keys.user_presence(&hex),
            self.keys.online(),
        ];
        let ttl = (self.config.presence_retention_secs * 1000).to_string();
        let args = vec![op.to_owned(), id.as_str().to_owned(), now.to_string(), ttl, user.to_owned()];
        let v: Value =
            self.scripts.presence.evalsha_with_reload(&self.client, keys, args).await.map_err(|e| self.fail(e))?;
        let Some(parts) = array(v) else { return Ok(None) };
        let before = parts.first().and_then(text).and_then(|s| status(&s));
        let after = parts.get(1).and_then(text).and_then(|s| status(&s));
        Ok(match (before, after) {
            (Some(b), Some(a)) if a != b => Some(PresenceChange { user: user.to_owned(), status: a, at: now }),
            _ => None,
        })
    }

    pub(crate) async fn user_sessions(&self, user: &str) -> Result<Vec<ClientId>, BackendError> {
        let ids: Vec<String> =
            self.client.smembers(self.keys.user_sessions(&user_hex(user))).await.map_err(|e| self.fail(e))?;
        let mut v: Vec<ClientId> = ids.iter().filter_map(|s| ClientId::parse(s)).collect();
        v.sort();
        Ok(v)
    }

    pub(crate) async fn presence(&self, users: &[String], now: Millis) -> Result<Vec<Presence>, BackendError> {
        let reads = users.iter().map(|user| async move {
            let hex = user_hex(user);
            let keys = vec![self.keys.user_sessions(&hex), self.keys.user_away(&hex), self.keys.user_presence(&hex)];
            let v: Value =
                self.scripts.presence_read.evalsha_with_reload(&self.client, keys, Vec::<String>::new()).await?;
            Ok::<_, fred::error::Error>((user, array(v).unwrap_or_default()))
        });
        let rows = futures::future::try_join_all(reads).await.map_err(|e| self.fail(e))?;
        Ok(rows
            .into_iter()
            .map(|(user, p)| {
                let sessions = p.first().and_then(int).unwrap_or(0).max(0) as u64;
                let away = p.get(1).and_then(int).unwrap_or(0).max(0) as u64;
                let status = if sessions == 0 {
                    PresenceStatus::Offline
                } else if away >= sessions {
                    PresenceStatus::Away
                } else {
                    PresenceStatus::Online
                };
                let online = status != PresenceStatus::Offline;
                Presence {
                    user: user.clone(),
                    status,
                    sessions,
                    online_since: millis(p.get(2)).filter(|_| online),
                    last_online: if online { Some(now) } else { millis(p.get(3)) },
                    away_since: millis(p.get(4)).filter(|_| status == PresenceStatus::Away),
                }
            })
            .collect())
    }

    pub(crate) async fn online_users(&self) -> Result<u64, BackendError> {
        let n: i64 = self.client.scard(self.keys.online()).await.map_err(|e| self.fail(e))?;
        Ok(n.max(0) as u64)
    }

    pub(crate) async fn online_user_sample(&self, n: usize) -> Result<Vec<String>, BackendError> {
        let v: Value = self.client.srandmember(self.keys.online(), Some(n)).await.map_err(|e| self.fail(e))?;
        Ok(array(v).unwrap_or_default().iter().filter_map(text).collect())
    }

    /// Logs each delivery under exactly its name (see `Backend::publish_to`).
    pub(crate) async fn publish_to(&self, targets: &[(ChannelPattern, Arc<Delivery>)]) -> Result<(), BackendError> {
        // One shared encoding per distinct delivery (a broadcast has one per channel).
        let mut encoded: Vec<(&Arc<Delivery>, fred::bytes_utils::Str)> = Vec::new();
        for (_, d) in targets {
            if !encoded.iter().any(|(k, _)| Arc::ptr_eq(k, d)) {
                encoded.push((d, fred::bytes_utils::Str::from(d.json.as_ref())));
            }
        }
        let calls = targets.iter().map(|(name, d)| {
            let json = encoded.iter().find(|(k, _)| Arc::ptr_eq(k, d)).map(|(_, j)| j.clone()).unwrap_or_default();
            async move { self.publish_one(name, &d.channel, d, &json, None).await }
        });
        futures::future::try_join_all(calls).await?;
        Ok(())
    }

    pub(crate) async fn subscribers(&self, channel: &ChannelName) -> Result<Vec<ClientId>, BackendError> {
        let reads = channel
            .expand()
            .into_iter()
            .map(|name| async move { self.client.smembers::<Vec<String>, _>(self.keys.members(&name)).await });
        let sets = futures::future::try_join_all(reads).await.map_err(|e| self.fail(e))?;
        let all: BTreeSet<ClientId> = sets.iter().flatten().filter_map(|s| ClientId::parse(s)).collect();
        Ok(all.into_iter().collect())
    }

    /// Every registered name with its member count (see [`Shared::counted`]).
    pub(crate) async fn channels(&self) -> Result<Vec<(ChannelPattern, u64)>, BackendError> {
        let names: Vec<String> = self.client.smembers(self.keys.names()).await.map_err(|e| self.fail(e))?;
        let mut out = self.counted(names).await?;
        out.sort();
        Ok(out)
    }

    /// A page of [`Shared::channels`] with SSCAN: the cursor is Redis's. Scans until the
    /// page has `limit` names or the set ends, at most 16 calls (a `prefix` few names have
    /// can leave a page short, even empty).
    pub(crate) async fn channels_page(
        &self,
        prefix: &str,
        cursor: u64,
        limit: usize,
    ) -> Result<ChannelsPage, BackendError> {
        let mut at = cursor;
        let pattern = format!("{}*", glob_escape(prefix));
        // SSCAN's COUNT is a hint: a page may pass `limit` by about one call's worth.
        let count = limit.clamp(1, 1000).to_string();
        let mut names = BTreeSet::new();
        for _ in 0..16 {
            let cmd = CustomCommand::new_static("SSCAN", ClusterHash::FirstKey, false);
            let args =
                vec![self.keys.names(), at.to_string(), "MATCH".into(), pattern.clone(), "COUNT".into(), count.clone()];
            let reply: Value = self.client.custom(cmd, args).await.map_err(|e| self.fail(e))?;
            let (next, found) = match array(reply).as_deref() {
                Some([next, found]) => {
                    (text(next).and_then(|t| t.parse().ok()), array(found.clone()).unwrap_or_default())
                }
                _ => (None, Vec::new()),
            };
            let Some(next) = next else { return Err(BackendError::unavailable("SSCAN gave an unexpected reply")) };
            names.extend(found.iter().filter_map(text));
            at = next;
            if at == 0 || names.len() >= limit {
                break;
            }
        }
        let mut channels = self.counted(names.into_iter().collect()).await?;
        channels.sort();
        Ok(ChannelsPage { channels, next: (at != 0).then_some(at) })
    }

    /// `names` with their member counts; names whose members are gone are dropped from the
    /// registry, then checked again: a subscribe that re-registered the name in between
    /// keeps it listed.
    async fn counted(&self, names: Vec<String>) -> Result<Vec<(ChannelPattern, u64)>, BackendError> {
        let names: Vec<ChannelPattern> = names.iter().filter_map(|n| ChannelPattern::parse(n).ok()).collect();
        let counts = futures::future::try_join_all(
            names.iter().map(|n| async move { self.client.scard::<i64, _>(self.keys.members(n)).await }),
        )
        .await
        .map_err(|e| self.fail(e))?;
        let mut out = Vec::with_capacity(names.len());
        for (name, n) in names.into_iter().zip(counts) {
            if n > 0 {
                out.push((name, n as u64));
                continue;
            }
            let _: Value = self.client.srem(self.keys.names(), name.as_str()).await.map_err(|e| self.fail(e))?;
            let again: i64 = self.client.scard(self.keys.members(&name)).await.map_err(|e| self.fail(e))?;
            if again > 0 {
                let _: Value = self.client.sadd(self.keys.names(), name.as_str()).await.map_err(|e| self.fail(e))?;
                out.push((name, again as u64));
            }
        }
        Ok(out)
    }

    pub(crate) async fn session_count(&self) -> Result<u64, BackendError> {
        let n: i64 = self.client.zcard(self.keys.index()).await.map_err(|e| self.fail(e))?;
        Ok(n.max(0) as u64)
    }

    /// Stores this node's figures with a TTL of a few intervals, so a dead node drops out.
    pub(crate) async fn heartbeat(&self, stats: &NodeStats, ttl_ms: u64) -> Result<(), BackendError> {
        let json = serde_json::to_string(stats).map_err(|e| BackendError::unavailable(format!("stats: {e}")))?;
        let _: Value = self
            .client
            .set(self.keys.node_stats(&stats.node), json, Some(Expiration::PX(ttl_ms as i64)), None, false)
            .await
            .map_err(|e| self.fail(e))?;
        let _: Value =
            self.client.sadd(self.keys.stats_nodes(), stats.node.as_str()).await.map_err(|e| self.fail(e))?;
        Ok(())
    }

    pub(crate) async fn nodes(&self, since: Millis) -> Result<Vec<NodeStats>, BackendError> {
        let ids: Vec<String> = self.client.smembers(self.keys.stats_nodes()).await.map_err(|e| self.fail(e))?;
        let reads =
            ids.iter().map(|id| async move { self.client.get::<Option<String>, _>(self.keys.node_stats(id)).await });
        let values = futures::future::try_join_all(reads).await.map_err(|e| self.fail(e))?;
        let mut out = Vec::new();
        for (id, v) in ids.iter().zip(values) {
            match v.and_then(|j| serde_json::from_str::<NodeStats>(&j).ok()) {
                Some(s) if s.updated_ms >= since => out.push(s),
                Some(_) => {}
                // Expired: the node stopped sending heartbeats.
                None => {
                    let _: Value =
                        self.client.srem(self.keys.stats_nodes(), id.as_str()).await.map_err(|e| self.fail(e))?;
                }
            }
        }
        out.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(out)
    }
}

/// `s` with Redis glob's special characters (`*`, `?`, `[`, `]`, `\`) escaped, to match
/// itself in a MATCH pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
