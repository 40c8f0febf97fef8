//! Endpoints found through DNS-SD, and sets of them with a diff.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

/// One address an upstream can be reached at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Instance name: the DNS-SD instance label, or the SRV target for direct SRV, or the
    /// address for static lists.
    pub instance: String,
    /// Resolved address of the SRV target.
    pub address: IpAddr,
    /// Port from SRV.
    pub port: u16,
    /// SRV priority: the failover tier (lower is tried first).
    pub priority: u16,
    /// SRV weight: the balancing weight within a tier.
    pub weight: u16,
    /// Zone from TXT `zone=`.
    pub zone: Option<String>,
    /// Other TXT keys (lowercased) and values.
    pub attributes: BTreeMap<String, String>,
}

/// What identifies an endpoint across refreshes; other fields may change in place.
pub type EndpointKey = (String, IpAddr, u16);

// === impl Endpoint ===

impl Endpoint {
    /// An endpoint with priority 0, weight 1, no zone and no attributes, named after its
    /// address (for static lists).
    pub fn from_socket_addr(addr: SocketAddr) -> Self {
        Self {
            instance: addr.to_string(),
            address: addr.ip(),
            port: addr.port(),
            priority: 0,
            weight: 1,
            zone: None,
            attributes: BTreeMap::new(),
        }
    }

    /// Address and port.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// The identity used by [`EndpointSet::diff`]: instance, address and port.
    pub fn key(&self) -> EndpointKey {
        (self.instance.clone(), self.address, self.port)
    }
}

/// The endpoints of one service at one moment.
///
/// `stale` is set when the last refresh failed and these are the last known good
/// endpoints. `resolved` is false until the first answer (good or authoritative-empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    endpoints: Vec<Endpoint>,
    stale: bool,
    resolved: bool,
}

/// What changed between two endpoint sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointDiff {
    /// Endpoints whose key is new.
    pub added: Vec<Endpoint>,
    /// Endpoints whose key is gone.
    pub removed: Vec<Endpoint>,
    /// Endpoints whose key is kept but whose priority, weight, zone or attributes changed
    /// (the new value).
    pub changed: Vec<Endpoint>,
}

// === impl EndpointSet ===

impl EndpointSet {
    /// A resolved, fresh set; endpoints are sorted and duplicates (same key) dropped, the
    /// first one kept.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let mut endpoints: Vec<Endpoint> = endpoints.into_iter().collect();
        endpoints.sort_by(|a, b| {
            (a.priority, &a.instance, a.address, a.port).cmp(&(
                b.priority,
                &b.instance,
                b.address,
                b.port,
            ))
        });
        let mut seen = std::collections::HashSet::new();
        endpoints.retain(|e| seen.insert(e.key()));
        Self {
            endpoints,
            stale: false,
            resolved: true,
        }
    }

    /// The set before any answer: empty, not resolved.
    pub fn pending() -> Self {
        Self::default()
    }

    /// The endpoints, sorted by priority, instance, address and port.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when there are no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// True when the last refresh failed and this is the last known good answer.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// True once an answer (possibly empty) has been received.
    pub fn is_resolved(&self) -> bool {
        self.resolved
    }

    /// Marks the set stale (or fresh) without touching its endpoints.
    pub fn set_stale(&mut self, stale: bool) {
        self.stale = stale;
    }

    /// Endpoints in the lowest priority tier present.
    pub fn first_tier(&self) -> &[Endpoint] {
        let Some(first) = self.endpoints.first() else {
            return &[];
        };
        let end = self
            .endpoints
            .iter()
            .position(|e| e.priority != first.priority)
            .unwrap_or(self.endpoints.len());
        &self.endpoints[..end]
    }

    /// What changed from `self` (old) to `new`.
    pub fn diff(&self, new: &EndpointSet) -> EndpointDiff {
        let old: HashMap<EndpointKey, &Endpoint> =
            self.endpoints.iter().map(|e| (e.key(), e)).collect();
        let mut diff = EndpointDiff::default();
        let mut kept = std::collections::HashSet::new();
        for e in &new.endpoints {
            let key = e.key();
            match old.get(&key) {
                None => diff.added.push(e.clone()),
                Some(before) if *before != e => diff.changed.push(e.clone()),
                Some(_) => {}
            }
            kept.insert(key);
        }
        diff.removed = self
            .endpoints
            .iter()
            .filter(|e| !kept.contains(&e.key()))
            .cloned()
            .collect();
        diff
    }
}

// === impl EndpointDiff ===

impl EndpointDiff {
    /// True when nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[cfg(test)]
mod tests;
