//! Probes, the answer to the core's `Output::Probe` (the `wait` tool's `port` and `url`
//! conditions): is something accepting TCP connections on a local port ([`probe_port`]), and
//! what status does a URL answer an HTTP `GET` with ([`probe_http`])?
//!
//! A port probe is a non-blocking connect(2) on the reactor ([`async_io`]). An HTTP probe is a
//! blocking request with [`ureq`] on the blocking thread pool that smol and async-std share
//! ([`blocking::unblock`]): HTTP/1.1 (RFC 9112), a `GET` (RFC 9110 §9.3.1) of an absolute
//! `http://` URL, no proxy whatever the environment says, no redirect followed (a `3xx` is an
//! answer like any other status), no TLS (an `https://` URL fails at once), and the response's
//! body never read: the status line is the answer. [`probe`] picks one for a
//! [`ProbeTarget`].

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use async_io::{Async, Timer};
use proc_state::{ProbeOutcome, ProbeTarget};

/// How long a probe waits for an answer, as the core's contract says.
pub use proc_state::PROBE_TIMEOUT;

/// How long an HTTP probe may take, connection and the response's head together, as the
/// core's contract says.
pub use proc_state::HTTP_PROBE_TIMEOUT;

/// What `target` finds, within the contract's time ([`PROBE_TIMEOUT`] for a port,
/// [`HTTP_PROBE_TIMEOUT`] for a URL): [`ProbeOutcome::Open`] for a port that accepted a
/// connection, [`ProbeOutcome::Http`] with the status a URL answered, else
/// [`ProbeOutcome::Failed`] with the reason.
pub async fn probe(target: ProbeTarget) -> ProbeOutcome {
    match target {
        ProbeTarget::Port(port) => match connect(port, PROBE_TIMEOUT).await {
            Ok(()) => ProbeOutcome::Open,
            Err(reason) => ProbeOutcome::Failed(reason),
        },
        ProbeTarget::Http(url) => probe_http(url, HTTP_PROBE_TIMEOUT).await,
    }
}

/// [`http_status`] on the blocking thread pool ([`blocking::unblock`]), so that the caller's
/// executor is never blocked. Dropping the future gives up waiting; the request itself ends
/// on its own within `timeout`.
pub async fn probe_http(url: String, timeout: Duration) -> ProbeOutcome {
    blocking::unblock(move || http_status(&url, timeout)).await
}

