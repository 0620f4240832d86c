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
