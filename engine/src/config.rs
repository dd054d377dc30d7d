//! Configuration: command-line flags, an optional TOML file, and defaults, in that order.
//!
//! Every option has the same name on the command line (`--queue-capacity`) and in the file
//! (`queue-capacity = ...`), so an operator can move a flag into the file without looking
//! anything up.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Options as given, before defaults are applied.
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(
    name = "corechat",
    version,
    about = "corechat: a thread-per-core chat server for the AnimalChat Qt client",
    long_about = "corechat serves the AnimalChat Qt desktop client: register, login, friends, \
                  chat lists and real-time 1:1 messages. One executor per core owns a shard of \
                  the users; one persistence thread writes batches to the embedded store \
                  (default) or to MySQL/MariaDB (--database)."
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Options {
    /// Read options from this TOML file (keys as the long flags, e.g. `listen = "0.0.0.0:12345"`).
    /// Flags given on the command line win over the file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to accept client connections on [default: 127.0.0.1:12345]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,

    /// Number of shards: one executor pinned to each core [default: the cores this process may use]
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,

    /// Do not pin executors to cores (for machines shared with other work)
    #[arg(long)]
    #[serde(default)]
    pub no_pin: bool,

    /// Directory of the embedded store (ignored with --database) [default: ./data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Use MySQL/MariaDB instead of the embedded store: mysql://user:pass@host:port/db
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,

    /// Log level: error, warn, info, debug or trace [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// Write the log to this file instead of standard error
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Rotate the log file: never, hour or day [default: day]
    #[arg(long, value_name = "PERIOD")]
    pub log_rotate: Option<String>,

    /// Delete rotated log files older than this many days (0 keeps them all) [default: 14]
    #[arg(long, value_name = "DAYS")]
    pub log_keep_days: Option<u64>,

    /// Accept backlog of the listening socket, per shard [default: 8192]
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,

    /// Largest frame accepted from a client, in bytes [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub max_frame: Option<usize>,

    /// Largest message_body accepted, in bytes [default: 65536]
    #[arg(long, value_name = "BYTES")]
    pub max_message: Option<usize>,

    /// Connections one user may be logged in from at once [default: 4]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// Connections not logged in, in total; at the cap the longest idle one is closed [default: 16384]
    #[arg(long, value_name = "N")]
    pub max_anonymous: Option<usize>,

    /// Connections not logged in, per source address [default: 4096]
    #[arg(long, value_name = "N")]
    pub max_anonymous_per_ip: Option<usize>,

    /// Close a connection that has not logged in after this many idle seconds [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub anonymous_idle_timeout: Option<u64>,

    /// TCP keepalive: idle seconds before the first probe of a silent peer [default: 60]
    #[arg(long, value_name = "SECONDS")]
    pub keepalive: Option<u64>,

    /// Close a connection whose unsent replies exceed this many bytes (a client that stopped
    /// reading) [default: 16777216]
    #[arg(long, value_name = "BYTES")]
    pub max_outbound: Option<usize>,

    /// Capacity of the persistence queue, in write records [default: 262144]
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<usize>,

    /// Most records written in one database transaction [default: 4096]
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,

    /// Microseconds to wait for a batch to fill before writing it (0: write what is there) [default: 0]
    #[arg(long, value_name = "MICROS")]
    pub batch_linger_us: Option<u64>,

    /// MySQL only: connections that write each batch in parallel, split by user [default: 2]
    #[arg(long, value_name = "N")]
    pub db_writers: Option<usize>,

    /// Capacity of each channel of the cross-shard mesh [default: 4096]
    #[arg(long, value_name = "N")]
    pub mesh_capacity: Option<usize>,

    /// Threads that verify and hash passwords, below chat traffic in priority [default: shards - 1, at least 1]
    #[arg(long, value_name = "N")]
    pub auth_threads: Option<usize>,

    /// argon2id memory cost in KiB [default: 19456]
    #[arg(long, value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,

    /// argon2id passes [default: 2]
    #[arg(long, value_name = "N")]
    pub argon2_passes: Option<u32>,

    /// Address of the admin HTTP listener serving /metrics (Prometheus) and /latency (.hgrm),
    /// or "off" [default: 127.0.0.1:9100]
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,

    /// Log a latency report every this many seconds (0: never) [default: 0]
    #[arg(long, value_name = "SECONDS")]
    pub report_interval: Option<u64>,

    /// Seconds a verified password is remembered (in memory, as a keyed digest) so a repeat
    /// login skips argon2; 0 disables it [default: 3600]
    #[arg(long, value_name = "SECONDS")]
    pub credential_cache_ttl: Option<u64>,
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub shards: usize,
    pub pin: bool,
    pub data_dir: PathBuf,
    pub database: Option<String>,
    pub log_level: log::LevelFilter,
    pub log_file: Option<PathBuf>,
    pub log_rotate: LogRotate,
    pub log_keep_days: u64,
    pub backlog: u32,
    pub max_frame: usize,
    pub max_message: usize,
    pub max_sessions: usize,
    pub max_anonymous: usize,
    pub max_anonymous_per_ip: usize,
    pub anonymous_idle_timeout: Duration,
    pub keepalive: Duration,
    pub max_outbound: usize,
    pub queue_capacity: usize,
    pub batch_size: usize,
    pub batch_linger: Duration,
    pub db_writers: usize,
    pub mesh_capacity: usize,
    pub auth_threads: usize,
    pub argon2_memory_kib: u32,
    pub argon2_passes: u32,
    pub credential_cache_ttl: Duration,
    pub admin: Option<SocketAddr>,
    pub report_interval: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogRotate {
    Never,
    Hour,
    Day,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{option}: {message}")]
    Invalid {
        option: &'static str,
        message: String,
    },
}

fn invalid(option: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        option,
        message: message.into(),
    }
}

impl Options {
    /// Reads the file named by `--config`, if any; flags win over it.
    pub fn with_file(self) -> Result<Options, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = Options::from_file(&path)?;
        Ok(self.over(file))
    }

    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// `self` where given, `other` elsewhere.
    fn over(self, other: Options) -> Options {
        Options {
            config: self.config,
            listen: self.listen.or(other.listen),
            shards: self.shards.or(other.shards),
            no_pin: self.no_pin || other.no_pin,
            data_dir: self.data_dir.or(other.data_dir),
            database: self.database.or(other.database),
            log_level: self.log_level.or(other.log_level),
            log_file: self.log_file.or(other.log_file),
            log_rotate: self.log_rotate.or(other.log_rotate),
            log_keep_days: self.log_keep_days.or(other.log_keep_days),
            backlog: self.backlog.or(other.backlog),
            max_frame: self.max_frame.or(other.max_frame),
            max_message: self.max_message.or(other.max_message),
            max_sessions: self.max_sessions.or(other.max_sessions),
            max_anonymous: self.max_anonymous.or(other.max_anonymous),
            max_anonymous_per_ip: self.max_anonymous_per_ip.or(other.max_anonymous_per_ip),
            anonymous_idle_timeout: self.anonymous_idle_timeout.or(other.anonymous_idle_timeout),
            keepalive: self.keepalive.or(other.keepalive),
            max_outbound: self.max_outbound.or(other.max_outbound),
            queue_capacity: self.queue_capacity.or(other.queue_capacity),
            batch_size: self.batch_size.or(other.batch_size),
            batch_linger_us: self.batch_linger_us.or(other.batch_linger_us),
            db_writers: self.db_writers.or(other.db_writers),
            mesh_capacity: self.mesh_capacity.or(other.mesh_capacity),
            auth_threads: self.auth_threads.or(other.auth_threads),
            argon2_memory_kib: self.argon2_memory_kib.or(other.argon2_memory_kib),
            argon2_passes: self.argon2_passes.or(other.argon2_passes),
            credential_cache_ttl: self.credential_cache_ttl.or(other.credential_cache_ttl),
            admin: self.admin.or(other.admin),
            report_interval: self.report_interval.or(other.report_interval),
        }
    }

    /// Applies defaults and checks every value.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let listen = self.listen.unwrap_or_else(|| "127.0.0.1:12345".into());
        let listen: SocketAddr = listen
            .parse()
            .map_err(|e| invalid("listen", format!("{listen:?} is not an address: {e}")))?;
        let shards = self.shards.unwrap_or_else(usable_cores);
        if shards == 0 || shards > 256 {
            return Err(invalid("shards", "must be between 1 and 256"));
        }
        let log_level = match self.log_level.as_deref().unwrap_or("info") {
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            "off" => log::LevelFilter::Off,
            other => return Err(invalid("log-level", format!("unknown level {other:?}"))),
        };
        let log_rotate = match self.log_rotate.as_deref().unwrap_or("day") {
            "never" => LogRotate::Never,
            "hour" => LogRotate::Hour,
            "day" => LogRotate::Day,
            other => return Err(invalid("log-rotate", format!("unknown period {other:?}"))),
        };
        let positive = |v: Option<usize>, d: usize, name: &'static str| match v.unwrap_or(d) {
            0 => Err(invalid(name, "must be at least 1")),
            n => Ok(n),
        };
        let database = match self.database {
            Some(url) if url.trim().is_empty() => None,
            Some(url) if !url.starts_with("mysql://") => {
                return Err(invalid(
                    "database",
                    "must be a mysql://user:pass@host:port/db URL",
                ))
            }
            other => other,
        };
        let admin = match self.admin.as_deref().unwrap_or("127.0.0.1:9100") {
            "off" | "" => None,
            a => Some(
                a.parse()
                    .map_err(|e| invalid("admin", format!("{a:?} is not an address: {e}")))?,
            ),
        };
        let max_frame = positive(self.max_frame, 1 << 20, "max-frame")?;
        let max_message = positive(self.max_message, 64 * 1024, "max-message")?;
        if max_message >= max_frame {
            return Err(invalid("max-message", "must be smaller than max-frame"));
        }
        let argon2_memory_kib = self.argon2_memory_kib.unwrap_or(19_456);
        let argon2_passes = self.argon2_passes.unwrap_or(2);
        if argon2::Params::new(argon2_memory_kib, argon2_passes, 1, None).is_err() {
            return Err(invalid(
                "argon2-memory-kib",
                "argon2 rejects these parameters",
            ));
        }
        Ok(Config {
            listen,
            shards,
            pin: !self.no_pin,
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from("data")),
            database,
            log_level,
            log_file: self.log_file,
            log_rotate,
            log_keep_days: self.log_keep_days.unwrap_or(14),
            backlog: self.backlog.unwrap_or(8192).max(1),
            max_frame,
            max_message,
            max_sessions: positive(self.max_sessions, 4, "max-sessions")?,
            max_anonymous: positive(self.max_anonymous, 16_384, "max-anonymous")?,
            max_anonymous_per_ip: positive(
                self.max_anonymous_per_ip,
                4096,
                "max-anonymous-per-ip",
            )?,
            anonymous_idle_timeout: Duration::from_secs(
                self.anonymous_idle_timeout.unwrap_or(3600).max(1),
            ),
            keepalive: Duration::from_secs(self.keepalive.unwrap_or(60).max(1)),
            max_outbound: positive(self.max_outbound, 16 << 20, "max-outbound")?,
            queue_capacity: positive(self.queue_capacity, 1 << 18, "queue-capacity")?,
            batch_size: positive(self.batch_size, 4096, "batch-size")?,
            batch_linger: Duration::from_micros(self.batch_linger_us.unwrap_or(0)),
            db_writers: positive(self.db_writers, 2, "db-writers")?,
            mesh_capacity: positive(self.mesh_capacity, 4096, "mesh-capacity")?,
            // One core's worth less than the shards: a storm of first logins then leaves a core
            // to chat and to the commit path. With both cores of a 2-core machine hashing,
            // even at nice 19, fsync completions stalled and the ack p99 went from 7 ms to
            // 640 ms (docs/benchmarks.md, "Login storm").
            auth_threads: positive(
                self.auth_threads,
                shards.saturating_sub(1).max(1),
                "auth-threads",
            )?,
            argon2_memory_kib,
            argon2_passes,
            credential_cache_ttl: Duration::from_secs(self.credential_cache_ttl.unwrap_or(3600)),
            admin,
            report_interval: match self.report_interval.unwrap_or(0) {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
        })
    }
}

