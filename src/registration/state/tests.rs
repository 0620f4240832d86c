//! Transition table of the registration machine: every edge, no sockets,
//! no clocks.

use super::*;
use crate::sip::digest::{Algorithm, Qop};

fn settings() -> Settings {
    Settings {
        expires: 3600,
        retry: Duration::from_secs(30),
        max_retry: Duration::from_secs(600),
        forbidden_retry: Duration::from_secs(600),
        timer_f: Duration::from_secs(32),
    }
}

fn ch(realm: &str, nonce: &str, stale: bool) -> Challenge {
    Challenge {
        realm: realm.into(),
        nonce: nonce.into(),
        opaque: None,
        algorithm: Algorithm::Md5,
        qop: vec![Qop::Auth],
        stale,
        userhash: false,
    }
}

fn reply(code: u16) -> Reply {
    Reply {
        code,
        challenges: Vec::new(),
        granted: None,
        binding_missing: false,
        min_expires: None,
        retry_after: None,
        source: SocketAddr::from(([127, 0, 0, 2], 5060)),
    }
}

fn challenge(nonce: &str, stale: bool) -> Event {
    Event::Reply(Reply {
        challenges: vec![(AuthKind::Www, ch("pbx.test", nonce, stale))],
        ..reply(401)
    })
}

fn ok(granted: Option<u32>) -> Event {
    Event::Reply(Reply {
        granted,
        ..reply(200)
    })
}

fn sends(actions: &[Action]) -> Vec<&Register> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn only_send(actions: &[Action]) -> &Register {
    let s = sends(actions);
    assert_eq!(s.len(), 1, "expected exactly one Send in {actions:?}");
    s[0]
}

fn armed(actions: &[Action], timer: RegTimer) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::Arm(t, d) if *t == timer => Some(*d),
        _ => None,
    })
}

fn published(actions: &[Action]) -> Option<&Published> {
    actions.iter().find_map(|a| match a {
        Action::Publish(p) => Some(p),
        _ => None,
    })
}

/// Start → 401 → answered → 200 (granted).
fn registered(granted: u32) -> Machine {
    let mut m = Machine::new(settings(), 7);
    m.step(Event::Start);
    m.step(challenge("n1", false));
    let a = m.step(ok(Some(granted)));
    assert_eq!(m.status(), RegStatus::Success, "{a:?}");
    m
}

#[test]
fn start_sends_register_without_credentials() {
    let mut m = Machine::new(settings(), 1);
    assert_eq!(m.status(), RegStatus::NotRegistered);
    let a = m.step(Event::Start);
    let r = only_send(&a);
    assert_eq!(r.expires, 3600);
    assert!(r.answers.is_empty());
    assert!(m.step(Event::Start).is_empty(), "second Start ignored");
}

#[test]
fn challenge_is_answered_once_without_failure() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(challenge("n1", false));
    let r = only_send(&a);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].nc, 1);
    assert_eq!(r.answers[0].kind, AuthKind::Www);
    assert_eq!(r.answers[0].challenge.nonce, "n1");
    assert!(
        published(&a).is_none(),
        "a challenge is not a status change"
    );
    assert_eq!(m.status(), RegStatus::NotRegistered);
}

#[test]
fn ok_publishes_success_and_arms_refresh_and_expiry() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(challenge("n1", false));
    let a = m.step(ok(Some(120)));
    let p = published(&a).unwrap();
    assert_eq!(p.status, RegStatus::Success);
    assert_eq!(p.last_response.as_deref(), Some("200 OK"));
    assert_eq!(
        p.registered_target,
        Some(SocketAddr::from(([127, 0, 0, 2], 5060)))
    );
    assert_eq!(p.expires_in, Some(Duration::from_secs(120)));
    assert_eq!(armed(&a, RegTimer::Expiry), Some(Duration::from_secs(120)));
    let refresh = armed(&a, RegTimer::Refresh).unwrap();
    // 120 s < 4·Timer F: refresh at 40–50 %.
    assert!(
        refresh >= Duration::from_secs(48) && refresh <= Duration::from_secs(60),
        "{refresh:?}"
    );
    assert!(m.is_bound());
}

#[test]
fn ok_without_expiry_uses_requested_and_longer_grant_is_clamped() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(ok(None));
    assert_eq!(armed(&a, RegTimer::Expiry), Some(Duration::from_secs(3600)));
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(ok(Some(90_000)));
    assert_eq!(armed(&a, RegTimer::Expiry), Some(Duration::from_secs(3600)));
}

