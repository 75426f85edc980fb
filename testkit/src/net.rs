//! Ports for tests that need a target which is down: [`ClosedPort`] holds a
//! port that refuses connections and that no other test can take, and
//! starts listening on it when the test brings the target up.
//!
//! A port bound and released ([`free_port`](crate::daemon::free_port)) is
//! free for anyone: at several test threads another test's server or
//! outgoing connection can take it in between, and the "closed" target then
//! answers, or the target cannot come up on it later.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// A loopback TCP port reserved for this test: a socket bound to it but not
/// listening, so a connection to it is refused (the kernel answers a reset)
/// and no other socket can bind it meanwhile. [`ClosedPort::open`] starts
/// listening on the same port: the target comes up where the daemon
/// already sends.
#[derive(Debug)]
pub struct ClosedPort {
    socket: Socket,
    port: u16,
}

impl ClosedPort {
    /// Reserves a port the system picks on 127.0.0.1.
    ///
    /// The socket is bound without `SO_REUSEADDR`: on Linux a second bind
    /// to a port is refused unless both sockets set it, and the standard
    /// library's and Tokio's listeners do, so this one must not.
    pub fn reserve() -> ClosedPort {
        let socket =
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("a TCP socket");
        socket
            .bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind 127.0.0.1:0");
        let port = socket
            .local_addr()
            .expect("local address")
            .as_socket()
            .expect("an IP address")
            .port();
        ClosedPort { socket, port }
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts listening on the reserved port (a blocking listener; for
    /// Tokio, `set_nonblocking(true)` then `tokio::net::TcpListener::from_std`).
    pub fn open(self) -> TcpListener {
        self.socket
            .listen(1024)
            .expect("listen on the reserved port");
        self.socket.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;

    #[test]
    fn a_reserved_port_refuses_connections_and_binds_until_it_is_opened() {
        let closed = ClosedPort::reserve();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, closed.port()));
        let refused = TcpStream::connect(addr).expect_err("nothing listens yet");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
        // The standard library's bind sets SO_REUSEADDR, as servers do.
        let taken = TcpListener::bind(addr).expect_err("the port is reserved");
        assert_eq!(taken.kind(), ErrorKind::AddrInUse, "{taken}");
        assert!(closed
            .url("/hook")
            .ends_with(&format!(":{}/hook", closed.port())));

        let listener = closed.open();
        assert_eq!(listener.local_addr().unwrap(), addr);
        let mut client = TcpStream::connect(addr).expect("listening now");
        let (mut served, _) = listener.accept().unwrap();
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        served.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
}
