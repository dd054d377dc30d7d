//! The NATS text protocol, as much of it as the 1:1 comparison needs: the client side of
//! CONNECT, SUB, PUB, PING/PONG, and a decoder for what the server sends (INFO, MSG, PING,
//! PONG, +OK, -ERR). No client crate: the generator drives NATS connections with the same
//! `mio` loop and state machine as corechat's, so both are measured the same way.
//!
//! The mapping onto the generator's steps:
//!
//! - *login* = `CONNECT {..}` + `SUB u.<user> 1` + `PING`; its `PONG` means the server has
//!   processed the subscription, so the user is ready to receive.
//! - *send* = `PUB u.<receiver> <n>` + payload + `PING`; the `PONG` is the *ack* (NATS's
//!   flush: the server has processed the publication and routed it to the subscriber's
//!   outbound buffer; unlike corechat's ack it says nothing about durability).
//! - *delivery* = `MSG u.<receiver> 1 <n>` arriving at the receiver.
//!
//! A connection's PONGs come in the order of its PINGs, so the driver matches each one with
//! its oldest outstanding request, exactly as it matches corechat's in-order replies.

use crate::wire::{Kind, Reply, Status, Tag};

/// Longest control line accepted (INFO carries a JSON object of a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

/// The subject a user subscribes to.
pub fn subject(user: &str) -> String {
    format!("u.{user}")
}

/// CONNECT (no echo, no verbose +OK), SUB to the user's own subject, then PING.
pub fn connect(user: &str) -> Vec<u8> {
    format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"tls_required\":false,\
         \"name\":\"corechat-bench\",\"lang\":\"rust\",\"version\":\"{}\",\"protocol\":1,\
         \"echo\":false}}\r\nSUB {} 1\r\nPING\r\n",
        env!("CARGO_PKG_VERSION"),
        subject(user)
    )
    .into_bytes()
}

/// Incremental decoder of what a NATS server sends.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    pos: usize,
}

impl Decoder {
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete operation: `Ok(Some(Ok(reply)))`, `Ok(Some(Err(())))` for a line
    /// the generator does not understand, `Ok(None)` when more bytes are needed, `Err` when
    /// the stream cannot be decoded any further.
    #[allow(clippy::result_unit_err)]
    pub fn next_reply(&mut self) -> Result<Option<Result<Reply, ()>>, String> {
        let avail = &self.buf[self.pos..];
        let Some(eol) = avail.windows(2).position(|w| w == b"\r\n") else {
            if avail.len() > MAX_LINE {
                return Err(format!("a NATS control line longer than {MAX_LINE} bytes"));
            }
            return Ok(None);
        };
        let line = &avail[..eol];
        let op_end = line
            .iter()
            .position(|b| *b == b' ' || *b == b'\t')
            .unwrap_or(line.len());
        let op = &line[..op_end];
        let reply = |kind, status, message: Option<String>| Reply {
            kind,
            status,
            message,
            tag: None,
        };
        let out = if op.eq_ignore_ascii_case(b"MSG") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let n: Option<usize> = std::str::from_utf8(line)
                .ok()
                .and_then(|l| l.split_ascii_whitespace().last())
                .and_then(|s| s.parse().ok());
            let Some(n) = n else {
                return Err(format!(
                    "bad MSG line: {}",
                    String::from_utf8_lossy(&line[..line.len().min(200)])
                ));
            };
            let start = eol + 2;
            if avail.len() < start + n + 2 {
                return Ok(None);
            }
            let payload = &avail[start..start + n];
            let tag = std::str::from_utf8(payload).ok().and_then(Tag::parse);
            self.pos += start + n + 2;
            return Ok(Some(Ok(Reply {
                kind: Kind::ReceiveMessage,
                status: Status::Success,
                message: None,
                tag,
            })));
        } else if op.eq_ignore_ascii_case(b"PONG") {
            Ok(reply(Kind::Pong, Status::Success, None))
        } else if op.eq_ignore_ascii_case(b"PING") {
            Ok(reply(Kind::Ping, Status::Success, None))
        } else if op.eq_ignore_ascii_case(b"INFO") || op.eq_ignore_ascii_case(b"+OK") {
            Ok(reply(Kind::Hello, Status::Success, None))
        } else if op.eq_ignore_ascii_case(b"-ERR") {
            let m = String::from_utf8_lossy(&line[op_end..])
                .trim()
                .trim_matches('\'')
                .to_string();
            Ok(reply(Kind::Other, Status::Error, Some(m)))
        } else {
            Err(())
        };
        self.pos += eol + 2;
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_split_stream() {
        let wire = b"INFO {\"server_id\":\"x\"}\r\nPONG\r\nMSG u.7 1 8\r\ncb:1:2:3\r\nPING\r\n-ERR 'Slow Consumer'\r\nMSG u.7 1 reply.x 2\r\nhi\r\n";
        let mut d = Decoder::default();
        let mut got = Vec::new();
        // Byte by byte: every split point must work.
        for b in wire.iter() {
            d.extend(&[*b]);
            while let Some(r) = d.next_reply().unwrap() {
                got.push(r.unwrap());
            }
        }
        let kinds: Vec<Kind> = got.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            vec![
                Kind::Hello,
                Kind::Pong,
                Kind::ReceiveMessage,
                Kind::Ping,
                Kind::Other,
                Kind::ReceiveMessage
            ]
        );
        assert_eq!(
            got[2].tag.map(|t| (t.pair, t.seq, t.sent_ns)),
            Some((1, 2, 3))
        );
        assert_eq!(got[4].status, Status::Error);
        assert_eq!(got[4].message.as_deref(), Some("Slow Consumer"));
        assert_eq!(got[5].tag, None);
    }

    #[test]
    fn connect_subscribes_and_pings() {
        let c = String::from_utf8(connect("42")).unwrap();
        assert!(c.starts_with("CONNECT {"));
        assert!(c.contains("\"echo\":false"));
        assert!(c.ends_with("}\r\nSUB u.42 1\r\nPING\r\n"));
    }

    #[test]
    fn unknown_lines_and_garbage() {
        let mut d = Decoder::default();
        d.extend(b"WHAT\r\n");
        assert_eq!(d.next_reply().unwrap(), Some(Err(())));
        d.extend(b"MSG u.1 1 x\r\n");
        assert!(d.next_reply().is_err());
    }
}
