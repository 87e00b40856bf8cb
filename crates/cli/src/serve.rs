//! `tether serve`: the signaling relay server, until SIGINT or SIGTERM, with
//! the browser peer page (web/) next to `/ws`.

mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use tether_relay::auth::{Authenticator, HmacSecret, SECRET_ENV_VAR, mint_token};
use tether_relay::{ServerConfig, ServerTls, SignalServer};
use tether_signal::protocol::PeerId;

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
    /// Largest TEXT frame accepted, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_frame_bytes: usize,
    /// Print a signed token for PEER (valid --token-ttl seconds) and exit.
    #[arg(long, value_name = "PEER")]
    mint_token: Option<String>,
    /// Lifetime of a token printed by --mint-token, in seconds.
    #[arg(long, default_value_t = 24 * 3600, value_name = "SECONDS")]
    token_ttl: u64,
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
        println!("{}", mint_token(secret, &peer, expires_at));
        return Ok(ExitCode::SUCCESS);
    }
    let secret = match secret {
        None if args.demo => Some(random_secret()?),
        secret => secret,
    };
    let demo_secret = if args.demo { secret.clone() } else { None };
    let mut auth = match secret {
        Some(secret) => Authenticator::with_secret(secret),
        None => Authenticator::default(),
    };
    if let Some(path) = &args.token_file {
        auth = auth.add_token_file(path)?;
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
    let http = if config.tls.is_some() { "https" } else { "http" };
    startup::init_logging(Some("info"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = SignalServer::bind(config).await?;
        eprintln!("tether: signaling on {}", server.websocket_url());
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
