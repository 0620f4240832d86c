//! The PostgreSQL store (cluster mode) against a real PostgreSQL 15 started
//! by the test (tests/common/postgres.rs): the same behaviours as SQLite's
//! (passwords kept, unique user_name and id, listing filters, sorts and
//! pages, sync_file with generated passwords, versioned migrations), the
//! shared dialog key, and the lease queries of cluster mode: a live
//! holder's lease cannot be claimed, a dead one's can (epoch raised,
//! counted as a takeover), status writes are fenced by the epoch, and a
//! follower sees every write and deletion. Dead nodes are made by moving
//! their heartbeat back in the database: no test waits for a lease to run out.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::postgres::Postgres;
use uacd::cluster::{ClusterDb, StatusRow};
use uacd::config::{Connection, Secret};
use uacd::store::{ListQuery, Owner, Page, PgStore, Row, Sort, SortKey, Store, StoreError};

const LEASE: Duration = Duration::from_secs(10);

fn conn(id: &str, name: &str, user: &str) -> Connection {
    let mut c: Connection = serde_json::from_value(serde_json::json!({
        "id": id,
        "connection_name": name,
        "user_id": user,
        "password": format!("pw-{id}"),
        "external_uac_settings": {"proxy": "sip:pbx.test:5070", "username": "u", "password": "ext-secret"}
    }))
    .expect("valid");
    c.fill_defaults(None);
    c
}

fn row(c: Connection, at: i64) -> Row {
    Row {
        connection: c,
        owner: Owner::Api,
        created_at: at,
        updated_at: at,
    }
}

fn open(pg: &Postgres) -> PgStore {
    PgStore::open(&pg.url(), None).expect("open the PostgreSQL store")
}

fn query(user_name: Option<&str>, name: Option<&str>, key: SortKey, descending: bool) -> ListQuery {
    ListQuery {
        user_id: "1".into(),
        name_contains: name.map(str::to_owned),
        user_name_contains: user_name.map(str::to_owned),
        sort: Sort { key, descending },
        page_number: 1,
        page_size: 10,
    }
}

fn ids(p: Page) -> (u64, Vec<String>) {
    (
        p.total,
        p.rows.into_iter().map(|r| r.connection.id).collect(),
    )
}

