//! `bgt toolbox`: the `bg_*` tools as Amp toolbox tools. Amp runs each
//! executable in the directories of `AMP_TOOLBOX` with
//! `TOOLBOX_ACTION=describe` (the tool prints `{name, description,
//! inputSchema}`) and `TOOLBOX_ACTION=execute` (JSON arguments on stdin,
//! the JSON result on stdout; on failure `{"error": {...}}` and a non-zero
//! exit). `bgt toolbox install DIR` writes one tiny script per tool that
//! execs `bgt toolbox <tool>`, served here from the same `tools` as MCP:
//! same parameters, same structured result (plus `text`, the reply an MCP
//! client shows the model). One process per call, no async runtime, so
//! this face works in a build without the `mcp` feature.

use crate::error::{ErrorReport, usage};
use crate::tools::{self, Context};
use anyhow::{Context as _, Result};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::Path;

/// Writes the tool scripts into `dir` (created if missing).
pub fn install(dir: &Path) -> Result<i32> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find bgt's own path")?;
    let exe = exe
        .to_str()
        .ok_or_else(|| usage("bgt's own path is not UTF-8"))?;
    for tool in &tools::TOOLS {
        let path = dir.join(tool.name);
        let script = format!(
            "#!/bin/sh\n# Amp toolbox tool {name}, written by `bgt toolbox install`.\nexec {exe} toolbox {name}\n",
            name = tool.name,
            exe = crate::lifecycle::command::shell_quote(exe),
        );
        std::fs::write(&path, script)
            .with_context(|| format!("cannot write {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        writeln!(std::io::stdout().lock(), "{}", path.display())?;
    }
    eprintln!(
        "bgt: Amp finds these tools with AMP_TOOLBOX={}",
        dir.display()
    );
    Ok(0)
}

/// The default `since` cursor: one per Amp thread, so two threads polling
/// the same task do not steal each other's lines.
fn cursor() -> String {
    match std::env::var("AMP_THREAD_ID") {
        Ok(thread) if !thread.is_empty() => tools::cursor_name("amp", &thread, None),
        _ => "amp".into(),
    }
}

/// Serves one call of `tool`, as `TOOLBOX_ACTION` says.
pub fn serve(tool: &str) -> Result<i32> {
    let Some(def) = tools::tool(tool) else {
        let names: Vec<&str> = tools::TOOLS.iter().map(|t| t.name).collect();
        return Err(usage(format!(
            "unknown tool '{tool}' (tools: {}, or install DIR)",
            names.join(", ")
        )));
    };
    let action = std::env::var("TOOLBOX_ACTION").unwrap_or_default();
    match action.as_str() {
        "describe" => {
            print(&json!({
                "name": def.name,
                "description": def.description,
                "inputSchema": def.input_schema(),
            }))?;
            Ok(0)
        }
        "execute" => {
            let outcome =
                arguments().and_then(|args| tools::call(tool, args, &Context { cursor: cursor() }));
            match outcome {
                Ok(reply) => {
                    let mut doc = reply.structured;
                    if let Value::Object(map) = &mut doc {
                        map.insert("text".into(), Value::String(reply.text));
                    }
                    print(&doc)?;
                    Ok(0)
                }
                Err(err) => {
                    eprintln!("bgt: {}", crate::error::one_line(&err));
                    print(&ErrorReport::of(&err))?;
                    Ok(crate::error::exit_code(&err))
                }
            }
        }
        _ => Err(usage(
            "TOOLBOX_ACTION must be describe or execute (Amp sets it; see bgt toolbox install)",
        )),
    }
}

/// The call's arguments: a JSON object on stdin (empty input: none).
fn arguments() -> Result<Option<serde_json::Map<String, Value>>> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the arguments on stdin")?;
    if input.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(&input) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(Value::Null) => Ok(None),
        Ok(_) => Err(usage("the arguments must be a JSON object")),
        Err(e) => Err(usage(format!("the arguments are not JSON: {e}"))),
    }
}

fn print(value: &impl serde::Serialize) -> Result<()> {
    let mut doc = serde_json::to_vec(value)?;
    doc.push(b'\n');
    std::io::stdout().lock().write_all(&doc)?;
    Ok(())
}
