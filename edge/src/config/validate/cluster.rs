//! `[clusters.<name>]` -> [`ClusterConfig`].

use meshedge_ca::tls::AllowedIds;
use meshedge_ca::SpiffeId;

use super::Checker;
use crate::config::raw::RawCluster;
use crate::config::{
    ClusterConfig, EndpointsConfig, StaticEndpoint, UpstreamIdentity, UpstreamProtocol,
};

pub(super) fn cluster(
    c: &mut Checker<'_>,
    name: &str,
    rc: &RawCluster,
    local_zone: Option<&str>,
) -> Option<ClusterConfig> {
    let key = format!("clusters.{name}");
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        c.fail(&key, "cluster names use letters, digits, '-', '_' and '.'");
    }
    let endpoints = match (&rc.dns_sd, rc.endpoints.is_empty()) {
        (Some(_), false) => {
            c.fail(&key, "set either endpoints or dns_sd, not both");
            None
        }
        (None, true) => {
            c.fail(
                format!("{key}.endpoints"),
                "no endpoints (set endpoints or dns_sd)",
            );
            None
        }
        (Some(d), true) => {
            let resolvers = d
                .resolvers
                .iter()
                .enumerate()
                .filter_map(|(i, r)| c.addr(&format!("{key}.dns_sd.resolvers[{i}]"), r))
                .collect();
            let refresh = c.duration(&format!("{key}.dns_sd.refresh"), &d.refresh);
            let dns_name = |n: &str| {
                n.contains('.')
                    && n.trim_end_matches('.').split('.').all(|l| {
                        !l.is_empty()
                            && l.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                    })
            };
            if meshedge_discovery::ServiceName::parse(&d.service).is_err() && !dns_name(&d.service)
            {
                c.fail(
                    format!("{key}.dns_sd.service"),
                    format!(
                        "invalid service {:?} (expected _name._tcp.domain, or a name with SRV records)",
                        d.service
                    ),
                );
            }
            Some(EndpointsConfig::DnsSd {
                service: d.service.clone(),
                resolvers,
                refresh: refresh.unwrap_or_default(),
            })
        }
        (None, false) => Some(EndpointsConfig::Static(
            rc.endpoints
                .iter()
                .enumerate()
                .filter_map(|(i, e)| {
                    let address = c.addr(&format!("{key}.endpoints[{i}]"), &e.address)?;
                    Some(StaticEndpoint {
                        address,
                        zone: e.zone.clone(),
                        weight: e.weight,
                        priority: e.priority,
                    })
                })
                .collect(),
        )),
    };
    let set = [
        !rc.allowed_ids.is_empty(),
        !rc.allowed_id_prefixes.is_empty(),
        rc.verify_dns_name.is_some(),
    ];
    let upstream_identity = match set.iter().filter(|b| **b).count() {
        0 => {
            c.fail(
                &key,
                "set allowed_ids, allowed_id_prefixes or verify_dns_name (upstream identities)",
            );
            None
        }
        1 => upstream_identity(c, &key, rc),
        _ => {
            c.fail(
                &key,
                "set one of allowed_ids, allowed_id_prefixes and verify_dns_name, not several",
            );
            None
        }
    };
    let protocol = match rc.protocol.as_str() {
        "auto" => UpstreamProtocol::Auto,
        "http1" => UpstreamProtocol::Http1,
        "http2" => UpstreamProtocol::Http2,
        other => {
            c.fail(
                format!("{key}.protocol"),
                format!("unknown protocol {other:?} (auto, http1, http2)"),
            );
            UpstreamProtocol::Auto
        }
    };
    if let Some(sni) = &rc.server_name {
        if rustls::pki_types::ServerName::try_from(sni.as_str()).is_err() {
            c.fail(
                format!("{key}.server_name"),
                format!("invalid server name {sni:?}"),
            );
        }
    }
    let connect_timeout = c.duration(&format!("{key}.connect_timeout"), &rc.connect_timeout);
    let request_timeout = c.duration(&format!("{key}.request_timeout"), &rc.request_timeout);
    let pool_idle_timeout = c.duration(&format!("{key}.pool_idle_timeout"), &rc.pool_idle_timeout);
    let resilience = rc.resilience();
    if let Err(e) = resilience.validate() {
        c.fail(format!("{key}.{}", e.key), e.problem);
    }
    Some(ClusterConfig {
        name: name.to_owned(),
        endpoints: endpoints?,
        upstream_identity: upstream_identity?,
        protocol,
        server_name: rc.server_name.clone(),
        connect_timeout: connect_timeout?,
        request_timeout: request_timeout?,
        pool_idle_timeout: pool_idle_timeout?,
        pool_max_idle_per_endpoint: rc.pool_max_idle_per_endpoint,
        resilience,
        local_zone: local_zone.map(str::to_owned),
    })
}

/// The upstream identity of a cluster that sets exactly one of the three keys.
fn upstream_identity(c: &mut Checker<'_>, key: &str, rc: &RawCluster) -> Option<UpstreamIdentity> {
    match (rc.allowed_ids.is_empty(), rc.allowed_id_prefixes.is_empty()) {
        (true, true) => {
            let name = rc.verify_dns_name.as_deref().unwrap_or_default();
            match rustls::pki_types::ServerName::try_from(name) {
                Ok(rustls::pki_types::ServerName::DnsName(_)) => {
                    Some(UpstreamIdentity::DnsName(name.to_owned()))
                }
                _ => {
                    c.fail(
                        format!("{key}.verify_dns_name"),
                        format!("{name:?} is not a DNS name"),
                    );
                    None
                }
            }
        }
        (false, _) => Some(UpstreamIdentity::Spiffe(AllowedIds::Exact(
            rc.allowed_ids
                .iter()
                .enumerate()
                .filter_map(|(i, id)| match SpiffeId::parse(id) {
                    Ok(id) => Some(id),
                    Err(e) => {
                        c.fail(format!("{key}.allowed_ids[{i}]"), e.to_string());
                        None
                    }
                })
                .collect(),
        ))),
        (true, false) => Some(UpstreamIdentity::Spiffe(AllowedIds::Prefixes(
            rc.allowed_id_prefixes
                .iter()
                .enumerate()
                .filter_map(|(i, p)| match SpiffeId::parse(p.trim_end_matches('/')) {
                    Ok(id) => Some(id.as_str().to_owned()),
                    Err(e) => {
                        c.fail(format!("{key}.allowed_id_prefixes[{i}]"), e.to_string());
                        None
                    }
                })
                .collect(),
        ))),
    }
}
