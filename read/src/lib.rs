//! The read side: the accumulated rows of every view at one consistent frontier ([`Tables`]),
//! the queries answered from them, the path graph, engine status and the [`ReadModel`] that the
//! API, the bot and alerting read. Fed only by the engine's export path; no timely, no Kafka.

pub mod funnel_query;
pub mod model;
pub mod path_export;
pub mod path_graph;
pub mod path_query;
pub mod query;
pub mod read_model;
pub mod retention_query;
pub mod session_query;
pub mod status;
pub mod tables;

pub use read_model::ReadModel;
pub use status::Status;
pub use tables::Tables;
