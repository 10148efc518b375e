//! clickflow's schema: the event, symbols, cells, event-time helpers, and the definitions that
//! configure the views (sessions, funnels, retention, path rules, alert rules) with their
//! validation and registries. No timely, no Kafka, no HTTP: the views, the engine, the read side,
//! the API and the bot all build on it.

pub mod alert_rules;
pub mod cells;
pub mod config;
pub mod event;
pub mod funnels;
pub mod ids;
pub mod paths;
pub mod registry;
pub mod retention;
pub mod sessions;
pub mod time;

pub use cells::{Cell, Dim};
pub use config::ViewConfig;
pub use event::{Event, Sym, UserId};
pub use time::{Hour, Minute};

/// Timely timestamps are ingestion epochs.
pub type Epoch = u64;
