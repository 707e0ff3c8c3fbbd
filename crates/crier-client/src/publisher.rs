//! A batching publisher for backends: many publishes, few requests.
//!
//! Publishes are queued as they are made and a background task sends them in batches:
//! one HTTP POST (or one WebSocket frame) carries up to `max_batch` messages, sent as
//! soon as the batch is full or `linger` after its first message. Each publish still
//! gets its own result, matched to the server's reply by message `id`.

use std::sync::Arc;
use std::time::Duration;

use crier_protocol::Message;
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{DEFAULT_REQUEST_TIMEOUT, Transport, parse_http_url, ws_url};
use crate::error::ClientError;
use crate::ids::IdGen;
use crate::session::{Shared, parse_name};
use crate::transport::http::HttpTransport;
use crate::transport::{Link, Route};
use crate::wire::{self, check_reply, find_reply};

/// Where a publisher sends.
#[derive(Debug)]
enum Target {
    /// Its own connection, no session (Faye accepts publishes without `clientId`).
    Url { url: String, transport: Transport, http: Option<reqwest::Client> },
    /// A client's session.
    Session(Arc<Shared>),
}

/// Configures a [`Publisher`]; from [`Publisher::builder`] (anonymous) or
/// [`Client::publisher`](crate::Client::publisher) (within a session).
#[derive(Debug)]
pub struct PublisherBuilder {
    target: Target,
    max_batch: usize,
    linger: Duration,
    max_in_flight: usize,
    queue_capacity: usize,
    request_timeout: Duration,
    ext: Option<Value>,
}

impl PublisherBuilder {
    fn new(target: Target) -> Self {
        PublisherBuilder {
            target,
            max_batch: 100,
            linger: Duration::from_millis(1),
            max_in_flight: 1,
            queue_capacity: 100_000,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            ext: None,
        }
    }

    pub(crate) fn for_session(shared: Arc<Shared>) -> Self {
        let timeout = shared.cfg.request_timeout;
        PublisherBuilder { request_timeout: timeout, ..Self::new(Target::Session(shared)) }
    }

    /// An `ext` object sent with every message, e.g. `{"password": "..."}` for a server
    /// whose `auth.publish_secret` guards publishing (the server strips it before delivery).
    pub fn ext(mut self, ext: Value) -> Self {
        self.ext = Some(ext);
        self
    }

    /// The transport of an anonymous publisher (default [`Transport::LongPolling`],
    /// i.e. plain HTTP POSTs). Ignored for a session publisher, which uses the session's.
    pub fn transport(mut self, t: Transport) -> Self {
        if let Target::Url { transport, .. } = &mut self.target {
            *transport = t;
        }
        self
    }

    /// The `reqwest::Client` of an anonymous publisher (ignored for a session publisher).
    pub fn http_client(mut self, c: reqwest::Client) -> Self {
        if let Target::Url { http, .. } = &mut self.target {
            *http = Some(c);
        }
        self
    }

    /// Most messages in one request (default 100).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// How long a batch waits for more messages after its first one (default 1 ms; zero
    /// sends whatever is queued at once).
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Most batches awaiting their reply at once (default 1). With 1, messages reach
    /// the server in the order `publish` was called; with more, throughput rises but
    /// batches may overtake each other (over HTTP they travel on different connections).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Most publishes queued before [`Publisher::publish`] futures wait for room
    /// (default 100 000).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Time-out of each batch request (default: the client's request time-out, or 10 s).
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Builds the publisher and starts its batching task.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, because it spawns the task (as `tokio::spawn` does).
    pub fn build(self) -> Result<Publisher, ClientError> {
        let sink = match self.target {
            Target::Session(shared) => Sink::Session(shared),
            Target::Url { url, transport, http } => {
                let url = parse_http_url(&url)?;
                let ws = match transport {
                    Transport::WebSocket => Some(ws_url(&url)?),
                    Transport::LongPolling => None,
                };
                let http = match http {
                    Some(c) => c,
                    None => reqwest::Client::builder().build()?,
                };
                let link = Link::new(HttpTransport::new(http, url), ws, None, CancellationToken::new());
                Sink::Anonymous { link: Box::new(link), ids: IdGen::default() }
            }
        };
        let (queue, rx) = mpsc::channel(self.queue_capacity);
        let batching = Batching {
            max_batch: self.max_batch,
            linger: self.linger,
            in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
            timeout: self.request_timeout,
        };
        let task = tokio::spawn(run(Arc::new(sink), rx, batching));
        Ok(Publisher { queue, task, ext: self.ext })
    }
}

