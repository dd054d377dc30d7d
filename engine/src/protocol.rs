//! The Qt client's requests and the replies it expects (`shared/PROTOCOL.md`).
//!
//! A frame body is parsed into a typed, validated [`Request`] here, and only here: past this
//! point every field is known to fit the schema (lengths, digits, enum values, date format).
//! Replies are serialised straight from borrowed data; every value is a JSON string, because
//! the client reads every field with `QJsonValue::toString()`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Serialize;

use corechat_persist::model::MessageRow;
use corechat_shards::state::{ChatUpdate, Profile};

/// Field limits, from the database schema and the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `message_body`, in bytes.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 64 * 1024,
        }
    }
}

/// The schema's limits (`m_user`, `m_friends_message`, `m_chatlist`).
const MAX_ID: usize = 20;
const MAX_PHONE: usize = 12;
const MAX_NAME: usize = 255;
const MAX_PASSWORD: usize = 1024;
const MAX_FILE_PATH: usize = 255;
/// `m_chatlist.last_message` is TEXT (65,535 bytes) on the legacy database.
const MAX_LAST_MESSAGE: usize = 65_535;

pub const MESSAGE_TYPES: &[&str] = &["text", "emoticon", "image", "audio", "video", "file"];

/// A request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Register {
        phone: String,
        name: String,
        password: String,
    },
    Login {
        user_id: String,
        password: String,
    },
    GetUnreadMessages {
        user_id: String,
    },
    Chatting {
        user_id: String,
    },
    Friends {
        user_id: String,
    },
    SearchUser {
        user_id: String,
        search_id: String,
    },
    AddFriend {
        user_id: String,
        friend_id: String,
    },
    AcceptFriend {
        user_id: String,
        friend_id: String,
    },
    DeleteFriend {
        user_id: String,
        friend_id: String,
    },
    SendMessage(OutgoingMessage),
    UpdateChat {
        user_id: String,
        update: ChatUpdate,
    },
}

/// The fields of a `send_message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub send_id: String,
    pub receiver_id: String,
    pub chat_type: String,
    pub body: String,
    pub message_type: String,
    pub file_path: String,
    pub timestamp: String,
}

impl Request {
    /// The reply `type` for this request.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Register { .. } => "register",
            Request::Login { .. } => "login",
            Request::GetUnreadMessages { .. } => "get_unread_messages",
            Request::Chatting { .. } => "chatting",
            Request::Friends { .. } => "friends",
            Request::SearchUser { .. } => "search_user",
            Request::AddFriend { .. } => "add_friend",
            Request::AcceptFriend { .. } => "accept_friend",
            Request::DeleteFriend { .. } => "delete_friend",
            Request::SendMessage(_) => "send_message",
            Request::UpdateChat { .. } => "update_chat",
        }
    }

    /// The user id the request claims to act as; it must be the session's own.
    pub fn acting_user(&self) -> Option<&str> {
        match self {
            Request::Register { .. } | Request::Login { .. } => None,
            Request::GetUnreadMessages { user_id }
            | Request::Chatting { user_id }
            | Request::Friends { user_id }
            | Request::SearchUser { user_id, .. }
            | Request::AddFriend { user_id, .. }
            | Request::AcceptFriend { user_id, .. }
            | Request::DeleteFriend { user_id, .. }
            | Request::UpdateChat { user_id, .. } => Some(user_id),
            Request::SendMessage(m) => Some(&m.send_id),
        }
    }
}

/// A request the server cannot serve; answered with an `error` object of type `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    pub kind: String,
    pub message: String,
}

