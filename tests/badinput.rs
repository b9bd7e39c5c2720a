//! Bad input: every case gets one line on stderr naming the problem and exit
//! 1 (2 for usage errors); never a panic, never a backtrace.

use crate::util::Env;
use std::os::unix::fs::PermissionsExt;

fn expect(env: &Env, home: Option<&std::path::Path>, args: &[&str], code: i32, needle: &str) {
    let mut cmd = env.cmd();
    if let Some(home) = home {
        cmd.env("BGT_HOME", home);
    }
    let out = cmd.args(args).env("RUST_BACKTRACE", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line:\n{err}");
    assert!(err.starts_with("bgt: "), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{args:?}: {err}"
    );
}

#[test]
fn bad_input_table() {
    let env = Env::new();
    let a = env.start(&["true"]);
    let b = env.start(&["true"]);
    env.wait_done(&a);
    env.wait_done(&b);
    let file = env.file("plain.txt", "x");
    let script = env.file("noexec.sh", "echo hi\n");

    #[rustfmt::skip]
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["status", "t-ffffff"], 1, "no task matches 't-ffffff'"),
        (vec!["output", "zzz"], 1, "no task matches 'zzz'"),
        (vec!["status", "t-"], 1, "is ambiguous"),
        (vec!["run", "--label", "", "--", "true"], 2, "invalid label"),
        (vec!["run", "--label", "a/b", "--", "true"], 2, "invalid label"),
        (vec!["run", "--label", "..", "--", "true"], 2, "invalid label"),
        (vec!["run", "--label", "a\nb", "--", "true"], 2, "invalid label"),
        (vec!["run", "--cwd", "/no/such/dir", "--", "true"], 1, "cannot use --cwd '/no/such/dir': No such file or directory"),
        (vec!["run", "--cwd", &file, "--", "true"], 1, "Not a directory"),
        (vec!["run", "--", "no-such-program-xyz"], 1, "cannot start 'no-such-program-xyz': No such file or directory"),
        (vec!["run", "--", &script], 1, "Permission denied"),
        (vec!["run", "--", ""], 2, "empty command"),
        (vec!["run"], 2, "required"),
        (vec!["output", &a, "--filter", "ERROR("], 2, "invalid --filter regex 'ERROR(': unclosed group"),
        (vec!["output", &a, "--exclude", "x{2,1}"], 2, "invalid --exclude regex"),
        (vec!["wait", &a, "--for-line", "(("], 2, "invalid --for-line regex"),
        (vec!["output", &a, "--preset", "cobol"], 2, "unknown preset 'cobol'"),
        (vec!["output", &a, "--tail", "-5"], 2, "-5"),
        (vec!["output", &a, "--max-lines", "99999999999999999999999"], 2, "invalid value"),
        (vec!["output", &a, "--max-lines", "-1"], 2, "-1"),
        (vec!["run", "--timeout", "soon", "--", "true"], 2, "invalid duration 'soon'"),
        (vec!["stop", &a, "--grace", "5 parsecs"], 2, "invalid duration"),
        (vec!["stop", &a, "--signal", "SIGNOPE"], 2, "unknown signal 'SIGNOPE'"),
        (vec!["run", "--env", "NOEQUALS", "--", "true"], 2, "expected KEY=VALUE"),
        (vec!["run", "--env", "=v", "--", "true"], 2, "expected KEY=VALUE"),
        (vec!["output", &a, "--since", "--cursor", "../x"], 2, "invalid cursor name"),
        (vec!["wait", &a, "--for-http", "ftp://x"], 2, "unsupported --for-http URL"),
        (vec!["frobnicate"], 2, "unrecognized subcommand"),
        (vec!["output", &a, "--stream", "stdin"], 2, "invalid value 'stdin'"),
        (vec!["restart", "nope"], 1, "no task matches 'nope'"),
    ];
    for (args, code, needle) in &cases {
        expect(&env, None, args, *code, needle);
    }
    assert!(cases.len() >= 20);
}

#[test]
fn bad_state_directories_are_refused() {
    let env = Env::new();
    let file = env.file("not-a-dir", "x");
    expect(
        &env,
        Some(std::path::Path::new(&file)),
        &["status"],
        1,
        "is not a directory",
    );

    let open = env.work().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    expect(&env, Some(&open), &["status"], 1, "writable by others");

    if nix::unistd::geteuid().is_root() {
        let theirs = env.work().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        expect(
            &env,
            Some(&theirs),
            &["status"],
            1,
            "owned by uid 65534, not by you",
        );
    }
}

#[test]
fn cwd_without_permission_is_refused() {
    let env = Env::new();
    if nix::unistd::geteuid().is_root() {
        // root may enter any directory, so there is nothing to refuse.
        let out = env.run(&["run", "--cwd", "/", "--", "true"]);
        assert!(out.status.success());
        return;
    }
    let locked = env.work().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    expect(
        &env,
        None,
        &["run", "--cwd", locked.to_str().unwrap(), "--", "true"],
        1,
        "Permission denied",
    );
}

#[test]
fn regression_huge_durations_are_refused_not_wrapped() {
    let env = Env::new();
    let id = env.start(&["true"]);
    env.wait_done(&id);
    for args in [
        vec!["wait", id.as_str(), "--timeout", "18446744073709551615"],
        vec!["stop", id.as_str(), "--grace", "18446744073709551615"],
        vec!["stop", "--older-than", "9300000000000000"],
        vec!["cleanup", "--older-than", "9300000000000000"],
        vec!["run", "--timeout", "18446744073709552", "--", "true"],
    ] {
        expect(&env, None, &args, 2, "too long");
    }
    assert!(
        env.home().join(&id).exists(),
        "cleanup with a refused --older-than removed nothing"
    );
}

#[test]
fn with_json_an_error_is_a_json_document_on_stdout_too() {
    let env = Env::new();
    let cases: [(&[&str], i32, &str); 4] = [
        (&["status", "nope", "--json"], 1, "unknown_task"),
        (&["output", "--json", "--bogus"], 2, "usage"),
        (
            &["run", "--json", "--", "definitely-not-a-program"],
            1,
            "start_failed",
        ),
        (&["output", "x", "--filter", "(", "--json"], 2, "usage"),
    ];
    for (args, code, kind) in cases {
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e})"));
        assert_eq!(doc["error"]["kind"], kind, "{args:?}: {doc}");
        let message = doc["error"]["message"].as_str().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim(), format!("bgt: {message}"), "{args:?}");
    }
    let _held = env.start_with(&["--label", "web"], &["sleep", "30"]);
    let out = env.run(&["run", "--label", "web", "--json", "--", "true"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["error"]["kind"], "label_in_use");
}

#[test]
fn a_closed_stdout_is_never_a_panic() {
    let env = Env::new();
    let id = env.start(&["echo", "hi"]);
    env.wait_done(&id);
    for args in [
        "status",
        "status --json",
        "run -- true",
        &format!("output {id}"),
        &format!("stop {id}"),
        "status nope --json",
        "output --json",
        "cleanup",
    ] {
        // The reader is gone before bgt writes.
        let out = env
            .sh(&format!(
                "exec 1>&-; exec 1<>/dev/null; $BGT {args} | (exec 0<&-; sleep 0.05)"
            ))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args}: {stderr}");
    }
}
