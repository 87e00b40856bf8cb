//! Scale-out: several `tether serve` instances sharing routing through NATS.
//!
//! A [`Cluster`] is one instance's handle on the broker. It offers the three
//! things a relay needs from its siblings, each described on the wire in
//! docs/SCALE-OUT.md so another implementation can join the same cluster:
//!
//! - per-peer delivery ([`Cluster::hold`], [`Cluster::deliver`]): the
//!   instance holding a peer subscribes to the peer's subject; a relay to it
//!   from any instance is one publish;
//! - global registration ([`Cluster::announce_registration`]): one entry per
//!   peer in a JetStream KV bucket, replaced by compare-and-set in the order
//!   the single server uses; the instance whose registration was replaced
//!   gets a [`ClusterEvent::Superseded`];
//! - presence per room ([`Cluster::join`], [`Cluster::watch_room`]): one KV
//!   entry per member with the bucket's `max_age` as TTL, refreshed by the
//!   holding instance, so a crashed instance's peers leave within the TTL.
//!
//! Nothing here knows about sessions or sockets; the server wires these
//! calls to its registry.
//!
//! Architecture invariant: subject names and keys are derived from validated
//! ids ([`PeerId`], [`RoomId`], [`InstanceId`]) written as hex, never from
//! raw client text, and nothing received from the bus can panic the
//! instance: malformed messages are counted ([`ClusterStats::malformed`])
//! and dropped.

mod delivery;
mod presence;
mod registration;
mod subjects;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tether_signal::protocol::{PeerId, RoomId};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

pub use delivery::{Frame, Inbox};
pub use presence::{LeftReason, PresenceChange, RoomMembers, RoomWatch};
pub use registration::{Announcement, Replaced, Superseded};

/// The name of one `tether serve` instance in a cluster: 1 to 64 bytes of
/// ASCII letters, digits and `- _ . : @` (the rules of [`PeerId`]).
/// Instances of one cluster must have distinct ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(Arc<str>);

