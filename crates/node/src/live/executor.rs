//! The real [`RecoveryExecutor`]: the recovery actions on a signaling
//! client and a set of WebRTC peers. It runs what it is told; it never
//! decides what to do next.

use std::sync::Arc;

use futures_util::future::join_all;
use tether_recovery::FailureKind;
use tether_rtc::{Escalation, PeerSet, PeerState, Role, RtcError};
use tether_signal::protocol::PeerId;
use tether_signal::{Rebuilt, SignalClient, SignalError, SignalErrorKind};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::config::{RecoveryTiming, RestoreStrategy};
use super::roster::Roster;
use crate::ActionError;
use crate::executor::{ActionContext, ActionResult, RecoveryExecutor};

/// Runs actions against a [`SignalClient`] and a [`PeerSet`].
#[derive(Debug)]
pub(crate) struct RtcExecutor {
    pub(crate) signal: SignalClient,
    pub(crate) peers: PeerSet,
    pub(crate) roster: Arc<Roster>,
    pub(crate) timing: RecoveryTiming,
}

pub(crate) fn signal_failure(error: &SignalError) -> ActionError {
    let kind = match error.kind() {
        SignalErrorKind::Timeout => FailureKind::Timeout,
        SignalErrorKind::Unreachable | SignalErrorKind::Closed => FailureKind::Unreachable,
        SignalErrorKind::AuthRejected => FailureKind::AuthRejected,
        SignalErrorKind::ConfigRejected => FailureKind::ConfigRejected,
        _ => FailureKind::Internal,
    };
    ActionError::new(kind, format!("signaling: {error}"))
}

fn rtc_failure(peer: &PeerId, error: &RtcError) -> ActionError {
    let kind = match error {
        _ if error.is_timeout() => FailureKind::Timeout,
        RtcError::ConnectionFailed { .. }
        | RtcError::ClosedByRemote { .. }
        | RtcError::PeerClosed { .. }
        | RtcError::NoPeerConnection { .. }
        | RtcError::SignalChannelClosed
        | RtcError::SignalChannelFull => FailureKind::Unreachable,
        _ => FailureKind::Internal,
    };
    ActionError::new(kind, format!("peer {peer}: {error}"))
}

impl RtcExecutor {
    /// Makes signaling healthy the configured way. Returns the peers whose `ice_restart` the
    /// server sent for us on registering: a fresh connection's `register` asks every peer this
    /// node answers and will ICE-restart, a round trip before the restart could ask.
    async fn heal_signaling(&self) -> Result<Vec<PeerId>, ActionError> {
        match self.timing.restore {
            RestoreStrategy::RaceFreshConnection => {
                let answering: Vec<PeerId> = self
                    .roster
                    .wanted()
                    .into_iter()
                    .filter(|peer| {
                        self.restartable(peer)
                            && self
                                .peers
                                .role_towards(peer)
                                .is_ok_and(|role| role == Role::Answerer)
                    })
                    .collect();
                let probe_timeout = self.timing.probe_timeout;
                self.signal.rebuild_asking_ice_restart(probe_timeout, &answering).await.map(
                    |rebuilt| {
                        info!(name: "live.signaling.rebuilt", outcome = ?rebuilt);
                        match rebuilt {
                            Rebuilt::Replaced { connected, .. } => connected.ice_restart_requested,
                            _ => Vec::new(),
                        }
                    },
                )
            }
            RestoreStrategy::ProbeThenReconnect => {
                if self.signal.is_connected()
                    && self.signal.probe_alive(self.timing.probe_timeout).await.is_ok()
                {
                    return Ok(Vec::new());
                }
                self.signal.connect_once().await.map(|_| Vec::new())
            }
        }
        .map_err(|err| signal_failure(&err))
    }

    /// Whether `peer` has a peer connection an ICE restart can revive.
    fn restartable(&self, peer: &PeerId) -> bool {
        self.peers.status(peer).is_some_and(|s| {
            s.connection_id.is_some() && !matches!(s.state, Some(PeerState::Closed) | None)
        })
    }

