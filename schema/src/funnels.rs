//! Funnel definitions and their validation (the funnel view in `views::funnels` compiles and
//! evaluates them).
//!
//! Semantics (documented in the README):
//! - An *attempt* starts at an event matching step 1 and must reach each later step within the
//!   conversion window from its start. `ordered`: each step after the previous one (events with
//!   equal times count in the engine's event order), other events may come between; `strict`:
//!   each step is the user's very next event; `unordered`: the steps in any order (an attempt
//!   starts at an event of any step; step N is reached when N distinct steps have happened; an
//!   event that matches several steps completes the lowest one not done yet, greedily).
//! - An attempt may not have an exclusion event strictly between its step `from` and step `to`
//!   (or after step `from` inside the window when `to` was not reached). Ordered funnels move
//!   step `from` to a later event (the chain goes on from there); otherwise, or when `from` is
//!   the first step, the attempt is cancelled.
//! - A user counts with their best attempt: most steps reached, then the earliest start. The
//!   breakdown value is that attempt's first event's (first touch).

use serde::{Deserialize, Serialize};

use crate::cells::Dim;
use crate::event::Sym;
use crate::sessions::BREAKDOWNS as BREAKDOWN_SOURCES;

pub use crate::registry::RegistryError;
pub use crate::time::MS_PER_DAY;

pub type FunnelRegistry = crate::registry::Registry<FunnelDef>;

impl crate::registry::Definition for FunnelDef {
    type Def = FunnelDef;
    const KIND: &'static str = "funnel";
    const ROUTE: &'static str = "/api/v1/funnels";
    const MAX: usize = MAX_FUNNELS;
    fn new(def: FunnelDef) -> Result<FunnelDef, String> {
        def.validate()?;
        Ok(def)
    }
    fn def(&self) -> &FunnelDef {
        self
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Ordered,
    Strict,
    Unordered,
}

/// An event name plus optional conditions on its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub event: String,
    /// `page` equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_prefix: Option<String>,
    /// `page` matches this regular expression (anywhere; anchor it with `^...$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// `props` entries that must all be present with these values (strings, numbers, booleans).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub props: std::collections::BTreeMap<String, serde_json::Value>,
}

impl StepDef {
    /// Checks what serde cannot; `what` names the step in the message.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if self.event.is_empty() {
            return Err(format!("{what}: `event` must not be empty"));
        }
        if let Some(pattern) = &self.page_regex {
            regex::Regex::new(pattern).map_err(|e| format!("{what}: page_regex does not compile: {e}"))?;
        }
        for (key, value) in &self.props {
            prop_text(value).ok_or_else(|| format!("{what}: props.{key} must be a string, number or boolean"))?;
        }
        Ok(())
    }
}

/// The text a property value is compared as: `"42"` for 42, `"true"` for true.
pub fn prop_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => return None,
        }),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExclusionDef {
    #[serde(flatten)]
    pub step: StepDef,
    /// Between these steps (1-based, `from` < `to`); default: the whole funnel.
    #[serde(default)]
    pub from: Option<usize>,
    #[serde(default)]
    pub to: Option<usize>,
}

/// What a funnel counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Each user once, with their best attempt.
    #[default]
    Users,
    /// Each session once, with its best attempt inside the session.
    Sessions,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunnelDef {
    pub name: String,
    #[serde(default)]
    pub over: Unit,
    pub steps: Vec<StepDef>,
    #[serde(default)]
    pub order: Order,
    /// Conversion window from the first step (PostHog's default: 14 days).
    #[serde(default = "default_window")]
    pub window_minutes: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclusions: Vec<ExclusionDef>,
    /// `utm_source`, `device`, `country` or `page` of the attempt's first event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<String>,
}

fn default_window() -> u32 {
    14 * 24 * 60
}

pub const MAX_STEPS: usize = 20;
/// Funnels one engine computes (each is evaluated for every active user).
pub const MAX_FUNNELS: usize = 64;
pub const BREAKDOWNS: &str = "utm_source, device, country, page";

