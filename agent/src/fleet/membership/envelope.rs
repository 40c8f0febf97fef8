//! Authenticated gossip envelopes: every UDP packet of the fleet is
//!
//! ```text
//! "MEF1" | kind u8 | sender_len u8 | sender | epoch u64 | counter u64 | body | HMAC-SHA256
//! ```
//!
//! with the MAC over everything before it, keyed with the fleet's shared key (distributed
//! by the CA with the node's enrollment, kept in a file readable by the agent only).
//! `epoch` is the sender's start time (ms since the Unix epoch) and `counter` increases per
//! packet: a receiver accepts a sender's packet only for a newer epoch, or for the current
//! epoch with a counter it has not seen within a 64-packet window, so a captured packet
//! cannot be replayed. With a shared key every key holder can speak for any node name; the
//! key must be rotated if a node is compromised.

use std::collections::HashMap;

use ring::hmac;

const MAGIC: &[u8; 4] = b"MEF1";
const MAC_LEN: usize = 32;
const WINDOW: u64 = 64;

/// What an envelope carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SWIM packet (foca).
    Swim,
    /// A fleet message (state, lease, ack, release).
    Fleet,
}

/// Why a packet was rejected (the `reason` label of the rejection counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Shorter than the fixed parts.
    #[error("packet too short")]
    Short,
    /// Wrong magic or kind.
    #[error("not a meshedge fleet packet")]
    Magic,
    /// The MAC does not verify.
    #[error("bad MAC")]
    Mac,
    /// Seen before, or older than the sender's current epoch.
    #[error("replayed or stale packet")]
    Replay,
    /// The sender name is not valid UTF-8.
    #[error("bad sender name")]
    Sender,
    /// The body did not decode.
    #[error("undecodable body")]
    Decode,
}

impl Rejected {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejected::Short => "short",
            Rejected::Magic => "magic",
            Rejected::Mac => "mac",
            Rejected::Replay => "replay",
            Rejected::Sender => "sender",
            Rejected::Decode => "decode",
        }
    }
}

/// An opened, authenticated packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<'a> {
    /// What it carries.
    pub kind: Kind,
    /// Sender node name.
    pub sender: String,
    /// The payload.
    pub body: &'a [u8],
}

/// Seals outgoing packets for one sender.
#[derive(Debug)]
pub struct Sealer {
    key: hmac::Key,
    sender: String,
    epoch: u64,
    counter: u64,
}

impl Sealer {
    /// A sealer for `sender` with `key`, starting epoch `epoch`.
    pub fn new(key: &[u8], sender: &str, epoch: u64) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            sender: sender.to_owned(),
            epoch,
            counter: 0,
        }
    }

    /// The envelope around `body`.
    pub fn seal(&mut self, kind: Kind, body: &[u8]) -> Vec<u8> {
        self.counter += 1;
        let name = self.sender.as_bytes();
        let name = &name[..name.len().min(255)];
        let mut out = Vec::with_capacity(4 + 2 + name.len() + 16 + body.len() + MAC_LEN);
        out.extend_from_slice(MAGIC);
        out.push(match kind {
            Kind::Swim => 0,
            Kind::Fleet => 1,
        });
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
        out.extend_from_slice(body);
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        out
    }
}

#[derive(Debug, Clone, Copy)]
struct ReplayWindow {
    epoch: u64,
    highest: u64,
    seen: u64,
}

/// Opens incoming packets and remembers what each sender has sent.
#[derive(Debug)]
pub struct Opener {
    key: hmac::Key,
    windows: HashMap<String, ReplayWindow>,
}

