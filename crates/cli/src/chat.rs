//! `tether chat`: one tether node in the terminal, chatting with one peer —
//! the browser page of `tether serve`, or another `tether chat`. Each line
//! typed is sent reliably; slash commands break the connections on purpose
//! so that the recovery can be watched (and tested: `--json`).
//!
//! The node connects to the members of its room as they come (`auto_connect`)
//! rather than with `connect_peer(--to)` at start: an offerer that connects
//! to a peer not registered yet sends its first offer to nobody, and
//! `tether_rtc` then ignores the peer's request for an offer when it arrives
//! ("the first offer is on its way") until the connect timeout.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use serde_json::{Value, json};
use tether::live::{IceRoute, RouteEnd, SignalingTiming, TlsTrust};
use tether::{
    ActionKind, ActionReport, ConnectionState, EventError, Handled, NetworkSnapshot,
    ReconnectReason, RtcNode, RtcNodeConfig, Transport, TransportSet,
};
use tether_relay::auth::{HmacSecret, SECRET_ENV_VAR, mint_token_for};
use tether_rtc::{IceServer, IceTransportPolicy, RtcConfig};
use tether_signal::protocol::PeerId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::{percentile, startup};

/// Bound on fetching a token, and on each command the node is asked to run.
const TOKEN_BOUND: Duration = Duration::from_secs(5);
const COMMAND_BOUND: Duration = Duration::from_secs(30);
/// Bound on handing over what was typed before quitting, and on shutdown.
const DRAIN_BOUND: Duration = Duration::from_secs(5);
const SHUTDOWN_BOUND: Duration = Duration::from_secs(10);
/// Longest stdin line read (the node refuses messages over ~64 KiB anyway).
const MAX_LINE: u64 = 64 * 1024;
/// Lifetime of a token minted from TETHER_SECRET.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// webrtc-rs is chatty at warn level (e.g. one warning per mDNS candidate
/// of a browser), and the chat shows signaling losses itself; RUST_LOG
/// overrides.
const DEFAULT_LOG: &str = "warn,tether_signal::client=error,webrtc=error,rtc=error,rtc_ice=error,\
                           rtc_dtls=error,rtc_sctp=error,rtc_datachannel=error,rtc_mdns=error";

const HELP: &str = "\
type a line and press Enter to send it; commands:
  /sever      kill the signaling socket (as a dead network would)
  /reconnect  forced reconnect: new signaling socket and peer connection
  /drop       tear the peer connection down
  /handoff    switch Wi-Fi <-> cellular: restore with an ICE restart
  /quit       (or Ctrl-D, Ctrl-C)
  //text      sends /text";

