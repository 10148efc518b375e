//! Per-stage costs: decoding, admission, ingestion, and read-model queries on a realistic state.
//! End-to-end rates come from `clickflow bench` (see BENCHMARKS.md).

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use dataflow::clock::PartitionClock;
use dataflow::deadletter::Discard;
use dataflow::decode::decode;
use dataflow::ingest::Ingest;
use generator::{Generator, GeneratorConfig};
use std::sync::Arc;

use read::query::TimeseriesQuery;
use read::ReadModel;
use schema::funnels::FunnelDef;
use schema::registry::Definitions;
use schema::sessions::SessionConfig;
use schema::{Cell, ViewConfig};
use views::funnels::{Funnel, FunnelCell};
use views::sessions::{Hit, Sessionizer};
use views::userlog::{LogEvent, LogSink, UserLogs};

const START: i64 = 1_795_132_800_000;
const N: usize = 100_000;

fn lines() -> Vec<Vec<u8>> {
    let config = GeneratorConfig { rate: 20_000.0, ..GeneratorConfig::default() };
    Generator::new(config, START).take(N).map(|g| g.line).collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn stages(c: &mut Criterion) {
    let lines = lines();
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("decode", |b| {
        let now = now();
        b.iter(|| lines.iter().filter(|l| decode(black_box(l), now).is_ok()).count())
    });
    let decoded: Vec<_> = lines.iter().filter_map(|l| decode(l, now()).ok()).collect();
    group.bench_function("admit (watermark + de-duplication)", |b| {
        b.iter_batched(
            PartitionClock::default,
            |mut clock| decoded.iter().filter(|d| clock.admit(d.event.ts, d.event_id, 300_000, now()).is_ok()).count(),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("ingest add (epoch consolidation)", |b| {
        b.iter_batched(
            || Ingest::new(&ViewConfig::default(), 300_000, Box::new(Discard)),
            |mut ingest| {
                for (i, d) in decoded.iter().enumerate() {
                    ingest.add(d, i as u64);
                    if ingest.full() {
                        ingest.admitted.clear();
                    }
                }
                ingest
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("generator");
    group.throughput(Throughput::Elements(N as u64));
    // One generator across iterations: its 10-minute warm-up is paid once, not measured.
    let mut generator = Generator::new(GeneratorConfig::default(), START);
    group.bench_function("records", |b| b.iter(|| generator.by_ref().take(N).count()));
    group.finish();
}

/// A read model holding a day of per-minute counts for 500 pages and an hour of user-minutes.
fn populated() -> std::sync::Arc<ReadModel> {
    let model = ReadModel::new(ViewConfig::default(), &Definitions::new(&ViewConfig::default()).unwrap());
    let first = (START / 60_000) as u32;
    let mut rows: Vec<(Cell, i64)> = Vec::new();
    for p in 0..500u64 {
        let key = schema::event::sym(&format!("/products/{p}"));
        rows.push((Cell::Name { sym: key, text: format!("/products/{p}") }, 1));
        for m in 0..1440 {
            rows.push((
                Cell::Count { dim: schema::Dim::PageView, key, minute: first + m },
                ((p * 7 + m as u64) % 50) as i64,
            ));
        }
    }
    for m in 1380..1440 {
        for u in 0..2000u64 {
            rows.push((Cell::UserMinute { minute: first + m, user: u * 31 + m as u64 }, 1));
        }
    }
    let head = START + 1439 * 60_000;
    rows.push((Cell::Clock { head: Some(head), as_of: Some(head - 300_000), ready: true }, 1));
    model.publish(1, rows);
    model
}

fn queries(c: &mut Criterion) {
    let model = populated();
    let mut group = c.benchmark_group("read_model");
    group.bench_function("live (500 pages x 1 day, 2k users/min)", |b| b.iter(|| model.live()));
    let q = TimeseriesQuery { metric: Some("page_views".into()), breakdown: Some("page".into()), ..Default::default() };
    group.bench_function("timeseries page_views by page, 1 h", |b| b.iter(|| model.timeseries(&q).unwrap()));
    let q = TimeseriesQuery { metric: Some("active_users".into()), ..Default::default() };
    group.bench_function("timeseries active_users, 1 h", |b| b.iter(|| model.timeseries(&q).unwrap()));
    group.finish();
}

/// A bot's session and funnel state after `history` events (one every 100 ms, one long run).
fn bot_after(history: i64) -> (Sessionizer, UserLogs, Vec<Arc<Funnel>>) {
    let config = SessionConfig::default();
    let funnels: Vec<Arc<Funnel>> = bot_funnels().into_iter().map(|d| Arc::new(Funnel::new(d).unwrap())).collect();
    let (mut sessions, mut logs) = (Sessionizer::default(), UserLogs::default());
    logs.note_page(schema::event::sym("/products/1"), "/products/1");
    let mut sink = Vec::new();
    for i in 0..history {
        let ts = START + i * 100;
        sessions.add((7, false), bot_hit(ts), &config, 360_000);
        let ev = bot_event(ts);
        let masks: Vec<u32> = funnels.iter().map(|f| f.step_mask(&ev, logs.pages())).collect();
        logs.add(7, "bot", ev, 1000, &funnels, &masks);
        if i % 10_000 == 0 {
            sessions.drain(&mut sink);
            sessions.prune(ts - 300_000, &config);
            sink.clear();
        }
    }
    sessions.drain(&mut sink);
    (sessions, logs, funnels)
}

fn bot_hit(ts: i64) -> Hit {
    Hit { ts, ord: ts as u64, page: 11, page_view: true, source: [1, 2, 3] }
}

fn bot_event(ts: i64) -> LogEvent {
    LogEvent {
        ts,
        ord: ts as u64,
        name: schema::event::PAGE_VIEW,
        page: schema::event::sym("/products/1"),
        source: [1, 2, 3],
        props: None,
        node: schema::event::sym("/products/:id"),
    }
}

fn bot_funnels() -> Vec<FunnelDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "checkout", "steps": [{"event": "page_view", "page_prefix": "/products/"}, {"event": "add_to_cart"}, {"event": "purchase"}]}
    ]))
    .unwrap()
}

/// One user with a long history: the cost of its next 1,000 events (5% late by up to a minute),
/// drained every 100 events as epochs would, must not grow with the history.
fn bot(c: &mut Criterion) {
    let mut group = c.benchmark_group("bot_user_next_1000_events");
    group.throughput(Throughput::Elements(1000));
    let config = SessionConfig::default();
    for history in [1_000i64, 100_000, 1_000_000] {
        let (sessions, logs, funnels) = bot_after(history);
        group.bench_function(format!("after {history} events"), |b| {
            b.iter_batched(
                || (sessions.clone(), logs.clone()),
                |(mut sessions, mut logs)| {
                    let mut cells = Vec::new();
                    let mut out = Sink(0);
                    for i in 0..1000 {
                        let late = if i % 20 == 0 { 60_000 } else { 0 };
                        let ts = START + (history + i) * 100 - late;
                        sessions.add((7, false), bot_hit(ts), &config, 360_000);
                        let ev = bot_event(ts);
                        let masks: Vec<u32> = funnels.iter().map(|f| f.step_mask(&ev, logs.pages())).collect();
                        logs.add(7, "bot", ev, 1000, &funnels, &masks);
                        if i % 100 == 99 {
                            sessions.drain(&mut cells);
                            logs.drain(&funnels, &config, &mut out);
                        }
                    }
                    (cells.len(), out.0)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

struct Sink(usize);

impl LogSink for Sink {
    fn cell(&mut self, _: FunnelCell) {
        self.0 += 1;
    }
    fn open_attempt(&mut self, _: u32, _: u8, _: i64, _: &str, _: i64) {
        self.0 += 1;
    }
    fn edge(&mut self, _: u64, _: u64, _: i64) {
        self.0 += 1;
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = stages, queries, bot
}
criterion_main!(benches);
