//! The lab as a value: set up by [`Lab::setup`], handed off by
//! [`Lab::handoff`], torn down by [`Lab::teardown`] or, whatever happens,
//! when dropped (including while a panic unwinds).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tether_pathmon::view::Family;
use tether_pathmon::{Change, MAIN_TABLE, ObservedChange, PathMonitor, PathMonitorConfig};
use tokio::process::Command;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::LabError;
use crate::nat::{Nat, NatCounters};
use crate::netns::{NetnsTask, spawn_in_netns};
use crate::relay::{DelayRouter, DelayRouterConfig, RelayStats, RelayStatsHandle};
use crate::script;
use crate::topology::{Topology, Uplink};
use crate::turn::TurnServer;

/// How long [`Lab::handoff`] waits, after the script exits, for the kernel
/// changes to show up in its netlink listener.
const OBSERVE_DEADLINE: Duration = Duration::from_secs(2);

/// How to build a lab.
#[derive(Debug, Clone, PartialEq)]
pub struct LabConfig {
    /// The `LAB_ID`: suffixes the namespace names (`tether-phone-ID`) so
    /// that labs can run in parallel. At most 32 of `[A-Za-z0-9_.-]`.
    pub id: String,
    /// The uplink that is up after setup (`None`: neither).
    pub initial_uplink: Option<Uplink>,
    /// Tear down a lab with the same id first (left over by a killed run)
    /// instead of refusing.
    pub replace_existing: bool,
    /// Added round-trip time between the phone and the cloud, for all
    /// traffic: the router delays every packet it forwards by half of it
    /// ([`DelayRouter`]). Zero (and no jitter or loss): plain kernel
    /// forwarding.
    pub round_trip_delay: Duration,
    /// Jitter on each crossing of the router: every packet's one-way delay
    /// is drawn uniformly from `round_trip_delay / 2 ± jitter / 2` (never
    /// below zero); packets of one flow keep their order
    /// ([`DelayRouterConfig::jitter`]).
    pub jitter: Duration,
    /// Random loss in the router, in percent (0 to 100), on every crossing
    /// in both directions.
    pub loss_percent: f64,
    /// Seeds the router's loss and jitter draws, so that a run can be
    /// repeated.
    pub seed: u64,
    /// NAT in the gateways of the phone's uplinks and of home (`lab.sh
    /// nat`); [`Nat::None`]: plain routing.
    pub nat: Nat,
    /// Run a TURN server (coturn) in the cloud ([`Lab::turn`]).
    pub turn: bool,
}

impl LabConfig {
    /// A lab called `id`, on Wi-Fi, refusing to replace an existing one.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            initial_uplink: Some(Uplink::Wifi),
            replace_existing: false,
            round_trip_delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss_percent: 0.0,
            seed: 0,
            nat: Nat::None,
            turn: false,
        }
    }

    /// A lab with an id unique to this process (`p<pid>-<n>`).
    pub fn unique() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        Self::new(format!("p{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)))
    }

    /// Sets [`initial_uplink`](Self::initial_uplink).
    #[must_use]
    pub fn initial_uplink(mut self, uplink: Option<Uplink>) -> Self {
        self.initial_uplink = uplink;
        self
    }

    /// Sets [`replace_existing`](Self::replace_existing).
    #[must_use]
    pub fn replace_existing(mut self, replace: bool) -> Self {
        self.replace_existing = replace;
        self
    }

    /// Sets [`round_trip_delay`](Self::round_trip_delay).
    #[must_use]
    pub fn round_trip_delay(mut self, rtt: Duration) -> Self {
        self.round_trip_delay = rtt;
        self
    }

    /// Sets [`jitter`](Self::jitter).
    #[must_use]
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets [`loss_percent`](Self::loss_percent).
    #[must_use]
    pub fn loss_percent(mut self, percent: f64) -> Self {
        self.loss_percent = percent;
        self
    }

    /// Sets [`seed`](Self::seed).
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets [`nat`](Self::nat).
    #[must_use]
    pub fn nat(mut self, nat: Nat) -> Self {
        self.nat = nat;
        self
    }

    /// Sets [`turn`](Self::turn).
    #[must_use]
    pub fn turn(mut self, turn: bool) -> Self {
        self.turn = turn;
        self
    }

    /// What the delay router does; `None` when the lab needs none.
    fn delay_router(&self) -> Option<DelayRouterConfig> {
        let needed =
            !self.round_trip_delay.is_zero() || !self.jitter.is_zero() || self.loss_percent > 0.0;
        needed.then_some(DelayRouterConfig {
            one_way_delay: self.round_trip_delay / 2,
            jitter: self.jitter,
            loss_percent: self.loss_percent,
            seed: self.seed,
        })
    }
}

