//! A terminal screen as a PNG image: each cell drawn in its colours with a bitmap monospace
//! font, so that a model that reads images sees layouts, colours and highlighting.
//!
//! Glyphs are the 9 × 18 pixel fonts of X11's misc-fixed collection (public domain), as
//! `embedded-graphics` ships them, in regular and bold, for ISO 8859-1. Characters outside it
//! are drawn as the nearest ASCII where one is obvious (box drawing as `-`, `|`, `+`), block
//! elements as filled cells, and the rest as `?`. Colours follow xterm's 256-colour palette
//! (16 system colours, the 6 × 6 × 6 cube, 24 greys) on a dark background; bold, inverse,
//! underline and the cursor (unless the program hid it) are drawn.

use core::convert::Infallible;

use embedded_graphics::Drawable;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::iso_8859_1::{FONT_9X18, FONT_9X18_BOLD};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::{DrawTarget, OriginDimensions, Pixel, Point, Size};
use embedded_graphics::text::{Baseline, Text};

/// Width of a cell in pixels.
pub const CELL_WIDTH: u32 = 9;
/// Height of a cell in pixels.
pub const CELL_HEIGHT: u32 = 18;

/// The default foreground and background: light grey on near-black.
const DEFAULT_FG: Rgb888 = Rgb888::new(0xd0, 0xd0, 0xd0);
const DEFAULT_BG: Rgb888 = Rgb888::new(0x1c, 0x1c, 0x1c);

/// xterm's 16 system colours.
const SYSTEM: [(u8, u8, u8); 16] = [
    (0x00, 0x00, 0x00),
    (0xcd, 0x00, 0x00),
    (0x00, 0xcd, 0x00),
    (0xcd, 0xcd, 0x00),
    (0x00, 0x00, 0xee),
    (0xcd, 0x00, 0xcd),
    (0x00, 0xcd, 0xcd),
    (0xe5, 0xe5, 0xe5),
    (0x7f, 0x7f, 0x7f),
    (0xff, 0x00, 0x00),
    (0x00, 0xff, 0x00),
    (0xff, 0xff, 0x00),
    (0x5c, 0x5c, 0xff),
    (0xff, 0x00, 0xff),
    (0x00, 0xff, 0xff),
    (0xff, 0xff, 0xff),
];

/// An RGB pixel buffer that `embedded-graphics` draws into; pixels outside it are dropped.
struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32) -> Self {
        let mut rgb = Vec::with_capacity((width * height * 3) as usize);
        for _ in 0..width * height {
            rgb.extend_from_slice(&[DEFAULT_BG.r(), DEFAULT_BG.g(), DEFAULT_BG.b()]);
        }
        Self { width, height, rgb }
    }

    fn set(&mut self, x: u32, y: u32, color: Rgb888) {
        if x >= self.width || y >= self.height {
            return;
        }
        let at = ((y * self.width + x) * 3) as usize;
        if let Some(pixel) = self.rgb.get_mut(at..at + 3) {
            pixel.copy_from_slice(&[color.r(), color.g(), color.b()]);
        }
    }

    fn fill(&mut self, x: u32, y: u32, width: u32, height: u32, color: Rgb888) {
        for row in y..y + height {
            for col in x..x + width {
                self.set(col, row, color);
            }
        }
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Infallible>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(point, color) in pixels {
            if let (Ok(x), Ok(y)) = (u32::try_from(point.x), u32::try_from(point.y)) {
                self.set(x, y, color);
            }
        }
        Ok(())
    }
}

/// A colour of the emulator as RGB; `default` for the terminal's default.
fn rgb(color: vt100::Color, default: Rgb888) -> Rgb888 {
    match color {
        vt100::Color::Default => default,
        vt100::Color::Rgb(r, g, b) => Rgb888::new(r, g, b),
        vt100::Color::Idx(i @ 0..=15) => {
            let (r, g, b) = SYSTEM.get(usize::from(i)).copied().unwrap_or_default();
            Rgb888::new(r, g, b)
        }
        vt100::Color::Idx(i @ 16..=231) => {
            let level = |n: u8| if n == 0 { 0 } else { 55 + 40 * n };
            let i = i - 16;
            Rgb888::new(level(i / 36), level(i / 6 % 6), level(i % 6))
        }
        vt100::Color::Idx(i) => {
            let grey = 8 + 10 * (i - 232);
            Rgb888::new(grey, grey, grey)
        }
    }
}

/// What to draw for a character the font lacks.
enum Glyph {
    Text(char),
    Block,
}

fn glyph(c: char) -> Glyph {
    match c {
        ' '..='~' | '\u{a0}'..='\u{ff}' => Glyph::Text(c),
        '─' | '━' | '═' | '╌' | '┄' => Glyph::Text('-'),
        '│' | '┃' | '║' | '╎' | '┆' => Glyph::Text('|'),
        '┌'..='╋' | '╒'..='╬' | '╭'..='╰' => Glyph::Text('+'),
        '█' | '▉' | '▊' | '▋' | '▌' | '▐' | '▇' | '▆' | '▅' | '▄' | '▀' => {
            Glyph::Block
        }
        _ => Glyph::Text('?'),
    }
}

