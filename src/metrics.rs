//! Every Prometheus metric uacd exports, in one place (design.md Part 2):
//! names, help texts, histogram buckets, and the small functions the rest
//! of the code calls. Without an installed recorder (tests, `check-config`)
//! every call is a no-op.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub const BUILD_INFO: &str = "uacd_build_info";
pub const REGISTRATIONS: &str = "uacd_registrations";
pub const REGISTER_REQUESTS: &str = "uacd_register_requests_total";
pub const REGISTER_DURATION: &str = "uacd_register_duration_seconds";
pub const CALLS: &str = "uacd_calls_total";
pub const CALL_SETUP: &str = "uacd_call_setup_seconds";
pub const FAILOVERS: &str = "uacd_failovers_total";
pub const DIALOGS_ACTIVE: &str = "uacd_dialogs_active";
pub const SIP_MESSAGES: &str = "uacd_sip_messages_total";
pub const TRANSPORT_ERRORS: &str = "uacd_transport_errors_total";
pub const FLOWS_CLOSED: &str = "uacd_transport_flows_closed_total";
pub const LOG_SUPPRESSED: &str = "uacd_log_lines_suppressed_total";
pub const CLUSTER_NODES: &str = "uacd_cluster_nodes";
pub const CONNECTIONS_OWNED: &str = "uacd_connections_owned";
pub const TAKEOVERS: &str = "uacd_takeovers_total";

/// Every `kind` of `uacd_log_lines_suppressed_total` (the network-caused
/// log lines that are rate-limited).
pub const LOG_KINDS: [&str; 5] = [
    "malformed",
    "unframeable",
    "flow_refused",
    "in_dialog_refused",
    "receive_overload",
];

/// Every `reason` of `uacd_transport_flows_closed_total`: refused at accept
/// by a limit, or closed by a deadline.
pub const FLOW_CLOSE_REASONS: [&str; 6] = [
    "inbound_flows",
    "inbound_flows_per_ip",
    "tls_handshakes",
    "header_timeout",
    "idle",
    "pong_timeout",
];

/// Every metric name with its Prometheus type, as served.
pub const ALL: [(&str, &str); 15] = [
    (BUILD_INFO, "gauge"),
    (REGISTRATIONS, "gauge"),
    (REGISTER_REQUESTS, "counter"),
    (REGISTER_DURATION, "histogram"),
    (CALLS, "counter"),
    (CALL_SETUP, "histogram"),
    (FAILOVERS, "counter"),
    (DIALOGS_ACTIVE, "gauge"),
    (SIP_MESSAGES, "counter"),
    (TRANSPORT_ERRORS, "counter"),
    (FLOWS_CLOSED, "counter"),
    (LOG_SUPPRESSED, "counter"),
    (CLUSTER_NODES, "gauge"),
    (CONNECTIONS_OWNED, "gauge"),
    (TAKEOVERS, "counter"),
];

/// Latency buckets (seconds): a LAN round trip up to a Timer F timeout for
/// REGISTER; up to a long ring for call setup.
const REGISTER_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 32.0,
];
const SETUP_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// The installed recorder's handle, for `/metrics` (None in tests and
/// `check-config`: nothing is recorded then).
static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();

/// The Prometheus text exposition of every metric, after `before` has set
/// the gauges computed at scrape time. None when no recorder is installed.
pub fn render(before: impl FnOnce()) -> Option<String> {
    let handle = HANDLE.get()?;
    before();
    Some(handle.render())
}

/// Runs the exporter's upkeep (histogram bucket maintenance) every 5 s.
pub async fn upkeep() {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Some(h) = HANDLE.get() {
            h.run_upkeep();
        }
    }
}

/// The values of the labels whose series are exported at 0 from the start
/// (the enums they come from live above this module).
pub struct Labels<'a> {
    /// Every `status` of `uacd_registrations`.
    pub registration_statuses: &'a [&'static str],
    /// Every `transport` of `uacd_transport_errors_total`.
    pub transports: &'a [&'static str],
}