impl BadRequest {
    fn new(kind: &str, message: impl Into<String>) -> Self {
        BadRequest {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// Parses and validates one frame body.
pub fn parse(body: &[u8], limits: &Limits) -> Result<Request, BadRequest> {
    let text = std::str::from_utf8(body)
        .map_err(|_| BadRequest::new("error", "frame is not valid UTF-8"))?;
    let top: Top<'_> = serde_json::from_str(text)
        .map_err(|e| BadRequest::new("error", format!("frame is not valid JSON: {e}")))?;
    let Top::Object(obj) = top else {
        return Err(BadRequest::new("error", "request must be a JSON object"));
    };
    let kind = match obj.get("type") {
        Some(Field::Str(s)) => s.as_ref(),
        _ => return Err(BadRequest::new("error", "request has no \"type\"")),
    };
    let f = Fields { obj: &obj, kind };
    let req = match kind {
        "register" => Request::Register {
            phone: f.phone("user_phone")?,
            name: f.text("user_name", 1, MAX_NAME)?,
            password: f.password("user_password")?,
        },
        "login" => Request::Login {
            user_id: f.id("user_id")?,
            password: f.password("user_password")?,
        },
        "get_unread_messages" => Request::GetUnreadMessages {
            user_id: f.id("user_id")?,
        },
        "chatting" => Request::Chatting {
            user_id: f.id("user_id")?,
        },
        "friends" => Request::Friends {
            user_id: f.id("user_id")?,
        },
        "search_user" => Request::SearchUser {
            user_id: f.id("user_id")?,
            search_id: f.id("search_id")?,
        },
        "add_friend" => Request::AddFriend {
            user_id: f.id("user_id")?,
            friend_id: f.id("friend_id")?,
        },
        "accept_friend" => Request::AcceptFriend {
            user_id: f.id("user_id")?,
            friend_id: f.id("friend_id")?,
        },
        "delete_friend" => Request::DeleteFriend {
            user_id: f.id("user_id")?,
            friend_id: f.id("friend_id")?,
        },
        "send_message" => {
            let chat_type = f.one_of("chat_type", &["friend", "group"])?;
            if chat_type != "friend" {
                return Err(f.err("group chats are not supported"));
            }
            let body = f.string("message_body")?;
            if body.len() > limits.max_body {
                return Err(f.err(format!(
                    "message_body is {} bytes, the limit is {}",
                    body.len(),
                    limits.max_body
                )));
            }
            Request::SendMessage(OutgoingMessage {
                send_id: f.id("send_id")?,
                receiver_id: f.id("receiver_id")?,
                chat_type,
                body,
                message_type: f.one_of("message_type", MESSAGE_TYPES)?,
                file_path: f.optional_text("file_path", MAX_FILE_PATH)?,
                timestamp: f.timestamp("message_timestamp")?,
            })
        }
        "update_chat" => {
            let unread = f.integer("unread_count")?;
            let last_message_type = f.optional_text("last_message_type", 16)?;
            if !last_message_type.is_empty() && !MESSAGE_TYPES.contains(&last_message_type.as_str())
            {
                return Err(f.err(format!(
                    "last_message_type must be one of {}",
                    MESSAGE_TYPES.join(", ")
                )));
            }
            Request::UpdateChat {
                user_id: f.id("user_id")?,
                update: ChatUpdate {
                    comm_id: f.id("comm_id")?,
                    chat_type: f.one_of("chat_type", &["friend", "group"])?,
                    last_message: f.optional_text("last_message", MAX_LAST_MESSAGE)?,
                    last_message_type,
                    last_time: f.timestamp("last_time")?,
                    unread_count: unread,
                    chat_status: f.one_of("chat_status", &["chatting", "close"])?,
                },
            }
        }
        other => {
            return Err(BadRequest::new(
                &truncate(other, 64),
                format!("unknown request type {:?}", truncate(other, 64)),
            ))
        }
    };
    Ok(req)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

// ----- the request object, read without building a `serde_json::Value` -----
//
// A request is a flat object of strings (numbers accepted where strings are expected). It is
// read into a short list of borrowed key/value pairs: a string without escapes stays a slice
// of the frame, and nested values are checked for syntax but not kept. Building a
// `serde_json::Value` instead cost a map node, a key and a value allocation per field, and
// the validation then copied every value once more; this was the largest part of a shard's
// CPU per message after the socket calls.

/// A field value, as far as validation is concerned.
#[derive(Debug)]
enum Field<'a> {
    Str(Cow<'a, str>),
    Num(serde_json::Number),
    Null,
    /// A boolean, array or object: never a valid value of any request field.
    Other,
}

/// The top-level JSON value of a frame: an object's fields, or anything else.
enum Top<'a> {
    Object(Object<'a>),
    NotObject,
}

/// The fields of a request object, in frame order.
#[derive(Debug, Default)]
struct Object<'a> {
    fields: Vec<(Cow<'a, str>, Field<'a>)>,
}

impl<'a> Object<'a> {
    /// The value of `name`. A key given twice counts with its last value, as it did when the
    /// object was parsed into a map.
    fn get(&self, name: &str) -> Option<&Field<'a>> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name)
            .map(|(_, v)| v)
    }
}

/// A key or string value, borrowed from the frame when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Drains a sequence without keeping it (its syntax is still checked).
fn skip_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Drains a map without keeping it (its syntax is still checked).
fn skip_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Field<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Field::Str(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Field::Num(v.into()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Field::Num(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                // As serde_json::Value does: a non-finite float (which JSON cannot spell
                // anyway) becomes null.
                Ok(serde_json::Number::from_f64(v).map_or(Field::Null, Field::Num))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Field::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Field::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                skip_map(map).map(|()| Field::Other)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // The Qt client sends at most nine fields.
                let mut obj = Object {
                    fields: Vec::with_capacity(map.size_hint().unwrap_or(0).clamp(8, 16)),
                };
                while let Some(Text(k)) = map.next_key::<Text<'de>>()? {
                    let v: Field<'de> = map.next_value()?;
                    obj.fields.push((k, v));
                }
                Ok(Top::Object(obj))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                skip_seq(seq).map(|()| Top::NotObject)
            }
            fn visit_borrowed_str<E>(self, _: &'de str) -> Result<Self::Value, E> {
                Ok(Top::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Top::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Top::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Top::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Top::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Top::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Top::NotObject)
            }
        }
        d.deserialize_any(V)
    }
}

