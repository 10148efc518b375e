//! Synthetic traffic for the demo, the benchmarks and the tests: a shop's sessions with late,
//! duplicated and malformed records, a daily cycle and planted incidents (labelled, for scoring
//! alert rules). Outside the engine: it only writes event JSON.

pub mod generator;
pub mod incidents;

pub use generator::{Generated, Generator, GeneratorConfig};
pub use incidents::{Incident, IncidentConfig, IncidentKind};
