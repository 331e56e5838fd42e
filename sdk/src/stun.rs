//! STUN messages as TURN uses them (RFC 8489, RFC 8656): the bytes faultline-sdk's TURN
//! client speaks to a relay. Public so that the simulated server's relay reads and writes
//! exactly the same bytes.
//!
//! Only what a TURN client over UDP needs: the methods Allocate, Refresh, CreatePermission,
//! Send and Data, the attributes they carry, long-term credentials (MESSAGE-INTEGRITY with
//! the MD5 key of RFC 8489 §9.2.2). Unknown attributes are skipped when reading.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

/// The fixed value in every STUN header.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// The REQUESTED-TRANSPORT value for UDP.
pub const TRANSPORT_UDP: u8 = 17;

const HEADER_LEN: usize = 20;
const INTEGRITY_LEN: usize = 20;

/// A STUN method (RFC 8489 §18.2, RFC 8656 §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Binding (ICE's connectivity checks; not used by TURN itself).
    Binding,
    /// Allocate a relayed address.
    Allocate,
    /// Keep an allocation alive, or end it with a lifetime of 0.
    Refresh,
    /// Send data to a peer (an indication).
    Send,
    /// Data from a peer (an indication).
    Data,
    /// Let a peer's IP address send to the relayed address.
    CreatePermission,
    /// Bind a channel number to a peer.
    ChannelBind,
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Binding => 0x001,
            Method::Allocate => 0x003,
            Method::Refresh => 0x004,
            Method::Send => 0x006,
            Method::Data => 0x007,
            Method::CreatePermission => 0x008,
            Method::ChannelBind => 0x009,
        }
    }

    fn from_code(code: u16) -> Option<Method> {
        [
            Method::Binding,
            Method::Allocate,
            Method::Refresh,
            Method::Send,
            Method::Data,
            Method::CreatePermission,
            Method::ChannelBind,
        ]
        .into_iter()
        .find(|m| m.code() == code)
    }
}

/// A STUN message class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A request, answered by a success or an error response.
    Request,
    /// An indication: never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response (with an ERROR-CODE).
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        }
    }

    fn from_bits(bits: u16) -> Class {
        match bits {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        }
    }
}

/// One attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    /// USERNAME.
    Username(String),
    /// REALM.
    Realm(String),
    /// NONCE.
    Nonce(String),
    /// ERROR-CODE: the code (300–699) and its reason phrase.
    ErrorCode(u16, String),
    /// LIFETIME, in seconds.
    Lifetime(u32),
    /// REQUESTED-TRANSPORT: an IP protocol number ([`TRANSPORT_UDP`]).
    RequestedTransport(u8),
    /// XOR-PEER-ADDRESS.
    XorPeerAddress(SocketAddr),
    /// XOR-RELAYED-ADDRESS.
    XorRelayedAddress(SocketAddr),
    /// XOR-MAPPED-ADDRESS.
    XorMappedAddress(SocketAddr),
    /// DATA.
    Data(Vec<u8>),
}

impl Attribute {
    const USERNAME: u16 = 0x0006;
    const MESSAGE_INTEGRITY: u16 = 0x0008;
    const ERROR_CODE: u16 = 0x0009;
    const LIFETIME: u16 = 0x000D;
    const XOR_PEER_ADDRESS: u16 = 0x0012;
    const DATA: u16 = 0x0013;
    const REALM: u16 = 0x0014;
    const NONCE: u16 = 0x0015;
    const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    const REQUESTED_TRANSPORT: u16 = 0x0019;
    const XOR_MAPPED_ADDRESS: u16 = 0x0020;

