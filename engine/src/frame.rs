//! Where a frame is decoded: the wire framing of the Qt client.
//!
//! Each frame, both ways, is a 4-byte big-endian length N followed by N bytes of JSON. The
//! decoder is incremental: bytes are appended as they arrive, any number of complete frames
//! are taken out, and a partial frame waits for the rest. The length is checked before any
//! of the body is buffered, so a hostile length cannot make the server allocate.

/// A frame the decoder refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Incremental decoder for one connection.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the undecoded bytes in `buf`.
    pos: usize,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max,
        }
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        // Reclaim the consumed prefix before growing, so a long-lived connection's buffer
        // stays as large as its largest frame, not as large as all it ever sent.
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame's body, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.pos..];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let start = self.pos + 4;
        self.pos = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }

    /// Bytes received but not yet decoded (handed over with a connection that moves shard).
    pub fn take_remaining(&mut self) -> Vec<u8> {
        let rest = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        rest
    }

    /// Bytes currently held.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Releases the buffer's memory when it has grown past `keep` bytes and holds nothing.
    /// Idle connections then cost almost nothing.
    pub fn shrink_if_idle(&mut self, keep: usize) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > keep {
                self.buf = Vec::new();
            }
        }
    }
}

/// Appends one frame holding `body` to `out`.
pub fn encode(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends a frame whose body is written by `write` (which appends to the vector), filling
/// in the length afterwards: replies are serialised straight into the output buffer.
pub fn encode_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &str) -> Vec<u8> {
        let mut v = Vec::new();
        encode(body.as_bytes(), &mut v);
        v
    }

    #[test]
    fn many_frames_in_one_read() {
        let mut d = FrameDecoder::new(1024);
        let mut bytes = frame("{\"a\":1}");
        bytes.extend(frame("{}"));
        bytes.extend(frame(""));
        d.extend(&bytes);
        assert_eq!(d.next_frame().unwrap(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(d.next_frame().unwrap(), Some(&b"{}"[..]));
        assert_eq!(d.next_frame().unwrap(), Some(&b""[..]));
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn frame_split_over_reads_byte_by_byte() {
        let mut d = FrameDecoder::new(1024);
        let bytes = frame("{\n    \"type\": \"login\"\n}\n");
        for (i, b) in bytes.iter().enumerate() {
            d.extend(&[*b]);
            let got = d.next_frame().unwrap().map(|f| f.to_vec());
            if i + 1 < bytes.len() {
                assert_eq!(got, None);
            } else {
                assert_eq!(got.as_deref(), Some(&bytes[4..]));
            }
        }
    }

    #[test]
    fn oversize_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(16);
        d.extend(&17u32.to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 17, max: 16 })
        );
        let mut d = FrameDecoder::new(16);
        d.extend(&u32::MAX.to_be_bytes());
        assert!(d.next_frame().is_err());
        let mut d = FrameDecoder::new(16);
        d.extend(&frame("0123456789abcdef"));
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(16));
    }

    #[test]
    fn remaining_bytes_are_handed_over() {
        let mut d = FrameDecoder::new(1024);
        let mut bytes = frame("one");
        bytes.extend(&frame("two")[..5]);
        d.extend(&bytes);
        assert_eq!(d.next_frame().unwrap(), Some(&b"one"[..]));
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.take_remaining(), frame("two")[..5].to_vec());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn buffer_is_compacted() {
        let mut d = FrameDecoder::new(1 << 20);
        for _ in 0..10_000 {
            d.extend(&frame("0123456789"));
            assert!(d.next_frame().unwrap().is_some());
        }
        assert!(d.buf.capacity() < 1024);
        d.shrink_if_idle(0);
        assert_eq!(d.buf.capacity(), 0);
    }

    #[test]
    fn encode_with_fills_length() {
        let mut out = vec![9];
        encode_with(&mut out, |o| o.extend_from_slice(b"abc"));
        assert_eq!(out, vec![9, 0, 0, 0, 3, b'a', b'b', b'c']);
    }
}