/// How a handoff changes uplinks (`lab.sh handoff`'s options).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandoffMode {
    /// Break before make, within milliseconds: the old uplink goes and the
    /// new one comes up in one `ip -batch`, as a phone leaving Wi-Fi does.
    #[default]
    Immediate,
    /// The old uplink goes, and the new one comes up only this much later
    /// (`--outage-ms`): a tunnel, a lift, a dead zone.
    Outage(Duration),
    /// Make before break (`--overlap-ms`): the new uplink comes up, with
    /// the default route, this long before the old one goes. Until then the
    /// old address stays, so sockets bound to it keep working.
    Overlap(Duration),
}

impl HandoffMode {
    /// The `lab.sh handoff` options for this mode.
    fn arguments(self) -> Vec<String> {
        match self {
            Self::Immediate => Vec::new(),
            Self::Outage(gap) => vec!["--outage-ms".to_owned(), gap.as_millis().to_string()],
            Self::Overlap(gap) => vec!["--overlap-ms".to_owned(), gap.as_millis().to_string()],
        }
    }
}

impl Default for LabConfig {
    fn default() -> Self {
        Self::unique()
    }
}

/// When one handoff's kernel changes happened, as read by the lab's netlink
/// listener: a [`PathMonitor`] on its own thread inside the phone
/// namespace, so its stamps trail the kernel by microseconds whatever the
/// caller's runtime is doing. Another listener (the node's monitor) reads
/// its own copy of the same notification independently: its stamp may fall
/// a few microseconds before or after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoffTiming {
    /// The uplink the phone moved to.
    pub to: Uplink,
    /// How it moved.
    pub mode: HandoffMode,
    /// Just before `lab.sh handoff` started.
    pub started: Instant,
    /// The old uplink's address disappeared (`RTM_DELADDR`); `None` when
    /// no uplink was up before.
    pub old_address_removed: Option<Instant>,
    /// The default route through the new uplink appeared (`RTM_NEWROUTE`).
    pub new_route_installed: Instant,
    /// `lab.sh handoff` exited.
    pub finished: Instant,
}

impl HandoffTiming {
    /// From the old address disappearing to the new default route: how long
    /// the phone had no usable uplink (zero with an overlap); `None` when
    /// no uplink was up before.
    pub fn outage(&self) -> Option<Duration> {
        self.old_address_removed
            .map(|removed| self.new_route_installed.saturating_duration_since(removed))
    }

    /// From the new default route to the old address disappearing: how long
    /// both uplinks were up; `None` unless the new route came first.
    pub fn overlap(&self) -> Option<Duration> {
        self.old_address_removed
            .and_then(|removed| removed.checked_duration_since(self.new_route_installed))
    }

    /// The last of the handoff's two kernel changes: from here on only the
    /// new uplink is up.
    pub fn completed(&self) -> Instant {
        self.old_address_removed
            .map_or(self.new_route_installed, |removed| removed.max(self.new_route_installed))
    }
}

