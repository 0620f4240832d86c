//! `[store]` and `[cluster]`: SQLite at `path` (one node, the default), or
//! PostgreSQL at `url` (cluster mode, with `[cluster] node_id` required).

use std::path::Path;

use super::reader::{Ctx, TableView};
use super::types::Secret;
use super::{ClusterConfig, StoreConfig};

/// `lease_sec` bounds: below 3 s a scheduling hiccup loses the lease;
/// above 300 s a dead node's connections wait too long.
pub(super) const LEASE_SEC: std::ops::RangeInclusive<u64> = 3..=300;

pub(super) const STORE_KEYS: &[&str] = &["path", "url", "password_file"];
pub(super) const CLUSTER_KEYS: &[&str] = &["node_id", "lease_sec"];

pub(super) fn read(
    ctx: &mut Ctx,
    store: &TableView<'_, '_>,
    cluster: &TableView<'_, '_>,
    base_dir: &Path,
    path: Option<std::path::PathBuf>,
) -> (StoreConfig, Option<ClusterConfig>) {
    let mut cfg = StoreConfig {
        path: path
            .map(|p| base_dir.join(p))
            .unwrap_or_else(|| StoreConfig::default().path),
        ..StoreConfig::default()
    };
    let url = store.str(ctx, "url");
    if let Some(u) = &url {
        if store.has("path") {
            ctx.report(
                &u.span(),
                &store.key("url"),
                "give path (SQLite, one node) or url (PostgreSQL, cluster), not both",
            );
        } else if !(u.get_ref().starts_with("postgres://")
            || u.get_ref().starts_with("postgresql://"))
        {
            ctx.report(
                &u.span(),
                &store.key("url"),
                "expected a PostgreSQL URL, e.g. \"postgres://uacd@db.example.net/uacd\"",
            );
        } else {
            cfg.url = Some(Secret::new(u.get_ref().clone()));
        }
    }
    if let Some(f) = store.str(ctx, "password_file") {
        if url.is_none() {
            ctx.report(
                &f.span(),
                &store.key("password_file"),
                "only with url (the PostgreSQL password)",
            );
        } else {
            let p = base_dir.join(f.get_ref());
            match std::fs::read_to_string(&p) {
                Ok(s) => cfg.password = Some(Secret::new(s.trim().to_owned())),
                Err(e) => ctx.report(
                    &f.span(),
                    &store.key("password_file"),
                    format!("cannot read {}: {e}", p.display()),
                ),
            }
        }
    }
    let node_id = cluster.str(ctx, "node_id");
    let lease = cluster.uint(ctx, "lease_sec", LEASE_SEC);
    let node_id = match node_id {
        Some(n) if n.get_ref().trim().is_empty() || n.get_ref().len() > 64 => {
            ctx.report(
                &n.span(),
                &cluster.key("node_id"),
                "must be 1 to 64 characters",
            );
            None
        }
        Some(n) => Some(n.into_inner()),
        None => None,
    };
    let cluster_cfg = match (&url, node_id) {
        (Some(_), Some(node_id)) => Some(ClusterConfig {
            node_id,
            lease_sec: lease.map_or(10, |l| l.into_inner()),
        }),
        (Some(u), None) => {
            if !cluster.has("node_id") {
                ctx.report(
                    &u.span(),
                    "cluster.node_id",
                    "missing required key (store.url makes this node part of a cluster)",
                );
            }
            None
        }
        (None, Some(_)) => {
            if let Some(span) = cluster.span_of("node_id") {
                ctx.report(
                    &span,
                    &cluster.key("node_id"),
                    "cluster mode needs store.url (PostgreSQL)",
                );
            }
            None
        }
        (None, None) => None,
    };
    (cfg, cluster_cfg)
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    fn issues(text: &str) -> Vec<String> {
        match parse(text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(e) => e
                .issues
                .iter()
                .map(|i| format!("{}: {}: {}", i.line, i.key, i.reason))
                .collect(),
        }
    }

    #[test]
    fn url_with_node_id_is_cluster_mode_with_a_default_lease() {
        let c = parse(
            "[store]\nurl = \"postgres://uacd:pw@db/uacd\"\n[cluster]\nnode_id = \"edge-1\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            c.store.url.as_ref().unwrap().expose(),
            "postgres://uacd:pw@db/uacd"
        );
        let cl = c.cluster.unwrap();
        assert_eq!((cl.node_id.as_str(), cl.lease_sec), ("edge-1", 10));
        let c = parse("[store]\npath = \"x.db\"\n", "t.toml").unwrap();
        assert!(
            c.cluster.is_none() && c.store.url.is_none(),
            "SQLite stays the default"
        );
    }

    #[test]
    fn each_mistake_names_its_key_and_line() {
        let url = "url = \"postgres://db/uacd\"";
        assert_eq!(
            issues(&format!(
                "[store]\npath = \"x.db\"\n{url}\n[cluster]\nnode_id = \"a\"\n"
            )),
            ["3: store.url: give path (SQLite, one node) or url (PostgreSQL, cluster), not both"]
        );
        assert_eq!(
            issues(&format!("[store]\n{url}\n")),
            [
                "2: cluster.node_id: missing required key (store.url makes this node part of a cluster)"
            ]
        );
        assert_eq!(
            issues("[store]\nurl = \"mysql://db\"\n[cluster]\nnode_id = \"a\"\n")[0],
            "2: store.url: expected a PostgreSQL URL, e.g. \"postgres://uacd@db.example.net/uacd\""
        );
        let lease = issues(&format!(
            "[store]\n{url}\n[cluster]\nnode_id = \"a\"\nlease_sec = 2\n"
        ));
        assert_eq!(lease.len(), 1, "{lease:?}");
        assert!(lease[0].starts_with("5: cluster.lease_sec: "), "{lease:?}");
        assert!(
            lease[0].contains('3') && lease[0].contains("300"),
            "{lease:?}"
        );
        assert_eq!(
            issues("[cluster]\nnode_id = \"a\"\n"),
            ["2: cluster.node_id: cluster mode needs store.url (PostgreSQL)"]
        );
        assert_eq!(
            issues("[store]\npassword_file = \"pw\"\n"),
            ["2: store.password_file: only with url (the PostgreSQL password)"]
        );
        let missing = issues(&format!(
            "[store]\n{url}\npassword_file = \"/nonexistent/pw\"\n[cluster]\nnode_id = \"a\"\n"
        ));
        assert!(
            missing[0].starts_with("3: store.password_file: cannot read"),
            "{missing:?}"
        );
        assert!(
            issues(&format!(
                "[store]\n{url}\n[cluster]\nnode_id = \"a\"\nbogus = 1\n"
            ))[0]
                .contains("cluster.bogus")
        );
    }

    #[test]
    fn password_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg-pw"), "s3cret\n").unwrap();
        let file = dir.path().join("uacd.toml");
        std::fs::write(
            &file,
            "[store]\nurl = \"postgres://uacd@db/uacd\"\npassword_file = \"pg-pw\"\n[cluster]\nnode_id = \"n\"\nlease_sec = 3\n",
        )
        .unwrap();
        let c = crate::config::load(&file).unwrap();
        assert_eq!(c.store.password.unwrap().expose(), "s3cret");
        assert_eq!(c.cluster.unwrap().lease_sec, 3);
    }
}
