//! The test topology: namespaces `client`, `storage` and one per host (`host-a`, `host-b`),
//! each joined by a veth to a bridge in a `switch` namespace. Each host namespace has a local
//! bridge `br0` holding its uplink and a TAP for the guest NIC, so the guest sits on the same
//! L2 segment as the client. The first two hosts are also joined directly by a veth `ft0`
//! (10.78.0.4, 10.78.0.5) that carries the FT logging channel, as a dedicated logging NIC
//! would: cutting it partitions primary from backup while both still reach clients, storage
//! and the arbiter. Names carry a per-topology prefix so that tests can run in parallel;
//! `Drop` deletes every namespace (which deletes the interfaces in it).

use std::sync::atomic::{AtomicU32, Ordering};

use crate::netns::{ip, run, NetnsError};

/// The addresses of the test network (inside the namespaces only).
pub const SUBNET_PREFIX: &str = "10.77.0";
pub const CLIENT_IP: &str = "10.77.0.2";
pub const STORAGE_IP: &str = "10.77.0.3";
pub const GUEST_IP: &str = "10.77.0.10";
pub const GUEST_MAC: &str = "52:54:00:77:00:10";
/// The TAP device of the guest NIC inside each host namespace.
pub const TAP: &str = "tap0";
/// The logging link between the first two hosts.
pub const FT_LINK: &str = "ft0";

/// Host `i`'s address on the client network.
pub fn host_ip(i: usize) -> String {
    format!("{SUBNET_PREFIX}.{}", 4 + i)
}

/// Host `i`'s address on the logging link.
/// The other host's logging-link address (there are two FT hosts).
pub fn other_ft_ip(ip: &str) -> String {
    if ip == ft_ip(0) {
        ft_ip(1)
    } else {
        ft_ip(0)
    }
}

pub fn ft_ip(i: usize) -> String {
    format!("10.78.0.{}", 4 + i)
}

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Topology {
    prefix: String,
    created: Vec<String>,
}

impl Topology {
    /// Creates `client`, `storage` and the given hosts (e.g. `["host-a"]`). Host `i` gets the
    /// address 10.77.0.(4+i) on its bridge.
    pub fn new(hosts: &[&str]) -> Result<Self, NetnsError> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("ft{}-{n}", std::process::id());
        let mut topo = Topology {
            prefix,
            created: Vec::new(),
        };
        topo.add_namespace("switch")?;
        let sw = topo.ns("switch");
        ip(&sw, &["link", "add", "br0", "type", "bridge"])?;
        ip(&sw, &["link", "set", "br0", "up"])?;
        ip(&sw, &["link", "set", "lo", "up"])?;
        topo.add_leaf("client", 0, &format!("{CLIENT_IP}/24"))?;
        topo.add_leaf("storage", 1, &format!("{STORAGE_IP}/24"))?;
        for (i, host) in hosts.iter().enumerate() {
            topo.add_host(host, 2 + i, &format!("{}/24", host_ip(i)))?;
        }
        if let [a, b, ..] = hosts {
            topo.add_ft_link(a, b)?;
        }
        Ok(topo)
    }

    /// The full name of namespace `role` (e.g. "client").
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    fn add_namespace(&mut self, role: &str) -> Result<(), NetnsError> {
        let name = self.ns(role);
        run(&["ip", "netns", "add", &name])?;
        self.created.push(name);
        Ok(())
    }

    /// A namespace with a veth `eth0` to the switch, addressed directly.
    fn add_leaf(&mut self, role: &str, port: usize, addr: &str) -> Result<(), NetnsError> {
        self.uplink(role, port)?;
        let ns = self.ns(role);
        ip(&ns, &["addr", "add", addr, "dev", "eth0"])?;
        Ok(())
    }

    /// A host namespace: uplink and TAP in a local bridge that carries the host's address.
    fn add_host(&mut self, role: &str, port: usize, addr: &str) -> Result<(), NetnsError> {
        self.uplink(role, port)?;
        let ns = self.ns(role);
        ip(&ns, &["link", "add", "br0", "type", "bridge"])?;
        ip(&ns, &["link", "set", "eth0", "master", "br0"])?;
        ip(
            &ns,
            &["tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"],
        )?;
        ip(&ns, &["link", "set", TAP, "master", "br0"])?;
        ip(&ns, &["link", "set", TAP, "up"])?;
        ip(&ns, &["addr", "add", addr, "dev", "br0"])?;
        ip(&ns, &["link", "set", "br0", "up"])?;
        Ok(())
    }

    /// A veth `ft0` straight from host `a` (index 0) to host `b` (index 1).
    fn add_ft_link(&mut self, a: &str, b: &str) -> Result<(), NetnsError> {
        let (na, nb) = (self.ns(a), self.ns(b));
        ip(
            &na,
            &[
                "link", "add", FT_LINK, "type", "veth", "peer", "name", FT_LINK, "netns", &nb,
            ],
        )?;
        for (ns, i) in [(&na, 0), (&nb, 1)] {
            ip(
                ns,
                &["addr", "add", &format!("{}/24", ft_ip(i)), "dev", FT_LINK],
            )?;
            ip(ns, &["link", "set", FT_LINK, "up"])?;
        }
        Ok(())
    }

    /// Cuts (or restores) the logging link between the two hosts.
    pub fn set_ft_link(&self, host: &str, up: bool) -> Result<(), NetnsError> {
        ip(
            &self.ns(host),
            &["link", "set", FT_LINK, if up { "up" } else { "down" }],
        )?;
        Ok(())
    }

    /// Creates namespace `role` with `lo` up and a veth `eth0` whose peer `pN` is on the switch.
    fn uplink(&mut self, role: &str, port: usize) -> Result<(), NetnsError> {
        self.add_namespace(role)?;
        let ns = self.ns(role);
        let sw = self.ns("switch");
        let peer = format!("p{port}");
        ip(
            &sw,
            &[
                "link", "add", &peer, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        )?;
        ip(&sw, &["link", "set", &peer, "master", "br0"])?;
        ip(&sw, &["link", "set", &peer, "up"])?;
        ip(&ns, &["link", "set", "lo", "up"])?;
        ip(&ns, &["link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Cuts (or restores) the link of `role` to the switch: a partition.
    pub fn set_link(&self, role: &str, up: bool) -> Result<(), NetnsError> {
        ip(
            &self.ns(role),
            &["link", "set", "eth0", if up { "up" } else { "down" }],
        )?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", name]) {
                eprintln!("topology teardown: {e}");
            }
        }
    }
}