impl FunnelDef {
    /// Checks what serde cannot, with a message that says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        crate::registry::check_name(name, "funnel")?;
        if self.steps.len() < 2 || self.steps.len() > MAX_STEPS {
            return Err(format!("funnel `{name}`: give 2 to {MAX_STEPS} steps, not {}", self.steps.len()));
        }
        if self.window_minutes == 0 {
            return Err(format!("funnel `{name}`: window_minutes must be at least 1"));
        }
        for (i, s) in self.steps.iter().enumerate() {
            s.check(&format!("funnel `{name}` step {}", i + 1))?;
        }
        for (i, (x, from, to)) in self.exclusion_bounds().enumerate() {
            let n = self.steps.len();
            if from < 1 || to > n || from >= to {
                return Err(format!(
                    "funnel `{name}` exclusion {}: need 1 <= from < to <= {n}, got from {from} to {to}",
                    i + 1
                ));
            }
            let what = format!("funnel `{name}` exclusion {}", i + 1);
            // Steps strictly between `from` and `to` (1-based) are indices from..to - 1.
            if let Some(k) = (from..to - 1).find(|k| self.steps[*k] == x.step) {
                return Err(format!("{what} is the same as step {}, which it would always cancel", k + 1));
            }
            x.step.check(&what)?;
        }
        self.parse_breakdown().map(|_| ())
    }

    /// Each exclusion with its 1-based `from` and `to` (defaults: the whole funnel).
    pub fn exclusion_bounds(&self) -> impl Iterator<Item = (&ExclusionDef, usize, usize)> {
        let n = self.steps.len();
        self.exclusions.iter().map(move |x| (x, x.from.unwrap_or(1), x.to.unwrap_or(n)))
    }

    fn parse_breakdown(&self) -> Result<Option<Dim>, String> {
        self.breakdown
            .as_deref()
            .map(|b| {
                Dim::parse(b)
                    .filter(|d| *d == Dim::Page || BREAKDOWN_SOURCES.iter().any(|(s, _)| s == d))
                    .ok_or_else(|| format!("funnel `{}`: unknown breakdown `{b}`; use one of: {BREAKDOWNS}", self.name))
            })
            .transpose()
    }

    pub fn steps(&self) -> usize {
        self.steps.len()
    }

    pub fn window_ms(&self) -> i64 {
        self.window_minutes as i64 * 60_000
    }

    /// `utm_source`, `device`, `country` or `page` (validated).
    pub fn breakdown_dim(&self) -> Option<Dim> {
        self.parse_breakdown().ok().flatten()
    }

    /// Changes whenever the definition does: results computed under another are recomputed.
    pub fn fingerprint(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(self).expect("serialisable"))
    }
}

/// One aggregate of a funnel's results; the cell's count carries the number of users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FunnelStat {
    /// Users whose best attempt reached this step (0-based) or further.
    Reached(u8),
    /// Users who took this many whole seconds from the previous step to this one (0-based).
    StepSecs(u8, u32),
}

/// The symbol of a funnel step's per-minute match count: `sym("<funnel>#<step>")` (1-based).
pub fn step_sym(funnel: &str, step: usize) -> Sym {
    crate::event::sym(&step_name(funnel, step))
}

pub fn step_name(funnel: &str, step: usize) -> String {
    format!("{funnel}#{step}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: serde_json::Value) -> FunnelDef {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn definitions_are_checked_with_messages_that_say_what_to_change() {
        let err = |j| def(j).validate().unwrap_err();
        assert!(err(serde_json::json!({"name": "a b", "steps": [{"event": "x"}, {"event": "y"}]}))
            .contains("letters, digits"));
        assert!(err(serde_json::json!({"name": "f", "steps": [{"event": "x"}]})).contains("2 to 20 steps"));
        assert!(err(serde_json::json!({"name": "f", "breakdown": "os", "steps": [{"event": "x"}, {"event": "y"}]}))
            .contains("utm_source, device, country, page"));
        let same = serde_json::json!({"name": "f", "steps": [{"event": "x"}, {"event": "y"}, {"event": "z"}],
            "exclusions": [{"event": "y", "from": 1, "to": 3}]});
        assert!(err(same).contains("same as step 2"));
        let bounds = serde_json::json!({"name": "f", "steps": [{"event": "x"}, {"event": "y"}],
            "exclusions": [{"event": "q", "from": 2, "to": 2}]});
        assert!(err(bounds).contains("1 <= from < to <= 2"));
        let regex = serde_json::json!({"name": "f", "steps": [{"event": "x", "page_regex": "("}, {"event": "y"}]});
        assert!(err(regex).contains("step 1: page_regex does not compile"));
    }
}
