//! Holds the crate to the layers stated in `lib.rs`: no module uses one of a layer below it (or
//! one listed after it in its own layer), and no two files of one module use each other. Tests
//! and test doubles are exempt: a test may build its fixture with anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules in the order `lib.rs` lists them, each with its layer's name.
fn stated_order() -> Vec<(String, String)> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let start = lib.find("<!-- layers -->").expect("lib.rs states the layers");
    let end = lib.find("<!-- /layers -->").expect("lib.rs ends the list of layers");
    let mut order = Vec::new();
    for line in lib[start..end].lines().skip(1) {
        let line = line.trim_start_matches("//!").trim();
        if line.is_empty() {
            continue;
        }
        let (layer, modules) = line.split_once(':').expect("a layer line reads `N. name: modules`");
        for module in modules.split_whitespace() {
            order.push((module.to_string(), layer.to_string()));
        }
    }
    order
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Source files that are tests or test doubles, whose imports do not count.
fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_string_lossy();
    name == "tests.rs"
        || name == "proptests.rs"
        || name == "testing.rs"
        || path.components().any(|c| c.as_os_str() == "testing")
}

/// The text of a file without its inline `#[cfg(test)]` modules and comments.
fn production_code(text: &str) -> String {
    let mut code = String::new();
    let mut skip_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut test_attribute = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        if skip_depth.is_none() && test_attribute && trimmed.starts_with("mod ") && trimmed.ends_with('{') {
            skip_depth = Some(depth);
        }
        test_attribute = trimmed == "#[cfg(test)]";
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        match skip_depth {
            Some(at) if depth <= at => skip_depth = None,
            Some(_) => {}
            None => {
                code.push_str(line);
                code.push('\n');
            }
        }
    }
    code
}

/// Every path a piece of code names after `prefix` (`crate::`, `super::`), with brace groups of
/// `use` declarations opened: `use crate::{a::{b, c}, d}` names `a::b`, `a::c` and `d`.
fn named_paths(code: &str, prefix: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let preceded_by_ident = rest[..at]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[at + prefix.len()..];
        if preceded_by_ident {
            continue;
        }
        expand(rest, String::new(), &mut paths);
    }
    paths
}

/// Reads one path (or brace group) at the start of `text` and pushes what it names.
fn expand(text: &str, base: String, out: &mut Vec<String>) {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    let head = format!("{base}{}", &text[..end]);
    if text[end..].starts_with('{') {
        let group = &text[end + 1..];
        let mut depth = 0;
        let mut item_start = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    expand(group[item_start..i].trim_start(), head.clone(), out);
                    return;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(group[item_start..i].trim_start(), head.clone(), out);
                    item_start = i + 1;
                }
                _ => {}
            }
        }
    } else if !head.is_empty() {
        out.push(head);
    }
}

/// (module, file, code) of every production source file below `src/`.
fn sources() -> Vec<(String, PathBuf, String)> {
    let mut files = Vec::new();
    let mut pending = vec![src()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !is_test_file(&path) {
                let relative = path.strip_prefix(src()).unwrap().to_path_buf();
                let module = relative.components().next().unwrap().as_os_str().to_string_lossy();
                let module = module.trim_end_matches(".rs").to_string();
                if module != "lib" && module != "layers" {
                    let code = production_code(&std::fs::read_to_string(&path).unwrap());
                    files.push((module, relative, code));
                }
            }
        }
    }
    files
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let order = stated_order();
    let rank: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, (m, _))| (m.as_str(), i)).collect();
    let mut wrong = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (module, file, code) in sources() {
        let Some(&own) = rank.get(module.as_str()) else {
            wrong.insert(format!("module {module} ({}) is in no layer of lib.rs", file.display()));
            continue;
        };
        seen.insert(module.clone());
        for path in named_paths(&code, "crate::") {
            let used = path.split("::").next().unwrap();
            if used == module || used == "self" {
                continue;
            }
            let problem = match rank.get(used) {
                Some(&other) if other < own => continue,
                Some(&other) => format!(
                    "{} ({}) uses crate::{path} ({}): upward",
                    file.display(),
                    order[own].1,
                    order[other].1
                ),
                None => format!("{} uses crate::{path}, which is in no layer", file.display()),
            };
            wrong.insert(problem);
        }
    }
    for (module, _) in &order {
        if !seen.contains(module) {
            wrong.insert(format!("lib.rs lists {module}, which has no source"));
        }
    }
    assert!(
        wrong.is_empty(),
        "the layers of lib.rs are broken:\n{}",
        wrong.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn no_two_files_of_a_module_use_each_other() {
    // Edges between the sibling files of a folder (its `mod.rs` states the module's contract and
    // re-exports, so only the other files count).
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (module, file, code) in sources() {
        let Some(folder) = file.parent().filter(|p| !p.as_os_str().is_empty()) else {
            continue;
        };
        if file.file_name().unwrap() == "mod.rs" {
            continue;
        }
        let mut used = Vec::new();
        for path in named_paths(&code, "super::") {
            used.push(path.split("::").next().unwrap().to_string());
        }
        let folder_path = folder.to_string_lossy().replace('/', "::");
        for path in named_paths(&code, "crate::") {
            if let Some(rest) = path.strip_prefix(&format!("{folder_path}::")) {
                used.push(rest.split("::").next().unwrap().to_string());
            }
        }
        for name in used {
            let sibling = folder.join(format!("{name}.rs"));
            if sibling != file && src().join(&sibling).exists() {
                edges.entry(file.clone()).or_default().insert(sibling);
            }
        }
        let _ = module;
    }
    let mut circles = Vec::new();
    for (file, uses) in &edges {
        for other in uses {
            if edges.get(other).is_some_and(|back| back.contains(file)) && file < other {
                circles.push(format!("{} <-> {}", file.display(), other.display()));
            }
        }
    }
    assert!(circles.is_empty(), "files that use each other:\n{}", circles.join("\n"));
}

#[test]
fn paths_in_brace_groups_are_all_seen() {
    let code = "use crate::{a::{b, c::D}, e};\nlet x = crate::f::g(); use super::h;";
    assert_eq!(named_paths(code, "crate::"), ["a::b", "a::c::D", "e", "f::g"]);
    assert_eq!(named_paths(code, "super::"), ["h"]);
    let inline = "fn a() {}\n#[cfg(test)]\nmod tests {\n    use crate::x;\n}\nuse crate::y;";
    assert_eq!(named_paths(&production_code(inline), "crate::"), ["y"]);
}
