//! The dataflow runtime: decoding, enrichment, sources (Kafka, file replay, synthetic traffic),
//! admission (watermarks, lateness, duplicates), the engine's clock, epochs, probes, snapshots and
//! offsets, and the export of the views' cells into the read model.

pub mod clock;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod enrich;
pub mod export;
pub mod graph;

pub mod ingest;
pub mod kafka;
pub mod reject;
pub mod runtime;
pub mod snapshot;
pub mod source;
pub mod timekeeper;

pub use config::{EngineConfig, KafkaConfig};
pub use enrich::{EnrichConfig, Enricher};

pub use runtime::{Engine, EngineError, RunReport, SinkFactory, SourceFactory};
