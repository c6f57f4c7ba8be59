//! A task's standard input: the bytes `write` queued for it, fed to the pipe as fast as the
//! process reads them, and never more than a bounded amount at a time.
//!
//! The queue lives here, in the core, so that no byte reaches the pipe after the client said
//! otherwise: the driver is only ever handed what the pipe may take *now* (one
//! [`StdinAction::Write`] at a time, written without blocking and reported at once), and the
//! rest stays queued until the driver says the pipe has room again. A cancelled `write` or a
//! later `write` with `eof` drops what is still queued; the process never sees those bytes.
//!
//! ```text
//!            push ──▶ [ segment | segment | … ]  ≤ limit bytes
//!                         │ one chunk (≤ CHUNK_BYTES) in flight
//!                         ▼
//!   Write(chunk) ──▶ driver write(2), O_NONBLOCK ──▶ Written(n)   n < chunk: wait for Ready
//! ```

use std::collections::VecDeque;

/// Most bytes handed to the driver in one write to a task's stdin
/// ([`Output::WriteStdin`](crate::Output::WriteStdin)).
pub const CHUNK_BYTES: usize = 64 << 10;

/// Identifies the bytes of one `write` call in the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

/// What the driver must do for this stdin.
#[derive(Debug, PartialEq, Eq)]
pub enum StdinAction {
    /// Write as much of these bytes as the pipe takes without waiting, and report how much.
    Write(Vec<u8>),
    /// Close the pipe: the process reads end-of-file.
    Close,
}

/// How a stdin pipe can be written to.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pipe {
    /// The task was started without `stdin: true`.
    None,
    /// Piped, but the process is not spawned yet: writes queue up.
    Unspawned,
    /// The pipe is open.
    Open {
        /// The chunk handed to the driver and not reported yet: its segment and length.
        in_flight: Option<(SegmentId, usize)>,
        /// The pipe took everything so far; `false` after a short write, until the driver says
        /// it has room again.
        ready: bool,
    },
    /// Closed: by `eof`, because the process closed its end, or because it ended.
    Closed(Closed),
}

/// Why stdin cannot be written to any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    /// A `write` with `eof` closed it.
    ByEof,
    /// The process closed its end (the write failed with `EPIPE`) or could not be written to.
    ByProcess,
    /// The process (its run) ended.
    Ended,
}

#[derive(Debug)]
struct Segment {
    id: SegmentId,
    data: Vec<u8>,
    /// Bytes of `data` the pipe took.
    written: usize,
    /// Dropped (cancelled or superseded by `eof`): the chunk in flight is accounted, nothing
    /// more is written.
    dropped: bool,
}

impl Segment {
    fn left(&self) -> usize {
        if self.dropped {
            0
        } else {
            self.data.len() - self.written
        }
    }
}

/// Where one `write`'s bytes stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of this write the pipe took.
    pub written: usize,
    /// Bytes of this write still queued.
    pub queued: usize,
    /// Bytes of this write that will never be written (cancelled, superseded by `eof`, or the
    /// pipe closed).
    pub dropped: usize,
}

/// Why a `write` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The task has no stdin pipe.
    NotPiped,
    /// Stdin was closed.
    Closed(Closed),
    /// The queue would exceed its limit: `queued` bytes are waiting already.
    Full { queued: usize, limit: usize },
}

/// One task's stdin: its pipe's state and the queue of bytes for it.
#[derive(Debug)]
pub struct Stdin {
    pipe: Pipe,
    segments: VecDeque<Segment>,
    /// Sum of `left()` over the segments.
    queued: usize,
    /// Most bytes queued at once.
    limit: usize,
    /// Close once the queue has drained (`eof` was asked for).
    close_when_drained: bool,
    /// Final figures of segments that left the queue, until asked for.
    done: Vec<(SegmentId, Progress)>,
    next_segment: u64,
}

impl Stdin {
    /// A stdin for a task started with `piped` (else writes are refused), queueing at most
    /// `limit` bytes.
    pub fn new(piped: bool, limit: usize) -> Self {
        Self {
            pipe: if piped { Pipe::Unspawned } else { Pipe::None },
            segments: VecDeque::new(),
            queued: 0,
            limit,
            close_when_drained: false,
            done: Vec::new(),
            next_segment: 0,
        }
    }

    /// The same stdin for a new run: an empty queue, open once spawned.
    pub fn reset(&mut self) {
        let piped = self.pipe != Pipe::None;
        self.end();
        *self = Self {
            next_segment: self.next_segment,
            ..Self::new(piped, self.limit)
        };
    }

