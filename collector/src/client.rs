//! Who sent a request: the connection's address, or (behind a trusted proxy) the last address in
//! `X-Forwarded-For` that is not a trusted proxy itself. And a per-client token bucket.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use axum::http::HeaderMap;
use dataflow::enrich::IpTable;
use parking_lot::Mutex;

/// Trusted proxy blocks: the enrichment's CIDR table (longest prefix, IPv4 and IPv6 apart).
pub struct Proxies(IpTable);

impl Proxies {
    pub fn parse(cidrs: &[String]) -> Result<Proxies, String> {
        let rows: String = cidrs.iter().map(|c| format!("{c},proxy\n")).collect();
        IpTable::parse(&rows).map(Proxies).map_err(|e| format!("[collector] trusted_proxies: {e}"))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.lookup_addr(ip).is_some()
    }

    /// The client's address for a request from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        // An IPv4 peer on a dual-stack listener arrives as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded =
            headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(",");
        // Right to left: the first hop not added by one of our proxies is the client. An entry that
        // does not parse ends the walk there: skipping it would hand the choice to whatever the
        // client wrote further left.
        let mut client = peer;
        for hop in forwarded.split(',').rev() {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// `1.2.3.4`, `1.2.3.4:5555`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip().to_canonical())
}

const MAX_CLIENTS: usize = 100_000;

/// Token buckets per client; idle clients are forgotten when the map grows.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        RateLimiter { rate, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Whether `client` may send one more request now.
    pub fn allow(&self, client: IpAddr, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        // One IPv6 host usually holds a whole /64: it is one client here.
        let client = match client {
            IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & (u128::MAX << 64)).into()),
            v4 => v4,
        };
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            // Forget the clients whose bucket has refilled (they lose nothing); if that frees too
            // little, start over rather than let the map (and this scan) grow without bound.
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, (tokens, at)| *tokens + now.duration_since(*at).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_CLIENTS / 2 {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let proxies = Proxies::parse(&["10.0.0.0/8".into(), "192.0.2.1".into()]).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "198.51.100.7, 203.0.113.9, 10.1.1.1".parse().unwrap());
        let direct: IpAddr = "203.0.113.50".parse().unwrap();
        assert_eq!(proxies.client(direct, &headers), direct, "a client cannot claim another address");
        let proxy: IpAddr = "10.2.2.2".parse().unwrap();
        assert_eq!(proxies.client(proxy, &headers), "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(proxies.client(proxy, &HeaderMap::new()), proxy);
        assert!(Proxies::parse(&["nope".into()]).is_err());
        // A hop the proxy wrote with a port, and an entry that is not an address: the walk stops
        // there instead of skipping to what the client wrote further left.
        headers.insert("x-forwarded-for", "1.2.3.4, 203.0.113.9:5555".parse().unwrap());
        assert_eq!(proxies.client(proxy, &headers), "203.0.113.9".parse::<IpAddr>().unwrap());
        headers.insert("x-forwarded-for", "1.2.3.4, unknown".parse().unwrap());
        assert_eq!(proxies.client(proxy, &headers), proxy);
        // An IPv4 proxy seen through a dual-stack listener is still the trusted proxy.
        let mapped: IpAddr = "::ffff:10.2.2.2".parse().unwrap();
        headers.insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
        assert_eq!(proxies.client(mapped, &headers), "198.51.100.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn buckets_refill_at_the_rate() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| limiter.allow(ip, t0)));
        assert!(!limiter.allow(ip, t0), "burst spent");
        assert!(limiter.allow(ip, t0 + std::time::Duration::from_millis(500)), "one token after 0.5 s at 2/s");
        assert!(!limiter.allow(ip, t0 + std::time::Duration::from_millis(500)));
        assert!(limiter.allow("192.0.2.10".parse().unwrap(), t0), "per client");
    }
}
