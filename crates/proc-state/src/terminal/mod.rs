//! A terminal task's side of its pseudo-terminal: the screen its output draws, and the bytes a
//! key sends.
//!
//! [`Screen`] is a terminal emulator (the `vt100` crate's, a VT100/xterm parser) fed with what
//! the task writes to its terminal, so that the current screen, cursor, alternate screen and
//! window title can be shown to a model however the program draws them (full-screen programs
//! redraw cells, not lines). It keeps no scrollback: its memory is the cells of one screen (and
//! of the alternate screen), fixed by the window size, whose bounds are [`MAX_ROWS`] and
//! [`MAX_COLS`]. [`key_bytes`] encodes named keys as an xterm would send them.

use core::num::NonZeroU16;

use crate::process::WindowSize;

mod image;

pub use image::{CELL_HEIGHT, CELL_WIDTH};

/// The window size a terminal task gets when `start` does not give one: tall and wide enough
/// for most programs' layouts, small enough to read as text.
pub const DEFAULT_SIZE: WindowSize = WindowSize {
    rows: 40,
    cols: 120,
};

/// Most rows a terminal task's window may have (each row costs its cells' memory).
pub const MAX_ROWS: u16 = 200;

/// Most columns a terminal task's window may have.
pub const MAX_COLS: u16 = 500;

/// `TERM` for a terminal task unless its environment sets one: the xterm description the
/// emulator follows, present in every terminfo database.
pub const DEFAULT_TERM: &str = "xterm-256color";

/// Most bytes of a window title kept (a program may set any length).
const MAX_TITLE_BYTES: usize = 256;

/// The current screen of a terminal task, fed with its output.
pub struct Screen {
    parser: vt100::Parser<Title>,
    /// The start of a UTF-8 character cut at the end of the last output (at most 3 bytes).
    carry: Vec<u8>,
}

/// What the emulator reports besides the cells: the last window title set (OSC 0 or 2).
#[derive(Default)]
struct Title(Option<String>);

impl vt100::Callbacks for Title {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        let title = title.get(..MAX_TITLE_BYTES).unwrap_or(title);
        self.0 = Some(String::from_utf8_lossy(title).into_owned());
    }
}

/// The screen as text, for the `screen` tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every row, top to bottom, without trailing blanks.
    pub rows: Vec<String>,
    /// The cursor's row and column, from 0.
    pub cursor: (u16, u16),
    /// The program switched to the alternate screen (full-screen programs do).
    pub alternate_screen: bool,
    /// The window title the program set, if any.
    pub title: Option<String>,
    /// The window size.
    pub size: WindowSize,
}

impl Screen {
    /// A blank screen of `size` (clamped to `1..=MAX_ROWS` × `1..=MAX_COLS`).
    pub fn new(size: WindowSize) -> Self {
        let (rows, cols) = dimensions(size);
        Self {
            parser: vt100::Parser::new_with_callbacks(rows, cols, 0, Title::default()),
            carry: Vec::new(),
        }
    }

    /// Applies output the task wrote to its terminal, in any chunking (an escape sequence or a
    /// character cut between two chunks is applied once whole). Each byte sequence that is not
    /// UTF-8 is shown as a `?` (the emulator is given UTF-8 only, so that what it shows does not
    /// depend on how the output was cut).
    pub fn feed(&mut self, bytes: &[u8]) {
        let joined;
        let bytes = if self.carry.is_empty() {
            bytes
        } else {
            let mut carry = core::mem::take(&mut self.carry);
            carry.extend_from_slice(bytes);
            joined = carry;
            &joined[..]
        };
        match core::str::from_utf8(bytes) {
            Ok(_) => self.parser.process(bytes),
            Err(cut) if cut.error_len().is_none() => {
                let (whole, rest) = bytes.split_at(cut.valid_up_to());
                self.parser.process(whole);
                self.carry = rest.to_vec();
            }
            Err(_) => {
                let mut clean = Vec::with_capacity(bytes.len() + 8);
                let mut chunks = bytes.utf8_chunks().peekable();
                while let Some(chunk) = chunks.next() {
                    clean.extend_from_slice(chunk.valid().as_bytes());
                    let invalid = chunk.invalid();
                    if invalid.is_empty() {
                        continue;
                    }
                    let incomplete = chunks.peek().is_none()
                        && core::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none());
                    if incomplete {
                        self.carry = invalid.to_vec();
                    } else {
                        // The emulator draws nothing for U+FFFD; a terminal draws a cell.
                        clean.push(b'?');
                    }
                }
                self.parser.process(&clean);
            }
        }
    }

    /// Resizes the window (as a terminal does: rows past the cursor go first, then rows at the
    /// top; columns are cut or padded).
    pub fn resize(&mut self, size: WindowSize) {
        let (rows, cols) = dimensions(size);
        self.parser.set_size(rows, cols);
    }

    /// The window size.
    pub fn size(&self) -> WindowSize {
        let (rows, cols) = self.parser.screen().size();
        WindowSize {
            rows: rows.get(),
            cols: cols.get(),
        }
    }

    /// Whether the program asked for application cursor keys (DECCKM), which changes what the
    /// arrow keys send (see [`key_bytes`]).
    pub fn application_cursor(&self) -> bool {
        self.parser.screen().application_cursor()
    }

    /// The screen as a PNG image of `cols ×` [`CELL_WIDTH`] by `rows ×` [`CELL_HEIGHT`]
    /// pixels, 8-bit RGB (see the `image` module for what is drawn).
    pub fn png(&self) -> Vec<u8> {
        image::png(&self.parser)
    }

    /// The screen as text.
    pub fn snapshot(&self) -> Snapshot {
        let screen = self.parser.screen();
        let size = self.size();
        let rows = screen
            .rows(0, size.cols)
            .map(|row| row.trim_end().to_owned())
            .collect();
        Snapshot {
            rows,
            cursor: screen.cursor_position(),
            alternate_screen: screen.alternate_screen(),
            title: self.parser.callbacks().0.clone(),
            size,
        }
    }
}

