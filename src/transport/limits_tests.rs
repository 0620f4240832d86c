use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use tokio::time::Instant;

use super::*;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

const S: fn(u64) -> Duration = Duration::from_secs;

fn timeouts() -> Timeouts {
    Timeouts {
        idle: S(120),
        message: S(10),
        keepalive: S(30),
        pong: PONG_TIMEOUT,
    }
}

fn bytes(mid_message: bool) -> Received {
    Received {
        frames: 0,
        pongs: 0,
        mid_message,
    }
}

#[test]
fn admission_caps_each_source_then_the_total() {
    let mut a = Admission::new(5, 2);
    assert_eq!(a.admit(v4(1)), Ok(()));
    assert_eq!(a.admit(v4(1)), Ok(()));
    assert_eq!(a.admit(v4(1)), Err(Refusal::PerIp));
    assert_eq!(a.admit(v4(2)), Ok(()));
    assert_eq!(a.admit(v4(2)), Ok(()));
    assert_eq!(a.admit(v4(3)), Ok(()));
    assert_eq!(a.total(), 5);
    // The total is checked first: a new source is refused too.
    assert_eq!(a.admit(v4(4)), Err(Refusal::Total));
    assert_eq!(a.from_source(v4(1)), 2);
    assert_eq!(a.from_source(v4(4)), 0);
}

#[test]
fn released_slots_are_reused_and_empty_sources_forgotten() {
    let mut a = Admission::new(2, 1);
    a.admit(v4(1)).unwrap();
    a.admit(v4(2)).unwrap();
    a.release(v4(1));
    assert_eq!(a.total(), 1);
    assert_eq!(a.sources(), 1);
    assert_eq!(a.admit(v4(1)), Ok(()));
    // A release for a source with nothing counted changes nothing.
    a.release(v4(9));
    assert_eq!(a.total(), 2);
    a.release(v4(1));
    a.release(v4(2));
    assert_eq!((a.total(), a.sources()), (0, 0));
}

#[test]
fn ipv6_sources_count_per_64_and_mapped_ipv4_as_ipv4() {
    let mut a = Admission::new(100, 2);
    let host = |iid: u64| {
        IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_0000_0001u128 << 64) | iid as u128,
        ))
    };
    a.admit(host(1)).unwrap();
    a.admit(host(2)).unwrap();
    assert_eq!(a.admit(host(3)), Err(Refusal::PerIp), "same /64");
    let other = IpAddr::V6(Ipv6Addr::from((0x2001_0db8_0000_0002u128 << 64) | 1));
    assert_eq!(a.admit(other), Ok(()));
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped());
    a.admit(mapped).unwrap();
    assert_eq!(a.from_source(v4(7)), 1);
    // Keys of IPv4 addresses and of the all-zero /64 do not collide.
    assert_ne!(
        SourceKey::of(v4(0)),
        SourceKey::of(IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    );
}

#[test]
fn inbound_flow_idle_for_the_idle_time_is_checked_then_closed_or_kept() {
    let t0 = Instant::now();
    let mut c = FlowClock::new(Role::Inbound, timeouts(), t0);
    assert_eq!(c.deadline(), t0 + S(120));
    assert_eq!(c.due(t0 + S(119)), Due::Nothing);
    assert_eq!(c.due(t0 + S(120)), Due::IdleCheck);
    // A registration uses it: another full idle period.
    c.in_use(t0 + S(120));
    assert_eq!(c.deadline(), t0 + S(240));
    // Bytes move the idle deadline too.
    c.received(t0 + S(200), bytes(false));
    assert_eq!(c.deadline(), t0 + S(320));
    assert_eq!(c.due(t0 + S(319)), Due::Nothing);
}

#[test]
fn inbound_flows_are_never_pinged() {
    let t0 = Instant::now();
    let c = FlowClock::new(Role::Inbound, timeouts(), t0);
    for s in [30, 60, 119] {
        assert_eq!(c.due(t0 + S(s)), Due::Nothing);
    }
}

#[test]
fn a_message_begun_must_be_complete_within_the_message_timeout() {
    let t0 = Instant::now();
    let mut c = FlowClock::new(Role::Inbound, timeouts(), t0);
    c.received(t0 + S(1), bytes(true));
    assert_eq!(c.deadline(), t0 + S(11));
    // Trickling more of the same message does not move the deadline.
    c.received(t0 + S(5), bytes(true));
    c.received(t0 + S(9), bytes(true));
    assert_eq!(c.deadline(), t0 + S(11));
    assert_eq!(c.due(t0 + S(10)), Due::Nothing);
    assert_eq!(c.due(t0 + S(11)), Due::Close(CloseReason::MessageTimeout));
}

