//! The generator as an in-engine source: each worker generates its own stream (seed + worker),
//! either as fast as it can (benchmarks) or paced to the wall clock with `ts = now` (freshness).

use std::time::Instant;

use read::status::PartitionProgress;
use read::Status;

use super::{now_ms, worker_clock, InputClock, PartClock, Poll, Source, SourceError};
use crate::clock::PartitionClock;
use crate::deadletter::Coords;
use crate::decode::decode;
use crate::ingest::Ingest;
use generator::{Generated, Generator, GeneratorConfig};

pub struct SyntheticSource {
    worker: u32,
    generator: Generator,
    next: Option<Generated>,
    clock: PartitionClock,
    limit: u64,
    produced: u64,
    paced: bool,
}

impl SyntheticSource {
    /// `limit` records in total for this worker; `paced` releases records at their delivery time.
    pub fn new(mut config: GeneratorConfig, worker: u32, start_ms: i64, limit: u64, paced: bool) -> SyntheticSource {
        config.seed = config.seed.wrapping_add(worker as u64);
        SyntheticSource {
            worker,
            generator: Generator::new(config, start_ms),
            next: None,
            clock: PartitionClock::default(),
            limit,
            produced: 0,
            paced,
        }
    }

    fn done(&self) -> bool {
        self.produced >= self.limit
    }
}

impl Source for SyntheticSource {
    fn poll(&mut self, ingest: &mut Ingest, deadline: Instant) -> Result<Poll, SourceError> {
        let mut now = now_ms();
        let mut n = 0u32;
        while !self.done() {
            let record = match self.next.take() {
                Some(r) => r,
                None => self.generator.next().expect("the generator is endless"),
            };
            if self.paced && record.deliver_ms > now {
                self.next = Some(record);
                return Ok(Poll::Idle);
            }
            let coords = Coords::Generator { worker: self.worker, seq: self.produced };
            let ord = views::admitted::ord(self.worker, self.produced);
            ingest.offer(&mut self.clock, decode(&record.line, now), &coords, &record.line, now, ord);
            self.produced += 1;
            n += 1;
            if n.is_multiple_of(1024) {
                now = now_ms();
                if Instant::now() >= deadline || ingest.full() {
                    return Ok(Poll::Busy);
                }
            }
        }
        Ok(Poll::Done)
    }

    fn clock(&self, lateness_ms: i64, as_of: Option<i64>) -> InputClock {
        let done = self.done();
        worker_clock(std::iter::once(PartClock { clock: &self.clock, idle: done, finished: done }), lateness_ms, as_of)
    }

    fn report(&self, status: &Status) {
        let name = format!("synthetic/{}", self.worker);
        status.set_partition(name, PartitionProgress { position: self.produced as i64, ..Default::default() });
    }
}