    /// Whether the task was started with a stdin pipe.
    #[cfg(test)]
    pub fn is_piped(&self) -> bool {
        self.pipe != Pipe::None
    }

    /// Why writes are refused now, if they are.
    pub fn closed(&self) -> Option<Closed> {
        match self.pipe {
            Pipe::Closed(why) => Some(why),
            _ if self.close_when_drained => Some(Closed::ByEof),
            _ => None,
        }
    }

    /// Bytes queued and not yet taken by the pipe.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether segment `id` still has bytes queued (or a chunk in flight).
    pub fn is_queued(&self, id: SegmentId) -> bool {
        self.segments.iter().any(|s| s.id == id)
    }

    /// Whether no chunk is in flight: every `write` so far knows where it stands.
    pub fn is_settled(&self) -> bool {
        !matches!(
            self.pipe,
            Pipe::Open {
                in_flight: Some(_),
                ..
            }
        )
    }

    /// Queues `data` (then end-of-file if `eof`; `eof` first drops what earlier writes still
    /// have queued). Returns the segment's id and the bytes dropped from earlier writes.
    ///
    /// # Errors
    /// [`Refused`] when there is no pipe, it was closed, or the queue would exceed its limit.
    pub fn push(&mut self, data: Vec<u8>, eof: bool) -> Result<(SegmentId, usize), Refused> {
        match self.pipe {
            Pipe::None => return Err(Refused::NotPiped),
            Pipe::Closed(why) => return Err(Refused::Closed(why)),
            _ if self.close_when_drained => return Err(Refused::Closed(Closed::ByEof)),
            _ => {}
        }
        let earlier = if eof { 0 } else { self.queued };
        if earlier + data.len() > self.limit {
            return Err(Refused::Full {
                queued: self.queued,
                limit: self.limit,
            });
        }
        let mut dropped = 0;
        if eof {
            for segment in &mut self.segments {
                dropped += segment.left();
                segment.dropped = true;
            }
            self.queued = 0;
            self.close_when_drained = true;
            self.retire_finished();
        }
        let id = SegmentId(self.next_segment);
        self.next_segment += 1;
        self.queued += data.len();
        self.segments.push_back(Segment {
            id,
            data,
            written: 0,
            dropped: false,
        });
        // An empty write is done at once (it asks only how the queue stands).
        self.retire_finished();
        Ok((id, dropped))
    }

    /// Drops what is left of segment `id` (a cancelled `write`); the process never sees it.
    /// Returns the bytes dropped.
    pub fn cancel(&mut self, id: SegmentId) -> usize {
        let Some(segment) = self.segments.iter_mut().find(|s| s.id == id) else {
            return 0;
        };
        let dropped = segment.left();
        segment.dropped = true;
        self.queued -= dropped;
        self.retire_finished();
        dropped
    }

    /// The process was spawned: the pipe opens.
    pub fn spawned(&mut self) {
        if self.pipe == Pipe::Unspawned {
            self.pipe = Pipe::Open {
                in_flight: None,
                ready: true,
            };
        }
    }

    /// The next thing for the driver to do, if any: a chunk to write, or the close.
    pub fn poll_action(&mut self) -> Option<StdinAction> {
        let Pipe::Open {
            in_flight: in_flight @ None,
            ready: true,
        } = &mut self.pipe
        else {
            return None;
        };
        if let Some(segment) = self.segments.front() {
            let start = segment.written;
            let end = segment.data.len().min(start + CHUNK_BYTES);
            *in_flight = Some((segment.id, end - start));
            return Some(StdinAction::Write(segment.data[start..end].to_vec()));
        }
        if self.close_when_drained {
            self.pipe = Pipe::Closed(Closed::ByEof);
            return Some(StdinAction::Close);
        }
        None
    }

    /// The driver wrote `result` of the chunk in flight: `Ok(n)` bytes (`n` may be short: the
    /// pipe is full, wait for [`Stdin::ready`]), or `Err` (the process closed its end: every
    /// queued byte is dropped). A report with no chunk in flight is ignored.
    pub fn written(&mut self, result: Result<usize, ()>) {
        let Pipe::Open { in_flight, ready } = &mut self.pipe else {
            return;
        };
        let Some((id, len)) = in_flight.take() else {
            return;
        };
        match result {
            Ok(n) => {
                let n = n.min(len);
                *ready = n == len;
                if let Some(segment) = self.segments.iter_mut().find(|s| s.id == id) {
                    let was = segment.left();
                    segment.written += n;
                    self.queued -= was - segment.left();
                }
                self.retire_finished();
            }
            Err(()) => {
                self.pipe = Pipe::Closed(Closed::ByProcess);
                self.drop_all();
            }
        }
    }

