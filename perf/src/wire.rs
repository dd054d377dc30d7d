//! What the load generator writes and reads on the wire.
//!
//! Requests are built exactly as the Qt client writes them (via
//! [`corechat_engine::client::qt_json`]) so the server sees the same bytes it sees in
//! production. The hot request, `send_message`, is serialised once per sender into a
//! prefix and a suffix around the body, so each message costs one copy, not one JSON
//! serialisation.
//!
//! Replies are parsed into a small owned [`Reply`] with borrowed string fields during
//! parsing: the generator must stay cheap next to the server it measures, and a full
//! `serde_json::Value` per frame would show up in its CPU time.
//!
//! Each benchmark message carries a [`Tag`] in its `message_body`: the pair it belongs to,
//! a sequence number, and the (intended) send time in nanoseconds since the run's shared
//! start `Instant`. The receiver computes delivery latency and detects loss, duplicates and
//! reordering from the tag alone, with no shared state between threads.
//!
//! Two other targets are spoken to with the same driver (see [`Protocol`]): the relay
//! baseline (`corechat-relay`), which speaks this framing and forwards a `send_message`
//! request unchanged to its receiver (so a `send_message` frame that carries a
//! `message_body` is a delivery, never an ack: corechat's acks carry no body), and NATS,
//! whose text protocol is in [`crate::nats`].

use std::borrow::Cow;
use std::fmt::Write as _;

use corechat_engine::client::qt_json;
use corechat_engine::frame::encode;
use serde::Deserialize;
use serde_json::{json, Value};

/// What the generator speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// The Qt client's protocol (corechat, and the relay baseline).
    #[default]
    Corechat,
    /// The NATS text protocol: each user subscribes to its own subject; a message is a PUB
    /// to the receiver's subject followed by a PING (its PONG is the ack).
    Nats,
}

impl Protocol {
    /// The request that logs `user` in (for NATS: CONNECT, SUB to its subject, PING).
    pub fn login(self, user: &str, password: &str) -> Vec<u8> {
        match self {
            Protocol::Corechat => login(user, password),
            Protocol::Nats => crate::nats::connect(user),
        }
    }

    /// The message template from `from` to `to`.
    pub fn message(self, from: &str, to: &str) -> MessageTemplate {
        match self {
            Protocol::Corechat => MessageTemplate::new(from, to),
            Protocol::Nats => MessageTemplate::nats(to),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Corechat => "corechat",
            Protocol::Nats => "nats",
        }
    }
}

/// The reply types the generator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Register,
    Login,
    GetUnread,
    AddFriend,
    AcceptFriend,
    SendMessage,
    ReceiveMessage,
    /// NATS: the answer to the oldest PING (the login's, or a message's flush).
    Pong,
    /// NATS: the server's keep-alive, to be answered with PONG.
    Ping,
    /// NATS: INFO and +OK, which need nothing.
    Hello,
    Other,
}

impl Kind {
    fn from_type(s: &str) -> Kind {
        match s {
            "register" => Kind::Register,
            "login" => Kind::Login,
            "get_unread_messages" => Kind::GetUnread,
            "add_friend" => Kind::AddFriend,
            "accept_friend" => Kind::AcceptFriend,
            "send_message" => Kind::SendMessage,
            "receive_message" => Kind::ReceiveMessage,
            _ => Kind::Other,
        }
    }

    /// The protocol's name of this type.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Login => "login",
            Kind::GetUnread => "get_unread_messages",
            Kind::AddFriend => "add_friend",
            Kind::AcceptFriend => "accept_friend",
            Kind::SendMessage => "send_message",
            Kind::ReceiveMessage => "receive_message",
            Kind::Pong => "PONG",
            Kind::Ping => "PING",
            Kind::Hello => "INFO",
            Kind::Other => "other",
        }
    }
}

/// The `status` of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// "Nothing there" (e.g. no unread messages): not a failure.
    Null,
    Error,
}

/// One decoded frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub kind: Kind,
    pub status: Status,
    /// The server's `message` on an error.
    pub message: Option<String>,
    /// The benchmark tag of a `receive_message`, if its body carries one.
    pub tag: Option<Tag>,
}

#[derive(Deserialize)]
struct Obj<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    message: Cow<'a, str>,
    #[serde(default, borrow)]
    message_body: Cow<'a, str>,
}