    fn kind(&self) -> u16 {
        match self {
            Attribute::Username(_) => Self::USERNAME,
            Attribute::Realm(_) => Self::REALM,
            Attribute::Nonce(_) => Self::NONCE,
            Attribute::ErrorCode(..) => Self::ERROR_CODE,
            Attribute::Lifetime(_) => Self::LIFETIME,
            Attribute::RequestedTransport(_) => Self::REQUESTED_TRANSPORT,
            Attribute::XorPeerAddress(_) => Self::XOR_PEER_ADDRESS,
            Attribute::XorRelayedAddress(_) => Self::XOR_RELAYED_ADDRESS,
            Attribute::XorMappedAddress(_) => Self::XOR_MAPPED_ADDRESS,
            Attribute::Data(_) => Self::DATA,
        }
    }

    fn value(&self, transaction: &[u8; 12]) -> Vec<u8> {
        match self {
            Attribute::Username(s) | Attribute::Realm(s) | Attribute::Nonce(s) => {
                s.as_bytes().to_vec()
            }
            Attribute::ErrorCode(code, reason) => {
                let mut v = vec![0, 0, (code / 100) as u8 & 0x7, (code % 100) as u8];
                v.extend_from_slice(reason.as_bytes());
                v
            }
            Attribute::Lifetime(secs) => secs.to_be_bytes().to_vec(),
            Attribute::RequestedTransport(proto) => vec![*proto, 0, 0, 0],
            Attribute::XorPeerAddress(a)
            | Attribute::XorRelayedAddress(a)
            | Attribute::XorMappedAddress(a) => xor_address(*a, transaction),
            Attribute::Data(d) => d.clone(),
        }
    }

    /// Reads one attribute; `None` for a kind this module does not know.
    fn parse(kind: u16, value: &[u8], transaction: &[u8; 12]) -> Result<Option<Self>, StunError> {
        let text = |v: &[u8]| {
            String::from_utf8(v.to_vec())
                .map_err(|_| StunError::Malformed("a text attribute is not UTF-8"))
        };
        let attribute = match kind {
            Self::USERNAME => Attribute::Username(text(value)?),
            Self::REALM => Attribute::Realm(text(value)?),
            Self::NONCE => Attribute::Nonce(text(value)?),
            Self::ERROR_CODE => {
                let [_, _, class, number, reason @ ..] = value else {
                    return Err(StunError::Malformed("ERROR-CODE is shorter than 4 bytes"));
                };
                Attribute::ErrorCode(
                    u16::from(class & 0x7) * 100 + u16::from(*number),
                    text(reason)?,
                )
            }
            Self::LIFETIME => Attribute::Lifetime(u32::from_be_bytes(
                value.try_into().map_err(|_| StunError::Malformed("LIFETIME is not 4 bytes"))?,
            )),
            Self::REQUESTED_TRANSPORT => match value {
                [proto, _, _, _] => Attribute::RequestedTransport(*proto),
                _ => return Err(StunError::Malformed("REQUESTED-TRANSPORT is not 4 bytes")),
            },
            Self::XOR_PEER_ADDRESS => Attribute::XorPeerAddress(unxor_address(value, transaction)?),
            Self::XOR_RELAYED_ADDRESS => {
                Attribute::XorRelayedAddress(unxor_address(value, transaction)?)
            }
            Self::XOR_MAPPED_ADDRESS => {
                Attribute::XorMappedAddress(unxor_address(value, transaction)?)
            }
            Self::DATA => Attribute::Data(value.to_vec()),
            _ => return Ok(None),
        };
        Ok(Some(attribute))
    }
}

/// A STUN message that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    /// Not a STUN message at all (another protocol sharing the socket).
    #[error("not a STUN message")]
    NotStun,
    /// A STUN message whose contents break the format.
    #[error("malformed STUN message: {0}")]
    Malformed(&'static str),
}

/// A STUN message: header fields and the attributes this module knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
    /// The transaction id, which a response repeats.
    pub transaction: [u8; 12],
    /// The attributes, in order (MESSAGE-INTEGRITY and FINGERPRINT excepted).
    pub attributes: Vec<Attribute>,
    /// Where a MESSAGE-INTEGRITY attribute starts in the bytes read, and its value.
    integrity: Option<(usize, [u8; INTEGRITY_LEN])>,
}