#[test]
fn refresh_answers_the_cached_challenge_with_next_nc() {
    let mut m = registered(120);
    let a = m.step(Event::Timer(RegTimer::Refresh));
    let r = only_send(&a);
    assert_eq!(r.expires, 3600);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].challenge.nonce, "n1");
    assert_eq!(r.answers[0].nc, 2);
    // The registrar wants a fresh nonce: answered again, not a failure.
    let a = m.step(challenge("n2", false));
    let r = only_send(&a);
    assert_eq!(r.answers[0].challenge.nonce, "n2");
    assert_eq!(r.answers[0].nc, 1);
    assert_eq!(m.status(), RegStatus::Success);
    let a = m.step(ok(Some(120)));
    assert_eq!(published(&a).unwrap().status, RegStatus::Success);
}

#[test]
fn same_nonce_refused_again_is_failed_and_waits_like_a_403() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(challenge("n1", false));
    let a = m.step(challenge("n1", false));
    assert!(sends(&a).is_empty());
    let p = published(&a).unwrap();
    assert_eq!(p.status, RegStatus::Failed);
    assert_eq!(
        p.last_response.as_deref(),
        Some("401 Unauthorized (credentials refused)")
    );
    assert_eq!(armed(&a, RegTimer::Retry), Some(Duration::from_secs(600)));
    // The retry starts from scratch, without the refused credentials.
    let a = m.step(Event::Timer(RegTimer::Retry));
    assert!(only_send(&a).answers.is_empty());
}

#[test]
fn stale_nonce_is_answered_again_without_failure() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(challenge("n1", false));
    let a = m.step(challenge("n1", true));
    let r = only_send(&a);
    assert_eq!(r.answers[0].nc, 2, "same nonce, next nonce count");
    assert!(published(&a).is_none());
    let a = m.step(challenge("n2", true));
    assert_eq!(only_send(&a).answers[0].challenge.nonce, "n2");
    assert_eq!(m.status(), RegStatus::NotRegistered);
}

#[test]
fn a_new_nonce_for_the_realm_just_answered_is_a_refusal() {
    // Kamailio and Asterisk send a fresh nonce with every 401: wrong
    // credentials are tried once per attempt, not until a ban.
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    assert_eq!(sends(&m.step(challenge("n1", false))).len(), 1);
    let a = m.step(challenge("n2", false));
    assert!(sends(&a).is_empty());
    assert_eq!(published(&a).unwrap().status, RegStatus::Failed);
    assert_eq!(armed(&a, RegTimer::Retry), Some(Duration::from_secs(600)));
}

#[test]
fn endless_stale_nonces_fail_after_bounded_rounds_with_backoff() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let mut sent = 0;
    for i in 0..10 {
        let a = m.step(challenge(&format!("n{i}"), true));
        if sends(&a).is_empty() {
            assert_eq!(m.status(), RegStatus::Failed);
            assert_eq!(
                published(&a).unwrap().last_response.as_deref(),
                Some("401 Unauthorized (too many challenges)")
            );
            // Not a refusal of the credentials: the normal backoff.
            let retry = armed(&a, RegTimer::Retry).unwrap().as_secs_f64();
            assert!((22.5..=37.5).contains(&retry), "{retry}");
            break;
        }
        sent += 1;
    }
    assert_eq!(sent, MAX_AUTH_ROUNDS);
}

#[test]
fn proxy_and_registrar_challenges_accumulate() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Reply(Reply {
        challenges: vec![(AuthKind::Proxy, ch("edge", "p1", false))],
        ..reply(407)
    }));
    assert_eq!(only_send(&a).answers.len(), 1);
    let a = m.step(challenge("w1", false));
    let kinds: Vec<_> = only_send(&a).answers.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        vec![AuthKind::Proxy, AuthKind::Www],
        "the 407 answer is kept (§22.3)"
    );
    assert_eq!(
        published(&m.step(ok(Some(600)))).unwrap().status,
        RegStatus::Success
    );
}

#[test]
fn www_and_proxy_challenges_are_both_answered() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Reply(Reply {
        challenges: vec![
            (AuthKind::Proxy, ch("edge", "p1", false)),
            (AuthKind::Www, ch("pbx", "w1", false)),
        ],
        ..reply(407)
    }));
    let r = only_send(&a);
    let kinds: Vec<_> = r.answers.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, vec![AuthKind::Proxy, AuthKind::Www]);
}

