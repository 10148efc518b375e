//! clickflow: real-time clickstream analytics in one binary.

mod cmd;
mod config;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "clickflow",
    version,
    about = "Real-time clickstream analytics: Kafka in, live views out, within a second."
)]
struct Cli {
    /// Configuration file (TOML); environment variables CLICKFLOW__SECTION__KEY override it.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Timely worker threads (overrides engine.workers).
    #[arg(long, short, global = true)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything on one machine: embedded Kafka, synthetic traffic, the engine and the API.
    Demo(cmd::demo::Args),
    /// Consume from a real Kafka and serve the API.
    Run(cmd::run::Args),
    /// Run the views over an NDJSON file (plain or gzip) as fast as possible.
    Replay(cmd::replay::Args),
    /// Write synthetic traffic to a file or a Kafka topic.
    Generate(cmd::generate::Args),
    /// Measure throughput and freshness end to end.
    Bench(cmd::bench::Args),
    /// Print the effective configuration (defaults, file and environment merged).
    Config,
}

fn main() -> Result<()> {
    cmd::init_tracing();
    let cli = Cli::parse();
    let mut config = config::load(cli.config.as_deref())?;
    if let Some(w) = cli.workers {
        config.engine.workers = w;
        config.engine.validate().map_err(anyhow::Error::msg)?;
    }
    match cli.command {
        Command::Demo(args) => cmd::demo::main(config, args),
        Command::Run(args) => cmd::run::main(config, args),
        Command::Replay(args) => cmd::replay::main(config, args),
        Command::Generate(args) => cmd::generate::main(config, args),
        Command::Bench(args) => cmd::bench::main(config, args),
        Command::Config => {
            print!("{}", toml::to_string_pretty(&config)?);
            Ok(())
        }
    }
}
