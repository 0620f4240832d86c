//! The cluster's shared state in PostgreSQL (`cluster::ClusterDb`). Every
//! time is the database's `now()`, never a node's clock. A node's leases
//! live as long as its heartbeat row is fresh (one write per node per tick,
//! not one per connection); each claim raises the connection's fencing
//! epoch, which status writes are checked against.

use std::collections::HashMap;
use std::time::Duration;

use super::{COLUMNS, PgStore, decode, sql};
use crate::cluster::{Beat, Changes, Claimed, ClusterDb, DbError, NodeView, StatusRow};
use crate::store::StoreError;

/// Leases claimed per statement.
const CLAIM_CHUNK: usize = 1000;

fn text(e: StoreError) -> DbError {
    e.to_string()
}

impl ClusterDb for PgStore {
    fn join(&self, node: &str) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE leases SET holder = NULL WHERE holder = $1",
                &[&node],
            )
            .map_err(sql)?;
            Ok(())
        })
        .map_err(text)
    }

    fn heartbeat(&self, node: &str, lease: Duration) -> Result<Beat, DbError> {
        let secs = lease.as_secs_f64();
        self.with(|c| {
            c.execute(
                "INSERT INTO cluster_nodes (node_id, heartbeat_at, started_at)
                 VALUES ($1, now(), now())
                 ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()",
                &[&node],
            )
            .map_err(sql)?;
            let counts: HashMap<String, i64> = c
                .query(
                    "SELECT holder, count(*) FROM leases WHERE holder IS NOT NULL GROUP BY holder",
                    &[],
                )
                .map_err(sql)?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let nodes = c
                .query(
                    "SELECT node_id, heartbeat_at > now() - make_interval(secs => $1),
                            (extract(epoch FROM heartbeat_at) * 1000)::bigint
                     FROM cluster_nodes ORDER BY node_id",
                    &[&secs],
                )
                .map_err(sql)?
                .iter()
                .map(|r| {
                    let node_id: String = r.get(0);
                    NodeView {
                        connections: counts
                            .get(&node_id)
                            .map_or(0, |n| u64::try_from(*n).unwrap_or(0)),
                        node_id,
                        alive: r.get(1),
                        last_seen_ms: r.get(2),
                    }
                })
                .collect();
            let held = c
                .query(
                    "SELECT connection_id, epoch FROM leases WHERE holder = $1",
                    &[&node],
                )
                .map_err(sql)?
                .iter()
                .map(|r| (r.get(0), u64::try_from(r.get::<_, i64>(1)).unwrap_or(0)))
                .collect();
            Ok(Beat { nodes, held })
        })
        .map_err(text)
    }

    fn claim(&self, node: &str, ids: &[String], lease: Duration) -> Result<Vec<Claimed>, DbError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let secs = lease.as_secs_f64();
        self.with(|c| {
            // Free, ours from an earlier run or lapse, or held by a node
            // whose heartbeat is older than the lease: the row lock of
            // ON CONFLICT makes two claimants of one row take turns, and the
            // second sees the first's holder alive.
            // `taken_from` keeps the holder a claim replaced (a takeover
            // when it was another node). In chunks, in id order: short
            // statements, and concurrent claimants lock rows in one order.
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(CLAIM_CHUNK) {
                let rows = c
                    .query(
                        "INSERT INTO leases AS l (connection_id, holder, epoch, since)
                         SELECT id, $1, 1, now() FROM unnest($2::text[]) AS t(id)
                         ON CONFLICT (connection_id) DO UPDATE
                            SET holder = EXCLUDED.holder, epoch = l.epoch + 1, since = now(),
                                taken_from = l.holder
                            WHERE l.holder IS NULL OR l.holder = EXCLUDED.holder OR NOT EXISTS (
                                SELECT 1 FROM cluster_nodes n WHERE n.node_id = l.holder
                                AND n.heartbeat_at > now() - make_interval(secs => $3))
                         RETURNING l.connection_id, l.epoch, l.taken_from",
                        &[&node, &chunk, &secs],
                    )
                    .map_err(sql)?;
                out.extend(rows.iter().map(|r| {
                    let before: Option<String> = r.get(2);
                    Claimed {
                        id: r.get(0),
                        epoch: u64::try_from(r.get::<_, i64>(1)).unwrap_or(0),
                        took_over: before.is_some_and(|b| b != node),
                    }
                }));
            }
            Ok(out)
        })
        .map_err(text)
    }

    fn release(&self, node: &str, ids: &[String]) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let mut tx = c.transaction().map_err(sql)?;
            tx.execute(
                "UPDATE leases SET holder = NULL WHERE holder = $1 AND connection_id = ANY($2)",
                &[&node, &ids],
            )
            .map_err(sql)?;
            tx.execute(
                "UPDATE registration_status SET node_id = NULL,
                    change = nextval('uacd_status_changes'), written_at = now()
                 WHERE node_id = $1 AND connection_id = ANY($2)",
                &[&node, &ids],
            )
            .map_err(sql)?;
            tx.commit().map_err(sql)
        })
        .map_err(text)
    }

    fn leave(&self, node: &str) -> Result<(), DbError> {
        self.with(|c| {
            let mut tx = c.transaction().map_err(sql)?;
            tx.execute(
                "UPDATE leases SET holder = NULL WHERE holder = $1",
                &[&node],
            )
            .map_err(sql)?;
            tx.execute(
                "UPDATE registration_status SET node_id = NULL,
                    change = nextval('uacd_status_changes'), written_at = now()
                 WHERE node_id = $1",
                &[&node],
            )
            .map_err(sql)?;
            tx.execute("DELETE FROM cluster_nodes WHERE node_id = $1", &[&node])
                .map_err(sql)?;
            tx.commit().map_err(sql)
        })
        .map_err(text)
    }

    fn change_mark(&self) -> Result<i64, DbError> {
        self.with(|c| {
            Ok(c.query_one(
                "SELECT GREATEST((SELECT coalesce(max(change), 0) FROM connections),
                                 (SELECT coalesce(max(change), 0) FROM connection_deletions))",
                &[],
            )
            .map_err(sql)?
            .get(0))
        })
        .map_err(text)
    }

    fn changes_since(&self, mark: i64) -> Result<Changes, DbError> {
        self.with(|c| {
            // id → (change, row or None for a deletion): the latest wins.
            let mut latest: HashMap<String, (i64, Option<crate::config::Connection>)> =
                HashMap::new();
            for r in c
                .query(
                    &format!("SELECT {COLUMNS}, change FROM connections WHERE change > $1"),
                    &[&mark],
                )
                .map_err(sql)?
            {
                let row = decode(&r)?;
                latest.insert(row.connection.id.clone(), (r.get(7), Some(row.connection)));
            }
            for r in c
                .query(
                    "SELECT id, change FROM connection_deletions WHERE change > $1",
                    &[&mark],
                )
                .map_err(sql)?
            {
                let (id, change): (String, i64) = (r.get(0), r.get(1));
                if latest.get(&id).is_none_or(|(at, _)| *at < change) {
                    latest.insert(id, (change, None));
                }
            }
            let mut out = Changes {
                mark,
                ..Changes::default()
            };
            for (id, (change, conn)) in latest {
                out.mark = out.mark.max(change);
                match conn {
                    Some(c) => out.upserted.push(c),
                    None => out.deleted.push(id),
                }
            }
            Ok(out)
        })
        .map_err(text)
    }

    fn put_status(&self, node: &str, rows: &[(StatusRow, u64)]) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = rows.iter().map(|(r, _)| r.connection_id.as_str()).collect();
        let status: Vec<i32> = rows.iter().map(|(r, _)| i32::from(r.status)).collect();
        let resp: Vec<Option<&str>> = rows
            .iter()
            .map(|(r, _)| r.last_response.as_deref())
            .collect();
        let ip: Vec<Option<&str>> = rows
            .iter()
            .map(|(r, _)| r.registered_ip.as_deref())
            .collect();
        let exp: Vec<Option<i64>> = rows.iter().map(|(r, _)| r.expires_at).collect();
        let upd: Vec<i64> = rows.iter().map(|(r, _)| r.updated_at).collect();
        let epoch: Vec<i64> = rows
            .iter()
            .map(|(_, e)| i64::try_from(*e).unwrap_or(i64::MAX))
            .collect();
        self.with(|c| {
            // Only rows whose lease is still ours at that epoch (fencing: a
            // node that lost a connection cannot overwrite its new holder's).
            c.execute(
                "INSERT INTO registration_status AS s
                    (connection_id, node_id, status, last_response, registered_ip, expires_at, updated_at)
                 SELECT t.id, $1, t.status, t.resp, t.ip, t.exp, t.upd
                 FROM unnest($2::text[], $3::int[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[])
                    AS t(id, status, resp, ip, exp, upd, epoch)
                 JOIN leases l ON l.connection_id = t.id AND l.holder = $1 AND l.epoch = t.epoch
                 ON CONFLICT (connection_id) DO UPDATE SET node_id = EXCLUDED.node_id,
                    status = EXCLUDED.status, last_response = EXCLUDED.last_response,
                    registered_ip = EXCLUDED.registered_ip, expires_at = EXCLUDED.expires_at,
                    updated_at = EXCLUDED.updated_at, change = nextval('uacd_status_changes'),
                    written_at = now()",
                &[&node, &ids, &status, &resp, &ip, &exp, &upd, &epoch],
            )
            .map_err(sql)?;
            Ok(())
        })
        .map_err(text)
    }

    fn statuses_since(&self, mark: i64) -> Result<(Vec<StatusRow>, i64), DbError> {
        self.with(|c| {
            // Status writers do not serialise (too many): a row committed
            // late with a lower change number is caught by the time window.
            let rows = c
                .query(
                    "SELECT connection_id, node_id, status, last_response, registered_ip,
                            expires_at, updated_at, change
                     FROM registration_status
                     WHERE change > $1 OR written_at > now() - interval '3 seconds'",
                    &[&mark],
                )
                .map_err(sql)?;
            let mut next = mark;
            let out = rows
                .iter()
                .map(|r| {
                    next = next.max(r.get::<_, i64>(7));
                    StatusRow {
                        connection_id: r.get(0),
                        node_id: r.get(1),
                        status: u8::try_from(r.get::<_, i32>(2)).unwrap_or(1),
                        last_response: r.get(3),
                        registered_ip: r.get(4),
                        expires_at: r.get(5),
                        updated_at: r.get(6),
                    }
                })
                .collect();
            Ok((out, next))
        })
        .map_err(text)
    }
}
