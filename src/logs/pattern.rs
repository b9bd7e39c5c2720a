//! Line patterns: `--filter`, `--exclude`, presets and `wait --for-line`.
//!
//! Rust regex syntax, plus one concession to grep habits: `\|` means
//! alternation (agents and the seed skill write `ERROR\|WARN`); a literal
//! pipe is `[|]`. Filters ignore case by default, excludes and presets do
//! not, so noise removal stays surgical.

use crate::error::usage;
use anyhow::Result;
use regex::bytes::{Regex, RegexBuilder};
use std::sync::LazyLock;

/// A named exclude pattern for one stack's dev-server noise.
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub exclude: &'static str,
}

/// Lines a preset never hides, whatever its pattern says: anything that looks
/// like a problem (error words, 4xx/5xx statuses, stack frames). So a preset
/// can be generous about noise (`static`, `HMR`) without eating an error that
/// happens to mention a static file. Your own `--exclude` is not protected.
pub const PROTECT: &str = r#"(?i)error|exception|warn|fail|fatal|panic|traceback|critical|denied|refused|unhandled|uncaught|invalid|deprecat|cannot|can't|not found|⨯|✗|✘|⚠|^\s+at\s|^\s*File "|:\d+:in\s|\s[45]\d\d\s+(?:in\s|[\d-])"#;

/// The built-in presets: the seed's patterns plus the real formats of each
/// dev server, checked against captured logs in `tests/data/logs/` (access
/// lines of successful requests, static assets, hot reload, banners go;
/// errors, 4xx/5xx and stack traces stay).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "next",
        about: "Next.js dev server (webpack and Turbopack)",
        exclude: r"HMR|webpack|static|favicon|_next|compiled successfully|^\s*(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S+ [23]\d\d in \d|^\s*[✓○] |^\s*▲ Next\.js |^\s*- (?:Local|Network|Environments|Experiments)|Fast Refresh|hot-update",
    },
    Preset {
        name: "express",
        about: "Express / Node with morgan (dev, combined, common)",
        exclude: r#"GET 200|GET 304|healthcheck|OPTIONS|^(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S+ [23]\d\d \d+(?:\.\d+)? ms - (?:\d+|-)$|^\S+ - \S+ \[[^\]]+\] "(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S* HTTP/\d(?:\.\d)?" [23]\d\d (?:\d+|-)|^Server listening on |^Restarting '[^']+'$|/healthz?\b"#,
    },
    Preset {
        name: "django",
        about: "Django runserver",
        exclude: r#"GET /static|200 OK|Watching for|StatReloader|^\[[^\]]+\] "(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S* HTTP/\d(?:\.\d)?" [23]\d\d \d+$|^\S+ changed, reloading\.$|^(?:Performing system checks\.\.\.|System check identified no issues|Quit the server with CONTROL-C\.)|^(?:Django version \d|Starting development server at )|^[A-Z][a-z]+ \d{1,2}, \d{4} - \d{2}:\d{2}:\d{2}$|^For more information on production servers see: "#,
    },
    Preset {
        name: "rails",
        about: "Rails (Puma) development log",
        exclude: r#"Started GET.*assets|200 OK|Completed 200|^=> |^Puma starting in |^\* (?:Puma version|\s*Min threads|\s*Max threads|\s*Environment|\s*PID|Listening on)|^Use Ctrl-C to stop$|^- Gracefully stopping|^Exiting$|^Started (?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) "[^"]*" for \S+ at |^Processing by \S+ as |^  Parameters: |^  Render(?:ing|ed) |^ {2,3}(?:[A-Z]\w*(?: \w+)* )?\(\d+(?:\.\d+)?ms\)  |^  ↳ |^Completed [23]\d\d "#,
    },
    Preset {
        name: "vite",
        about: "Vite dev server",
        exclude: r"hmr|optimized|pre-bundling|static|^\s*VITE v\d|^\s*➜ |^[\d:]+(?: [AP]M)? \[vite\] (?:\(\w+\) )?(?:hmr update|page reload|hmr invalidate|server restarted|\S+ changed, restarting server) |^\s*vite:(?:hmr|deps|resolve|transform|load|time|spa-fallback|html-fallback|cache) ",
    },
    Preset {
        name: "general",
        about: "any web server: successful requests, health checks, static files, hot reload",
        exclude: r#"GET 200|healthcheck|favicon|static|HMR|hot.update|\[vite\] (?:\(\w+\) )?(?:hmr update|page reload) |^\s*(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S+ [23]\d\d\b|"(?:GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) \S* HTTP/\d(?:\.\d)?" [23]\d\d |/healthz?\b"#,
    },
    Preset {
        name: "webpack",
        about: "webpack / webpack-dev-server",
        exclude: r"compiled successfully|\[webpack-dev-server\]|\[HMR\]|hot-update|^\s*asset \S+ [\d.]+ [KMk]?i?B|cacheable modules|modules by path|orphan modules|runtime modules",
    },
    Preset {
        name: "jest",
        about: "Jest / Vitest: passing tests and progress",
        exclude: r"^\s*(?:✓|√|✔)\s|^\s*PASS\s|^\s*RUNS\s|Determining test suites",
    },
    Preset {
        name: "pytest",
        about: "pytest: passing tests and progress dots",
        exclude: r" PASSED(?: |$)|^[.sx]+\s*\[\s*\d+%\]$|^platform |^cachedir:|^rootdir:|^plugins:|^collecting",
    },
    Preset {
        name: "cargo",
        about: "cargo build/test: compile progress and passing tests",
        exclude: r"^\s*(?:Compiling|Checking|Downloaded|Downloading|Fresh|Blocking|Locking|Updating|Adding) |^test \S+ \.\.\. ok$|^running \d+ tests?$",
    },
];

