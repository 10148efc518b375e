use anyhow::Result;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub fn main(_config: Config, _args: Args) -> Result<()> {
    anyhow::bail!("not yet")
}
