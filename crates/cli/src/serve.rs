//! `tether serve`: the signaling relay server, until SIGINT or SIGTERM, with
//! the browser peer page (web/) next to `/ws`.

mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail, ensure};
use clap::Args;
use tether_relay::auth::{Authenticator, HmacSecret, SECRET_ENV_VAR, TokenClaims};
use tether_relay::cluster::{ClusterConfig, InstanceId};
use tether_relay::turn::{TurnGrants, TurnSecret};
use tether_relay::{RateLimit, ServerConfig, ServerLimits, ServerTls, SignalServer};
use tether_signal::protocol::{PeerId, RoomId};

use crate::startup;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Secret for HMAC-signed tokens (at least 16 bytes). Defaults to the
    /// TETHER_SECRET environment variable.
    #[arg(long)]
    secret: Option<String>,
    /// File of static tokens, one `PEER_ID TOKEN` pair per line.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve the files of this directory over HTTP (`/` is index.html)
    /// instead of the built-in browser page (e.g. `--static-dir web` while
    /// working on the page).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Local demos: hand a signed token for any peer id to anyone who asks
    /// at /demo/token?peer=ID (the browser page does). Uses --secret or
    /// TETHER_SECRET, or a random secret for this run when neither is set.
    #[arg(long)]
    demo: bool,
    /// Terminate TLS with this PEM certificate chain (leaf first): the
    /// server then speaks `wss://` and `https://` only. Needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A TURN server handed to every registered client with credentials
    /// minted for its peer id (`turn:HOST:PORT?transport=udp`); repeatable.
    /// Needs the secret the TURN server checks (coturn: `use-auth-secret`,
    /// `static-auth-secret`) in --turn-secret or $TETHER_TURN_SECRET.
    #[arg(long, value_name = "URL")]
    turn_url: Vec<String>,
    /// A STUN server handed to every registered client; repeatable.
    #[arg(long, value_name = "URL")]
    stun_url: Vec<String>,
    /// The TURN servers' shared secret (16 bytes or more).
    #[arg(long, value_name = "SECRET", env = "TETHER_TURN_SECRET", hide_env_values = true)]
    turn_secret: Option<String>,
    /// How long a minted TURN credential is valid (a client gets a fresh one
    /// each time it registers).
    #[arg(long, value_name = "SECONDS", default_value_t = 6 * 3600)]
    turn_ttl: u64,
    /// Largest TEXT frame accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_frame_bytes: usize,
    /// Allow WebSocket upgrades only from this browser origin (repeatable,
    /// e.g. https://app.example); requests without an Origin header
    /// (clients other than browsers) are not affected. Default: any origin.
    #[arg(long, value_name = "ORIGIN")]
    allowed_origin: Vec<String>,
    /// Rooms as a strict boundary: a client may register in a room only
    /// with a token bound to it (`--mint-token PEER --token-room ROOM`).
    #[arg(long)]
    room_tokens_only: bool,
    /// Run as one of several instances sharing routing through NATS
    /// (JetStream on: `nats-server -js`); comma-separated or repeated URLs
    /// of one NATS server or cluster. See docs/SCALE-OUT.md.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    nats: Vec<String>,
    /// This instance's id, distinct from every other instance's: 1 to 64 of
    /// `A-Z a-z 0-9 - _ . : @` [default: HOSTNAME-PID-RANDOM].
    #[arg(long, value_name = "ID", requires = "nats")]
    instance_id: Option<String>,
    /// How long a member of a room outlives its instance, in milliseconds
    /// (the first instance to create the presence bucket sets it for all)
    /// [default: 15000].
    #[arg(long, value_name = "MS", requires = "nats")]
    presence_ttl_ms: Option<u64>,
    /// JetStream replicas of the buckets when this instance creates them:
    /// 3 on a 3-node NATS cluster that must survive losing a node.
    #[arg(long, value_name = "N", requires = "nats")]
    nats_replicas: Option<usize>,
    #[command(flatten)]
    limits: Box<LimitArgs>,
    /// Print a signed token for PEER (valid --token-ttl seconds) and exit.
    #[arg(long, value_name = "PEER")]
    mint_token: Option<String>,
    /// Lifetime of a token printed by --mint-token, in seconds.
    #[arg(long, default_value_t = 24 * 3600, value_name = "SECONDS")]
    token_ttl: u64,
    /// Bind a token printed by --mint-token to this room: it then only
    /// registers with that `room`.
    #[arg(long, value_name = "ROOM", requires = "mint_token")]
    token_room: Option<String>,
}