/// Looks a preset up by name; unknown names are usage errors listing the choices.
pub fn preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        usage(format!(
            "unknown preset '{name}' (choose from {})",
            names.join(", ")
        ))
    })
}

/// Case handling chosen on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Case {
    /// Filters ignore case, excludes and presets do not.
    #[default]
    Smart,
    /// Everything matches case-sensitively.
    Sensitive,
    /// Everything ignores case.
    Insensitive,
}

/// Rewrites grep-style `\|` into regex alternation; everything else is kept.
pub fn grep_alternation(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('|') => out.push('|'),
            Some(next) => {
                out.push('\\');
                out.push(next);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Compiles a user pattern; `option` names it in errors (`--filter`).
pub fn compile(option: &str, pattern: &str, ignore_case: bool) -> Result<Regex> {
    RegexBuilder::new(&grep_alternation(pattern))
        .case_insensitive(ignore_case)
        .size_limit(64 << 20)
        .build()
        .map_err(|e| {
            usage(format!(
                "invalid {option} regex '{pattern}': {}",
                describe(&e)
            ))
        })
}

/// One-line description of a regex error: its message and where.
fn describe(err: &regex::Error) -> String {
    let regex::Error::Syntax(text) = err else {
        return err.to_string();
    };
    let lines: Vec<&str> = text.lines().collect();
    let message = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or("syntax error")
        .to_string();
    // The caret line points into the pattern line printed four spaces in.
    match lines.iter().find(|l| l.trim_start().starts_with('^')) {
        Some(caret) => {
            let column = caret.find('^').unwrap_or(4).saturating_sub(4);
            format!("{message} at position {column}")
        }
        None => message,
    }
}

/// The compiled selection: which lines a read keeps.
#[derive(Clone, Debug, Default)]
pub struct LineMatch {
    pub filter: Option<Regex>,
    /// The user's `--exclude`.
    pub exclude: Option<Regex>,
    /// All chosen presets in one regex; never applied to `PROTECT`ed lines.
    pub presets: Option<Regex>,
    /// The filter compiled for searching whole chunks of lines at once
    /// (multi-line, so `^`/`$` match at line boundaries). `None` when the
    /// pattern cannot be searched that way (`\A`, `\z`); then lines are
    /// matched one at a time.
    chunk_filter: Option<Regex>,
    /// The filter may match text that only exists after lossy UTF-8
    /// decoding (`.`, negated classes), so chunk search needs valid UTF-8.
    chunk_needs_utf8: bool,
    /// When the filter is a case-sensitive alternation of plain words
    /// (`ERROR|WARN`), those words: searching each with SIMD memmem finds
    /// candidate lines faster than the general regex search.
    literals: Option<Vec<memchr::memmem::Finder<'static>>>,
}

/// Whether the filter means the same searched over a run of lines as line
/// by line: its anchors must be line anchors. `\A` and `\z` are the text's
/// ends, and an inline flag turning multi-line off (`(?-m)^x`) makes `^` and
/// `$` the ends of the whole run (the search then found only a run's first
/// line).
fn searchable_in_chunks(pattern: &str) -> bool {
    static MULTI_LINE_OFF: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\(\?[a-zA-Z]*-[a-zA-Z]*m").expect("valid regex"));
    !pattern.contains("\\A")
        && !pattern.contains("\\z")
        && !MULTI_LINE_OFF.is_match(pattern.as_bytes())
}

/// The words of a case-sensitive pattern made only of literal alternatives.
fn literal_words(pattern: &str) -> Option<Vec<memchr::memmem::Finder<'static>>> {
    let plain = grep_alternation(pattern);
    let words: Vec<&str> = plain.split('|').collect();
    let simple = |w: &&str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b" _:-=/".contains(&b))
    };
    (words.len() <= 4 && words.iter().all(simple)).then(|| {
        words
            .iter()
            .map(|w| memchr::memmem::Finder::new(w.as_bytes()).into_owned())
            .collect()
    })
}

