//! clickflow's event schema, its views as differential functions, and the live read model.
//! No Kafka, no HTTP here.

pub mod alert_engine;
pub mod alert_rules;
pub mod alert_series;
pub mod alert_verdict;
pub mod cohorts;
pub mod config;
pub mod detectors;
pub mod event;
pub mod facts;
pub mod funnel_query;
pub mod funnels;
pub mod ids;
pub mod limits;
pub mod model;
pub mod path_export;
pub mod path_graph;
pub mod path_query;
pub mod paths;
pub mod query;
pub mod read_model;
pub mod registry;
pub mod retention;
pub mod retention_query;
pub mod session_cells;
pub mod session_query;
pub mod sessions;
pub mod status;
pub mod tables;
pub mod traffic;
pub mod userlog;

pub use config::ViewConfig;
pub use event::{Event, Minute, Sym, UserId};
pub use facts::{Dim, Fact, Row};
pub use read_model::ReadModel;
pub use status::Status;
pub use traffic::{all_views, Epoch};
