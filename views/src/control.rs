//! What every worker's view operators learn at an epoch besides events: the engine's clock,
//! the definitions in effect, and the texts of pages that step patterns match on. Each arrives
//! through the dataflow at an epoch, so every worker applies it at the same point of the stream.

use std::sync::Arc;

use schema::alert_rules::AlertRuleDef;
use schema::event::Sym;
use schema::funnels::FunnelDef;
use schema::retention::RetentionDef;
use serde::{Deserialize, Serialize};

/// The engine's clock at an epoch, computed in the dataflow from every worker's input clocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineTime {
    /// The newest admitted event time ("now" for the live numbers).
    pub head: Option<i64>,
    /// Event time up to which the views are complete; it never goes back.
    pub as_of: Option<i64>,
    /// No event admitted from now on is older than this (`i64::MIN`: no bound yet): per-user
    /// state before it is final and can be forgotten.
    pub floor: i64,
    /// Every input has read what it held when the engine started.
    pub ready: bool,
}

impl Default for EngineTime {
    fn default() -> Self {
        EngineTime { head: None, as_of: None, floor: i64::MIN, ready: false }
    }
}

/// The definitions in effect: every funnel, retention definition and alert rule, in registry
/// order (cells name them by index).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Defs {
    pub funnels: Vec<FunnelDef>,
    pub retention: Vec<RetentionDef>,
    pub alerts: Vec<AlertRuleDef>,
}

impl Defs {
    /// The longest window a per-key rule reads (minutes), which bounds the per-key counts kept.
    pub fn key_window(&self) -> u32 {
        self.alerts.iter().map(|r| r.when.key_window()).max().unwrap_or(0)
    }
}

/// One control record at an epoch.
#[derive(Clone, Debug)]
pub enum Control {
    Time(EngineTime),
    Defs(Arc<Defs>),
    /// The text of a page some worker admitted for the first time (step patterns match on text).
    Page(Sym, String),
}
