//! Network namespaces for multi-node tests: each "host" is a namespace the test creates with
//! `ip netns add`, linked to the test's own namespace by a veth pair with a /30 of its own, so
//! every node has its own address, ports and loopback, like a machine of its own. Needs
//! `CAP_NET_ADMIN` (CI runs as root); where that is not permitted, [`Hosts::create`] says so
//! loudly and the test runs its nodes on 127.0.0.1 instead.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

/// Test hosts: network namespaces, or this host's loopback where they cannot be made.
#[derive(Debug)]
pub struct Hosts {
    /// The namespaces created (empty on loopback).
    namespaces: Vec<String>,
    /// Each host's address (the namespace side of its link, or 127.0.0.1).
    node_ips: Vec<IpAddr>,
    /// The test namespace's address on each link (where the host reaches services the test
    /// runs, such as Redis; 127.0.0.1 on loopback).
    gateway_ips: Vec<IpAddr>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The two addresses of link `k`'s /30 in 10.64.0.0/10.
fn link_addrs(k: u32) -> (Ipv4Addr, Ipv4Addr) {
    let base = (10u32 << 24) | (64 << 16) | (k * 4);
    (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
}

impl Hosts {
    /// `n` hosts in network namespaces, or on loopback (after a loud message) when namespaces
    /// cannot be created here.
    pub fn create(n: usize) -> Self {
        match Self::namespaces(n) {
            Ok(hosts) => hosts,
            Err(error) => {
                eprintln!(
                    "\n!!!!!!!! NETWORK NAMESPACES NOT AVAILABLE ({error}); running the {n} \
                     nodes on 127.0.0.1 instead !!!!!!!!\n"
                );
                Self::loopback(n)
            }
        }
    }

    /// `n` hosts on this host's loopback.
    pub fn loopback(n: usize) -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            namespaces: Vec::new(),
            node_ips: vec![lo; n],
            gateway_ips: vec![lo; n],
        }
    }

    fn namespaces(n: usize) -> Result<Self, String> {
        let pid = std::process::id();
        let mut hosts = Self {
            namespaces: Vec::new(),
            node_ips: Vec::new(),
            gateway_ips: Vec::new(),
        };
        for i in 0..n {
            // Interface names are at most 15 bytes.
            let ns = format!("pal{pid}n{i}");
            let (outside, inside) = (format!("vp{pid}h{i}"), format!("vp{pid}n{i}"));
            let k = (pid % 200_000) * 4 + u32::try_from(i).unwrap_or(0) % 4;
            let (gw, node) = link_addrs(k);
            ip(&["netns", "add", &ns])?;
            hosts.namespaces.push(ns.clone());
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns,
            ])?;
            ip(&["addr", "add", &format!("{gw}/30"), "dev", &outside])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{node}/30"),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            hosts.gateway_ips.push(IpAddr::V4(gw));
            hosts.node_ips.push(IpAddr::V4(node));
        }
        Ok(hosts)
    }

    /// Whether the hosts are network namespaces.
    pub fn isolated(&self) -> bool {
        !self.namespaces.is_empty()
    }

    /// Host `i`'s address.
    pub fn node_ip(&self, i: usize) -> IpAddr {
        self.node_ips[i]
    }

    /// The address host `i` reaches the test's services at.
    pub fn gateway_ip(&self, i: usize) -> IpAddr {
        self.gateway_ips[i]
    }

    /// Every address the test's services must listen on (besides 127.0.0.1).
    pub fn gateways(&self) -> Vec<IpAddr> {
        if self.isolated() {
            self.gateway_ips.clone()
        } else {
            Vec::new()
        }
    }

    /// The command prefix that runs a program on host `i` (`ip netns exec <ns>`; nothing on
    /// loopback).
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        match self.namespaces.get(i) {
            Some(ns) => vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
            None => Vec::new(),
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and with it the pair.
        for ns in &self.namespaces {
            if let Err(error) = ip(&["netns", "del", ns]) {
                eprintln!("could not delete network namespace {ns}: {error}");
            }
        }
    }
}
