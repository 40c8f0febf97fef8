//! One signed update exchange over TCP.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RegisterError;
use crate::tsig::TsigKey;

/// Signs `msg` with `key`, sends it to `server` and returns the verified response code.
pub(super) async fn exchange(
    server: SocketAddr,
    key: &TsigKey,
    mut msg: Message,
    timeout: Duration,
) -> Result<ResponseCode, RegisterError> {
    let bad = |reason: &str| RegisterError::BadResponse {
        server,
        reason: reason.to_owned(),
    };
    let io = |source| RegisterError::Io { server, source };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    let mut verifier = msg
        .finalize(&key.signer(), now)
        .map_err(|e| bad(&format!("signing failed: {e}")))?;
    let request = msg
        .to_vec()
        .map_err(|e| bad(&format!("encoding failed: {e}")))?;
    let len = u16::try_from(request.len()).map_err(|_| bad("update larger than 64 KiB"))?;

    let reply = tokio::time::timeout(timeout, async {
        let mut stream = TcpStream::connect(server).await?;
        let mut framed = Vec::with_capacity(request.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&request);
        stream.write_all(&framed).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    })
    .await
    .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
    .map_err(io)?;

    let response = Message::from_vec(&reply).map_err(|_| bad("malformed response"))?;
    if response.id() != msg.id() || response.message_type() != MessageType::Response {
        return Err(bad("response does not match the request"));
    }
    let rcode = response.response_code();
    // Servers answer unsigned, or with an empty MAC and a TSIG error (RFC 8945 section
    // 5.3.2), when they could not check our key; an unsigned success is not trusted.
    let unsigned = match response.signature().last().map(|r| r.data()) {
        None => true,
        Some(RData::DNSSEC(DNSSECRData::TSIG(tsig))) => tsig.mac().is_empty(),
        Some(_) => return Err(bad("response signed with something other than tsig")),
    };
    if unsigned {
        return if rcode == ResponseCode::NoError {
            Err(bad("unsigned success response"))
        } else {
            Ok(rcode)
        };
    }
    if let Some(verify) = verifier.as_mut() {
        verify(&reply).map_err(|e| bad(&format!("tsig verification failed: {e}")))?;
    }
    Ok(rcode)
}
