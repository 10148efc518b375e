//! IP → country (and region) from a CIDR table file (`cidr,country[,region]` per line, `#`
//! comments), longest prefix first, reloaded when the file changes. A file that fails to load
//! leaves the previous table in place (and says why): events never wait for or lose a lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub country: Arc<str>,
    pub region: Option<Arc<str>>,
}

/// One loaded table: per prefix length (IPv4 mapped into IPv6), masked address → place.
#[derive(Default)]
pub struct IpTable {
    /// `(is IPv4, prefix length, masked address → place)`, longest prefix first. IPv4 rows only
    /// match IPv4 addresses (an IPv6 `::/0` row must not catch them through the mapped range).
    by_len: Vec<(bool, u8, HashMap<u128, Place>)>,
    pub entries: usize,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - len as u32))
    }
}

impl IpTable {
    pub fn parse(text: &str) -> Result<IpTable, String> {
        let mut maps: HashMap<(bool, u8), HashMap<u128, Place>> = HashMap::new();
        let mut entries = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let bad = |why: &str| format!("line {}: {why} (`{line}`); expected `cidr,country[,region]`", n + 1);
            let (cidr, country) = match fields.as_slice() {
                [cidr, country, ..] if !country.is_empty() => (*cidr, *country),
                _ => return Err(bad("missing the country")),
            };
            let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
            let ip: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u8 = if len.is_empty() { max } else { len.parse().map_err(|_| bad("bad prefix length"))? };
            if len > max {
                return Err(bad("prefix length too long"));
            }
            let len = if ip.is_ipv4() { len + 96 } else { len };
            let region = fields.get(2).filter(|r| !r.is_empty()).map(|r| Arc::from(*r));
            maps.entry((ip.is_ipv4(), len))
                .or_default()
                .insert(mask(to_u128(ip), len), Place { country: Arc::from(country), region });
            entries += 1;
        }
        let mut by_len: Vec<(bool, u8, HashMap<u128, Place>)> =
            maps.into_iter().map(|((v4, len), map)| (v4, len, map)).collect();
        by_len.sort_by_key(|(_, len, _)| std::cmp::Reverse(*len));
        Ok(IpTable { by_len, entries })
    }

    /// The most specific entry containing `ip` (`None` for no entry or not an address).
    pub fn lookup(&self, ip: &str) -> Option<&Place> {
        self.lookup_addr(ip.trim().parse().ok()?)
    }

    pub fn lookup_addr(&self, ip: IpAddr) -> Option<&Place> {
        let ip = ip.to_canonical();
        let (v4, addr) = (ip.is_ipv4(), to_u128(ip));
        self.by_len.iter().filter(|(kind, _, _)| *kind == v4).find_map(|(_, len, map)| map.get(&mask(addr, *len)))
    }
}

/// The table in use, replaced whole when the file changes.
pub struct GeoTable {
    path: PathBuf,
    table: RwLock<Arc<IpTable>>,
    seen: RwLock<Option<(SystemTime, u64)>>,
    /// A change seen by the last poll: loaded once it has stayed the same for a whole period,
    /// so a file still being written is not taken half-way.
    pending: RwLock<Option<(SystemTime, u64)>>,
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.modified()?, m.len()))
}

impl GeoTable {
    /// Loads `path`; a start without a usable table is an error (the config names it).
    pub fn open(path: &Path) -> Result<GeoTable, String> {
        let geo = GeoTable {
            path: path.to_path_buf(),
            table: RwLock::default(),
            seen: RwLock::new(None),
            pending: RwLock::new(None),
        };
        geo.reload()?;
        Ok(geo)
    }

    pub fn current(&self) -> Arc<IpTable> {
        self.table.read().clone()
    }

    /// Loads the file again if it changed since the last load and has not changed since the
    /// previous call (a writer has finished); `Ok(true)` when a new table is in use.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.path).map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        if *self.seen.read() == Some(now) {
            return Ok(false);
        }
        {
            let mut pending = self.pending.write();
            if *pending != Some(now) {
                *pending = Some(now);
                return Ok(false);
            }
        }
        self.reload().map(|_| true)
    }

    fn reload(&self) -> Result<(), String> {
        let before = stamp(&self.path).map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let text =
            std::fs::read_to_string(&self.path).map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let table = IpTable::parse(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        if table.entries == 0 {
            return Err(format!(
                "{}: no entries (a file being rewritten?); keeping the table in use",
                self.path.display()
            ));
        }
        tracing::info!(path = %self.path.display(), entries = table.entries, "IP table loaded");
        *self.table.write() = Arc::new(table);
        *self.seen.write() = Some(before);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_prefix_wins_for_v4_and_v6() {
        let table = IpTable::parse(
            "# test table\n10.0.0.0/8,DE\n10.1.0.0/16,FR,Île-de-France\n203.0.113.7,NL\n2001:db8::/32,US,CA\n\n",
        )
        .unwrap();
        assert_eq!(table.entries, 4);
        assert_eq!(table.lookup("10.2.3.4").unwrap().country.as_ref(), "DE");
        let fr = table.lookup("10.1.200.1").unwrap();
        assert_eq!((fr.country.as_ref(), fr.region.as_deref()), ("FR", Some("Île-de-France")));
        assert_eq!(table.lookup("203.0.113.7").unwrap().country.as_ref(), "NL");
        assert!(table.lookup("203.0.113.8").is_none());
        assert_eq!(table.lookup("2001:db8:1::5").unwrap().country.as_ref(), "US");
        assert!(table.lookup("not an ip").is_none());
        assert!(table.lookup("11.0.0.1").is_none());
        let catch_all = IpTable::parse("::/0,ZZ\n").unwrap();
        assert!(catch_all.lookup("8.8.8.8").is_none(), "an IPv6 row does not catch IPv4 addresses");
        assert_eq!(catch_all.lookup("2001:db8::1").unwrap().country.as_ref(), "ZZ");
    }

    #[test]
    fn bad_lines_are_named() {
        let err = IpTable::parse("10.0.0.0/8,DE\n10.0.0.0/40,FR\n").err().unwrap();
        assert!(err.contains("line 2") && err.contains("prefix length"), "{err}");
        let err = IpTable::parse("nonsense\n").err().unwrap();
        assert!(err.contains("line 1"), "{err}");
    }
}
