//! Files for upload tests, built here byte by byte: a PDF whose page shows given lines
//! of text (Helvetica, one of the fonts every reader knows), one whose page shows
//! nothing (what a scan without OCR looks like to a text extractor), and hostile ones
//! (a form that draws itself, a Flate bomb, a page tree that fans out, a truncated file,
//! a page with thousands of fonts), each the kind of file an attacker uploads.

/// A one-page PDF showing `lines` (ASCII; `(`, `)` and `\` are escaped).
pub fn pdf_with_text(lines: &[&str]) -> Vec<u8> {
    pdf_page(&text_content(lines), "/Font << /F1 5 0 R >>", &[])
}

/// A one-page PDF that draws a rectangle and no text.
pub fn pdf_without_text() -> Vec<u8> {
    pdf_page("0 0 1 rg 72 600 200 100 re f", "", &[])
}

/// A page whose content draws a Form XObject whose own content draws itself: a reader
/// that follows `Do` without a depth limit recurses until its stack is gone (820 bytes).
pub fn pdf_self_drawing_form() -> Vec<u8> {
    let form = "/X1 Do";
    pdf_page(
        "/X1 Do",
        "/XObject << /X1 5 0 R >>",
        &[stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 612 792] \
             /Resources << /XObject << /X1 5 0 R >> >>",
            form.as_bytes(),
        )],
    )
}

/// A page whose content stream is `compressed_len` bytes of Flate data that inflate to
/// about 144 times as much (zeros; a fixed-Huffman deflate stream built by hand, so
/// making a bomb at the whole upload limit costs nothing).
pub fn pdf_flate_bomb(compressed_len: usize) -> Vec<u8> {
    let data = zlib_zeros(compressed_len);
    pdf_objects(vec![
        catalog(),
        pages(&["3 0 R"]),
        page("4 0 R", ""),
        stream("/Filter /FlateDecode", &data),
    ])
}

/// A page tree whose every node lists the next node `fanout` times, `depth` levels deep:
/// `fanout^depth` pages in a file of a few hundred bytes. Each node counts the pages
/// below it truly, so a reader that sizes its page list by the count asks for
/// gigabytes.
pub fn pdf_page_tree_fanout(fanout: usize, depth: usize) -> Vec<u8> {
    // Objects: 1 catalog, 2..=depth+1 the tree's levels, then the page and its content.
    let page_id = depth + 2;
    let mut objects = vec![catalog()];
    for level in 0..depth {
        let kid = if level + 1 == depth {
            format!("{page_id} 0 R")
        } else {
            format!("{} 0 R", level + 3)
        };
        let kids = vec![kid.as_str(); fanout].join(" ");
        let count = fanout.pow((depth - level) as u32);
        let parent = if level == 0 {
            String::new()
        } else {
            format!(" /Parent {} 0 R", level + 1)
        };
        objects
            .push(format!("<< /Type /Pages{parent} /Kids [{kids}] /Count {count} >>").into_bytes());
    }
    objects.push(
        format!(
            "<< /Type /Page /Parent {} 0 R /MediaBox [0 0 612 792] \
             /Resources << /Font << /F1 {} 0 R >> >> /Contents {} 0 R >>",
            depth + 1,
            page_id + 2,
            page_id + 1
        )
        .into_bytes(),
    );
    objects.push(stream("", text_content(&["fan"]).as_bytes()));
    objects.push(helvetica());
    pdf_objects(objects)
}

/// Forms that draw forms: the page draws form 1 `fanout` times, form N draws form N+1
/// `fanout` times, the last form shows a word: `fanout^depth` words from a file of a few
/// kilobytes, in constant memory. A reader without a budget works for as long as it may.
pub fn pdf_form_fanout(fanout: usize, depth: usize) -> Vec<u8> {
    // Objects: 1 catalog, 2 pages, 3 page, 4 its content, 5 Helvetica, 6.. the forms.
    let draw = |form: usize| format!("/X{form} Do\n").repeat(fanout);
    let mut objects = vec![
        catalog(),
        pages(&["3 0 R"]),
        page("4 0 R", "/XObject << /X1 6 0 R >>"),
        stream("", draw(1).as_bytes()),
        helvetica(),
    ];
    for level in 1..=depth {
        let (content, resources) = if level == depth {
            (text_content(&["leaf"]), "/Font << /F1 5 0 R >>".to_owned())
        } else {
            (
                draw(level + 1),
                format!("/XObject << /X{} {} 0 R >>", level + 1, level + 6),
            )
        };
        objects.push(stream(
            &format!(
                "/Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << {resources} >>"
            ),
            content.as_bytes(),
        ));
    }
    pdf_objects(objects)
}

/// The first `fraction_percent`% of a valid PDF with text: no cross-reference table, no
/// trailer, an object cut in the middle.
pub fn pdf_truncated(fraction_percent: usize) -> Vec<u8> {
    let whole = pdf_with_text(&["This file was cut short in transit."; 20]);
    whole[..whole.len() * fraction_percent / 100].to_vec()
}

