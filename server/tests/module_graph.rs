//! The module graph of qron's crates, read from their sources: no module may
//! import from a module that imports it back (no import circle, in any crate),
//! and in `server/` every import goes down the layers of `server/src/lib.rs`
//! (STYLE 15): ground, context, discovery, scheduler/dispatch, api, leadership,
//! node.
//!
//! The checker is tested on made-up sources first (it must find a planted
//! circle and a planted upward import), then run on the real crates.
//! `QRON_MODULE_GRAPH_ROOT=<dir>` points it at another checkout (used to list
//! the circles of an older tree); it then reports instead of failing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path ("" for the crate root, "dispatch::plan") → its source.
type Sources = BTreeMap<String, String>;

fn module_of(rel: &Path) -> String {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap_or_default();
    match file.as_str() {
        "lib.rs" | "main.rs" if parts.is_empty() => String::new(),
        "mod.rs" => parts.join("::"),
        f => {
            parts.push(f.trim_end_matches(".rs").to_owned());
            parts.join("::")
        }
    }
}

fn read_crate(src: &Path) -> Sources {
    fn walk(dir: &Path, root: &Path, out: &mut Sources) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                // Binaries (src/bin) are crates of their own.
                if p.file_name().is_some_and(|n| n != "bin") {
                    walk(&p, root, out);
                }
            } else if p.extension().is_some_and(|e| e == "rs") {
                let rel = p.strip_prefix(root).unwrap_or(&p);
                // main.rs beside lib.rs is the binary, a crate of its own.
                if rel == Path::new("main.rs") && root.join("lib.rs").exists() {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                out.insert(module_of(rel), text);
            }
        }
    }
    let mut out = Sources::new();
    walk(src, src, &mut out);
    out
}

/// The source without comments and without the `#[cfg(test)]` part (tests may
/// reach anywhere; by convention they sit at the end of a file).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// The paths named after `prefix::` at byte `at`: one path, or the first
/// segments of each item of a `{...}` group.
fn paths_after(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        let mut depth = 0;
        let mut items = vec![String::new()];
        for c in rest.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(String::new());
                    continue;
                }
                _ => {}
            }
            if let Some(last) = items.last_mut() {
                last.push(c);
            }
        }
        return items.iter().flat_map(|i| paths_after(i.trim())).collect();
    }
    let mut segs = Vec::new();
    let mut rest = s;
    while let Some(id) = ident_at(rest) {
        segs.push(id.to_owned());
        rest = &rest[id.len()..];
        match rest.strip_prefix("::") {
            Some(r) if r.starts_with('{') => {
                return paths_after(r)
                    .into_iter()
                    .map(|p| segs.iter().cloned().chain(p).collect())
                    .collect();
            }
            Some(r) => rest = r,
            None => break,
        }
    }
    vec![segs]
}

fn join(base: &str, segs: &[String]) -> String {
    let mut parts: Vec<&str> = if base.is_empty() {
        vec![]
    } else {
        base.split("::").collect()
    };
    parts.extend(segs.iter().map(String::as_str));
    parts.join("::")
}

/// The longest module that `path` (absolute, from the crate root) names.
fn resolve(modules: &Sources, path: &str) -> Option<String> {
    let mut p = path.to_owned();
    loop {
        if modules.contains_key(&p) {
            return Some(p);
        }
        match p.rfind("::") {
            Some(i) => p.truncate(i),
            None => return modules.contains_key("").then(String::new),
        }
    }
}