struct Fields<'a> {
    obj: &'a Object<'a>,
    kind: &'a str,
}

impl Fields<'_> {
    fn err(&self, message: impl Into<String>) -> BadRequest {
        BadRequest::new(self.kind, message)
    }

    /// A field the client sends as a string; numbers are accepted as their decimal text.
    fn string(&self, name: &str) -> Result<String, BadRequest> {
        match self.obj.get(name) {
            Some(Field::Str(s)) => Ok(s.to_string()),
            Some(Field::Num(n)) => Ok(n.to_string()),
            Some(_) => Err(self.err(format!("{name} must be a string"))),
            None => Err(self.err(format!("missing field {name}"))),
        }
    }

    fn text(&self, name: &str, min: usize, max_chars: usize) -> Result<String, BadRequest> {
        let s = self.string(name)?;
        let n = s.chars().count();
        if n < min {
            return Err(self.err(format!("{name} must not be empty")));
        }
        if n > max_chars {
            return Err(self.err(format!("{name} is longer than {max_chars} characters")));
        }
        if s.contains('\0') {
            return Err(self.err(format!("{name} contains a NUL character")));
        }
        Ok(s)
    }

    /// Missing reads as empty, like the client's own reading of fields.
    fn optional_text(&self, name: &str, max_chars: usize) -> Result<String, BadRequest> {
        if self.obj.get(name).is_none_or(|v| matches!(v, Field::Null)) {
            return Ok(String::new());
        }
        self.text(name, 0, max_chars)
    }

    fn id(&self, name: &str) -> Result<String, BadRequest> {
        let s = self.text(name, 1, MAX_ID)?;
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(self.err(format!("{name} contains spaces or control characters")));
        }
        Ok(s)
    }

    fn phone(&self, name: &str) -> Result<String, BadRequest> {
        let s = self.string(name)?;
        if s.is_empty() || s.len() > MAX_PHONE || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(format!("{name} must be 1 to {MAX_PHONE} digits")));
        }
        Ok(s)
    }

    fn password(&self, name: &str) -> Result<String, BadRequest> {
        let s = self.string(name)?;
        if s.is_empty() || s.len() > MAX_PASSWORD {
            return Err(self.err(format!("{name} must be 1 to {MAX_PASSWORD} bytes")));
        }
        Ok(s)
    }

    fn one_of(&self, name: &str, allowed: &[&str]) -> Result<String, BadRequest> {
        let s = self.string(name)?;
        if allowed.contains(&s.as_str()) {
            Ok(s)
        } else {
            Err(self.err(format!("{name} must be one of {}", allowed.join(", "))))
        }
    }

    /// A `yyyy-MM-dd HH:mm:ss` time that MySQL's DATETIME can hold: years 1000 to 9999, a
    /// real calendar day, no leap second (a value the database refused would fail its batch).
    fn timestamp(&self, name: &str) -> Result<String, BadRequest> {
        let s = self.string(name)?;
        if !valid_timestamp(&s) {
            return Err(self.err(format!("{name} must be a time as yyyy-MM-dd HH:mm:ss")));
        }
        Ok(s)
    }

    fn integer(&self, name: &str) -> Result<i64, BadRequest> {
        let v = match self.obj.get(name) {
            Some(Field::Num(n)) => n.as_i64(),
            Some(Field::Str(s)) => s.trim().parse::<i64>().ok(),
            None => return Err(self.err(format!("missing field {name}"))),
            _ => None,
        };
        match v {
            Some(n) if (0..=i64::from(i32::MAX)).contains(&n) => Ok(n),
            _ => Err(self.err(format!("{name} must be a whole number from 0"))),
        }
    }
}