impl Message {
    /// A message with no attributes yet.
    pub fn new(method: Method, class: Class, transaction: [u8; 12]) -> Message {
        Message { method, class, transaction, attributes: Vec::new(), integrity: None }
    }

    /// Adds an attribute.
    pub fn with(mut self, attribute: Attribute) -> Message {
        self.attributes.push(attribute);
        self
    }

    /// The bytes of the message, ending with a MESSAGE-INTEGRITY computed with `key` if
    /// one is given ([`long_term_key`]).
    pub fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        let method = self.method.code();
        let class = self.class.bits();
        let typ = (method & 0x000F)
            | ((method & 0x0070) << 1)
            | ((method & 0x0F80) << 2)
            | ((class & 0b01) << 4)
            | ((class & 0b10) << 7);
        out.extend_from_slice(&typ.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        out.extend_from_slice(&self.transaction);
        for attribute in &self.attributes {
            put_attribute(&mut out, attribute.kind(), &attribute.value(&self.transaction));
        }
        if let Some(key) = key {
            // The length covers the MESSAGE-INTEGRITY attribute the HMAC is computed for.
            let covered = out.len() - HEADER_LEN + 4 + INTEGRITY_LEN;
            set_length(&mut out, covered);
            let mac = hmac_sha1(key, &out);
            put_attribute(&mut out, Attribute::MESSAGE_INTEGRITY, &mac);
        }
        let length = out.len() - HEADER_LEN;
        set_length(&mut out, length);
        out
    }

