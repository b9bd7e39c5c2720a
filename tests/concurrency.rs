//! Many runs and readers at once: unique ids, valid records, exact cursors.

use crate::util::{Env, succeeded};
use std::collections::HashSet;
use std::time::Duration;

#[test]
fn fifty_parallel_runs_with_twenty_readers() {
    let env = Env::new();
    let env = &env;
    let (ids, reader_failures) = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..20)
            .map(|i| {
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for _ in 0..5 {
                        let args: Vec<String> = if i % 2 == 0 {
                            vec!["status".into(), "--json".into()]
                        } else {
                            vec!["status".into()]
                        };
                        let out = env.cmd().args(&args).output().unwrap();
                        if !out.status.success() {
                            failures.push(String::from_utf8_lossy(&out.stderr).to_string());
                        }
                    }
                    failures
                })
            })
            .collect();
        let runs: Vec<_> = (0..50)
            .map(|i| {
                scope.spawn(move || {
                    let out = env
                        .cmd()
                        .args([
                            "run",
                            "--",
                            "sh",
                            "-c",
                            &format!("echo task {i}; exit {}", i % 7),
                        ])
                        .output()
                        .unwrap();
                    (i, succeeded("bgt run", out).trim().to_string())
                })
            })
            .collect();
        let ids: Vec<(i32, String)> = runs.into_iter().map(|h| h.join().unwrap()).collect();
        let failures: Vec<String> = readers
            .into_iter()
            .flat_map(|r| r.join().unwrap())
            .collect();
        (ids, failures)
    });
    assert_eq!(reader_failures, Vec::<String>::new());
    let unique: HashSet<&String> = ids.iter().map(|(_, id)| id).collect();
    assert_eq!(unique.len(), 50);
    // Readers with cursors while they finish.
    for (_, id) in &ids {
        env.ok(&["output", id, "--since", "--json"]);
    }
    for (i, id) in &ids {
        let done = env.wait_done(id);
        assert_eq!(done["exit_code"], i % 7, "{id}");
        assert_eq!(
            env.ok(&["output", id, "--stream", "stdout"]),
            format!("task {i}\n")
        );
        let meta = std::fs::read_to_string(env.home().join(id).join("meta.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&meta).unwrap();
    }
}

#[test]
fn racing_readers_on_one_cursor_get_every_line_exactly_once() {
    let env = Env::new();
    let id = env.start(&["i=0; while [ $i -lt 3000 ]; do echo \"n $i\"; i=$((i+1)); done"]);
    let (env, id_ref) = (&env, id.as_str());
    let mut all: Vec<String> = std::thread::scope(|scope| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(move || {
                    let mut got = Vec::new();
                    let mut idle = 0;
                    while idle < 30 {
                        let out = env
                            .cmd()
                            .args([
                                "output",
                                id_ref,
                                "--since",
                                "--cursor",
                                "shared",
                                "--max-lines",
                                "37",
                                "--raw",
                                "--json",
                            ])
                            .args(["--stream", "stdout"])
                            .output()
                            .unwrap();
                        assert!(out.status.success());
                        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                        let lines: Vec<String> = doc["lines"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|l| l["partial"] == false)
                            .map(|l| l["text"].as_str().unwrap().to_string())
                            .collect();
                        if lines.is_empty() {
                            idle += 1;
                            std::thread::sleep(Duration::from_millis(10));
                        } else {
                            idle = 0;
                        }
                        got.extend(lines);
                    }
                    got
                })
            })
            .collect();
        readers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    env.wait_done(&id);
    // Whatever the readers missed at the very end is still behind the cursor.
    let rest = env.output_json(&[
        &id,
        "--since",
        "--cursor",
        "shared",
        "--max-lines",
        "0",
        "--raw",
        "--stream",
        "stdout",
    ]);
    all.extend(Env::texts(&rest));
    assert_eq!(all.len(), 3000, "every line exactly once");
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), 3000);
}
