//! The guard on addresses a clinic supplies (its OpenAI-compatible endpoint): a clinic must not
//! make the server reach into the network it runs in. Checked when the address is saved and
//! again before every call to it.

/// Why an endpoint was refused, worded for the admin who set it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It points at a private, loopback or otherwise internal address.
    #[error("The OpenAI-compatible endpoint points at a private or local address, which this installation does not allow.")]
    Private,
    /// Its host name does not resolve.
    #[error("The OpenAI-compatible endpoint's host {0:?} could not be found.")]
    Unresolvable(String),
}

/// Refuses endpoints on loopback, private, link-local or otherwise internal addresses, so a
/// clinic cannot make the server reach into its own network. Names are resolved and every
/// address is checked. Self-hosted installs that run a model server next to Tessera set
/// `TESSERA_ALLOW_PRIVATE_ENDPOINTS=true`.
pub async fn check_endpoint(url: &str) -> Result<(), Refused> {
    let refuse = || Refused::Private;
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(refuse)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let default_port = if url.starts_with("https://") { 443 } else { 80 };
    let target = if host_port.starts_with('[') || host_port.matches(':').count() == 1 {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    };
    let addrs = tokio::net::lookup_host(target.as_str())
        .await
        .map_err(|_| Refused::Unresolvable(host_port.to_string()))?;
    for addr in addrs {
        if is_internal(addr.ip()) {
            return Err(refuse());
        }
    }
    Ok(())
}

fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10, carrier-grade NAT
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(std::net::IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "100.64.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn endpoints_on_loopback_are_refused() {
        assert!(check_endpoint("http://127.0.0.1:11434/v1/chat/completions")
            .await
            .is_err());
        assert!(check_endpoint("http://localhost/v1").await.is_err());
        assert!(check_endpoint("http://[::1]:8000/v1").await.is_err());
    }
}
