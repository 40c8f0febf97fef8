//! Workload attestation by unix peer credentials: selectors `unix:uid:N`, `unix:gid:N` and
//! `unix:path:/abs/path`, and which registration entries a workload matches. Pure.

use std::path::PathBuf;

use meshedge_ca::store::RegistrationEntry;

/// A workload selector of a registration entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    /// The process's user ID.
    Uid(u32),
    /// The process's (primary) group ID.
    Gid(u32),
    /// The absolute path of the process's executable (symlinks resolved).
    Path(PathBuf),
}

/// A selector string that is not one of the supported forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {selector:?}: expected unix:uid:N, unix:gid:N or unix:path:/absolute/path")]
pub struct SelectorError {
    /// The rejected selector.
    pub selector: String,
}

impl Selector {
    /// Parses `unix:uid:N`, `unix:gid:N` or `unix:path:/abs`.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let err = || SelectorError {
            selector: s.to_owned(),
        };
        let rest = s.strip_prefix("unix:").ok_or_else(err)?;
        let (kind, value) = rest.split_once(':').ok_or_else(err)?;
        match kind {
            "uid" => value.parse().map(Self::Uid).map_err(|_| err()),
            "gid" => value.parse().map(Self::Gid).map_err(|_| err()),
            "path" if value.starts_with('/') => Ok(Self::Path(PathBuf::from(value))),
            _ => Err(err()),
        }
    }
}

/// What attestation learned about a calling process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// Process ID (informational; not a selector).
    pub pid: Option<i32>,
    /// Executable path, when it could be read.
    pub path: Option<PathBuf>,
}

impl Workload {
    /// True when this workload has `selector`.
    pub fn has(&self, selector: &Selector) -> bool {
        match selector {
            Selector::Uid(u) => self.uid == *u,
            Selector::Gid(g) => self.gid == *g,
            Selector::Path(p) => self.path.as_ref() == Some(p),
        }
    }

    /// True when the workload has every selector of `entry` (an entry with an unparseable
    /// or empty selector list matches nothing).
    pub fn matches(&self, entry: &RegistrationEntry) -> bool {
        !entry.selectors.is_empty()
            && entry
                .selectors
                .iter()
                .all(|s| Selector::parse(s).is_ok_and(|sel| self.has(&sel)))
    }

    /// The entries this workload matches, in the given order.
    pub fn matching<'a>(
        &self,
        entries: &'a [RegistrationEntry],
    ) -> impl Iterator<Item = &'a RegistrationEntry> + 'a {
        let me = self.clone();
        entries.iter().filter(move |e| me.matches(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, selectors: &[&str]) -> RegistrationEntry {
        RegistrationEntry {
            id: id.into(),
            spiffe_id: format!("spiffe://td/{id}"),
            parent: "n1".into(),
            selectors: selectors.iter().map(|s| s.to_string()).collect(),
            dns_names: vec![],
            ttl_secs: None,
        }
    }

    #[test]
    fn parses_selectors() {
        assert_eq!(Selector::parse("unix:uid:1000"), Ok(Selector::Uid(1000)));
        assert_eq!(Selector::parse("unix:gid:0"), Ok(Selector::Gid(0)));
        assert_eq!(
            Selector::parse("unix:path:/usr/bin/x"),
            Ok(Selector::Path("/usr/bin/x".into()))
        );
        for bad in [
            "uid:1",
            "unix:uid:",
            "unix:uid:-1",
            "unix:uid:x",
            "unix:path:rel",
            "unix:pid:4",
            "k8s:ns:a",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn matching_table() {
        let w = Workload {
            uid: 1000,
            gid: 100,
            pid: Some(42),
            path: Some("/usr/bin/app".into()),
        };
        let no_path = Workload {
            path: None,
            ..w.clone()
        };
        // (workload, selectors, matches)
        let table: &[(&Workload, &[&str], bool)] = &[
            (&w, &["unix:uid:1000"], true),
            (&w, &["unix:uid:1001"], false),
            (&w, &["unix:gid:100"], true),
            (&w, &["unix:uid:1000", "unix:gid:100"], true),
            (&w, &["unix:uid:1000", "unix:gid:101"], false),
            (&w, &["unix:path:/usr/bin/app"], true),
            (&w, &["unix:path:/usr/bin/other"], false),
            (&no_path, &["unix:path:/usr/bin/app"], false),
            (&w, &[], false),
            (&w, &["unix:uid:1000", "bogus"], false),
        ];
        for (i, (wl, sels, want)) in table.iter().enumerate() {
            assert_eq!(wl.matches(&entry("e", sels)), *want, "row {i}");
        }
        let entries = vec![
            entry("a", &["unix:uid:1000"]),
            entry("b", &["unix:uid:1"]),
            entry("c", &["unix:gid:100"]),
        ];
        let ids: Vec<_> = w.matching(&entries).map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
    }
}
