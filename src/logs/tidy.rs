//! Cleaning log lines for a reader whose screen or context window is small:
//! terminal escapes, progress-bar redraws, blank lines and pnpm's very long
//! store paths are noise; what remains is the text a person would see.
//!
//! Cleaning works on one line at a time and never fails: invalid UTF-8 is
//! replaced, not reported.

use regex::bytes::Regex;
use std::borrow::Cow;
use std::sync::LazyLock;

/// `[32m`, `[1;31m`, `[0m`: colour codes whose ESC byte was lost on the way.
static REMNANT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[[0-9;]{0,20}m").expect("valid regex"));

/// `node_modules/.pnpm/<pkg>@<ver>[_<peers>]/node_modules/<pkg>` -> `node_modules/<pkg>@<ver>`.
static PNPM: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"node_modules/\.pnpm/(?:@[^/+]+\+)?[^/@]+@([^/_]+)(?:_[^/]*)?/node_modules/((?:@[^/]+/)?[^/]+)")
        .expect("valid regex")
});

/// The default `--max-line-chars`.
pub const DEFAULT_MAX_LINE_CHARS: usize = 500;

/// True when cleaning cannot change `bytes` other than dropping blank lines;
/// lets whole chunks skip per-line work. (Control bytes other than tab and
/// newline, `\r` and ESC included, are stripped by cleaning.)
pub fn is_plain(bytes: &[u8]) -> bool {
    // Branch-free per 64-byte block so the compiler vectorizes it.
    let control = |block: &[u8]| {
        block.iter().fold(false, |acc, &b| {
            acc | ((b < 0x20) & (b != b'\t') & (b != b'\n'))
        })
    };
    !bytes.chunks(64).any(control)
        && memchr::memmem::find(bytes, b".pnpm/").is_none()
        && !REMNANT.is_match(bytes)
}

/// Bytes as text, invalid sequences as U+FFFD. Borrowed when they are
/// UTF-8, as nearly every log line is: `str::from_utf8` checks a line
/// several times faster than `String::from_utf8_lossy`, which walks it
/// chunk by chunk (a fifth of an uncapped `--raw` read went there).
pub fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// [`utf8`] for bytes already owned: they become the string without a
/// copy when they are UTF-8.
pub fn utf8_owned(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Cleans one line (without its `\n`). `None` means the line is blank after
/// cleaning and should be dropped.
pub fn clean(raw: &[u8]) -> Option<Cow<'_, str>> {
    let mut line = raw.strip_suffix(b"\r").unwrap_or(raw);
    // A progress bar redraws with `\r`: the text after the last one is what stayed on screen.
    if let Some(at) = memchr::memrchr(b'\r', line) {
        line = &line[at + 1..];
    }
    let needs_work =
        memchr::memchr(0x1b, line).is_some() || line.iter().any(|&b| b < 0x20 && b != b'\t');
    let stripped: Cow<[u8]> = if needs_work {
        Cow::Owned(strip_escapes(line))
    } else {
        Cow::Borrowed(line)
    };
    // Most lines have no `[`: skip the regex search for them.
    let stripped =
        match memchr::memchr(b'[', &stripped).map(|_| REMNANT.replace_all(&stripped, &b""[..])) {
            Some(Cow::Owned(owned)) => Cow::Owned(owned),
            _ => stripped,
        };
    let text: Cow<str> = match stripped {
        Cow::Borrowed(bytes) => utf8(bytes),
        Cow::Owned(bytes) => Cow::Owned(utf8_owned(bytes)),
    };
    if text.trim().is_empty() || is_marker_only(&text) {
        return None;
    }
    if text.contains(".pnpm/")
        && let Cow::Owned(short) = PNPM.replace_all(&text, "node_modules/$2@$1")
    {
        return Some(Cow::Owned(short));
    }
    Some(text)
}

/// True for a line that only underlines the line above: Python 3.11+'s
/// `^^^^^^` and `~~~~^^^^`, tsc's `~~~~~`. They cost context and say
/// nothing the frame does not. A lone `^` is kept: it is a column pointer
/// (a SyntaxError's, Node's throw site), and a marker line with text after
/// it (`^^^ expected u32`) or inside a `|` code frame is not marker-only.
fn is_marker_only(text: &str) -> bool {
    let marks = text.trim();
    marks.len() >= 2 && marks.bytes().all(|b| b == b'^' || b == b'~')
}