#[test]
fn unusable_challenge_is_a_failure() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Reply(reply(401)));
    assert_eq!(published(&a).unwrap().status, RegStatus::Failed);
}

#[test]
fn interval_too_brief_adopts_min_expires_and_never_goes_lower() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Reply(Reply {
        min_expires: Some(7200),
        ..reply(423)
    }));
    assert_eq!(only_send(&a).expires, 7200);
    assert!(published(&a).is_none());
    m.step(ok(Some(7200)));
    let a = m.step(Event::Timer(RegTimer::Refresh));
    assert_eq!(only_send(&a).expires, 7200);
    assert_eq!(m.requested_expires(), 7200);
}

#[test]
fn interval_too_brief_without_a_higher_minimum_is_a_failure() {
    for min in [None, Some(60), Some(3600), Some(1_000_000)] {
        let mut m = Machine::new(settings(), 1);
        m.step(Event::Start);
        let a = m.step(Event::Reply(Reply {
            min_expires: min,
            ..reply(423)
        }));
        assert!(sends(&a).is_empty(), "{min:?}");
        assert_eq!(m.status(), RegStatus::Failed);
    }
}

#[test]
fn timeout_and_transport_error_fail_with_their_responses() {
    for (ev, text) in [
        (Event::Timeout, "408 Request Timeout"),
        (Event::TransportError, "503 Service Unavailable"),
    ] {
        let mut m = Machine::new(settings(), 3);
        m.step(Event::Start);
        let a = m.step(ev);
        let p = published(&a).unwrap();
        assert_eq!(p.status, RegStatus::Failed);
        assert_eq!(p.last_response.as_deref(), Some(text));
        assert!(armed(&a, RegTimer::Retry).is_some());
    }
}

#[test]
fn forbidden_waits_the_forbidden_interval() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Reply(reply(403)));
    assert_eq!(armed(&a, RegTimer::Retry), Some(Duration::from_secs(600)));
    assert_eq!(
        published(&a).unwrap().last_response.as_deref(),
        Some("403 Forbidden")
    );
}

#[test]
fn retry_after_is_honoured() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Reply(Reply {
        retry_after: Some(120),
        ..reply(503)
    }));
    assert_eq!(armed(&a, RegTimer::Retry), Some(Duration::from_secs(120)));
}

#[test]
fn backoff_doubles_to_the_cap_and_resets_after_success() {
    let mut m = Machine::new(settings(), 11);
    m.step(Event::Start);
    let mut bases = Vec::new();
    for _ in 0..8 {
        let a = m.step(Event::Timeout);
        bases.push(armed(&a, RegTimer::Retry).unwrap().as_secs_f64());
        m.step(Event::Timer(RegTimer::Retry));
    }
    let expect = [30.0, 60.0, 120.0, 240.0, 480.0, 600.0, 600.0, 600.0];
    for (got, base) in bases.iter().zip(expect) {
        assert!(
            *got >= base * 0.75 && *got <= (base * 1.25).min(600.0),
            "{bases:?}"
        );
    }
    m.step(ok(Some(3600)));
    m.step(Event::Timer(RegTimer::Refresh));
    let a = m.step(Event::Timeout);
    let d = armed(&a, RegTimer::Retry).unwrap().as_secs_f64();
    assert!((22.5..=37.5).contains(&d), "reset after success: {d}");
}

#[test]
fn refresh_timeout_keeps_success_until_the_binding_expires() {
    let mut m = registered(120);
    m.step(Event::Timer(RegTimer::Refresh));
    let a = m.step(Event::Timeout);
    let p = published(&a).unwrap();
    assert_eq!(p.status, RegStatus::Success);
    assert_eq!(p.last_response.as_deref(), Some("408 Request Timeout"));
    let a = m.step(Event::Timer(RegTimer::Expiry));
    assert_eq!(published(&a).unwrap().status, RegStatus::Expired);
    assert!(!m.is_bound());
    // Still retrying, and a success brings it back.
    let a = m.step(Event::Timer(RegTimer::Retry));
    assert_eq!(only_send(&a).expires, 3600);
    m.step(ok(Some(120)));
    assert_eq!(m.status(), RegStatus::Success);
}

