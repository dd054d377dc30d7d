//! `corechat-cli`: talk to a corechat server from a terminal, exactly as the Qt client does.
//!
//! Each invocation opens one connection; commands other than `register` log in first with
//! `--user`/`--password`, then send one request and print every reply as JSON.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corechat_engine::client::{reply_status, Client};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "corechat-cli",
    version,
    about = "A command-line client for corechat"
)]
struct Cli {
    /// Server address
    #[arg(long, default_value = "127.0.0.1:12345")]
    addr: SocketAddr,
    /// User id (phone number) to log in as
    #[arg(long, short)]
    user: Option<String>,
    /// Password of --user
    #[arg(long, short, env = "CORECHAT_PASSWORD")]
    password: Option<String>,
    /// Seconds to wait for a reply
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account: its user id is the phone number
    Register {
        phone: String,
        name: String,
        password: String,
    },
    /// Log in and show the profile
    Login,
    /// Show (and take delivery of) messages that arrived while offline
    Unread,
    /// List friends and pending requests
    Friends,
    /// List conversations with unread counts
    Chats,
    /// Look a user up by id
    Search { id: String },
    /// Send a friend request
    Add { id: String },
    /// Accept a friend request
    Accept { id: String },
    /// End a friendship
    Delete { id: String },
    /// Send a text message
    Send { to: String, text: String },
    /// Mark a conversation read (as opening it in the client does)
    Read { id: String },
    /// Stay connected and print messages as they arrive, for this many seconds (0: forever)
    Listen {
        #[arg(default_value_t = 0)]
        seconds: u64,
    },
    /// Send a raw JSON request (after logging in, if --user is given)
    Raw { json: String },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0} needs --user and --password")]
    NeedLogin(&'static str),
    #[error("login failed: {0}")]
    Login(String),
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("corechat-cli: {e}");
            ExitCode::from(2)
        }
    }
}

fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn print(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs the command; returns whether the server answered success.
fn run(cli: Cli) -> Result<bool, CliError> {
    let mut c = Client::connect(cli.addr)?;
    c.timeout = Duration::from_secs(cli.timeout);
    if let Command::Register {
        phone,
        name,
        password,
    } = &cli.command
    {
        let r = c.register(phone, name, password)?;
        print(&r);
        return Ok(reply_status(&r) == "success");
    }
    let (Some(user), Some(password)) = (cli.user.clone(), cli.password.clone()) else {
        return Err(CliError::NeedLogin("this command"));
    };
    let r = c.login(&user, &password)?;
    if reply_status(&r) != "success" {
        return Err(CliError::Login(r.to_string()));
    }
    let u = user.as_str();
    let reply = match cli.command {
        Command::Register { .. } => return Ok(false),
        Command::Login => r,
        Command::Unread => c.simple("get_unread_messages", u)?,
        Command::Friends => c.simple("friends", u)?,
        Command::Chats => c.simple("chatting", u)?,
        Command::Search { id } => {
            c.request(json!({"type": "search_user", "user_id": u, "search_id": id}))?
        }
        Command::Add { id } => c.pair("add_friend", u, &id)?,
        Command::Accept { id } => c.pair("accept_friend", u, &id)?,
        Command::Delete { id } => c.pair("delete_friend", u, &id)?,
        Command::Send { to, text } => c.request(json!({
            "type": "send_message", "send_id": u, "receiver_id": to, "chat_type": "friend",
            "message_body": text, "message_type": "text", "file_path": " ",
            "message_timestamp": now()
        }))?,
        Command::Read { id } => c.request(json!({
            "type": "update_chat", "user_id": u, "comm_id": id, "chat_type": "friend",
            "last_message": "", "last_message_type": "text", "last_time": now(),
            "unread_count": 0, "chat_status": "chatting"
        }))?,
        Command::Listen { seconds } => {
            c.timeout = if seconds == 0 {
                Duration::from_secs(365 * 24 * 3600)
            } else {
                Duration::from_secs(seconds)
            };
            loop {
                match c.recv() {
                    Ok(v) => print(&v),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Command::Raw { json } => {
            let v: Value = serde_json::from_str(&json)?;
            c.request(v)?
        }
    };
    print(&reply);
    Ok(reply_status(&reply) == "success")
}