/// Removes CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL|ESC \`), other ESC
/// sequences and stray control characters (tab is kept).
fn strip_escapes(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if b != 0x1b {
            if b >= 0x20 || b == b'\t' {
                out.push(b);
            }
            i += 1;
            continue;
        }
        i += 1;
        match line.get(i) {
            Some(b'[') => {
                i += 1;
                while i < line.len() && !(0x40..=0x7e).contains(&line[i]) {
                    i += 1;
                }
                i += 1;
            }
            Some(b']') => {
                i += 1;
                while i < line.len() {
                    if line[i] == 0x07 {
                        i += 1;
                        break;
                    }
                    if line[i] == 0x1b && line.get(i + 1) == Some(&b'\\') {
                        i += 2;
                        break;
                    }
                    i += 1;
                }
            }
            Some(_) => {
                while i < line.len() && (0x20..=0x2f).contains(&line[i]) {
                    i += 1;
                }
                i += 1;
            }
            None => {}
        }
    }
    out
}

/// Cuts a line longer than `max` characters, saying how much was cut.
/// `unseen` counts characters of a very long line that were never kept in
/// memory (the reader drops them while scanning): they are cut too.
pub fn cut(text: &str, max: usize, unseen: u64) -> Cow<'_, str> {
    if unseen == 0 && (max == 0 || text.len() <= max) {
        return Cow::Borrowed(text);
    }
    match text.char_indices().nth(max).filter(|_| max > 0) {
        Some((at, _)) => {
            let rest = text[at..].chars().count() as u64 + unseen;
            Cow::Owned(format!("{}…[+{rest} chars]", &text[..at]))
        }
        None if unseen == 0 => Cow::Borrowed(text),
        None => Cow::Owned(format!("{text}…[+{unseen} chars]")),
    }
}

/// Characters in `bytes` as a cleaned (`clean`) or raw line would show
/// them: UTF-8 lead bytes, less control bytes when cleaning. Counts the
/// part of a very long line that is not kept.
pub fn count_chars(bytes: &[u8], clean: bool) -> u64 {
    let shown = |b: &u8| (b & 0xc0 != 0x80) & (!clean | (*b >= 0x20) | (*b == b'\t'));
    bytes.iter().filter(|b| shown(b)).count() as u64
}

/// Lines that differ only in numbers, versions, timestamps or hex ids share a
/// key: any run of letters and digits that contains a digit becomes `#`.
#[cfg(test)]
pub fn similarity_key(text: &str) -> String {
    let mut key = String::new();
    similarity_key_into(text, &mut key);
    key
}

