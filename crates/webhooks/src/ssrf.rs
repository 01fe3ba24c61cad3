//! Which endpoint addresses a webhook may be sent to. A customer's URL must not reach
//! our own network: loopback, private (RFC 1918, unique local), link-local, CGNAT
//! (100.64/10), multicast, unspecified, broadcast, documentation and benchmarking
//! ranges, and cloud metadata services are refused, in IPv4 and IPv6, including
//! IPv4-mapped and IPv4-compatible IPv6 forms. Checked when an endpoint is registered
//! and again, after resolving the host, at every delivery (a DNS answer can change:
//! rebinding); the delivery then connects to the address that was checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;
use url::Url;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refused {
    #[error("the URL does not parse: {0}")]
    Malformed(String),
    #[error("only https URLs are allowed (got {0})")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL must not carry a user name or password")]
    Credentials,
    /// The message names the address only when the URL itself holds it: what a name
    /// resolves to inside this network is not told (it would map internal DNS); the
    /// fields are for the log.
    #[error("{}", address_refused(host, ip, reason))]
    Address {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("{0} does not resolve")]
    Unresolved(String),
}

fn address_refused(host: &str, ip: &IpAddr, reason: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        format!("{ip} is a {reason} address, which webhooks may not reach")
    } else {
        format!("{host} resolves to an address webhooks may not reach")
    }
}

/// Why an address may not be called, if it may not.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            // ::ffff:a.b.c.d and the deprecated ::a.b.c.d carry an IPv4 address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0, 0, 0, 0, 0, 0] && !v6.is_unspecified() && !v6.is_loopback() {
                return forbidden_v4(Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                ));
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        _ if ip.is_unspecified() || a == 0 => "unspecified",
        _ if ip.is_loopback() => "loopback",
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) => "cloud metadata",
        _ if ip.is_link_local() => "link-local",
        _ if ip.is_private() => "private",
        _ if a == 100 && (64..128).contains(&b) => "shared (CGNAT)",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() => "broadcast",
        _ if a >= 240 => "reserved",
        _ if (a, b, c) == (192, 0, 0) => "protocol assignment",
        _ if (a, b, c) == (192, 0, 2)
            || (a, b, c) == (198, 51, 100)
            || (a, b, c) == (203, 0, 113) =>
        {
            "documentation"
        }
        _ if a == 198 && (b == 18 || b == 19) => "benchmarking",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    Some(match () {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // fd00:ec2::254, the AWS metadata service over IPv6.
        _ if s == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254] => "cloud metadata",
        _ if s[0] & 0xfe00 == 0xfc00 => "private (unique local)",
        _ if s[0] & 0xffc0 == 0xfe80 => "link-local",
        _ if s[0] & 0xffc0 == 0xfec0 => "site-local",
        _ if s[0] & 0xff00 == 0xff00 => "multicast",
        _ if s[0] == 0x2001 && s[1] == 0x0db8 => "documentation",
        // 64:ff9b::/96 translates to IPv4 inside the operator's network.
        _ if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => "NAT64",
        _ if s[0] == 0x0100 && s[1..4] == [0, 0, 0] => "discard",
        _ => return None,
    })
}

/// What is allowed besides public https endpoints: tests and `dev/stack run` allow
/// loopback and plain http explicitly (`WEBHOOK_ALLOW_LOOPBACK`, `WEBHOOK_ALLOW_HTTP`),
/// never by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Guard {
    pub allow_loopback: bool,
    pub allow_http: bool,
}

impl Guard {
    /// The URL's form: scheme, host, no credentials; a literal IP address is checked too.
    pub fn check_url(&self, raw: &str) -> Result<Url, Refused> {
        let url = Url::parse(raw).map_err(|e| Refused::Malformed(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(Refused::Scheme(other.to_owned())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused::Credentials);
        }
        let host = url.host().ok_or(Refused::NoHost)?;
        let literal = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            self.check_ip(&host.to_string(), ip)?;
        }
        Ok(url)
    }

    fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        match forbidden(ip) {
            Some("loopback") if self.allow_loopback => Ok(()),
            Some(reason) => Err(Refused::Address {
                host: host.to_owned(),
                ip,
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Resolves the URL's host now and checks every address it gives: one forbidden
    /// address refuses the whole URL. Connect to the addresses returned, not to the
    /// name again.
    pub async fn resolve(&self, url: &Url) -> Result<Vec<SocketAddr>, Refused> {
        let host = url.host_str().ok_or(Refused::NoHost)?;
        let port = url.port_or_known_default().unwrap_or(443);
        self.resolve_host(host, port).await
    }

    /// [`Guard::resolve`] for a host name and port (what an HTTP client's resolver gets).
    pub async fn resolve_host(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|_| Refused::Unresolved(host.to_owned()))?
            .collect();
        if addrs.is_empty() {
            return Err(Refused::Unresolved(host.to_owned()));
        }
        for a in &addrs {
            self.check_ip(host, a.ip())?;
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn internal_addresses_are_refused_in_every_form() {
        for (addr, reason) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.1.1", "link-local"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("100.127.255.254", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.10", "documentation"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fc00::1", "private (unique local)"),
            ("fd12:3456::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("fd00:ec2::254", "cloud metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "cloud metadata"),
            ("::ffff:10.0.0.1", "private"),
            ("::10.0.0.1", "private"),
            ("64:ff9b::a00:1", "NAT64"),
        ] {
            assert_eq!(forbidden(ip(addr)), Some(reason), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(forbidden(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn urls_must_be_https_without_credentials_and_not_internal() {
        let guard = Guard::default();
        assert!(guard.check_url("https://hooks.example.com/x").is_ok());
        assert!(matches!(
            guard.check_url("http://hooks.example.com/x"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            guard.check_url("ftp://example.com"),
            Err(Refused::Scheme(_))
        ));
        assert!(matches!(
            guard.check_url("https://u:p@example.com"),
            Err(Refused::Credentials)
        ));
        assert!(matches!(
            guard.check_url("not a url"),
            Err(Refused::Malformed(_))
        ));
        for internal in [
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://[::ffff:169.254.169.254]/latest",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.5:8443/",
            // Numeric forms the URL parser normalises to 127.0.0.1.
            "https://2130706433/",
            "https://0x7f.1/",
        ] {
            assert!(
                matches!(guard.check_url(internal), Err(Refused::Address { .. })),
                "{internal}"
            );
        }
        let local = Guard {
            allow_loopback: true,
            allow_http: true,
        };
        assert!(local.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(
            local.check_url("http://10.0.0.1/hook").is_err(),
            "only loopback is allowed"
        );
    }

    #[tokio::test]
    async fn a_name_is_checked_by_every_address_it_resolves_to() {
        let guard = Guard {
            allow_loopback: false,
            allow_http: true,
        };
        let url = guard
            .check_url("http://localhost:9/hook")
            .expect("a name passes the form check");
        let refused = guard.resolve(&url).await;
        assert!(matches!(
            refused,
            Err(Refused::Address {
                reason: "loopback",
                ..
            })
        ));
        // What the name resolves to is not told to the caller (it would map internal
        // DNS); a literal address is the caller's own, and named.
        let said = refused.unwrap_err().to_string();
        assert_eq!(
            said,
            "localhost resolves to an address webhooks may not reach"
        );
        let literal = guard.check_url("http://127.0.0.1:9/hook").unwrap_err();
        assert_eq!(
            literal.to_string(),
            "127.0.0.1 is a loopback address, which webhooks may not reach"
        );
        let local = Guard {
            allow_loopback: true,
            allow_http: true,
        };
        let addrs = local
            .resolve(&url)
            .await
            .expect("loopback allowed explicitly");
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        let nowhere = guard
            .check_url("https://does-not-exist.invalid/")
            .expect("form");
        assert!(matches!(
            guard.resolve(&nowhere).await,
            Err(Refused::Unresolved(_))
        ));
    }
}