#[test]
fn the_store_keeps_the_sqlite_semantics() {
    let pg = Postgres::start("store-semantics");
    let s = open(&pg);
    // Rows keep both passwords; reopening migrates nothing twice.
    s.insert(&row(conn("a", "Office", "1"), 10)).unwrap();
    drop(s);
    let s = open(&pg);
    assert_eq!(pg.psql("SELECT version FROM uacd_schema"), "1");
    let got = s.get("a").unwrap().expect("row kept");
    assert_eq!(got.connection, conn("a", "Office", "1"));
    assert_eq!(got.connection.password.expose(), "pw-a");
    assert_eq!(
        got.connection
            .external_uac_settings
            .password
            .as_ref()
            .map(Secret::expose),
        Some("ext-secret")
    );

    // Unique user_name and id, as typed errors.
    let mut dup = conn("b", "B", "1");
    dup.user_name = got.connection.user_name.clone();
    assert!(matches!(
        s.insert(&row(dup, 2)),
        Err(StoreError::DuplicateUserName(_))
    ));
    let mut same_id = conn("a", "A2", "1");
    same_id.user_name = "another".into();
    assert!(matches!(
        s.insert(&row(same_id, 3)),
        Err(StoreError::DuplicateId(_))
    ));

    // Filters (case-insensitive, wildcards literal), sorts and pages.
    for (i, name) in ["office 2", "Lab", "100%_pbx", "Other"].iter().enumerate() {
        s.insert(&row(conn(&format!("c{i}"), name, "1"), 20 + i as i64))
            .unwrap();
    }
    s.insert(&row(conn("x", "Office of another tenant", "2"), 90))
        .unwrap();
    assert_eq!(
        ids(s
            .list(&query(None, Some("OFFICE"), SortKey::CreatedAt, false))
            .unwrap()),
        (2, vec!["a".into(), "c0".into()])
    );
    assert_eq!(
        ids(s
            .list(&query(None, Some("%_"), SortKey::CreatedAt, false))
            .unwrap()),
        (1, vec!["c2".into()])
    );
    assert_eq!(
        ids(s
            .list(&query(None, None, SortKey::ConnectionName, false))
            .unwrap())
        .1,
        ["c2", "c1", "a", "c3", "c0"],
        "byte order, like SQLite"
    );
    let mut page = query(None, None, SortKey::CreatedAt, true);
    page.page_number = 2;
    page.page_size = 2;
    assert_eq!(
        ids(s.list(&page).unwrap()),
        (5, vec!["c1".into(), "c0".into()])
    );
    page.page_number = 9;
    assert_eq!(ids(s.list(&page).unwrap()), (5, vec![]));

    // user_name filter and the active sort.
    let mut off = s.get("c1").unwrap().unwrap();
    off.connection.active = false;
    off.connection.user_name = "uacd-lab".into();
    assert!(s.update(&off).unwrap());
    assert_eq!(
        ids(s
            .list(&query(Some("UACD-L"), None, SortKey::CreatedAt, false))
            .unwrap()),
        (1, vec!["c1".into()])
    );
    assert_eq!(
        ids(s.list(&query(None, None, SortKey::Active, false)).unwrap()).1[0],
        "c1",
        "inactive first"
    );
    assert_eq!(
        ids(s.list(&query(None, None, SortKey::Active, true)).unwrap())
            .1
            .last()
            .unwrap(),
        "c1"
    );
    assert!(s.delete("c3").unwrap());
    assert!(!s.delete("c3").unwrap());
    assert_eq!(s.all().unwrap().len(), 5);

    // A newer schema is refused.
    pg.psql("UPDATE uacd_schema SET version = 99");
    let err = PgStore::open(&pg.url(), None).err().expect("must fail");
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn sync_file_keeps_generated_passwords_and_every_node_shares_the_dialog_key() {
    let pg = Postgres::start("store-sync");
    let (n1, n2) = (open(&pg), open(&pg));
    n1.insert(&row(conn("api1", "API", "1"), 1)).unwrap();
    let generated: BTreeSet<String> = ["f1".to_owned()].into();
    let mut file = vec![conn("f1", "F1", "1"), conn("f2", "F2", "1")];
    file[0].password = Secret::new("random-first");
    let r = n1.sync_file(&mut file, &generated, 100).unwrap();
    assert_eq!((r.inserted, r.updated, r.removed), (2, 0, 0));
    // The rows it reports are the store's.
    assert_eq!(r.after, n1.all().unwrap());
    // Another node reading the same file generated another password: the
    // stored one wins there too.
    let mut file = vec![conn("f1", "F1 renamed", "1")];
    file[0].password = Secret::new("random-second");
    let r = n2.sync_file(&mut file, &generated, 200).unwrap();
    assert_eq!((r.inserted, r.updated, r.removed), (0, 1, 1));
    assert_eq!(r.removed_ids, ["f2"]);
    assert_eq!(r.after, n1.all().unwrap());
    assert_eq!(file[0].password.expose(), "random-first");
    let f1 = n1.get("f1").unwrap().unwrap();
    assert_eq!(f1.connection.connection_name, "F1 renamed");
    assert_eq!((f1.created_at, f1.updated_at), (100, 200));
    assert!(n1.get("api1").unwrap().is_some());
    let mut clash = vec![conn("api1", "x", "1")];
    assert!(matches!(
        n1.sync_file(&mut clash, &BTreeSet::new(), 400),
        Err(StoreError::FileConflict { .. })
    ));
    let key = n1.dialog_secret().unwrap();
    assert_eq!(n2.dialog_secret().unwrap(), key);
    assert_eq!(open(&pg).dialog_secret().unwrap(), key);
}

fn ids_of(v: &[String]) -> Vec<String> {
    v.to_vec()
}

#[test]
fn leases_are_exclusive_taken_over_from_the_dead_and_fence_status_writes() {
    let pg = Postgres::start("store-leases");
    let db = open(&pg);
    let all = ids_of(&["x".into(), "y".into()]);
    db.heartbeat("a", LEASE).unwrap();
    db.heartbeat("b", LEASE).unwrap();
    let got = db.claim("a", &all, LEASE).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|c| c.epoch == 1 && !c.took_over));
    // A live holder keeps it.
    assert!(db.claim("b", &all, LEASE).unwrap().is_empty());
    let beat = db.heartbeat("b", LEASE).unwrap();
    assert!(beat.held.is_empty());
    let view: Vec<(String, bool, u64)> = beat
        .nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.alive, n.connections))
        .collect();
    assert_eq!(view, [("a".into(), true, 2), ("b".into(), true, 0)]);

    // Status writes at the current epoch land; at another epoch they do not.
    let status = |id: &str, code: u8| StatusRow {
        connection_id: id.into(),
        node_id: Some("a".into()),
        status: code,
        last_response: Some("200 OK".into()),
        registered_ip: Some("127.0.0.9:5060".into()),
        expires_at: Some(5000),
        updated_at: 4000,
    };
    db.put_status("a", &[(status("x", 4), 1), (status("y", 4), 7)])
        .unwrap();
    let (rows, mark) = db.statuses_since(0).unwrap();
    assert_eq!(rows, vec![status("x", 4)]);
    assert!(mark > 0);

    // a dies: its heartbeat is older than the lease by the database clock.
    pg.psql(
        "UPDATE cluster_nodes SET heartbeat_at = now() - interval '1 hour' WHERE node_id = 'a'",
    );
    let beat = db.heartbeat("b", LEASE).unwrap();
    assert!(!beat.nodes.iter().find(|n| n.node_id == "a").unwrap().alive);
    let got = db.claim("b", &all, LEASE).unwrap();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|c| c.epoch == 2 && c.took_over));
    // The old holder's late status write is fenced off.
    db.put_status("a", &[(status("x", 2), 1)]).unwrap();
    let (rows, _) = db.statuses_since(0).unwrap();
    assert_eq!(rows[0].status, 4, "unchanged by the fenced write");
    assert_eq!(
        db.heartbeat("a", LEASE).unwrap().held.len(),
        0,
        "a sees it lost them"
    );

    // Release hands over at once (no takeover); join gives back a previous
    // run's leases, and the next claim raises the epoch again.
    db.release("b", &["x".into()]).unwrap();
    let got = db.claim("a", &["x".into()], LEASE).unwrap();
    assert_eq!((got[0].epoch, got[0].took_over), (3, false));
    db.join("a").unwrap();
    let got = db.claim("a", &["x".into()], LEASE).unwrap();
    assert_eq!(got[0].epoch, 4);
    db.leave("b").unwrap();
    let beat = db.heartbeat("a", LEASE).unwrap();
    assert!(beat.nodes.iter().all(|n| n.node_id != "b"));
    assert!(db.claim("a", &["y".into()], LEASE).unwrap().len() == 1);
}