/// Module → the other modules it imports from.
fn edges(modules: &Sources) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in modules {
        let code = code(text);
        let parent = match m.rfind("::") {
            Some(i) => m[..i].to_owned(),
            None => String::new(),
        };
        let mut targets = BTreeSet::new();
        let mut add = |abs: String| {
            if let Some(t) = resolve(modules, &abs) {
                // A module naming itself or its own children (declared with `mod`) is no import upward.
                if t != *m && !(t.starts_with(m.as_str()) && (m.is_empty() || t[m.len()..].starts_with("::"))) {
                    targets.insert(t);
                }
            }
        };
        for (i, _) in code.match_indices("crate::") {
            if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            for segs in paths_after(&code[i + "crate::".len()..]) {
                add(join("", &segs));
            }
        }
        for (i, _) in code.match_indices("super::") {
            if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            for segs in paths_after(&code[i + "super::".len()..]) {
                add(join(&parent, &segs));
            }
        }
        // A module naming one of its own children by a relative path (`instances::run`
        // in `api/mod.rs`) uses it: that is an edge too, so that a parent and a child
        // that use each other form a circle.
        let prefix = if m.is_empty() { String::new() } else { format!("{m}::") };
        for child in modules.keys().filter_map(|k| k.strip_prefix(prefix.as_str())) {
            if child.is_empty() || child.contains("::") {
                continue;
            }
            let pat = format!("{child}::");
            for (i, _) in code.match_indices(&pat) {
                let before = code[..i].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                for segs in paths_after(&code[i..]) {
                    if let Some(t) = resolve(modules, &join(m, &segs)) {
                        targets.insert(t);
                    }
                }
            }
        }
        out.insert(m.clone(), targets);
    }
    out
}