    /// The pipe has room again after a short write.
    pub fn ready(&mut self) {
        if let Pipe::Open { ready, .. } = &mut self.pipe {
            *ready = true;
        }
    }

    /// The process ended: nothing more can be written; the queue is dropped.
    pub fn end(&mut self) {
        if self.pipe != Pipe::None {
            self.pipe = Pipe::Closed(Closed::Ended);
        }
        self.drop_all();
    }

    /// Where segment `id` stands, if it is still queued or finished since last asked
    /// (finished segments are reported once).
    pub fn progress(&mut self, id: SegmentId) -> Option<Progress> {
        if let Some(segment) = self.segments.iter().find(|s| s.id == id) {
            return Some(Progress {
                written: segment.written,
                queued: segment.left(),
                dropped: if segment.dropped {
                    segment.data.len() - segment.written
                } else {
                    0
                },
            });
        }
        let index = self.done.iter().position(|(done, _)| *done == id)?;
        Some(self.done.swap_remove(index).1)
    }

    fn drop_all(&mut self) {
        for segment in &mut self.segments {
            segment.dropped = true;
        }
        self.queued = 0;
        self.retire_finished();
        // Dropped segments with a chunk in flight are retired by `written`; with the pipe
        // closed none can be.
        if !matches!(self.pipe, Pipe::Open { .. }) {
            for segment in self.segments.drain(..) {
                self.done.push((segment.id, final_progress(&segment)));
            }
        }
    }

    /// Moves segments with nothing left to write (and no chunk in flight) to `done`.
    fn retire_finished(&mut self) {
        let in_flight = match self.pipe {
            Pipe::Open {
                in_flight: Some((id, _)),
                ..
            } => Some(id),
            _ => None,
        };
        let mut kept = VecDeque::with_capacity(self.segments.len());
        for segment in self.segments.drain(..) {
            if segment.left() == 0 && in_flight != Some(segment.id) {
                self.done.push((segment.id, final_progress(&segment)));
            } else {
                kept.push_back(segment);
            }
        }
        self.segments = kept;
        // Bounded: a write's figures are asked for once it is settled; keep the newest few.
        if self.done.len() > 64 {
            let excess = self.done.len() - 64;
            self.done.drain(..excess);
        }
    }
}