/// Checks `yyyy-MM-dd HH:mm:ss` by hand: it is on every message's path, and a general date
/// parser costs more than the rest of the validation together.
pub fn valid_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b' '
        || b[13] != b':'
        || b[16] != b':'
    {
        return false;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(se)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match mo {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1000..=9999).contains(&y) && (1..=days).contains(&d) && h < 24 && mi < 60 && se < 60
}

/// The time now in the client's format, for rows the server creates.
pub fn now_timestamp() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

// ----- replies -----

/// `{"type", "status"}` and, for errors, `"message"`.
#[derive(Serialize)]
pub struct Status<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
}

impl<'a> Status<'a> {
    pub fn success(kind: &'a str) -> Self {
        Status {
            kind,
            status: "success",
            message: None,
        }
    }
    pub fn error(kind: &'a str, message: &'a str) -> Self {
        Status {
            kind,
            status: "error",
            message: Some(message),
        }
    }
    /// "Nothing to show": the client's `status:"null"`.
    pub fn null(kind: &'a str, message: &'a str) -> Self {
        Status {
            kind,
            status: "null",
            message: Some(message),
        }
    }
}

#[derive(Serialize)]
pub struct RegisterReply<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub status: &'a str,
    pub user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
}

/// A user's public profile as `login` and `search_user` show it (never the password).
#[derive(Serialize)]
pub struct ProfileReply<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: &'a str,
    pub user_id: &'a str,
    pub user_phone: &'a str,
    pub user_name: &'a str,
    pub user_email: &'a str,
    pub user_avatar: &'a str,
    pub user_status: &'a str,
    pub user_created: &'a str,
}

impl<'a> ProfileReply<'a> {
    pub fn new(kind: &'a str, p: &'a Profile) -> Self {
        ProfileReply {
            kind,
            status: "success",
            user_id: &p.user_id,
            user_phone: &p.phone,
            user_name: &p.name,
            user_email: &p.email,
            user_avatar: &p.avatar,
            user_status: &p.status,
            user_created: &p.created,
        }
    }
}

#[derive(Serialize)]
pub struct FriendReply<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: &'a str,
    pub user_id: &'a str,
    pub user_phone: &'a str,
    pub user_name: &'a str,
    pub user_email: &'a str,
    pub user_avatar: &'a str,
    pub user_status: &'a str,
    pub user_created: &'a str,
    pub friend_relation: &'a str,
    pub created_relation: &'a str,
}

#[derive(Serialize)]
pub struct ChatReply<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: &'a str,
    pub comm_id: &'a str,
    pub chat_type: &'a str,
    pub last_message: &'a str,
    pub last_message_type: &'a str,
    pub last_time: &'a str,
    pub unread_count: String,
    pub chat_status: &'a str,
    pub user_name: &'a str,
    pub user_avatar: &'a str,
}

