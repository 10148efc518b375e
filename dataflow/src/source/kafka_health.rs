//! Whether a Kafka partition is caught up, behind, stalled or unreachable, judged from the
//! broker's answers rather than from silence. A quiet partition is idle (it stops holding back
//! `as_of`) only when the broker said, recently, that there is nothing more to read: silence
//! during an outage or a stuck fetch is not "caught up", and treating it so once made a catch-up
//! reject a tenth of its backlog as too late when the broker returned.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The broker's last answer about one partition's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndAnswer {
    /// Offset one past the last record.
    pub high: i64,
    pub at: Instant,
}

/// A thread asking the broker for the end offsets of a set of partitions, on its own client so a
/// slow answer never blocks a worker. Stops when dropped.
pub struct EndOffsets {
    answers: Arc<Mutex<BTreeMap<(String, i32), EndAnswer>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// How long one end-offset question may take before it counts as unanswered.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

impl EndOffsets {
    pub fn start(client: BaseConsumer, partitions: Vec<(String, i32)>, every: Duration) -> EndOffsets {
        let answers = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!partitions.is_empty()).then(|| {
            let (answers, stop) = (answers.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafka-ends".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let round = Instant::now();
                        for (topic, partition) in &partitions {
                            if let Ok((_, high)) = client.fetch_watermarks(topic, *partition, ASK_TIMEOUT) {
                                let answer = EndAnswer { high, at: Instant::now() };
                                answers.lock().insert((topic.clone(), *partition), answer);
                            }
                        }
                        let rest = every.saturating_sub(round.elapsed());
                        // Sleep in small steps so a drop does not wait a whole round.
                        let until = Instant::now() + rest;
                        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_millis(20).min(rest));
                        }
                    }
                })
                .expect("a thread can be started")
        });
        EndOffsets { answers, stop, thread }
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<EndAnswer> {
        self.answers.lock().get(&(topic.to_string(), partition)).copied()
    }
}

impl Drop for EndOffsets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Not joined: a question to a dead broker can take ASK_TIMEOUT; the thread ends after it.
        drop(self.thread.take());
    }
}

/// What the engine knows about one partition at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Observation {
    /// Since the last record was read (or since reading started).
    pub quiet_for: Duration,
    /// Since the broker last answered about this partition's end; `None`: never.
    pub answered_ago: Option<Duration>,
    /// The end offset known from the broker's answers and fetch responses.
    pub end: Option<i64>,
    pub position: i64,
    /// Since this partition's reading started.
    pub reading_for: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Records are arriving, or the partition is quiet for less than the idle time.
    Reading,
    /// Caught up (the broker said so within the idle time) and quiet: does not hold back `as_of`.
    Idle,
    /// Records wait (`lag`) but none arrived for the stall time although the broker answers.
    Stalled { lag: i64, quiet_s: u64 },
    /// The broker has not answered for the stall time.
    Unreachable { silent_s: u64 },
}

impl Health {
    /// A problem worth falling out of readiness for, in words an operator can act on.
    pub fn problem(&self, partition: &str) -> Option<String> {
        match self {
            Health::Reading | Health::Idle => None,
            Health::Stalled { lag, quiet_s } => Some(format!(
                "{partition}: {lag} records wait but nothing was read for {quiet_s} s; the consumer is being \
                 restarted (check the broker's logs and load)"
            )),
            Health::Unreachable { silent_s } => Some(format!(
                "{partition}: the broker has not answered for {silent_s} s; check that it runs and is reachable \
                 (kafka.brokers); nothing is lost, reading resumes when it answers"
            )),
        }
    }
}

pub fn judge(o: &Observation, idle_after: Duration, stall_after: Duration) -> Health {
    let answered_within = |d: Duration| o.answered_ago.is_some_and(|a| a <= d);
    if !answered_within(stall_after) && o.reading_for >= stall_after {
        let silent = o.answered_ago.unwrap_or(o.reading_for);
        return Health::Unreachable { silent_s: silent.as_secs() };
    }
    let lag = o.end.map_or(0, |end| (end - o.position).max(0));
    if lag > 0 && o.quiet_for >= stall_after && answered_within(stall_after) {
        return Health::Stalled { lag, quiet_s: o.quiet_for.as_secs() };
    }
    if lag == 0 && o.end.is_some() && o.quiet_for >= idle_after && answered_within(idle_after) {
        return Health::Idle;
    }
    Health::Reading
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(5);
    const STALL: Duration = Duration::from_secs(20);

    fn seen(quiet: u64, answered: Option<u64>, end: i64, position: i64) -> Observation {
        Observation {
            quiet_for: Duration::from_secs(quiet),
            answered_ago: answered.map(Duration::from_secs),
            end: Some(end),
            position,
            reading_for: Duration::from_secs(600),
        }
    }

    #[test]
    fn quiet_is_idle_only_when_the_broker_recently_said_there_is_nothing_more() {
        assert_eq!(judge(&seen(6, Some(1), 100, 100), IDLE, STALL), Health::Idle);
        assert_eq!(judge(&seen(4, Some(1), 100, 100), IDLE, STALL), Health::Reading, "not quiet long enough");
        assert_eq!(judge(&seen(6, Some(1), 150, 100), IDLE, STALL), Health::Reading, "behind: not idle");
        assert_eq!(judge(&seen(6, Some(8), 100, 100), IDLE, STALL), Health::Reading, "the answer is too old");
        let unknown = Observation { end: None, answered_ago: None, ..seen(6, None, 0, 0) };
        assert_eq!(judge(&Observation { reading_for: IDLE, ..unknown }, IDLE, STALL), Health::Reading);
    }

    #[test]
    fn lag_without_progress_is_a_stall_and_silence_is_unreachable() {
        assert_eq!(judge(&seen(25, Some(1), 150, 100), IDLE, STALL), Health::Stalled { lag: 50, quiet_s: 25 });
        assert_eq!(judge(&seen(25, Some(21), 150, 100), IDLE, STALL), Health::Unreachable { silent_s: 21 });
        assert_eq!(judge(&seen(25, Some(21), 100, 100), IDLE, STALL), Health::Unreachable { silent_s: 21 });
        let never = Observation { answered_ago: None, reading_for: Duration::from_secs(30), ..seen(25, None, 0, 0) };
        assert_eq!(judge(&never, IDLE, STALL), Health::Unreachable { silent_s: 30 });
        let starting = Observation { reading_for: Duration::from_secs(3), ..never };
        assert_eq!(judge(&starting, IDLE, STALL), Health::Reading, "a fresh start is given the stall time");
    }
}
