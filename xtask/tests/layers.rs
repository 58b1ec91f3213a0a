//! The rooms stay as docs/design.md draws them.
//!
//! - Crates: every dependency between the workspace's crates (read from `cargo metadata`) is an
//!   arrow the design's crate table allows in its "may use" column, and that table's arrows all
//!   point downward (no cycle). Only what a crate ships counts: its normal and build
//!   dependencies. Integration tests (dev-dependencies) stand above every room and may use any
//!   crate, as the design says.
//! - Files: within each crate, no two source files import each other, directly or around a
//!   loop (`use crate::…`, `super::…` and inline `crate::` paths, test modules excepted).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// One row of the design's crate table.
struct Room {
    folder: String,
    krate: String,
    may_use: BTreeSet<String>,
}

/// The crate table under "## Crates and folders" in docs/design.md.
fn design_rooms() -> Vec<Room> {
    let doc = std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md");
    let start = doc
        .find("## Crates and folders")
        .expect("docs/design.md has a \"## Crates and folders\" section");
    let mut rooms = Vec::new();
    for line in doc[start..].lines().skip(1) {
        if line.starts_with("## ") {
            break;
        }
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| folder/ | crate | what | may use |" splits into 6 cells with empty ends.
        if cells.len() < 6 || !cells[1].ends_with('/') {
            continue;
        }
        let may_use = cells[cells.len() - 2]
            .split([',', ' '])
            .map(|t| t.trim_matches(|c: char| !c.is_alphanumeric() && c != '-'))
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        rooms.push(Room {
            folder: cells[1].trim_end_matches('/').to_string(),
            krate: cells[2].to_string(),
            may_use,
        });
    }
    assert!(
        rooms.len() >= 5,
        "docs/design.md's crate table was not found or has changed shape"
    );
    rooms
}

/// The workspace's crates and their dependencies on each other: (crate, dependency, kind).
fn workspace_arrows() -> (BTreeSet<String>, Vec<(String, String, String)>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    let mut arrows = Vec::new();
    for p in packages {
        let from = p["name"].as_str().unwrap_or_default().to_string();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let to = d["name"].as_str().unwrap_or_default();
            if names.contains(to) {
                let kind = d["kind"].as_str().unwrap_or("normal").to_string();
                arrows.push((from.clone(), to.to_string(), kind));
            }
        }
    }
    (names, arrows)
}