/// Parses one frame body. An array reply takes its type from the first element and its
/// status from the last, as the Qt client reads it.
pub fn parse(frame: &[u8]) -> Result<Reply, serde_json::Error> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace());
    let (kind, status, message, body) = if first == Some(&b'[') {
        let all: Vec<Obj<'_>> = serde_json::from_slice(frame)?;
        let kind = all.first().map(|o| Kind::from_type(&o.kind));
        match (kind, all.last()) {
            (Some(k), Some(last)) => (k, status(&last.status), msg(&last.message), None),
            _ => (Kind::Other, Status::Error, None, None),
        }
    } else {
        let o: Obj<'_> = serde_json::from_slice(frame)?;
        let mut kind = Kind::from_type(&o.kind);
        // The relay forwards the sender's request itself: a `send_message` with a body.
        if kind == Kind::SendMessage && !o.message_body.is_empty() {
            kind = Kind::ReceiveMessage;
        }
        let body = (kind == Kind::ReceiveMessage).then(|| Tag::parse(&o.message_body));
        (kind, status(&o.status), msg(&o.message), body.flatten())
    };
    Ok(Reply {
        kind,
        status,
        message,
        tag: body,
    })
}

/// The tags of the messages in a `get_unread_messages` reply (an array, or one object), in
/// order; `None` if the frame is not such a reply. Bodies that carry no tag are skipped.
pub fn unread_tags(frame: &[u8]) -> Option<Vec<Tag>> {
    let first = frame.iter().find(|b| !b.is_ascii_whitespace());
    let all: Vec<Obj<'_>> = if first == Some(&b'[') {
        serde_json::from_slice(frame).ok()?
    } else {
        vec![serde_json::from_slice(frame).ok()?]
    };
    if all.first().map(|o| o.kind.as_ref()) != Some("get_unread_messages") {
        return None;
    }
    Some(
        all.iter()
            .filter(|o| o.status == "success")
            .filter_map(|o| Tag::parse(&o.message_body))
            .collect(),
    )
}

fn status(s: &str) -> Status {
    match s {
        "success" => Status::Success,
        "null" => Status::Null,
        _ => Status::Error,
    }
}

fn msg(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// What a benchmark message body carries: `cb:<pair>:<seq>:<nanos>[:<padding>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub pair: u32,
    pub seq: u64,
    /// (Intended) send time, nanoseconds since the run's start `Instant`.
    pub sent_ns: u64,
}

impl Tag {
    /// Writes the body for this tag, padded with `x` to at least `min_len` bytes. Only
    /// characters that need no JSON escaping are used.
    pub fn write_body(&self, min_len: usize, out: &mut String) {
        out.clear();
        // Writing to a String cannot fail.
        let _ = write!(out, "cb:{}:{}:{}", self.pair, self.seq, self.sent_ns);
        if out.len() < min_len {
            out.push(':');
            while out.len() < min_len {
                out.push('x');
            }
        }
    }

    /// The tag in a body, or `None` for a message that is not the generator's (such as the
    /// greeting the server sends when a friend request is accepted).
    pub fn parse(body: &str) -> Option<Tag> {
        let mut it = body.strip_prefix("cb:")?.split(':');
        let pair = it.next()?.parse().ok()?;
        let seq = it.next()?.parse().ok()?;
        let sent_ns = it.next()?.parse().ok()?;
        Some(Tag { pair, seq, sent_ns })
    }
}

/// One request as a complete frame (length prefix included), written as the Qt client
/// writes it.
pub fn request(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&qt_json(v), &mut out);
    out
}

pub fn register(phone: &str, password: &str) -> Vec<u8> {
    request(&json!({
        "type": "register", "user_phone": phone, "user_name": format!("bench {phone}"),
        "user_password": password
    }))
}

pub fn login(user: &str, password: &str) -> Vec<u8> {
    request(&json!({"type": "login", "user_id": user, "user_password": password}))
}

pub fn get_unread(user: &str) -> Vec<u8> {
    request(&json!({"type": "get_unread_messages", "user_id": user}))
}

pub fn add_friend(user: &str, friend: &str) -> Vec<u8> {
    request(&json!({"type": "add_friend", "user_id": user, "friend_id": friend}))
}

pub fn accept_friend(user: &str, friend: &str) -> Vec<u8> {
    request(&json!({"type": "accept_friend", "user_id": user, "friend_id": friend}))
}

pub fn friends(user: &str) -> Vec<u8> {
    request(&json!({"type": "friends", "user_id": user}))
}

const BODY_MARK: &str = "\u{1}BODY\u{1}";

/// A `send_message` from one user to another, pre-serialised around its body (for NATS:
/// `PUB <subject> <len>\r\n<body>\r\nPING\r\n`).
#[derive(Debug, Clone)]
pub struct MessageTemplate {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
    nats: bool,
}

impl MessageTemplate {
    pub fn new(from: &str, to: &str) -> MessageTemplate {
        let stamp = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
        let bytes = qt_json(&json!({
            "type": "send_message", "send_id": from, "receiver_id": to, "chat_type": "friend",
            "message_body": BODY_MARK, "message_type": "text", "file_path": " ",
            "message_timestamp": stamp
        }));
        // serde_json writes U+0001 as the escape `\u0001`.
        let mark = b"\\u0001BODY\\u0001";
        let at = bytes
            .windows(mark.len())
            .position(|w| w == mark)
            .unwrap_or(bytes.len());
        let end = (at + mark.len()).min(bytes.len());
        MessageTemplate {
            prefix: bytes[..at].to_vec(),
            suffix: bytes[end..].to_vec(),
            nats: false,
        }
    }

