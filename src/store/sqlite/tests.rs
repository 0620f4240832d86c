use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::store::{ListQuery, Sort, SortKey};

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

#[test]
fn creates_the_file_0600_and_keeps_rows_with_passwords_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("uacd.db");
    let s = SqliteStore::open(&path).unwrap();
    s.insert(&row(conn("a", "A", "1"), 10)).unwrap();
    drop(s);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let s = SqliteStore::open(&path).unwrap();
    let got = s.get("a").unwrap().expect("row kept");
    assert_eq!(got.connection.password.expose(), "pw-a");
    assert_eq!(
        got.connection
            .external_uac_settings
            .password
            .as_ref()
            .map(Secret::expose),
        Some("ext-secret")
    );
    assert_eq!(got.connection, conn("a", "A", "1"));
    assert_eq!(got.created_at, 10);
}

#[test]
fn a_file_that_is_not_a_database_is_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uacd.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let err = SqliteStore::open(&path).err().expect("must fail");
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("uacd.db"), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("uacd.db");
    drop(SqliteStore::open(&path).unwrap());
    let c = rusqlite::Connection::open(&path).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = SqliteStore::open(&path).err().expect("must fail");
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err}"
    );
}

#[test]
fn user_name_and_id_are_unique() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.insert(&row(conn("a", "A", "1"), 1)).unwrap();
    let mut dup = conn("b", "B", "1");
    dup.user_name = conn("a", "A", "1").user_name;
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
}

#[test]
fn list_filters_by_owner_and_name_sorts_and_pages() {
    let s = SqliteStore::open_in_memory().unwrap();
    for (i, name) in ["Office", "office 2", "Lab", "100%_pbx", "Other"]
        .iter()
        .enumerate()
    {
        s.insert(&row(conn(&format!("c{i}"), name, "1"), i as i64))
            .unwrap();
    }
    s.insert(&row(conn("x", "Office of another tenant", "2"), 9))
        .unwrap();
    let q = |contains: Option<&str>, key, descending, page_number, page_size| ListQuery {
        user_id: "1".into(),
        name_contains: contains.map(str::to_owned),
        user_name_contains: None,
        sort: Sort { key, descending },
        page_number,
        page_size,
    };
    let ids = |p: Page| {
        p.rows
            .into_iter()
            .map(|r| r.connection.id)
            .collect::<Vec<_>>()
    };
    let p = s
        .list(&q(Some("OFFICE"), SortKey::CreatedAt, false, 1, 10))
        .unwrap();
    assert_eq!(p.total, 2);
    assert_eq!(ids(p), ["c0", "c1"]);
    let p = s
        .list(&q(Some("%_"), SortKey::CreatedAt, false, 1, 10))
        .unwrap();
    assert_eq!(ids(p), ["c3"], "LIKE wildcards are literal");
    let p = s.list(&q(None, SortKey::CreatedAt, true, 2, 2)).unwrap();
    assert_eq!(p.total, 5);
    assert_eq!(ids(p), ["c2", "c1"]);
    let p = s
        .list(&q(None, SortKey::ConnectionName, false, 1, 3))
        .unwrap();
    assert_eq!(ids(p), ["c3", "c2", "c0"]);
    let p = s.list(&q(None, SortKey::CreatedAt, false, 9, 3)).unwrap();
    assert_eq!((p.total, p.rows.len()), (5, 0));
}

#[test]
fn sync_file_inserts_updates_removes_and_keeps_generated_passwords() {
    let s = SqliteStore::open_in_memory().unwrap();
    s.insert(&row(conn("api1", "API", "1"), 1)).unwrap();
    let generated: BTreeSet<String> = ["f1".to_owned()].into();
    let mut file = vec![conn("f1", "F1", "1"), conn("f2", "F2", "1")];
    file[0].password = Secret::new("random-first");
    let r = s.sync_file(&mut file, &generated, 100).unwrap();
    assert_eq!((r.inserted, r.updated, r.removed), (2, 0, 0));
    // The rows it reports are the store's after it.
    assert!(r.removed_ids.is_empty());
    assert_eq!(r.after, s.all().unwrap());

    // Next load: a new random password is generated for f1; the stored one wins.
    let mut file = vec![conn("f1", "F1 renamed", "1")];
    file[0].password = Secret::new("random-second");
    let r = s.sync_file(&mut file, &generated, 200).unwrap();
    assert_eq!((r.inserted, r.updated, r.removed), (0, 1, 1));
    assert_eq!(r.removed_ids, ["f2"]);
    assert_eq!(r.after, s.all().unwrap());
    assert_eq!(file[0].password.expose(), "random-first");
    let f1 = s.get("f1").unwrap().unwrap();
    assert_eq!(f1.connection.password.expose(), "random-first");
    assert_eq!(f1.connection.connection_name, "F1 renamed");
    assert_eq!((f1.created_at, f1.updated_at), (100, 200));
    assert!(s.get("f2").unwrap().is_none());
    assert!(
        s.get("api1").unwrap().is_some(),
        "API rows are not the file's"
    );

    // Unchanged: no write.
    let mut same = vec![conn("f1", "F1 renamed", "1")];
    let r = s.sync_file(&mut same, &generated, 300).unwrap();
    assert_eq!((r.inserted, r.updated, r.removed), (0, 0, 0));
    assert_eq!(r.after, s.all().unwrap());

    let mut clash = vec![conn("api1", "x", "1")];
    assert!(matches!(
        s.sync_file(&mut clash, &BTreeSet::new(), 400),
        Err(StoreError::FileConflict { .. })
    ));
}

