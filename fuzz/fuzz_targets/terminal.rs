//! Drives a terminal task's screen model with arbitrary output in arbitrary chunks, resizes
//! and key names, and checks its invariants after every step: a screen fed the same bytes in
//! one piece agrees with it (escape sequences split between reads apply once whole), it always
//! has exactly its size in rows, the cursor stays on the screen, the title stays bounded, and
//! the image of a small screen is a PNG of the documented size.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proc_state::WindowSize;
use proc_state::terminal::{self, CELL_HEIGHT, CELL_WIDTH, Screen};

#[derive(Arbitrary, Debug)]
enum Op {
    /// Output, cut where the fuzzer says.
    Output(Vec<u8>, Vec<u8>),
    Resize(u8, u8),
    Key(String, bool),
    Image,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rows: u8,
    cols: u8,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let size = WindowSize {
        rows: u16::from(input.rows % 60),
        cols: u16::from(input.cols),
    };
    let mut chunked = Screen::new(size);
    let mut whole = Screen::new(size);
    // Output since the last resize: `whole` gets it in one piece before the next resize.
    let mut since_resize = Vec::new();
    for op in &input.ops {
        match op {
            Op::Output(head, tail) => {
                chunked.feed(head);
                chunked.feed(tail);
                since_resize.extend_from_slice(head);
                since_resize.extend_from_slice(tail);
            }
            Op::Resize(rows, cols) => {
                whole.feed(&core::mem::take(&mut since_resize));
                let size = WindowSize {
                    rows: u16::from(*rows % 60),
                    cols: u16::from(*cols),
                };
                chunked.resize(size);
                whole.resize(size);
            }
            Op::Key(name, application_cursor) => {
                if let Some(bytes) = terminal::key_bytes(name, *application_cursor) {
                    assert!(!bytes.is_empty() && bytes.len() <= 5, "{name:?}: {bytes:?}");
                }
            }
            Op::Image => {
                let size = chunked.size();
                if u32::from(size.rows) * u32::from(size.cols) <= 400 {
                    let png = chunked.png();
                    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
                    // IHDR: width and height, big-endian, right after the chunk header.
                    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
                    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
                    assert_eq!(width, u32::from(size.cols) * CELL_WIDTH);
                    assert_eq!(height, u32::from(size.rows) * CELL_HEIGHT);
                }
            }
        }
        let snapshot = chunked.snapshot();
        let size = chunked.size();
        assert!((1..=terminal::MAX_ROWS).contains(&size.rows));
        assert!((1..=terminal::MAX_COLS).contains(&size.cols));
        assert_eq!(snapshot.rows.len(), usize::from(size.rows));
        assert!(
            snapshot.cursor.0 < size.rows,
            "{:?} in {size:?}",
            snapshot.cursor
        );
        assert!(
            snapshot.cursor.1 <= size.cols,
            "{:?} in {size:?}",
            snapshot.cursor
        );
        assert!(snapshot.title.as_ref().is_none_or(|t| t.len() <= 256 * 3));
    }
    whole.feed(&since_resize);
    assert_eq!(
        whole.snapshot(),
        chunked.snapshot(),
        "chunking changed the screen"
    );
});