impl Opener {
    /// An opener with `key`.
    pub fn new(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            windows: HashMap::new(),
        }
    }

    /// Verifies `packet` and returns its contents; rejects forged, truncated and replayed
    /// packets.
    pub fn open<'a>(&mut self, packet: &'a [u8]) -> Result<Opened<'a>, Rejected> {
        if packet.len() < 4 + 2 + 16 + MAC_LEN {
            return Err(Rejected::Short);
        }
        let (signed, mac) = packet.split_at(packet.len() - MAC_LEN);
        if &signed[..4] != MAGIC {
            return Err(Rejected::Magic);
        }
        hmac::verify(&self.key, signed, mac).map_err(|_| Rejected::Mac)?;
        let kind = match signed[4] {
            0 => Kind::Swim,
            1 => Kind::Fleet,
            _ => return Err(Rejected::Magic),
        };
        let name_len = usize::from(signed[5]);
        let rest = &signed[6..];
        if rest.len() < name_len + 16 {
            return Err(Rejected::Short);
        }
        let (name, rest) = rest.split_at(name_len);
        let sender = std::str::from_utf8(name).map_err(|_| Rejected::Sender)?;
        let (epoch, rest) = rest.split_at(8);
        let (counter, body) = rest.split_at(8);
        let epoch = u64::from_be_bytes(epoch.try_into().map_err(|_| Rejected::Short)?);
        let counter = u64::from_be_bytes(counter.try_into().map_err(|_| Rejected::Short)?);
        self.check_replay(sender, epoch, counter)?;
        Ok(Opened {
            kind,
            sender: sender.to_owned(),
            body,
        })
    }

    fn check_replay(&mut self, sender: &str, epoch: u64, counter: u64) -> Result<(), Rejected> {
        let fresh = ReplayWindow {
            epoch,
            highest: counter,
            seen: 1,
        };
        let Some(w) = self.windows.get_mut(sender) else {
            self.windows.insert(sender.to_owned(), fresh);
            return Ok(());
        };
        if epoch < w.epoch {
            return Err(Rejected::Replay);
        }
        if epoch > w.epoch {
            *w = fresh;
            return Ok(());
        }
        if counter > w.highest {
            let shift = counter - w.highest;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.highest = counter;
            return Ok(());
        }
        let age = w.highest - counter;
        if age >= WINDOW || w.seen & (1 << age) != 0 {
            return Err(Rejected::Replay);
        }
        w.seen |= 1 << age;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn round_trip_and_forgeries() {
        let mut sealer = Sealer::new(KEY, "a1", 7);
        let mut opener = Opener::new(KEY);
        let p = sealer.seal(Kind::Fleet, b"hello");
        let got = opener.open(&p).unwrap();
        assert_eq!(
            (got.kind, got.sender.as_str(), got.body),
            (Kind::Fleet, "a1", &b"hello"[..])
        );

        let mut flipped = sealer.seal(Kind::Swim, b"hello");
        flipped[12] ^= 1;
        assert_eq!(opener.open(&flipped), Err(Rejected::Mac));
        let mut other = Sealer::new(b"another key of thirty-two bytes!", "a1", 7);
        assert_eq!(
            opener.open(&other.seal(Kind::Swim, b"x")),
            Err(Rejected::Mac)
        );
        assert_eq!(opener.open(b"short"), Err(Rejected::Short));
        assert_eq!(opener.open(&[0u8; 80]), Err(Rejected::Magic));
    }

    #[test]
    fn replays_are_rejected_reordering_is_not() {
        let mut sealer = Sealer::new(KEY, "a1", 7);
        let mut opener = Opener::new(KEY);
        let packets: Vec<Vec<u8>> = (0..10).map(|_| sealer.seal(Kind::Swim, b"x")).collect();
        for i in [0, 2, 1, 5, 3, 4, 9, 6, 8, 7] {
            opener.open(&packets[i]).unwrap();
        }
        for p in &packets {
            assert_eq!(opener.open(p), Err(Rejected::Replay));
        }
        let far: Vec<Vec<u8>> = (0..100).map(|_| sealer.seal(Kind::Swim, b"x")).collect();
        opener.open(&far[99]).unwrap();
        assert_eq!(
            opener.open(&far[0]),
            Err(Rejected::Replay),
            "outside the window"
        );
        // A restart (newer epoch) is accepted; the old epoch is not any more.
        let mut restarted = Sealer::new(KEY, "a1", 8);
        opener.open(&restarted.seal(Kind::Swim, b"x")).unwrap();
        assert_eq!(opener.open(&far[98]), Err(Rejected::Replay));
    }

    #[test]
    fn garbage_never_panics() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(4);
        let mut opener = Opener::new(KEY);
        for len in 0..200 {
            let mut p = vec![0u8; len];
            rng.fill(&mut p[..]);
            if len > 4 {
                p[..4].copy_from_slice(MAGIC);
            }
            assert!(opener.open(&p).is_err());
        }
    }
}