/// The number of cores this process may run on (its affinity mask), at least 1.
pub fn usable_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = Options::default().resolve().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:12345");
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.max_message, 65536);
        assert_eq!(c.max_frame, 1 << 20);
        assert_eq!(c.max_sessions, 4);
        assert!(c.database.is_none());
        assert_eq!(
            c.admin.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:9100")
        );
        assert!(c.report_interval.is_none());
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nshards = 3\nno-pin = true\nadmin = \"off\"\n",
        )
        .unwrap();
        let o = Options::parse_from([
            "corechat",
            "--config",
            path.to_str().unwrap(),
            "--shards",
            "2",
        ]);
        let c = o.with_file().unwrap().resolve().unwrap();
        assert_eq!(c.shards, 2);
        assert_eq!(c.listen.port(), 1);
        assert!(!c.pin);
        assert!(c.admin.is_none());
    }

    #[test]
    fn bad_values_are_named() {
        let o = Options::parse_from(["corechat", "--listen", "nowhere"]);
        assert!(o.resolve().unwrap_err().to_string().starts_with("listen"));
        let o = Options::parse_from(["corechat", "--database", "postgres://x"]);
        assert!(o.resolve().unwrap_err().to_string().starts_with("database"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "lisen = 1\n").unwrap();
        assert!(Options::from_file(&path).is_err());
    }
}
