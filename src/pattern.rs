//! Line patterns: `--filter`, `--exclude`, presets and `wait --for-line`.
//!
//! Rust regex syntax, plus one concession to grep habits: `\|` means
//! alternation (agents and the seed skill write `ERROR\|WARN`); a literal
//! pipe is `[|]`. Filters ignore case by default, excludes and presets do
//! not, so noise removal stays surgical.

use crate::error::usage;
use anyhow::Result;
use regex::bytes::{Regex, RegexBuilder};

/// A named exclude pattern for one stack's dev-server noise.
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    pub exclude: &'static str,
}

/// The built-in presets. Each was checked against a real dev-server log in
/// `tests/data/logs/`: access lines for successful requests, static assets,
/// hot reload and watcher banners go; errors, 4xx/5xx and stack traces stay.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "next",
        about: "Next.js dev server",
        exclude: r"HMR|webpack|/_next/|favicon|[Cc]ompil(ed|ing)\b.*(successfully|in \d|\.\.\.)|✓ (Compiled|Ready|Starting)|○ Compiling|GET /\S* (200|304) in|Fast Refresh|hot-update|static/",
    },
    Preset {
        name: "express",
        about: "Express / Node (morgan dev, combined, common)",
        exclude: r"\b(GET|HEAD|OPTIONS) \S+ (2\d\d|304) |\x22(GET|HEAD|OPTIONS) \S+ HTTP/[\d.]+\x22 (2\d\d|304) |\bOPTIONS \S+ |healthz?\b|/health\b|favicon",
    },
    Preset {
        name: "django",
        about: "Django runserver",
        exclude: r"\x22(GET|HEAD|OPTIONS) /static/|\x22(GET|HEAD|OPTIONS) \S+ HTTP/[\d.]+\x22 (2\d\d|304) |Watching for file changes|StatReloader|Performing system checks|System check identified no issues|^Quit the server with|favicon",
    },
    Preset {
        name: "rails",
        about: "Rails development log",
        exclude: r"Started (GET|HEAD) \x22/(assets|packs|vite)|Completed (2\d\d|304) |Processing by .* as |^\s*Rendered |^\s*Rendering |Served asset|Cache (read|write)|ActiveRecord::SchemaMigration|healthz?\b|/up\b",
    },
    Preset {
        name: "vite",
        about: "Vite dev server",
        exclude: r"\[vite\] (hmr|page reload|\(client\) hmr|\(ssr\))|hmr update|optimized dependencies|[Pp]re-bundling|new dependencies optimized|VITE v|➜\s+(Local|Network|press)|ready in \d|static",
    },
    Preset {
        name: "general",
        about: "any web server: successful requests, health checks, static files, hot reload",
        exclude: r"\b(GET|HEAD|OPTIONS) \S+ (200|204|304)\b|\x22(GET|HEAD) \S+ HTTP/[\d.]+\x22 (200|204|304) |healthz?\b|/health\b|favicon|/static/|HMR|hot.update",
    },
    Preset {
        name: "webpack",
        about: "webpack / webpack-dev-server",
        exclude: r"webpack \d+\.\d+\.\d+ compiled successfully|\[webpack-dev-server\]|\[HMR\]|hot-update|asset \S+ [\d.]+ [KMk]?i?B|cacheable modules|modules by path|orphan modules|runtime modules",
    },
    Preset {
        name: "jest",
        about: "Jest / Vitest runs: passing tests and progress",
        exclude: r"^\s*(✓|√|✔)\s|^\s*PASS\s|^\s*RUNS\s|Determining test suites",
    },
    Preset {
        name: "pytest",
        about: "pytest: passing tests and progress dots",
        exclude: r" PASSED( |$)|^[.sx]+\s*\[\s*\d+%\]$|^platform |^cachedir:|^rootdir:|^plugins:|^collecting",
    },
    Preset {
        name: "cargo",
        about: "cargo build/test: compile progress and passing tests",
        exclude: r"^\s*(Compiling|Checking|Downloaded|Downloading|Fresh|Blocking|Locking|Updating|Adding) |^test \S+ \.\.\. ok$|^running \d+ tests?$",
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
    pub exclude: Option<Regex>,
}

impl LineMatch {
    /// Builds the filter and the combined exclude (user pattern plus presets).
    pub fn build(
        filter: Option<&str>,
        exclude: Option<&str>,
        presets: &[String],
        case: Case,
    ) -> Result<LineMatch> {
        let filter_ic = case != Case::Sensitive;
        let exclude_ic = case == Case::Insensitive;
        let filter = filter
            .map(|p| compile("--filter", p, filter_ic))
            .transpose()?;
        let mut parts: Vec<String> = Vec::new();
        if let Some(p) = exclude {
            compile("--exclude", p, exclude_ic)?;
            parts.push(grep_alternation(p));
        }
        for name in presets {
            parts.push(preset(name)?.exclude.to_string());
        }
        let exclude = match parts.len() {
            0 => None,
            _ => {
                let joined = parts
                    .iter()
                    .map(|p| format!("(?:{p})"))
                    .collect::<Vec<_>>()
                    .join("|");
                Some(compile("--exclude", &joined, exclude_ic)?)
            }
        };
        Ok(LineMatch { filter, exclude })
    }

    /// Whether a (cleaned) line is kept: not excluded, and matching the filter if any.
    pub fn keeps(&self, text: &[u8]) -> bool {
        !self.exclude.as_ref().is_some_and(|re| re.is_match(text))
            && self.filter.as_ref().is_none_or(|re| re.is_match(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grep_pipes_become_alternation() {
        assert_eq!(grep_alternation(r"ERROR\|WARN"), "ERROR|WARN");
        assert_eq!(grep_alternation(r"a\.b\\"), r"a\.b\\");
        let m = LineMatch::build(Some(r"ERROR\|WARN"), None, &[], Case::Smart).unwrap();
        assert!(m.keeps(b"a warn here"));
        assert!(!m.keeps(b"info"));
    }

    #[test]
    fn literal_pipe_is_a_class() {
        let m = LineMatch::build(Some("a[|]b"), None, &[], Case::Smart).unwrap();
        assert!(m.keeps(b"a|b"));
        assert!(!m.keeps(b"a"));
    }

    #[test]
    fn invalid_regex_names_pattern_and_position() {
        let err = LineMatch::build(Some("ERROR("), None, &[], Case::Smart).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --filter regex 'ERROR(': unclosed group at position 5"
        );
    }

    #[test]
    fn excludes_are_case_sensitive_by_default() {
        let m = LineMatch::build(None, Some("hmr"), &[], Case::Smart).unwrap();
        assert!(m.keeps(b"HMR update"));
        assert!(!m.keeps(b"hmr update"));
    }

    #[test]
    fn every_preset_compiles() {
        for p in PRESETS {
            LineMatch::build(None, None, &[p.name.to_string()], Case::Smart).unwrap();
        }
        assert!(preset("nope").is_err());
    }
}
