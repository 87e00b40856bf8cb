//! NAT in the lab's gateways (`lab.sh nat`), and the home gateway's
//! counters that tell a direct path from a relayed one (`lab.sh counters`).

use std::fmt;
use std::str::FromStr;

use crate::error::LabError;

/// What the lab's three gateways (the phone's Wi-Fi and cellular uplinks,
/// the far peer's home) do to the addresses passing through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Nat {
    /// Plain routing: every private subnet is routable, the far side sees
    /// the phone's own addresses.
    #[default]
    None,
    /// nftables `masquerade`, keeping the source port: one socket keeps
    /// one public address and port whatever it talks to
    /// (endpoint-independent mapping; inbound only from where the inside
    /// sent to). Direct ICE works through it.
    Cone,
    /// nftables `masquerade random,fully-random`: a new random public port
    /// for every new destination (endpoint-dependent mapping). A
    /// server-reflexive candidate learnt from a STUN server is useless to
    /// any other peer, so with symmetric NAT on both ends only a TURN relay
    /// connects them.
    Symmetric,
}

impl Nat {
    /// `"none"`, `"cone"` or `"symmetric"` (the `lab.sh nat` argument and
    /// the report's spelling).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Cone => "cone",
            Self::Symmetric => "symmetric",
        }
    }
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Nat {
    type Err = LabError;

    fn from_str(text: &str) -> Result<Self, LabError> {
        match text {
            "none" => Ok(Self::None),
            "cone" => Ok(Self::Cone),
            "symmetric" => Ok(Self::Symmetric),
            other => Err(LabError::Topology(format!(
                "unknown NAT {other:?} (expected none, cone or symmetric)"
            ))),
        }
    }
}

/// Packets the home gateway forwarded, counted by its nftables table
/// (cumulative since [`Nat`] was set up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatCounters {
    /// UDP to or from the cloud's address: STUN, TURN and relayed data
    /// (signaling is TCP).
    pub udp_cloud: u64,
    /// DTLS application data (UDP payload starting with byte 23) to or from
    /// anywhere but the cloud: data on a direct path.
    pub dtls_direct: u64,
}

impl NatCounters {
    /// What was counted between `earlier` and `self`.
    #[must_use]
    pub fn since(self, earlier: NatCounters) -> NatCounters {
        NatCounters {
            udp_cloud: self.udp_cloud.saturating_sub(earlier.udp_cloud),
            dtls_direct: self.dtls_direct.saturating_sub(earlier.dtls_direct),
        }
    }

    /// Over an interval in which the peers exchanged data: whether it went
    /// through the TURN relay (UDP through the cloud, no DTLS data on a
    /// direct path), on a direct path (`Some(false)`), or neither was seen
    /// (`None`).
    pub fn relayed(self) -> Option<bool> {
        if self.dtls_direct > 0 {
            Some(false)
        } else if self.udp_cloud > 0 {
            Some(true)
        } else {
            None
        }
    }

    /// Parses the `KEY=VALUE` lines of `lab.sh counters`.
    pub(crate) fn parse(text: &str) -> Result<Self, LabError> {
        let value = |key: &str| -> Result<u64, LabError> {
            text.lines()
                .filter_map(|line| line.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .ok_or_else(|| LabError::Topology(format!("`lab.sh counters` has no {key}")))?
                .1
                .trim()
                .parse()
                .map_err(|e| LabError::Topology(format!("{key} is not a count: {e}")))
        };
        Ok(Self {
            udp_cloud: value("HOME_UDP_CLOUD_PACKETS")?,
            dtls_direct: value("HOME_DTLS_DIRECT_PACKETS")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for nat in [Nat::None, Nat::Cone, Nat::Symmetric] {
            assert_eq!(nat.name().parse::<Nat>().expect("parses"), nat);
        }
        let err = "full-cone".parse::<Nat>().expect_err("unknown").to_string();
        assert!(err.contains("expected none, cone or symmetric"), "{err}");
    }

    #[test]
    fn counters_parse_and_classify() {
        let counters =
            NatCounters::parse("HOME_UDP_CLOUD_PACKETS=12\nHOME_DTLS_DIRECT_PACKETS=3\n").unwrap();
        assert_eq!(counters, NatCounters { udp_cloud: 12, dtls_direct: 3 });
        let later = NatCounters { udp_cloud: 40, dtls_direct: 3 };
        assert_eq!(later.since(counters), NatCounters { udp_cloud: 28, dtls_direct: 0 });
        assert_eq!(later.since(counters).relayed(), Some(true));
        assert_eq!(NatCounters { udp_cloud: 5, dtls_direct: 1 }.relayed(), Some(false));
        assert_eq!(NatCounters::default().relayed(), None);
        let err = NatCounters::parse("HOME_UDP_CLOUD_PACKETS=x").unwrap_err().to_string();
        assert!(err.contains("HOME_UDP_CLOUD_PACKETS is not a count"), "{err}");
        let err = NatCounters::parse("HOME_UDP_CLOUD_PACKETS=1").unwrap_err().to_string();
        assert!(err.contains("no HOME_DTLS_DIRECT_PACKETS"), "{err}");
    }
}