#[test]
fn refresh_refused_is_failed_at_once() {
    let mut m = registered(120);
    m.step(Event::Timer(RegTimer::Refresh));
    let a = m.step(Event::Reply(reply(404)));
    assert_eq!(published(&a).unwrap().status, RegStatus::Failed);
    // The expiry of the old binding does not turn Failed into Expired.
    assert!(m.step(Event::Timer(RegTimer::Expiry)).is_empty());
    assert_eq!(m.status(), RegStatus::Failed);
}

#[test]
fn ok_without_our_binding_or_with_zero_expiry_is_failed() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Reply(Reply {
        binding_missing: true,
        ..reply(200)
    }));
    let p = published(&a).unwrap();
    assert_eq!(p.status, RegStatus::Failed);
    assert_eq!(p.last_response.as_deref(), Some("200 OK (binding missing)"));

    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(ok(Some(0)));
    assert_eq!(published(&a).unwrap().status, RegStatus::Failed);
}

#[test]
fn flow_closed_while_registered_registers_again_at_once() {
    let mut m = registered(3600);
    let a = m.step(Event::Rebind);
    assert!(a.contains(&Action::Disarm(RegTimer::Refresh)));
    assert_eq!(only_send(&a).expires, 3600);
    // Not bound: nothing to do until the retry timer.
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(Event::Timeout);
    assert!(m.step(Event::Rebind).is_empty());
}

#[test]
fn stop_unregisters_a_bound_registration_answering_its_challenge() {
    let mut m = registered(3600);
    let a = m.step(Event::Stop);
    let r = only_send(&a);
    assert_eq!(r.expires, 0);
    assert_eq!(
        r.answers.len(),
        1,
        "pre-emptive answer with the cached nonce"
    );
    let a = m.step(challenge("n9", false));
    assert_eq!(only_send(&a).expires, 0);
    let a = m.step(ok(None));
    assert_eq!(published(&a).unwrap().status, RegStatus::Unregistered);
    assert_eq!(a.last(), Some(&Action::Finished));
    assert!(m.is_done());
    assert!(m.step(Event::Timer(RegTimer::Refresh)).is_empty());
}

#[test]
fn stop_without_binding_finishes_at_once() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(Event::Timeout);
    let a = m.step(Event::Stop);
    assert!(sends(&a).is_empty());
    assert_eq!(a.last(), Some(&Action::Finished));
    let mut m = Machine::new(settings(), 1);
    assert_eq!(m.step(Event::Stop).last(), Some(&Action::Finished));
}

#[test]
fn stop_during_registration_removes_the_binding_it_creates() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    assert!(m.step(Event::Stop).is_empty());
    let a = m.step(ok(Some(3600)));
    assert_eq!(only_send(&a).expires, 0);
    let a = m.step(ok(None));
    assert_eq!(a.last(), Some(&Action::Finished));
}

#[test]
fn stop_during_registration_that_fails_finishes() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(Event::Stop);
    let a = m.step(Event::Timeout);
    assert_eq!(a.last(), Some(&Action::Finished));
}

#[test]
fn unregister_that_times_out_or_is_refused_still_finishes() {
    for ev in [
        Event::Timeout,
        Event::TransportError,
        Event::Reply(reply(500)),
    ] {
        let mut m = registered(3600);
        m.step(Event::Stop);
        let a = m.step(ev);
        assert_eq!(a.last(), Some(&Action::Finished));
        assert!(m.is_done());
    }
}

#[test]
fn unregister_challenged_with_the_same_nonce_finishes() {
    let mut m = registered(3600);
    m.step(Event::Stop);
    let a = m.step(challenge("n1", false));
    assert_eq!(a.last(), Some(&Action::Finished));
}

#[test]
fn events_out_of_phase_are_ignored() {
    let mut m = registered(3600);
    assert!(m.step(ok(Some(10))).is_empty(), "stray 200 while waiting");
    assert!(m.step(Event::Timeout).is_empty());
    let mut m = Machine::new(settings(), 1);
    assert!(
        m.step(Event::Timer(RegTimer::Refresh)).is_empty(),
        "not started"
    );
    assert!(m.step(Event::Reply(reply(200))).is_empty());
}

#[test]
fn provisional_replies_change_nothing() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    assert!(m.step(Event::Reply(reply(100))).is_empty());
    assert!(!m.step(ok(Some(60))).is_empty());
}

