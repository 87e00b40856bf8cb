//! The lab's names and addresses, as `lab.sh env` prints them.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use tether_recovery::Transport;

use crate::error::LabError;

/// A named network namespace (`ip netns`), at `/run/netns/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The namespace called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its bind-mount path, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

/// One of the phone's two uplinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Uplink {
    /// `wifi0`.
    Wifi,
    /// `cell0`.
    Cell,
}

impl Uplink {
    /// `"wifi"` or `"cell"` (the lab.sh setup argument).
    pub fn name(self) -> &'static str {
        match self {
            Self::Wifi => "wifi",
            Self::Cell => "cell",
        }
    }

    /// The other uplink.
    pub fn other(self) -> Self {
        match self {
            Self::Wifi => Self::Cell,
            Self::Cell => Self::Wifi,
        }
    }

    /// The lab.sh handoff argument that moves the phone onto this uplink.
    pub fn handoff_argument(self) -> &'static str {
        match self {
            Self::Wifi => "to-wifi",
            Self::Cell => "to-cell",
        }
    }

    /// The transport the path monitor reports for it.
    pub fn transport(self) -> Transport {
        match self {
            Self::Wifi => Transport::Wifi,
            Self::Cell => Transport::Cellular,
        }
    }
}

/// One uplink's interface and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkAddresses {
    /// The phone-side interface (`wifi0`, `cell0`).
    pub device: String,
    /// The phone's address on it.
    pub phone: Ipv4Addr,
    /// The gateway's address on it: the phone's default gateway. (The
    /// field keeps its name from when the router itself was the gateway.)
    pub router: Ipv4Addr,
    /// The gateway's WAN address: what the far side sees as the phone's
    /// address under NAT.
    pub public: Ipv4Addr,
    /// The gateway's namespace (where this uplink's NAT runs).
    pub gateway: Netns,
    /// Prefix length of the uplink subnet.
    pub prefix_len: u8,
}

/// The lab's namespaces and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The `LAB_ID` suffix (may be empty).
    pub id: String,
    /// The phone: two uplinks, the node under test.
    pub phone: Netns,
    /// The router between the phone's uplink gateways and the cloud (the
    /// delay line runs here).
    pub router: Netns,
    /// The cloud: signaling server, TURN server; it also routes to home.
    pub cloud: Netns,
    /// The home gateway (the far peer's NAT), hanging off the cloud.
    pub home_gateway: Netns,
    /// Home: the far peer.
    pub home: Netns,
    /// The Wi-Fi uplink.
    pub wifi: UplinkAddresses,
    /// The cellular uplink.
    pub cell: UplinkAddresses,
    /// The cloud's address.
    pub cloud_addr: Ipv4Addr,
    /// The router's address on the cloud side (the cloud's gateway).
    pub router_cloud_addr: Ipv4Addr,
    /// The far peer's address at home.
    pub home_addr: Ipv4Addr,
    /// The home gateway's WAN address: the far peer's address under NAT.
    pub home_public_addr: Ipv4Addr,
    /// The TUN device in the router that added delay runs through.
    pub delay_device: String,
}

impl Topology {
    /// Every namespace of the lab: phone, its two uplink gateways, router,
    /// cloud, home gateway, home.
    pub fn namespaces(&self) -> [&Netns; 7] {
        [
            &self.phone,
            &self.wifi.gateway,
            &self.cell.gateway,
            &self.router,
            &self.cloud,
            &self.home_gateway,
            &self.home,
        ]
    }

    /// The addresses of `uplink`.
    pub fn uplink(&self, uplink: Uplink) -> &UplinkAddresses {
        match uplink {
            Uplink::Wifi => &self.wifi,
            Uplink::Cell => &self.cell,
        }
    }

