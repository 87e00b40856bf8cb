//! Which [`Transport`] an interface is: the caller's rules, first match wins.

use tether_recovery::Transport;

/// How a [`Rule`] recognises an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceMatch {
    /// The interface name is exactly this.
    Name(String),
    /// The interface name starts with this.
    Prefix(String),
    /// The rtnetlink link kind (`IFLA_INFO_KIND`: `wireguard`, `tun`,
    /// `veth`, ...) is exactly this.
    Kind(String),
}

impl InterfaceMatch {
    fn matches(&self, name: &str, kind: Option<&str>) -> bool {
        match self {
            Self::Name(n) => name == n,
            Self::Prefix(p) => name.starts_with(p.as_str()),
            Self::Kind(k) => kind == Some(k.as_str()),
        }
    }
}

/// One classification rule: interfaces that match are `transport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What the rule recognises.
    pub matches: InterfaceMatch,
    /// What a recognised interface is.
    pub transport: Transport,
}

/// Maps an interface (name and link kind) to a [`Transport`].
///
/// Rules are tried in order; the first that matches decides, and an
/// interface no rule matches is [`Transport::Other`]. [`Classifier::default`]
/// knows the usual Linux and Android names:
///
/// | rule | transport |
/// | --- | --- |
/// | kind `wireguard` or `tun` | vpn |
/// | name `wl*`, `wifi*` | wifi |
/// | name `ww*`, `rmnet*`, `cell*` | cellular |
/// | name `eth*`, `en*` | ethernet |
/// | name `tun*`, `wg*` | vpn |
///
/// The handoff lab names its uplinks `wifi0` and `cell0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Classifier {
    /// A classifier with no rules: every interface is [`Transport::Other`].
    pub fn empty() -> Self {
        Self { rules: Vec::new() }
    }

    /// Adds a rule after the existing ones.
    #[must_use]
    pub fn rule(mut self, matches: InterfaceMatch, transport: Transport) -> Self {
        self.rules.push(Rule { matches, transport });
        self
    }

    /// Adds a rule for names starting with `prefix`.
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>, transport: Transport) -> Self {
        self.rule(InterfaceMatch::Prefix(prefix.into()), transport)
    }

    /// Adds a rule for the exact name `name`.
    #[must_use]
    pub fn name(self, name: impl Into<String>, transport: Transport) -> Self {
        self.rule(InterfaceMatch::Name(name.into()), transport)
    }

    /// Adds a rule for the link kind `kind`.
    #[must_use]
    pub fn kind(self, kind: impl Into<String>, transport: Transport) -> Self {
        self.rule(InterfaceMatch::Kind(kind.into()), transport)
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The transport of the interface called `name` whose link kind is
    /// `kind` (if the kernel reported one).
    pub fn classify(&self, name: &str, kind: Option<&str>) -> Transport {
        self.rules
            .iter()
            .find(|rule| rule.matches.matches(name, kind))
            .map_or(Transport::Other, |rule| rule.transport)
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Self::empty()
            .kind("wireguard", Transport::Vpn)
            .kind("tun", Transport::Vpn)
            .prefix("wl", Transport::Wifi)
            .prefix("wifi", Transport::Wifi)
            .prefix("ww", Transport::Cellular)
            .prefix("rmnet", Transport::Cellular)
            .prefix("cell", Transport::Cellular)
            .prefix("eth", Transport::Ethernet)
            .prefix("en", Transport::Ethernet)
            .prefix("tun", Transport::Vpn)
            .prefix("wg", Transport::Vpn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_know_the_usual_names() {
        let c = Classifier::default();
        let cases = [
            ("wlan0", None, Transport::Wifi),
            ("wlp2s0", None, Transport::Wifi),
            ("wifi0", Some("veth"), Transport::Wifi),
            ("wwan0", None, Transport::Cellular),
            ("rmnet_data0", None, Transport::Cellular),
            ("cell0", Some("veth"), Transport::Cellular),
            ("eth0", None, Transport::Ethernet),
            ("enp0s31f6", None, Transport::Ethernet),
            ("tun0", None, Transport::Vpn),
            ("wg0", Some("wireguard"), Transport::Vpn),
            ("mullvad", Some("wireguard"), Transport::Vpn),
            ("utun3", Some("tun"), Transport::Vpn),
            ("docker0", Some("bridge"), Transport::Other),
            ("lo", None, Transport::Other),
        ];
        for (name, kind, want) in cases {
            assert_eq!(c.classify(name, kind), want, "{name} ({kind:?})");
        }
    }

    #[test]
    fn first_matching_rule_wins_and_unmatched_is_other() {
        let c =
            Classifier::empty().name("wlan1", Transport::Cellular).prefix("wl", Transport::Wifi);
        assert_eq!(c.classify("wlan1", None), Transport::Cellular);
        assert_eq!(c.classify("wlan0", None), Transport::Wifi);
        assert_eq!(c.classify("eth0", None), Transport::Other);
        assert_eq!(c.rules().len(), 2);
    }
}
