//! `[collector]`: the HTTP front door that writes events into Kafka. The optional write key comes
//! from the environment only (`CLICKFLOW_WRITE_KEY`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Serve `POST /v1/collect`.
    pub enabled: bool,
    /// Its own address (e.g. a public one), or none: on the API's listener.
    pub listen: Option<String>,
    /// Topic to write to (none: the first of `kafka.topics`).
    pub topic: Option<String>,
    /// Largest request body, before and after gzip.
    pub max_body_bytes: usize,
    pub max_events_per_request: usize,
    /// Requests per second per client address (0: unlimited), with bursts up to `rate_burst`.
    pub rate_per_second: f64,
    pub rate_burst: f64,
    /// Proxies (CIDR blocks) whose `X-Forwarded-For` is believed; otherwise the connection's
    /// address is the client's.
    pub trusted_proxies: Vec<String>,
    /// Origins browsers may send from (`*`: any).
    pub cors_origins: Vec<String>,
    /// Kafka must acknowledge a request's events within this, or the request gets 503.
    pub ack_timeout_ms: u64,
    /// Events waiting for Kafka's acknowledgement at once; beyond it requests get 503 at once
    /// instead of queueing without bound.
    pub max_in_flight: usize,
    /// `Retry-After` on 503 and 429.
    pub retry_after_seconds: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            enabled: true,
            listen: None,
            topic: None,
            max_body_bytes: 1 << 20,
            max_events_per_request: 500,
            rate_per_second: 0.0,
            rate_burst: 20.0,
            trusted_proxies: Vec::new(),
            cors_origins: vec!["*".into()],
            ack_timeout_ms: 5_000,
            max_in_flight: 100_000,
            retry_after_seconds: 1,
        }
    }
}

impl CollectorConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_body_bytes == 0 || self.max_events_per_request == 0 || self.max_in_flight == 0 {
            return Err("[collector] max_body_bytes, max_events_per_request and max_in_flight must be positive".into());
        }
        if self.max_events_per_request > self.max_in_flight {
            return Err("[collector] max_events_per_request must not exceed max_in_flight".into());
        }
        if self.ack_timeout_ms < 100 {
            return Err("[collector] ack_timeout_ms below 100 ms would refuse healthy writes".into());
        }
        if self.rate_per_second < 0.0 || (self.rate_per_second > 0.0 && self.rate_burst < 1.0) {
            return Err("[collector] rate_per_second must be ≥ 0 and rate_burst ≥ 1".into());
        }
        Ok(())
    }
}
