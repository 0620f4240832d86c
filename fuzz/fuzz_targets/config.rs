//! The config reader (TOML schema, defaults, validation; design.md Part 2).
//! Properties: a rejected file has at least one issue, each at a line of the
//! file (0 only for the whole file), in line order and without repeats; an
//! accepted one has connections with unique ids and user names that pass the
//! shared field checks.
//!
//! The reader opens `token_file`s. So that the fuzzer never reads the
//! machine's files, the file is "in" a directory that does not exist (a
//! relative path, `..` included, cannot resolve), and an input that names
//! `token_file` or has `\u` escapes (which could spell the key or a `/`) has
//! every `/` replaced by `_` and its `\u`/`\U` escapes broken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;

const FILE: &str = "/nonexistent/uacd-fuzz/uacd.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let text = if text.contains("token_file") || text.contains("\\u") || text.contains("\\U") {
        text.replace('/', "_")
            .replace("\\u", "\\_")
            .replace("\\U", "\\_")
    } else {
        text.to_owned()
    };
    let text = text.as_str();
    match uacd::config::parse(text, FILE) {
        Ok(config) => {
            let mut ids = HashSet::new();
            let mut users = HashSet::new();
            for c in &config.connections {
                assert!(ids.insert(c.id.clone()), "duplicate id {:?} accepted", c.id);
                assert!(
                    users.insert(c.user_name.clone()),
                    "duplicate user_name {:?} accepted",
                    c.user_name
                );
                let issues = c.check(true, config.sip.domain.as_deref());
                assert!(
                    issues.is_empty(),
                    "an accepted connection fails its checks: {issues:?}"
                );
            }
        }
        Err(errors) => {
            assert!(!errors.issues.is_empty(), "rejected without a reason");
            let lines = text.split('\n').count();
            for pair in errors.issues.windows(2) {
                assert!(pair[0].line <= pair[1].line, "issues out of line order");
                assert_ne!(pair[0], pair[1], "the same issue twice");
            }
            for issue in &errors.issues {
                assert_eq!(issue.file, FILE);
                assert!(
                    issue.line <= lines,
                    "issue at line {} of a {lines}-line file",
                    issue.line
                );
                assert!(!issue.reason.is_empty());
            }
            assert!(!errors.to_string().is_empty());
        }
    }
});