impl LineMatch {
    /// Builds the filter and the combined exclude (user pattern plus presets);
    /// `option` names the filter in errors (`--filter`, `--for-line`).
    pub fn build(
        option: &str,
        filter: Option<&str>,
        exclude: Option<&str>,
        presets: &[String],
        case: Case,
    ) -> Result<LineMatch> {
        let filter_ic = case != Case::Sensitive;
        let exclude_ic = case == Case::Insensitive;
        let literals = match (filter, filter_ic) {
            (Some(p), false) => literal_words(p),
            _ => None,
        };
        let chunk_filter = match filter {
            Some(p) if searchable_in_chunks(p) => Some(
                RegexBuilder::new(&grep_alternation(p))
                    .case_insensitive(filter_ic)
                    .multi_line(true)
                    .size_limit(64 << 20)
                    .build()
                    .ok(),
            )
            .flatten(),
            _ => None,
        };
        let chunk_needs_utf8 = filter.is_some_and(|p| {
            p.contains('.')
                || p.contains("[^")
                || ["\\W", "\\S", "\\D", "\\P", "\\p", "\\B"]
                    .iter()
                    .any(|c| p.contains(c))
        });
        let filter = filter.map(|p| compile(option, p, filter_ic)).transpose()?;
        let exclude = exclude
            .map(|p| compile("--exclude", p, exclude_ic))
            .transpose()?;
        let mut parts: Vec<String> = Vec::new();
        for name in presets {
            parts.push(format!("(?:{})", preset(name)?.exclude));
        }
        let presets = match parts.is_empty() {
            true => None,
            false => Some(compile("--preset", &parts.join("|"), exclude_ic)?),
        };
        Ok(LineMatch {
            filter,
            exclude,
            presets,
            chunk_filter,
            chunk_needs_utf8,
            literals,
        })
    }

    /// Whether runs of lines may be searched at once ([`LineMatch::candidates`]).
    pub fn searches_chunks(&self) -> bool {
        self.chunk_filter.is_some()
    }

    /// Whether a filter selects lines (then similar lines are not collapsed:
    /// someone asking for errors sees every one).
    pub fn has_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// A candidate search over `chunk`, a run of whole lines, or `None` when
    /// lines must be matched one at a time: no chunk-searchable filter,
    /// cleaning would change what the filter sees (`unchanged` false), or
    /// the filter needs valid UTF-8 and the chunk is not.
    pub fn candidates(&self, chunk: &[u8], unchanged: bool) -> Option<Candidates<'_>> {
        let re = self.chunk_filter.as_ref()?;
        if !unchanged || (self.chunk_needs_utf8 && std::str::from_utf8(chunk).is_err()) {
            return None;
        }
        Some(Candidates {
            re,
            literals: self.literals.as_deref(),
            next: vec![None; self.literals.as_ref().map_or(0, Vec::len)],
        })
    }

    /// Whether a (cleaned) line is kept: not excluded, and matching the filter if any.
    pub fn keeps(&self, text: &[u8]) -> bool {
        static PROTECTED: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(PROTECT).expect("valid regex"));
        let excluded = self.exclude.as_ref().is_some_and(|re| re.is_match(text))
            || self
                .presets
                .as_ref()
                .is_some_and(|re| re.is_match(text) && !PROTECTED.is_match(text));
        !excluded && self.filter.as_ref().is_none_or(|re| re.is_match(text))
    }
}

