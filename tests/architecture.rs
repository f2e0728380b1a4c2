//! The crate's modules form no cycle (ARCHITECTURE.md, "Layers"): every
//! `crate::` path in a module's code (its tests and comments aside) names
//! a module it depends on, and those dependencies can be laid out in
//! layers, each using only layers below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a source file belongs to (`main.rs` and `cli/` are
/// the binary, `cli`).
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs").to_string();
    if name == "main" { "cli".to_string() } else { name }
}

/// The modules each top-level module's code names through `crate::` or
/// `convjit::` paths.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let module = module_of(path.strip_prefix(&root).unwrap());
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let used = deps.entry(module.clone()).or_default();
            for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
                for prefix in ["crate::", "convjit::"] {
                    for (at, _) in line.match_indices(prefix) {
                        let rest = &line[at + prefix.len()..];
                        let name: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                            .collect();
                        if !name.is_empty() && name != module {
                            used.insert(name);
                        }
                    }
                }
            }
        }
    }
    deps
}

#[test]
fn the_modules_form_no_cycle() {
    let deps = dependencies();
    assert!(deps.len() > 20, "found the crate's modules: {:?}", deps.keys());
    // Peel off the modules that use nothing left, layer by layer; what
    // cannot be peeled is on a cycle.
    let mut left = deps.clone();
    let mut layers = Vec::new();
    while !left.is_empty() {
        let layer: Vec<String> = left
            .iter()
            .filter(|(_, used)| used.iter().all(|u| !left.contains_key(u)))
            .map(|(m, _)| m.clone())
            .collect();
        assert!(!layer.is_empty(), "modules on a dependency cycle: {left:#?}");
        for m in &layer {
            left.remove(m);
        }
        layers.push(layer);
    }
    // The binary is on top, the spec below everything that computes.
    let layer_of = |m: &str| layers.iter().position(|l| l.iter().any(|x| x == m)).unwrap();
    assert_eq!(layer_of("cli"), layers.len() - 1, "{layers:?}");
    for m in ["schedule", "codegen", "kernel", "jit", "tune", "bench", "net"] {
        assert!(layer_of("spec") < layer_of(m), "{m} is above spec: {layers:?}");
    }
}
