//! `corechat-admin`: database chores without starting the server.
//!
//! `check` reports the schema version of a MySQL/MariaDB database and what a migration would
//! do, changing nothing; `migrate` applies the pending migrations (the server also does this
//! at start). The embedded store migrates itself when the server opens it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use corechat_persist::backend::mysql;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
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