/// Every import circle (strongly connected set of two or more modules), each sorted.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability by DFS from each node: small graphs, clarity over speed.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_owned()];
        while let Some(n) = stack.pop() {
            for t in graph.get(&n).into_iter().flatten() {
                if seen.insert(t.clone()) {
                    stack.push(t.clone());
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<String>> = graph.keys().map(|k| (k, reach(k))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for a in graph.keys() {
        if done.contains(a) {
            continue;
        }
        let scc: Vec<String> = graph
            .keys()
            .filter(|b| *b == a || (reach[a].contains(*b) && reach[*b].contains(a)))
            .cloned()
            .collect();
        if scc.len() > 1 || reach[a].contains(a) {
            out.push(scc.clone());
        }
        done.extend(scc);
    }
    out
}

/// `server/`'s layers, lowest first (see `server/src/lib.rs`).
const SERVER_LAYERS: &[&[&str]] = &[
    &["clock", "config", "peers", "raft", "role"],
    &["context"],
    &["discovery"],
    &["scheduler", "dispatch", "retention"],
    &["api"],
    &["leadership"],
    &["node"],
];

fn layer(m: &str) -> Option<usize> {
    let top = m.split("::").next().unwrap_or_default();
    SERVER_LAYERS.iter().position(|l| l.contains(&top))
}

/// Imports that go up `server/`'s layers, as "from → to" lines; modules in no layer are errors too.
fn upward(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut bad = Vec::new();
    for (from, tos) in graph {
        if from.is_empty() {
            continue;
        }
        let Some(lf) = layer(from) else {
            bad.push(format!("{from} is in no layer of SERVER_LAYERS"));
            continue;
        };
        for to in tos {
            match layer(to) {
                Some(lt) if lt > lf => bad.push(format!("{from} (layer {lf}) → {to} (layer {lt})")),
                Some(_) => {}
                None if to.is_empty() => {}
                None => bad.push(format!("{from} → {to}, which is in no layer")),
            }
        }
    }
    bad
}

fn workspace_root() -> PathBuf {
    match std::env::var_os("QRON_MODULE_GRAPH_ROOT") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".."),
    }
}

fn synthetic(files: &[(&str, &str)]) -> Sources {
    files.iter().map(|(m, s)| (m.to_string(), s.to_string())).collect()
}

#[test]
fn the_checker_finds_a_planted_circle_through_super_and_groups() {
    let s = synthetic(&[
        ("", "pub mod a; pub mod b; pub mod c;"),
        ("a", "use crate::{b::Thing, c};"),
        ("b", "use super::c::f; // use crate::a is only a comment"),
        (
            "c",
            "fn g() { crate::a::h() }\n#[cfg(test)]\nmod tests { use crate::b; }",
        ),
    ]);
    let g = edges(&s);
    assert_eq!(g["a"], BTreeSet::from(["b".to_string(), "c".to_string()]));
    assert_eq!(g["b"], BTreeSet::from(["c".to_string()]), "comments are not imports");
    assert_eq!(g["c"], BTreeSet::from(["a".to_string()]), "tests are not imports");
    assert_eq!(
        circles(&g),
        vec![vec!["a".to_string(), "b".to_string(), "c".to_string()]]
    );
}

#[test]
fn the_checker_resolves_super_in_mod_rs_and_nested_files() {
    let s = synthetic(&[
        ("", "pub mod api; pub mod dispatch; pub mod clock;"),
        ("dispatch", "pub mod plan; pub struct Dispatch;"),
        ("dispatch::plan", "use super::Dispatch; use crate::clock::now;"),
        ("api", "use crate::dispatch::plan::plan;"),
        ("clock", ""),
    ]);
    let g = edges(&s);
    assert_eq!(
        g["dispatch::plan"],
        BTreeSet::from(["dispatch".to_string(), "clock".to_string()])
    );
    assert_eq!(g["api"], BTreeSet::from(["dispatch::plan".to_string()]));
    assert!(circles(&g).is_empty());
}

#[test]
fn the_checker_sees_a_parent_and_a_child_that_use_each_other() {
    let s = synthetic(&[
        ("", "pub mod api;"),
        ("api", "mod jobs; fn router() { get(jobs::list) } pub struct ApiState;"),
        ("api::jobs", "use super::ApiState;"),
    ]);
    let g = edges(&s);
    assert_eq!(g["api"], BTreeSet::from(["api::jobs".to_string()]));
    assert_eq!(circles(&g), vec![vec!["api".to_string(), "api::jobs".to_string()]]);
}

#[test]
fn the_checker_finds_an_upward_import() {
    let s = synthetic(&[
        ("", ""),
        ("scheduler", "use crate::api::now_ms;"),
        ("api", "use crate::scheduler::run;"),
        ("clock", "use crate::leadership::Role;"),
        ("leadership", ""),
        ("mystery", ""),
    ]);
    let bad = upward(&edges(&s));
    assert!(
        bad.iter().any(|l| l.starts_with("scheduler (layer 3) → api")),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|l| l.starts_with("clock (layer 0) → leadership")),
        "{bad:?}"
    );
    assert!(bad.iter().any(|l| l.contains("mystery is in no layer")), "{bad:?}");
    assert!(
        !bad.iter().any(|l| l.starts_with("api ")),
        "api → scheduler goes down: {bad:?}"
    );
}

#[test]
fn no_crate_has_an_import_circle_and_the_server_imports_only_downward() {
    let root = workspace_root();
    let report_only = std::env::var_os("QRON_MODULE_GRAPH_ROOT").is_some();
    let mut problems = Vec::new();
    for krate in ["server", "raft-store", "worker-agent", "proto", "cli", "chaos-tests"] {
        let src = root.join(krate).join("src");
        if !src.is_dir() {
            continue;
        }
        let g = edges(&read_crate(&src));
        for c in circles(&g) {
            problems.push(format!(
                "{krate}: import circle of {} modules: {}",
                c.len(),
                c.join(", ")
            ));
        }
        if krate == "server" {
            for u in upward(&g) {
                problems.push(format!("server: upward import {u}"));
            }
            for (m, tos) in &g {
                if tos.iter().any(|t| t == "api" || t.starts_with("api::")) && !(m == "node" || m.starts_with("api")) {
                    problems.push(format!("server: {m} imports crate::api (only api/ and node.rs may)"));
                }
            }
        }
    }
    for p in &problems {
        println!("{p}");
    }
    if !report_only {
        assert!(
            problems.is_empty(),
            "{} layering problems:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}
