//! The module map in `src/lib.rs` is the architecture: its groups are
//! layers, bottom-up, and a module may import only from its own layer and
//! those listed before it. This test reads that map and every source file,
//! so the map cannot drift from the code and no import can reach upward.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level modules of the crate, from their files and folders.
fn modules() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let module = match name.strip_suffix(".rs") {
                Some(module) => module.to_string(),
                None if e.path().is_dir() => name,
                None => return None,
            };
            (module != "lib" && module != "main").then_some(module)
        })
        .collect();
    names.sort();
    names
}

/// Module -> layer number, read from the `//! - ` lines of lib.rs's map: a
/// line ending in `:` starts the next layer; a bullet names its modules in
/// backticks (`logs::read` counts as `logs`), the first mention wins.
fn layers() -> BTreeMap<String, usize> {
    let modules = modules();
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut layer_of = BTreeMap::new();
    let mut layer = 0;
    for line in lib.lines().map_while(|l| l.strip_prefix("//!")) {
        let line = line.trim();
        if line.ends_with(':') && !line.starts_with('-') {
            layer += 1;
            continue;
        }
        if !line.starts_with("- ") {
            continue;
        }
        for quoted in line.split('`').skip(1).step_by(2) {
            let top = quoted.split("::").next().unwrap().trim_end_matches('/');
            if modules.iter().any(|m| m == top) {
                layer_of.entry(top.to_string()).or_insert(layer);
            }
        }
    }
    layer_of
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules a file names as `crate::x` or in a group
/// `crate::{x, y::z}` (over several lines too), outside comment lines.
fn imports(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found: Vec<String> = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = code[at + "crate::".len()..].trim_start();
        let names = match rest.strip_prefix('{') {
            // Top-level items of the group: split at commas outside braces.
            Some(group) => {
                let mut depth = 0;
                let mut items = vec![String::new()];
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => items.push(String::new()),
                        _ => {}
                    }
                    if depth == 0 && c != ',' {
                        items.last_mut().unwrap().push(c);
                    }
                }
                items.iter().map(|item| ident(item)).collect()
            }
            None => vec![ident(rest)],
        };
        for name in names {
            if !name.is_empty() && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn the_module_map_names_every_module() {
    let layers = layers();
    let missing: Vec<String> = modules()
        .into_iter()
        .filter(|m| !layers.contains_key(m))
        .collect();
    assert!(
        missing.is_empty(),
        "modules missing from lib.rs's map: {missing:?}"
    );
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let layers = layers();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(src()).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let own = first.to_str().unwrap().trim_end_matches(".rs");
        let Some(&own_layer) = layers.get(own) else {
            continue; // lib.rs and main.rs sit above everything
        };
        for name in imports(file) {
            let theirs = layers.get(&name).copied().unwrap_or(0);
            if theirs > own_layer {
                upward.push(format!("{} imports crate::{name}", relative.display()));
            }
        }
    }
    assert!(upward.is_empty(), "imports reaching up: {upward:#?}");
}

#[test]
fn the_agent_faces_import_neither_the_command_line_nor_its_commands() {
    for face in ["mcp.rs", "toolbox.rs", "tools.rs"] {
        let names = imports(&src().join(face));
        for cli in ["cli", "commands"] {
            assert!(
                !names.iter().any(|n| n == cli),
                "{face} imports crate::{cli}"
            );
        }
    }
}

#[test]
fn the_map_puts_the_layers_in_the_order_the_readme_tells() {
    let layers = layers();
    let order = [
        "error",
        "sys",
        "task",
        "logs",
        "lifecycle",
        "info",
        "commands",
    ];
    let numbers: Vec<usize> = order.iter().map(|m| layers[*m]).collect();
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "layers out of order: {order:?} -> {numbers:?}"
    );
}

#[test]
fn grouped_and_multi_line_imports_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.rs");
    std::fs::write(
        &file,
        "use crate::{\n    info::TaskInfo,\n    report::{A, B},\n};\n// crate::cli\nfn f() { crate::task::store::x(); }\n",
    )
    .unwrap();
    assert_eq!(imports(&file), ["info", "report", "task"]);
}