    /// Brings one peer back: an ICE restart of its peer connection, or a new
    /// one when there is none or the restart does not revive it. `asked`: the
    /// restart was asked for at that time already (see [`Self::heal_signaling`]).
    async fn revive(&self, peer: &PeerId, asked: Option<Instant>) -> Result<(), RtcError> {
        if self.restartable(peer) {
            let restarted = match asked {
                Some(asked_at) => self.peers.restart_ice_asked(peer, asked_at).await,
                None => self.peers.restart_ice(peer).await,
            };
            match restarted {
                Ok(()) => return Ok(()),
                Err(err) => {
                    warn!(name: "live.peer.restart_failed", %peer, error = %err, "replacing the peer connection");
                    self.escalate_if_direct_failed(peer, &err);
                }
            }
            return self.peers.replace(peer).await;
        }
        self.peers.connect(peer).await
    }

    /// After a failed ICE restart: when the restart itself ran (signaling
    /// up, offer and answer exchanged or timed out waiting for ICE) and ICE
    /// is still not connected, direct paths do not work: the replacement is
    /// built relay-only, if a TURN server is configured (see tether-rtc's
    /// `PeerSet::escalate_to_relay`).
    fn escalate_if_direct_failed(&self, peer: &PeerId, restart: &RtcError) {
        let state = self.peers.status(peer).and_then(|status| status.state);
        let ice_failed = direct_ice_failed(restart, self.signal.is_connected(), state);
        if !ice_failed {
            return;
        }
        let outcome = self.peers.escalate_to_relay(peer);
        if outcome == Escalation::Escalated {
            warn!(name: "live.peer.relay_escalation", %peer, restart_error = %restart,
                "direct ICE failed after a restart; the replacement is relay-only");
        } else {
            debug!(name: "live.peer.relay_escalation_skipped", %peer, ?outcome);
        }
    }

    /// Revives every peer of the roster at once. Fails only when there were
    /// peers and none came back: a single absent peer must not make the
    /// whole node retry (its own recovery reconnects it), but a dead data
    /// plane is a failed recovery.
    /// `asked`: the peers whose restart was asked for at that time already.
    async fn revive_all(&self, asked: &[PeerId], asked_at: Instant) -> ActionResult {
        let peers = self.roster.wanted();
        if peers.is_empty() {
            return Ok(());
        }
        let revivals = peers.iter().map(|peer| {
            let asked = asked.contains(peer).then_some(asked_at);
            self.revive(peer, asked)
        });
        let results = join_all(revivals).await;
        let mut first_failure = None;
        let mut revived = 0;
        for (peer, result) in peers.iter().zip(results) {
            match result {
                Ok(()) => revived += 1,
                Err(err) => {
                    warn!(name: "live.peer.revive_failed", peer = %peer, error = %err);
                    first_failure.get_or_insert_with(|| rtc_failure(peer, &err));
                }
            }
        }
        match first_failure {
            Some(failure) if revived == 0 => Err(failure),
            _ => Ok(()),
        }
    }

    /// Holds data to the peers whose candidate pair leaves from an address that is gone (see
    /// tether-rtc's `PeerSet::hold_stranded`).
    async fn hold_stranded(&self) {
        let held = self.peers.hold_stranded().await;
        if !held.is_empty() {
            info!(name: "live.peer.data_held", peers = held.len(), "holding data until the peers' ICE restarts");
        }
    }

    /// Closes every peer connection on purpose; reports what would not close.
    async fn close_peers(&self) -> ActionResult {
        for peer in self.roster.wanted() {
            if let Some(id) = self.peers.status(&peer).and_then(|status| status.connection_id) {
                self.roster.closing_on_purpose(&peer, id);
            }
        }
        self.peers.clear_pending_restarts();
        let report = self.peers.close_all().await;
        if report.is_clean() {
            return Ok(());
        }
        let residual: Vec<String> = report
            .residual
            .iter()
            .map(|r| match &r.peer {
                Some(peer) => format!("{peer} ({})", r.reason),
                None => r.reason.clone(),
            })
            .collect();
        Err(ActionError::new(
            FailureKind::Timeout,
            format!("peer connections not closed in time: {}", residual.join(", ")),
        ))
    }
}

