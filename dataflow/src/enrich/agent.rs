//! User agent → browser, OS, device type and a bot flag, by woothee (a maintained, data-driven
//! parser with its own crawler list), cached per worker: user agents repeat, parsing costs µs.

use std::collections::HashMap;
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub browser: String,
    pub os: String,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device: &'static str,
    pub bot: bool,
}

pub fn parse(user_agent: &str) -> Agent {
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let Some(r) = parsed else {
        return Agent { browser: "unknown".into(), os: "unknown".into(), device: "other", bot: false };
    };
    let tablet = r.os == "iPad" || (r.os == "Android" && !user_agent.contains("Mobile"));
    let device = match r.category {
        "crawler" => "bot",
        "smartphone" if tablet => "tablet",
        "smartphone" | "mobilephone" => "mobile",
        "pc" => "desktop",
        _ => "other",
    };
    let lower = |s: &str| if s == "UNKNOWN" { "unknown".to_string() } else { s.to_string() };
    Agent { browser: lower(r.name), os: lower(r.os), device, bot: r.category == "crawler" }
}

/// Parsed agents by text, bounded (cleared when full: a bot rotating random agents cannot grow it).
#[derive(Default)]
pub struct AgentCache {
    parsed: HashMap<u64, Arc<Agent>>,
}

const CACHE_ENTRIES: usize = 20_000;
const MAX_AGENT_BYTES: usize = 512;

impl AgentCache {
    pub fn get(&mut self, user_agent: &str) -> Arc<Agent> {
        // Real agents are a few hundred bytes; a huge one costs woothee a millisecond each time.
        let mut cut = user_agent.len().min(MAX_AGENT_BYTES);
        while !user_agent.is_char_boundary(cut) {
            cut -= 1;
        }
        let user_agent = &user_agent[..cut];
        let key = xxhash_rust::xxh3::xxh3_64(user_agent.as_bytes());
        if let Some(a) = self.parsed.get(&key) {
            return a.clone();
        }
        if self.parsed.len() >= CACHE_ENTRIES {
            self.parsed.clear();
        }
        let agent = Arc::new(parse(user_agent));
        self.parsed.insert(key, agent.clone());
        agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_devices_and_crawlers_are_recognised() {
        let chrome = parse("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36");
        assert_eq!((chrome.browser.as_str(), chrome.device, chrome.bot), ("Chrome", "desktop", false));
        let iphone = parse("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1");
        assert_eq!((iphone.os.as_str(), iphone.device), ("iPhone", "mobile"));
        let ipad = parse("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1");
        assert_eq!(ipad.device, "tablet");
        let googlebot = parse("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
        assert_eq!((googlebot.device, googlebot.bot), ("bot", true));
        let nonsense = parse("definitely not a browser");
        assert!(!nonsense.bot);
        let mut cache = AgentCache::default();
        assert!(Arc::ptr_eq(&cache.get("curl/8.0"), &cache.get("curl/8.0")));
    }
}
