//! `corechat-admin`: database chores without starting the server.
//!
//! `check` reports the schema version of a MySQL/MariaDB database and what a migration would
//! do, changing nothing; `migrate` applies the pending migrations (the server also does this
//! at start). The embedded store migrates itself when the server opens it.
//!
//! For benchmarks: `seed` fills an empty database (MySQL/MariaDB or the embedded store) with
//! N users, their friendships, chat rows and M messages; `time-start` starts a server on it
//! and reports how long the load took and how much memory the server then holds;
//! `write-bench` measures the persistence path alone (write_batch in a loop), and `ack-bench`
//! the persistence thread alone at a fixed rate (queue to acknowledgement). See
//! `docs/benchmarks-persistence.md`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corechat_persist::backend::mysql;

mod ack_bench;
mod bench_store;
mod seed;
mod start_time;
mod write_bench;

#[derive(Parser)]
#[command(
    name = "corechat-admin",
    version,
    about = "Database chores for corechat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report the schema version and the pending migrations; changes nothing
    Check {
        /// mysql://user:pass@host:port/db
        #[arg(long, env = "CORECHAT_DATABASE")]
        database: String,
    },
    /// Apply the pending migrations (an old server's database is migrated in place)
    Migrate {
        /// mysql://user:pass@host:port/db
        #[arg(long, env = "CORECHAT_DATABASE")]
        database: String,
        /// Only say what would be done
        #[arg(long)]
        dry_run: bool,
    },
    /// Fill an empty database with synthetic users, friendships, chat rows and messages
    Seed(seed::SeedArgs),
    /// Start a server (the command after --), time its load, read its memory, stop it
    TimeStart(start_time::TimeStartArgs),
    /// Measure the persistence path alone: message batches through write_batch in a loop
    WriteBench(write_bench::WriteBenchArgs),
    /// Measure the persistence thread alone at a fixed rate: time from queue to acknowledgement
    AckBench(ack_bench::AckBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Seed(a) => {
            return match seed::run(&a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("corechat-admin seed: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::WriteBench(a) => {
            return match write_bench::run(&a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("corechat-admin write-bench: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::AckBench(a) => {
            return match ack_bench::run(&a) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("corechat-admin ack-bench: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::TimeStart(a) => {
            return match start_time::run(&a) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("corechat-admin time-start: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Check { database } => mysql::schema_report(&database).map(|r| {
            println!("{r}");
            if r.is_up_to_date() {
                ExitCode::SUCCESS
            } else {
                // Pending migrations: not an error, but scripts may want to know.
                ExitCode::from(3)
            }
        }),
        Command::Migrate {
            database,
            dry_run: true,
        } => mysql::schema_report(&database).map(|r| {
            println!("{r}");
            ExitCode::SUCCESS
        }),
        Command::Migrate {
            database,
            dry_run: false,
        } => mysql::migrate(&database).map(|applied| {
            if applied.is_empty() {
                println!("{}: schema up to date", mysql::mask_url(&database));
            } else {
                println!(
                    "{}: applied migrations {applied:?}",
                    mysql::mask_url(&database)
                );
            }
            ExitCode::SUCCESS
        }),
    };
    r.unwrap_or_else(|e| {
        eprintln!("corechat-admin: {e}");
        ExitCode::from(1)
    })
}
