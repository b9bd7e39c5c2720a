//! The cheap paths `status` and name lookups take through a large history
//! (records read in one open on several threads, parsed once) give the same
//! answers and the same guarantees as the careful ones.

use crate::util::*;
use serde_json::Value;
use std::path::Path;

/// Copies the record of `seed` under `n` fresh ids, each created `i` seconds
/// after the seed, so the expected order is known.
fn copies(env: &Env, seed: &str, n: usize) -> Vec<String> {
    let src = env.task_dir(seed);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("meta.json")).unwrap()).unwrap();
    let created =
        chrono::DateTime::parse_from_rfc3339(record["created"].as_str().unwrap()).unwrap();
    (0..n)
        .map(|i| {
            // Ids in the reverse of creation order: listing order must not leak through.
            let id = format!("t-{:06x}", 0xffffff - i);
            let dir = env.home().join(&id);
            std::fs::create_dir(&dir).unwrap();
            for file in ["stdout.log", "stderr.log", "lock"] {
                std::fs::copy(src.join(file), dir.join(file)).unwrap();
            }
            let mut record = record.clone();
            record["id"] = id.clone().into();
            record["label"] = format!("copy{i}").into();
            record["created"] = (created + chrono::Duration::seconds(i as i64 + 1))
                .to_rfc3339()
                .into();
            std::fs::write(dir.join("meta.json"), record.to_string()).unwrap();
            id
        })
        .collect()
}

#[test]
fn status_of_a_large_history_lists_every_task_once_oldest_first() {
    let env = Env::new();
    let seed = env.start(&["echo hello; echo oops >&2"]);
    env.wait_done(&seed);
    // More than one reading thread's share (512), fewer than a slow test.
    let ids = copies(&env, &seed, 1100);
    let doc: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let shown: Vec<&str> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = std::iter::once(seed.as_str())
        .chain(ids.iter().map(String::as_str))
        .collect();
    assert_eq!(shown, expected);
    for task in doc["tasks"].as_array().unwrap() {
        assert_eq!(task["state"], "exited", "{task}");
        assert_eq!(
            (task["stdout_lines"].as_u64(), task["stderr_lines"].as_u64()),
            (Some(1), Some(1))
        );
    }
    let table = env.ok(&["status"]);
    assert_eq!(table.lines().count(), 1 + expected.len(), "{table}");
    // Every name kind finds its task among them.
    assert_eq!(env.status(&ids[700])["id"], ids[700].as_str());
    assert_eq!(env.status("copy700")["id"], ids[700].as_str());
    assert_eq!(env.status(&ids[700][2..])["id"], ids[700].as_str());
}

#[test]
fn records_behind_planted_symlinks_are_never_read() {
    let env = Env::new();
    let seed = env.start(&["true"]);
    env.wait_done(&seed);
    let outside = tempfile::tempdir().unwrap();
    let real = env.task_dir(&seed);
    // A task directory that is a symlink to a real task directory elsewhere.
    let elsewhere = outside.path().join("task");
    copy_dir(&real, &elsewhere);
    std::os::unix::fs::symlink(&elsewhere, env.home().join("t-aaaaa1")).unwrap();
    // A real task directory whose record is a symlink to a valid record.
    let planted = env.home().join("t-aaaaa2");
    std::fs::create_dir(&planted).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("meta.json"), planted.join("meta.json")).unwrap();

    let doc: Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let error = |id: &str| -> String {
        let task = doc["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing in {doc}"));
        assert_eq!(task["state"], "broken", "{task}");
        task["error"].as_str().unwrap().to_string()
    };
    // (O_DIRECTORY|O_NOFOLLOW refuses a symlink with ENOTDIR.)
    assert_eq!(error("t-aaaaa1"), "not a task directory");
    let record = error("t-aaaaa2");
    assert!(record.starts_with("cannot read meta.json"), "{record}");
    // Named directly, they are the same broken tasks.
    assert_eq!(env.status("t-aaaaa1")["state"], "broken");
    assert_eq!(env.status("t-aaaaa2")["state"], "broken");
}

#[test]
fn every_kind_of_bad_record_keeps_its_own_message() {
    let env = Env::new();
    let ids: Vec<String> = (0..4).map(|_| env.start(&["true"])).collect();
    for id in &ids {
        env.wait_done(id);
    }
    let full = std::fs::read_to_string(env.task_dir(&ids[0]).join("meta.json")).unwrap();
    let write = |id: &str, text: String| {
        std::fs::write(env.task_dir(id).join("meta.json"), text).unwrap();
    };
    write(&ids[0], full.replace("\"schema\": 1,", ""));
    write(&ids[1], full.replace("\"schema\": 1", "\"schema\": 1.0"));
    write(
        &ids[2],
        full.replace("\"state\": \"exited\"", "\"state\": \"sleeping\""),
    );
    write(
        &ids[3],
        full.replace("\"schema\": 1", "\"schema\": 4294967297"),
    );
    for (id, reason) in [
        (&ids[0], "meta.json has no schema version"),
        (&ids[1], "meta.json has no schema version"),
        (&ids[2], "meta.json is malformed"),
        (&ids[3], "meta.json has unknown schema version 4294967297"),
    ] {
        let task = env.status(id);
        assert_eq!(task["state"], "broken", "{task}");
        let error = task["error"].as_str().unwrap();
        assert!(error.starts_with(reason), "{id}: {error}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The counts a supervisor records at the end are trusted only while the
/// logs are the same files at the same lengths: output a straggler
/// appends, and a log replaced by a same-sized file, are counted again.
#[test]
fn recorded_line_counts_give_way_to_logs_that_changed_after_the_end() {
    let env = Env::new();
    let id = env.start(&["sh", "-c", "printf 'a\\nb\\nc\\n'; echo oops >&2"]);
    let done = env.wait_done(&id);
    assert_eq!(done["stdout_lines"], 3, "{done}");
    let record: Value =
        serde_json::from_slice(&std::fs::read(env.task_dir(&id).join("meta.json")).unwrap())
            .unwrap();
    assert_eq!(record["logs_at_end"]["stdout"]["lines"], 3, "{record}");
    assert_eq!(env.status(&id)["stdout_lines"], 3);

    let log = env.task_dir(&id).join("stdout.log");
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, b"d\ne\n").unwrap();
    assert_eq!(env.status(&id)["stdout_lines"], 5);

    // Same length, another file, other lines.
    let replacement = env.task_dir(&id).join("stdout.new");
    std::fs::write(&replacement, "abcdefgh\n\n").unwrap();
    std::fs::rename(&replacement, &log).unwrap();
    assert_eq!(env.status(&id)["stdout_lines"], 2);
    assert_eq!(env.status(&id)["stderr_lines"], 1);
}

/// A bounded log that dropped output is not summed up in the record: its
/// status keeps coming from what was dropped.
#[test]
fn a_log_that_dropped_output_is_not_summed_up_at_the_end() {
    let env = Env::new();
    let id = env.start_with(
        &["--max-log-size", "64K"],
        &["sh", "-c", "seq 1 100000; sleep 1.5"],
    );
    let done = env.wait_done(&id);
    assert_eq!(done["stdout_lines"], 100000, "{done}");
    assert!(done["stdout_dropped_lines"].as_u64().unwrap() > 0, "{done}");
    let record: Value =
        serde_json::from_slice(&std::fs::read(env.task_dir(&id).join("meta.json")).unwrap())
            .unwrap();
    assert!(record.get("logs_at_end").is_none(), "{record}");
}
