//! Which address a request comes from, for throttling. The TCP peer is the only fact; an
//! `X-Forwarded-For` entry is believed only when the hop that wrote it is a proxy this service
//! was told to trust (the gateway), since any client can send the header.

use std::net::IpAddr;

use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` entries are believed: addresses or CIDR ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{entry:?} in the trusted proxies is neither an IP address nor a CIDR range")]
pub struct InvalidProxy {
    pub entry: String,
}

impl TrustedProxies {
    /// Reads a comma-separated list such as `127.0.0.1, 10.0.0.0/8, ::1`; empty trusts no one.
    pub fn parse(list: &str) -> Result<Self, InvalidProxy> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| InvalidProxy {
                        entry: entry.to_owned(),
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|proxy| proxy.contains(&address))
    }

    /// The client behind `peer`: the peer itself unless it is a trusted proxy; then, walking
    /// `X-Forwarded-For` (`forwarded`, every header's entries in order) from the nearest hop
    /// backwards, the first address that is not a trusted proxy. An entry that is not an
    /// address ends the walk at the last trusted hop: nothing further left is believable.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl DoubleEndedIterator<Item = &'a str>,
    ) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        for hop in forwarded.rev() {
            let Ok(hop) = hop.trim().parse::<IpAddr>() else {
                break;
            };
            client = hop.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn hops(header: &str) -> impl DoubleEndedIterator<Item = &str> {
        header.split(',')
    }

    #[test]
    fn addresses_and_ranges_parse_and_garbage_does_not() {
        let proxies = TrustedProxies::parse(" 127.0.0.1, 10.0.0.0/8 ,, ::1").expect("list");
        assert!(proxies.trusts(ip("127.0.0.1")));
        assert!(proxies.trusts(ip("10.20.30.40")));
        assert!(proxies.trusts(ip("::1")));
        assert!(!proxies.trusts(ip("127.0.0.2")));
        assert!(proxies.trusts(ip("::ffff:10.1.1.1")), "IPv4-mapped peers");
        assert_eq!(TrustedProxies::parse(""), Ok(TrustedProxies::default()));
        assert_eq!(
            TrustedProxies::parse("127.0.0.1, gateway"),
            Err(InvalidProxy {
                entry: "gateway".into()
            })
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("203.0.113.9"), hops("1.2.3.4")),
            ip("203.0.113.9")
        );
        let gateway = TrustedProxies::parse("127.0.0.1").expect("list");
        assert_eq!(
            gateway.client(ip("198.51.100.1"), hops("1.2.3.4")),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_nearest_untrusted_hop() {
        let proxies = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").expect("list");
        // A client's own claim (1.2.3.4) sits left of what the proxies appended.
        assert_eq!(
            proxies.client(ip("127.0.0.1"), hops("1.2.3.4, 203.0.113.9, 10.0.0.7")),
            ip("203.0.113.9")
        );
        assert_eq!(proxies.client(ip("127.0.0.1"), hops("")), ip("127.0.0.1"));
        assert_eq!(
            proxies.client(ip("127.0.0.1"), hops("not-an-ip, 10.0.0.7")),
            ip("10.0.0.7"),
            "garbage stops the walk at the last trusted hop"
        );
    }
}