/// Sends `GET url` (HTTP/1.1, RFC 9110 §9.3.1) and returns the status code of the answer,
/// whatever it is (`2xx` to `5xx`, and `3xx` without following the redirect), as
/// [`ProbeOutcome::Http`]; or [`ProbeOutcome::Failed`] with the reason, for people: a URL that
/// is not `http://` (`https://` is not supported: no TLS), a name that does not resolve, a
/// connection refused or reset, an answer that is not HTTP, nothing within `timeout`
/// (resolution, connection, request and the answer's head together). No proxy is used, whatever
/// `http_proxy` and the like say; the connection is closed without reading the body. Blocks
/// the calling thread.
pub fn http_status(url: &str, timeout: Duration) -> ProbeOutcome {
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some(scheme) if scheme.eq_ignore_ascii_case("http") => {}
        Some(scheme) if scheme.eq_ignore_ascii_case("https") => {
            return ProbeOutcome::Failed("https is not supported".to_owned());
        }
        _ => return ProbeOutcome::Failed(format!("not an http:// URL: {url}")),
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_idle_connections(0)
        .user_agent(concat!("proc-mcp/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    match agent.get(url).call() {
        Ok(response) => ProbeOutcome::Http(response.status().as_u16()),
        Err(ureq::Error::Timeout(_)) => {
            ProbeOutcome::Failed(format!("no answer within {timeout:?}"))
        }
        Err(err) => ProbeOutcome::Failed(err.to_string()),
    }
}

/// Whether a TCP connection to `127.0.0.1:port` is accepted within `timeout`; the connection
/// is closed at once. Refused, unreachable and timed-out connections are all `false`.
pub async fn probe_port(port: u16, timeout: Duration) -> bool {
    connect(port, timeout).await.is_ok()
}

/// A TCP connection to `127.0.0.1:port`, closed at once; why there is none, for people.
async fn connect(port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    futures_lite::future::or(
        async {
            Async::<TcpStream>::connect(addr)
                .await
                .map(drop)
                .map_err(|err| format!("{addr}: {err}"))
        },
        async {
            Timer::after(timeout).await;
            Err(format!("{addr}: no connection within {timeout:?}"))
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
    use crate::testutil::recv_within;

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

    /// Generous bounds for what should come at once, unless the machine is very busy.
    const LONG: Duration = Duration::from_secs(20);

    /// An HTTP server for one connection, on a thread: it reads the request's head and hands
    /// it, with the connection, to `answer`. Its port, and the request's head once answered.
    fn serve_once(
        answer: impl FnOnce(&mut TcpStream, &str) + Send + 'static,
    ) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut head = Vec::new();
            let mut byte = [0_u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                let read = std::io::Read::read(&mut stream, &mut byte).expect("read");
                assert_eq!(read, 1, "the request ended early: {head:?}");
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).expect("a UTF-8 request head");
            answer(&mut stream, &head);
            head
        });
        (port, server)
    }

    fn reply(stream: &mut TcpStream, text: &str) {
        std::io::Write::write_all(stream, text.as_bytes()).expect("write the answer");
    }

    #[test]
    fn a_404_is_a_status_like_any_other() {
        let (port, server) = serve_once(|stream, _| {
            reply(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found",
            );
        });
        let url = format!("http://127.0.0.1:{port}/health?x=1");
        let outcome = async_io::block_on(probe(ProbeTarget::Http(url)));
        assert_eq!(outcome, ProbeOutcome::Http(404));
        let head = server.join().expect("server");
        assert!(
            head.starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "a GET of the path, not of the whole URL (no proxy): {head:?}"
        );
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("\r\nhost: 127.0.0.1:{port}\r\n")),
            "{head:?}"
        );
    }

    #[test]
    fn a_redirect_is_answered_not_followed() {
        // Where it points to refuses connections: following it would fail the probe.
        let (_socket, refused) = refusing_port();
        let (port, server) = serve_once(move |stream, _| {
            reply(
                stream,
                &format!(
                    "HTTP/1.1 301 Moved Permanently\r\nLocation: \
                     http://127.0.0.1:{refused}/\r\nContent-Length: 0\r\n\r\n"
                ),
            );
        });
        let outcome = http_status(&format!("http://127.0.0.1:{port}/"), LONG);
        assert_eq!(outcome, ProbeOutcome::Http(301));
        server.join().expect("server");
    }

    #[test]
    fn a_refused_connection_fails() {
        let (_socket, port) = refusing_port();
        let outcome = http_status(&format!("http://127.0.0.1:{port}/"), LONG);
        let ProbeOutcome::Failed(reason) = outcome else {
            panic!("not a failure: {outcome:?}");
        };
        assert!(reason.contains("refused"), "{reason}");
        let outcome = async_io::block_on(probe(ProbeTarget::Port(port)));
        let ProbeOutcome::Failed(reason) = outcome else {
            panic!("not a failure: {outcome:?}");
        };
        assert!(reason.contains("refused"), "{reason}");
    }

    #[test]
    fn an_open_port_is_open() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let outcome = async_io::block_on(probe(ProbeTarget::Port(port)));
        assert_eq!(outcome, ProbeOutcome::Open);
    }

    #[test]
    fn a_slow_answer_is_waited_for() {
        let (got, request) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (port, server) = serve_once(move |stream, head| {
            got.send(head.to_owned()).expect("the test listens");
            released.recv().expect("released");
            reply(
                stream,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            );
        });
        let (done, outcome) = std::sync::mpsc::channel();
        let url = format!("http://127.0.0.1:{port}/");
        std::thread::spawn(move || done.send(http_status(&url, LONG)));
        let head = recv_within(&request, LONG, "the request");
        assert!(head.starts_with("GET / HTTP/1.1"), "{head:?}");
        // The answer is held back a while: the probe waits for it.
        assert!(
            outcome.recv_timeout(Duration::from_millis(500)).is_err(),
            "the probe did not wait for the answer"
        );
        release.send(()).expect("the server waits");
        let outcome = recv_within(&outcome, LONG, "the probe's outcome");
        assert_eq!(outcome, ProbeOutcome::Http(503));
        server.join().expect("server");
    }

    #[test]
    fn no_answer_in_time_fails() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (port, server) = serve_once(move |_, _| {
            // Holds the connection open, answering nothing, until the test is done.
            let _ = released.recv();
        });
        let timeout = Duration::from_millis(300);
        let start = std::time::Instant::now();
        let outcome = http_status(&format!("http://127.0.0.1:{port}/"), timeout);
        let took = start.elapsed();
        release.send(()).expect("the server waits");
        server.join().expect("server");
        let ProbeOutcome::Failed(reason) = outcome else {
            panic!("not a failure: {outcome:?}");
        };
        assert!(reason.contains("no answer within"), "{reason}");
        assert!(took >= timeout, "gave up after {took:?}");
        assert!(took < LONG, "gave up after {took:?}");
    }

    #[test]
    fn what_is_not_http_fails() {
        let (port, server) = serve_once(|stream, _| reply(stream, "SSH-2.0-OpenSSH_9.6\r\n"));
        let outcome = http_status(&format!("http://127.0.0.1:{port}/"), LONG);
        assert!(matches!(outcome, ProbeOutcome::Failed(_)), "{outcome:?}");
        server.join().expect("server");
    }

    #[test]
    fn only_http_urls_are_probed() {
        assert_eq!(
            http_status("https://127.0.0.1:1/", LONG),
            ProbeOutcome::Failed("https is not supported".to_owned())
        );
        assert_eq!(
            http_status("HTTPS://localhost/", LONG),
            ProbeOutcome::Failed("https is not supported".to_owned())
        );
        for url in ["ftp://127.0.0.1/", "127.0.0.1:80/", ""] {
            let outcome = http_status(url, LONG);
            assert!(
                matches!(outcome, ProbeOutcome::Failed(_)),
                "{url}: {outcome:?}"
            );
        }
    }
}
