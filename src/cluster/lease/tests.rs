use super::*;

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("conn-{i:05}")).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn counts<'a>(m: &HashMap<&'a str, &'a str>) -> BTreeMap<&'a str, usize> {
    let mut c = BTreeMap::new();
    for owner in m.values() {
        *c.entry(*owner).or_default() += 1;
    }
    c
}

#[test]
fn every_connection_gets_exactly_one_live_owner_and_shares_differ_by_at_most_one() {
    let nodes = ["edge-1", "edge-2", "edge-3", "edge-4", "edge-5"];
    for n in [0, 1, 2, 3, 7, 10, 100, 1000, 3001] {
        for k in 1..=nodes.len() {
            let all = ids(n);
            let m = assign(&refs(&all), &nodes[..k]);
            assert_eq!(m.len(), n, "n={n} k={k}");
            assert!(m.values().all(|o| nodes[..k].contains(o)));
            let c = counts(&m);
            let (lo, hi) = (n / k, n.div_ceil(k));
            for node in &nodes[..k] {
                let got = c.get(node).copied().unwrap_or(0);
                assert!(got == lo || got == hi, "n={n} k={k} {node}: {got}");
            }
        }
    }
}

#[test]
fn the_assignment_does_not_depend_on_the_order_of_the_view() {
    let all = ids(500);
    let mut shuffled = all.clone();
    shuffled.reverse();
    let a = assign(&refs(&all), &["a", "b", "c"]);
    let b = assign(&refs(&shuffled), &["c", "a", "b", "a"]);
    assert_eq!(a, b);
}

fn moved(a: &HashMap<&str, &str>, b: &HashMap<&str, &str>) -> usize {
    a.iter().filter(|(id, o)| b.get(*id) != Some(o)).count()
}

#[test]
fn a_joining_node_takes_about_its_share_and_little_else_moves() {
    let all = ids(3000);
    let before = assign(&refs(&all), &["a", "b", "c"]);
    let after = assign(&refs(&all), &["a", "b", "c", "d"]);
    let taken = after.values().filter(|o| **o == "d").count();
    assert_eq!(taken, 750);
    // The minimum is 750 (d's share); bounded loads move a few more.
    let m = moved(&before, &after);
    assert!(m <= 750 + 3000 / 10, "moved {m}");
}

#[test]
fn a_leaving_nodes_share_spreads_over_the_others_with_little_else_moving() {
    let all = ids(3000);
    let before = assign(&refs(&all), &["a", "b", "c"]);
    let after = assign(&refs(&all), &["a", "b"]);
    let orphaned = before.values().filter(|o| **o == "c").count();
    let m = moved(&before, &after);
    assert!(m >= orphaned);
    assert!(
        m <= orphaned + 3000 / 10,
        "moved {m} of which {orphaned} orphaned"
    );
    let c = counts(&after);
    assert_eq!((c["a"], c["b"]), (1500, 1500));
}

#[test]
fn no_live_node_means_no_owner() {
    let all = ids(3);
    assert!(assign(&refs(&all), &[]).is_empty());
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn held(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
    v.iter().map(|(s, e)| (s.to_string(), *e)).collect()
}

#[test]
fn plan_claims_what_is_assigned_and_not_running() {
    let desired: HashMap<&str, &str> = [("x", "me"), ("y", "me"), ("z", "other")].into();
    let p = plan("me", &desired, &set(&["x"]), &held(&[("x", 3)]));
    assert_eq!(p.claim, vec!["y".to_string()]);
    assert!(p.release.is_empty() && p.lost.is_empty());
}

#[test]
fn plan_releases_what_another_live_node_should_hold_or_what_is_gone() {
    let desired: HashMap<&str, &str> = [("x", "other")].into();
    let p = plan(
        "me",
        &desired,
        &set(&["x", "deleted"]),
        &held(&[("x", 1), ("deleted", 1), ("stale", 2)]),
    );
    assert_eq!(p.release, vec!["deleted", "x", "stale"]);
    assert!(p.claim.is_empty() && p.lost.is_empty());
}

#[test]
fn plan_gives_up_at_once_what_the_database_gave_to_another() {
    let desired: HashMap<&str, &str> = [("x", "me")].into();
    let p = plan("me", &desired, &set(&["x"]), &held(&[]));
    assert_eq!(p.lost, vec!["x"]);
    assert!(p.release.is_empty());
    assert!(p.claim.is_empty(), "reclaimed next tick, with a new epoch");
}

#[test]
fn plan_reclaims_what_it_holds_but_does_not_run() {
    // After a lapse: the database still names us, the drivers are gone.
    let desired: HashMap<&str, &str> = [("x", "me")].into();
    let p = plan("me", &desired, &set(&[]), &held(&[("x", 4)]));
    assert_eq!(p.claim, vec!["x"]);
    assert!(p.release.is_empty() && p.lost.is_empty());
}

#[test]
fn validity_runs_from_the_send_minus_the_margin() {
    let t0 = Instant::now();
    let lease = Duration::from_secs(10);
    let mut v = Validity::new(lease);
    assert!(!v.valid(t0), "nothing renewed yet");
    v.renewed(t0);
    assert!(v.valid(t0 + Duration::from_millis(7_999)));
    assert!(
        !v.valid(t0 + Duration::from_secs(8)),
        "10 s minus 2 s margin"
    );
    // A late answer to an older heartbeat never shortens it.
    v.renewed(t0 + Duration::from_secs(3));
    v.renewed(t0 + Duration::from_secs(1));
    assert!(v.valid(t0 + Duration::from_millis(10_999)));
    assert!(!v.valid(t0 + Duration::from_secs(11)));
    v.reset();
    assert!(!v.valid(t0 + Duration::from_secs(4)));
}

#[test]
fn the_margin_is_a_fifth_and_at_least_half_a_second() {
    assert_eq!(margin(Duration::from_secs(3)), Duration::from_millis(600));
    assert_eq!(margin(Duration::from_secs(2)), Duration::from_millis(500));
    assert_eq!(margin(Duration::from_secs(300)), Duration::from_secs(60));
    // Two ticks fit before the margin for every allowed lease (3..=300).
    for s in 3..=300 {
        let l = Duration::from_secs(s);
        assert!(tick(l) * 2 < l - margin(l), "{s}");
    }
}

#[test]
fn each_epoch_starts_above_every_cseq_of_the_one_before() {
    for e in 1..200u64 {
        let last_of_previous = cseq_base(e - 1) + 65_534;
        assert!(cseq_base(e) > last_of_previous, "{e}");
    }
    assert!(cseq_base(0x7fff) < 1 << 31);
    assert_eq!(cseq_base(3), (3 << 16) | 1);
}