/// [`similarity_key`] into `key` (cleared first), so a reader keying every
/// line reuses one buffer. Equivalent to the definition, but it looks only
/// for ASCII digits and widens each one to its word: the text in between is
/// copied as it is, so a line costs little more than a copy.
pub fn similarity_key_into(text: &str, key: &mut String) {
    key.clear();
    let bytes = text.as_bytes();
    let mut copied = 0; // text[..copied] is accounted for in `key`
    while let Some(found) = bytes[copied..].iter().position(u8::is_ascii_digit) {
        let digit = copied + found;
        // The word before `digit` cannot reach back past `copied`: the
        // previous word ended at a character that is not alphanumeric.
        let start = text[..digit]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_alphanumeric())
            .last()
            .map_or(digit, |(at, _)| at);
        let end = text[digit..]
            .char_indices()
            .find(|(_, c)| !c.is_alphanumeric())
            .map_or(text.len(), |(at, _)| digit + at);
        key.push_str(&text[copied..start]);
        key.push('#');
        copied = end;
    }
    key.push_str(&text[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, a char at a time: the byte walk must agree with it.
    fn reference_key(text: &str) -> String {
        let (mut key, mut word) = (String::new(), String::new());
        let flush = |word: &mut String, key: &mut String| {
            if word.bytes().any(|b| b.is_ascii_digit()) {
                key.push('#');
            } else {
                key.push_str(word);
            }
            word.clear();
        };
        for c in text.chars() {
            if c.is_alphanumeric() {
                word.push(c);
            } else {
                flush(&mut word, &mut key);
                key.push(c);
            }
        }
        flush(&mut word, &mut key);
        key
    }

    #[test]
    fn similarity_key_agrees_with_its_definition() {
        for text in [
            "",
            "GET /api/users/42 200 in 13ms",
            "Ünïcödé wörd 12ab → x9y │ done",
            "日本3語 テスト ٣٤ café2 naïve",
            "a1",
            "1",
            "abc",
            "--",
            "…42…",
            "\u{1F600} emoji😀7 end",
            "x1y2 z",
            "1a2b3",
            "ab12cd ef3",
            "é1é é",
            "٣a1",
            " 7 ",
            "a-1-b",
        ] {
            assert_eq!(similarity_key(text), reference_key(text), "{text:?}");
        }
    }

    #[test]
    fn strips_ansi_osc_and_remnants() {
        assert_eq!(
            clean(b"\x1b[32mready\x1b[0m in 3ms").unwrap(),
            "ready in 3ms"
        );
        assert_eq!(clean(b"\x1b]0;title\x07text").unwrap(), "text");
        assert_eq!(clean(b"[1;31merror[0m here").unwrap(), "error here");
    }

    #[test]
    fn progress_bars_keep_final_state() {
        assert_eq!(clean(b"10%\r50%\r100% done\r").unwrap(), "100% done");
    }

    #[test]
    fn blank_lines_drop() {
        assert!(clean(b"   ").is_none());
        assert!(clean(b"\x1b[0m").is_none());
    }

    #[test]
    fn pnpm_paths_shorten() {
        let line = b"at f (/app/node_modules/.pnpm/next@14.2.3_react-dom@18.2.0_react@18.2.0/node_modules/next/dist/server.js:1:2)";
        assert_eq!(
            clean(line).unwrap(),
            "at f (/app/node_modules/next@14.2.3/dist/server.js:1:2)"
        );
        let scoped = b"/x/node_modules/.pnpm/@next+env@14.2.3/node_modules/@next/env/index.js";
        assert_eq!(
            clean(scoped).unwrap(),
            "/x/node_modules/@next/env@14.2.3/index.js"
        );
    }

    #[test]
    fn cuts_long_lines() {
        assert_eq!(cut("abcdef", 4, 0), "abcd…[+2 chars]");
        assert_eq!(cut("abc", 4, 0), "abc");
        assert_eq!(cut("abcdef", 4, 10), "abcd…[+12 chars]");
        assert_eq!(cut("abc", 4, 10), "abc…[+10 chars]");
        assert_eq!(count_chars("é\x01x".as_bytes(), true), 2);
    }

    #[test]
    fn similar_lines_share_a_key() {
        assert_eq!(
            similarity_key("GET /a/42 200 in 13ms"),
            similarity_key("GET /a/7 200 in 9ms")
        );
        assert_ne!(similarity_key("GET /a 200"), similarity_key("GET /b 200"));
    }

    #[test]
    fn marker_only_lines_drop_but_column_pointers_stay() {
        assert!(clean(b"           ^^^^^^^^^^^").is_none());
        assert!(clean(b"           ~~~~~~^^^^^^^^^^").is_none());
        assert!(clean(b"\x1b[7m  \x1b[0m \x1b[91m    ~~~~~\x1b[0m").is_none());
        assert_eq!(clean(b"               ^").unwrap(), "               ^");
        assert_eq!(
            clean(b"  |     ^^^ expected `u32`").unwrap(),
            "  |     ^^^ expected `u32`"
        );
        assert_eq!(clean(b"    |  ^").unwrap(), "    |  ^");
        assert_eq!(
            clean(b"              ^^^^^^):").unwrap(),
            "              ^^^^^^):"
        );
    }

    #[test]
    fn invalid_utf8_is_lossy() {
        assert_eq!(clean(b"bad \xff byte").unwrap(), "bad \u{fffd} byte");
    }
}