/// Installs the global Prometheus recorder (once, in `main`); spawn
/// [`upkeep`] on the runtime afterwards.
pub fn install(labels: &Labels<'_>) -> Result<(), BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(REGISTER_DURATION.into()), &REGISTER_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(CALL_SETUP.into()), &SETUP_BUCKETS)?
        .install_recorder()?;
    describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for status in labels.registration_statuses {
        gauge!(REGISTRATIONS, "status" => *status).set(0.0);
    }
    gauge!(DIALOGS_ACTIVE).set(0.0);
    counter!(FAILOVERS).absolute(0);
    for t in labels.transports {
        counter!(TRANSPORT_ERRORS, "transport" => *t).absolute(0);
    }
    for r in FLOW_CLOSE_REASONS {
        counter!(FLOWS_CLOSED, "reason" => r).absolute(0);
    }
    for k in LOG_KINDS {
        counter!(LOG_SUPPRESSED, "kind" => k).absolute(0);
    }
    // Cluster mode sets these; a single node exports them at 0.
    gauge!(CLUSTER_NODES, "state" => "alive").set(0.0);
    gauge!(CONNECTIONS_OWNED).set(0.0);
    counter!(TAKEOVERS).absolute(0);
    let _ = HANDLE.set(handle);
    let hot = HOT.get_or_init(Hot::new);
    // Every labelled counter exists from the start, at 0 for each label
    // value it knows: a rate() or an alert on a series that has not
    // happened yet then sees 0, not nothing.
    for series in [
        &hot.sip_in,
        &hot.sip_out,
        &hot.register,
        &hot.calls_inbound,
        &hot.calls_outbound,
    ] {
        series.zero();
    }
    Ok(())
}

/// Handles of the series touched per message, per REGISTER and per call,
/// looked up once: the macros hash the name and labels and search the
/// registry on every call, a cost per message. Set
/// by [`install`] only, so no handle is ever taken before the recorder
/// exists.
static HOT: OnceLock<Hot> = OnceLock::new();

struct Hot {
    sip_in: Series,
    sip_out: Series,
    register: Series,
    /// `uacd_calls_total{direction="inbound"}`: PBX → destination.
    calls_inbound: Series,
    /// `uacd_calls_total{direction="outbound"}`: internal side → PBX.
    calls_outbound: Series,
    register_duration: Histogram,
    call_setup: Histogram,
    failovers: Counter,
    dialogs_active: Gauge,
}

impl Hot {
    fn new() -> Hot {
        let codes = || {
            CODES
                .iter()
                .map(|(_, l)| *l)
                .chain(KINDS[..FIRST_METHOD].iter().copied())
        };
        Hot {
            sip_in: Series::new(
                KINDS.to_vec(),
                |k| counter!(SIP_MESSAGES, "direction" => "in", "kind" => k),
            ),
            sip_out: Series::new(
                KINDS.to_vec(),
                |k| counter!(SIP_MESSAGES, "direction" => "out", "kind" => k),
            ),
            register: Series::new(
                codes().chain(["timeout", "transport_error"]).collect(),
                |l| counter!(REGISTER_REQUESTS, "response" => l),
            ),
            calls_inbound: Series::new(
                call_results(codes()),
                |l| counter!(CALLS, "direction" => "inbound", "result" => l),
            ),
            calls_outbound: Series::new(
                call_results(codes()),
                |l| counter!(CALLS, "direction" => "outbound", "result" => l),
            ),
            register_duration: histogram!(REGISTER_DURATION),
            call_setup: histogram!(CALL_SETUP),
            failovers: counter!(FAILOVERS),
            dialogs_active: gauge!(DIALOGS_ACTIVE),
        }
    }
}

