//! Conformance cases for the server API's operations (users, presence, targeted sends,
//! de-duplicated broadcasts, server-side subscriptions, listings, stats), run against every
//! backend by [`crate::conformance_suite`]. Sessions get a user from their handshake's
//! `ext.user` through a small test extension, as a JWT policy would bind one.

use std::sync::Arc;

use async_trait::async_trait;
use crier_protocol::{ClientId, Message};
use serde_json::{Value, json};

use crate::conformance::Harness;
use crate::{
    ApiError, Backend, Engine, EngineConfig, Event, Extension, Identity, PresenceStatus, RequestContext, Selector,
};

/// Binds `ext.user` of a handshake as the session's user.
struct UserFromExt;

#[async_trait]
impl Extension for UserFromExt {
    async fn identify(&self, m: &Message, _ctx: &RequestContext) -> Result<Option<Identity>, String> {
        let user = m.ext().and_then(|e| e.get("user")).and_then(Value::as_str);
        Ok(user.map(|u| Identity { user: Some(u.to_owned()), ..Identity::default() }))
    }

    fn has_outgoing(&self) -> bool {
        false
    }
}

fn harness(b: Arc<dyn Backend>) -> Harness {
    let config = EngineConfig { timeout_secs: 2, ..EngineConfig::default() };
    Harness { engine: Engine::builder(config, b).extension(Arc::new(UserFromExt)).build() }
}

