//! `hxlog migrate`: create or update the Postgres schema now.

use std::process::ExitCode;

use anyhow::bail;

use crate::config::{Config, Secrets};
use crate::sinks::postgres::{PgSettings, migrate_now};

/// Creates or updates the Postgres schema.
pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let secrets = Secrets::load(config.secrets.as_deref())?;
    let Some(settings) = PgSettings::from_config(config, &secrets) else {
        bail!(
            "no Postgres configured: set PG_DB_HOST, PG_DB_NAME and PG_DB_USER in {}",
            config.secrets_file()
        );
    };
    let settings = settings?;
    let applied = migrate_now(&settings).await?;
    if applied.is_empty() {
        println!("schema of {} is up to date", settings.describe());
    } else {
        println!("applied {} to {}", applied.join(", "), settings.describe());
    }
    Ok(ExitCode::SUCCESS)
}
