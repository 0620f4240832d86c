//! RFC 5626 §4.4.1 on the flow uacd opens to a registrar, with the daemon
//! in-process against a scripted TCP registrar on 127.0.2.50/.51: the
//! registrar answers the first keepalive ping, then goes silent; 10 s
//! after the next ping the flow is closed and the registration registers
//! again at once on a new flow. Real time (the keepalive is 30 s idle):
//! about 75 s, every wait bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use uacd::app::App;
use uacd::registration::RegStatus;
use uacd::sip::{Frame, FrameScanner, Message, response_to};

/// Longer than the keepalive idle time (30 s) plus the pong timeout (10 s).
const WAIT: Duration = Duration::from_secs(50);

fn config(ip: &str, proxy: &str) -> uacd::config::Config {
    let text = format!(
        "[sip]\nlisten = [\"udp:{ip}:0\", \"tcp:{ip}:0\"]\n\
         [api]\nlisten = \"127.0.0.1:0\"\n[[api.tokens]]\ntoken = \"flow-keepalive-token-0123\"\nuser_id = \"1\"\n\
         [registration]\nretry_interval_sec = 1\nmax_retry_interval_sec = 2\nunregister_timeout_sec = 2\n\
         [[connection]]\nid = \"c1\"\nconnection_name = \"c1\"\nuser_name = \"u-c1\"\n\
         [connection.external_uac_settings]\nproxy = \"{proxy}\"\ntransport = \"TCP\"\n\
         username = \"c1\"\npassword = \"pw\"\nexpiration_sec = 3600\n"
    );
    uacd::config::parse(&text, "test.toml").expect("test config is valid")
}

enum Got {
    Msg(Box<Message>),
    Ping,
    Closed,
}

struct Peer {
    stream: TcpStream,
    buf: BytesMut,
    scanner: FrameScanner,
}

impl Peer {
    async fn next(&mut self) -> Got {
        loop {
            match self.scanner.next(&self.buf) {
                Frame::Message(n) => {
                    let frame = self.buf.split_to(n).freeze();
                    return Got::Msg(Box::new(Message::parse_stream(frame).expect("valid SIP")));
                }
                Frame::Ping => {
                    let _ = self.buf.split_to(4);
                    return Got::Ping;
                }
                Frame::Pong => panic!("the registrar sent no ping"),
                Frame::Incomplete => {
                    let n = timeout(WAIT, self.stream.read_buf(&mut self.buf))
                        .await
                        .expect("something arrives")
                        .unwrap_or(0);
                    if n == 0 {
                        return Got::Closed;
                    }
                }
                Frame::Invalid(e) => panic!("unframeable data from the daemon: {e}"),
            }
        }
    }

    async fn register(&mut self) -> Message {
        let Got::Msg(req) = self.next().await else {
            panic!("expected a REGISTER")
        };
        let contact = format!("<{}>", req.contacts().expect("contact")[0].uri);
        let ok = response_to(&req, 200, "OK", Some("reg"))
            .header("Contact", &contact)
            .build();
        self.stream.write_all(&Bytes::from(ok)).await.unwrap();
        *req
    }
}

async fn accept(l: &TcpListener) -> Peer {
    let (stream, _) = timeout(WAIT, l.accept())
        .await
        .expect("daemon connects")
        .unwrap();
    Peer {
        stream,
        buf: BytesMut::new(),
        // The registrar's side: it sends no pings, so CRLF pairs are pings.
        scanner: FrameScanner::without_pongs(),
    }
}

#[tokio::test]
async fn rfc5626_4_4_1_a_missing_pong_closes_the_flow_and_the_registration_moves() {
    let reg = TcpListener::bind("127.0.2.50:0").await.unwrap();
    let addr: SocketAddr = reg.local_addr().unwrap();
    let app = App::start_with_timers(
        config("127.0.2.51", &format!("sip:{addr}")),
        Default::default(),
    )
    .await
    .expect("daemon starts");
    let status = app.supervisor.watch("c1").expect("connection exists");
    let mut first = accept(&reg).await;
    let req = first.register().await;
    let flow = timeout(WAIT, status.wait_for(|s| s.status == RegStatus::Success))
        .await
        .expect("registered")
        .flow;
    assert!(flow.is_some(), "registered over a flow");

    // The first ping (30 s idle) is answered: the registrar does keepalives.
    assert!(matches!(first.next().await, Got::Ping));
    first.stream.write_all(b"\r\n").await.unwrap();
    // The next one is not: uacd closes the flow 10 s after sending it.
    assert!(matches!(first.next().await, Got::Ping));
    assert!(
        matches!(first.next().await, Got::Closed),
        "flow closed by uacd"
    );

    // The registration registers again at once, on a new flow.
    let mut second = accept(&reg).await;
    let again = second.register().await;
    assert_eq!(again.call_id().unwrap(), req.call_id().unwrap());
    assert_eq!(again.cseq().unwrap().seq, req.cseq().unwrap().seq + 1);
    timeout(
        WAIT,
        status.wait_for(|s| s.status == RegStatus::Success && s.flow.is_some() && s.flow != flow),
    )
    .await
    .expect("registered on the new flow");
    app.stop().await;
}