/// Handshakes as `user` and makes the first connect.
async fn user_client(h: &Harness, user: &str) -> String {
    let r = h
        .send(vec![json!({"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["long-polling"],"ext":{"user":user}})])
        .await;
    let id = r[0].client_id().unwrap_or_default().to_owned();
    assert!(!id.is_empty(), "handshake failed: {r:?}");
    let c = h.connect(&id, Some(0)).await;
    assert_eq!(c[0].successful(), Some(true), "{c:?}");
    id
}

fn data(ms: &[Message]) -> Vec<Value> {
    ms.iter().filter_map(|m| m.data().cloned()).collect()
}

fn users(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

async fn status(h: &Harness, user: &str) -> (PresenceStatus, u64) {
    let p = h.engine.api_presence(&users(&[user])).await.expect("presence");
    (p[0].status, p[0].sessions)
}

/// A user's sessions all receive a user-targeted message, once, whatever they subscribe
/// to; presence follows sessions (online → away → online → offline) with timestamps, and
/// the changes are events.
pub async fn users_presence_and_targeted_sends(b: Arc<dyn Backend>) {
    let h = harness(b);
    let mut events = h.engine.events();
    let a1 = user_client(&h, "alice").await;
    let a2 = user_client(&h, "alice").await;
    let b1 = user_client(&h, "bob").await;
    let anon = h.client().await;
    for id in [&a1, &a2, &b1, &anon] {
        h.subscribe(id, "/inbox").await;
    }
    assert_eq!(status(&h, "alice").await, (PresenceStatus::Online, 2));
    assert_eq!(status(&h, "carol").await, (PresenceStatus::Offline, 0));
    assert_eq!(h.engine.api_online_users().await.expect("online"), 2);
    let p = h.engine.api_presence(&users(&["alice", "carol"])).await.expect("presence");
    assert!(p[0].online_since.is_some() && p[0].last_online.is_some() && p[0].away_since.is_none(), "{p:?}");
    assert_eq!((p[1].online_since, p[1].last_online), (None, None), "{p:?}");

    h.engine.api_send_to_users(&users(&["alice"]), "/inbox", json!({"n":1}), None, None).await.expect("send");
    h.engine
        .api_send_to_users(&users(&["alice", "bob", "alice"]), "/inbox", json!({"n":2}), None, None)
        .await
        .expect("send");
    assert_eq!(data(&h.poll(&a1).await), [json!({"n":1}), json!({"n":2})]);
    assert_eq!(data(&h.poll(&a2).await), [json!({"n":1}), json!({"n":2})]);
    assert_eq!(data(&h.poll(&b1).await), [json!({"n":2})]);
    assert!(h.poll(&anon).await.is_empty(), "an ordinary /inbox subscriber gets no user-targeted message");

    // Away is per session; the user is away only when every session is.
    let away = |id: &str, s: &str| json!({"channel":"/service/presence","clientId":id,"data":{"status":s}});
    let r = h.send(vec![away(&a1, "away")]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    assert_eq!(status(&h, "alice").await.0, PresenceStatus::Online);
    h.send(vec![away(&a2, "away")]).await;
    let p = h.engine.api_presence(&users(&["alice"])).await.expect("presence");
    assert_eq!(p[0].status, PresenceStatus::Away);
    assert!(p[0].away_since.is_some(), "{p:?}");
    h.send(vec![away(&a2, "online")]).await;
    assert_eq!(status(&h, "alice").await.0, PresenceStatus::Online);
    let bad = h.send(vec![away(&a1, "sleeping")]).await;
    assert_eq!(bad[0].successful(), Some(false), "{bad:?}");
    let no_user = h.send(vec![away(&anon, "away")]).await;
    assert_eq!(no_user[0].successful(), Some(false), "{no_user:?}");

    // Disconnecting through the API: by client id, then every session of a user.
    let sel = Selector { client_ids: vec![a1.clone()], ..Selector::default() };
    assert_eq!(h.engine.api_disconnect(&sel).await.expect("disconnect"), 1);
    let r = h.connect(&a1, Some(0)).await;
    assert_eq!(r[0].error(), Some(format!("401:{a1}:Unknown client").as_str()), "{r:?}");
    assert_eq!(status(&h, "alice").await, (PresenceStatus::Online, 1));
    let sel = Selector { users: users(&["alice"]), ..Selector::default() };
    assert_eq!(h.engine.api_disconnect(&sel).await.expect("disconnect"), 1);
    let p = h.engine.api_presence(&users(&["alice"])).await.expect("presence");
    assert_eq!((p[0].status, p[0].sessions, p[0].online_since), (PresenceStatus::Offline, 0, None), "{p:?}");
    assert!(p[0].last_online.is_some(), "{p:?}");
    assert_eq!(h.engine.api_online_users().await.expect("online"), 1);

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::Presence(c) = e
            && c.user == "alice"
        {
            seen.push(c.status);
        }
    }
    use PresenceStatus::*;
    assert_eq!(seen, [Online, Away, Online, Offline]);
}

/// A broadcast to several channels with de-duplication reaches each session once; without
/// it, once per channel the session subscribes to.
pub async fn broadcast_delivers_once_per_session(b: Arc<dyn Backend>) {
    let h = harness(b);
    let s = h.client().await;
    let t = h.client().await;
    for sub in ["/a", "/b", "/c/*"] {
        h.subscribe(&s, sub).await;
    }
    h.subscribe(&t, "/b").await;
    let channels = users(&["/a", "/b", "/c/x"]);
    h.engine.api_broadcast(&channels, json!("once"), None, true, None).await.expect("broadcast");
    let got = h.poll(&s).await;
    assert_eq!(data(&got), [json!("once")]);
    assert_eq!(got[0].channel(), Some("/a"), "the first channel given that reaches the session");
    assert_eq!(data(&h.poll(&t).await), [json!("once")]);
    h.engine.api_broadcast(&channels, json!("each"), None, false, None).await.expect("broadcast");
    assert_eq!(data(&h.poll(&s).await).len(), 3);
    assert_eq!(data(&h.poll(&t).await), [json!("each")]);
    let id = h.engine.api_publish("/b", json!("one"), Some(json!({"k":1})), None).await.expect("publish");
    assert!(!id.is_empty());
    let got = h.poll(&t).await;
    assert_eq!(data(&got), [json!("one")]);
    assert_eq!(got[0].ext(), Some(&json!({"k":1})));
}

/// An API publish with an idempotency key is published once per channel and key, however
/// often the app calls, and every call answers the same id; without a key, each call is a
/// message. A key is 1 to 256 characters.
pub async fn api_publish_with_an_idempotency_key_is_published_once(b: Arc<dyn Backend>) {
    let h = harness(b);
    let s = h.client().await;
    h.subscribe(&s, "/i/*").await;
    let publish = |channel: &'static str, data: Value, key: Option<&'static str>| {
        let engine = &h.engine;
        async move { engine.api_publish(channel, data, None, key).await.expect("publish") }
    };
    let first = publish("/i/a", json!(1), Some("order-1")).await;
    assert_eq!(publish("/i/a", json!(1), Some("order-1")).await, first, "a retry answers the same id");
    assert_eq!(publish("/i/a", json!("changed"), Some("order-1")).await, first, "one key is one message");
    publish("/i/b", json!(2), Some("order-1")).await;
    publish("/i/a", json!(3), Some("order-2")).await;
    let plain = publish("/i/a", json!(4), None).await;
    assert_ne!(plain, publish("/i/a", json!(4), None).await);
    assert_eq!(data(&h.poll(&s).await), [json!(1), json!(2), json!(3), json!(4), json!(4)]);
    let longest: &'static str = "é".repeat(crate::MAX_IDEMPOTENCY_KEY_LEN).leak();
    publish("/i/c", json!(5), Some(longest)).await;
    assert_eq!(data(&h.poll(&s).await), [json!(5)], "256 characters of two bytes each are a valid key");
    assert_eq!(h.engine.metrics().publish_retries.load(std::sync::atomic::Ordering::Relaxed), 2);
    let too_long = "k".repeat(crate::MAX_IDEMPOTENCY_KEY_LEN + 1);
    for bad in ["", too_long.as_str()] {
        let r = h.engine.api_publish("/i/a", json!(5), None, Some(bad)).await;
        assert!(matches!(r, Err(ApiError::Invalid(_))), "{r:?}");
    }
    assert!(h.poll(&s).await.is_empty(), "nothing published for a refused key");
}

/// A broadcast and a send to users with an idempotency key happen once per key, however
/// often the app calls, each call answering the same id; the two kinds of call do not
/// share keys.
pub async fn api_broadcasts_and_sends_with_an_idempotency_key_happen_once(b: Arc<dyn Backend>) {
    let h = harness(b);
    let s = user_client(&h, "alice").await;
    h.subscribe(&s, "/k/a").await;
    h.subscribe(&s, "/inbox").await;
    let channels = users(&["/k/a", "/k/b"]);
    let broadcast = |data: Value| h.engine.api_broadcast(&channels, data, None, true, Some("call-1"));
    let first = broadcast(json!("b")).await.expect("broadcast");
    assert_eq!(broadcast(json!("b")).await.expect("broadcast"), first);
    let alice = users(&["alice"]);
    let send = |data: Value| h.engine.api_send_to_users(&alice, "/inbox", data, None, Some("call-1"));
    let sent = send(json!("s")).await.expect("send");
    assert_ne!(sent, first, "a send's key is not a broadcast's");
    assert_eq!(send(json!("s")).await.expect("send"), sent);
    assert_eq!(data(&h.poll(&s).await), [json!("b"), json!("s")]);
    assert_eq!(h.engine.metrics().publish_retries.load(std::sync::atomic::Ordering::Relaxed), 2);
    let r = h.engine.api_broadcast(&channels, json!(1), None, true, Some("")).await;
    assert!(matches!(r, Err(ApiError::Invalid(_))), "{r:?}");
}

/// Sessions are subscribed and unsubscribed by user, by client id and by their current
/// subscriptions; listings show client-visible names only.
pub async fn server_side_subscriptions_and_listings(b: Arc<dyn Backend>) {
    let h = harness(b);
    let a1 = user_client(&h, "alice").await;
    let a2 = user_client(&h, "alice").await;
    let other = user_client(&h, "bob").await;
    let sel = Selector { users: users(&["alice"]), ..Selector::default() };
    let (n, changed) = h.engine.api_subscribe(&sel, &users(&["/p/1", "/p/2"]), true).await.expect("subscribe");
    assert_eq!((n, changed), (2, 4));
    h.publish("/p/1", json!(1)).await;
    assert_eq!(data(&h.poll(&a1).await), [json!(1)]);
    assert_eq!(data(&h.poll(&a2).await), [json!(1)]);
    assert!(h.poll(&other).await.is_empty());

    assert!(matches!(h.engine.api_channel("/p/1", Some(1)).await, Err(ApiError::Invalid(_))), "over the limit");
    let too_many = Selector { users: users(&["alice"]), limit: Some(1), ..Selector::default() };
    assert!(matches!(h.engine.api_subscribe(&too_many, &users(&["/p/9"]), true).await, Err(ApiError::Invalid(_))));
    let info = h.engine.api_channel("/p/1", Some(2)).await.expect("channel");
    let mut both = vec![a1.clone(), a2.clone()];
    both.sort();
    assert_eq!(info.sessions, both);
    assert_eq!(info.users, ["alice"]);
    let (list, next) = h.engine.api_channels("", 0, crate::MAX_CHANNELS_PAGE).await.expect("channels");
    assert_eq!(next, None, "one page");
    assert!(list.contains(&("/p/1".to_owned(), 2)), "{list:?}");
    assert!(list.iter().all(|(c, _)| !c.starts_with("/meta/")), "reserved names are not listed: {list:?}");
    let mine = h.engine.api_user_sessions("alice").await.expect("user");
    assert_eq!(mine.len(), 2);
    assert!(mine.iter().all(|s| s.subscriptions == ["/p/1", "/p/2"] && s.user.as_deref() == Some("alice")), "{mine:?}");
    let one = h.engine.api_session(&a1).await.expect("session").expect("exists");
    assert_eq!(one.subscriptions, ["/p/1", "/p/2"]);

    // Everyone subscribed to /p/2 loses /p/1 and /p/2.
    let sel = Selector { subscribers_of: users(&["/p/2"]), ..Selector::default() };
    let (n, changed) = h.engine.api_subscribe(&sel, &users(&["/p/1", "/p/2"]), false).await.expect("unsubscribe");
    assert_eq!((n, changed), (2, 4));
    h.publish("/p/1", json!(2)).await;
    assert!(h.poll(&a1).await.is_empty());
    assert!(h.engine.api_channel("/p/1", None).await.expect("channel").sessions.is_empty());
    let sel = Selector { client_ids: vec![other.clone()], ..Selector::default() };
    assert_eq!(h.engine.api_subscribe(&sel, &users(&["/q/**"]), true).await.expect("subscribe"), (1, 1));
    h.publish("/q/r/s", json!(3)).await;
    assert_eq!(data(&h.poll(&other).await), [json!(3)]);

    // Bad input is refused with a reason, never half-applied.
    let bad = |r: Result<(usize, usize), ApiError>| matches!(r, Err(ApiError::Invalid(_)));
    assert!(bad(h.engine.api_subscribe(&sel, &users(&["/ok", "no-slash"]), true).await));
    assert!(bad(h.engine.api_subscribe(&sel, &users(&["/meta/x"]), true).await));
    assert!(bad(h.engine.api_subscribe(&Selector::default(), &users(&["/ok"]), true).await));
    let bad_id = Selector { client_ids: vec!["not an id".into()], ..Selector::default() };
    assert!(bad(h.engine.api_subscribe(&bad_id, &users(&["/ok"]), true).await));
    assert!(h.engine.api_session(&other).await.expect("session").expect("exists").subscriptions == ["/q/**"]);
    assert!(matches!(h.engine.api_publish("/a/*", json!(1), None, None).await, Err(ApiError::Invalid(_))));
    assert!(matches!(h.engine.api_publish("/service/x", json!(1), None, None).await, Err(ApiError::Invalid(_))));
    assert!(matches!(h.engine.api_send_to_users(&[], "/x", json!(1), None, None).await, Err(ApiError::Invalid(_))));
    let unknown = ClientId::from_random([7; 20]).as_str().to_owned();
    assert_eq!(h.engine.api_session(&unknown).await.expect("session"), None);
}

/// `/api/channels` a page at a time: following the cursors lists every name once (Redis may
/// repeat one; none is missed), also while other names come and go, a prefix selects names
/// (glob characters in it are plain), and the limits are checked.
pub async fn channels_are_listed_a_page_at_a_time(b: Arc<dyn Backend>) {
    let h = harness(b);
    let id = h.client().await;
    let mut want = Vec::new();
    // More than Redis keeps in a compact set (128; SSCAN returns a compact set whole).
    for n in 0..140 {
        let name = format!("/page/{n:03}");
        h.subscribe(&id, &name).await;
        want.push(name);
    }
    h.subscribe(&id, "/page/*").await;
    want.push("/page/*".to_owned());
    h.subscribe(&id, "/other").await;
    want.sort();

    let list_all = |prefix: &'static str, limit: usize| {
        let h = &h;
        async move {
            let (mut got, mut cursor, mut pages) = (std::collections::BTreeSet::new(), 0, 0);
            loop {
                let (page, next) = h.engine.api_channels(prefix, cursor, limit).await.expect("a page");
                assert!(page.iter().all(|(c, n)| c.starts_with(prefix) && *n == 1), "{page:?}");
                got.extend(page.into_iter().map(|(c, _)| c));
                pages += 1;
                assert!(pages <= 100, "the listing ends");
                match next {
                    Some(c) => cursor = c,
                    None => return (got.into_iter().collect::<Vec<_>>(), pages),
                }
            }
        }
    };
    let (got, pages) = list_all("/page/", 20).await;
    assert_eq!(got, want, "every /page/ name once");
    assert!(pages > 1, "more than one page of 20");
    let (got, _) = list_all("/page/*", 20).await;
    assert_eq!(got, ["/page/*"], "a * in the prefix is itself");
    let (got, _) = list_all("", 1000).await;
    assert!(got.contains(&"/other".to_owned()) && got.len() == want.len() + 1, "{got:?}");

    // Names that come and go between pages: the ones there all along are still listed.
    let (first, Some(cursor)) = h.engine.api_channels("/page/", 0, 20).await.expect("a page") else {
        panic!("more than one page");
    };
    let r = h.send(vec![json!({"channel":"/meta/unsubscribe","clientId":id,"subscription":first[0].0})]).await;
    assert_eq!(r[0].successful(), Some(true), "{r:?}");
    h.subscribe(&id, "/page/new").await;
    let (mut rest, mut next) = (Vec::new(), Some(cursor));
    while let Some(c) = next {
        let (page, n) = h.engine.api_channels("/page/", c, 20).await.expect("a page");
        rest.extend(page.into_iter().map(|(c, _)| c));
        next = n;
    }
    let listed: std::collections::BTreeSet<_> = first.into_iter().map(|(c, _)| c).chain(rest).collect();
    assert!(want.iter().all(|w| listed.contains(w)), "every name there all along is listed");

    assert!(matches!(h.engine.api_channels("", 0, 0).await, Err(ApiError::Invalid(_))));
    let too_many = crate::MAX_CHANNELS_PAGE + 1;
    assert!(matches!(h.engine.api_channels("", 0, too_many).await, Err(ApiError::Invalid(_))));
    let long = "x".repeat(crate::MAX_PREFIX_LEN + 1);
    assert!(matches!(h.engine.api_channels(&long, 0, 10).await, Err(ApiError::Invalid(_))));
    assert!(matches!(h.engine.api_channels("", crate::MAX_CURSOR + 1, 10).await, Err(ApiError::Invalid(_))));
    // Any cursor within bounds is taken (one never handed out lists something or nothing).
    assert!(h.engine.api_channels("", 12_345, 10).await.is_ok());
}

/// The cluster figures count sessions, subscriptions and online users, and list this node.
pub async fn cluster_stats_count_what_exists(b: Arc<dyn Backend>) {
    let config = EngineConfig { timeout_secs: 2, stats_interval_secs: 1, ..EngineConfig::default() };
    let h = Harness { engine: Engine::builder(config, b).extension(Arc::new(UserFromExt)).build() };
    let a = user_client(&h, "alice").await;
    let anon = h.client().await;
    h.subscribe(&a, "/s/1").await;
    h.subscribe(&anon, "/s/1").await;
    h.subscribe(&anon, "/s/2").await;
    let mut stats = h.engine.api_stats().await.expect("stats");
    for _ in 0..50 {
        if !stats.nodes.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        stats = h.engine.api_stats().await.expect("stats");
    }
    assert_eq!((stats.sessions, stats.subscriptions, stats.channels, stats.online_users), (2, 3, 2, 1), "{stats:?}");
    assert_eq!(stats.nodes.len(), 1, "{stats:?}");

    // The channel and subscription counts (one read per channel) are taken at most once
    // per stats interval (1 s here), however often the API is asked.
    let interval = std::time::Duration::from_millis(1100);
    tokio::time::sleep(interval).await;
    let fresh = h.engine.api_stats().await.expect("stats");
    h.subscribe(&anon, "/s/3").await;
    let again = h.engine.api_stats().await.expect("stats");
    assert_eq!((fresh.subscriptions, fresh.channels), (3, 2), "{fresh:?}");
    assert_eq!((again.subscriptions, again.channels), (3, 2), "reused within the interval: {again:?}");
    assert_eq!(again.sessions, 2, "the rest is read each time: {again:?}");
    tokio::time::sleep(interval).await;
    let later = h.engine.api_stats().await.expect("stats");
    assert_eq!((later.subscriptions, later.channels), (4, 3), "taken again after it: {later:?}");
}

/// A session that ended without its presence update (a failed or interrupted disconnect,
/// a node that died half-way) is pruned from its user's presence when presence is read,
/// and by the sweep.
pub async fn presence_heals_sessions_ended_without_an_update(b: Arc<dyn Backend>) {
    let h = harness(b.clone());
    let a1 = user_client(&h, "alice").await;
    let a2 = user_client(&h, "alice").await;
    let z = user_client(&h, "zed").await;
    // Ended behind the engine's back: the record goes, the presence update never runs.
    for id in [&a1, &z] {
        b.destroy_session(&ClientId::parse(id).expect("id")).await.expect("destroy");
    }
    assert_eq!(status(&h, "alice").await, (PresenceStatus::Online, 1), "read heals");
    let mine = h.engine.api_user_sessions("alice").await.expect("user");
    assert_eq!(mine.iter().map(|s| s.client_id.as_str()).collect::<Vec<_>>(), [a2.as_str()]);
    // Nobody reads zed's presence: the sweep's sample finds it.
    assert_eq!(h.engine.api_online_users().await.expect("online"), 2);
    h.engine.sweep().await;
    assert_eq!(h.engine.api_online_users().await.expect("online"), 1);
    assert_eq!(status(&h, "zed").await, (PresenceStatus::Offline, 0));
}
