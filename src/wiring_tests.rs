//! The dependencies point one way: `config` and `infra` (the configuration and the ports' embedded
//! and distributed implementations) know nothing of the services that use them, nor of the role
//! wiring above those. A `crate::…` path in their production code may only name them, or the
//! crate-root macros they define; test files may reach further (they start whole roles).
//!
//! The services' handlers take the ports they use (the core, a configuration section, the
//! context verifier) from their router state, never the whole process context: `AppContext` is
//! for start-up and `roles.rs`, which hands each state its parts.

use std::path::{Path, PathBuf};

/// What `config` and `infra` may name under `crate::`.
const ALLOWED: [&str; 5] = ["config", "infra", "on_pool", "on_tx", "each_database"];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs")
}

/// `text` without its `#[cfg(test)]` tail.
fn production(text: &str) -> &str {
    text.split("#[cfg(test)]").next().unwrap_or(text)
}

/// Every `crate::name` in `text` outside its `#[cfg(test)]` tail.
fn crate_paths(text: &str) -> Vec<String> {
    let production = production(text);
    production
        .match_indices("crate::")
        .map(|(at, _)| {
            production[at + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Every `crate::name` the production code under `dirs` names that `allowed` refuses, as
/// `file: crate::name`; `at_least` files must be found, so a moved tree cannot pass vacuously.
fn imports_refused(dirs: &[&str], at_least: usize, allowed: impl Fn(&str) -> bool) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > at_least, "the source tree was not found");
    let mut wrong = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        for name in crate_paths(&text) {
            if !allowed(&name) {
                wrong.push(format!("{}: crate::{name}", file.display()));
            }
        }
    }
    wrong
}

#[test]
fn config_and_infra_import_nothing_above_them() {
    let wrong = imports_refused(&["config", "infra"], 5, |name| ALLOWED.contains(&name));
    assert!(
        wrong.is_empty(),
        "config/infra reach above them:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn a_test_only_tail_and_other_modules_are_told_apart() {
    let text = "use crate::infra::db;\nuse crate::order::x;\n#[cfg(test)]\nuse crate::roles::Role;";
    assert_eq!(crate_paths(text), ["infra", "order"]);
}

/// What the services' routers are built on; a file that names one holds handlers or their wiring.
const ROUTER_STATES: [&str; 4] = ["OrderState", "PrintState", "ShippingState", "GatewayState"];

/// The extractors those handlers take, bound on the narrow state they check against.
const EXTRACTORS: [&str; 2] = ["identity/context.rs", "order/internal.rs"];

#[test]
fn service_handlers_take_their_ports_not_the_app_context() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in ["order", "print", "shipping", "gateway"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut handlers = Vec::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(file).unwrap();
        if ROUTER_STATES.iter().any(|s| production(&text).contains(s)) {
            handlers.push((file.clone(), text));
        }
    }
    // The route files of every service, their states and their internal APIs at least.
    assert!(
        handlers.len() > 20,
        "the services' handler files were not found"
    );
    for extractor in EXTRACTORS {
        let file = root.join(extractor);
        let text = std::fs::read_to_string(&file).unwrap();
        handlers.push((file, text));
    }
    let wrong: Vec<String> = handlers
        .iter()
        .filter(|(_, text)| production(text).contains("AppContext"))
        .map(|(file, _)| file.display().to_string())
        .collect();
    assert!(
        wrong.is_empty(),
        "handlers reach the whole AppContext instead of the ports they use:\n{}",
        wrong.join("\n")
    );
}

/// The services (and what they share: identity, events) never reach up into the gateway or the
/// role wiring: the gateway talks to them through their clients, and what both sides must agree
/// on (the signed user context, a sign-in's lease on a connection) lives in `identity`.
#[test]
fn services_never_import_the_gateway_or_the_wiring() {
    let services = ["order", "print", "shipping", "identity", "events"];
    let wrong = imports_refused(&services, 20, |name| {
        !["gateway", "roles", "server"].contains(&name)
    });
    assert!(
        wrong.is_empty(),
        "services reach up into the gateway or the wiring:\n{}",
        wrong.join("\n")
    );
}
