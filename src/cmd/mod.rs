//! The commands, and what they share: tracing, the HTTP server, progress, engine wiring.

pub mod bench;
mod bench_alerts;
mod bench_collect;
mod bench_incremental;
mod bench_limits;
mod bench_paths;
pub mod demo;
pub mod generate;
pub mod replay;
pub mod run;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use dataflow::deadletter::{DeadLetterSink, Discard, FileSink, KafkaSink};
use dataflow::{Engine, KafkaConfig, SinkFactory};

pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CLICKFLOW_LOG").unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// What is served next to the API: the Slack bot and the event collector, when enabled.
#[derive(Default)]
pub struct Extras {
    pub bot: Option<Arc<bot::Bot>>,
    pub collector: Option<Arc<collector::Collector>>,
}

/// Serves the API (with the bot's endpoints and delivery, and the collector on the same or its own
/// listener) until `stop` is set.
pub async fn serve(
    api: &api::ApiConfig,
    mut engine_state: api::AppState,
    extras: Extras,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let listen = &api.listen;
    engine_state.tokens = Arc::new(api::auth::Tokens::from_env());
    api.check_exposure(&engine_state.tokens).map_err(anyhow::Error::msg)?;
    if engine_state.tokens.enabled() {
        tracing::info!("the API asks for a token (read or admin) on every endpoint but /healthz and /readyz");
    } else if api::is_loopback(listen) {
        tracing::info!(
            "no API token set ({} / {}): the API is open, so it is served on loopback only",
            api::auth::READ_TOKEN_ENV,
            api::auth::ADMIN_TOKEN_ENV
        );
    } else {
        tracing::warn!(address = %listen, "no API token set: the API is open to the network (api.trusted_network)");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; is another process using it? pick one with --listen"))?;
    tracing::info!(address = %listener.local_addr()?, max_connections = api.server.connections(), "API listening");
    let counters = Arc::new(api::server::ServerCounters::default());
    {
        let counters = counters.clone();
        engine_state.extra_metrics.push(Arc::new(move |out: &mut String| {
            out.push_str("# HELP clickflow_http_connections_open Connections being served.\n# TYPE clickflow_http_connections_open gauge\n# HELP clickflow_http_accept_errors_total Connections that could not be accepted (out of file descriptors, most often).\n# TYPE clickflow_http_accept_errors_total counter\n");
            counters.write_metrics("api", out)
        }));
    }
    if let Some(bot) = &extras.bot {
        let bot = bot.clone();
        engine_state.extra_metrics.push(Arc::new(move |out: &mut String| bot.write_metrics(out)));
    }
    if let Some(collector) = &extras.collector {
        let collector = collector.clone();
        engine_state.extra_metrics.push(Arc::new(move |out: &mut String| collector.write_metrics(out)));
    }
    let mut app = api::app(engine_state);
    if let Some(bot) = &extras.bot {
        bot.start()?;
        app = app.merge(bot::router(bot.clone()));
    }
    let stopped = {
        let stop = stop.clone();
        move || {
            let stop = stop.clone();
            async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    };
    if let Some(collector) = &extras.collector {
        let routes = collector::router(collector.clone());
        match collector.config().listen.clone() {
            None => app = app.merge(routes),
            Some(own) => {
                let own_listener = tokio::net::TcpListener::bind(&own)
                    .await
                    .with_context(|| format!("cannot listen on {own} (collector.listen)"))?;
                tracing::info!(address = %own_listener.local_addr()?, "collector listening");
                let (limits, shutdown) = (api.server.clone(), stopped());
                let counters = Arc::new(api::server::ServerCounters::default());
                tokio::spawn(
                    async move { api::server::serve(own_listener, routes, &limits, counters, shutdown).await },
                );
            }
        }
    }
    let served = api::server::serve(listener, app, &api.server, counters, stopped()).await;
    if let Some(bot) = extras.bot {
        bot.stop();
    }
    Ok(served?)
}

/// The collector writing into `config.kafka` (none when `[collector] enabled = false`).
pub fn event_collector(config: &crate::config::Config, engine: &Engine) -> Result<Option<Arc<collector::Collector>>> {
    if !config.collector.enabled {
        return Ok(None);
    }
    let key = std::env::var("CLICKFLOW_WRITE_KEY").ok();
    let collector = collector::Collector::new(config.collector.clone(), &config.kafka, key)?;
    let read_model = engine.read_model.clone();
    collector.count_from(move || read_model.clock().as_of_ms);
    Ok(Some(collector))
}

/// The Slack bot over the engine's read model (none when `[bot] enabled = false`). Without
/// `SLACK_BOT_TOKEN` it runs dry: `/api/v1/bot/outbox` shows what it would post.
pub fn slack_bot(
    config: &crate::config::Config,
    engine: &Engine,
    alerts: &Arc<alerting::Alerting>,
) -> Result<Option<Arc<bot::Bot>>> {
    if !config.bot.enabled {
        return Ok(None);
    }
    let state = config.engine.state_dir.as_ref().map(|d| d.join("slack.json"));
    let bot =
        bot::Bot::new(config.bot.clone(), bot::Secrets::from_env(), engine.read_model.clone(), alerts.clone(), state)?;
    if bot.is_dry_run() {
        tracing::info!("SLACK_BOT_TOKEN is not set: the Slack bot runs dry; see /api/v1/bot/outbox");
    }
    Ok(Some(bot))
}

/// The engine for `config`, with `[enrich]` applied to every event (and its IP table watched).
pub fn engine(config: &crate::config::Config) -> Result<Engine> {
    let mut engine = Engine::new(config.engine.clone(), config.views.clone())?;
    engine.enrich = dataflow::Enricher::from_config(&config.enrich).map_err(anyhow::Error::msg)?;
    if let Some(enricher) = &engine.enrich {
        enricher.watch();
    }
    Ok(engine)
}

/// Alerting over the engine's read model: its rules are judged on every publish.
pub fn alerting(engine: &Engine) -> Arc<alerting::Alerting> {
    alerting::Alerting::new(engine.read_model.clone(), &engine.defs)
}

pub fn app_state(engine: &Engine, alerts: &Arc<alerting::Alerting>) -> api::AppState {
    api::AppState::new(engine.read_model.clone(), alerts.clone(), engine.status.clone())
}

/// Sets `stop` on Ctrl-C / SIGTERM.
pub fn stop_on_signal(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("signal runtime");
        rt.block_on(async {
            let ctrl_c = tokio::signal::ctrl_c();
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            #[cfg(not(unix))]
            let _ = ctrl_c.await;
        });
        tracing::info!("stopping: draining the dataflow");
        stop.store(true, Ordering::Relaxed);
    });
}

