//! The state directory and labels under attack: a directory that is not
//! bgt's, symlinks planted where bgt looks, modes bgt did not set, and
//! racing `run --label` callers.

use crate::util::{Env, poll_until};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_directory_that_is_not_bgts_is_refused_and_left_untouched() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README.md"), "mine").unwrap();
    std::fs::create_dir(project.path().join("src")).unwrap();
    std::fs::write(project.path().join("src/main.rs"), "fn main() {}").unwrap();
    std::fs::set_permissions(project.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = names(project.path());
    for args in [
        &["status"][..],
        &["cleanup"],
        &["cleanup", "--all"],
        &["run", "--", "true"],
    ] {
        let out = Env::at(project.path()).run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.trim(),
            format!(
                "bgt: {} is not a bgt state directory (no .bgt marker); point BGT_HOME at an empty or new directory",
                project.path().display()
            )
        );
    }
    assert_eq!(names(project.path()), before, "nothing created or removed");
    assert_eq!(mode(project.path()), 0o755, "mode unchanged");
    assert_eq!(
        std::fs::read_to_string(project.path().join("src/main.rs")).unwrap(),
        "fn main() {}"
    );
}

#[test]
fn an_empty_or_new_directory_is_adopted_and_marked() {
    let parent = tempfile::tempdir().unwrap();
    let fresh = parent.path().join("a/b/state");
    assert!(Env::at(&fresh).run(&["status"]).status.success());
    assert_eq!(mode(&fresh), 0o700, "created by bgt: private");
    assert!(fresh.join(".bgt").exists());
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o750)).unwrap();
    assert!(Env::at(&empty).run(&["status"]).status.success());
    assert!(empty.join(".bgt").exists());
    assert_eq!(mode(&empty), 0o750, "not created by bgt: mode kept");
}

#[test]
fn a_state_dir_of_an_earlier_bgt_is_adopted_with_its_tasks() {
    let env = Env::new();
    let id = env.start(&["echo", "from before"]);
    env.wait_done(&id);
    // An earlier bgt wrote task directories only, no marker.
    std::fs::remove_file(env.home().join(".bgt")).unwrap();
    for entry in std::fs::read_dir(env.home()).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().starts_with('.') || name == ".bgt");
    }
    assert_eq!(env.ok(&["output", &id]), "from before\n");
    assert!(env.home().join(".bgt").exists(), "marked on adoption");
}

#[test]
fn a_mode_is_never_widened() {
    let env = Env::new();
    let id = env.start(&["true"]);
    env.wait_done(&id);
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o500)).unwrap();
    let _ = env.run(&["status"]);
    let _ = env.run(&["output", &id]);
    let mode_after = mode(env.home());
    std::fs::set_permissions(env.home(), std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(mode_after, 0o500);
}

#[test]
fn a_symlinked_state_dir_is_refused() {
    let env = Env::new();
    let id = env.start(&["true"]);
    env.wait_done(&id);
    let link = env.work().join("link");
    std::os::unix::fs::symlink(env.home(), &link).unwrap();
    for args in [&["status"][..], &["cleanup"]] {
        let out = Env::at(&link).run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("is a symlink"), "{err}");
    }
    assert!(
        env.task_dir(&id).exists(),
        "cleanup through a symlink removed nothing"
    );
}

#[test]
fn a_task_directory_swapped_for_a_symlink_is_never_followed() {
    let env = Env::new();
    let id = env.start(&["echo", "x"]);
    env.wait_done(&id);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "keep me").unwrap();
    std::fs::write(outside.path().join("meta.json"), "{}").unwrap();
    let dir = env.task_dir(&id);
    std::fs::remove_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(outside.path(), &dir).unwrap();
    let table = env.ok(&["status"]);
    assert!(table.contains("broken"), "{table}");
    env.ok(&["cleanup"]);
    assert!(
        !dir.exists() && std::fs::symlink_metadata(&dir).is_err(),
        "the link is gone"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("precious")).unwrap(),
        "keep me"
    );
    assert!(outside.path().join("meta.json").exists());
}

#[test]
fn a_symlink_inside_a_finished_task_is_unlinked_not_followed_by_cleanup() {
    let env = Env::new();
    let id = env.start(&["true"]);
    env.wait_done(&id);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious"), "keep me").unwrap();
    let dir = env.task_dir(&id);
    std::os::unix::fs::symlink(outside.path(), dir.join("cursors")).unwrap();
    env.ok(&["cleanup"]);
    assert!(!dir.exists());
    assert!(outside.path().join("precious").exists());
}

#[test]
fn parallel_replace_leaves_exactly_one_task_with_the_label() {
    let env = Env::new();
    let runs: Vec<_> = (0..8)
        .map(|_| {
            env.cmd()
                .args(["run", "--replace", "--label", "svc", "--", "sleep", "30"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut run in runs {
        assert!(run.wait().unwrap().success());
    }
    let doc: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    let running: Vec<_> = doc["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["label"] == "svc" && t["state"] == "running")
        .collect();
    assert_eq!(running.len(), 1, "{doc:#}");
}

#[test]
fn a_label_names_at_most_one_active_task() {
    let env = Env::new();
    let web = env.start_with(&["--label", "web"], &["sleep", "30"]);
    let err = env.fails(&["run", "--label", "web", "--", "sleep", "30"], 1);
    assert!(
        err.contains(&web) && err.contains("--replace") && err.lines().count() == 1,
        "{err}"
    );
    // A newer finished task that claims the label (as an older bgt could
    // leave behind) does not hide the running one.
    let other = env.start(&["true"]);
    env.wait_done(&other);
    let meta_path = env.task_dir(&other).join("meta.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    std::fs::write(
        &meta_path,
        meta.replace("\"label\": null", "\"label\": \"web\""),
    )
    .unwrap();
    assert_eq!(env.status("web")["id"], web.as_str());
    env.ok(&["stop", "web"]);
    assert_eq!(env.state(&web), "stopped");
    // Once nothing holds it, a new run claims it and the label names that one.
    let next = env.start_with(&["--label", "web"], &["true"]);
    assert_eq!(env.status("web")["id"], next.as_str());
}

#[test]
fn restart_of_a_running_task_replaces_it() {
    let env = Env::new();
    let first = env.start_with(&["--label", "api"], &["sleep", "30"]);
    let second = env.ok(&["restart", "api"]).trim().to_string();
    assert_ne!(first, second);
    assert_eq!(env.state(&first), "stopped");
    poll_until(Duration::from_secs(5), || env.state(&second) == "running");
    assert_eq!(env.status("api")["id"], second.as_str());
}

#[test]
fn a_label_still_resolves_when_its_indexed_task_is_gone_or_was_never_indexed() {
    let env = Env::new();
    let older = env.start_with(&["--label", "x"], &["true"]);
    env.wait_done(&older);
    let newer = env.start_with(&["--label", "x"], &["true"]);
    env.wait_done(&newer);
    assert_eq!(env.status("x")["id"], newer.as_str());
    std::fs::remove_dir_all(env.task_dir(&newer)).unwrap();
    assert_eq!(
        env.status("x")["id"],
        older.as_str(),
        "stale index: full scan"
    );
    // An earlier bgt kept no index and no marker: adoption builds the index.
    for entry in std::fs::read_dir(env.home()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with('.') {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert_eq!(env.status("x")["id"], older.as_str());
    assert_eq!(
        std::fs::read_to_string(env.home().join(".label-x")).unwrap(),
        older
    );
    assert_eq!(env.status(&older[2..6])["id"], older.as_str(), "prefix");
}