    /// A NATS publication to `to`'s subject, followed by the PING whose PONG acknowledges it.
    pub fn nats(to: &str) -> MessageTemplate {
        MessageTemplate {
            prefix: format!("PUB {} ", crate::nats::subject(to)).into_bytes(),
            suffix: b"\r\nPING\r\n".to_vec(),
            nats: true,
        }
    }

    /// Appends the frame of this message with `body` (which must need no JSON escaping).
    pub fn write(&self, body: &str, out: &mut Vec<u8>) {
        if self.nats {
            out.extend_from_slice(&self.prefix);
            let _ = write!(ByteWriter(out), "{}\r\n", body.len());
            out.extend_from_slice(body.as_bytes());
            out.extend_from_slice(&self.suffix);
            return;
        }
        let len = self.prefix.len() + body.len() + self.suffix.len();
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(body.as_bytes());
        out.extend_from_slice(&self.suffix);
    }
}

/// `fmt::Write` into a byte vector (numbers without a temporary String).
struct ByteWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ByteWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corechat_engine::frame::FrameDecoder;

    #[test]
    fn template_matches_qt_serialisation() {
        let t = MessageTemplate::new("100", "200");
        let mut framed = Vec::new();
        t.write("cb:1:2:3", &mut framed);
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(&framed);
        let body = d.next_frame().unwrap().unwrap().to_vec();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["message_body"], "cb:1:2:3");
        assert_eq!(v["send_id"], "100");
        assert_eq!(body, qt_json(&v));
    }

    #[test]
    fn tags_round_trip() {
        let t = Tag {
            pair: 7,
            seq: 42,
            sent_ns: 123_456_789,
        };
        let mut s = String::new();
        t.write_body(0, &mut s);
        assert_eq!(Tag::parse(&s), Some(t));
        t.write_body(64, &mut s);
        assert_eq!(s.len(), 64);
        assert_eq!(Tag::parse(&s), Some(t));
        assert_eq!(Tag::parse("你好"), None);
        assert_eq!(Tag::parse("cb:1:x:3"), None);
    }

    #[test]
    fn replies() {
        let r = parse(br#"[{"type":"login","status":"success","user_id":"1"}]"#).unwrap();
        assert_eq!((r.kind, r.status), (Kind::Login, Status::Success));
        let r = parse(
            b"{\"type\":\"send_message\",\"status\":\"error\",\"message\":\"not friends\"}\n",
        )
        .unwrap();
        assert_eq!(r.status, Status::Error);
        assert_eq!(r.message.as_deref(), Some("not friends"));
        let r =
            parse(br#"{"type":"receive_message","status":"success","message_body":"cb:3:4:5"}"#)
                .unwrap();
        assert_eq!(r.tag.map(|t| t.seq), Some(4));
        let r =
            parse(br#"[{"type":"get_unread_messages","status":"null","message":"none"}]"#).unwrap();
        assert_eq!((r.kind, r.status), (Kind::GetUnread, Status::Null));
        assert!(parse(b"not json").is_err());
        // The relay's delivery: the sender's request itself.
        let r = parse(&qt_json(
            &json!({"type": "send_message", "message_body": "cb:1:2:3"}),
        ))
        .unwrap();
        assert_eq!(
            (r.kind, r.tag.map(|t| t.seq)),
            (Kind::ReceiveMessage, Some(2))
        );
        let r = parse(br#"{"type":"send_message","status":"success"}"#).unwrap();
        assert_eq!(r.kind, Kind::SendMessage);
    }

    #[test]
    fn unread_frames() {
        let f = br#"[{"type":"get_unread_messages","status":"success","message_body":"cb:0:0:5"},
                     {"type":"get_unread_messages","status":"success","message_body":"hi"},
                     {"type":"get_unread_messages","status":"success","message_body":"cb:0:1:6"}]"#;
        let tags = unread_tags(f).unwrap();
        assert_eq!(tags.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![0, 1]);
        let none = br#"[{"type":"get_unread_messages","status":"null","message":"none"}]"#;
        assert_eq!(unread_tags(none), Some(vec![]));
        assert_eq!(
            unread_tags(br#"[{"type":"friends","status":"null"}]"#),
            None
        );
    }

    #[test]
    fn nats_template() {
        let t = Protocol::Nats.message("1", "2");
        let mut out = Vec::new();
        t.write("cb:1:2:3", &mut out);
        assert_eq!(out, b"PUB u.2 8\r\ncb:1:2:3\r\nPING\r\n");
    }
}