#[derive(Args)]
pub(crate) struct ChatArgs {
    /// Signaling URL of `tether serve` (`ws://` or `wss://`). Several
    /// (repeated, or comma-separated) are servers of one deployment: the
    /// node moves to the next when the one in use cannot be reached.
    #[arg(
        long,
        value_name = "URL",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    signal: Vec<String>,
    /// Also trust this CA for `wss://` and `https://` (a PEM file, or a
    /// directory of .pem/.crt files), besides the system's roots.
    #[arg(long, value_name = "PEM|DIR")]
    ca: Option<PathBuf>,
    /// This node's peer id.
    #[arg(long, value_name = "ID")]
    peer_id: PeerId,
    /// The peer to chat with (the page's `peer`).
    #[arg(long, value_name = "PEER")]
    to: PeerId,
    /// Presence room.
    #[arg(long, default_value = "demo")]
    room: String,
    /// Signaling token for --peer-id.
    #[arg(long, conflicts_with = "token_url")]
    token: Option<String>,
    /// Fetch a token from `tether serve --demo` (http[s]://HOST:PORT/demo/token).
    /// Without --token or --token-url, the token is minted from TETHER_SECRET
    /// when it is set, and otherwise fetched from the --signal server's
    /// /demo/token.
    #[arg(long, value_name = "URL")]
    token_url: Option<String>,
    /// A STUN server for ICE (`stun:HOST:PORT`); repeatable.
    #[arg(long, value_name = "URL")]
    stun: Vec<String>,
    /// A TURN server for ICE (`turn:HOST:PORT?transport=udp`; webrtc-rs
    /// relays over UDP only); repeatable, all with --turn-username and
    /// --turn-credential.
    #[arg(long, value_name = "URL", requires_all = ["turn_username", "turn_credential"])]
    turn: Vec<String>,
    /// The user name for --turn.
    #[arg(long, value_name = "NAME", requires = "turn")]
    turn_username: Option<String>,
    /// The credential for --turn.
    #[arg(long, value_name = "SECRET", requires = "turn")]
    turn_credential: Option<String>,
    /// Relayed ICE candidates only: every packet through a TURN server
    /// (--turn, or one the signaling server hands out).
    #[arg(long)]
    relay_only: bool,
    /// One JSON object per line on stdout (received, sent, state, action,
    /// peer, command, quit) and nothing else.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: &ChatArgs) -> anyhow::Result<ExitCode> {
    startup::init_logging(Some(DEFAULT_LOG));
    ensure!(args.peer_id != args.to, "--to must name another peer than --peer-id");
    let runtime = startup::node_runtime()?;
    let code = runtime.block_on(async {
        let trust = tls_trust(args)?;
        let token = token(args, &args.peer_id, &trust).await?;
        chat(args, token, trust).await
    })?;
    // The stdin thread may still be blocked in a read; the process exit ends it.
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

/// Where output goes: JSON lines, or lines for people.
#[derive(Clone, Copy)]
struct Out {
    json: bool,
}

impl Out {
    /// Prints `event` as JSON, or `human` (if any) for people. A closed
    /// stdout is ignored: the chat goes on until its input ends.
    fn emit(self, event: Value, human: Option<String>) {
        let line = if self.json { event.to_string() } else { human.unwrap_or_default() };
        if line.is_empty() {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn note(self, text: String) {
        if !self.json {
            self.emit(Value::Null, Some(text));
        }
    }
}

/// What the stdin thread reads.
enum Input {
    Line(String),
    TooLong,
    Eof,
}

/// Why the chat ended.
#[derive(Clone, Copy)]
enum Quit {
    Command,
    Eof,
    Interrupt,
    Terminate,
}

impl Quit {
    fn name(self) -> &'static str {
        match self {
            Self::Command => "quit",
            Self::Eof => "eof",
            Self::Interrupt => "interrupt",
            Self::Terminate => "terminate",
        }
    }
}

async fn chat(args: &ChatArgs, token: String, trust: TlsTrust) -> anyhow::Result<ExitCode> {
    let out = Out { json: args.json };
    let to = args.to.clone();
    let (first, fallbacks) = args.signal.split_first().context("--signal needs a URL")?;
    let mut config = RtcNodeConfig::new(args.peer_id.clone(), first.as_str(), token);
    config.fallback_signaling_urls = fallbacks.to_vec();
    config.tls = trust;
    config.room = Some(args.room.clone());
    // Connections follow room presence: `--to` is connected when (and each
    // time) it is in the room. (Connecting before it is there would send the
    // first offer to nobody; see the module docs.)
    config.auto_connect = true;
    config.rtc = rtc_config(args);
    // A tool for watching recovery: a dead signaling socket should show
    // within seconds, not after the production timing's 10 s.
    config.signaling = SignalingTiming::responsive();
    let node = Arc::new(RtcNode::start(config)?);
    let mut inbox = node.messages().context("the node's inbox was already taken")?;
    let mut actions = node.actions();
    let mut state = node.state();
    let mut peers = node.peer_states();

    out.emit(
        json!({"event": "started", "peer": args.peer_id, "to": to, "room": args.room, "signal": args.signal}),
        Some(format!(
            "tether chat: {} → {to} in room {} via {} (waiting for {to} to join)\n{HELP}",
            args.peer_id, args.room, args.signal.join(", ")
        )),
    );

    let mut tasks = JoinSet::new();
    // Online: an Available snapshot restores signaling.
    let mut path = Path { sequence: 1, transport: Transport::Wifi };
    {
        let handle = node.handle();
        let snapshot = path.snapshot();
        tasks.spawn(async move {
            let result = timeout(COMMAND_BOUND, handle.network_path_changed(snapshot)).await;
            command_result(out, "online", result);
        });
    }

    let (lines_tx, mut lines) = mpsc::channel(64);
    std::thread::Builder::new()
        .name("chat-stdin".into())
        .spawn(move || read_stdin(&lines_tx))
        .context("cannot start the stdin reader")?;
    let (outgoing, outgoing_rx) = mpsc::channel(1024);
    let mut sender = tokio::spawn(send_lines(Arc::clone(&node), to.clone(), outgoing_rx, out));

    let interrupt = interrupt_signal();
    tokio::pin!(interrupt);
    let terminate = terminate_signal();
    tokio::pin!(terminate);
    let mut peer_connected = false;
    // The peer connection whose route was shown last.
    let mut routed_generation = None;

    let quit = loop {
        tokio::select! {
            () = &mut interrupt => break Quit::Interrupt,
            () = &mut terminate => break Quit::Terminate,
            input = lines.recv() => match input {
                None | Some(Input::Eof) => break Quit::Eof,
                Some(Input::TooLong) => out.emit(
                    json!({"event": "error", "error": format!("line over {MAX_LINE} bytes; discarded")}),
                    Some(format!("✘ line over {MAX_LINE} bytes; discarded")),
                ),
                Some(Input::Line(line)) => match parse(&line) {
                    Line::Empty => {}
                    Line::Text(text) => {
                        if outgoing.send(text).await.is_err() {
                            bail!("the sender stopped");
                        }
                    }
                    Line::Command(command) => {
                        if !run_command(&command, &node, &to, &mut path, &mut tasks, out) {
                            break Quit::Command;
                        }
                    }
                },
            },
            message = inbox.recv() => match message {
                Some(message) => {
                    let text = String::from_utf8_lossy(&message.payload);
                    out.emit(
                        json!({"event": "received", "from": message.from, "text": text}),
                        Some(format!("{}: {text}", message.from)),
                    );
                }
                None => bail!("the node stopped"),
            },
            changed = state.changed() => {
                if changed.is_err() {
                    bail!("the node stopped");
                }
                let now = *state.borrow_and_update();
                show_state(out, &now);
            }
            report = actions.recv() => match report {
                Ok(report) => show_action(out, &report),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => bail!("the node stopped"),
            },
            changed = peers.changed() => {
                if changed.is_err() {
                    bail!("the node stopped");
                }
                let (connected, state) = {
                    let states = peers.borrow_and_update();
                    (states.is_connected(&to), states.get(&to))
                };
                let generation = state.and_then(|state| state.connection_id);
                if connected != peer_connected {
                    peer_connected = connected;
                    let human = if connected { format!("● {to} connected") } else { format!("… {to} disconnected") };
                    out.emit(json!({"event": "peer", "peer": to, "connected": connected}), Some(human));
                }
                if connected && generation != routed_generation {
                    routed_generation = generation;
                    // The selected ICE pair is read from the connection: off
                    // the loop, as an event of its own after "connected".
                    let node = Arc::clone(&node);
                    let to = to.clone();
                    let escalated = state.is_some_and(|state| state.relay_escalated);
                    tasks.spawn(async move {
                        let route = timeout(COMMAND_BOUND, node.peer_route(&to)).await.ok().flatten();
                        show_peer_route(out, &to, route.as_ref(), escalated);
                    });
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(err) = joined {
                    bail!("a chat task failed: {err}");
                }
            }
        }
    };

    // What was typed before quitting is handed to the node first.
    drop(outgoing);
    if timeout(DRAIN_BOUND, &mut sender).await.is_err() {
        out.note("✘ some typed lines were not handed over in time".into());
        sender.abort();
        let _ = sender.await;
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    let unacknowledged = match Arc::try_unwrap(node) {
        Ok(node) => match timeout(SHUTDOWN_BOUND, node.shutdown()).await {
            Ok(report) => Some(report.messaging.unacknowledged),
            Err(_) => None,
        },
        // Not expected (every task holding the node was joined above), but
        // then the node stops on drop and the exit says it was not clean.
        Err(_) => None,
    };
    let human = match unacknowledged {
        Some(0) => "bye".to_owned(),
        Some(n) => format!("bye ({n} messages sent were not acknowledged yet)"),
        None => "bye (the node did not shut down cleanly)".to_owned(),
    };
    out.emit(
        json!({"event": "quit", "reason": quit.name(), "unacknowledged": unacknowledged}),
        Some(human),
    );
    Ok(if unacknowledged.is_some() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The route ICE selected for the peer connection to `to`: direct (host,
/// reflexive candidates) or through a TURN relay, and whether recovery
/// escalated the peer to relay-only ICE after direct paths failed.
fn show_peer_route(out: Out, to: &PeerId, route: Option<&IceRoute>, escalated: bool) {
    let Some(route) = route else { return };
    let path = if route.is_relayed() { "relayed" } else { "direct" };
    let escalation = if escalated { ", escalated to relay-only" } else { "" };
    let end = |end: &RouteEnd| {
        json!({"type": end.kind.as_str(), "protocol": end.protocol.as_str(),
               "address": end.address, "port": end.port})
    };
    out.emit(
        json!({
            "event": "route", "peer": to, "path": path,
            "local": end(&route.local), "remote": end(&route.remote),
            "relay_escalated": escalated,
        }),
        Some(format!("  {to}: {path}, {route}{escalation}")),
    );
}

/// The network path the node is told about; `/handoff` flips it.
struct Path {
    sequence: u64,
    transport: Transport,
}

impl Path {
    fn snapshot(&self) -> NetworkSnapshot {
        NetworkSnapshot::available(self.sequence, TransportSet::only(self.transport))
    }

    fn hand_off(&mut self) -> NetworkSnapshot {
        self.sequence += 1;
        self.transport =
            if self.transport == Transport::Wifi { Transport::Cellular } else { Transport::Wifi };
        self.snapshot().with_expensive(self.transport == Transport::Cellular)
    }
}

enum Line {
    Empty,
    Text(String),
    Command(String),
}

fn parse(line: &str) -> Line {
    if line.trim().is_empty() {
        Line::Empty
    } else if let Some(text) = line.strip_prefix("//") {
        Line::Text(format!("/{text}"))
    } else if let Some(command) = line.strip_prefix('/') {
        Line::Command(command.trim().to_owned())
    } else {
        Line::Text(line.to_owned())
    }
}

/// Runs a slash command; `false` for `/quit`.
fn run_command(
    command: &str,
    node: &Arc<RtcNode>,
    to: &PeerId,
    path: &mut Path,
    tasks: &mut JoinSet<()>,
    out: Out,
) -> bool {
    match command {
        "quit" | "exit" => return false,
        "sever" => {
            let ok = node.faults().sever_signaling();
            out.emit(
                json!({"event": "command", "command": "sever", "ok": ok}),
                Some(if ok {
                    "⚡ signaling socket killed".into()
                } else {
                    "✘ no signaling socket to kill".into()
                }),
            );
        }
        "reconnect" => {
            out.note("⚡ forced reconnect".into());
            let handle = node.handle();
            tasks.spawn(async move {
                let result = timeout(
                    COMMAND_BOUND,
                    handle.force_reconnect(ReconnectReason::ManualReconnect),
                )
                .await;
                command_result(out, "reconnect", result);
            });
        }
        "handoff" => {
            let snapshot = path.hand_off();
            out.note(format!("⚡ handoff to {}", path.transport.name()));
            let handle = node.handle();
            tasks.spawn(async move {
                let result = timeout(COMMAND_BOUND, handle.network_path_changed(snapshot)).await;
                command_result(out, "handoff", result);
            });
        }
        "drop" => {
            out.note(format!("⚡ dropping the peer connection to {to}"));
            let node = Arc::clone(node);
            let to = to.clone();
            tasks.spawn(async move {
                let result = timeout(COMMAND_BOUND, node.faults().drop_peer_connection(&to)).await;
                let error = match result {
                    Ok(Ok(())) => None,
                    Ok(Err(err)) => Some(err.to_string()),
                    Err(_) => Some("timed out".to_owned()),
                };
                out.emit(
                    json!({"event": "command", "command": "drop", "ok": error.is_none(), "error": error}),
                    error.as_ref().map(|err| format!("✘ drop: {err}")),
                );
            });
        }
        "help" | "?" => out.note(HELP.into()),
        other => out.emit(
            json!({"event": "error", "error": format!("unknown command /{other}")}),
            Some(format!("✘ unknown command /{other} (/help lists them)")),
        ),
    }
    true
}

fn command_result(
    out: Out,
    command: &str,
    result: Result<Result<Handled, EventError>, tokio::time::error::Elapsed>,
) {
    let (ok, action, error, ms) = match result {
        Ok(Ok(handled)) => (
            true,
            handled.action().map(ActionKind::name),
            None,
            Some(percentile::rounded(percentile::ms(handled.elapsed), 1)),
        ),
        Ok(Err(err)) => (false, err.action().map(ActionKind::name), Some(err.to_string()), None),
        Err(_) => (false, None, Some(format!("no answer within {COMMAND_BOUND:?}")), None),
    };
    let human = error.as_ref().map(|err| format!("✘ {command}: {err}"));
    out.emit(
        json!({"event": "command", "command": command, "ok": ok, "action": action, "ms": ms, "error": error}),
        human,
    );
}

fn show_state(out: Out, state: &ConnectionState) {
    let (detail, human) = match state {
        ConnectionState::Connected => (json!(null), "● online".to_owned()),
        ConnectionState::Recovering { action, attempt } => (
            json!({"action": action.name(), "attempt": attempt}),
            format!("… reconnecting ({}, attempt {attempt})", action.name()),
        ),
        ConnectionState::Parked { reason } => {
            (json!({"reason": reason.name()}), format!("✘ parked: {}", reason.name()))
        }
        other => (json!(null), format!("… {}", other.name())),
    };
    out.emit(json!({"event": "state", "state": state.name(), "detail": detail}), Some(human));
}

fn show_action(out: Out, report: &ActionReport) {
    let ActionReport::Ended { kind, outcome, elapsed, error, .. } = report else {
        return;
    };
    let ms = percentile::rounded(percentile::ms(*elapsed), 1);
    let error = error.as_ref().map(ToString::to_string);
    let human = match &error {
        None => format!("✔ {} {} ({ms:.0} ms)", kind.name(), outcome.name()),
        Some(err) => format!("✘ {} {} ({ms:.0} ms): {err}", kind.name(), outcome.name()),
    };
    out.emit(
        json!({"event": "action", "kind": kind.name(), "outcome": outcome.name(), "ms": ms, "error": error}),
        Some(human),
    );
}

/// Hands typed lines to the node in order; each is reported once accepted
/// (it is then delivered exactly once, whatever breaks, while both sides run).
async fn send_lines(node: Arc<RtcNode>, to: PeerId, mut lines: mpsc::Receiver<String>, out: Out) {
    while let Some(text) = lines.recv().await {
        match node.post(&to, text.clone()).await {
            Ok(_) => out.emit(json!({"event": "sent", "text": text, "accepted": true}), None),
            Err(err) => out.emit(
                json!({"event": "sent", "text": text, "accepted": false, "error": err.to_string()}),
                Some(format!("✘ not sent: {err}")),
            ),
        }
    }
}

/// Reads stdin line by line (any bytes: invalid UTF-8 is replaced, overlong
/// lines are discarded) until it ends or nobody listens.
fn read_stdin(lines: &mpsc::Sender<Input>) {
    let stdin = std::io::stdin();
    let mut reader = stdin.lock();
    loop {
        let mut line = Vec::new();
        let input = match (&mut reader).take(MAX_LINE + 1).read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) if line.last() != Some(&b'\n') && line.len() as u64 > MAX_LINE => {
                let _ = reader.skip_until(b'\n');
                Input::TooLong
            }
            Ok(_) => {
                let end = line.iter().rposition(|&b| b != b'\n' && b != b'\r').map_or(0, |i| i + 1);
                Input::Line(String::from_utf8_lossy(&line[..end]).into_owned())
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if lines.blocking_send(input).is_err() {
            return;
        }
    }
    let _ = lines.blocking_send(Input::Eof);
}

/// Completes on SIGINT (Ctrl-C); never if it cannot be listened for.
async fn interrupt_signal() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Completes on SIGTERM (never elsewhere).
async fn terminate_signal() {
    #[cfg(unix)]
    if let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        terminate.recv().await;
        return;
    }
    std::future::pending::<()>().await;
}

/// WebRTC settings: the defaults plus --stun, --turn and --relay-only.
fn rtc_config(args: &ChatArgs) -> RtcConfig {
    let mut rtc = RtcConfig::default();
    if !args.stun.is_empty() {
        rtc.ice_servers.push(IceServer { urls: args.stun.clone(), ..IceServer::default() });
    }
    if !args.turn.is_empty() {
        rtc.ice_servers.push(IceServer {
            urls: args.turn.clone(),
            username: args.turn_username.clone().unwrap_or_default(),
            credential: args.turn_credential.clone().unwrap_or_default(),
        });
    }
    if args.relay_only {
        rtc.ice_transport_policy = IceTransportPolicy::Relay;
    }
    rtc
}

/// The system's roots, plus --ca.
fn tls_trust(args: &ChatArgs) -> anyhow::Result<TlsTrust> {
    let trust = TlsTrust::system();
    Ok(match &args.ca {
        Some(path) => trust.with_ca_path(path)?,
        None => trust,
    })
}

/// The signaling token: --token, --token-url, TETHER_SECRET, or the
/// --signal server's demo endpoint, in that order.
async fn token(args: &ChatArgs, me: &PeerId, trust: &TlsTrust) -> anyhow::Result<String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    if args.token_url.is_none()
        && let Some(secret) = std::env::var(SECRET_ENV_VAR).ok().filter(|s| !s.is_empty())
    {
        let secret = HmacSecret::new(secret.into_bytes())
            .with_context(|| format!("unusable {SECRET_ENV_VAR}"))?;
        return Ok(mint_token_for(&secret, me, TOKEN_TTL));
    }
    let url =
        match &args.token_url {
            Some(url) => url.clone(),
            None => demo_token_url(args.signal.first().map_or("", String::as_str)).with_context(
                || format!("no token: pass --token, --token-url or set {SECRET_ENV_VAR}"),
            )?,
        };
    let token = timeout(TOKEN_BOUND, fetch_token(&url, me.as_str(), trust))
        .await
        .with_context(|| format!("no token from {url} within {TOKEN_BOUND:?}"))?
        .with_context(|| {
            format!("cannot get a token from {url} (is `tether serve --demo` running?)")
        })?;
    Ok(token)
}

/// `ws://HOST:PORT/…` → `http://HOST:PORT/demo/token` (`wss` → `https`).
fn demo_token_url(signal: &str) -> anyhow::Result<String> {
    let (scheme, rest) = if let Some(rest) = signal.strip_prefix("ws://") {
        ("http", rest)
    } else if let Some(rest) = signal.strip_prefix("wss://") {
        ("https", rest)
    } else {
        bail!("cannot derive a demo token URL from {signal} (only ws:// and wss:// URLs)");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    ensure!(!authority.is_empty(), "no host in {signal}");
    Ok(format!("{scheme}://{authority}/demo/token"))
}

/// `GET URL?peer=PEER` over HTTP/1.0 (https with `trust`); the body is the
/// token.
async fn fetch_token(url: &str, peer: &str, trust: &TlsTrust) -> anyhow::Result<String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else {
        bail!("only http:// and https:// token URLs are supported");
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    ensure!(!authority.is_empty(), "no host in {url}");
    let separator = if path.contains('?') { '&' } else { '?' };
    // Peer ids are [A-Za-z0-9_.:@-]: nothing to escape in a query.
    let target = format!("{path}{separator}peer={peer}");
    let request =
        format!("GET {target} HTTP/1.0\r\nHost: {authority}\r\nAccept: text/plain\r\n\r\n");
    let default_port = if tls { ":443" } else { ":80" };
    let has_port = authority.rsplit_once(':').is_some_and(|(_, port)| !port.contains(']'));
    let dial = if has_port { authority.to_owned() } else { format!("{authority}{default_port}") };
    let stream = tokio::net::TcpStream::connect(&dial).await?;
    let mut response = Vec::new();
    if tls {
        let host = match authority.strip_prefix('[') {
            Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
            None if has_port => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
            None => authority,
        };
        let mut stream = trust.connect(stream, host).await?;
        stream.write_all(request.as_bytes()).await?;
        // A server that closes without TLS close_notify still sent its answer.
        let _ = (&mut stream).take(64 * 1024).read_to_end(&mut response).await;
    } else {
        let mut stream = stream;
        stream.write_all(request.as_bytes()).await?;
        (&mut stream).take(64 * 1024).read_to_end(&mut response).await?;
    }
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").context("malformed HTTP response")?;
    let status = head.split_whitespace().nth(1).unwrap_or_default();
    ensure!(status == "200", "HTTP {status}: {}", body.trim());
    let token = body.trim();
    ensure!(!token.is_empty() && !token.contains(char::is_whitespace), "not a token: {token:?}");
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_text_commands_or_escaped_slashes() {
        assert!(matches!(parse("  "), Line::Empty));
        assert!(matches!(parse("hello"), Line::Text(t) if t == "hello"));
        assert!(matches!(parse("/sever "), Line::Command(c) if c == "sever"));
        assert!(matches!(parse("//sever"), Line::Text(t) if t == "/sever"));
    }

    #[test]
    fn handoffs_flip_the_transport_with_a_higher_sequence() {
        let mut path = Path { sequence: 1, transport: Transport::Wifi };
        let first = path.hand_off();
        assert_eq!(first.sequence, 2);
        assert!(first.transports.contains(Transport::Cellular));
        let second = path.hand_off();
        assert_eq!(second.sequence, 3);
        assert!(second.transports.contains(Transport::Wifi));
    }

    #[test]
    fn the_demo_token_url_comes_from_the_signaling_url() {
        assert_eq!(
            demo_token_url("ws://127.0.0.1:8080/ws").unwrap(),
            "http://127.0.0.1:8080/demo/token"
        );
        assert_eq!(
            demo_token_url("wss://example.com/ws").unwrap(),
            "https://example.com/demo/token"
        );
        assert!(demo_token_url("http://example.com/ws").is_err());
        assert!(demo_token_url("ws:///ws").is_err());
    }
}
