//! Many runs and readers at once: unique ids, valid records, exact cursors.

use crate::util::{BGT, Env, succeeded};
use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

#[test]
fn fifty_parallel_runs_with_twenty_readers() {
    let env = Env::new();
    let home = env.home().to_path_buf();
    let readers: Vec<_> = (0..20)
        .map(|i| {
            let home = home.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for _ in 0..5 {
                    let args: Vec<String> = if i % 2 == 0 {
                        vec!["status".into(), "--json".into()]
                    } else {
                        vec!["status".into()]
                    };
                    let out = Command::new(BGT)
                        .args(&args)
                        .env("BGT_HOME", &home)
                        .output()
                        .unwrap();
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
            let home = home.clone();
            std::thread::spawn(move || {
                let out = Command::new(BGT)
                    .args([
                        "run",
                        "--",
                        "sh",
                        "-c",
                        &format!("echo task {i}; exit {}", i % 7),
                    ])
                    .env("BGT_HOME", &home)
                    .output()
                    .unwrap();
                (i, succeeded("bgt run", out).trim().to_string())
            })
        })
        .collect();
    let ids: Vec<(i32, String)> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    for reader in readers {
        assert_eq!(reader.join().unwrap(), Vec::<String>::new());
    }
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
    let home = env.home().to_path_buf();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (home, id) = (home.clone(), id.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut idle = 0;
                while idle < 30 {
                    let out = Command::new(BGT)
                        .args([
                            "output",
                            &id,
                            "--since",
                            "--cursor",
                            "shared",
                            "--max-lines",
                            "37",
                            "--raw",
                            "--json",
                        ])
                        .args(["--stream", "stdout"])
                        .env("BGT_HOME", &home)
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
    let mut all: Vec<String> = readers
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
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