#[test]
fn unfiltered_totals_follow_inserts_deletes_and_syncs() {
    let s = SqliteStore::open_in_memory().unwrap();
    let q = |user: &str| ListQuery {
        user_id: user.into(),
        name_contains: None,
        user_name_contains: None,
        sort: Sort {
            key: SortKey::CreatedAt,
            descending: true,
        },
        page_number: 1,
        page_size: 1,
    };
    assert_eq!(s.list(&q("1")).unwrap().total, 0);
    s.insert(&row(conn("a", "A", "1"), 1)).unwrap();
    s.insert(&row(conn("b", "B", "1"), 2)).unwrap();
    s.insert(&row(conn("c", "C", "2"), 3)).unwrap();
    assert_eq!(s.list(&q("1")).unwrap().total, 2);
    s.insert(&row(conn("d", "D", "1"), 4)).unwrap();
    assert!(s.delete("a").unwrap());
    assert!(!s.delete("a").unwrap());
    assert_eq!(s.list(&q("1")).unwrap().total, 2);
    assert_eq!(s.list(&q("2")).unwrap().total, 1);
    let mut moved = conn("c", "C", "1");
    moved.user_name = conn("c", "C", "2").user_name;
    s.update(&row(moved, 3)).unwrap();
    assert_eq!(s.list(&q("1")).unwrap().total, 3);
    assert_eq!(s.list(&q("2")).unwrap().total, 0);
    s.sync_file(&mut [conn("f", "F", "2")], &BTreeSet::new(), 5)
        .unwrap();
    assert_eq!(s.list(&q("2")).unwrap().total, 1);
}

#[test]
fn list_filters_by_user_name_and_sorts_by_active() {
    let s = SqliteStore::open_in_memory().unwrap();
    for (i, (user_name, active)) in [
        ("uacd-lab-1", true),
        ("uacd-office", false),
        ("other", true),
    ]
    .iter()
    .enumerate()
    {
        let mut c = conn(&format!("c{i}"), &format!("N{i}"), "1");
        c.user_name = (*user_name).into();
        c.active = *active;
        s.insert(&row(c, i as i64)).unwrap();
    }
    let ids = |q: ListQuery| {
        let p = s.list(&q).unwrap();
        (
            p.total,
            p.rows
                .into_iter()
                .map(|r| r.connection.id)
                .collect::<Vec<_>>(),
        )
    };
    let q = |user_name: Option<&str>, name: Option<&str>, key, descending| ListQuery {
        user_id: "1".into(),
        name_contains: name.map(str::to_owned),
        user_name_contains: user_name.map(str::to_owned),
        sort: Sort { key, descending },
        page_number: 1,
        page_size: 10,
    };
    assert_eq!(
        ids(q(Some("UACD"), None, SortKey::CreatedAt, false)),
        (2, vec!["c0".into(), "c1".into()])
    );
    assert_eq!(
        ids(q(Some("uacd"), Some("n1"), SortKey::CreatedAt, false)),
        (1, vec!["c1".into()])
    );
    assert_eq!(
        ids(q(Some("_"), None, SortKey::CreatedAt, false)),
        (0, vec![]),
        "LIKE wildcards are literal"
    );
    let (_, by_active) = ids(q(None, None, SortKey::Active, true));
    assert_eq!(
        by_active.last().map(String::as_str),
        Some("c1"),
        "active first: {by_active:?}"
    );
    let (_, reversed) = ids(q(None, None, SortKey::Active, false));
    assert_eq!(
        reversed.first().map(String::as_str),
        Some("c1"),
        "{reversed:?}"
    );
}