#[test]
fn a_follower_sees_every_write_and_deletion_after_its_mark() {
    let pg = Postgres::start("store-follow");
    let db = open(&pg);
    db.insert(&row(conn("old", "Old", "1"), 1)).unwrap();
    let mark = db.change_mark().unwrap();
    assert!(db.changes_since(mark).unwrap().upserted.is_empty());
    db.insert(&row(conn("new", "New", "1"), 2)).unwrap();
    let mut renamed = conn("old", "Renamed", "1");
    renamed.user_name = conn("old", "Old", "1").user_name;
    assert!(db.update(&row(renamed.clone(), 3)).unwrap());
    db.insert(&row(conn("gone", "Gone", "1"), 4)).unwrap();
    assert!(db.delete("gone").unwrap());
    let ch = db.changes_since(mark).unwrap();
    let mut up: Vec<&str> = ch
        .upserted
        .iter()
        .map(|c| c.connection_name.as_str())
        .collect();
    up.sort_unstable();
    assert_eq!(up, ["New", "Renamed"]);
    assert_eq!(ch.deleted, ["gone"]);
    assert!(ch.mark > mark);
    let again = db.changes_since(ch.mark).unwrap();
    assert!(again.upserted.is_empty() && again.deleted.is_empty());
}

#[test]
fn nodes_starting_together_migrate_once() {
    let pg = Postgres::start("store-migrate-race");
    let url = pg.url();
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgStore::open(&url, None).map(drop))
        })
        .collect();
    for t in opened {
        t.join().unwrap().expect("every node opens the store");
    }
    assert_eq!(pg.psql("SELECT version FROM uacd_schema"), "1");
    assert_eq!(pg.psql("SELECT count(*) FROM uacd_schema"), "1");
}