/// A page that selects `fonts` different fonts, one after the other, each for one word.
pub fn pdf_many_fonts(fonts: usize) -> Vec<u8> {
    let first_font = 5;
    let mut resources = String::from("/Font <<");
    let mut content = String::from("BT 72 720 Td\n");
    for i in 0..fonts {
        resources.push_str(&format!(" /F{i} {} 0 R", first_font + i));
        content.push_str(&format!("/F{i} 10 Tf (w{i}) Tj\n"));
    }
    resources.push_str(" >>");
    content.push_str("ET");
    let extra: Vec<Vec<u8>> = (0..fonts)
        .map(|i| {
            format!(
                "<< /Type /Font /Subtype /Type1 /BaseFont /Font{i} /Encoding /WinAnsiEncoding >>"
            )
            .into_bytes()
        })
        .collect();
    let mut objects = vec![
        catalog(),
        pages(&["3 0 R"]),
        page("4 0 R", &resources),
        stream("", content.as_bytes()),
    ];
    objects.extend(extra);
    pdf_objects(objects)
}

fn text_content(lines: &[&str]) -> String {
    let mut content = String::from("BT /F1 12 Tf 72 720 Td 14 TL\n");
    for line in lines {
        let escaped = line
            .replace('\\', "\\\\")
            .replace('(', "\\(")
            .replace(')', "\\)");
        content.push_str(&format!("({escaped}) Tj T*\n"));
    }
    content.push_str("ET");
    content
}

/// Catalog (1), pages (2), one page (3) drawing stream 4 with `resources`, Helvetica (5)
/// when the resources name it, then `more` objects from 5 (or 6) on.
fn pdf_page(content: &str, resources: &str, more: &[Vec<u8>]) -> Vec<u8> {
    let mut objects = vec![
        catalog(),
        pages(&["3 0 R"]),
        page("4 0 R", resources),
        stream("", content.as_bytes()),
    ];
    if resources.contains("/F1 5 0 R") {
        objects.push(helvetica());
    }
    objects.extend(more.iter().cloned());
    pdf_objects(objects)
}

fn catalog() -> Vec<u8> {
    b"<< /Type /Catalog /Pages 2 0 R >>".to_vec()
}

fn pages(kids: &[&str]) -> Vec<u8> {
    format!(
        "<< /Type /Pages /Kids [{}] /Count {} >>",
        kids.join(" "),
        kids.len()
    )
    .into_bytes()
}

fn page(contents: &str, resources: &str) -> Vec<u8> {
    format!(
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
         /Resources << {resources} >> /Contents {contents} >>"
    )
    .into_bytes()
}

fn helvetica() -> Vec<u8> {
    b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec()
}

fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\nendstream");
    out
}

/// A PDF of the numbered `objects` (1, 2, ...) with a correct cross-reference table.
fn pdf_objects(objects: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A zlib stream of about `len` bytes that inflates to zeros: a header, then identical
/// byte-aligned fixed-Huffman blocks (a literal 0 and fourteen copies of length 258 at
/// distance 1: 3,613 bytes from 25), then an empty final block and the Adler-32 of the
/// zeros.
pub fn zlib_zeros(len: usize) -> Vec<u8> {
    let block = fixed_huffman_block_of_zeros();
    let mut out = vec![0x78, 0x9c];
    let mut inflated: u64 = 0;
    while out.len() + block.len() + 6 <= len.max(block.len() + 8) {
        out.extend_from_slice(&block);
        inflated += ZEROS_PER_BLOCK;
    }
    // BFINAL=1, BTYPE=01 (fixed), end of block (code 256: seven zero bits).
    out.extend_from_slice(&[0x03, 0x00]);
    // Adler-32 of n zeros: a stays 1, b adds 1 per byte.
    let adler = (((inflated % 65_521) as u32) << 16) | 1;
    out.extend_from_slice(&adler.to_be_bytes());
    out
}

const COPIES: usize = 14;
const ZEROS_PER_BLOCK: u64 = 1 + 258 * COPIES as u64;

/// One non-final fixed-Huffman block: a literal 0, then `COPIES` x (length 258,
/// distance 1), then end of block; 3 + 8 + 13 x COPIES + 7 bits, a whole number of bytes.
fn fixed_huffman_block_of_zeros() -> Vec<u8> {
    let mut bits = BitWriter::default();
    bits.put(0b0, 1); // BFINAL = 0
    bits.put(0b01, 2); // BTYPE = fixed Huffman (LSB first)
    bits.put_code(0b0011_0000, 8); // literal 0: codes 0-143 are 0x30 + n, 8 bits
    for _ in 0..COPIES {
        bits.put_code(0b1100_0101, 8); // length 258: symbol 285 = 0xC0 + 5, 8 bits
        bits.put_code(0b00000, 5); // distance code 0 (distance 1), 5 bits
    }
    bits.put_code(0b000_0000, 7); // end of block: symbol 256, 7 bits
    assert!(
        bits.used.is_multiple_of(8),
        "the block ends on a byte boundary"
    );
    bits.bytes
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: usize,
}

impl BitWriter {
    /// Appends `n` bits of `value`, least significant first (header fields).
    fn put(&mut self, value: u32, n: usize) {
        for i in 0..n {
            self.bit((value >> i) & 1 == 1);
        }
    }

    /// Appends an `n`-bit Huffman code, most significant bit first.
    fn put_code(&mut self, code: u32, n: usize) {
        for i in (0..n).rev() {
            self.bit((code >> i) & 1 == 1);
        }
    }

    fn bit(&mut self, set: bool) {
        if self.used.is_multiple_of(8) {
            self.bytes.push(0);
        }
        if set {
            let last = self.bytes.len() - 1;
            self.bytes[last] |= 1 << (self.used % 8);
        }
        self.used += 1;
    }
}
