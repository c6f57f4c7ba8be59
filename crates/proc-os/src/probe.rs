//! Port probes: is something accepting TCP connections on a local port? (The `wait` tool's
//! `port` condition, through the core's `ProbePort` output.)

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};

/// How long a probe waits for an answer: the core asks for "about a second".
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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

    use super::*;

    #[test]
    fn a_listening_port_is_open_and_a_closed_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        assert!(async_io::block_on(probe_port(port, PROBE_TIMEOUT)));
        drop(listener);
        assert!(!async_io::block_on(probe_port(port, PROBE_TIMEOUT)));
    }
}