/// A running lab. Dropping it tears everything down (blocking the thread
/// for the few milliseconds `lab.sh teardown` takes); [`Lab::teardown`]
/// does the same asynchronously and reports errors.
#[derive(Debug)]
pub struct Lab {
    topology: Topology,
    uplink: Option<Uplink>,
    /// The listener thread in the phone namespace; dropped before teardown.
    listener: Option<NetnsTask<()>>,
    /// The delay router's thread in the router namespace, with a way to
    /// read its counters; `None` without added delay.
    delay: Option<(NetnsTask<()>, RelayStatsHandle)>,
    /// What the listener saw, in order.
    changes: mpsc::UnboundedReceiver<ObservedChange>,
    nat: Nat,
    /// coturn in the cloud, when asked for.
    turn: Option<TurnServer>,
    torn_down: bool,
}

/// Fails with [`LabError::NotRoot`] unless the process runs as root.
///
/// # Errors
///
/// [`LabError::NotRoot`].
pub fn require_root() -> Result<(), LabError> {
    if nix::unistd::geteuid().is_root() { Ok(()) } else { Err(LabError::NotRoot) }
}

/// Checks that this machine can run the lab: root, and a network namespace
/// holding a veth pair can be created (then removed again).
///
/// # Errors
///
/// [`LabError::NotRoot`] or [`LabError::Unsupported`] saying what failed.
///
/// # Cancel safety
///
/// Cancel safe, except that cancelling between creating and deleting the
/// probe namespace (`tether-probe-PID-N`) leaves it behind.
pub async fn check_support() -> Result<(), LabError> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    require_root()?;
    let name =
        format!("tether-probe-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    ip(&["netns", "add", &name]).await?;
    let veth =
        ip(&["-n", &name, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"]).await;
    let removed = ip(&["netns", "del", &name]).await;
    veth.and(removed)
}

/// The environment variable that makes [`netns_available`] fail a test
/// instead of skipping it: set it to `1` where namespaces are promised (CI).
pub const REQUIRE_NETNS_VAR: &str = "TETHER_REQUIRE_NETNS";

/// For tests that need network namespaces (the lab, a node in it): whether
/// `test` can run here, by [`check_support`]. When it cannot, prints a loud
/// SKIP banner to stderr (past the test harness's capture) and returns
/// `false`, so that a developer's laptop without root skips visibly.
///
/// # Panics
///
/// When it cannot run and [`REQUIRE_NETNS_VAR`] is `1`: there a skip would
/// pass without testing anything.
///
/// # Cancel safety
///
/// As [`check_support`].
pub async fn netns_available(test: &str) -> bool {
    let Err(reason) = check_support().await else { return true };
    assert!(
        std::env::var(REQUIRE_NETNS_VAR).as_deref() != Ok("1"),
        "{test} needs network namespaces and {REQUIRE_NETNS_VAR}=1 is set, but: {reason}"
    );
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n==================================================================\n\
         SKIP: {test} did not run: {reason}\n      \
         (needs root, `ip netns` and veth; nothing was tested here;\n      \
         set {REQUIRE_NETNS_VAR}=1 to make this a failure)\n\
         =================================================================="
    );
    false
}

/// For tests: whether `tool --version` runs. If not, prints a loud SKIP and returns `false`.
///
/// # Panics
///
/// When it does not run and the environment variable `require` is `1` (CI): there a skip
/// would pass without testing anything.
pub fn tool_available(tool: &str, require: &str) -> bool {
    let runs = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        assert!(
            std::env::var(require).as_deref() != Ok("1"),
            "{require}=1 but `{tool}` is missing"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\nSKIP: `{tool}` is not installed; nothing was tested here\n"
        );
    }
    runs
}

async fn ip(args: &[&str]) -> Result<(), LabError> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| LabError::Unsupported { reason: format!("cannot run `ip`: {e}") })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(LabError::Unsupported {
            reason: format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })
    }
}

/// Tears down the lab called `id` (idempotent: succeeds when there is
/// nothing to remove). For cleaning up after a killed run.
///
/// # Errors
///
/// [`LabError::NotRoot`], [`LabError::InvalidId`], or the script's failure.
///
/// # Cancel safety
///
/// Cancelling kills the script; the lab may be half removed. Run it again.
pub async fn teardown(id: &str) -> Result<(), LabError> {
    require_root()?;
    if !script::valid_id(id) {
        return Err(LabError::InvalidId(id.to_owned()));
    }
    script::run(id, &["teardown"]).await.map(drop)
}

