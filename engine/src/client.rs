//! A small blocking client that speaks exactly like the Qt client: 4-byte big-endian
//! lengths, indented JSON with sorted keys and a trailing newline. Used by the integration
//! tests, the command-line tools and the load generator.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::frame::{encode, FrameDecoder};

/// The bytes of a request as `QJsonDocument::toJson()` writes them.
pub fn qt_json(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    // A `Value` always serialises.
    let _ = v.serialize(&mut ser);
    out.push(b'\n');
    out
}

/// The `type` of a reply (of its first element for an array).
pub fn reply_type(v: &Value) -> &str {
    let o = match v {
        Value::Array(a) => a.first().unwrap_or(&Value::Null),
        other => other,
    };
    o.get("type").and_then(Value::as_str).unwrap_or("")
}

/// The `status` of a reply (of its last element for an array, as the client reads it).
pub fn reply_status(v: &Value) -> &str {
    let o = match v {
        Value::Array(a) => a.last().unwrap_or(&Value::Null),
        other => other,
    };
    o.get("status").and_then(Value::as_str).unwrap_or("")
}

pub struct Client {
    stream: TcpStream,
    dec: FrameDecoder,
    /// Frames received while waiting for another type.
    held: VecDeque<Value>,
    pub timeout: Duration,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            dec: FrameDecoder::new(64 << 20),
            held: VecDeque::new(),
            timeout: Duration::from_secs(10),
        })
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends one request as the Qt client would.
    pub fn send(&mut self, v: &Value) -> std::io::Result<()> {
        let mut frame = Vec::new();
        encode(&qt_json(v), &mut frame);
        self.stream.write_all(&frame)
    }

    /// Sends raw bytes (for tests of broken input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame, parsed; an error at end of stream or after the timeout.
    pub fn recv(&mut self) -> std::io::Result<Value> {
        if let Some(v) = self.held.pop_front() {
            return Ok(v);
        }
        self.recv_wire()
    }

    /// The next frame as raw bytes (not parsed).
    pub fn recv_bytes(&mut self) -> std::io::Result<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.dec.next_frame() {
                Ok(Some(f)) => return Ok(f.to_vec()),
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.dec.extend(&buf[..n]);
        }
    }

    fn recv_wire(&mut self) -> std::io::Result<Value> {
        let bytes = self.recv_bytes()?;
        serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// Waits for a frame of type `ty`, keeping others for later `recv`s.
    pub fn recv_type(&mut self, ty: &str) -> std::io::Result<Value> {
        if let Some(i) = self.held.iter().position(|v| reply_type(v) == ty) {
            if let Some(v) = self.held.remove(i) {
                return Ok(v);
            }
        }
        loop {
            let v = self.recv_wire()?;
            if reply_type(&v) == ty {
                return Ok(v);
            }
            self.held.push_back(v);
        }
    }

    /// Sends a request and waits for the reply of its type.
    pub fn request(&mut self, v: Value) -> std::io::Result<Value> {
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        self.send(&v)?;
        self.recv_type(&ty)
    }

    pub fn register(&mut self, phone: &str, name: &str, password: &str) -> std::io::Result<Value> {
        self.request(json!({"type": "register", "user_phone": phone, "user_name": name, "user_password": password}))
    }

    pub fn login(&mut self, user: &str, password: &str) -> std::io::Result<Value> {
        self.request(json!({"type": "login", "user_id": user, "user_password": password}))
    }

    pub fn simple(&mut self, ty: &str, user: &str) -> std::io::Result<Value> {
        self.request(json!({"type": ty, "user_id": user}))
    }

    pub fn pair(&mut self, ty: &str, user: &str, friend: &str) -> std::io::Result<Value> {
        self.request(json!({"type": ty, "user_id": user, "friend_id": friend}))
    }

    /// A `send_message` as the client writes it (without waiting for the reply).
    pub fn send_text(&mut self, from: &str, to: &str, body: &str) -> std::io::Result<()> {
        self.send(&json!({
            "type": "send_message", "send_id": from, "receiver_id": to, "chat_type": "friend",
            "message_body": body, "message_type": "text", "file_path": " ",
            "message_timestamp": "2026-11-28 12:00:00"
        }))
    }

    /// Frames already received and held back.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qt_shape() {
        let b = qt_json(&json!({"user_id": "1", "type": "login"}));
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "{\n    \"type\": \"login\",\n    \"user_id\": \"1\"\n}\n"
        );
    }

    #[test]
    fn types_and_statuses() {
        let v = json!([{"type": "friends", "status": "pending"}, {"type": "friends", "status": "success"}]);
        assert_eq!(reply_type(&v), "friends");
        assert_eq!(reply_status(&v), "success");
    }
}
