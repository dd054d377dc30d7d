//! The listening sockets, built by hand.
//!
//! glommio's `TcpListener::bind` fixes the accept backlog at 1024, too small for a login
//! storm, so each shard's socket is made here with socket2: `SO_REUSEPORT` (the kernel
//! spreads new connections over the shards' sockets), a configurable backlog, and bound
//! before any executor starts so that a bad address is reported at once. With port 0 the
//! first socket picks a port and the others join it.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listening sockets sharing `addr`; returns them and the bound address.
pub fn bind_all(
    addr: SocketAddr,
    count: usize,
    backlog: u32,
) -> std::io::Result<(Vec<OwnedFd>, SocketAddr)> {
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let s = bind_one(bound, backlog)?;
        bound = s.local_addr()?.as_socket().unwrap_or(bound);
        fds.push(OwnedFd::from(s));
    }
    Ok((fds, bound))
}

fn bind_one(addr: SocketAddr, backlog: u32) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_port_is_shared() {
        let (fds, addr) = bind_all("127.0.0.1:0".parse().unwrap(), 3, 16).unwrap();
        assert_eq!(fds.len(), 3);
        assert_ne!(addr.port(), 0);
        for fd in fds {
            let s = Socket::from(fd);
            assert_eq!(s.local_addr().unwrap().as_socket().unwrap(), addr);
        }
    }
}
