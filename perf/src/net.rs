//! One non-blocking client connection, driven by a `mio` event loop.
//!
//! The generator must cost far less than the server it loads, so it does not spend a thread
//! (and a stack, and context switches) per connection: a handful of threads each poll many
//! of these. Sockets are registered edge-triggered for both directions once; a readable
//! event is drained to `WouldBlock`, and output is appended to a buffer that is flushed
//! once per loop iteration, so the K messages a sender queues after an ack leave in one
//! `write` system call.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use corechat_engine::frame::FrameDecoder;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::nats;
use crate::wire::{self, Protocol, Reply};

/// Largest reply frame accepted: the server's replies are small; this only bounds memory
/// if a broken peer sends a huge length.
const MAX_FRAME: usize = 16 << 20;

/// What reading found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// The socket is drained and still open.
    Open,
    /// The peer closed the connection.
    Closed,
}

/// What the peer sends, decoded by its protocol.
#[derive(Debug)]
enum Decoder {
    Frames(FrameDecoder),
    Nats(nats::Decoder),
}

#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    dec: Decoder,
    out: Vec<u8>,
    out_pos: usize,
    connected: bool,
}

impl Conn {
    /// Starts a non-blocking connect and registers the socket under `token`.
    pub fn connect(
        addr: SocketAddr,
        registry: &Registry,
        token: Token,
        protocol: Protocol,
    ) -> io::Result<Conn> {
        let mut stream = TcpStream::connect(addr)?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Conn {
            stream,
            dec: match protocol {
                Protocol::Corechat => Decoder::Frames(FrameDecoder::new(MAX_FRAME)),
                Protocol::Nats => Decoder::Nats(nats::Decoder::default()),
            },
            out: Vec::new(),
            out_pos: 0,
            connected: false,
        })
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// After a writable event on a connecting socket: `Ok(true)` once the connection is
    /// established, `Ok(false)` if it is still in progress, an error if it failed.
    pub fn finish_connect(&mut self) -> io::Result<bool> {
        if self.connected {
            return Ok(true);
        }
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                self.stream.set_nodelay(true)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The output buffer, to append complete frames to; sent by [`Conn::flush`].
    pub fn out(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    pub fn has_output(&self) -> bool {
        self.out_pos < self.out.len()
    }

    /// Writes buffered output until done or the socket would block (the rest goes on the
    /// next writable event).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.connected {
            return Ok(());
        }
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > (1 << 16) && self.out_pos * 2 > self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads everything available (edge-triggered: until `WouldBlock`) into the decoder.
    pub fn fill(&mut self, scratch: &mut [u8]) -> io::Result<ReadState> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return Ok(ReadState::Closed),
                Ok(n) => match &mut self.dec {
                    Decoder::Frames(d) => d.extend(&scratch[..n]),
                    Decoder::Nats(d) => d.extend(&scratch[..n]),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadState::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete reply received, if any: `Some(Err(()))` for one that could not be
    /// parsed (counted as malformed), `Err` when the stream cannot be decoded any further.
    #[allow(clippy::result_unit_err)]
    pub fn next_reply(&mut self) -> Result<Option<Result<Reply, ()>>, String> {
        match &mut self.dec {
            Decoder::Frames(d) => match d.next_frame() {
                Ok(Some(f)) => Ok(Some(wire::parse(f).map_err(|_| ()))),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Decoder::Nats(d) => d.next_reply(),
        }
    }

    /// Deregisters the socket; dropping the connection then closes it.
    pub fn close(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.stream);
    }
}