/// `add_friend`, `accept_friend`, `delete_friend`.
#[derive(Serialize)]
pub struct PairReply<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: &'a str,
    pub user_id: &'a str,
    pub friend_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'a str>,
}

/// A message as `receive_message` and `get_unread_messages` carry it.
#[derive(Serialize)]
pub struct MessageReply<'a> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub status: &'a str,
    pub send_id: &'a str,
    pub receiver_id: &'a str,
    pub chat_type: &'a str,
    pub message_body: &'a str,
    pub message_type: &'a str,
    pub file_path: &'a str,
    pub message_timestamp: &'a str,
}

impl<'a> MessageReply<'a> {
    pub fn new(kind: &'a str, m: &'a MessageRow) -> Self {
        MessageReply {
            kind,
            status: "success",
            send_id: &m.sender_id,
            receiver_id: &m.receiver_id,
            chat_type: &m.chat_type,
            message_body: &m.body,
            message_type: &m.message_type,
            file_path: &m.file_path,
            message_timestamp: &m.timestamp,
        }
    }
}

/// The `send_message` success reply as a frame. Every message's acknowledgement is these same
/// bytes, so they are built once instead of once per message.
pub fn send_message_success() -> &'static [u8] {
    static FRAME: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut f = Vec::new();
        write_frame(&mut f, &Status::success("send_message"));
        f
    });
    &FRAME
}