fn final_progress(segment: &Segment) -> Progress {
    Progress {
        written: segment.written,
        queued: 0,
        dropped: segment.data.len() - segment.written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(limit: usize) -> Stdin {
        let mut stdin = Stdin::new(true, limit);
        stdin.spawned();
        stdin
    }

    fn write_of(action: Option<StdinAction>) -> Vec<u8> {
        match action {
            Some(StdinAction::Write(data)) => data,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    #[test]
    fn writes_go_out_one_chunk_at_a_time_and_wait_after_a_short_write() {
        let mut stdin = open(1 << 20);
        let (a, _) = stdin.push(vec![b'a'; CHUNK_BYTES + 10], false).unwrap();
        let first = write_of(stdin.poll_action());
        assert_eq!(first.len(), CHUNK_BYTES);
        assert_eq!(stdin.poll_action(), None, "one chunk in flight at a time");
        assert!(!stdin.is_settled());
        stdin.written(Ok(100));
        assert!(stdin.is_settled());
        assert_eq!(stdin.poll_action(), None, "short write: wait for room");
        assert_eq!(
            stdin.progress(a),
            Some(Progress {
                written: 100,
                queued: CHUNK_BYTES - 90,
                dropped: 0
            })
        );
        stdin.ready();
        let second = write_of(stdin.poll_action());
        assert_eq!(
            second.len(),
            CHUNK_BYTES - 90,
            "the rest, from where the pipe stopped"
        );
        assert_eq!(second[0], b'a');
        stdin.written(Ok(second.len()));
        assert_eq!(stdin.poll_action(), None);
        assert_eq!(stdin.queued(), 0);
        assert_eq!(
            stdin.progress(a),
            Some(Progress {
                written: CHUNK_BYTES + 10,
                queued: 0,
                dropped: 0
            })
        );
        assert_eq!(
            stdin.progress(a),
            None,
            "finished segments are reported once"
        );
    }

    #[test]
    fn an_empty_write_is_done_at_once_and_writes_nothing() {
        let mut stdin = open(100);
        let (a, _) = stdin.push(Vec::new(), false).unwrap();
        assert_eq!(stdin.poll_action(), None);
        assert_eq!(
            stdin.progress(a),
            Some(Progress {
                written: 0,
                queued: 0,
                dropped: 0
            })
        );
        let (_, _) = stdin.push(Vec::new(), true).unwrap();
        assert_eq!(stdin.poll_action(), Some(StdinAction::Close));
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut stdin = open(10);
        stdin.push(vec![0; 8], false).unwrap();
        assert_eq!(
            stdin.push(vec![0; 3], false),
            Err(Refused::Full {
                queued: 8,
                limit: 10
            })
        );
        assert!(stdin.push(vec![0; 2], false).is_ok());
    }

    #[test]
    fn cancel_drops_what_is_left_and_nothing_more_is_written() {
        let mut stdin = open(1 << 20);
        let (a, _) = stdin.push(vec![b'a'; 1000], false).unwrap();
        let (b, _) = stdin.push(b"b".to_vec(), false).unwrap();
        let _ = write_of(stdin.poll_action());
        stdin.written(Ok(10));
        assert_eq!(stdin.cancel(a), 990);
        stdin.ready();
        assert_eq!(
            write_of(stdin.poll_action()),
            b"b",
            "the next write goes on"
        );
        stdin.written(Ok(1));
        assert_eq!(
            stdin.progress(a),
            Some(Progress {
                written: 10,
                queued: 0,
                dropped: 990
            })
        );
        assert_eq!(stdin.progress(b).map(|p| p.written), Some(1));
    }

    #[test]
    fn cancel_while_a_chunk_is_in_flight_accounts_for_that_chunk() {
        let mut stdin = open(1 << 20);
        let (a, _) = stdin.push(vec![b'a'; 100], false).unwrap();
        let _ = write_of(stdin.poll_action());
        assert_eq!(stdin.cancel(a), 100);
        stdin.written(Ok(40));
        assert_eq!(
            stdin.progress(a),
            Some(Progress {
                written: 40,
                queued: 0,
                dropped: 60
            })
        );
        assert_eq!(stdin.queued(), 0);
    }

    #[test]
    fn eof_drops_earlier_queued_bytes_then_closes_after_its_own() {
        let mut stdin = open(1 << 20);
        let (a, _) = stdin.push(vec![b'a'; 100], false).unwrap();
        let _ = write_of(stdin.poll_action());
        stdin.written(Ok(0));
        let (b, dropped) = stdin.push(b"last".to_vec(), true).unwrap();
        assert_eq!(dropped, 100);
        assert_eq!(stdin.closed(), Some(Closed::ByEof));
        assert!(matches!(
            stdin.push(b"x".to_vec(), false),
            Err(Refused::Closed(Closed::ByEof))
        ));
        stdin.ready();
        assert_eq!(write_of(stdin.poll_action()), b"last");
        stdin.written(Ok(4));
        assert_eq!(stdin.poll_action(), Some(StdinAction::Close));
        assert_eq!(stdin.poll_action(), None);
        assert_eq!(stdin.progress(a).map(|p| p.dropped), Some(100));
        assert_eq!(stdin.progress(b).map(|p| p.written), Some(4));
    }

    #[test]
    fn a_broken_pipe_drops_the_queue_and_refuses_later_writes() {
        let mut stdin = open(1 << 20);
        let (a, _) = stdin.push(vec![b'a'; 10], false).unwrap();
        let _ = write_of(stdin.poll_action());
        stdin.written(Err(()));
        assert_eq!(stdin.queued(), 0);
        assert_eq!(stdin.progress(a).map(|p| p.dropped), Some(10));
        assert_eq!(
            stdin.push(b"x".to_vec(), false),
            Err(Refused::Closed(Closed::ByProcess))
        );
    }

    #[test]
    fn writes_before_the_spawn_queue_up() {
        let mut stdin = Stdin::new(true, 100);
        stdin.push(b"early".to_vec(), false).unwrap();
        assert_eq!(stdin.poll_action(), None);
        stdin.spawned();
        assert_eq!(write_of(stdin.poll_action()), b"early");
    }

    #[test]
    fn a_task_without_a_pipe_refuses_writes() {
        let mut stdin = Stdin::new(false, 100);
        assert_eq!(stdin.push(b"x".to_vec(), false), Err(Refused::NotPiped));
        assert!(!stdin.is_piped());
    }
}