#[test]
fn refresh_delay_leaves_room_for_timer_f_and_spreads() {
    let f = Duration::from_secs(32);
    for granted in [60u32, 64, 100, 128, 300, 3600, 86_400] {
        for r in [0.0, 0.25, 0.5, 0.999] {
            let d = refresh_delay(granted, f, r).as_secs_f64();
            assert!(d >= 1.0 && d < f64::from(granted), "{granted} {r} {d}");
            if granted >= 64 {
                assert!(
                    f64::from(granted) - d >= 32.0,
                    "room for Timer F: {granted} {d}"
                );
            }
        }
    }
    for granted in [128u32, 300, 3600] {
        let d = refresh_delay(granted, f, 0.0).as_secs_f64();
        assert!(
            f64::from(granted) - d >= 64.0,
            "room for a refresh and its retry: {granted} {d}"
        );
    }
    let lo = refresh_delay(3600, f, 0.999).as_secs_f64();
    let hi = refresh_delay(3600, f, 0.0).as_secs_f64();
    assert!(hi - lo > 300.0, "jitter spreads long refreshes: {lo}..{hi}");
    assert_eq!(refresh_delay(1, f, 0.0), Duration::from_secs(1));
    let short = refresh_delay(10, f, 0.5).as_secs_f64();
    assert!((4.0..=5.0).contains(&short), "{short}");
}

#[test]
fn jitter_differs_between_connections() {
    let delays: Vec<_> = (0..20u64)
        .map(|seed| {
            let mut m = Machine::new(settings(), seed);
            m.step(Event::Start);
            armed(&m.step(ok(Some(3600))), RegTimer::Refresh).unwrap()
        })
        .collect();
    let mut unique = delays.clone();
    unique.sort();
    unique.dedup();
    assert!(unique.len() > 15, "{delays:?}");
}

#[test]
fn status_codes_and_names_follow_seed_004() {
    let codes: Vec<_> = RegStatus::ALL.iter().map(|s| s.code()).collect();
    assert_eq!(codes, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(RegStatus::Expired.name(), "Expired");
    assert_eq!(RegStatus::NotApplicable.label(), "not_applicable");
}

#[test]
fn failover_resends_at_once_with_same_expires_and_no_status_change() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Failover);
    let r = only_send(&a);
    assert_eq!(r.expires, 3600);
    assert!(published(&a).is_none(), "a failover is not a failure");
    assert_eq!(m.status(), RegStatus::NotRegistered);
    // The next target answers normally.
    let a = m.step(ok(Some(600)));
    assert_eq!(published(&a).unwrap().status, RegStatus::Success);
}

#[test]
fn failover_target_may_challenge_for_a_realm_already_answered() {
    // Target 1 challenged and then timed out on the answer; target 2 has its
    // own nonce for the same realm: that is not a refusal.
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(challenge("n1", false));
    m.step(Event::Failover);
    let a = m.step(challenge("n2", false));
    let r = only_send(&a);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].challenge.nonce, "n2");
    assert_eq!(m.status(), RegStatus::NotRegistered);
    // A second refusal from that same target is still a failure.
    let a = m.step(challenge("n3", false));
    assert!(sends(&a).is_empty());
    assert_eq!(m.status(), RegStatus::Failed);
}

#[test]
fn failover_keeps_the_unregister_bounded() {
    let mut m = registered(600);
    m.step(Event::Stop);
    let a = m.step(Event::Failover);
    assert!(a.contains(&Action::Finished));
    assert!(m.is_done());
}

#[test]
fn failover_outside_a_transaction_is_ignored() {
    let mut m = registered(600);
    assert!(m.step(Event::Failover).is_empty());
    let mut idle = Machine::new(settings(), 1);
    assert!(idle.step(Event::Failover).is_empty());
}

#[test]
fn unresolvable_is_a_soft_failure_with_the_reason() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    let a = m.step(Event::Unresolvable("pbx.test: no SIP server found".into()));
    let p = published(&a).unwrap();
    assert_eq!(p.status, RegStatus::Failed);
    assert_eq!(
        p.last_response.as_deref(),
        Some("503 Service Unavailable (pbx.test: no SIP server found)")
    );
    assert!(armed(&a, RegTimer::Retry).is_some());
    // A live binding survives a DNS outage until it expires.
    let mut b = registered(600);
    b.step(Event::Timer(RegTimer::Refresh));
    b.step(Event::Unresolvable("down".into()));
    assert_eq!(b.status(), RegStatus::Success);
}

// === refused credentials wait like a 403 ===