/// Serialises `value` as one frame appended to `out`.
pub fn write_frame<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    crate::frame::encode_with(out, |buf| {
        // Serialising plain structs of strings into a Vec cannot fail; fall back to an
        // error object rather than panic if it ever did.
        if serde_json::to_writer(&mut *buf, value).is_err() {
            buf.extend_from_slice(br#"{"type":"error","status":"error","message":"internal"}"#);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Frames as the Qt client writes them: 4-space indents, sorted keys, trailing newline.
    fn qt(v: Value) -> Vec<u8> {
        let mut s = serde_json::to_string_pretty(&v).unwrap();
        s.push('\n');
        s.into_bytes()
    }

    fn ok(v: Value) -> Request {
        parse(&qt(v), &Limits::default()).unwrap()
    }

    fn bad(v: Value) -> BadRequest {
        parse(&qt(v), &Limits::default()).unwrap_err()
    }

    #[test]
    fn parses_every_request_type() {
        assert_eq!(
            ok(
                json!({"type":"register","user_phone":"13800000001","user_name":"小红","user_password":"pw"})
            ),
            Request::Register {
                phone: "13800000001".into(),
                name: "小红".into(),
                password: "pw".into()
            }
        );
        assert_eq!(
            ok(json!({"type":"login","user_id":"13800000001","user_password":"pw"})),
            Request::Login {
                user_id: "13800000001".into(),
                password: "pw".into()
            }
        );
        for t in ["get_unread_messages", "chatting", "friends"] {
            let r = ok(json!({"type": t, "user_id": "1"}));
            assert_eq!(r.kind(), t);
            assert_eq!(r.acting_user(), Some("1"));
        }
        assert_eq!(
            ok(json!({"type":"search_user","user_id":"1","search_id":"2"})),
            Request::SearchUser {
                user_id: "1".into(),
                search_id: "2".into()
            }
        );
        for t in ["add_friend", "accept_friend", "delete_friend"] {
            let r = ok(json!({"type": t, "user_id": "1", "friend_id": "2"}));
            assert_eq!(r.kind(), t);
        }
        let r = ok(
            json!({"type":"send_message","send_id":"1","receiver_id":"2","chat_type":"friend",
            "message_body":"hi","message_type":"text","file_path":" ","message_timestamp":"2026-01-02 03:04:05"}),
        );
        assert_eq!(r.acting_user(), Some("1"));
        let r = ok(
            json!({"type":"update_chat","user_id":"1","comm_id":"2","chat_type":"friend",
            "last_message":"hi","last_message_type":"text","last_time":"2026-01-02 03:04:05",
            "unread_count":0,"chat_status":"chatting"}),
        );
        match r {
            Request::UpdateChat { update, .. } => assert_eq!(update.unread_count, 0),
            _ => panic!(),
        }
    }

    #[test]
    fn numbers_are_accepted_where_strings_are_expected() {
        let r = ok(json!({"type":"login","user_id":13800000001u64,"user_password":"pw"}));
        assert_eq!(r.acting_user(), None);
        let r = ok(
            json!({"type":"update_chat","user_id":"1","comm_id":"2","chat_type":"friend",
            "last_message":"","last_message_type":"","last_time":"2026-01-02 03:04:05",
            "unread_count":"3","chat_status":"close"}),
        );
        assert!(matches!(r, Request::UpdateChat { update, .. } if update.unread_count == 3));
    }

    #[test]
    fn refuses_bad_fields_with_the_request_type() {
        let e =
            bad(json!({"type":"register","user_phone":"12ab","user_name":"x","user_password":"p"}));
        assert_eq!(e.kind, "register");
        assert!(e.message.contains("digits"));
        let e = bad(
            json!({"type":"register","user_phone":"1234567890123","user_name":"x","user_password":"p"}),
        );
        assert!(e.message.contains("digits"));
        let e = bad(json!({"type":"login","user_id":"1"}));
        assert!(e.message.contains("user_password"));
        let e = bad(json!({"type":"login","user_id":"123456789012345678901","user_password":"p"}));
        assert!(e.message.contains("longer"));
        let e = bad(
            json!({"type":"send_message","send_id":"1","receiver_id":"2","chat_type":"friend",
            "message_body":"hi","message_type":"vedio","file_path":" ","message_timestamp":"2026-01-02 03:04:05"}),
        );
        assert!(e.message.contains("message_type"));
        let e = bad(
            json!({"type":"send_message","send_id":"1","receiver_id":"2","chat_type":"friend",
            "message_body":"hi","message_type":"text","file_path":" ","message_timestamp":"yesterday"}),
        );
        assert!(e.message.contains("message_timestamp"));
        let e = bad(
            json!({"type":"send_message","send_id":"1","receiver_id":"2","chat_type":"group",
            "message_body":"hi","message_type":"text","file_path":" ","message_timestamp":"2026-01-02 03:04:05"}),
        );
        assert!(e.message.contains("group"));
        let e = bad(
            json!({"type":"update_chat","user_id":"1","comm_id":"2","chat_type":"friend",
            "last_message":"","last_message_type":"text","last_time":"2026-01-02 03:04:05",
            "unread_count":-1,"chat_status":"chatting"}),
        );
        assert!(e.message.contains("unread_count"));
        let e = bad(json!({"type":"group_text"}));
        assert_eq!(e.kind, "group_text");
    }

    #[test]
    fn timestamps_agree_with_a_calendar() {
        for ok in [
            "2026-01-02 03:04:05",
            "2024-02-29 23:59:59",
            "1000-01-01 00:00:00",
            "9999-12-31 23:59:59",
        ] {
            assert!(valid_timestamp(ok), "{ok}");
            assert!(chrono::NaiveDateTime::parse_from_str(ok, "%Y-%m-%d %H:%M:%S").is_ok());
        }
        for bad in [
            "2023-02-29 00:00:00",
            "2026-04-31 00:00:00",
            "2026-13-01 00:00:00",
            "2026-00-10 00:00:00",
            "2026-01-00 00:00:00",
            "2026-01-01 24:00:00",
            "2026-01-01 00:60:00",
            "2026-01-01 00:00:60",
            "0999-12-31 23:59:59",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:0",
            "2026-01-01 00:00:00 ",
            "２０２６-01-01 00:00:00",
            "",
        ] {
            assert!(!valid_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn body_limit_is_configurable() {
        let v = json!({"type":"send_message","send_id":"1","receiver_id":"2","chat_type":"friend",
            "message_body":"0123456789","message_type":"text","file_path":" ","message_timestamp":"2026-01-02 03:04:05"});
        assert!(parse(&qt(v.clone()), &Limits { max_body: 10 }).is_ok());
        assert!(parse(&qt(v), &Limits { max_body: 9 }).is_err());
    }

    #[test]
    fn invalid_utf8_and_json_are_refused() {
        assert_eq!(
            parse(&[0xff, 0xfe], &Limits::default()).unwrap_err().kind,
            "error"
        );
        assert!(parse(b"{\"type\":", &Limits::default())
            .unwrap_err()
            .message
            .contains("JSON"));
        assert!(parse(b"[1,2]", &Limits::default()).is_err());
        assert!(parse(b"{\"type\":3}", &Limits::default()).is_err());
    }

    #[test]
    fn objects_read_like_serde_json_values() {
        let l = Limits::default();
        // Escapes in keys and values are decoded; the last of a repeated key counts.
        let r = parse(
            br#"{"typ\u0065":"login","user_id":"1","user_id":"2\u0033","user_password":"p\"w","x":{"a":[1,{"b":null}]}}"#,
            &l,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Login {
                user_id: "23".into(),
                password: "p\"w".into()
            }
        );
        // Numbers keep serde_json's spelling.
        let r = parse(
            br#"{"type":"login","user_id":1.5e3,"user_password":-7}"#,
            &l,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::Login {
                user_id: "1500.0".into(),
                password: "-7".into()
            }
        );
        // Wrong kinds of value, and null where a value is optional.
        for v in ["true", "[\"1\"]", "{\"a\":\"1\"}", "null"] {
            let f = format!(r#"{{"type":"login","user_id":{v},"user_password":"p"}}"#);
            let e = parse(f.as_bytes(), &l).unwrap_err();
            assert_eq!(e.kind, "login");
            assert_eq!(e.message, "user_id must be a string", "{v}");
        }
        let r = parse(
            br#"{"type":"send_message","send_id":"1","receiver_id":"2","chat_type":"friend",
            "message_body":"hi","message_type":"text","file_path":null,"message_timestamp":"2026-01-02 03:04:05"}"#,
            &l,
        )
        .unwrap();
        assert!(matches!(r, Request::SendMessage(m) if m.file_path.is_empty()));
        // Anything but an object, and broken syntax inside ignored values.
        for f in [
            &b"\"login\""[..],
            b"12",
            b"null",
            b"[{\"type\":\"login\"}]",
            b"true",
        ] {
            let e = parse(f, &l).unwrap_err();
            assert_eq!(e.message, "request must be a JSON object");
        }
        for f in [
            &br#"{"type":"login","x":[1,}"#[..],
            br#"{"type":"login"} x"#,
            br#"{"type":"login""#,
        ] {
            assert!(parse(f, &l).unwrap_err().message.contains("not valid JSON"));
        }
        let e = parse(br#"{"type":["login"]}"#, &l).unwrap_err();
        assert_eq!(e.message, "request has no \"type\"");
    }

    #[test]
    fn reply_shapes_are_all_strings() {
        let p = Profile {
            user_id: "1".into(),
            phone: "1".into(),
            name: "n".into(),
            email: "1@an.com".into(),
            avatar: "/default.jpg".into(),
            status: "inactive".into(),
            created: "2026-01-01 00:00:00".into(),
        };
        let mut out = Vec::new();
        write_frame(&mut out, &[ProfileReply::new("login", &p)]);
        let v: Value = serde_json::from_slice(&out[4..]).unwrap();
        let obj = v.as_array().unwrap()[0].as_object().unwrap();
        assert!(obj.values().all(Value::is_string));
        assert!(!obj.contains_key("user_password"));
        assert_eq!(obj["type"], "login");
        let c = ChatReply {
            kind: "chatting",
            status: "success",
            comm_id: "2",
            chat_type: "friend",
            last_message: "hi",
            last_message_type: "text",
            last_time: "t",
            unread_count: 3.to_string(),
            chat_status: "chatting",
            user_name: "n",
            user_avatar: "a",
        };
        let mut out = Vec::new();
        write_frame(&mut out, &[c]);
        assert_eq!(
            &send_message_success()[4..],
            br#"{"type":"send_message","status":"success"}"#
        );
        let v: Value = serde_json::from_slice(&out[4..]).unwrap();
        assert_eq!(v[0]["unread_count"], "3");
        assert_eq!(
            u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize,
            out.len() - 4
        );
    }
}
