//! Recovery actions: what the [`Supervisor`](crate::Supervisor) asks an
//! executor to do, and what the executor reports back.

use std::fmt;

/// One recovery action. `Noop` is the absence of an action.
///
/// The derived order is the *strength* used when folding intents:
/// `Probe < Restore < Reconnect`, and the teardowns above them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionKind {
    /// Ping the live signaling socket.
    Probe,
    /// Make signaling healthy, then ICE-restart every peer that was connected.
    Restore,
    /// Cleanup then Restore, with new peer connections where needed.
    Reconnect,
    /// The path is confirmed offline: stop ICE restarts, close signaling,
    /// keep peer state for a later Restore.
    Disconnect,
    /// Tear everything down, every step bounded, residuals reported.
    Cleanup,
}

impl ActionKind {
    /// Every action, in strength order.
    pub const ALL: [ActionKind; 5] =
        [Self::Probe, Self::Restore, Self::Reconnect, Self::Disconnect, Self::Cleanup];

    /// The lower-case name used in scenario files and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Probe => "probe",
            Self::Restore => "restore",
            Self::Reconnect => "reconnect",
            Self::Disconnect => "disconnect",
            Self::Cleanup => "cleanup",
        }
    }

    /// Parses a lower-case action name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether this action (re)establishes connectivity. Recovery actions
    /// wait while the app is in the background or the path is offline;
    /// teardowns never wait.
    pub fn is_recovery(self) -> bool {
        matches!(self, Self::Probe | Self::Restore | Self::Reconnect)
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Identifies one started action. Ids increase and are never reused by one
/// [`Supervisor`](crate::Supervisor), so a late report for a cancelled action
/// can never be mistaken for the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActionId(pub u64);

impl fmt::Display for ActionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a{}", self.0)
    }
}

/// Why an action failed, as far as recovery decisions care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// A bounded step ran out of time.
    Timeout,
    /// The server or peer could not be reached.
    Unreachable,
    /// Credentials were refused; recovery parks until new credentials or a
    /// forced reconnect.
    AuthRejected,
    /// The configuration was refused (bad URL, protocol version); parks like
    /// an auth rejection.
    ConfigRejected,
    /// Anything else the executor could not classify; treated as transient.
    Internal,
}

impl FailureKind {
    /// Every kind, in a stable order.
    pub const ALL: [FailureKind; 5] = [
        Self::Timeout,
        Self::Unreachable,
        Self::AuthRejected,
        Self::ConfigRejected,
        Self::Internal,
    ];

    /// The snake-case name used in scenario files and JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::AuthRejected => "auth_rejected",
            Self::ConfigRejected => "config_rejected",
            Self::Internal => "internal",
        }
    }

    /// Parses a snake-case failure name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether retrying cannot help until something outside changes.
    pub fn is_rejection(self) -> bool {
        matches!(self, Self::AuthRejected | Self::ConfigRejected)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an action failed: the kind recovery decisions depend on, and a
/// message for people. Executors return it; the Supervisor carries it to
/// every caller whose event the action served.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ActionError {
    /// How the Supervisor classifies the failure.
    pub kind: FailureKind,
    /// What went wrong, for logs and callers.
    pub message: String,
}

impl ActionError {
    /// An error of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }

    /// A bounded step ran out of time.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Timeout, message)
    }

    /// The server or peer could not be reached.
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Unreachable, message)
    }
}

/// One action the Supervisor started: which, and what kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionRef {
    /// Its id.
    pub id: ActionId,
    /// What it was.
    pub kind: ActionKind,
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionOutcome {
    /// It did what it was for.
    Succeeded,
    /// It failed.
    Failed(FailureKind),
    /// The Supervisor cancelled it before it finished.
    Cancelled,
}

impl ActionOutcome {
    /// `ok`, `failed` or `cancelled`, as printed by `tether replay`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Succeeded => "ok",
            Self::Failed(_) => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What the executor must do next, drained with
/// [`Supervisor::poll_action`](crate::Supervisor::poll_action).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionCommand {
    /// Start `kind` now. Report its end with
    /// [`Input::ActionCompleted`](crate::Input::ActionCompleted) carrying `id`.
    Start {
        /// The id to report the outcome with.
        id: ActionId,
        /// What to do.
        kind: ActionKind,
        /// 1 for a first try, k for the k-th consecutive try after failures.
        attempt: u32,
    },
    /// Stop the running action `id` at once. The Supervisor already counts it
    /// as ended (`cancelled`); a later report for `id` is rejected as stale.
    /// A `Cancel` is always drained before the `Start` that replaces it.
    Cancel {
        /// The action to cancel.
        id: ActionId,
        /// Its kind, for logs.
        kind: ActionKind,
    },
}