/// Publishes in batches and returns each message's own result.
///
/// Dropping the publisher stops accepting publishes; the ones already queued are still
/// sent (the task ends once they have their results, each bounded by the request
/// time-out), so their futures resolve. [`Publisher::close`] waits for that.
///
/// ```no_run
/// # async fn demo() -> Result<(), crier_client::ClientError> {
/// use crier_client::Publisher;
/// use serde_json::json;
///
/// // Anonymous: no handshake; one POST carries up to 100 publishes.
/// let publisher = Publisher::builder("http://127.0.0.1:8000/faye").build()?;
/// let pending: Vec<_> = (0..1000)
///     .map(|i| publisher.publish("/prices/acme", json!({ "seq": i })))
///     .collect();
/// for result in futures::future::join_all(pending).await {
///     let reply = result?; // the server's reply to that one message
///     assert_eq!(reply.successful(), Some(true));
/// }
/// publisher.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Publisher {
    queue: mpsc::Sender<Job>,
    task: JoinHandle<()>,
    ext: Option<Value>,
}

#[derive(Debug)]
struct Job {
    msg: Message,
    done: oneshot::Sender<Result<Message, ClientError>>,
}

impl Publisher {
    /// Starts configuring an anonymous publisher for the endpoint `url`.
    pub fn builder(url: impl Into<String>) -> PublisherBuilder {
        PublisherBuilder::new(Target::Url { url: url.into(), transport: Transport::LongPolling, http: None })
    }

    /// Queues a publish now (in call order, while the queue has room) and returns a
    /// future of the server's reply to it. The future need not be polled for the
    /// message to be sent; it resolves to [`ClientError::Bayeux`] if the server refused
    /// the message, or to the batch's transport error.
    pub fn publish(
        &self,
        channel: &str,
        data: Value,
    ) -> impl Future<Output = Result<Message, ClientError>> + Send + 'static {
        let (done, result) = oneshot::channel();
        let mut waiting = None;
        match parse_name(channel) {
            Err(e) => {
                let _ = done.send(Err(e));
            }
            Ok(name) => {
                let mut msg = wire::publish("", name.as_str(), data, None);
                if let Some(ext) = &self.ext {
                    msg.set("ext", ext.clone());
                }
                let job = Job { msg, done };
                match self.queue.try_send(job) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(job)) => waiting = Some((self.queue.clone(), job)),
                    Err(mpsc::error::TrySendError::Closed(job)) => {
                        let _ = job.done.send(Err(ClientError::Closed));
                    }
                }
            }
        }
        async move {
            if let Some((queue, job)) = waiting {
                // The queue is full: this future carries the job until there is room.
                if let Err(mpsc::error::SendError(job)) = queue.send(job).await {
                    let _ = job.done.send(Err(ClientError::Closed));
                }
            }
            result.await.unwrap_or(Err(ClientError::Closed))
        }
    }

    /// Stops accepting publishes and waits until every queued one has its result.
    pub async fn close(self) {
        let Publisher { queue, task, .. } = self;
        drop(queue);
        let _ = task.await;
    }
}

/// Where batches go.
#[derive(Debug)]
enum Sink {
    // Boxed: the link is large, and the enum sits in an `Arc` anyway.
    Anonymous { link: Box<Link>, ids: IdGen },
    Session(Arc<Shared>),
}

#[derive(Debug, Clone)]
struct Batching {
    max_batch: usize,
    linger: Duration,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

/// The batching task: gathers jobs into batches and sends up to `in_flight` at once.
async fn run(sink: Arc<Sink>, mut rx: mpsc::Receiver<Job>, b: Batching) {
    let mut sending = JoinSet::new();
    loop {
        // Reap finished batches so the set does not grow.
        while sending.try_join_next().is_some() {}
        let Ok(permit) = b.in_flight.clone().acquire_owned().await else { break };
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        let deadline = Instant::now() + b.linger;
        while batch.len() < b.max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        let sink = sink.clone();
        let timeout = b.timeout;
        sending.spawn(async move {
            send_batch(&sink, batch, timeout).await;
            drop(permit);
        });
    }
    // The queue is closed: let the batches in flight finish so their futures resolve.
    while sending.join_next().await.is_some() {}
}

/// Sends one batch and resolves each job with its own reply.
async fn send_batch(sink: &Sink, jobs: Vec<Job>, timeout: Duration) {
    let (ids, client_id) = match sink {
        Sink::Anonymous { ids, .. } => (ids, None),
        Sink::Session(shared) => match shared.wait_established().await {
            Ok(c) => (&shared.ids, Some(c)),
            Err(e) => return jobs.into_iter().for_each(|j| drop(j.done.send(Err(e.clone())))),
        },
    };
    let mut msgs = Vec::with_capacity(jobs.len());
    let mut dones = Vec::with_capacity(jobs.len());
    for Job { mut msg, done } in jobs {
        let id = ids.next();
        msg.set("id", id.as_str());
        if let Some(c) = &client_id {
            msg.set("clientId", c.as_str());
        }
        msgs.push(msg);
        dones.push((id, done));
    }
    let result = match sink {
        Sink::Anonymous { link, .. } => link.request(&msgs, timeout, Route::Preferred).await,
        Sink::Session(shared) => shared.send(&msgs, timeout).await,
    };
    match result {
        Ok(replies) => {
            for (id, done) in dones {
                let _ = done.send(check_reply(find_reply(&replies, &id), "publish"));
            }
        }
        Err(e) => {
            for (_, done) in dones {
                let _ = done.send(Err(e.clone()));
            }
        }
    }
}