/// Where the machine answered a fresh challenge for realm "pbx.test" (of
/// `kind`) with nonce `nonce`, and the registrar now answers again.
#[derive(Debug, Clone, Copy)]
enum Context {
    /// The first attempt: Start, challenge, answer.
    First,
    /// A refresh whose cached answer drew a new challenge, answered.
    Refresh,
    /// A failover target's own challenge, answered.
    Failover,
}

fn challenge_of(kind: AuthKind, nonce: &str, stale: bool) -> Event {
    let code = match kind {
        AuthKind::Www => 401,
        AuthKind::Proxy => 407,
    };
    Event::Reply(Reply {
        challenges: vec![(kind, ch("pbx.test", nonce, stale))],
        ..reply(code)
    })
}

/// The machine in `ctx`, and the nonce it answered last.
fn answered(ctx: Context, kind: AuthKind) -> (Machine, &'static str) {
    let mut m = Machine::new(settings(), 5);
    m.step(Event::Start);
    only_send(&m.step(challenge_of(kind, "n1", false)));
    match ctx {
        Context::First => (m, "n1"),
        Context::Refresh => {
            m.step(ok(Some(600)));
            assert_eq!(
                only_send(&m.step(Event::Timer(RegTimer::Refresh)))
                    .answers
                    .len(),
                1
            );
            only_send(&m.step(challenge_of(kind, "n2", false)));
            (m, "n2")
        }
        Context::Failover => {
            only_send(&m.step(Event::Failover));
            only_send(&m.step(challenge_of(kind, "n2", false)));
            (m, "n2")
        }
    }
}