pub fn file_sinks(path: &Path) -> Result<SinkFactory> {
    let sink =
        FileSink::create(path).with_context(|| format!("cannot open the dead-letter file {}", path.display()))?;
    Ok(Arc::new(move |_| Box::new(sink.clone()) as Box<dyn DeadLetterSink>))
}

pub fn kafka_sinks(kafka: &KafkaConfig) -> Result<SinkFactory> {
    if kafka.dead_letter_topic.is_empty() {
        return Ok(Arc::new(|_| Box::new(Discard) as Box<dyn DeadLetterSink>));
    }
    let sink = KafkaSink::new(dataflow::kafka::producer(kafka)?, &kafka.dead_letter_topic);
    Ok(Arc::new(move |_| Box::new(sink.clone()) as Box<dyn DeadLetterSink>))
}

pub fn discard_sinks() -> SinkFactory {
    Arc::new(|_| Box::new(Discard) as Box<dyn DeadLetterSink>)
}

pub fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// Funnels over the generator's shop, for the demo and the benchmarks when the config has none.
pub fn shop_funnels() -> Vec<schema::funnels::FunnelDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "checkout", "breakdown": "utm_source",
         "steps": [{"event": "page_view", "page_prefix": "/products/"}, {"event": "add_to_cart"},
                   {"event": "page_view", "page": "/checkout"}, {"event": "purchase"}]},
        {"name": "search_to_product", "order": "strict", "over": "sessions", "window_minutes": 30, "breakdown": "device",
         "steps": [{"event": "page_view", "page": "/search"}, {"event": "page_view", "page_regex": "^/products/\\d+$"}]},
        {"name": "cart_any_order", "order": "unordered", "window_minutes": 60,
         "steps": [{"event": "add_to_cart"}, {"event": "click"}, {"event": "purchase"}],
         "exclusions": [{"event": "page_view", "page": "/"}]}
    ]))
    .expect("valid shop funnels")
}

/// Retention of the generated shop: returning visitors by device, and weekly repeat buyers.
pub fn shop_retention() -> Vec<schema::retention::RetentionDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "returning_visitors", "breakdown": "device",
         "start": {"event": "page_view"}, "return": {"event": "page_view"}},
        {"name": "repeat_buyers", "period": "week", "cohort": "recurring", "mode": "on_or_after", "periods": 4,
         "start": {"event": "purchase"}, "return": {"event": "purchase"}}
    ]))
    .expect("valid shop retention")
}

/// The shop's pages by template (product and category ids collapse into one node each).
pub fn shop_paths() -> schema::paths::PathConfig {
    serde_json::from_value(serde_json::json!({
        "rules": [{"pattern": "^/products/\\d+", "name": "/products/:id"},
                  {"pattern": "^/category/[^/]+", "name": "/category/:name"}],
        "conversion_events": ["purchase"]
    }))
    .expect("valid shop paths")
}

/// Alert rules that need the shop's funnels: checkout conversion falling (payment failures).
pub fn shop_alerts() -> Vec<schema::alert_rules::AlertRuleDef> {
    serde_json::from_value(serde_json::json!([
        {"name": "checkout_conversion_drop", "severity": "critical", "labels": {"team": "payments"},
         "when": {"kind": "funnel_drop", "funnel": "checkout", "window_minutes": 30, "drop": 0.5,
                  "baseline_minutes": 360, "min_entries": 30.0}}
    ]))
    .expect("valid shop alerts")
}

/// The shop's analyses where the config defines none: funnels, retention, path cleaning, and
/// the alert rules on them.
pub fn shop_defaults(views: &mut schema::ViewConfig) {
    if views.funnels.is_empty() && views.alerts.rules.is_empty() {
        views.alerts.rules = shop_alerts();
    }
    if views.funnels.is_empty() {
        views.funnels = shop_funnels();
    }
    if views.retention.is_empty() {
        views.retention = shop_retention();
    }
    if views.paths.rules.is_empty() {
        views.paths = shop_paths();
    }
}
