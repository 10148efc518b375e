//! The Kafka end-to-end flow of `kafka_e2e.rs`, against tansu: an independent Kafka-compatible
//! broker written by others, started as a separate process. Bytes are produced to it, `clickflow run`
//! consumes them, the HTTP answers must equal the reference, and the rejects must reach the
//! dead-letter topic with their coordinates.
//!
//! tansu is installed by `scripts/install-tansu` into `.tools/tansu/tansu` (or named by the
//! `CLICKFLOW_TANSU` environment variable); without it the test says so and passes.

mod common;

use std::time::Instant;

use common::e2e::kafka_to_http_equals_the_reference;
use common::kafka::PARTITIONS;
use common::tansu::{tansu_binary, Tansu};

#[test]
fn tansu_to_http_equals_the_reference_and_rejects_are_kept_with_coordinates() {
    let Some(binary) = tansu_binary() else {
        eprintln!(
            "skipping: tansu not installed; run scripts/install-tansu (or set CLICKFLOW_TANSU to a tansu binary)"
        );
        return;
    };
    let began = Instant::now();
    let tansu = Tansu::start(binary);
    tansu.create_topic("clicks", PARTITIONS);
    tansu.create_topic("clicks-dlq", 1);
    let brokers = tansu.brokers.clone();
    eprintln!("tansu listening on {} after {:?}", tansu.url, began.elapsed());

    kafka_to_http_equals_the_reference(&brokers);
    eprintln!("tansu end-to-end passed in {:?}", began.elapsed());
}