impl core::fmt::Debug for Screen {
    /// The size, not the cells.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Screen")
            .field("size", &self.size())
            .finish()
    }
}

/// `size` clamped to the bounds, as the emulator takes it.
fn dimensions(size: WindowSize) -> (NonZeroU16, NonZeroU16) {
    let clamp = |n: u16, max: u16| NonZeroU16::new(n.clamp(1, max)).unwrap_or(NonZeroU16::MIN);
    (clamp(size.rows, MAX_ROWS), clamp(size.cols, MAX_COLS))
}

/// The key names [`key_bytes`] knows, besides `Ctrl-A` … `Ctrl-Z`.
pub const KEY_NAMES: [&str; 27] = [
    "Enter",
    "Tab",
    "Escape",
    "Backspace",
    "Delete",
    "Up",
    "Down",
    "Left",
    "Right",
    "Home",
    "End",
    "PageUp",
    "PageDown",
    "Insert",
    "Space",
    "F1",
    "F2",
    "F3",
    "F4",
    "F5",
    "F6",
    "F7",
    "F8",
    "F9",
    "F10",
    "F11",
    "F12",
];

/// The bytes an xterm sends for the key `name` (case-insensitive): one of [`KEY_NAMES`] or
/// `Ctrl-A` … `Ctrl-Z` (also `Ctrl-[`, `Ctrl-\`, `Ctrl-]`, `Ctrl-@`), the control character
/// (e.g. `Ctrl-C` is 0x03, which the terminal's line discipline turns into `SIGINT` for the
/// foreground process group, termios(3)). The arrow keys, Home and End send `ESC O x` instead
/// of `ESC [ x` when `application_cursor` (DECCKM) is set, as in xterm's ctlseqs. `None` for
/// an unknown name.
pub fn key_bytes(name: &str, application_cursor: bool) -> Option<Vec<u8>> {
    let lower = name.trim().to_ascii_lowercase();
    if let Some(key) = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix("ctrl+"))
        .or_else(|| lower.strip_prefix("c-"))
    {
        return match key.as_bytes() {
            [c @ b'a'..=b'z'] => Some(vec![c - b'a' + 1]),
            [b'@'] | [b' '] => Some(vec![0]),
            [b'['] => Some(vec![0x1b]),
            [b'\\'] => Some(vec![0x1c]),
            [b']'] => Some(vec![0x1d]),
            _ => None,
        };
    }
    let cursor = |final_byte: u8| {
        let intro = if application_cursor { b'O' } else { b'[' };
        Some(vec![0x1b, intro, final_byte])
    };
    let tilde = |code: &str| Some(format!("\x1b[{code}~").into_bytes());
    match lower.as_str() {
        "enter" | "return" => Some(b"\r".to_vec()),
        "tab" => Some(b"\t".to_vec()),
        "escape" | "esc" => Some(b"\x1b".to_vec()),
        "backspace" => Some(b"\x7f".to_vec()),
        "space" => Some(b" ".to_vec()),
        "up" => cursor(b'A'),
        "down" => cursor(b'B'),
        "right" => cursor(b'C'),
        "left" => cursor(b'D'),
        "home" => cursor(b'H'),
        "end" => cursor(b'F'),
        "insert" => tilde("2"),
        "delete" => tilde("3"),
        "pageup" => tilde("5"),
        "pagedown" => tilde("6"),
        "f1" => Some(b"\x1bOP".to_vec()),
        "f2" => Some(b"\x1bOQ".to_vec()),
        "f3" => Some(b"\x1bOR".to_vec()),
        "f4" => Some(b"\x1bOS".to_vec()),
        "f5" => tilde("15"),
        "f6" => tilde("17"),
        "f7" => tilde("18"),
        "f8" => tilde("19"),
        "f9" => tilde("20"),
        "f10" => tilde("21"),
        "f11" => tilde("23"),
        "f12" => tilde("24"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen(bytes: &[u8]) -> Screen {
        let mut screen = Screen::new(WindowSize { rows: 5, cols: 20 });
        screen.feed(bytes);
        screen
    }

    #[test]
    fn text_lands_in_rows_without_trailing_blanks() {
        let snapshot = screen(b"hello\r\nworld   ").snapshot();
        assert_eq!(snapshot.rows, ["hello", "world", "", "", ""]);
        assert_eq!(snapshot.cursor, (1, 8));
        assert!(!snapshot.alternate_screen);
        assert_eq!(snapshot.size, WindowSize { rows: 5, cols: 20 });
    }

    #[test]
    fn escape_sequences_split_between_chunks_apply_once_whole() {
        let mut split = screen(b"");
        for chunk in [&b"ab\x1b["[..], b"2", b";5Hx\x1b]2;ti", b"tle\x07"] {
            split.feed(chunk);
        }
        let whole = screen(b"ab\x1b[2;5Hx\x1b]2;title\x07");
        assert_eq!(split.snapshot(), whole.snapshot());
        assert_eq!(whole.snapshot().rows[1], "    x");
        assert_eq!(whole.snapshot().title.as_deref(), Some("title"));
    }

    #[test]
    fn characters_cut_between_chunks_and_invalid_bytes_do_not_depend_on_the_cut() {
        let bytes = ["ľ+".as_bytes(), &b"\xff\xff"[..], "é".as_bytes()].concat();
        let whole = screen(&bytes).snapshot();
        assert_eq!(whole.rows[0], "ľ+??é");
        for cut in 0..=bytes.len() {
            let mut s = screen(&bytes[..cut]);
            s.feed(&bytes[cut..]);
            assert_eq!(s.snapshot(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn wide_characters_take_two_cells() {
        let snapshot = screen("日本x".as_bytes()).snapshot();
        assert_eq!(snapshot.rows[0], "日本x");
        assert_eq!(snapshot.cursor, (0, 5));
    }

    #[test]
    fn the_alternate_screen_is_reported_and_restores_the_main_one() {
        let mut s = screen(b"main");
        s.feed(b"\x1b[?1049h\x1b[Hfull screen");
        let full = s.snapshot();
        assert!(full.alternate_screen);
        assert_eq!(full.rows[0], "full screen");
        s.feed(b"\x1b[?1049l");
        assert!(!s.snapshot().alternate_screen);
        assert_eq!(s.snapshot().rows[0], "main");
    }

    #[test]
    fn resize_changes_the_size_and_keeps_the_text() {
        let mut s = screen(b"abc");
        s.resize(WindowSize { rows: 3, cols: 2 });
        let snapshot = s.snapshot();
        assert_eq!(snapshot.size, WindowSize { rows: 3, cols: 2 });
        assert_eq!(snapshot.rows[0], "ab");
    }

    #[test]
    fn sizes_are_clamped_to_the_bounds() {
        let s = Screen::new(WindowSize {
            rows: 0,
            cols: u16::MAX,
        });
        assert_eq!(
            s.size(),
            WindowSize {
                rows: 1,
                cols: MAX_COLS
            }
        );
    }

    #[test]
    fn a_long_title_is_cut() {
        let mut bytes = b"\x1b]0;".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 1000));
        bytes.push(0x07);
        let title = screen(&bytes).snapshot().title.unwrap_or_default();
        assert_eq!(title.len(), MAX_TITLE_BYTES);
    }

    #[test]
    fn keys_encode_as_xterm_sends_them() {
        assert_eq!(key_bytes("Enter", false).as_deref(), Some(&b"\r"[..]));
        assert_eq!(key_bytes("ctrl-c", false).as_deref(), Some(&[3][..]));
        assert_eq!(key_bytes("Ctrl-Z", false).as_deref(), Some(&[26][..]));
        assert_eq!(key_bytes("Up", false).as_deref(), Some(&b"\x1b[A"[..]));
        assert_eq!(key_bytes("Up", true).as_deref(), Some(&b"\x1bOA"[..]));
        assert_eq!(
            key_bytes("PageDown", true).as_deref(),
            Some(&b"\x1b[6~"[..])
        );
        assert_eq!(key_bytes("F5", false).as_deref(), Some(&b"\x1b[15~"[..]));
        assert_eq!(key_bytes("Ctrl-1", false), None);
        assert_eq!(key_bytes("Hyper", false), None);
    }

    #[test]
    fn every_listed_key_has_bytes() {
        for name in KEY_NAMES {
            assert!(key_bytes(name, false).is_some(), "{name}");
        }
    }

    #[test]
    fn the_program_chooses_application_cursor_keys() {
        let mut s = screen(b"");
        assert!(!s.application_cursor());
        s.feed(b"\x1b[?1h");
        assert!(s.application_cursor());
    }
}
