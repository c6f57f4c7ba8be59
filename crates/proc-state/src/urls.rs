//! The URLs a task printed: dev servers announce where they listen (`Local:
//! http://localhost:5173/`), and an assistant should not have to grep for it.
//!
//! [`Urls`] keeps the most recent distinct ones ([`MAX_URLS`], each at most [`MAX_URL_BYTES`]),
//! newest last. It looks at output cheaply: every chunk is searched for `://` (a vectorised
//! substring search), and only when that is found, or a line holding one is still being
//! printed, are the new lines read back from the task's buffer and matched against the URL
//! pattern. A flood without URLs costs one pass of `memmem` over its bytes.

use std::collections::VecDeque;
use std::sync::LazyLock;

use regex::Regex;

use crate::log::{LogBuffer, Query};

/// Most URLs kept per task.
pub const MAX_URLS: usize = 8;
/// Longest URL kept, in bytes; longer ones are left out.
pub const MAX_URL_BYTES: usize = 512;

/// `http`, `https`, `ws` or `wss`, `://`, a host (a name, an IPv4 address or a bracketed IPv6
/// address), an optional port, and an optional path, query and fragment (RFC 3986 §3); it ends
/// at whitespace, quotes, angle brackets or an escape sequence.
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b(?:https?|wss?)://(?:[a-z0-9](?:[a-z0-9.\-]*[a-z0-9])?|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?(?:[/?#][^\s"'<>`\x1b]*)?"#,
    )
    .expect("the URL pattern compiles")
});

/// Characters that end a sentence rather than a URL when they come last (`see
/// http://host:8080/.`, `(http://host/)`).
const TRAILING: &[char] = &['.', ',', ';', ':', '!', '?', ')', ']', '}', '\'', '"'];

/// The URLs a task printed, most recent last, each once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Urls {
    recent: VecDeque<String>,
    /// The first line not looked at yet.
    scanned: u64,
    /// The last two bytes of the previous chunk, so a `://` cut between chunks is seen.
    tail: [u8; 2],
    /// A partial line holds a `://`: look again when more comes.
    pending: bool,
}

impl Urls {
    /// The URLs, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &str> + ExactSizeIterator {
        self.recent.iter().map(String::as_str)
    }

    /// No URL seen yet.
    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }

    /// Looks at a chunk just pushed into `log` for URLs.
    pub fn observe(&mut self, chunk: &[u8], log: &LogBuffer) {
        // The seam: the last two bytes before this chunk and its first two.
        let edge = chunk.len().min(2);
        let mut seam = [self.tail[0], self.tail[1], 0, 0];
        seam[2..2 + edge].copy_from_slice(&chunk[..edge]);
        let hit = memchr::memmem::find(chunk, b"://").is_some()
            || memchr::memmem::find(&seam[..2 + edge], b"://").is_some();
        for &byte in &chunk[chunk.len() - edge..] {
            self.tail = [self.tail[1], byte];
        }
        if !(hit || self.pending) {
            self.scanned = log.next_cursor();
            return;
        }
        let page = log.read(&Query {
            since: Some(self.scanned),
            tail: None,
            head: None,
            grep: None,
            stream: None,
            max_bytes: usize::MAX,
            line_overhead: 0,
            raw: false,
            timestamps: false,
        });
        self.pending = false;
        for line in &page.lines {
            if line.partial {
                self.pending |= line.text.contains("://");
                continue;
            }
            for found in URL.find_iter(&line.text) {
                self.remember(found.as_str().trim_end_matches(TRAILING));
            }
        }
        self.scanned = log.next_cursor();
    }

    fn remember(&mut self, url: &str) {
        if url.len() > MAX_URL_BYTES || !url.contains("://") {
            return;
        }
        if let Some(at) = self.recent.iter().position(|u| u == url) {
            let again = self.recent.remove(at).expect("found");
            self.recent.push_back(again);
            return;
        }
        if self.recent.len() == MAX_URLS {
            self.recent.pop_front();
        }
        self.recent.push_back(url.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogLimits;
    use crate::process::Stream;

    fn seen(chunks: &[&str]) -> Vec<String> {
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 1 << 20,
            max_line_bytes: 1 << 10,
        });
        let mut urls = Urls::default();
        for chunk in chunks {
            let _ = log.push(Stream::Stdout, chunk.as_bytes(), 0);
            urls.observe(chunk.as_bytes(), &log);
        }
        urls.iter().map(str::to_owned).collect()
    }

    #[test]
    fn finds_what_dev_servers_print() {
        assert_eq!(
            seen(&[
                "  VITE v5.0.0  ready in 300 ms\n",
                "  ➜  Local:   http://localhost:5173/\n",
                "Serving HTTP on 127.0.0.1 port 8000 (http://127.0.0.1:8000/) ...\n",
                "ws at ws://[::1]:9229/abc, see https://example.com.\n",
            ]),
            [
                "http://localhost:5173/",
                "http://127.0.0.1:8000/",
                "ws://[::1]:9229/abc",
                "https://example.com"
            ]
        );
    }

    #[test]
    fn a_url_cut_between_chunks_or_printed_slowly_is_found_once_its_line_ends() {
        assert_eq!(
            seen(&["listening on http:", "//0.0.0.0:3000", "/api\n"]),
            ["http://0.0.0.0:3000/api"]
        );
        assert_eq!(seen(&["a http:/", "/h:1/ b\n"]), ["http://h:1/"]);
    }

    #[test]
    fn keeps_the_most_recent_distinct_ones() {
        let lines: Vec<String> = (0..12)
            .map(|i| format!("http://h:{}/\n", 8000 + i % 10))
            .collect();
        let chunks: Vec<&str> = lines.iter().map(String::as_str).collect();
        let urls = seen(&chunks);
        assert_eq!(urls.len(), MAX_URLS);
        // 8000 and 8001 came again last.
        assert_eq!(urls[MAX_URLS - 1], "http://h:8001/");
        assert_eq!(urls[MAX_URLS - 2], "http://h:8000/");
        assert!(!urls.contains(&"http://h:8002/".to_owned()));
    }

    #[test]
    fn ignores_text_without_urls_and_schemes_it_does_not_know() {
        assert!(seen(&["plain\n", "ftp://x/ file:///etc\n", "http://\n"]).is_empty());
    }
}