#[test]
fn a_completed_message_stops_the_clock_and_the_next_one_starts_its_own() {
    let t0 = Instant::now();
    let mut c = FlowClock::new(Role::Inbound, timeouts(), t0);
    c.received(t0 + S(1), bytes(true));
    // The message completes and the next begins in the same read.
    c.received(
        t0 + S(8),
        Received {
            frames: 1,
            pongs: 0,
            mid_message: true,
        },
    );
    assert_eq!(c.deadline(), t0 + S(18));
    c.received(
        t0 + S(9),
        Received {
            frames: 1,
            pongs: 0,
            mid_message: false,
        },
    );
    assert_eq!(c.deadline(), t0 + S(129), "back to the idle deadline");
}

#[test]
fn outbound_flow_is_pinged_when_idle_and_a_peer_that_never_pongs_is_kept() {
    let t0 = Instant::now();
    let mut c = FlowClock::new(Role::Outbound, timeouts(), t0);
    assert_eq!(c.due(t0 + S(29)), Due::Nothing);
    assert_eq!(c.due(t0 + S(30)), Due::Ping);
    c.pinged(t0 + S(30));
    // No pong ever seen on this flow: silence is not failure, ping again.
    assert_eq!(c.deadline(), t0 + S(60));
    assert_eq!(c.due(t0 + S(45)), Due::Nothing);
    assert_eq!(c.due(t0 + S(60)), Due::Ping);
    // Outbound flows are never closed for idleness.
    assert_eq!(c.due(t0 + S(1000)), Due::Ping);
}

#[test]
fn rfc5626_4_4_1_missing_pong_within_10s_fails_a_flow_that_answers_pings() {
    let t0 = Instant::now();
    let mut c = FlowClock::new(Role::Outbound, timeouts(), t0);
    c.pinged(t0 + S(30));
    let pong = Received {
        frames: 1,
        pongs: 1,
        mid_message: false,
    };
    c.received(t0 + S(30), pong);
    assert_eq!(c.deadline(), t0 + S(60));
    c.pinged(t0 + S(60));
    assert_eq!(c.deadline(), t0 + S(70));
    assert_eq!(c.due(t0 + S(69)), Due::Nothing);
    assert_eq!(c.due(t0 + S(70)), Due::Close(CloseReason::PongTimeout));
}

#[test]
fn any_bytes_after_a_ping_show_the_flow_alive() {
    let t0 = Instant::now();
    let mut c = FlowClock::new(Role::Outbound, timeouts(), t0);
    c.pinged(t0 + S(30));
    c.received(
        t0 + S(31),
        Received {
            frames: 1,
            pongs: 1,
            mid_message: false,
        },
    );
    c.pinged(t0 + S(61));
    // A request from the registrar instead of the pong.
    c.received(
        t0 + S(65),
        Received {
            frames: 1,
            pongs: 0,
            mid_message: false,
        },
    );
    assert_eq!(c.due(t0 + S(71)), Due::Nothing);
    assert_eq!(c.deadline(), t0 + S(95));
}

#[test]
fn message_timeout_applies_to_outbound_flows_too() {
    let t0 = Instant::now();
    let mut c = FlowClock::new(Role::Outbound, timeouts(), t0);
    c.received(t0 + S(25), bytes(true));
    assert_eq!(c.deadline(), t0 + S(35));
    assert_eq!(c.due(t0 + S(35)), Due::Close(CloseReason::MessageTimeout));
}

#[test]
fn labels_are_distinct_and_exported() {
    let labels = [
        Refusal::Total.label(),
        Refusal::PerIp.label(),
        CloseReason::Idle.label(),
        CloseReason::MessageTimeout.label(),
        CloseReason::PongTimeout.label(),
    ];
    let set: std::collections::HashSet<_> = labels.iter().collect();
    assert_eq!(set.len(), labels.len());
    for l in labels {
        assert!(
            crate::metrics::FLOW_CLOSE_REASONS.contains(&l),
            "{l} is exported at 0 with the others"
        );
    }
}

#[test]
fn restarts_are_immediate_then_back_off_while_the_loop_keeps_dying() {
    let quick = Duration::from_millis(1);
    let d1 = restart_delay(None, quick);
    assert_eq!(d1, Duration::ZERO);
    let d2 = restart_delay(Some(d1), quick);
    assert_eq!(d2, Duration::from_millis(100));
    let mut d = d2;
    for _ in 0..20 {
        d = restart_delay(Some(d), quick);
    }
    assert_eq!(d, Duration::from_secs(5));
    // A loop that ran a minute is restarted at once again.
    assert_eq!(restart_delay(Some(d), S(60)), Duration::ZERO);
}