/// One counter per value of a label from a fixed list, each taken from
/// the registry on first use (an unlisted value goes to the registry).
struct Series {
    values: Box<[&'static str]>,
    make: fn(&'static str) -> Counter,
    handles: Box<[OnceLock<Counter>]>,
}

impl Series {
    fn new(values: Vec<&'static str>, make: fn(&'static str) -> Counter) -> Series {
        let handles = values.iter().map(|_| OnceLock::new()).collect();
        Series {
            values: values.into_boxed_slice(),
            make,
            handles,
        }
    }

    fn increment(&self, value: &'static str) {
        match self.values.iter().position(|v| *v == value) {
            Some(i) => self.increment_at(i),
            None => (self.make)(value).increment(1),
        }
    }

    /// Registers the counter of every listed value (at 0).
    fn zero(&self) {
        for i in 0..self.values.len() {
            self.handles[i]
                .get_or_init(|| (self.make)(self.values[i]))
                .increment(0);
        }
    }

    /// The counter of `values[i]`.
    fn increment_at(&self, i: usize) {
        self.handles[i]
            .get_or_init(|| (self.make)(self.values[i]))
            .increment(1);
    }
}

fn describe() {
    describe_gauge!(BUILD_INFO, "uacd version (always 1)");
    describe_gauge!(REGISTRATIONS, "connections per registration status");
    describe_counter!(
        REGISTER_REQUESTS,
        "REGISTER transactions by final response code, timeout or transport_error"
    );
    describe_histogram!(
        REGISTER_DURATION,
        metrics::Unit::Seconds,
        "REGISTER sent to final response"
    );
    describe_counter!(
        CALLS,
        "INVITEs by direction (inbound: PBX to destination; outbound: toward the PBX) and outcome (answered, final code, rejected_source, no_route)"
    );
    describe_histogram!(
        CALL_SETUP,
        metrics::Unit::Seconds,
        "INVITE received to first final response relayed"
    );
    describe_counter!(
        FAILOVERS,
        "times a call or REGISTER moved to the next target"
    );
    describe_gauge!(DIALOGS_ACTIVE, "calls answered and not yet ended");
    describe_counter!(
        SIP_MESSAGES,
        "SIP messages by direction (in/out) and kind (method or response class)"
    );
    describe_counter!(
        TRANSPORT_ERRORS,
        "send, connect and TLS failures by transport"
    );
    describe_counter!(
        FLOWS_CLOSED,
        "inbound TCP/TLS flows refused by a [limits] bound, and flows closed by a deadline, by reason"
    );
    describe_counter!(
        LOG_SUPPRESSED,
        "network-caused log lines not written (rate-limited per kind), by kind"
    );
    describe_gauge!(
        CLUSTER_NODES,
        "cluster nodes by state (alive: heartbeat within lease_sec, database clock)"
    );
    describe_gauge!(CONNECTIONS_OWNED, "connections this node holds by lease");
    describe_counter!(
        TAKEOVERS,
        "connections this node claimed from a node whose lease had expired"
    );
}

/// Cluster mode: the live nodes in this node's view.
pub fn cluster_nodes(alive: usize) {
    gauge!(CLUSTER_NODES, "state" => "alive").set(alive as f64);
}

/// Cluster mode: the connections this node holds.
pub fn connections_owned(n: usize) {
    gauge!(CONNECTIONS_OWNED).set(n as f64);
}

/// Cluster mode: `n` connections taken over from dead nodes.
pub fn takeovers(n: u64) {
    if n > 0 {
        counter!(TAKEOVERS).increment(n);
    }
}

/// Sets `uacd_registrations{status}` from a count per status label
/// (computed from the live snapshots when `/metrics` is scraped; every
/// status, zeros included).
pub fn set_registrations(counts: impl IntoIterator<Item = (&'static str, usize)>) {
    for (status, n) in counts {
        gauge!(REGISTRATIONS, "status" => status).set(n as f64);
    }
}

/// One REGISTER transaction ended: `outcome` is the final response code,
/// or `timeout` / `transport_error`.
pub fn register_result(outcome: RegisterOutcome, took: Option<Duration>) {
    let label = match outcome {
        RegisterOutcome::Code(c) => code_label(c),
        RegisterOutcome::Timeout => "timeout",
        RegisterOutcome::TransportError => "transport_error",
    };
    if let Some(hot) = HOT.get() {
        hot.register.increment(label);
        if let Some(d) = took {
            hot.register_duration.record(d.as_secs_f64());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    Code(u16),
    Timeout,
    TransportError,
}

pub fn failover() {
    if let Some(hot) = HOT.get() {
        hot.failovers.increment(1);
    }
}

/// How a call's setup ended, as `uacd_calls_total{direction,result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallResult {
    /// A 2xx was relayed.
    Answered,
    /// Refused before routing: not from the connection's PBX, or not for us.
    RejectedSource,
    /// No connection or no usable destination for it.
    NoRoute,
    /// Refused as malformed (400), counted under its own code.
    Malformed,
    /// Any other final status sent upstream.
    Status(u16),
}

impl CallResult {
    /// The `result` label: `answered`, `rejected_source`, `no_route` or the
    /// final code (`486`, or its class).
    pub fn label(self) -> &'static str {
        match self {
            CallResult::Answered => "answered",
            CallResult::RejectedSource => "rejected_source",
            CallResult::NoRoute => "no_route",
            CallResult::Malformed => "400",
            CallResult::Status(code) => code_label(code),
        }
    }
}

/// The `direction` of `uacd_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    /// From a connection's PBX to its `destination_uri`.
    Inbound,
    /// From the internal side toward a connection's PBX.
    Outbound,
}

impl CallDirection {
    pub const ALL: [CallDirection; 2] = [CallDirection::Inbound, CallDirection::Outbound];

