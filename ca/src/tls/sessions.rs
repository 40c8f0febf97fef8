//! TLS session resumption that follows SVID rotation. A resumed TLS 1.3 session carries
//! the identity of the handshake that created it, so a client that rotated its SVID but
//! resumes an older session still authenticates with the old (perhaps expired) certificate.
//! [`SvidBoundSessions`] keeps one rustls session cache per SVID and drops it when the SVID
//! changes: the first connection after a rotation does a full handshake with the new one.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::Tls13ClientSessionValue;
use rustls::client::{ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// Something that changes whenever the client certificate does (a counter, a hash).
pub type SvidVersion = Arc<dyn Fn() -> u64 + Send + Sync>;

/// A `ClientSessionStore` whose sessions belong to the SVID current when they were made.
pub struct SvidBoundSessions {
    version: SvidVersion,
    capacity: usize,
    current: Mutex<(u64, Arc<ClientSessionMemoryCache>)>,
}

impl fmt::Debug for SvidBoundSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidBoundSessions")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl SvidBoundSessions {
    /// A store of up to `capacity` sessions, emptied whenever `version` changes.
    pub fn new(version: SvidVersion, capacity: usize) -> Arc<Self> {
        let now = version();
        Arc::new(Self {
            version,
            capacity,
            current: Mutex::new((now, Arc::new(ClientSessionMemoryCache::new(capacity)))),
        })
    }

    /// The cache of the current SVID (a fresh one after a rotation).
    fn cache(&self) -> Arc<ClientSessionMemoryCache> {
        let now = (self.version)();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0 != now {
            *current = (now, Arc::new(ClientSessionMemoryCache::new(self.capacity)));
        }
        current.1.clone()
    }
}

impl ClientSessionStore for SvidBoundSessions {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.cache().set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache().kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.cache().set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.cache().tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.cache().remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        self.cache().insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        self.cache().take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn a_rotation_empties_the_store() {
        let version = Arc::new(AtomicU64::new(1));
        let v = version.clone();
        let store = SvidBoundSessions::new(Arc::new(move || v.load(Ordering::SeqCst)), 8);
        let name = ServerName::try_from("upstream.test").unwrap();
        store.set_kx_hint(name.clone(), NamedGroup::X25519);
        assert_eq!(store.kx_hint(&name), Some(NamedGroup::X25519));
        version.store(2, Ordering::SeqCst);
        assert_eq!(store.kx_hint(&name), None, "state of the old SVID survived");
        store.set_kx_hint(name.clone(), NamedGroup::secp256r1);
        assert_eq!(store.kx_hint(&name), Some(NamedGroup::secp256r1));
    }
}
