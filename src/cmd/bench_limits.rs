//! `clickflow bench limits`: what a gateway sees asking "is this IP over its limit?" over HTTP
//! (loopback, keep-alive) while the engine ingests at full speed on the same two cores.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::Config;

/// The built-in rate-limit rule the queries ask about.
const RULE: &str = "ip_rate_limit";

pub fn main(config: &Config, count: u64) -> Result<()> {
    let (sources, n) = super::bench::predecoded(config, count);
    let engine = Arc::new(super::engine(config)?);
    if engine.defs.alerts.get(RULE).is_none() {
        bail!("bench limits asks about the built-in rule `{RULE}`; keep views.alerts.builtin = true");
    }
    let (_runtime, address) = serve_on_loopback(&engine)?;
    let done = Arc::new(AtomicBool::new(false));
    let ingest = {
        let (engine, done) = (engine.clone(), done.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let result = engine.run(sources, super::discard_sinks());
            done.store(true, Ordering::Relaxed);
            result.map(|_| started.elapsed())
        })
    };
    // Generated IPs: users' (198.51.x.y) and the bursting bots' (203.0.113.n).
    let keys: Vec<String> = (0..64)
        .map(|i| if i % 8 == 0 { format!("203.0.113.{i}") } else { format!("198.51.{}.{}", i % 4, i) })
        .collect();
    let mut client = Client::connect(&address.to_string())?;
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let (mut queries, mut over) = (0u64, 0u64);
    while !done.load(Ordering::Relaxed) {
        let key = &keys[queries as usize % keys.len()];
        let started = Instant::now();
        let body = client.get(&format!("/api/v1/limits/{RULE}/{key}"))?;
        latencies.record(started.elapsed().as_micros() as u64)?;
        queries += 1;
        over += u64::from(body.contains("\"over\":true"));
    }
    let elapsed = ingest.join().expect("engine thread")?;
    let p = |q: f64| Duration::from_micros(latencies.value_at_quantile(q));
    println!(
        "| rate limit over HTTP while ingesting | {queries} queries | {:.2} | {:.0} | p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}; {over} answers over the limit; ingest {n} events at {:.0}/s |",
        elapsed.as_secs_f64(),
        queries as f64 / elapsed.as_secs_f64(),
        p(0.5),
        p(0.99),
        p(0.999),
        Duration::from_micros(latencies.max()),
        n as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

/// Serves the engine's API on a free loopback port, on a runtime of one thread (kept alive by the
/// caller) so the server does not take a core from the engine.
pub(super) fn serve_on_loopback(engine: &dataflow::Engine) -> Result<(tokio::runtime::Runtime, std::net::SocketAddr)> {
    let state = super::app_state(engine, &super::alerting(engine));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    runtime.spawn(async move { axum::serve(listener, api::app(state)).await });
    Ok((runtime, address))
}

/// A keep-alive HTTP/1.1 client for GETs with a `Content-Length` answer: the least a gateway
/// would put between itself and the answer.
pub(super) struct Client {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Client {
    pub(super) fn connect(address: &str) -> Result<Client> {
        let stream = TcpStream::connect(address).with_context(|| format!("connect {address}"))?;
        stream.set_nodelay(true)?;
        Ok(Client { reader: BufReader::new(stream), host: address.to_string() })
    }

    pub(super) fn get(&mut self, path: &str) -> Result<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.reader.get_mut().write_all(request.as_bytes())?;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the server closed the connection");
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>()?);
                }
            }
        }
        let mut body = vec![0; length.context("an answer without Content-Length")?];
        self.reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}
