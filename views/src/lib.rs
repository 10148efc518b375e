//! The views: one folder per view, each its state machines and the dataflow operators that run
//! them (traffic counts, sessions, funnels, paths, retention), over the schema's events and cells.
//! No Kafka, no HTTP, no read model here.

pub mod compiled;
pub mod funnels;
pub mod paths;
pub mod retention;
pub mod sessions;
pub mod traffic;
pub mod userlog;

pub use traffic::all_views;
