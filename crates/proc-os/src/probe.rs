//! Port probes: is something accepting TCP connections on a local port? (The `wait` tool's
//! `port` condition, through the core's `ProbePort` output.)

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};

/// How long a probe waits for an answer, as the core's contract says.
pub use proc_state::PROBE_TIMEOUT;

/// Whether a TCP connection to `127.0.0.1:port` is accepted within `timeout`; the connection
/// is closed at once. Refused, unreachable and timed-out connections are all `false`.
pub async fn probe_port(port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    futures_lite::future::or(
        async { Async::<TcpStream>::connect(addr).await.is_ok() },
        async {
            Timer::after(timeout).await;
            false
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::fd::{FromRawFd as _, OwnedFd};

    use nix::libc;

    use super::*;

    /// A TCP port that is bound but not listening: connections to it are refused, and no other
    /// process can take it while the socket lives (unlike a port that was merely freed).
    fn refusing_port() -> (OwnedFd, u16) {
        // SAFETY: plain socket(2), bind(2) and getsockname(2) calls on a socket we own, with
        // a sockaddr_in of the right size.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(fd, (&raw const addr).cast(), len);
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            let named = libc::getsockname(fd, (&raw mut addr).cast(), &mut len);
            assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
            (socket, u16::from_be(addr.sin_port))
        }
    }

    #[test]
    fn a_listening_port_is_open() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        // Generous: the answer comes at once, unless the machine is very busy.
        assert!(async_io::block_on(probe_port(
            port,
            Duration::from_secs(20)
        )));
    }

    #[test]
    fn a_port_nobody_listens_on_is_not() {
        let (_socket, port) = refusing_port();
        assert!(!async_io::block_on(probe_port(port, PROBE_TIMEOUT)));
    }
}
