//! The store options shared by the benchmark subcommands (`write-bench`, `ack-bench`): which
//! throwaway database to write to, and which process to charge the database's CPU to.

use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchStore {
    /// MySQL/MariaDB database: mysql://user:pass@host:port/db (use a throwaway one)
    #[arg(
        long,
        required_unless_present = "data_dir",
        conflicts_with = "data_dir"
    )]
    pub database: Option<String>,
    /// Embedded store (SQLite) directory (use a throwaway one)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// MySQL: CREATE DATABASE IF NOT EXISTS first
    #[arg(long)]
    pub create: bool,
    /// Database server pid, for its CPU time (default: /run/mysqld/corechat-mariadbd.pid)
    #[arg(long, value_name = "PID")]
    pub db_pid: Option<u32>,
}

impl BenchStore {
    /// Creates the MySQL database first when `--create` asks for it.
    pub fn prepare(&self) -> Result<(), String> {
        if let (Some(url), true) = (&self.database, self.create) {
            crate::seed::create_database(url).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The database server's pid, for MySQL: `--db-pid`, else the pid file that
    /// `scripts/mariadb.sh` writes.
    pub fn db_pid(&self) -> Option<u32> {
        self.db_pid.or_else(|| {
            self.database.as_ref()?;
            std::fs::read_to_string("/run/mysqld/corechat-mariadbd.pid")
                .ok()?
                .trim()
                .parse()
                .ok()
        })
    }
}
