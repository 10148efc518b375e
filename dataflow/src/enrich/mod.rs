//! Enrichment before the views (`[enrich]`): traffic source from referrer and UTM fields, user
//! agent → browser / OS / device / bot, IP → country from a CIDR table reloaded when its file
//! changes, then named filters and transforms in order. Off unless configured: the views then
//! show the fields exactly as sent.

mod agent;
mod geo;
mod rules;
mod source;

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schema::event::{sym, NONE};
use serde::{Deserialize, Serialize};

pub use agent::{parse as parse_agent, Agent, AgentCache};
pub use geo::{GeoTable, IpTable, Place};
pub use rules::{Action, Field, Match, RuleDef};
pub use source::{classify, Source};

use crate::decode::Decoded;
use crate::reject::{Reason, Rejection};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Classify referrer + UTM into `utm_source` (filled when absent, normalised when present) and
    /// the props `channel` (direct, search, social, email, paid, referral, internal), `campaign`
    /// and `partner` (normalised).
    pub traffic_source: bool,
    /// Referrers from these hosts (and their subdomains) are internal navigation.
    pub internal_hosts: Vec<String>,
    /// Parse `user_agent`: props `browser`, `os`, `bot`; `device` when the event has none.
    pub user_agent: bool,
    /// A CIDR table (`cidr,country[,region]` lines): `country` when the event has none, and the
    /// prop `region`.
    pub ip_table: Option<PathBuf>,
    /// How often the table file is checked for changes.
    pub reload_seconds: u64,
    /// Filters and transforms, in order.
    pub rules: Vec<RuleDef>,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            traffic_source: false,
            internal_hosts: Vec::new(),
            user_agent: false,
            ip_table: None,
            reload_seconds: 5,
            rules: Vec::new(),
        }
    }
}

impl EnrichConfig {
    pub fn is_enabled(&self) -> bool {
        self.traffic_source || self.user_agent || self.ip_table.is_some() || !self.rules.is_empty()
    }
}

/// What every worker shares: the compiled rules and the IP table.
pub struct Enricher {
    config: EnrichConfig,
    geo: Option<GeoTable>,
    rules: Vec<rules::Rule>,
}

impl Enricher {
    /// `None` when nothing is configured.
    pub fn from_config(config: &EnrichConfig) -> Result<Option<Arc<Enricher>>, String> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let geo = config
            .ip_table
            .as_deref()
            .map(GeoTable::open)
            .transpose()
            .map_err(|e| format!("[enrich] ip_table: {e}"))?;
        let mut names = std::collections::HashSet::new();
        let mut rules = Vec::new();
        for def in &config.rules {
            if !names.insert(def.name.clone()) {
                return Err(format!("[enrich] two rules are named `{}`; names must be unique", def.name));
            }
            rules.push(rules::Rule::compile(def)?);
        }
        Ok(Some(Arc::new(Enricher { config: config.clone(), geo, rules })))
    }

    pub fn geo(&self) -> Option<&GeoTable> {
        self.geo.as_ref()
    }

    /// Checks the IP table file every `reload_seconds` from a background thread, for as long as
    /// the enricher lives.
    pub fn watch(self: &Arc<Self>) {
        if self.geo.is_none() {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = Duration::from_secs(self.config.reload_seconds.max(1));
        std::thread::Builder::new()
            .name("ip-table".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(me) = weak.upgrade() else { return };
                if let Some(geo) = &me.geo {
                    if let Err(e) = geo.reload_if_changed() {
                        tracing::error!(error = %e, "the IP table was not reloaded; the previous one stays in use");
                    }
                }
            })
            .expect("spawn the IP table watcher");
    }

    /// Enriches one event; a filter's drop is a `filtered` rejection naming the rule.
    pub fn apply<'a>(&self, mut d: Decoded<'a>, agents: &mut AgentCache) -> Result<Decoded<'a>, Rejection> {
        // Props go straight into the event; static texts are borrowed, not allocated.
        let add = |d: &mut Decoded<'a>, key: &'static str, value: Cow<'a, str>| {
            // Ours replaces a prop of the same name the sender set (a client cannot pose as a browser).
            d.prop_texts.retain(|(k, _)| k != key);
            d.prop_texts.push((Cow::Borrowed(key), value));
        };
        if self.config.traffic_source {
            let s = classify(
                d.referrer.as_deref(),
                d.utm_source.as_deref(),
                d.utm_medium.as_deref(),
                &self.config.internal_hosts,
            );
            d.utm_source = Some(Cow::Owned(s.source));
            add(&mut d, "channel", Cow::Borrowed(s.channel));
            if let Some(c) = d.utm_campaign.as_deref().map(source::normalise).filter(|c| !c.is_empty()) {
                add(&mut d, "campaign", Cow::Owned(c));
            }
            if let Some(p) = d.partner.as_deref().map(source::normalise).filter(|p| !p.is_empty()) {
                add(&mut d, "partner", Cow::Owned(p));
            }
        }
        let mut bot = false;
        if self.config.user_agent {
            if let Some(ua) = d.user_agent.as_deref() {
                let agent = agents.get(ua);
                bot = agent.bot;
                if d.device.is_none() {
                    d.device = Some(Cow::Borrowed(agent.device));
                }
                add(&mut d, "browser", Cow::Owned(agent.browser.clone()));
                add(&mut d, "os", Cow::Owned(agent.os.clone()));
                add(&mut d, "bot", Cow::Borrowed(if bot { "true" } else { "false" }));
            }
        }
        if let (Some(geo), Some(ip)) = (&self.geo, d.ip.as_deref()) {
            if let Some(place) = geo.current().lookup(ip) {
                if d.country.is_none() {
                    d.country = Some(Cow::Owned(place.country.to_string()));
                }
                if let Some(region) = &place.region {
                    add(&mut d, "region", Cow::Owned(region.to_string()));
                }
            }
        }
        for rule in &self.rules {
            if rule.matches(&d, bot) {
                if let rules::Compiled::Drop = rule.action {
                    return Err(Rejection::new(Reason::Filtered, format!("dropped by enrich rule `{}`", rule.name)));
                }
                rule.transform(&mut d);
            }
        }
        // Transforms may have emptied a field or made a name the decoder would refuse.
        for field in
            [&mut d.page, &mut d.utm_source, &mut d.device, &mut d.country, &mut d.utm_campaign, &mut d.partner]
        {
            if field.as_deref().is_some_and(str::is_empty) {
                *field = None;
            }
        }
        if d.name.is_empty() || d.name.len() > crate::decode::MAX_EVENT_NAME {
            return Err(Rejection::new(
                Reason::InvalidField,
                format!(
                    "enrich rules made the event name {} bytes long; it must be 1..{}",
                    d.name.len(),
                    crate::decode::MAX_EVENT_NAME
                ),
            ));
        }
        resym(&mut d);
        Ok(d)
    }
}

/// Recomputes the symbols from the (possibly changed) texts.
fn resym(d: &mut Decoded<'_>) {
    let opt = |v: &Option<Cow<str>>| v.as_deref().map(sym).unwrap_or(NONE);
    d.event.name = sym(&d.name);
    d.event.page = opt(&d.page);
    d.event.utm_source = opt(&d.utm_source);
    d.event.device = opt(&d.device);
    d.event.country = opt(&d.country);
    d.props = d.prop_texts.iter().map(|(k, v)| (sym(k), sym(v))).collect();
}

#[cfg(test)]
mod tests;
