//! One handler per endpoint: parse, check the list limits, call the engine, answer JSON.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use crier_engine::Selector;
use serde::de::DeserializeOwned;

use super::types::*;
use crate::error::ApiFailure;
use crate::state::AppState;

type Answer<T> = Result<Json<T>, ApiFailure>;

/// Reads at most `api.max_body_bytes` and parses the JSON with the reason serde gives
/// (field, line and column).
async fn parse<T: DeserializeOwned>(state: &AppState, body: Body) -> Result<T, ApiFailure> {
    let max = state.api.max_body_bytes;
    let read = axum::body::to_bytes(body, max);
    let bytes = crate::request::within(state.config.read_timeout(), read)
        .await
        .ok_or(ApiFailure::BodyTimeout(state.config.read_timeout_secs))?
        .map_err(|_| ApiFailure::TooLarge(max))?;
    serde_json::from_slice(&bytes).map_err(|e| ApiFailure::Invalid(format!("invalid request body: {e}")))
}

fn path_param(p: Result<Path<String>, PathRejection>) -> Result<String, ApiFailure> {
    p.map(|Path(s)| s).map_err(|e| ApiFailure::Invalid(format!("invalid path parameter: {e}")))
}

/// Refuses lists longer than `api.max_items`.
fn limit(state: &AppState, lists: &[(&str, usize)]) -> Result<(), ApiFailure> {
    let max = state.api.max_items;
    match lists.iter().find(|(_, n)| *n > max) {
        Some((name, n)) => Err(ApiFailure::Invalid(format!("{name}: {n} entries, the limit is {max} (api.max_items)"))),
        None => Ok(()),
    }
}

fn selector(state: &AppState, client_ids: Vec<String>, users: Vec<String>, subscribers_of: Vec<String>) -> Selector {
    Selector { client_ids, users, subscribers_of, limit: Some(state.api.max_sessions) }
}

pub(super) async fn openapi(State(state): State<Arc<AppState>>) -> Response {
    Json(super::openapi::document(&state.api.path)).into_response()
}

pub(super) async fn publish(State(state): State<Arc<AppState>>, body: Body) -> Answer<PublishResponse> {
    let r: PublishRequest = parse(&state, body).await?;
    let id = state.engine.api_publish(&r.channel, r.data, r.ext, r.idempotency_key.as_deref()).await?;
    Ok(Json(PublishResponse { id }))
}

pub(super) async fn broadcast(State(state): State<Arc<AppState>>, body: Body) -> Answer<PublishResponse> {
    let r: BroadcastRequest = parse(&state, body).await?;
    limit(&state, &[("channels", r.channels.len())])?;
    let id = state.engine.api_broadcast(&r.channels, r.data, r.ext, r.dedupe, r.idempotency_key.as_deref()).await?;
    Ok(Json(PublishResponse { id }))
}

pub(super) async fn send(State(state): State<Arc<AppState>>, body: Body) -> Answer<PublishResponse> {
    let r: SendRequest = parse(&state, body).await?;
    limit(&state, &[("users", r.users.len())])?;
    let id = state.engine.api_send_to_users(&r.users, &r.channel, r.data, r.ext, r.idempotency_key.as_deref()).await?;
    Ok(Json(PublishResponse { id }))
}

async fn change(state: &AppState, body: Body, subscribe: bool) -> Answer<SubscribeResponse> {
    let r: SubscribeRequest = parse(state, body).await?;
    limit(
        state,
        &[
            ("client_ids", r.client_ids.len()),
            ("users", r.users.len()),
            ("subscribers_of", r.subscribers_of.len()),
            ("channels", r.channels.len()),
        ],
    )?;
    let sel = selector(state, r.client_ids, r.users, r.subscribers_of);
    let (sessions, changed) = state.engine.api_subscribe(&sel, &r.channels, subscribe).await?;
    Ok(Json(SubscribeResponse { sessions: sessions as u64, changed: changed as u64 }))
}

pub(super) async fn subscribe(State(state): State<Arc<AppState>>, body: Body) -> Answer<SubscribeResponse> {
    change(&state, body, true).await
}

