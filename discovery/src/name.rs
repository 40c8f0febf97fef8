//! DNS-SD service and instance names (`_<svc>._tcp.<domain>`, RFC 6763 section 4).

use std::fmt;
use std::str::FromStr;

use hickory_proto::rr::Name;

/// Longest service label (without the leading underscore), RFC 6335 section 5.1.
pub const MAX_SERVICE_LEN: usize = 15;
/// Longest DNS label in bytes (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a service, instance or domain name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The text does not have the `_<svc>._<proto>.<domain>` shape.
    #[error("service name {name:?} is not of the form _<svc>._tcp.<domain>")]
    Shape {
        /// The rejected text.
        name: String,
    },
    /// The service label breaks the RFC 6335 rules.
    #[error("service label {label:?} in {name:?} is invalid: {why}")]
    ServiceLabel {
        /// The whole name.
        name: String,
        /// The service label without its underscore.
        label: String,
        /// Which rule was broken.
        why: &'static str,
    },
    /// The protocol label is neither `_tcp` nor `_udp`.
    #[error("protocol label {label:?} in {name:?} is neither _tcp nor _udp")]
    Protocol {
        /// The whole name.
        name: String,
        /// The protocol label.
        label: String,
    },
    /// The domain is not a valid DNS name.
    #[error("domain {domain:?} is invalid: {why}")]
    Domain {
        /// The rejected domain.
        domain: String,
        /// Which rule was broken.
        why: String,
    },
    /// The instance label is empty or too long.
    #[error("instance name {instance:?} is invalid: {why}")]
    Instance {
        /// The rejected instance name.
        instance: String,
        /// Which rule was broken.
        why: &'static str,
    },
}

/// Transport protocol label of a DNS-SD service type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `_tcp`.
    Tcp,
    /// `_udp`.
    Udp,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "_tcp",
            Protocol::Udp => "_udp",
        }
    }
}

/// A validated DNS-SD service type in a domain, e.g. `_payments._tcp.mesh.example`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceName {
    service: String,
    protocol: Protocol,
    domain: Name,
}

// === impl ServiceName ===

impl ServiceName {
    /// Builds `_<service>._tcp.<domain>`; `service` is given without its underscore.
    pub fn try_new(service: &str, domain: &str) -> Result<Self, NameError> {
        let whole = format!("_{service}._tcp.{domain}");
        validate_service_label(&whole, service)?;
        Ok(Self {
            service: service.to_ascii_lowercase(),
            protocol: Protocol::Tcp,
            domain: parse_domain(domain)?,
        })
    }

    /// Parses `_<svc>._tcp.<domain>` (or `_udp`); a trailing dot is accepted.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let shape = || NameError::Shape {
            name: text.to_owned(),
        };
        let mut parts = text.splitn(3, '.');
        let svc = parts.next().ok_or_else(shape)?;
        let proto = parts.next().ok_or_else(shape)?;
        let domain = parts.next().ok_or_else(shape)?;
        let service = svc.strip_prefix('_').ok_or_else(shape)?;
        validate_service_label(text, service)?;
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "_tcp" => Protocol::Tcp,
            "_udp" => Protocol::Udp,
            _ => {
                return Err(NameError::Protocol {
                    name: text.to_owned(),
                    label: proto.to_owned(),
                })
            }
        };
        Ok(Self {
            service: service.to_ascii_lowercase(),
            protocol,
            domain: parse_domain(domain)?,
        })
    }

    /// The service label without its underscore, lowercased (e.g. `payments`).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The transport protocol label.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The domain the service lives in (fully qualified).
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// The PTR owner name, `_<svc>._tcp.<domain>.`.
    pub fn to_name(&self) -> Name {
        let svc = format!("_{}", self.service);
        let labels: [&[u8]; 2] = [svc.as_bytes(), self.protocol.label().as_bytes()];
        Name::from_labels(labels)
            .and_then(|prefix| prefix.append_domain(&self.domain))
            .expect("validated labels always form a name")
    }

    /// The name of one instance, `<instance>._<svc>._tcp.<domain>.`.
    ///
    /// The instance label is arbitrary UTF-8 (RFC 6763 section 4.1.1): dots and spaces are
    /// part of the label, not separators.
    pub fn instance_name(&self, instance: &str) -> Result<Name, NameError> {
        validate_instance(instance)?;
        let invalid = |_| NameError::Instance {
            instance: instance.to_owned(),
            why: "does not form a DNS name",
        };
        Name::from_labels([instance.as_bytes()])
            .map_err(invalid)?
            .append_domain(&self.to_name())
            .map_err(invalid)
    }

    /// Returns the instance label if `name` is `<instance>.<this service>`.
    pub fn instance_of(&self, name: &Name) -> Option<String> {
        let service = self.to_name();
        if name.num_labels() != service.num_labels() + 1 || !service.zone_of(name) {
            return None;
        }
        let label = name.iter().next()?;
        Some(String::from_utf8_lossy(label).into_owned())
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = self.domain.to_ascii();
        let domain = domain.trim_end_matches('.');
        write!(f, "_{}.{}.{}", self.service, self.protocol.label(), domain)
    }
}

impl FromStr for ServiceName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Checks an RFC 6763 instance label: 1 to 63 bytes of UTF-8, no control characters.
pub fn validate_instance(instance: &str) -> Result<(), NameError> {
    let fail = |why| {
        Err(NameError::Instance {
            instance: instance.to_owned(),
            why,
        })
    };
    if instance.is_empty() {
        return fail("empty");
    }
    if instance.len() > MAX_LABEL_LEN {
        return fail("longer than 63 bytes");
    }
    if instance.chars().any(char::is_control) {
        return fail("contains control characters");
    }
    Ok(())
}

/// Parses and validates a domain (letters, digits, `-` and `_`, labels of 1-63 bytes).
pub fn parse_domain(domain: &str) -> Result<Name, NameError> {
    let fail = |why: &str| NameError::Domain {
        domain: domain.to_owned(),
        why: why.to_owned(),
    };
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed.is_empty() {
        return Err(fail("empty"));
    }
    if trimmed.len() > 253 {
        return Err(fail("longer than 253 bytes"));
    }
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(fail("empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(fail("label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(fail(
                "label has characters other than letters, digits, - and _",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(fail("label starts or ends with -"));
        }
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| fail(&e.to_string()))?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

fn validate_service_label(name: &str, label: &str) -> Result<(), NameError> {
    let fail = |why| {
        Err(NameError::ServiceLabel {
            name: name.to_owned(),
            label: label.to_owned(),
            why,
        })
    };
    if label.is_empty() {
        return fail("empty");
    }
    if label.len() > MAX_SERVICE_LEN {
        return fail("longer than 15 characters");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return fail("only letters, digits and - are allowed");
    }
    if !label.bytes().any(|b| b.is_ascii_alphabetic()) {
        return fail("needs at least one letter");
    }
    if label.starts_with('-') || label.ends_with('-') || label.contains("--") {
        return fail("- may not lead, trail or repeat");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