/// Whether a failed ICE restart says that direct paths do not work: the
/// restart ran (signaling up; it timed out waiting for ICE, or ICE failed)
/// and the peer connection is still not connected (after a restart ICE is
/// checking again, `Connecting`, until it connects or gives up).
fn direct_ice_failed(restart: &RtcError, signaling_up: bool, state: Option<PeerState>) -> bool {
    matches!(restart, RtcError::RestartTimeout { .. } | RtcError::ConnectionFailed { .. })
        && signaling_up
        && matches!(
            state,
            Some(PeerState::Connecting | PeerState::Disconnected | PeerState::Failed)
        )
}

impl RecoveryExecutor for RtcExecutor {
    async fn probe(&self, _ctx: ActionContext) -> ActionResult {
        self.signal
            .probe_alive(self.timing.probe_timeout)
            .await
            .map(drop)
            .map_err(|err| signal_failure(&err))
    }

    async fn restore(&self, _ctx: ActionContext) -> ActionResult {
        // Before anything else: a pair whose local address is gone loses whatever is written to
        // it, and SCTP would resend that only on its own slow timer.
        self.hold_stranded().await;
        // Before the rebuild: whatever `register` asks for is asked for no later than this.
        let asked_at = Instant::now();
        let asked = self.heal_signaling().await?;
        self.revive_all(&asked, asked_at).await
    }

    async fn reconnect(&self, _ctx: ActionContext) -> ActionResult {
        // Cleanup first; its residuals do not stop the rebuild.
        self.signal.disconnect().await;
        if let Err(err) = self.close_peers().await {
            warn!(name: "live.reconnect.residual", error = %err);
        }
        self.signal.connect_once().await.map_err(|err| signal_failure(&err))?;
        self.revive_all(&[], Instant::now()).await
    }

    async fn disconnect(&self, _ctx: ActionContext) -> ActionResult {
        // Keep the peer connections: a Restore ICE-restarts them when the
        // path returns. Meanwhile their data waits in the reliable streams, not
        // in SCTP, which would back its retransmissions off for the whole outage.
        self.hold_stranded().await;
        self.peers.clear_pending_restarts();
        self.signal.disconnect().await;
        Ok(())
    }

    async fn cleanup(&self, _ctx: ActionContext) -> ActionResult {
        // Signaling first, so that no late offer revives anything; then
        // every other step, whatever failed before it.
        self.signal.disconnect().await;
        self.close_peers().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_a_restart_that_ran_and_left_ice_down_means_direct_paths_failed() {
        let peer = PeerId::new("bob").unwrap();
        let timed_out = RtcError::RestartTimeout { peer: peer.clone(), after: Duration::ZERO };
        for state in [PeerState::Connecting, PeerState::Disconnected, PeerState::Failed] {
            assert!(direct_ice_failed(&timed_out, true, Some(state)), "{state:?}");
        }
        // ICE came back meanwhile, or the peer connection is gone.
        assert!(!direct_ice_failed(&timed_out, true, Some(PeerState::Connected)));
        assert!(!direct_ice_failed(&timed_out, true, Some(PeerState::Closed)));
        assert!(!direct_ice_failed(&timed_out, true, None));
        // Signaling down: the restart never reached the peer.
        assert!(!direct_ice_failed(&timed_out, false, Some(PeerState::Failed)));
        // Not an ICE failure.
        let closed = RtcError::ClosedByRemote { peer: peer.clone() };
        assert!(!direct_ice_failed(&closed, true, Some(PeerState::Failed)));
        assert!(!direct_ice_failed(&RtcError::SignalChannelFull, true, Some(PeerState::Failed)));
    }
}
