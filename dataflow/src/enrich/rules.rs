//! Named filters and transforms, applied in order after the lookups: drop internal traffic,
//! test users or bots (counted as `filtered` rejects naming the rule), rename an event, map a page
//! by regex, copy a property into a field.

use std::borrow::Cow;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::geo::IpTable;
use crate::decode::Decoded;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    pub name: String,
    /// Every condition given must hold (none: every event).
    #[serde(default)]
    pub when: Match,
    pub action: Action,
    /// `rename_event`: the new name.
    #[serde(default)]
    pub to: Option<String>,
    /// `map_page`: a regex on the page and its replacement (`$1` refers to a group).
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub replace: Option<String>,
    /// `copy_prop`: the property and the field it fills.
    #[serde(default)]
    pub prop: Option<String>,
    #[serde(default)]
    pub field: Option<Field>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Match {
    pub event: Option<String>,
    pub page_regex: Option<String>,
    pub user_id_prefix: Option<String>,
    /// CIDR blocks (`10.0.0.0/8`, `192.0.2.7`).
    pub ip: Vec<String>,
    /// The user agent is a known crawler (needs `user_agent = true`).
    pub bot: Option<bool>,
    /// `props.<prop> == prop_value` (or just present without a value).
    pub prop: Option<String>,
    pub prop_value: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Drop,
    RenameEvent,
    MapPage,
    CopyProp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Event,
    Page,
    UtmSource,
    UtmCampaign,
    Device,
    Country,
    Partner,
}

pub struct Rule {
    pub name: String,
    event: Option<String>,
    page: Option<Regex>,
    user_prefix: Option<String>,
    ips: Option<IpTable>,
    bot: Option<bool>,
    prop: Option<(String, Option<String>)>,
    pub action: Compiled,
}

pub enum Compiled {
    Drop,
    RenameEvent(String),
    MapPage(Regex, String),
    CopyProp(String, Field),
}

impl Rule {
    pub fn compile(def: &RuleDef) -> Result<Rule, String> {
        let name = &def.name;
        let regex = |p: &str| Regex::new(p).map_err(|e| format!("enrich rule `{name}`: bad regex `{p}`: {e}"));
        let need = |v: &Option<String>, what: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("enrich rule `{name}`: `{:?}` needs `{what}`", def.action))
        };
        let action = match def.action {
            Action::Drop => Compiled::Drop,
            Action::RenameEvent => Compiled::RenameEvent(need(&def.to, "to")?),
            Action::MapPage => {
                Compiled::MapPage(regex(&need(&def.pattern, "pattern")?)?, need(&def.replace, "replace")?)
            }
            Action::CopyProp => Compiled::CopyProp(
                need(&def.prop, "prop")?,
                def.field.ok_or_else(|| format!("enrich rule `{name}`: copy_prop needs `field`"))?,
            ),
        };
        let m = &def.when;
        let ips = if m.ip.is_empty() {
            None
        } else {
            let text: String = m.ip.iter().map(|c| format!("{c},match\n")).collect();
            Some(IpTable::parse(&text).map_err(|e| format!("enrich rule `{name}`: `ip`: {e}"))?)
        };
        Ok(Rule {
            name: name.clone(),
            event: m.event.clone(),
            page: m.page_regex.as_deref().map(regex).transpose()?,
            user_prefix: m.user_id_prefix.clone(),
            ips,
            bot: m.bot,
            prop: m.prop.clone().map(|p| (p, m.prop_value.clone())),
            action,
        })
    }

    pub fn matches(&self, d: &Decoded<'_>, bot: bool) -> bool {
        self.event.as_ref().is_none_or(|e| *e == d.name)
            && self.page.as_ref().is_none_or(|r| d.page.as_deref().is_some_and(|p| r.is_match(p)))
            && self.user_prefix.as_ref().is_none_or(|p| d.user_id.starts_with(p.as_str()))
            && self.ips.as_ref().is_none_or(|t| d.ip.as_deref().is_some_and(|ip| t.lookup(ip).is_some()))
            && self.bot.is_none_or(|b| b == bot)
            && self.prop.as_ref().is_none_or(|(key, value)| {
                d.prop_texts.iter().any(|(k, v)| k == key && value.as_ref().is_none_or(|want| v == want))
            })
    }

    /// Applies a transform (not `Drop`, which the caller handles).
    pub fn transform(&self, d: &mut Decoded<'_>) {
        match &self.action {
            Compiled::Drop => {}
            Compiled::RenameEvent(to) => d.name = Cow::Owned(to.clone()),
            Compiled::MapPage(pattern, replace) => {
                if let Some(page) = d.page.as_deref() {
                    if let Cow::Owned(mapped) = pattern.replace(page, replace.as_str()) {
                        d.page = Some(Cow::Owned(mapped));
                    }
                }
            }
            Compiled::CopyProp(prop, field) => {
                let Some(value) = d.prop_texts.iter().find(|(k, _)| k == prop).map(|(_, v)| v.clone().into_owned())
                else {
                    return;
                };
                if *field == Field::Event {
                    d.name = Cow::Owned(value);
                    return;
                }
                let value: Option<Cow<str>> = Some(Cow::Owned(value));
                match field {
                    Field::Event => unreachable!("handled above"),
                    Field::Page => d.page = value,
                    Field::UtmSource => d.utm_source = value,
                    Field::UtmCampaign => d.utm_campaign = value,
                    Field::Device => d.device = value,
                    Field::Country => d.country = value,
                    Field::Partner => d.partner = value,
                }
            }
        }
    }
}
