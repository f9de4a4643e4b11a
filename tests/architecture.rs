//! The layout is the architecture; these tests keep it so. They read the
//! sources in `src/`:
//!
//! * every module imports only from its own layer or lower ones, and no
//!   modules import each other round in a circle;
//! * no function outside tests is longer than [`MAX_FN_LINES`] lines.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest function allowed, in lines (signature to closing brace).
const MAX_FN_LINES: usize = 80;

/// The top-level modules, lowest layer first. A module may use its own
/// layer and those before it.
const LAYERS: &[&[&str]] = &[
    &["error", "platform", "vec_map", "json", "runtime_error"],
    &["domain", "store"],
    &["engine"],
    &["config"],
    &["host"],
    &["wire"],
    &["edge"],
    &[
        "testing",
        "worker_entry",
        "room_object",
        "topic_object",
        "peer_object",
        "socket_object",
        "object_exports",
        "lib",
    ],
];

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out.sort();
    out
}

/// `src/wire/p2pcf/adapter.rs` -> `wire::p2pcf::adapter`; `mod.rs` names its folder.
fn module_of(path: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rel = path.strip_prefix(&src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

fn layer(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` is in no layer: add it to LAYERS"))
}

/// The code lines of a file, without comments and without `#[cfg(test)]` modules.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut skip_until_indent: Option<usize> = None;
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, line)) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        if let Some(i) = skip_until_indent {
            if line.trim() == "}" && indent == i {
                skip_until_indent = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed == "#[cfg(test)]" {
            if let Some((_, next)) = lines.peek() {
                if next.trim_start().starts_with("mod ") && next.trim_end().ends_with('{') {
                    skip_until_indent = Some(indent);
                    lines.next();
                    continue;
                }
            }
        }
        out.push((n + 1, line));
    }
    out
}

/// The modules `module` names through `crate::` or `super::` paths.
fn imports(module: &str, text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, line) in code_lines(text) {
        for (prefix, base) in [("crate::", String::new()), ("super::", parent(module))] {
            let mut rest = line;
            while let Some(at) = rest.find(prefix) {
                let tail = &rest[at + prefix.len()..];
                let path: String = tail
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut target = base.clone();
                let mut found = None;
                for part in path.split("::").filter(|p| !p.is_empty()) {
                    target = if target.is_empty() {
                        part.to_owned()
                    } else {
                        format!("{target}::{part}")
                    };
                    if known.contains(&target) {
                        found = Some(target.clone());
                    } else {
                        break;
                    }
                }
                if let Some(t) = found.or_else(|| (!base.is_empty()).then(|| base.clone())) {
                    if t != module {
                        out.insert(t);
                    }
                }
                rest = &tail[path.len().min(tail.len())..];
            }
        }
    }
    out
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_owned())
}

#[test]
fn no_module_imports_from_a_higher_layer_or_in_a_circle() {
    let files: Vec<(String, String)> = sources()
        .iter()
        .map(|p| (module_of(p), fs::read_to_string(p).unwrap()))
        .collect();
    let known: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut graph = BTreeMap::new();
    let mut upward = Vec::new();
    for (module, text) in &files {
        let targets = imports(module, text, &known);
        for t in &targets {
            if layer(t) > layer(module) {
                upward.push(format!("{module} -> {t}"));
            }
        }
        graph.insert(module.clone(), targets);
    }
    assert!(
        upward.is_empty(),
        "imports from a higher layer: {upward:#?}"
    );

    // A circle is a path back to where it started (depth-first search).
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut circle = path[i..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for t in graph.get(m).into_iter().flatten() {
            // A module's own submodules are its parts, not its peers.
            if t.starts_with(&format!("{m}::")) {
                continue;
            }
            if let Some(c) = visit(t, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        let circle = visit(m, &graph, &mut Vec::new(), &mut done);
        assert!(
            circle.is_none(),
            "modules in a circle: {:?}",
            circle.unwrap()
        );
    }
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let mut long = Vec::new();
    for path in sources() {
        let text = fs::read_to_string(&path).unwrap();
        let lines = code_lines(&text);
        for (i, (n, line)) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p))
                || trimmed.starts_with("pub(crate) async fn ");
            if !is_fn {
                continue;
            }
            // A declaration without a body (in an `extern` block or a
            // trait) ends with `;` before any `{`.
            let body_or_decl = lines[i..].iter().find_map(|(_, l)| {
                let t = l.trim_end();
                if t.contains('{') {
                    Some(true)
                } else if t.ends_with(';') {
                    Some(false)
                } else {
                    None
                }
            });
            if body_or_decl != Some(true) {
                continue;
            }
            let indent = line.len() - trimmed.len();
            let end = lines[i..].iter().find(|(_, l)| {
                let t = l.trim_start();
                l.len() - t.len() == indent && (t == "}" || t.starts_with("};"))
            });
            if let Some((end, _)) = end {
                if end - n + 1 > MAX_FN_LINES {
                    long.push(format!(
                        "{}:{n}: {} lines: {}",
                        module_of(&path),
                        end - n + 1,
                        trimmed.trim_end_matches('{').trim()
                    ));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines: {long:#?}"
    );
}