#[test]
fn crate_dependencies_point_downward_as_the_design_draws_them() {
    let rooms = design_rooms();
    let (names, arrows) = workspace_arrows();
    let by_folder: BTreeMap<&str, &str> = rooms
        .iter()
        .map(|r| (r.folder.as_str(), r.krate.as_str()))
        .collect();
    // Each crate's allowed dependencies, as crate names.
    let mut allowed: BTreeMap<&str, (bool, BTreeSet<&str>)> = BTreeMap::new();
    for r in &rooms {
        let all = r.may_use.contains("all");
        let set = r
            .may_use
            .iter()
            .filter_map(|t| {
                by_folder.get(t.as_str()).copied().or_else(|| {
                    rooms
                        .iter()
                        .find(|o| o.krate == *t)
                        .map(|o| o.krate.as_str())
                })
            })
            .collect();
        allowed.insert(r.krate.as_str(), (all, set));
    }
    let mut problems = Vec::new();
    for n in &names {
        if !allowed.contains_key(n.as_str()) {
            problems.push(format!(
                "crate {n} has no row in docs/design.md's crate table"
            ));
        }
    }
    for (from, to, kind) in &arrows {
        let Some((all, set)) = allowed.get(from.as_str()) else {
            continue;
        };
        if !*all && !set.contains(to.as_str()) && kind != "dev" {
            problems.push(format!(
                "{from} uses {to} ({kind} dependency) but docs/design.md does not let it: \
                 move the code down, or change the design and its table"
            ));
        }
    }
    // The table's own arrows form no cycle (rows with "all" sit on top and are left out).
    let graph: BTreeMap<&str, Vec<&str>> = allowed
        .iter()
        .filter(|(_, (all, _))| !*all)
        .map(|(k, (_, set))| (*k, set.iter().copied().collect()))
        .collect();
    for cycle in cycles(&graph) {
        problems.push(format!(
            "docs/design.md's crate table has a cycle: {}",
            cycle.join(" -> ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn no_crate_has_an_import_cycle_among_its_files() {
    let rooms = design_rooms();
    let mut problems = Vec::new();
    for r in &rooms {
        let src = root().join(&r.folder).join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = file_graph(&src);
        let graph_ref: BTreeMap<&str, Vec<&str>> = graph
            .iter()
            .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
            .collect();
        for cycle in cycles(&graph_ref) {
            problems.push(format!("{}: {}", r.krate, cycle.join(" -> ")));
        }
    }
    assert!(
        problems.is_empty(),
        "files that import each other (move what both need into a module below them):\n{}",
        problems.join("\n")
    );
}

/// The module path of a source file under `src` (`lib.rs` → "", `a/mod.rs` and `a.rs` → "a",
/// `a/b.rs` → "a::b"); `None` for binaries.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.first().map(String::as_str) {
        Some("main" | "bin") | None => return None,
        _ => {}
    }
    let mut parts = parts;
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    Some(parts.join("::"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code of a file without comments, string contents and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    // Test modules import their parent with `super::*`; that is no cycle between files.
    if let Some(at) = out.find("#[cfg(test)]\nmod ") {
        out.truncate(at);
    }
    out
}

/// Expands one `use` tree (after `crate::` or `super::`) into its full paths.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open]
            .split("::")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut base = prefix.to_vec();
        base.extend(head);
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
    } else {
        let mut path = prefix.to_vec();
        path.extend(
            tree.split(" as ")
                .next()
                .unwrap_or_default()
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        out.push(path);
    }
}

/// Every module path a file's code names, resolved against the file's own module.
fn named_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let here: Vec<String> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").map(str::to_string).collect()
    };
    let mut paths = Vec::new();
    // `use` statements, groups expanded.
    for stmt in code.split(';') {
        let s = stmt.trim_start();
        let s = s
            .strip_prefix("pub(crate) ")
            .or_else(|| s.strip_prefix("pub "))
            .unwrap_or(s);
        let Some(tree) = s.strip_prefix("use ") else {
            continue;
        };
        let tree = tree.trim();
        if let Some(rest) = tree.strip_prefix("crate::") {
            expand(&[], rest, &mut paths);
        } else if tree.starts_with("super::") {
            let mut base = here.clone();
            let mut rest = tree;
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            expand(&base, rest, &mut paths);
        }
    }
    // Inline paths such as `crate::a::f(…)` or `super::b::T`.
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let rest: String = code[at + 7..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let path: Vec<String> = rest
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !path.is_empty() {
            paths.push(path);
        }
    }
    paths
}

/// Within one crate: which file (module) imports which.
fn file_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .filter_map(|f| module_of(src, f).map(|m| (m, f.clone())))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_of(&std::fs::read_to_string(file).unwrap_or_default());
        let edges = graph.entry(module.clone()).or_default();
        for path in named_paths(module, &code) {
            // The longest prefix of the path that is a file of its own.
            let target = (0..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains_key(m));
            if let Some(t) = target
                && t != *module
                // A file naming its own ancestor module (`lib.rs`, `mod.rs`) reaches the
                // ancestor's re-exports, and ancestors declare their children: that pair is
                // the module tree, not an import between rooms.
                && !module.starts_with(&format!("{t}::"))
                && !t.is_empty()
            {
                edges.insert(t);
            }
        }
    }
    graph
}

/// Each strongly connected component of more than one node, as a loop of names.
fn cycles(graph: &BTreeMap<&str, Vec<&str>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, iteration bounded by the graph's size.
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, g: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in g.get(v).map(Vec::as_slice).unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(w, g, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.reverse();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, graph, &mut s);
        }
    }
    s.out
}

#[test]
fn the_checks_see_a_cycle_and_an_upward_arrow() {
    let g: BTreeMap<&str, Vec<&str>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let mut paths = named_paths(
        "x::y",
        "use crate::{a::B, c::{d, e::F as G}}; use super::z::Q; fn f() { crate::h::i(); }",
    );
    paths.sort();
    let want: Vec<Vec<String>> = [
        &["a", "B"][..],
        &["c", "d"],
        &["c", "e", "F"],
        &["h", "i"],
        &["x", "z", "Q"],
    ]
    .iter()
    .map(|p| p.iter().map(|s| s.to_string()).collect())
    .collect();
    assert_eq!(paths, want);
}
