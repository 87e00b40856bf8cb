//! The error type of the lab.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tether_pathmon::PathMonitorError;

use crate::topology::Uplink;

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The lab needs root (network namespaces, veth, setns).
    #[error(
        "the handoff lab must run as root (it creates network namespaces and veth pairs); re-run with sudo"
    )]
    NotRoot,
    /// This machine cannot create network namespaces.
    #[error("network namespaces are not available here: {reason}")]
    Unsupported {
        /// What failed.
        reason: String,
    },
    /// A lab id that the scripts would reject.
    #[error("invalid lab id {0:?}: use at most 32 characters of [A-Za-z0-9_.-]")]
    InvalidId(String),
    /// `bash` could not be started.
    #[error("cannot run bash for `lab.sh {command}`: {source}")]
    Spawn {
        /// The lab.sh subcommand.
        command: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A lab.sh subcommand failed.
    #[error("`lab.sh {command}` failed ({status}): {stderr}")]
    Script {
        /// The lab.sh subcommand and its arguments.
        command: String,
        /// The exit status, as text.
        status: String,
        /// What the script printed on stderr.
        stderr: String,
    },
    /// `lab.sh env` printed something this crate does not understand.
    #[error("cannot read the lab topology: {0}")]
    Topology(String),
    /// The lab's path monitor failed.
    #[error("path monitor in the phone namespace: {0}")]
    Monitor(#[from] PathMonitorError),
    /// A network namespace could not be opened or entered.
    #[error("cannot enter network namespace {}: {source}", path.display())]
    Namespace {
        /// The namespace path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The thread or runtime for a namespace task could not be created.
    #[error("cannot start the namespace thread: {0}")]
    Thread(#[source] io::Error),
    /// A namespace task panicked.
    #[error("the task in network namespace {netns} panicked")]
    TaskPanicked {
        /// The namespace name.
        netns: String,
    },
    /// A namespace task was aborted before it finished.
    #[error("the task in network namespace {netns} was aborted")]
    Aborted {
        /// The namespace name.
        netns: String,
    },
    /// The phone is already on the uplink a handoff asked for.
    #[error("the phone is already on {}", .0.name())]
    AlreadyOn(Uplink),
    /// The handoff ran but its kernel changes were not seen in time.
    #[error("handoff to {}: {missing} not observed within {deadline:?}", to.name())]
    HandoffNotObserved {
        /// The target uplink.
        to: Uplink,
        /// What was not seen.
        missing: &'static str,
        /// How long the lab waited.
        deadline: Duration,
    },
    /// The lab's TURN server (coturn) could not start or did not answer.
    #[error("turn server: {0}")]
    Turn(String),
    /// The delay relay could not bind or connect.
    #[error("delay relay: cannot {what}: {source}")]
    Relay {
        /// What failed (`bind 10.77.9.1:9000`, ...).
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