    /// The `direction` label: `inbound` or `outbound`.
    pub fn label(self) -> &'static str {
        match self {
            CallDirection::Inbound => "inbound",
            CallDirection::Outbound => "outbound",
        }
    }
}

/// Every `result` of `uacd_calls_total` exported at 0: the codes and
/// classes, then the named outcomes.
fn call_results(codes: impl Iterator<Item = &'static str>) -> Vec<&'static str> {
    codes
        .chain(["answered", "rejected_source", "no_route", "400"])
        .collect()
}

/// A call of `direction` ended its setup.
pub fn call_result(direction: CallDirection, result: CallResult, setup: Option<Duration>) {
    if let Some(hot) = HOT.get() {
        match direction {
            CallDirection::Inbound => &hot.calls_inbound,
            CallDirection::Outbound => &hot.calls_outbound,
        }
        .increment(result.label());
        if let Some(d) = setup {
            hot.call_setup.record(d.as_secs_f64());
        }
    }
}

pub fn dialogs_active(delta: f64) {
    if let Some(hot) = HOT.get() {
        hot.dialogs_active.increment(delta);
    }
}

/// A send, connect or TLS failure; `transport` is `udp`, `tcp` or `tls`.
pub fn transport_error(transport: &'static str) {
    counter!(TRANSPORT_ERRORS, "transport" => transport).increment(1);
}

/// A TCP/TLS flow refused or closed by the flow policy; `reason` is one of
/// [`FLOW_CLOSE_REASONS`]. Rare (one per flow), so no hot handle.
pub fn flow_closed(reason: &'static str) {
    counter!(FLOWS_CLOSED, "reason" => reason).increment(1);
}

/// A network-caused log line of `kind` (one of [`LOG_KINDS`]) was
/// suppressed.
pub fn log_suppressed(kind: &'static str) {
    counter!(LOG_SUPPRESSED, "kind" => kind).increment(1);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// Counts one SIP message; `bytes` starts with its first line. Labels are
/// static strings: no allocation per message.
pub fn sip_message(direction: Direction, bytes: &[u8]) {
    if let Some(hot) = HOT.get() {
        match direction {
            Direction::In => &hot.sip_in,
            Direction::Out => &hot.sip_out,
        }
        .increment_at(kind_index(bytes));
    }
}

/// Counts one received (parsed) SIP message: a response's status code,
/// else a request's method.
pub fn sip_received(status: Option<u16>, method: &str) {
    if let Some(hot) = HOT.get() {
        let i = match status {
            Some(code) => class_index(code),
            None => kind_index(method.as_bytes()),
        };
        hot.sip_in.increment_at(i);
    }
}

/// Every value of the `kind` label: the response classes (`other` last
/// among them), then the methods with a label of their own.
const KINDS: [&str; 21] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "6xx",
    "other",
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "PRACK",
    "UPDATE",
    "INFO",
    "NOTIFY",
    "REFER",
    "SUBSCRIBE",
    "MESSAGE",
    "PUBLISH",
];
const OTHER: usize = 6;
const FIRST_METHOD: usize = 7;

/// Index in [`KINDS`] of a response code's class.
fn class_index(code: u16) -> usize {
    match code {
        100..=699 => usize::from(code / 100 - 1),
        _ => OTHER,
    }
}

fn class_label(code: u16) -> &'static str {
    KINDS[class_index(code)]
}

