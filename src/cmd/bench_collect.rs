//! `clickflow bench collect`: HTTP requests through the collector into embedded Kafka, from
//! keep-alive loopback clients; and `clickflow bench enrich`: what enrichment costs per event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dataflow::decode::decode;
use dataflow::enrich::{AgentCache, EnrichConfig, Enricher};
use hdrhistogram::Histogram;
use rdkafka::mocking::MockCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Config;

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];

/// Generated events with a user agent each (the generator sends none).
fn with_agents(config: &Config, count: u64) -> Vec<Vec<u8>> {
    super::bench::generated(config, count)
        .into_iter()
        .enumerate()
        .map(|(i, (_, line))| match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&line) {
            Ok(mut event) => {
                event.insert("user_agent".into(), AGENTS[i % AGENTS.len()].into());
                serde_json::to_vec(&event).expect("serialisable")
            }
            Err(_) => line, // the generator's malformed records stay malformed
        })
        .collect()
}

/// Decoding alone against decoding plus every enrichment, one thread.
pub fn enrich(config: &Config, count: u64) -> Result<()> {
    let lines = with_agents(config, count);
    let dir = std::env::temp_dir().join(format!("clickflow-bench-enrich-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let table = dir.join("geo.csv");
    // 5,000 /24 blocks over the generator's address ranges, plus one wide block.
    let mut text = String::from("198.51.0.0/16,US\n");
    for i in 0..5_000u32 {
        text.push_str(&format!("198.51.{}.0/24,C{},R{}\n", i % 256, i % 200, i % 7));
    }
    std::fs::write(&table, text)?;
    let enrich_config: EnrichConfig = toml::from_str(&format!(
        r#"traffic_source = true
user_agent = true
internal_hosts = ["shop.example.com"]
ip_table = {table:?}
[[rules]]
name = "internal"
action = "drop"
when = {{ ip = ["10.0.0.0/8"] }}
[[rules]]
name = "product_pages"
action = "map_page"
pattern = "^/products/(\\d+)$"
replace = "/products/:id"
[[rules]]
name = "signup"
action = "rename_event"
to = "signup"
when = {{ event = "signup_completed" }}
"#
    ))?;
    let enricher =
        Enricher::from_config(&enrich_config).map_err(anyhow::Error::msg)?.context("enrichment configured")?;
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let decoded = lines.iter().filter(|l| decode(l, now).is_ok()).count();
    let plain = started.elapsed();
    let mut agents = AgentCache::default();
    let started = Instant::now();
    let enriched = lines.iter().filter(|l| decode(l, now).and_then(|d| enricher.apply(d, &mut agents)).is_ok()).count();
    let full = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    let per = |d: Duration| d.as_nanos() as f64 / count.max(1) as f64;
    println!("| enrich | records | decode ns/event | decode + enrich ns/event | enrichment ns/event | notes |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| traffic source, user agent (woothee, cached), IP table (5,001 blocks), 3 rules | {count} | {:.0} | {:.0} | {:.0} | {decoded} decoded, {enriched} kept (crawlers are not dropped here) |",
        per(plain),
        per(full),
        per(full) - per(plain)
    );
    Ok(())
}

#[derive(clap::Args, Clone, Copy, PartialEq, Eq)]
pub struct CollectArgs {
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// Requests through the collector into embedded Kafka (acks=all, idempotent), on loopback.
pub fn collect(config: &Config, args: CollectArgs) -> Result<()> {
    let mock = MockCluster::new(1).context("cannot start the embedded Kafka")?;
    mock.create_topic("clicks", 4, 1)?;
    let mut kafka = config.kafka.clone();
    kafka.brokers = mock.bootstrap_servers();
    kafka.topics = vec!["clicks".into()];
    let collector = collector::Collector::new(config.collector.clone(), &kafka, None)?;
    let lines = super::bench::generated(config, (args.batch * 500) as u64);
    let valid: Vec<&[u8]> =
        lines.iter().map(|(_, l)| l.as_slice()).filter(|l| decode(l, i64::MAX / 2).is_ok()).collect();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        valid
            .chunks(args.batch)
            .filter(|c| c.len() == args.batch)
            .map(|chunk| {
                let mut body = b"[".to_vec();
                body.extend(chunk.join(&b","[..]));
                body.push(b']');
                body
            })
            .collect(),
    );
    let runtime = super::tokio_runtime()?;
    let (requests, latency, elapsed) = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = collector::router(collector).into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let clients: Vec<_> = (0..args.clients)
            .map(|c| {
                let bodies = bodies.clone();
                tokio::spawn(async move { client(address, bodies, c, deadline).await })
            })
            .collect();
        let mut latency = Histogram::<u64>::new(3)?;
        let mut requests = 0u64;
        for c in clients {
            let (n, h) = c.await??;
            requests += n;
            latency.add(h)?;
        }
        anyhow::Ok((requests, latency, started.elapsed()))
    })?;
    let s = elapsed.as_secs_f64();
    println!("| collector | clients | events/request | requests/s | events/s | p50 ms | p99 ms | p99.9 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "| POST /v1/collect → embedded Kafka (acks=all, idempotent), loopback | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
        args.clients,
        args.batch,
        requests as f64 / s,
        (requests * args.batch as u64) as f64 / s,
        ms(0.5),
        ms(0.99),
        ms(0.999)
    );
    drop(mock);
    Ok(())
}

/// One keep-alive connection posting until `deadline`; every answer must be 200.
async fn client(
    address: std::net::SocketAddr,
    bodies: Arc<Vec<Vec<u8>>>,
    offset: usize,
    deadline: Instant,
) -> Result<(u64, Histogram<u64>)> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let mut latency = Histogram::<u64>::new(3)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    while Instant::now() < deadline {
        let body = &bodies[(offset + n as usize) % bodies.len()];
        let head = format!(
            "POST /v1/collect HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let sent = Instant::now();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut filled = 0;
        let (header_end, length) = loop {
            let read = stream.read(&mut buffer[filled..]).await?;
            anyhow::ensure!(read > 0, "the collector closed the connection");
            filled += read;
            let text = String::from_utf8_lossy(&buffer[..filled]);
            if let Some(end) = text.find("\r\n\r\n") {
                anyhow::ensure!(
                    text.starts_with("HTTP/1.1 200"),
                    "the collector answered {}",
                    text.lines().next().unwrap_or("")
                );
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>())
                    })
                    .context("no Content-Length")??;
                break (end + 4, length);
            }
        };
        while filled < header_end + length {
            let read = stream.read(&mut buffer[filled..]).await?;
            anyhow::ensure!(read > 0, "the collector closed the connection");
            filled += read;
        }
        latency.record(sent.elapsed().as_micros() as u64)?;
        n += 1;
    }
    Ok((n, latency))
}