    /// Reads a message; attributes after a MESSAGE-INTEGRITY (a FINGERPRINT) are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Message, StunError> {
        if !is_stun(bytes) {
            return Err(StunError::NotStun);
        }
        let typ = u16::from_be_bytes([bytes[0], bytes[1]]);
        let length = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if HEADER_LEN + length != bytes.len() || length % 4 != 0 {
            return Err(StunError::Malformed("the length does not match the datagram"));
        }
        let method_code = (typ & 0x000F) | ((typ >> 1) & 0x0070) | ((typ >> 2) & 0x0F80);
        let method =
            Method::from_code(method_code).ok_or(StunError::Malformed("unknown method"))?;
        let class = Class::from_bits(((typ >> 4) & 0b01) | ((typ >> 7) & 0b10));
        let mut transaction = [0u8; 12];
        transaction.copy_from_slice(&bytes[8..HEADER_LEN]);
        let mut message = Message::new(method, class, transaction);
        let mut at = HEADER_LEN;
        while at < bytes.len() {
            let header =
                bytes.get(at..at + 4).ok_or(StunError::Malformed("a truncated attribute"))?;
            let kind = u16::from_be_bytes([header[0], header[1]]);
            let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
            let value = bytes
                .get(at + 4..at + 4 + len)
                .ok_or(StunError::Malformed("an attribute runs past the message"))?;
            if kind == Attribute::MESSAGE_INTEGRITY {
                let mac = value
                    .try_into()
                    .map_err(|_| StunError::Malformed("MESSAGE-INTEGRITY is not 20 bytes"))?;
                message.integrity = Some((at, mac));
                break;
            }
            if let Some(attribute) = Attribute::parse(kind, value, &transaction)? {
                message.attributes.push(attribute);
            }
            at += 4 + len.next_multiple_of(4);
        }
        Ok(message)
    }

    /// Whether the message as read carried a MESSAGE-INTEGRITY (valid or not).
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Whether `bytes` (this message as read) carry a MESSAGE-INTEGRITY made with `key`.
    pub fn verify(&self, bytes: &[u8], key: &[u8]) -> bool {
        let Some((at, mac)) = self.integrity else { return false };
        let Some(covered) = bytes.get(..at) else { return false };
        let mut covered = covered.to_vec();
        set_length(&mut covered, at - HEADER_LEN + 4 + INTEGRITY_LEN);
        let mut check =
            <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
        check.update(&covered);
        check.verify_slice(&mac).is_ok()
    }

    /// The USERNAME, if any.
    pub fn username(&self) -> Option<&str> {
        self.find(|a| match a {
            Attribute::Username(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The REALM, if any.
    pub fn realm(&self) -> Option<&str> {
        self.find(|a| match a {
            Attribute::Realm(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The NONCE, if any.
    pub fn nonce(&self) -> Option<&str> {
        self.find(|a| match a {
            Attribute::Nonce(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// The ERROR-CODE's code and reason, if any.
    pub fn error_code(&self) -> Option<(u16, &str)> {
        self.find(|a| match a {
            Attribute::ErrorCode(code, reason) => Some((*code, reason.as_str())),
            _ => None,
        })
    }

    /// The LIFETIME, if any.
    pub fn lifetime(&self) -> Option<u32> {
        self.find(|a| match a {
            Attribute::Lifetime(secs) => Some(*secs),
            _ => None,
        })
    }

    /// The REQUESTED-TRANSPORT, if any.
    pub fn requested_transport(&self) -> Option<u8> {
        self.find(|a| match a {
            Attribute::RequestedTransport(proto) => Some(*proto),
            _ => None,
        })
    }

    /// The XOR-PEER-ADDRESS, if any.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorPeerAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The XOR-RELAYED-ADDRESS, if any.
    pub fn relayed(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorRelayedAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The XOR-MAPPED-ADDRESS, if any.
    pub fn mapped(&self) -> Option<SocketAddr> {
        self.find(|a| match a {
            Attribute::XorMappedAddress(addr) => Some(*addr),
            _ => None,
        })
    }

    /// The DATA, if any.
    pub fn data(&self) -> Option<&[u8]> {
        self.find(|a| match a {
            Attribute::Data(d) => Some(d.as_slice()),
            _ => None,
        })
    }

    fn find<'a, T>(&'a self, pick: impl Fn(&'a Attribute) -> Option<T>) -> Option<T> {
        self.attributes.iter().find_map(pick)
    }
}

/// Whether `bytes` look like a STUN message: the two top bits clear and the magic cookie in
/// place (RFC 8489 §6; RFC 7983 tells it apart from DTLS, RTP and TURN ChannelData).
pub fn is_stun(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_LEN && bytes[0] & 0xC0 == 0 && bytes[4..8] == MAGIC_COOKIE.to_be_bytes()
}

/// The long-term credential key: MD5 of `username:realm:password` (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let digest = Md5::digest(format!("{username}:{realm}:{password}").as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest);
    key
}

fn hmac_sha1(key: &[u8], bytes: &[u8]) -> [u8; INTEGRITY_LEN] {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(bytes);
    let mut out = [0u8; INTEGRITY_LEN];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

fn set_length(message: &mut [u8], length: usize) {
    let length = u16::try_from(length).unwrap_or(u16::MAX);
    message[2..4].copy_from_slice(&length.to_be_bytes());
}

fn put_attribute(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The XOR mask for an address: the magic cookie, then the transaction id (IPv6).
fn mask(transaction: &[u8; 12]) -> [u8; 16] {
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    mask[4..].copy_from_slice(transaction);
    mask
}

fn xor_address(addr: SocketAddr, transaction: &[u8; 12]) -> Vec<u8> {
    let mask = mask(transaction);
    let port = addr.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let (family, ip): (u8, Vec<u8>) = match addr.ip() {
        IpAddr::V4(ip) => (0x01, ip.octets().to_vec()),
        IpAddr::V6(ip) => (0x02, ip.octets().to_vec()),
    };
    let mut out = vec![0, family];
    out.extend_from_slice(&port.to_be_bytes());
    out.extend(ip.iter().zip(mask).map(|(b, m)| b ^ m));
    out
}

fn unxor_address(value: &[u8], transaction: &[u8; 12]) -> Result<SocketAddr, StunError> {
    let mask = mask(transaction);
    let bad = StunError::Malformed("an XOR address of the wrong length");
    let [_, family, p0, p1, ip @ ..] = value else { return Err(bad) };
    let port = u16::from_be_bytes([*p0, *p1]) ^ (MAGIC_COOKIE >> 16) as u16;
    let mut octets = [0u8; 16];
    for (i, b) in ip.iter().enumerate().take(16) {
        octets[i] = b ^ mask[i];
    }
    let ip = match (family, ip.len()) {
        (0x01, 4) => IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
        (0x02, 16) => IpAddr::V6(Ipv6Addr::from(octets)),
        _ => return Err(bad),
    };
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: [u8; 12] = [0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae];

    #[test]
    fn an_authenticated_allocate_round_trips_and_verifies_only_with_its_key() {
        let key = long_term_key("user", "livekit", "secret");
        let sent = Message::new(Method::Allocate, Class::Request, TX)
            .with(Attribute::RequestedTransport(TRANSPORT_UDP))
            .with(Attribute::Username("user".into()))
            .with(Attribute::Realm("livekit".into()))
            .with(Attribute::Nonce("abc".into()));
        let bytes = sent.encode(Some(&key));
        let read = Message::decode(&bytes).expect("decodes");
        assert_eq!(read.method, Method::Allocate);
        assert_eq!(read.class, Class::Request);
        assert_eq!(read.requested_transport(), Some(TRANSPORT_UDP));
        assert_eq!(
            (read.username(), read.realm(), read.nonce()),
            (Some("user"), Some("livekit"), Some("abc"))
        );
        assert!(read.has_integrity() && read.verify(&bytes, &key));
        assert!(!read.verify(&bytes, &long_term_key("user", "livekit", "wrong")));
        assert!(!Message::decode(&sent.encode(None)).expect("decodes").has_integrity());
        let mut tampered = bytes.clone();
        tampered[HEADER_LEN + 4] ^= 1;
        let read = Message::decode(&tampered).expect("still decodes");
        assert!(!read.verify(&tampered, &key));
    }

    #[test]
    fn addresses_and_data_round_trip_in_both_families() {
        for addr in ["192.0.2.1:32853", "[2001:db8::1]:40000"] {
            let addr: SocketAddr = addr.parse().expect("an address");
            let bytes = Message::new(Method::Data, Class::Indication, TX)
                .with(Attribute::XorPeerAddress(addr))
                .with(Attribute::Data(vec![1, 2, 3]))
                .encode(None);
            let read = Message::decode(&bytes).expect("decodes");
            assert_eq!((read.peer(), read.data()), (Some(addr), Some(&[1u8, 2, 3][..])));
        }
    }

    #[test]
    fn the_xor_mapped_address_matches_rfc_5769() {
        // RFC 5769 §2.2: 192.0.2.1:32853 is sent as family 1, port 0xa147, 0xe112a643.
        let value = [0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43];
        assert_eq!(unxor_address(&value, &TX), Ok("192.0.2.1:32853".parse().expect("addr")));
    }

    #[test]
    fn an_error_response_carries_its_code() {
        let bytes = Message::new(Method::Allocate, Class::Error, TX)
            .with(Attribute::ErrorCode(401, "Unauthorized".into()))
            .encode(None);
        let read = Message::decode(&bytes).expect("decodes");
        assert_eq!(read.class, Class::Error);
        assert_eq!(read.error_code(), Some((401, "Unauthorized")));
    }

    #[test]
    fn other_protocols_and_broken_messages_are_refused() {
        assert_eq!(Message::decode(&[0x16, 0xfe, 0xfd, 0]), Err(StunError::NotStun));
        let mut bytes = Message::new(Method::Refresh, Class::Request, TX)
            .with(Attribute::Lifetime(600))
            .encode(None);
        bytes.pop();
        assert!(matches!(
            Message::decode(&bytes),
            Err(StunError::NotStun | StunError::Malformed(_))
        ));
    }
}