/// The documented limits (docs/PROTOCOL.md §1); each defaults to the
/// server's own default when not given.
#[derive(Args)]
struct LimitArgs {
    /// Open connections at once [default: 50000, lowered to the open-file
    /// limit minus 64].
    #[arg(long, value_name = "N")]
    max_connections: Option<u64>,
    /// Connections that have not registered yet, all sources [default:
    /// 10000, lowered to half of --max-connections].
    #[arg(long, value_name = "N")]
    max_unregistered: Option<usize>,
    /// Connections that have not registered yet, per source address
    /// [default: 64].
    #[arg(long, value_name = "N")]
    max_unregistered_per_source: Option<usize>,
    /// Time a new connection has to register, in seconds [default: 5].
    #[arg(long, value_name = "SECONDS")]
    register_timeout: Option<f64>,
    /// A connection silent this long is closed, in seconds [default: 30].
    #[arg(long, value_name = "SECONDS")]
    idle_timeout: Option<f64>,
    /// Interval of the server's WebSocket pings, in seconds [default: 10].
    #[arg(long, value_name = "SECONDS")]
    ping_interval: Option<f64>,
    /// A write to a client stalled this long drops it, in seconds [default: 10].
    #[arg(long, value_name = "SECONDS")]
    write_timeout: Option<f64>,
    /// Bad frames tolerated before closing with 4003 [default: 10].
    #[arg(long, value_name = "N")]
    max_bad_frames: Option<u32>,
    /// Frames queued for one connection [default: 256].
    #[arg(long, value_name = "FRAMES")]
    outbound_queue: Option<usize>,
    /// Relay messages per second one connection may send [default: 50].
    #[arg(long, value_name = "PER_SECOND")]
    relay_rate: Option<u32>,
    /// Relay messages one connection may send at once [default: 200].
    #[arg(long, value_name = "N")]
    relay_burst: Option<u32>,
    /// Pings per second one connection may send [default: 20].
    #[arg(long, value_name = "PER_SECOND")]
    ping_rate: Option<u32>,
    /// Pings one connection may send at once [default: 50].
    #[arg(long, value_name = "N")]
    ping_burst: Option<u32>,
    /// Messages over a rate limit tolerated before closing with 4009
    /// [default: 20].
    #[arg(long, value_name = "N")]
    max_rate_violations: Option<u32>,
    /// How long a registration's generation order holds, in seconds
    /// [default: 10].
    #[arg(long, value_name = "SECONDS")]
    generation_fence: Option<f64>,
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .with_context(|| format!("--{flag} must be a positive number of seconds, got {value}"))
}

impl LimitArgs {
    fn apply(&self, limits: &mut ServerLimits) -> anyhow::Result<()> {
        let durations = [
            (self.register_timeout, "register-timeout", &mut limits.register_timeout),
            (self.idle_timeout, "idle-timeout", &mut limits.idle_timeout),
            (self.ping_interval, "ping-interval", &mut limits.ping_interval),
            (self.write_timeout, "write-timeout", &mut limits.write_timeout),
            (self.generation_fence, "generation-fence", &mut limits.generation_fence),
        ];
        for (value, flag, field) in durations {
            if let Some(value) = value {
                *field = seconds(value, flag)?;
            }
        }
        if let Some(value) = self.max_connections {
            limits.max_connections = value;
        }
        if let Some(value) = self.max_unregistered {
            limits.max_unregistered = value;
        }
        if let Some(value) = self.max_unregistered_per_source {
            limits.max_unregistered_per_source = value;
        }
        if let Some(value) = self.max_bad_frames {
            limits.max_bad_frames = value;
        }
        if let Some(value) = self.outbound_queue {
            limits.outbound_queue = value;
        }
        if let Some(value) = self.max_rate_violations {
            limits.max_rate_violations = value;
        }
        let rate = |limit: RateLimit, per_second: Option<u32>, burst: Option<u32>| {
            RateLimit::new(per_second.unwrap_or(limit.per_second), burst.unwrap_or(limit.burst))
        };
        limits.relay_rate = rate(limits.relay_rate, self.relay_rate, self.relay_burst);
        limits.ping_rate = rate(limits.ping_rate, self.ping_rate, self.ping_burst);
        Ok(())
    }
}

fn secret(args: &ServeArgs) -> anyhow::Result<Option<HmacSecret>> {
    let text = match &args.secret {
        Some(secret) => Some(secret.clone()),
        None => std::env::var(SECRET_ENV_VAR).ok().filter(|secret| !secret.is_empty()),
    };
    text.map(|text| HmacSecret::new(text.into_bytes()).context("unusable secret")).transpose()
}

