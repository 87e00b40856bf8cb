//! `tether serve`: the signaling relay server, until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::Args;
use tether_signal::auth::{Authenticator, HmacSecret, SECRET_ENV_VAR, mint_token};
use tether_signal::protocol::PeerId;
use tether_signal::{ServerConfig, SignalServer};

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
    /// Also serve the files of this directory over HTTP (`/` is index.html).
    #[arg(long, value_name = "DIR")]
    static_dir: Option<PathBuf>,
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
    config.limits.max_frame_bytes = args.max_frame_bytes;
    config.limits.hard_frame_bytes = config.limits.hard_frame_bytes.max(args.max_frame_bytes);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = SignalServer::bind(config).await?;
        eprintln!("tether: signaling on {}", server.websocket_url());
        server.serve(shutdown_signal()).await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
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
