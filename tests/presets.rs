//! Each preset on a real captured dev-server log (tests/data/logs/, see its
//! README): routine noise goes, every error line and stack frame stays.

use crate::util::Env;
use std::path::PathBuf;

fn log(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/logs")
        .join(name)
}

/// Lines of a captured file, cleaned the way bgt cleans them.
fn cleaned_lines(name: &str) -> Vec<Option<String>> {
    let bytes = std::fs::read(log(name)).unwrap();
    bytes
        .split(|b| *b == b'\n')
        .map(|l| bgt::tidy::clean(l).map(|t| t.into_owned()))
        .collect()
}

struct Case<'a> {
    preset: &'a str,
    capture: &'a str,
    /// 1-based inclusive line ranges that must all survive, per stream.
    keep_stdout: &'a [(usize, usize)],
    keep_stderr: &'a [(usize, usize)],
    /// Substrings of noise lines that must be gone.
    noise: &'a [&'a str],
}

fn check(case: Case) {
    let env = Env::new();
    let out = log(&format!("{}.stdout.log", case.capture));
    let err = log(&format!("{}.stderr.log", case.capture));
    let id = env.start(&[&format!(
        "cat '{}'; cat '{}' >&2",
        out.display(),
        err.display()
    )]);
    env.wait_done(&id);
    let doc = env.output_json(&[&id, "--preset", case.preset, "--max-lines", "0"]);
    let kept: Vec<(String, String)> = doc["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_string(),
                l["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (stream, ranges) in [("stdout", case.keep_stdout), ("stderr", case.keep_stderr)] {
        let lines = cleaned_lines(&format!("{}.{stream}.log", case.capture));
        for &(from, to) in ranges {
            for n in from..=to {
                let Some(text) = &lines[n - 1] else { continue };
                assert!(
                    kept.iter().any(|(s, t)| s == stream && t == text),
                    "{}: {stream} line {n} was dropped: {text:?}",
                    case.preset
                );
            }
        }
    }
    for noise in case.noise {
        assert!(
            !kept.iter().any(|(_, t)| t.contains(noise)),
            "{}: noise survived: {noise:?}\n{:#?}",
            case.preset,
            kept.iter()
                .filter(|(_, t)| t.contains(noise))
                .collect::<Vec<_>>()
        );
    }
    // The preset must actually remove a good share of the log.
    let all = env.output_json(&[&id, "--max-lines", "0"]);
    let chars =
        |d: &serde_json::Value| -> usize { Env::texts(d).iter().map(|t| t.chars().count()).sum() };
    assert!(chars(&doc) < chars(&all), "{} removed nothing", case.preset);
}

#[test]
fn django_preset_on_runserver_log() {
    check(Case {
        preset: "django",
        capture: "django",
        keep_stdout: &[],
        keep_stderr: &[(35, 57), (72, 123), (129, 144)],
        noise: &[
            "\"GET /static/web/style.css HTTP/1.1\" 200",
            "\"GET /static/web/app.js HTTP/1.1\" 304",
            "\"OPTIONS /api/items HTTP/1.1\" 200",
            "\"GET /healthz HTTP/1.1\" 200",
            "Watching for file changes with StatReloader",
            "changed, reloading.",
            "Performing system checks...",
            "Starting development server at",
        ],
    });
}

#[test]
fn express_preset_on_morgan_dev_log() {
    check(Case {
        preset: "express",
        capture: "express",
        keep_stdout: &[(38, 41), (54, 54), (63, 63)],
        keep_stderr: &[(1, 38)],
        noise: &[
            "GET / 200",
            "GET /css/style.css 200",
            "GET /healthz 200",
            "OPTIONS /api/items 200",
            "GET /js/app.js 304",
            "Restarting 'app.js'",
            "Server listening on",
        ],
    });
}

#[test]
fn express_preset_on_morgan_combined_log() {
    check(Case {
        preset: "express",
        capture: "express-combined",
        keep_stdout: &[(38, 41)],
        keep_stderr: &[(1, 13)],
        noise: &[
            "\"GET /css/style.css HTTP/1.1\" 200",
            "\"OPTIONS /api/items HTTP/1.1\" 200",
            "\"GET / HTTP/1.1\" 304",
        ],
    });
}

#[test]
fn next_preset_on_next15_log() {
    check(Case {
        preset: "next",
        capture: "next",
        keep_stdout: &[(28, 28), (30, 30), (32, 32), (34, 34), (44, 45), (51, 51)],
        keep_stderr: &[(1, 93)],
        noise: &[
            "▲ Next.js",
            "✓ Ready in",
            "○ Compiling / ...",
            "✓ Compiled / in",
            "GET / 200 in",
            "GET /healthz 200 in",
            "OPTIONS /api/items 204 in",
        ],
    });
}

#[test]
fn next_preset_on_next16_turbopack_log() {
    check(Case {
        preset: "next",
        capture: "next16",
        keep_stdout: &[(7, 7), (21, 24), (33, 34), (40, 40)],
        keep_stderr: &[(1, 50)],
        noise: &[
            "▲ Next.js 16",
            "✓ Ready in",
            "GET /about 200 in",
            "OPTIONS /api/items 204 in",
            "✓ Compiled in",
        ],
    });
}

#[test]
fn vite_preset_on_vite_log() {
    check(Case {
        preset: "vite",
        capture: "vite",
        keep_stdout: &[],
        keep_stderr: &[(1, 84)],
        noise: &[
            "VITE v7",
            "➜  Local:",
            "hmr update /src/counter.js",
            "page reload index.html",
        ],
    });
}

#[test]
fn vite_preset_on_debug_hmr_log() {
    check(Case {
        preset: "vite",
        capture: "vite-debug-hmr",
        keep_stdout: &[],
        keep_stderr: &[(3, 15), (29, 54), (66, 110)],
        noise: &[
            "vite:hmr [self-accepts]",
            "vite:hmr [file change]",
            "hmr update",
        ],
    });
}

#[test]
fn rails_preset_on_puma_log() {
    check(Case {
        preset: "rails",
        capture: "rails",
        keep_stdout: &[
            (124, 124),
            (135, 135),
            (139, 145),
            (148, 148),
            (151, 151),
            (156, 156),
            (213, 223),
            (226, 226),
            (264, 274),
        ],
        keep_stderr: &[],
        noise: &[
            "Started GET \"/assets/",
            "Completed 200 OK",
            "Processing by PagesController#index",
            "Rendered pages/index.html.erb",
            "=> Booting Puma",
            "Completed 304 Not Modified",
        ],
    });
}

#[test]
fn general_preset_keeps_errors_of_every_capture() {
    for (capture, stderr_keep) in [("express", (1, 38)), ("next", (1, 93)), ("vite", (1, 84))] {
        check(Case {
            preset: "general",
            capture,
            keep_stdout: &[],
            keep_stderr: &[stderr_keep],
            noise: &[],
        });
    }
}