pub(crate) fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let secret = secret(args)?;
    if let Some(peer) = &args.mint_token {
        let Some(secret) = &secret else {
            bail!("--mint-token needs --secret or {SECRET_ENV_VAR}");
        };
        let peer = PeerId::new(peer.as_str())?;
        let expires_at = SystemTime::now() + Duration::from_secs(args.token_ttl);
        let mut claims = TokenClaims::new(peer, expires_at);
        if let Some(room) = &args.token_room {
            claims = claims.room(RoomId::new(room.as_str())?);
        }
        println!("{}", claims.mint(secret));
        return Ok(ExitCode::SUCCESS);
    }
    let secret = match secret {
        None if args.demo => Some(random_secret()?),
        secret => secret,
    };
    let demo_secret = if args.demo { secret.clone() } else { None };
    let mut auth = match secret {
        // Only a --demo server accepts the demo tokens it hands out.
        Some(secret) if args.demo => Authenticator::with_secret(secret).accept_demo_tokens(),
        Some(secret) => Authenticator::with_secret(secret),
        None => Authenticator::default(),
    };
    if let Some(path) = &args.token_file {
        auth = auth.add_token_file(path)?;
    }
    if args.room_tokens_only {
        auth = auth.require_room_claims();
    }
    if !auth.is_configured() {
        bail!("no authentication configured: pass --secret, set {SECRET_ENV_VAR}, or --token-file");
    }
    let mut config = ServerConfig::new(auth);
    config.listen = args.listen;
    config.static_dir = args.static_dir.clone();
    config.extra_routes = web::routes(args.static_dir.is_none(), demo_secret);
    config.limits.max_frame_bytes = args.max_frame_bytes;
    config.limits.hard_frame_bytes = config.limits.hard_frame_bytes.max(args.max_frame_bytes);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(ServerTls::from_pem_files(cert, key)?);
    }
    if !args.turn_url.is_empty() || !args.stun_url.is_empty() {
        let secret = match (&args.turn_secret, args.turn_url.is_empty()) {
            (Some(secret), _) => TurnSecret::new(secret.as_bytes().to_vec())?,
            (None, true) => TurnSecret::new(b"stun-needs-no-credentials".to_vec())?,
            (None, false) => bail!("--turn-url needs --turn-secret (or TETHER_TURN_SECRET)"),
        };
        ensure!(args.turn_ttl > 0, "--turn-ttl must be at least 1 second");
        config.turn = Some(TurnGrants {
            secret,
            turn_urls: args.turn_url.clone(),
            stun_urls: args.stun_url.clone(),
            ttl: Duration::from_secs(args.turn_ttl),
        });
    }
    config.cluster = cluster_config(args)?;
    let http = if config.tls.is_some() { "https" } else { "http" };
    args.limits.apply(&mut config.limits)?;
    if !args.allowed_origin.is_empty() {
        config.allowed_origins = Some(args.allowed_origin.clone());
    }
    startup::init_logging(Some("info"));
    // Every connection is a descriptor: take all the kernel allows.
    let descriptors = tether_relay::raise_open_file_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let cluster = config.cluster.as_ref().map(|cluster| cluster.instance_id.clone());
        let server = SignalServer::bind(config).await?;
        eprintln!("tether: signaling on {}", server.websocket_url());
        if let Some(instance) = cluster {
            eprintln!("tether: instance {instance} of the cluster on {}", args.nats.join(","));
        }
        let limits = server.limits();
        match &descriptors {
            Ok(descriptors) => eprintln!(
                "tether: open-file limit {descriptors}: up to {} connections, {} unregistered",
                limits.max_connections, limits.max_unregistered
            ),
            Err(error) => eprintln!(
                "tether: warning: cannot raise the open-file limit ({error}): up to {} \
                 connections, {} unregistered",
                limits.max_connections, limits.max_unregistered
            ),
        }
        let page = format!("{http}://{}/", server.local_addr());
        eprintln!("tether: browser page on {page} (e.g. {page}?peer=web&to=node)");
        if args.demo {
            eprintln!(
                "tether: --demo: tokens for any peer id at {page}{}?peer=ID (local demos only)",
                web::DEMO_TOKEN_PATH.trim_start_matches('/')
            );
            if !args.listen.ip().is_loopback() {
                eprintln!("tether: warning: --demo on a non-loopback address lets anyone register");
            }
        }
        server.serve(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The cluster settings of `--nats` and friends; `None` without `--nats`.
fn cluster_config(args: &ServeArgs) -> anyhow::Result<Option<ClusterConfig>> {
    if args.nats.is_empty() {
        return Ok(None);
    }
    let instance = match &args.instance_id {
        Some(id) => InstanceId::new(id.as_str())?,
        None => default_instance_id()?,
    };
    let mut config = ClusterConfig::new(args.nats.clone(), instance);
    if let Some(ttl) = args.presence_ttl_ms {
        // Refreshed every TTL/3, at most every 100 ms.
        ensure!(ttl >= 300, "--presence-ttl-ms must be at least 300, got {ttl}");
        config.presence_ttl = Duration::from_millis(ttl);
    }
    if let Some(replicas) = args.nats_replicas {
        ensure!((1..=5).contains(&replicas), "--nats-replicas must be 1 to 5, got {replicas}");
        config.replicas = replicas;
    }
    Ok(Some(config))
}

/// `HOSTNAME-PID-RANDOM`, with the host name cut to the id alphabet: unique
/// across machines, processes and restarts of one container (same host
/// name, same pid).
fn default_instance_id() -> anyhow::Result<InstanceId> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' })
        .take(40)
        .collect();
    let host = if host.is_empty() { "tether".to_owned() } else { host };
    let mut random = [0u8; 3];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut source| source.read_exact(&mut random))
            .context("cannot read /dev/urandom for an instance id; pass --instance-id")?;
    }
    let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(InstanceId::new(format!("{host}-{}-{suffix}", std::process::id()))?)
}

/// A secret for this run only (`--demo` without a configured secret).
fn random_secret() -> anyhow::Result<HmacSecret> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for a demo secret; pass --secret")?;
    Ok(HmacSecret::new(bytes.to_vec())?)
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut terminate) => {
                    terminate.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
