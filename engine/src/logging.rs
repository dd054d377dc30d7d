//! Asynchronous logging through ftlog.
//!
//! Log calls hand a line to ftlog's logging thread through a bounded channel. Policy when
//! that channel is full (a disk that cannot keep up): lines are dropped rather than blocking
//! the caller, because a blocked executor would stall every chat on its core, and ftlog prints
//! how many lines it omitted so the gap is visible in the log itself. Nothing on the message
//! path logs above `debug`.

use std::path::Path;

use ftlog::appender::{Duration as LogDuration, FileAppender, Period};

use crate::config::{Config, LogRotate};

/// Lines buffered between the server's threads and the logging thread.
const QUEUE_LINES: usize = 100_000;

/// Starts the logger; keep the guard alive until exit so the last lines are flushed.
pub fn init(cfg: &Config) -> Result<ftlog::LoggerGuard, String> {
    let builder = ftlog::builder()
        .max_log_level(cfg.log_level)
        .bounded(QUEUE_LINES, false)
        .print_omitted_count(true)
        .local_timezone();
    let builder = match &cfg.log_file {
        Some(path) => builder.root(file_appender(path, cfg)?),
        None => builder.root(std::io::stderr()),
    };
    builder
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

fn file_appender(path: &Path, cfg: &Config) -> Result<FileAppender, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create log directory {}: {e}", dir.display()))?;
    }
    let period = match cfg.log_rotate {
        LogRotate::Never => return Ok(FileAppender::new(path)),
        LogRotate::Hour => Period::Hour,
        LogRotate::Day => Period::Day,
    };
    Ok(if cfg.log_keep_days == 0 {
        FileAppender::rotate(path, period)
    } else {
        FileAppender::rotate_with_expire(path, period, LogDuration::days(cfg.log_keep_days as i64))
    })
}
