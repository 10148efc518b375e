//! Decoding, sources (Kafka, file replay, synthetic traffic), the timely runtime and the export
//! of view updates into the read model.

pub mod clock;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod enrich;
pub mod export;

pub mod ingest;
pub mod kafka;
pub mod keyed;
pub mod reject;
pub mod runtime;
pub mod snapshot;
pub mod source;

pub use config::{EngineConfig, KafkaConfig};
pub use enrich::{EnrichConfig, Enricher};

pub use runtime::{Engine, EngineError, RunReport, SinkFactory, SourceFactory};
