use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::proxy::full;

const LIMITS: H1Limits = H1Limits {
    header_read_timeout: Duration::from_secs(10),
    max_head_bytes: 1024,
};

/// Answers `METHOD PATH BODY-BYTES` as the body.
async fn echo(req: Request<Full<Bytes>>, _fields: Option<RawHead>) -> Reply {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    http::Response::new(full(format!(
        "{} {} {}",
        parts.method,
        parts.uri.path(),
        body.len()
    )))
    .into()
}

/// A fast-path connection over an in-memory pipe; returns the client end and the task.
fn start(
    drain: watch::Receiver<bool>,
) -> (DuplexStream, tokio::task::JoinHandle<(Ended, DuplexStream)>) {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let mut drain = drain;
        let ended = serve(&mut server, LIMITS, echo, &mut drain).await;
        (ended, server)
    });
    (client, task)
}

async fn read_until_close(client: &mut DuplexStream) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut got))
        .await
        .expect("connection closed")
        .unwrap();
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_then_close() {
    let (_tx, rx) = watch::channel(false);
    let (mut client, task) = start(rx);
    client
        .write_all(
            b"GET /one HTTP/1.1\r\nhost: a\r\n\r\n\
              POST /two HTTP/1.1\r\ncontent-length: 4\r\n\r\ntiny\
              HEAD /three HTTP/1.1\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let got = read_until_close(&mut client).await;
    let one = got.find("GET /one 0").expect(&got);
    let two = got.find("POST /two 4").expect(&got);
    assert!(one < two, "{got}");
    assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 3, "{got}");
    assert!(!got.contains("HEAD /three"), "HEAD gets no body: {got}");
    assert!(
        got.ends_with("connection: close\r\n\r\n") || got.contains("connection: close\r\ndate"),
        "{got}"
    );
    assert!(matches!(task.await.unwrap().0, Ended::Closed));
}

#[tokio::test]
async fn http10_closes_unless_asked_to_keep_alive() {
    let (_tx, rx) = watch::channel(false);
    let (mut client, task) = start(rx);
    client
        .write_all(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_close(&mut client).await;
    assert!(got.contains("connection: keep-alive\r\n"), "{got}");
    assert!(got.contains("GET /b 0"), "{got}");
    assert!(got.contains("connection: close\r\n"), "{got}");
    assert!(matches!(task.await.unwrap().0, Ended::Closed));
}

#[tokio::test]
async fn a_request_for_hyper_hands_over_every_unparsed_byte() {
    let (_tx, rx) = watch::channel(false);
    let (mut client, task) = start(rx);
    let chunked = "POST /c HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n4\r\ntiny\r\n0\r\n\r\n";
    client
        .write_all(format!("GET /first HTTP/1.1\r\n\r\n{chunked}").as_bytes())
        .await
        .unwrap();
    let (ended, _server) = task.await.unwrap();
    let Ended::HandOff(rest) = ended else {
        panic!("not handed off: {ended:?}")
    };
    assert_eq!(&rest[..], chunked.as_bytes());
    let mut first = vec![0u8; 256];
    let n = client.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).contains("GET /first 0"));
}

#[tokio::test]
async fn malformed_and_oversized_heads_are_refused_and_closed() {
    for (input, status) in [
        (
            b"G@RBAGE \x01\x02 nonsense\r\n\r\n".to_vec(),
            "HTTP/1.1 400 ",
        ),
        (
            format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(2000)).into_bytes(),
            "HTTP/1.1 431 ",
        ),
    ] {
        let (_tx, rx) = watch::channel(false);
        let (mut client, task) = start(rx);
        client.write_all(&input).await.unwrap();
        let got = read_until_close(&mut client).await;
        assert!(got.starts_with(status), "{got}");
        assert!(got.contains("connection: close"), "{got}");
        assert!(matches!(task.await.unwrap().0, Ended::Closed));
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_head_gets_408_and_an_idle_connection_closes_silently() {
    let (_tx, rx) = watch::channel(false);
    let (mut client, task) = start(rx);
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: a")
        .await
        .unwrap();
    let got = read_until_close(&mut client).await;
    assert!(got.starts_with("HTTP/1.1 408 "), "{got}");
    assert!(matches!(task.await.unwrap().0, Ended::Closed));

    // After a response, the next head gets its own full deadline.
    let (_tx, rx) = watch::channel(false);
    let (mut client, task) = start(rx);
    tokio::time::sleep(Duration::from_secs(9)).await;
    client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("GET /a 0"));
    tokio::time::sleep(Duration::from_secs(9)).await;
    client.write_all(b"GET /b HTTP/1.1\r\n\r\n").await.unwrap();
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("GET /b 0"));
    // Then silence: closed without a response.
    let got = read_until_close(&mut client).await;
    assert_eq!(got, "");
    assert!(matches!(task.await.unwrap().0, Ended::Closed));
}

#[tokio::test]
async fn drain_closes_idle_connections_and_ends_the_current_one() {
    let (tx, rx) = watch::channel(false);
    let (mut client, task) = start(rx);
    client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 512];
    let n = client.read(&mut buf).await.unwrap();
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("connection: close"));
    tx.send(true).unwrap();
    assert_eq!(read_until_close(&mut client).await, "");
    assert!(matches!(task.await.unwrap().0, Ended::Closed));

    // A drain that starts while a request is served: its response says connection: close.
    let (tx, mut rx) = watch::channel(false);
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let handler = |req, fields| {
            tx.send(true).unwrap();
            echo(req, fields)
        };
        serve(&mut server, LIMITS, handler, &mut rx).await
    });
    client.write_all(b"GET /b HTTP/1.1\r\n\r\n").await.unwrap();
    let got = read_until_close(&mut client).await;
    assert!(
        got.contains("GET /b 0") && got.contains("connection: close"),
        "{got}"
    );
    assert!(matches!(task.await.unwrap(), Ended::Closed));

    // A connection that starts during a drain is closed before it is read.
    let (tx, rx) = watch::channel(true);
    let (mut client, task) = start(rx);
    client.write_all(b"GET /c HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(read_until_close(&mut client).await, "");
    assert!(matches!(task.await.unwrap().0, Ended::Closed));
    drop(tx);
}