#[test]
fn a_challenge_after_our_answer_is_a_refusal_unless_stale() {
    for kind in [AuthKind::Www, AuthKind::Proxy] {
        for ctx in [Context::First, Context::Refresh, Context::Failover] {
            for same_nonce in [true, false] {
                for stale in [false, true] {
                    let case = format!("{kind:?} {ctx:?} same_nonce={same_nonce} stale={stale}");
                    let (mut m, last) = answered(ctx, kind);
                    let nonce = if same_nonce { last } else { "n9" };
                    let before = m.status();
                    let a = m.step(challenge_of(kind, nonce, stale));
                    if stale {
                        // RFC 7616 §3.3: only the nonce was old; answer at once.
                        let r = only_send(&a);
                        assert_eq!(r.answers.len(), 1, "{case}");
                        assert_eq!(r.answers[0].challenge.nonce, nonce, "{case}");
                        assert!(published(&a).is_none(), "{case}: {a:?}");
                        assert_eq!(armed(&a, RegTimer::Retry), None, "{case}");
                        assert_eq!(m.status(), before, "{case}");
                    } else {
                        let text = match kind {
                            AuthKind::Www => "401 Unauthorized (credentials refused)",
                            AuthKind::Proxy => {
                                "407 Proxy Authentication Required (credentials refused)"
                            }
                        };
                        assert!(sends(&a).is_empty(), "{case}: {a:?}");
                        let p = published(&a).unwrap();
                        assert_eq!(p.status, RegStatus::Failed, "{case}");
                        assert_eq!(p.last_response.as_deref(), Some(text), "{case}");
                        assert_eq!(
                            armed(&a, RegTimer::Retry),
                            Some(Duration::from_secs(600)),
                            "{case}"
                        );
                        assert!(a.contains(&Action::Disarm(RegTimer::Refresh)), "{case}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_cached_answer_refused_for_its_own_nonce_is_a_refusal() {
    // A new nonce for a cached answer is the registrar's way of asking
    // again (answered); the same nonce, not stale, refuses the answer.
    for (nonce, stale, refusal) in [
        ("n2", false, false),
        ("n2", true, false),
        ("n1", true, false),
        ("n1", false, true),
    ] {
        let mut m = registered(600);
        m.step(Event::Timer(RegTimer::Refresh));
        let a = m.step(challenge(nonce, stale));
        assert_eq!(
            sends(&a).is_empty(),
            refusal,
            "{nonce} stale={stale}: {a:?}"
        );
        let retry = armed(&a, RegTimer::Retry);
        assert_eq!(
            retry,
            refusal.then_some(Duration::from_secs(600)),
            "{nonce} stale={stale}"
        );
    }
}

#[test]
fn a_refusal_among_several_challenges_is_a_refusal() {
    let mut m = Machine::new(settings(), 1);
    m.step(Event::Start);
    m.step(Event::Reply(Reply {
        challenges: vec![
            (AuthKind::Proxy, ch("edge", "p1", false)),
            (AuthKind::Www, ch("pbx", "w1", false)),
        ],
        ..reply(407)
    }));
    // The proxy only wants a fresh nonce; the registrar refuses.
    let a = m.step(Event::Reply(Reply {
        challenges: vec![
            (AuthKind::Proxy, ch("edge", "p2", true)),
            (AuthKind::Www, ch("pbx", "w2", false)),
        ],
        ..reply(401)
    }));
    assert!(sends(&a).is_empty());
    assert_eq!(armed(&a, RegTimer::Retry), Some(Duration::from_secs(600)));
}

#[test]
fn the_refusal_wait_is_the_configured_forbidden_interval_whatever_retry_after_says() {
    // A year is far past what a millisecond u32 would hold: kept exactly.
    for (forbidden, retry_after) in [
        (900, None),
        (120, Some(30)),
        (600, Some(3600)),
        (31_536_000, None),
    ] {
        let mut m = Machine::new(
            Settings {
                forbidden_retry: Duration::from_secs(forbidden),
                ..settings()
            },
            1,
        );
        m.step(Event::Start);
        m.step(challenge("n1", false));
        let a = m.step(Event::Reply(Reply {
            challenges: vec![(AuthKind::Www, ch("pbx.test", "n2", false))],
            retry_after,
            ..reply(401)
        }));
        assert_eq!(
            armed(&a, RegTimer::Retry),
            Some(Duration::from_secs(forbidden)),
            "{forbidden} {retry_after:?}"
        );
    }
}

#[test]
fn wrong_credentials_are_tried_once_per_forbidden_interval() {
    // A registrar that refuses every answer (new nonce each time, as
    // Kamailio and Asterisk do) for two hours of machine time: one refused
    // answer per 600 s, where fail2ban bans 5 in 10 minutes.
    let mut m = Machine::new(settings(), 9);
    let mut now = Duration::ZERO;
    let mut refused_at = Vec::new();
    let mut nonce = 0;
    let mut a = m.step(Event::Start);
    while now < Duration::from_secs(7200) {
        let answered = !only_send(&a).answers.is_empty();
        nonce += 1;
        a = m.step(challenge(&format!("n{nonce}"), false));
        if answered {
            // That answer was refused.
            refused_at.push(now);
            assert!(sends(&a).is_empty(), "{a:?}");
            let wait = armed(&a, RegTimer::Retry).expect("retry armed");
            assert_eq!(wait, Duration::from_secs(600));
            assert_eq!(m.status(), RegStatus::Failed);
            now += wait;
            a = m.step(Event::Timer(RegTimer::Retry));
        }
    }
    assert_eq!(refused_at.len(), 12, "{refused_at:?}");
    for w in refused_at.windows(2) {
        assert!(w[1] - w[0] >= Duration::from_secs(600), "{refused_at:?}");
    }
}

#[test]
fn after_the_refusal_wait_good_credentials_register_and_backoff_starts_over() {
    let mut m = Machine::new(settings(), 3);
    m.step(Event::Start);
    m.step(challenge("n1", false));
    m.step(challenge("n2", false));
    assert_eq!(m.status(), RegStatus::Failed);
    // The PBX's password was fixed meanwhile.
    let a = m.step(Event::Timer(RegTimer::Retry));
    assert!(only_send(&a).answers.is_empty());
    only_send(&m.step(challenge("n3", false)));
    assert_eq!(
        published(&m.step(ok(Some(600)))).unwrap().status,
        RegStatus::Success
    );
    m.step(Event::Timer(RegTimer::Refresh));
    let d = armed(&m.step(Event::Timeout), RegTimer::Retry)
        .unwrap()
        .as_secs_f64();
    assert!((22.5..=37.5).contains(&d), "backoff from the start: {d}");
}

#[test]
fn a_refused_refresh_is_failed_at_once_and_waits_like_a_403() {
    let mut m = registered(600);
    m.step(Event::Timer(RegTimer::Refresh));
    only_send(&m.step(challenge("n2", false)));
    let a = m.step(challenge("n3", false));
    let p = published(&a).unwrap();
    assert_eq!(p.status, RegStatus::Failed, "the registrar refused us");
    assert_eq!(armed(&a, RegTimer::Retry), Some(Duration::from_secs(600)));
    assert!(a.contains(&Action::Disarm(RegTimer::Refresh)));
}