pub(super) async fn unsubscribe(State(state): State<Arc<AppState>>, body: Body) -> Answer<SubscribeResponse> {
    change(&state, body, false).await
}

pub(super) async fn disconnect(State(state): State<Arc<AppState>>, body: Body) -> Answer<DisconnectResponse> {
    let r: SelectRequest = parse(&state, body).await?;
    limit(
        &state,
        &[("client_ids", r.client_ids.len()), ("users", r.users.len()), ("subscribers_of", r.subscribers_of.len())],
    )?;
    let n = state.engine.api_disconnect(&selector(&state, r.client_ids, r.users, r.subscribers_of)).await?;
    Ok(Json(DisconnectResponse { disconnected: n as u64 }))
}

pub(super) async fn session(
    State(state): State<Arc<AppState>>,
    client_id: Result<Path<String>, PathRejection>,
) -> Answer<Session> {
    let client_id = path_param(client_id)?;
    match state.engine.api_session(&client_id).await? {
        Some(s) => Ok(Json(s)),
        None => Err(ApiFailure::NotFound(format!("no session {client_id}"))),
    }
}

pub(super) async fn user(
    State(state): State<Arc<AppState>>,
    user: Result<Path<String>, PathRejection>,
) -> Answer<UserResponse> {
    let user = path_param(user)?;
    let sessions = state.engine.api_user_sessions(&user).await?;
    let presence = state.engine.api_presence(std::slice::from_ref(&user)).await?.pop();
    let presence = presence.ok_or(ApiFailure::Unavailable)?;
    let channels: BTreeSet<String> = sessions.iter().flat_map(|s| s.subscriptions.iter().cloned()).collect();
    Ok(Json(UserResponse { user, presence, sessions, channels: channels.into_iter().collect() }))
}

#[derive(serde::Deserialize)]
pub(super) struct ChannelsQuery {
    prefix: Option<String>,
    cursor: Option<u64>,
    limit: Option<usize>,
}

/// Names per page when the query gives no `limit`.
pub(super) const DEFAULT_CHANNELS_PAGE: usize = 1000;

pub(super) async fn channels(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ChannelsQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<ChannelsResponse> {
    let Query(q) = query.map_err(|e| ApiFailure::Invalid(format!("invalid query: {}", e.body_text())))?;
    let (page, next_cursor) = state
        .engine
        .api_channels(
            q.prefix.as_deref().unwrap_or(""),
            q.cursor.unwrap_or(0),
            q.limit.unwrap_or(DEFAULT_CHANNELS_PAGE),
        )
        .await?;
    let channels = page.into_iter().map(|(channel, sessions)| ChannelCount { channel, sessions }).collect();
    Ok(Json(ChannelsResponse { channels, next_cursor }))
}

#[derive(serde::Deserialize)]
pub(super) struct ChannelQuery {
    channel: Option<String>,
}

pub(super) async fn channel_subscribers(
    State(state): State<Arc<AppState>>,
    query: Result<Query<ChannelQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Channel> {
    let Query(q) = query.map_err(|e| ApiFailure::Invalid(format!("invalid query: {}", e.body_text())))?;
    let channel = q.channel.ok_or_else(|| ApiFailure::Invalid("missing query parameter: channel".to_owned()))?;
    Ok(Json(state.engine.api_channel(&channel, Some(state.api.max_sessions)).await?))
}

pub(super) async fn presence(State(state): State<Arc<AppState>>, body: Body) -> Answer<PresenceResponse> {
    let r: PresenceRequest = parse(&state, body).await?;
    limit(&state, &[("users", r.users.len())])?;
    Ok(Json(PresenceResponse { presence: state.engine.api_presence(&r.users).await? }))
}

pub(super) async fn online(State(state): State<Arc<AppState>>) -> Answer<OnlineResponse> {
    Ok(Json(OnlineResponse { online_users: state.engine.api_online_users().await? }))
}

pub(super) async fn stats(State(state): State<Arc<AppState>>) -> Answer<Stats> {
    Ok(Json(state.engine.api_stats().await?))
}
