//! Schema migrations: the files of `schemas/clickhouse/`, compiled in, applied in
//! version order at start and recorded in `schema_migrations`. Every statement
//! is idempotent (`IF NOT EXISTS`), so a migration interrupted between its DDL
//! and its record is simply applied again.

use clickhouse::Client;
use tracing::info;

use super::config::ClickHouseConfig;
use crate::error::{Error, Result};

/// One versioned schema file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version (the file's number).
    pub version: u32,
    /// File name in `schemas/clickhouse/`.
    pub name: &'static str,
    /// The SQL, statements separated by `;`.
    pub sql: &'static str,
}

/// Every migration, in order. A test checks this lists every file of the folder.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_usage_events.sql",
        sql: include_str!("../../../../../schemas/clickhouse/0001_usage_events.sql"),
    },
    Migration {
        version: 2,
        name: "0002_rollups.sql",
        sql: include_str!("../../../../../schemas/clickhouse/0002_rollups.sql"),
    },
    Migration {
        version: 3,
        name: "0003_rollups_per_insert.sql",
        sql: include_str!("../../../../../schemas/clickhouse/0003_rollups_per_insert.sql"),
    },
    Migration {
        version: 4,
        name: "0004_audit.sql",
        sql: include_str!("../../../../../schemas/clickhouse/0004_audit.sql"),
    },
    Migration {
        version: 5,
        name: "0005_deferred_and_cache_writes.sql",
        sql: include_str!("../../../../../schemas/clickhouse/0005_deferred_and_cache_writes.sql"),
    },
];

/// The table that records applied versions.
pub const SCHEMA_MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
     (version UInt32, name String, applied_at DateTime('UTC') DEFAULT now()) \
     ENGINE = MergeTree() ORDER BY version";

/// The statements of a file: `--` comments dropped, split on `;`.
pub fn statements(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Creates the database if needed and applies the missing migrations. Returns
/// the versions applied now.
pub async fn migrate(config: &ClickHouseConfig) -> Result<Vec<u32>> {
    migrate_to(config, u32::MAX).await
}

/// As [`migrate`], stopping after version `last` (tests of upgrades start a
/// database at an earlier version).
pub async fn migrate_to(config: &ClickHouseConfig, last: u32) -> Result<Vec<u32>> {
    let server = config.server_client();
    run(
        config,
        &server,
        &format!("CREATE DATABASE IF NOT EXISTS {}", config.database),
        "creating the database",
    )
    .await?;
    let db = config.client();
    run(
        config,
        &db,
        SCHEMA_MIGRATIONS_DDL,
        "creating schema_migrations",
    )
    .await?;
    let applied: Vec<u32> = timed(
        config,
        "reading schema_migrations",
        db.query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all::<u32>(),
    )
    .await?;
    let mut now = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| m.version <= last) {
        if applied.contains(&m.version) {
            continue;
        }
        for statement in statements(m.sql) {
            if let Some((table, column)) = added_column(&statement)
                && column_exists(config, &db, table, column).await?
            {
                continue;
            }
            db.query(&statement)
                .execute()
                .await
                .map_err(|e| Error::Migration {
                    name: m.name.to_owned(),
                    message: e.to_string(),
                })?;
        }
        run(
            config,
            &db,
            &format!(
                "INSERT INTO schema_migrations (version, name) VALUES ({}, '{}')",
                m.version, m.name
            ),
            "recording a migration",
        )
        .await?;
        info!(version = m.version, name = m.name, database = %config.database, "ClickHouse migration applied.");
        now.push(m.version);
    }
    Ok(now)
}

/// The table and column of `ALTER TABLE t ADD COLUMN c …`: ClickHouse 18.16
/// has no `ADD COLUMN IF NOT EXISTS`, so the migration checks first.
fn added_column(statement: &str) -> Option<(&str, &str)> {
    let mut words = statement.split_whitespace();
    let head: Vec<String> = words
        .by_ref()
        .take(2)
        .map(str::to_ascii_uppercase)
        .collect();
    if head != ["ALTER", "TABLE"] {
        return None;
    }
    let table = words.next()?;
    let add: Vec<String> = words
        .by_ref()
        .take(2)
        .map(str::to_ascii_uppercase)
        .collect();
    (add == ["ADD", "COLUMN"]).then_some((table, words.next()?))
}

async fn column_exists(
    config: &ClickHouseConfig,
    client: &Client,
    table: &str,
    column: &str,
) -> Result<bool> {
    let n: u64 = timed(
        config,
        "reading system.columns",
        client
            .query(
                "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?",
            )
            .bind(&config.database)
            .bind(table)
            .bind(column)
            .fetch_one::<u64>(),
    )
    .await?;
    Ok(n > 0)
}

async fn run(config: &ClickHouseConfig, client: &Client, sql: &str, during: &str) -> Result<()> {
    timed(config, during, client.query(sql).execute()).await
}

/// Runs a request with the configured timeout, naming what it was for in errors.
pub(crate) async fn timed<T>(
    config: &ClickHouseConfig,
    during: &str,
    request: impl Future<Output = clickhouse::error::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(config.timeout, request).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(Error::ClickHouse {
            url: config.display_url(),
            during: during.to_owned(),
            source,
        }),
        Err(_) => Err(Error::ClickHouseTimeout {
            url: config.display_url(),
            during: during.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_file_is_a_migration_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/clickhouse");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, listed, "add new schema files to MIGRATIONS");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:04}_", m.version)));
        }
    }

    #[test]
    fn statements_drop_comments_and_split_on_semicolons() {
        let sql = "-- a comment; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory; -- trailing\n\nCREATE TABLE b (y UInt8) ENGINE = Memory;\n";
        assert_eq!(
            statements(sql),
            [
                "CREATE TABLE a (x UInt8) ENGINE = Memory",
                "CREATE TABLE b (y UInt8) ENGINE = Memory"
            ]
        );
        assert_eq!(statements(MIGRATIONS[1].sql).len(), 4);
    }

    #[test]
    fn an_added_column_is_recognised_for_the_existence_check() {
        assert_eq!(
            added_column(
                "alter table usage_events ADD column failed_cost_usd Float64 MATERIALIZED 0"
            ),
            Some(("usage_events", "failed_cost_usd"))
        );
        assert_eq!(added_column("ALTER TABLE t DROP COLUMN c"), None);
        assert_eq!(
            added_column("CREATE TABLE t (x UInt8) ENGINE = Memory"),
            None
        );
        assert!(
            statements(MIGRATIONS[2].sql)
                .iter()
                .any(|s| added_column(s).is_some())
        );
    }
}