/// Index in [`KINDS`] of a message starting with `bytes`.
fn kind_index(bytes: &[u8]) -> usize {
    if let Some(rest) = bytes.strip_prefix(b"SIP/2.0 ") {
        return match rest.first() {
            Some(d @ b'1'..=b'6') => usize::from(d - b'1'),
            _ => OTHER,
        };
    }
    let method = bytes.split(|b| *b == b' ').next().unwrap_or_default();
    KINDS[FIRST_METHOD..]
        .iter()
        .position(|m| m.as_bytes() == method)
        .map_or(OTHER, |i| FIRST_METHOD + i)
}

/// The `kind` label: the method of a request (`other` for an extension
/// method), or the class of a response (`2xx`).
pub fn kind(bytes: &[u8]) -> &'static str {
    KINDS[kind_index(bytes)]
}

/// Response codes with a label of their own; others get their class.
const CODES: [(u16, &str); 24] = [
    (100, "100"),
    (180, "180"),
    (183, "183"),
    (200, "200"),
    (202, "202"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (407, "407"),
    (408, "408"),
    (423, "423"),
    (480, "480"),
    (481, "481"),
    (482, "482"),
    (483, "483"),
    (486, "486"),
    (487, "487"),
    (488, "488"),
    (500, "500"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
    (600, "600"),
    (603, "603"),
];

/// Static label for a response code (codes outside 100..=699 are `other`).
fn code_label(code: u16) -> &'static str {
    match CODES.iter().find(|(c, _)| *c == code) {
        Some((_, l)) => l,
        None => class_label(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(kind(b"INVITE sip:a@b SIP/2.0\r\n"), "INVITE");
        assert_eq!(kind(b"FOO sip:a@b SIP/2.0\r\n"), "other");
        assert_eq!(kind(b"SIP/2.0 180 Ringing\r\n"), "1xx");
        assert_eq!(kind(b"SIP/2.0 503 x\r\n"), "5xx");
        assert_eq!(kind(b"\r\n\r\n"), "other");
        assert_eq!(kind(b""), "other");
        assert_eq!(kind(b"PUBLISH sip:a@b SIP/2.0\r\n"), "PUBLISH");
        assert_eq!(kind(b"SIP/2.0 603 x\r\n"), "6xx");
        assert_eq!(kind(b"SIP/2.0 703 x\r\n"), "other");
        for (code, class) in [
            (100, "1xx"),
            (299, "2xx"),
            (699, "6xx"),
            (99, "other"),
            (700, "other"),
        ] {
            assert_eq!(class_label(code), class, "{code}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(code_label(486), "486");
        assert_eq!(code_label(499), "4xx");
        assert_eq!(code_label(42), "other");
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        for (name, ty) in ALL {
            assert!(name.starts_with("uacd_"), "{name}");
            assert_eq!(ty == "counter", name.ends_with("_total"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