/// The matcher's fast path over a chunk of lines (see [`LineMatch::candidates`]),
/// kept inside the matcher as ripgrep's `find_candidate_line` is.
pub struct Candidates<'m> {
    re: &'m Regex,
    literals: Option<&'m [memchr::memmem::Finder<'static>]>,
    /// Each word's next position, searched again only once passed, so a rare
    /// word is not re-scanned for every occurrence of a frequent one.
    next: Vec<Option<usize>>,
}

impl Candidates<'_> {
    /// A byte at or after `from` in the first line that may match, or in
    /// a line before it. Candidates must be confirmed line by line with
    /// [`LineMatch::keeps`], so a match spanning lines never counts.
    pub fn next_candidate(&mut self, hay: &[u8], from: usize) -> Option<usize> {
        let Some(finders) = self.literals else {
            // The end of the earliest match, not a whole match: the line it
            // ends in comes no later than the first matching line (which is
            // all a candidate promises), and a forward scan alone reads every
            // byte once. A mapped log cut short changes bytes under a search
            // (zeros replace vanished pages): a whole match's second, reverse
            // scan would then find no start and panic.
            return self
                .re
                .shortest_match_at(hay, from)
                .map(|end| if end > from { end - 1 } else { end });
        };
        for (finder, slot) in finders.iter().zip(self.next.iter_mut()) {
            if slot.is_none_or(|at| at < from) {
                *slot = Some(finder.find(&hay[from..]).map_or(usize::MAX, |at| at + from));
            }
        }
        self.next
            .iter()
            .flatten()
            .copied()
            .min()
            .filter(|&at| at != usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grep_pipes_become_alternation() {
        assert_eq!(grep_alternation(r"ERROR\|WARN"), "ERROR|WARN");
        assert_eq!(grep_alternation(r"a\.b\\"), r"a\.b\\");
        let m = LineMatch::build("--filter", Some(r"ERROR\|WARN"), None, &[], Case::Smart).unwrap();
        assert!(m.keeps(b"a warn here"));
        assert!(!m.keeps(b"info"));
    }

    #[test]
    fn literal_pipe_is_a_class() {
        let m = LineMatch::build("--filter", Some("a[|]b"), None, &[], Case::Smart).unwrap();
        assert!(m.keeps(b"a|b"));
        assert!(!m.keeps(b"a"));
    }

    #[test]
    fn invalid_regex_names_pattern_and_position() {
        let err = LineMatch::build("--filter", Some("ERROR("), None, &[], Case::Smart).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --filter regex 'ERROR(': unclosed group at position 5"
        );
    }

    #[test]
    fn excludes_are_case_sensitive_by_default() {
        let m = LineMatch::build("--filter", None, Some("hmr"), &[], Case::Smart).unwrap();
        assert!(m.keeps(b"HMR update"));
        assert!(!m.keeps(b"hmr update"));
    }

    #[test]
    fn plain_alternations_get_a_literal_search() {
        let words = |p: &str, case| {
            LineMatch::build("--filter", Some(p), None, &[], case)
                .unwrap()
                .literals
                .map(|l| l.len())
        };
        assert_eq!(words(r"ERROR\|WARN", Case::Sensitive), Some(2));
        assert_eq!(
            words("ERROR|WARN", Case::Smart),
            None,
            "case-insensitive needs the regex"
        );
        assert_eq!(words("ERR.R", Case::Sensitive), None);
        assert_eq!(words("a|", Case::Sensitive), None);
    }

    #[test]
    fn anchors_of_the_whole_text_are_matched_line_by_line() {
        for p in [r"\Aa", r"a\z", "(?-m)^2026", "(?i-m:^x)", "(?s-m)x$"] {
            assert!(!searchable_in_chunks(p), "{p}");
        }
        for p in ["^2026", "(?m)^x", "(?i)err", "a-m", "(?-i)m"] {
            assert!(searchable_in_chunks(p), "{p}");
        }
    }

    #[test]
    fn every_preset_compiles() {
        for p in PRESETS {
            LineMatch::build("--filter", None, None, &[p.name.to_string()], Case::Smart).unwrap();
        }
        assert!(preset("nope").is_err());
    }
}