impl InstanceId {
    /// Validates an instance id.
    ///
    /// # Errors
    ///
    /// [`ClusterError::InstanceId`] when `value` breaks the naming rules.
    pub fn new(value: impl Into<String>) -> Result<InstanceId, ClusterError> {
        let value = value.into();
        // Same alphabet and length as a peer id; reuse its validation.
        match PeerId::new(value.clone()) {
            Ok(_) => Ok(InstanceId(value.into())),
            Err(err) => Err(ClusterError::InstanceId { value, reason: err.reason }),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How to reach the broker and how this instance takes part.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:port`, `tls://…`); the client picks
    /// one and moves on to the others (and to servers the cluster
    /// advertises) when it is lost, reconnecting forever.
    pub urls: Vec<String>,
    /// This instance's id; must differ from every other instance's.
    pub instance_id: InstanceId,
    /// How long a member stays in a room's presence without being refreshed.
    /// It becomes the presence bucket's `max_age` when this instance creates
    /// the bucket; an existing bucket's `max_age` wins (all instances must
    /// agree, so the first one sets it). Default 15 s.
    pub presence_ttl: Duration,
    /// `max_age` of the registration bucket when this instance creates it:
    /// how long an entry left behind by a crashed instance is kept to order
    /// later attempts of the same client session. Default 24 h.
    pub registration_max_age: Duration,
    /// Bound on the first connection to the broker. Default 5 s.
    pub connect_timeout: Duration,
    /// JetStream replicas of the two buckets when this instance creates
    /// them: 1 for a single NATS server, 3 for a 3-node NATS cluster that
    /// must survive losing a node. Default 1.
    pub replicas: usize,
}

impl ClusterConfig {
    /// A configuration with the defaults above.
    pub fn new(urls: Vec<String>, instance_id: InstanceId) -> ClusterConfig {
        ClusterConfig {
            urls,
            instance_id,
            presence_ttl: Duration::from_secs(15),
            registration_max_age: Duration::from_secs(24 * 3600),
            connect_timeout: Duration::from_secs(5),
            replicas: 1,
        }
    }
}

/// Everything that can fail in the cluster layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// [`ClusterConfig::urls`] was empty.
    #[error("no nats url given")]
    NoUrls,
    /// A URL the NATS client cannot use.
    #[error("invalid nats url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// An instance id breaking the naming rules.
    #[error("invalid instance id {value:?}: {reason}")]
    InstanceId {
        /// The id as given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The first connection to the broker failed.
    #[error("cannot connect to nats ({urls}): {reason}")]
    Connect {
        /// The URLs tried, comma-separated.
        urls: String,
        /// The client's error.
        reason: String,
    },
    /// A JetStream KV bucket could not be opened or created (is JetStream
    /// enabled on the server? `nats-server -js`).
    #[error("cannot open the {bucket} bucket: {reason}")]
    Bucket {
        /// The bucket's name.
        bucket: &'static str,
        /// The server's or client's error.
        reason: String,
    },
    /// A publish or subscribe on the broker failed (the client was closed).
    #[error("nats {op} failed: {reason}")]
    Broker {
        /// `publish` or `subscribe`.
        op: &'static str,
        /// The client's error.
        reason: String,
    },
    /// A KV operation failed (timeout, JetStream unavailable).
    #[error("{op} in the {bucket} bucket failed: {reason}")]
    Store {
        /// What was attempted (`get`, `update`, …).
        op: &'static str,
        /// The bucket's name.
        bucket: &'static str,
        /// The server's or client's error.
        reason: String,
    },
    /// Other instances kept changing a peer's registration while this one
    /// tried to replace it.
    #[error("registration of {peer} kept changing under us ({attempts} attempts)")]
    Contended {
        /// The peer.
        peer: PeerId,
        /// How many compare-and-set attempts were made.
        attempts: u32,
    },
    /// [`Frame::text`] is not a JSON object.
    #[error("frame text is not a json object: {reason}")]
    InvalidFrame {
        /// What is wrong with it.
        reason: String,
    },
}

/// Something a sibling instance asked of this one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterEvent {
    /// A registration this instance announced was replaced by a newer one on
    /// another instance: close the session if it still holds `revision`.
    Superseded(Superseded),
}

/// The receiving end of a [`Cluster`]'s events; returned by
/// [`Cluster::connect`]. Read it continuously: while it is full (1 024
/// events) notices wait in the NATS subscription, and past that subscription's
/// limit the client drops them.
#[derive(Debug)]
pub struct ClusterEvents {
    rx: mpsc::Receiver<ClusterEvent>,
}

impl ClusterEvents {
    /// The next event; `None` once the [`Cluster`] and all its clones are
    /// dropped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is removed only when this returns it.
    pub async fn next(&mut self) -> Option<ClusterEvent> {
        self.rx.recv().await
    }
}

/// The broker's view, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Whether the client is connected to a NATS server right now.
    pub connected: bool,
    /// Successful reconnections since the first connection.
    pub reconnects: u64,
    /// Frames published by [`Cluster::deliver`].
    pub published: u64,
    /// Frames received and handed out by an [`Inbox`].
    pub delivered: u64,
    /// Messages from the bus that were dropped as malformed (frames, notices,
    /// registration and presence records).
    pub malformed: u64,
    /// Supersede notices sent to other instances.
    pub superseded_sent: u64,
    /// Supersede notices received.
    pub superseded_received: u64,
    /// Presence refreshes that failed (the broker was unreachable).
    pub presence_refresh_failures: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    delivered: AtomicU64,
    malformed: AtomicU64,
    superseded_sent: AtomicU64,
    superseded_received: AtomicU64,
    presence_refresh_failures: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Inner {
    client: async_nats::Client,
    instance: InstanceId,
    registrations: kv::Store,
    presence: Arc<presence::Shared>,
    counters: Arc<Counters>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One instance's handle on the cluster: a cheap clone around the NATS
/// connection. Dropping the last clone stops refreshing this instance's
/// presence (as a crash would) and closes the connection.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster").field("instance", &self.inner.instance).finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the broker, opens (or creates) the registration and
    /// presence buckets, and starts listening for notices to this instance
    /// and refreshing its presence. Reconnection after this is the NATS
    /// client's job and never ends; [`Cluster::stats`] shows it.
    ///
    /// # Errors
    ///
    /// [`ClusterError`] when the URLs are unusable, no server answered within
    /// [`ClusterConfig::connect_timeout`], or JetStream is not available.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in a useful sense: cancelling drops the half-made
    /// connection (nothing is left behind on the broker but the buckets).
    pub async fn connect(config: ClusterConfig) -> Result<(Cluster, ClusterEvents), ClusterError> {
        if config.urls.is_empty() {
            return Err(ClusterError::NoUrls);
        }
        let mut addrs = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let addr = url.parse::<async_nats::ServerAddr>().map_err(|err| {
                ClusterError::InvalidUrl { url: url.clone(), reason: err.to_string() }
            })?;
            addrs.push(addr);
        }
        let instance = config.instance_id.clone();
        let event_instance = instance.clone();
        // Counts (re)connections, so room watches resynchronise at once
        // instead of waiting for their consumer to notice the loss.
        let (connected_tx, connected_rx) = tokio::sync::watch::channel(0u64);
        let client = async_nats::ConnectOptions::new()
            .name(format!("tether-serve {instance}"))
            .connection_timeout(config.connect_timeout)
            .max_reconnects(None)
            .event_callback(move |event| {
                let instance = event_instance.clone();
                if matches!(event, async_nats::Event::Connected) {
                    connected_tx.send_modify(|count| *count += 1);
                }
                async move {
                    info!(name: "relay.cluster.connection", %instance, event = %event);
                }
            })
            .connect(addrs)
            .await
            .map_err(|err| ClusterError::Connect {
                urls: config.urls.join(","),
                reason: err.to_string(),
            })?;
        let js = jetstream::new(client.clone());
        let registrations = open_bucket(
            &js,
            subjects::REGISTRATION_BUCKET,
            config.registration_max_age,
            config.replicas,
        )
        .await?;
        let presence_store =
            open_bucket(&js, subjects::PRESENCE_BUCKET, config.presence_ttl, config.replicas)
                .await?;
        let mut stream = presence_store.stream.clone();
        let ttl = match stream.info().await {
            Ok(info) if !info.config.max_age.is_zero() => info.config.max_age,
            Ok(_) => config.presence_ttl,
            Err(err) => {
                return Err(ClusterError::Bucket {
                    bucket: subjects::PRESENCE_BUCKET,
                    reason: err.to_string(),
                });
            }
        };
        let counters = Arc::new(Counters::default());
        let presence = Arc::new(presence::Shared::new(
            presence_store,
            instance.clone(),
            ttl,
            counters.clone(),
            connected_rx,
        ));

        let control = client
            .subscribe(subjects::instance_subject(&instance))
            .await
            .map_err(|err| ClusterError::Broker { op: "subscribe", reason: err.to_string() })?;
        let (events_tx, events_rx) = mpsc::channel(1024);
        let control_task = tokio::spawn(registration::listen(
            control,
            events_tx,
            counters.clone(),
            instance.clone(),
        ));
        let refresh_task = tokio::spawn(presence::refresh_loop(presence.clone()));
        debug!(name: "relay.cluster.connected", %instance, presence_ttl_ms = ttl.as_millis() as u64);
        let inner = Inner {
            client,
            instance,
            registrations,
            presence,
            counters,
            tasks: vec![control_task.abort_handle(), refresh_task.abort_handle()],
        };
        let cluster = Cluster { inner: Arc::new(inner) };
        // Notices sent once this returns reach us.
        cluster.flush().await?;
        Ok((cluster, ClusterEvents { rx: events_rx }))
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &InstanceId {
        &self.inner.instance
    }

    /// The presence TTL in effect (the presence bucket's `max_age`).
    pub fn presence_ttl(&self) -> Duration {
        self.inner.presence.ttl()
    }

    /// The broker's view, for `/metrics`.
    pub fn stats(&self) -> ClusterStats {
        let counters = &self.inner.counters;
        let connects = self.inner.client.statistics().connects.load(Ordering::Relaxed);
        ClusterStats {
            connected: self.inner.client.connection_state()
                == async_nats::connection::State::Connected,
            reconnects: connects.saturating_sub(1),
            published: counters.published.load(Ordering::Relaxed),
            delivered: counters.delivered.load(Ordering::Relaxed),
            malformed: counters.malformed.load(Ordering::Relaxed),
            superseded_sent: counters.superseded_sent.load(Ordering::Relaxed),
            superseded_received: counters.superseded_received.load(Ordering::Relaxed),
            presence_refresh_failures: counters.presence_refresh_failures.load(Ordering::Relaxed),
        }
    }

    /// Waits until the server has processed everything this instance sent
    /// so far (subscriptions included): one round trip on the connection.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Broker`] when the connection is closed or the server
    /// did not answer within the client's request timeout.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelling only stops waiting.
    pub async fn flush(&self) -> Result<(), ClusterError> {
        // A request nobody answers: the server's "no responders" reply comes
        // after it handled every earlier command of this connection.
        let subject = format!("{}.sync", subjects::instance_subject(&self.inner.instance));
        match self.inner.client.request(subject, bytes::Bytes::new()).await {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == async_nats::client::RequestErrorKind::NoResponders => Ok(()),
            Err(err) => Err(ClusterError::Broker { op: "flush", reason: err.to_string() }),
        }
    }

    /// The members of `room` across all instances, each with the instance
    /// holding it. A one-off snapshot; [`Cluster::watch_room`] follows
    /// changes.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Store`] when JetStream cannot be queried.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn members(
        &self,
        room: &RoomId,
    ) -> Result<std::collections::BTreeMap<PeerId, InstanceId>, ClusterError> {
        self.inner.presence.members(room).await
    }
}

/// Opens `bucket`, creating it when it does not exist.
///
/// The bucket's stream is created here rather than with
/// `create_key_value`, which in async-nats 0.51 first reads account
/// information in a shape nats-server 2.9 does not send. The stream follows
/// the KV conventions every NATS client reads (docs/SCALE-OUT.md): stream
/// `KV_<bucket>`, subjects `$KV.<bucket>.>`, one message per subject,
/// roll-ups allowed, deletes denied, direct get on, discard new.
async fn open_bucket(
    js: &jetstream::Context,
    bucket: &'static str,
    max_age: Duration,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: replicas.max(1),
        ..jetstream::stream::Config::default()
    };
    let created = js.create_stream(config).await;
    // Another instance may have created it in between: open it either way.
    js.get_key_value(bucket).await.map_err(|open_err| {
        let reason = match created {
            Err(create_err) => create_err.to_string(),
            Ok(_) => open_err.to_string(),
        };
        warn!(name: "relay.cluster.bucket_failed", bucket, %reason);
        ClusterError::Bucket { bucket, reason }
    })
}