    /// Parses the `KEY=VALUE` lines of `lab.sh env`.
    pub(crate) fn parse(env: &str) -> Result<Self, LabError> {
        let vars: HashMap<&str, &str> = env
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let text = |key: &str| {
            vars.get(key)
                .map(|v| (*v).to_owned())
                .ok_or_else(|| LabError::Topology(format!("`lab.sh env` has no {key}")))
        };
        let addr = |key: &str| -> Result<Ipv4Addr, LabError> {
            text(key)?
                .parse()
                .map_err(|e| LabError::Topology(format!("{key} is not an IPv4 address: {e}")))
        };
        let prefix = |key: &str| -> Result<u8, LabError> {
            let value: u8 = text(key)?
                .parse()
                .map_err(|e| LabError::Topology(format!("{key} is not a prefix length: {e}")))?;
            if value > 32 {
                return Err(LabError::Topology(format!("{key} {value} is longer than 32")));
            }
            Ok(value)
        };
        let uplink_prefix = prefix("UPLINK_PREFIX_LEN")?;
        Ok(Self {
            id: vars.get("LAB_ID").map(|v| (*v).to_owned()).unwrap_or_default(),
            phone: Netns::new(text("PHONE_NS")?),
            router: Netns::new(text("ROUTER_NS")?),
            cloud: Netns::new(text("CLOUD_NS")?),
            home_gateway: Netns::new(text("HOME_GW_NS")?),
            home: Netns::new(text("HOME_NS")?),
            wifi: UplinkAddresses {
                device: text("WIFI_DEV")?,
                phone: addr("PHONE_WIFI_ADDR")?,
                router: addr("ROUTER_WIFI_ADDR")?,
                public: addr("WIFI_PUBLIC_ADDR")?,
                gateway: Netns::new(text("WIFI_GW_NS")?),
                prefix_len: uplink_prefix,
            },
            cell: UplinkAddresses {
                device: text("CELL_DEV")?,
                phone: addr("PHONE_CELL_ADDR")?,
                router: addr("ROUTER_CELL_ADDR")?,
                public: addr("CELL_PUBLIC_ADDR")?,
                gateway: Netns::new(text("CELL_GW_NS")?),
                prefix_len: uplink_prefix,
            },
            cloud_addr: addr("CLOUD_ADDR")?,
            router_cloud_addr: addr("ROUTER_CLOUD_ADDR")?,
            home_addr: addr("HOME_ADDR")?,
            home_public_addr: addr("HOME_PUBLIC_ADDR")?,
            delay_device: text("DELAY_DEV")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV: &str = "LAB_ID=t1\nPHONE_NS=tether-phone-t1\nWIFI_GW_NS=tether-wifigw-t1\n\
        CELL_GW_NS=tether-cellgw-t1\nROUTER_NS=tether-router-t1\nCLOUD_NS=tether-cloud-t1\n\
        HOME_GW_NS=tether-homegw-t1\nHOME_NS=tether-home-t1\n\
        WIFI_DEV=wifi0\nCELL_DEV=cell0\nPHONE_WIFI_ADDR=10.77.1.2\n\
        ROUTER_WIFI_ADDR=10.77.1.1\nPHONE_CELL_ADDR=10.77.2.2\nROUTER_CELL_ADDR=10.77.2.1\n\
        UPLINK_PREFIX_LEN=24\nWIFI_PUBLIC_ADDR=10.77.11.2\nCELL_PUBLIC_ADDR=10.77.12.2\n\
        ROUTER_CLOUD_DEV=r-cloud\nCLOUD_DEV=eth0\n\
        ROUTER_CLOUD_ADDR=10.77.9.1\nCLOUD_ADDR=10.77.9.2\nCLOUD_PREFIX_LEN=24\n\
        HOME_ADDR=10.77.5.2\nHOME_PUBLIC_ADDR=10.77.15.2\nDELAY_DEV=r-delay\n";

    #[test]
    fn parses_lab_env() {
        let t = Topology::parse(ENV).expect("parses");
        assert_eq!(t.id, "t1");
        assert_eq!(t.phone.path(), PathBuf::from("/run/netns/tether-phone-t1"));
        assert_eq!(t.uplink(Uplink::Cell).phone, Ipv4Addr::new(10, 77, 2, 2));
        assert_eq!(t.uplink(Uplink::Wifi).router, Ipv4Addr::new(10, 77, 1, 1));
        assert_eq!(t.cloud_addr, Ipv4Addr::new(10, 77, 9, 2));
        assert_eq!(t.delay_device, "r-delay");
        assert_eq!(t.cell.public, Ipv4Addr::new(10, 77, 12, 2));
        assert_eq!(t.cell.gateway.name(), "tether-cellgw-t1");
        assert_eq!(t.home.name(), "tether-home-t1");
        assert_eq!(t.home_gateway.name(), "tether-homegw-t1");
        assert_eq!(t.home_addr, Ipv4Addr::new(10, 77, 5, 2));
        assert_eq!(t.home_public_addr, Ipv4Addr::new(10, 77, 15, 2));
    }

    #[test]
    fn missing_or_bad_values_are_named() {
        let missing = ENV.replace("CLOUD_ADDR=10.77.9.2\n", "");
        let err = Topology::parse(&missing).expect_err("missing key").to_string();
        assert!(err.contains("CLOUD_ADDR"), "{err}");
        let bad = ENV.replace("PHONE_CELL_ADDR=10.77.2.2", "PHONE_CELL_ADDR=ten");
        let err = Topology::parse(&bad).expect_err("bad address").to_string();
        assert!(err.contains("PHONE_CELL_ADDR is not an IPv4 address"), "{err}");
    }

    #[test]
    fn uplink_names() {
        assert_eq!(Uplink::Wifi.other(), Uplink::Cell);
        assert_eq!(Uplink::Cell.handoff_argument(), "to-cell");
        assert_eq!(Uplink::Cell.transport(), Transport::Cellular);
    }
}