/// The screen of `parser` as a PNG: `cols × 9` by `rows × 18` pixels, 8-bit RGB.
pub(super) fn png<CB: vt100::Callbacks>(parser: &vt100::Parser<CB>) -> Vec<u8> {
    let screen = parser.screen();
    let (rows, cols) = screen.size();
    let (rows, cols) = (rows.get(), cols.get());
    let mut canvas = Canvas::new(u32::from(cols) * CELL_WIDTH, u32::from(rows) * CELL_HEIGHT);
    let cursor = (!screen.hide_cursor()).then(|| screen.cursor_position());
    for row in 0..rows {
        for col in 0..cols {
            let Some(cell) = screen.cell(row, col) else {
                continue;
            };
            if cell.is_wide_continuation() {
                continue;
            }
            let mut fg = rgb(cell.fgcolor(), DEFAULT_FG);
            let mut bg = rgb(cell.bgcolor(), DEFAULT_BG);
            if cell.inverse() != (cursor == Some((row, col))) {
                core::mem::swap(&mut fg, &mut bg);
            }
            let (x, y) = (u32::from(col) * CELL_WIDTH, u32::from(row) * CELL_HEIGHT);
            let width = if cell.is_wide() { 2 } else { 1 } * CELL_WIDTH;
            canvas.fill(x, y, width, CELL_HEIGHT, bg);
            if cell.underline() {
                canvas.fill(x, y + CELL_HEIGHT - 2, width, 1, fg);
            }
            let Some(c) = cell.contents().chars().next() else {
                continue;
            };
            match glyph(c) {
                Glyph::Block => canvas.fill(x, y, width, CELL_HEIGHT, fg),
                Glyph::Text(c) => {
                    let font = if cell.bold() {
                        &FONT_9X18_BOLD
                    } else {
                        &FONT_9X18
                    };
                    let mut buffer = [0; 4];
                    let text = c.encode_utf8(&mut buffer);
                    let origin = Point::new(x as i32, y as i32);
                    let style = MonoTextStyle::new(font, fg);
                    let Ok(_) =
                        Text::with_baseline(text, origin, style, Baseline::Top).draw(&mut canvas);
                }
            }
        }
    }
    encode(&canvas)
}

/// `canvas` as a PNG file.
fn encode(canvas: &Canvas) -> Vec<u8> {
    let mut file = Vec::new();
    let mut encoder = png::Encoder::new(&mut file, canvas.width, canvas.height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    // Writing to a Vec cannot fail, and the data is exactly width × height × 3 bytes.
    if let Ok(mut writer) = encoder.write_header() {
        let _ = writer.write_image_data(&canvas.rgb);
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(file: &[u8]) -> (u32, u32, Vec<u8>) {
        let decoder = png::Decoder::new(std::io::Cursor::new(file));
        let mut reader = decoder.read_info().expect("a PNG header");
        let mut rgb = vec![0; reader.output_buffer_size().expect("a size")];
        let info = reader.next_frame(&mut rgb).expect("a frame");
        (info.width, info.height, rgb)
    }

    fn colours(rgb: &[u8]) -> std::collections::BTreeSet<[u8; 3]> {
        rgb.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
    }

    #[test]
    fn a_screen_is_a_png_of_its_cells() {
        let mut parser = vt100::Parser::new(
            core::num::NonZeroU16::new(3).unwrap(),
            core::num::NonZeroU16::new(10).unwrap(),
            0,
        );
        parser.process(b"\x1b[31mred\x1b[0m \x1b[1;44mbold\x1b[0m\r\n\x1b[7minv\x1b[0m");
        let (width, height, rgb) = decode(&png(&parser));
        assert_eq!((width, height), (10 * CELL_WIDTH, 3 * CELL_HEIGHT));
        let seen = colours(&rgb);
        for expected in [
            [0xcd, 0, 0],
            [0, 0, 0xee],
            [0x1c, 0x1c, 0x1c],
            [0xd0, 0xd0, 0xd0],
        ] {
            assert!(seen.contains(&expected), "{expected:?} in {seen:?}");
        }
    }

    #[test]
    fn a_blank_screen_shows_only_the_background_and_the_cursor() {
        let parser = vt100::Parser::new(
            core::num::NonZeroU16::new(2).unwrap(),
            core::num::NonZeroU16::new(2).unwrap(),
            0,
        );
        let (_, _, rgb) = decode(&png(&parser));
        let seen = colours(&rgb);
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn palette_indices_follow_xterm() {
        assert_eq!(
            rgb(vt100::Color::Idx(1), DEFAULT_FG),
            Rgb888::new(0xcd, 0, 0)
        );
        assert_eq!(
            rgb(vt100::Color::Idx(196), DEFAULT_FG),
            Rgb888::new(0xff, 0, 0)
        );
        assert_eq!(rgb(vt100::Color::Idx(16), DEFAULT_FG), Rgb888::new(0, 0, 0));
        assert_eq!(
            rgb(vt100::Color::Idx(255), DEFAULT_FG),
            Rgb888::new(238, 238, 238)
        );
        assert_eq!(rgb(vt100::Color::Default, DEFAULT_BG), DEFAULT_BG);
    }
}