impl Lab {
    /// Builds the lab (`lab.sh setup`) and starts the netlink listener in
    /// the phone namespace that times handoffs.
    ///
    /// # Errors
    ///
    /// [`LabError::NotRoot`], [`LabError::InvalidId`], the script's
    /// failure (a lab with this id exists and `replace_existing` is off,
    /// namespaces are not supported, ...), or the listener's. Whatever was
    /// built is removed again.
    ///
    /// # Cancel safety
    ///
    /// Cancelling while the script runs kills it, and the script's own trap
    /// does not run then: call [`teardown`] with the same id to be sure.
    /// Once the lab is built, cancelling drops it, which tears it down.
    pub async fn setup(config: LabConfig) -> Result<Lab, LabError> {
        require_root()?;
        if !script::valid_id(&config.id) {
            return Err(LabError::InvalidId(config.id));
        }
        let topology = Topology::parse(&script::run(&config.id, &["env"]).await?)?;
        if config.replace_existing {
            script::run(&config.id, &["teardown"]).await?;
        }
        let initial = config.initial_uplink.map_or("none", Uplink::name);
        script::run(&config.id, &["setup", initial]).await?;
        // From here on, dropping `lab` tears the namespaces down.
        let (changes_tx, changes) = mpsc::unbounded_channel();
        let mut lab = Lab {
            topology,
            uplink: config.initial_uplink,
            listener: None,
            delay: None,
            changes,
            nat: config.nat,
            turn: None,
            torn_down: false,
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let listener = spawn_in_netns(&lab.topology.phone, move || listen(ready_tx, changes_tx))?;
        let (listener, ()) = started(listener, ready_rx).await?;
        lab.listener = Some(listener);
        if let Some(router) = config.delay_router() {
            lab.start_delay(router).await?;
        }
        if config.nat != Nat::None {
            script::run(&config.id, &["nat", config.nat.name()]).await?;
        }
        if config.turn {
            let cloud = lab.topology.cloud.clone();
            lab.turn = Some(TurnServer::start(&cloud, lab.topology.cloud_addr, &config.id).await?);
        }
        tracing::info!(
            event = "lab.setup",
            lab = config.id,
            phone = lab.topology.phone.name(),
            router = lab.topology.router.name(),
            cloud = lab.topology.cloud.name(),
            uplink = initial,
            round_trip_delay_ms = config.round_trip_delay.as_secs_f64() * 1e3,
            jitter_ms = config.jitter.as_secs_f64() * 1e3,
            loss_percent = config.loss_percent,
            seed = config.seed,
            nat = config.nat.name(),
            turn = config.turn,
        );
        Ok(lab)
    }

    /// Starts the delay router in the router namespace and routes the
    /// router's traffic through it.
    async fn start_delay(&mut self, config: DelayRouterConfig) -> Result<(), LabError> {
        let device = self.topology.delay_device.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = spawn_in_netns(&self.topology.router, move || async move {
            match DelayRouter::start_with(&device, config) {
                Ok(router) => {
                    let _ = ready_tx.send(Ok(router.stats_handle()));
                    // Runs until the lab aborts this task.
                    std::future::pending::<()>().await;
                    drop(router);
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            }
        })?;
        self.delay = Some(started(task, ready_rx).await?);
        script::run(self.id(), &["delay", "on"]).await?;
        Ok(())
    }

    /// What the delay router has forwarded and dropped so far; `None`
    /// without added delay.
    pub fn delay_stats(&self) -> Option<RelayStats> {
        self.delay.as_ref().map(|(_, stats)| stats.stats())
    }

    /// The NAT the lab's gateways do.
    pub fn nat(&self) -> Nat {
        self.nat
    }

    /// The TURN server in the cloud; `None` unless [`LabConfig::turn`].
    pub fn turn(&self) -> Option<&TurnServer> {
        self.turn.as_ref()
    }

    /// The home gateway's packet counters (`lab.sh counters`): compare two
    /// readings ([`NatCounters::since`]) to tell whether the far peer's data
    /// went through the TURN relay or on a direct path in between. `None`
    /// without NAT (the counters live in the NAT's nftables table).
    ///
    /// # Errors
    ///
    /// The script's failure, or output it cannot read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn nat_counters(&self) -> Result<Option<NatCounters>, LabError> {
        if self.nat == Nat::None {
            return Ok(None);
        }
        NatCounters::parse(&script::run(self.id(), &["counters"]).await?).map(Some)
    }

    /// The lab id.
    pub fn id(&self) -> &str {
        &self.topology.id
    }

    /// Names and addresses.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The uplink that is up (as far as this lab did it).
    pub fn uplink(&self) -> Option<Uplink> {
        self.uplink
    }

    /// Moves the phone onto `to` as a phone does (`lab.sh handoff`): the
    /// old uplink's address and default route disappear and its link goes
    /// down, then `to` comes up with its address and default route. Returns
    /// when both changes were seen in the phone namespace.
    ///
    /// The same as [`handoff_with`](Self::handoff_with) and
    /// [`HandoffMode::Immediate`].
    ///
    /// # Errors
    ///
    /// [`LabError::AlreadyOn`] when the phone is on `to` already, the
    /// script's failure, or [`LabError::HandoffNotObserved`] when the
    /// changes did not show up within 2 s of the script's exit.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: cancelling kills the script half way; the phone may
    /// be left without an uplink. [`uplink`](Self::uplink) then still names
    /// the old one.
    pub async fn handoff(&mut self, to: Uplink) -> Result<HandoffTiming, LabError> {
        self.handoff_with(to, HandoffMode::Immediate).await
    }

    /// Moves the phone onto `to` as `mode` says: at once, after an outage
    /// (the old uplink goes, `to` comes up later), or with an overlap (`to`
    /// comes up first). Returns once the script has finished (after the
    /// outage or overlap) and both changes were seen in the phone
    /// namespace.
    ///
    /// # Errors
    ///
    /// As [`handoff`](Self::handoff).
    ///
    /// # Cancel safety
    ///
    /// As [`handoff`](Self::handoff): cancelling during an outage leaves
    /// the phone without an uplink, during an overlap with both.
    pub async fn handoff_with(
        &mut self,
        to: Uplink,
        mode: HandoffMode,
    ) -> Result<HandoffTiming, LabError> {
        if self.uplink == Some(to) {
            return Err(LabError::AlreadyOn(to));
        }
        let old = self.uplink.map(|u| self.topology.uplink(u).phone);
        let gateway = self.topology.uplink(to).router;
        // Forget what happened before this handoff.
        while self.changes.try_recv().is_ok() {}
        let started = Instant::now();
        let options = mode.arguments();
        let mut args = vec!["handoff", to.handoff_argument()];
        args.extend(options.iter().map(String::as_str));
        script::run(self.id(), &args).await?;
        let finished = Instant::now();
        self.uplink = Some(to);

        let mut removed = None;
        let mut installed = None;
        let observed = tokio::time::timeout(OBSERVE_DEADLINE, async {
            while (old.is_some() && removed.is_none()) || installed.is_none() {
                match self.changes.recv().await {
                    Some(ObservedChange { at, change }) => match change {
                        Change::AddressRemoved(a) if old.is_some_and(|ip| a.ip == ip) => {
                            removed.get_or_insert(at);
                        }
                        Change::RouteAdded { route, .. }
                            if route.family == Family::V4
                                && route.table == MAIN_TABLE
                                && route
                                    .next_hops
                                    .iter()
                                    .any(|h| h.gateway == Some(gateway.into())) =>
                        {
                            installed.get_or_insert(at);
                        }
                        _ => {}
                    },
                    None => return Err("kernel changes (the listener stopped)"),
                }
            }
            Ok(())
        })
        .await;
        let missing = match observed {
            Ok(Ok(())) => None,
            Ok(Err(what)) => Some(what),
            Err(_) if installed.is_none() => Some("the new default route"),
            Err(_) => Some("the old address removal"),
        };
        if let Some(missing) = missing {
            return Err(LabError::HandoffNotObserved { to, missing, deadline: OBSERVE_DEADLINE });
        }
        let Some(new_route_installed) = installed else {
            return Err(LabError::HandoffNotObserved {
                to,
                missing: "the new default route",
                deadline: OBSERVE_DEADLINE,
            });
        };
        let timing = HandoffTiming {
            to,
            mode,
            started,
            old_address_removed: removed,
            new_route_installed,
            finished,
        };
        tracing::debug!(
            event = "lab.handoff",
            lab = self.id(),
            to = to.name(),
            mode = ?mode,
            outage_us = timing.outage().map(|d| d.as_micros() as u64),
            overlap_us = timing.overlap().map(|d| d.as_micros() as u64),
            script_ms = finished.duration_since(started).as_secs_f64() * 1e3,
        );
        Ok(timing)
    }

    /// Tears the lab down (`lab.sh teardown`): processes still running in
    /// its namespaces are stopped and the namespaces deleted.
    ///
    /// # Errors
    ///
    /// The script's failure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if cancelled, the lab is torn down when dropped.
    pub async fn teardown(mut self) -> Result<(), LabError> {
        if let Some(listener) = self.listener.take() {
            let _ = listener.join_aborted().await;
        }
        if let Some((router, _)) = self.delay.take() {
            let _ = router.join_aborted().await;
        }
        if let Some(turn) = self.turn.take() {
            turn.stop().await;
        }
        let result = script::run(self.id(), &["teardown"]).await.map(drop);
        if result.is_ok() {
            self.torn_down = true;
            tracing::info!(event = "lab.teardown", lab = self.id());
        }
        result
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        // Aborts the listener and the delay router (their threads close
        // their sockets and devices on their own).
        drop(self.listener.take());
        drop(self.delay.take());
        drop(self.turn.take());
        match script::run_blocking(&self.topology.id, &["teardown"]) {
            Ok(_) => tracing::info!(event = "lab.teardown", lab = self.topology.id, on_drop = true),
            Err(error) => {
                tracing::error!(event = "lab.teardown.failed", lab = self.topology.id, %error)
            }
        }
    }
}

/// Waits for `task`'s start-up report on `ready`. A task that ended without
/// one reports its own error (it could not enter its namespace, or
/// panicked). On an error the task is dropped, which aborts it.
async fn started<T>(
    task: NetnsTask<()>,
    ready: oneshot::Receiver<Result<T, LabError>>,
) -> Result<(NetnsTask<()>, T), LabError> {
    match ready.await {
        Ok(Ok(value)) => Ok((task, value)),
        Ok(Err(error)) => Err(error),
        Err(_) => {
            let netns = task.netns().to_owned();
            Err(task.join().await.err().unwrap_or(LabError::TaskPanicked { netns }))
        }
    }
}

/// The lab's listener, on its thread in the phone namespace: a path monitor
/// whose kernel changes are forwarded to the [`Lab`].
async fn listen(
    ready: oneshot::Sender<Result<(), LabError>>,
    forward: mpsc::UnboundedSender<ObservedChange>,
) {
    let monitor = match PathMonitor::start(PathMonitorConfig::default()).await {
        Ok((monitor, _snapshots)) => monitor,
        Err(error) => {
            let _ = ready.send(Err(LabError::Monitor(error)));
            return;
        }
    };
    let mut changes = monitor.changes();
    let _ = ready.send(Ok(()));
    loop {
        match changes.recv().await {
            Ok(change) => {
                if forward.send(change).is_err() {
                    break;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(event = "lab.listener.lagged", missed);
            }
            Err(broadcast::error::RecvError::Closed) => break,
        }
    }
}
