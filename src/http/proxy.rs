//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2), incremental.
//!
//! A TCP load balancer (HAProxy with `send-proxy`/`send-proxy-v2`, AWS NLB, stunnel) opens its
//! own connection to us, so the socket's peer is the balancer. With the PROXY protocol it
//! starts that connection with one header naming the client it relays; `--proxy-protocol`
//! makes minigun read it before the first request, and the client it names becomes
//! `REMOTE_ADDR`/`REMOTE_PORT` and the access log's remote for every request on the connection.
//!
//! Two formats, told apart by their first bytes (§2.2, "identifying the protocol version"):
//!
//! * version 1, one text line: `PROXY TCP4|TCP6|UNKNOWN src dst sport dport\r\n`, at most
//!   [`V1_MAX`] bytes with its CRLF (§2.1);
//! * version 2, binary: the 12-byte [`V2_SIGNATURE`], a version/command byte, a
//!   family/protocol byte, a 16-bit length, then that many bytes of addresses and TLVs (§2.2).
//!   We read the addresses and skip the TLVs, which §2.2 allows.
//!
//! [`parse`] answers like the HTTP parser: `Ok(Status::Complete((len, header)))`,
//! `Ok(Status::Partial)` meaning read more, or `Err(Error)`. It keeps no state between calls:
//! the header is at most [`V2_MAX`] bytes, so parsing the buffer again from its start on every
//! read costs little even when the header arrives one byte at a time, and every answer depends
//! only on the bytes, never on how they were split. An error is found as soon as the bytes that
//! show it have arrived (a version-3 byte fails at byte 13, not once the length has been read).
//!
//! This module knows nothing of sockets: whether a peer may send the header at all
//! ([`AllowList`], `--proxy-allow-from`) is decided by the worker on the socket's own peer,
//! and the connection (`conn::Phase::Proxy`) feeds the bytes here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::parse::Status;

/// The longest version 1 line, CRLF included (§2.1: `PROXY UNKNOWN` with two full IPv6
/// addresses and two 5-digit ports is 107 bytes).
pub const V1_MAX: usize = 107;

/// The first 12 bytes of a version 2 header (§2.2). Its NUL and bare LFs make it an invalid
/// start for HTTP, TLS and the other common protocols.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The largest version 2 header we take, fixed part included. The addresses need at most 232
/// bytes (two AF_UNIX paths); the rest is TLVs, which HAProxy and the cloud balancers keep to
/// a few hundred bytes (SSL details, a unique ID of up to 128 bytes, an AWS endpoint ID). The
/// length field could announce 64 KiB; holding that much for a header we skip is not worth it.
pub const V2_MAX: usize = 4096;

/// Which header versions `--proxy-protocol` accepts; gunicorn's modes (24.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No PROXY protocol: the socket's peer is the client (the default).
    Off,
    /// The text header only.
    V1,
    /// The binary header only.
    V2,
    /// Either, told apart by their first bytes (what a bare `--proxy-protocol` means).
    Auto,
}

impl Mode {
    /// Reads a `--proxy-protocol` value: `off`, `v1`, `v2`, `auto`, or a boolean (gunicorn
    /// before 24.1 took a switch, and config files say `proxy_protocol = True`: true is
    /// `auto`, false is `off`).
    pub fn parse(v: &str) -> Option<Mode> {
        match v.trim().to_ascii_lowercase().as_str() {
            "v1" => Some(Mode::V1),
            "v2" => Some(Mode::V2),
            "auto" | "true" | "1" | "yes" | "on" => Some(Mode::Auto),
            "off" | "false" | "0" | "no" | "none" => Some(Mode::Off),
            _ => None,
        }
    }

    fn takes_v1(self) -> bool {
        matches!(self, Mode::V1 | Mode::Auto)
    }

    fn takes_v2(self) -> bool {
        matches!(self, Mode::V2 | Mode::Auto)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Off => "off",
            Mode::V1 => "v1",
            Mode::V2 => "v2",
            Mode::Auto => "auto",
        })
    }
}

/// The header's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Text (§2.1).
    V1,
    /// Binary (§2.2).
    V2,
}

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A relayed TCP connection: the client's address and port, and the address it connected
    /// to on the balancer.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// Where the client connected (the balancer's frontend).
        destination: SocketAddr,
    },
    /// Use the connection's own endpoints: v1 `UNKNOWN`, a v2 `LOCAL` command (the balancer's
    /// own health check), or a v2 family we do not take addresses from (unspecified, UDP,
    /// AF_UNIX), which §2.2 says to treat as unspecified.
    Local,
}

/// Why a header is refused. Every one is answered 400 and the connection closed: §2.1 says a
/// sequence that does not exactly match the protocol must abort the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The connection does not start with a header of an accepted version.
    Missing,
    /// A version 1 line with no CRLF in its first [`V1_MAX`] bytes.
    LineTooLong,
    /// A version 2 header longer than [`V2_MAX`].
    TooLarge,
    /// A header that breaks the grammar, and the rule it broke.
    Malformed(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing => f.write_str("PROXY protocol header expected"),
            Error::LineTooLong => f.write_str("PROXY v1 line longer than 107 bytes"),
            Error::TooLarge => write!(f, "PROXY v2 header larger than {V2_MAX} bytes"),
            Error::Malformed(why) => write!(f, "invalid PROXY header: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for super::Error {
    fn from(e: Error) -> super::Error {
        super::Error::BadRequest(match e {
            Error::Missing => "PROXY protocol header expected",
            Error::LineTooLong => "PROXY v1 line longer than 107 bytes",
            Error::TooLarge => "PROXY v2 header too large",
            Error::Malformed(why) => why,
        })
    }
}

/// Tells whether `buf` starts with a header `mode` accepts, from as few bytes as it takes:
/// `Partial` while the bytes are still a prefix of one (an empty buffer is), `Complete(None)`
/// as soon as they cannot be. Used on peers that may not send a header, to refuse one that does.
pub fn detect(buf: &[u8], mode: Mode) -> Status<Option<Version>> {
    let starts = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    if mode.takes_v2() && starts(&V2_SIGNATURE) {
        return if buf.len() >= V2_SIGNATURE.len() {
            Status::Complete(Some(Version::V2))
        } else {
            Status::Partial
        };
    }
    // "PROXY" and the space: gunicorn's test, which also keeps an HTTP method named PROXY
    // from being taken for a header.
    if mode.takes_v1() && starts(b"PROXY ") {
        return if buf.len() >= 6 {
            Status::Complete(Some(Version::V1))
        } else {
            Status::Partial
        };
    }
    Status::Complete(None)
}

/// Parses the header at the start of `buf`: its length and what it says, `Partial` when more
/// bytes are needed, or why it is refused.
pub fn parse(buf: &[u8], mode: Mode) -> Result<Status<(usize, Header)>, Error> {
    match detect(buf, mode) {
        Status::Partial => Ok(Status::Partial),
        Status::Complete(None) => Err(Error::Missing),
        Status::Complete(Some(Version::V1)) => parse_v1(buf),
        Status::Complete(Some(Version::V2)) => parse_v2(buf),
    }
}

/// Version 1 (§2.1). The line must end in CRLF within [`V1_MAX`] bytes and be printable
/// US-ASCII; a lone CR or LF is refused at once ("the receiver must not tolerate a single CR
/// or LF character to end the line").
fn parse_v1(buf: &[u8]) -> Result<Status<(usize, Header)>, Error> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' if i > 0 && window[i - 1] == b'\r' => {
                end = Some(i + 1);
                break;
            }
            b'\n' => return Err(Error::Malformed("bare LF in the PROXY line")),
            b'\r' if i + 1 < window.len() && window[i + 1] != b'\n' => {
                return Err(Error::Malformed("CR without LF in the PROXY line"))
            }
            b'\r' | b' '..=b'~' => {}
            _ => {
                return Err(Error::Malformed(
                    "control or non-ASCII byte in the PROXY line",
                ))
            }
        }
    }
    let Some(end) = end else {
        return if buf.len() >= V1_MAX {
            Err(Error::LineTooLong)
        } else {
            Ok(Status::Partial)
        };
    };
    // Between "PROXY " and the CRLF; exactly one space between fields.
    let line = &buf[6..end - 2];
    let mut fields = line.split(|&b| b == b' ');
    let header = match fields.next() {
        // "The receiver must ignore anything presented before the CRLF is found."
        Some(b"UNKNOWN") => Header::Local,
        Some(proto @ (b"TCP4" | b"TCP6")) => {
            let v4 = proto == b"TCP4";
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
                fields.next(),
            ) else {
                return Err(Error::Malformed("a TCP PROXY line has exactly 5 fields"));
            };
            let source = SocketAddr::new(v1_addr(src, v4)?, v1_port(sport)?);
            let destination = SocketAddr::new(v1_addr(dst, v4)?, v1_port(dport)?);
            Header::Proxied {
                source,
                destination,
            }
        }
        _ => {
            return Err(Error::Malformed(
                "PROXY protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    Ok(Status::Complete((end, header)))
}

/// An address of the line's family. The standard library's parsers are as strict as §2.1:
/// no leading zeros in IPv4, at most 4 hex digits a group and 128 bits in IPv6, no zone.
fn v1_addr(field: &[u8], v4: bool) -> Result<IpAddr, Error> {
    let text = std::str::from_utf8(field).map_err(|_| Error::Malformed("bad address"))?;
    if v4 {
        text.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| Error::Malformed("TCP4 address is not IPv4"))
    } else {
        text.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| Error::Malformed("TCP6 address is not IPv6"))
    }
}

/// A port: decimal, 0 to 65535, without leading zeros (§2.1).
fn v1_port(field: &[u8]) -> Result<u16, Error> {
    const BAD: Error = Error::Malformed("port is not a number from 0 to 65535");
    if field.is_empty() || field.len() > 5 || (field.len() > 1 && field[0] == b'0') {
        return Err(BAD);
    }
    let mut n: u32 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return Err(BAD);
        }
        n = n * 10 + u32::from(b - b'0');
    }
    u16::try_from(n).map_err(|_| BAD)
}

/// Version 2 (§2.2). Checks run in byte order, each as soon as its byte is here.
fn parse_v2(buf: &[u8]) -> Result<Status<(usize, Header)>, Error> {
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(Status::Partial);
    };
    // "The highest four bits contains the version ... the receiver must only accept this
    // value"; commands other than LOCAL and PROXY "must" drop the connection.
    if ver_cmd >> 4 != 2 {
        return Err(Error::Malformed("PROXY v2 version is not 2"));
    }
    let local = match ver_cmd & 0x0F {
        0x0 => true,
        0x1 => false,
        _ => return Err(Error::Malformed("PROXY v2 command is not LOCAL or PROXY")),
    };
    let Some(&family) = buf.get(13) else {
        return Ok(Status::Partial);
    };
    // The address bytes each family needs; the LOCAL command's family "is ignored".
    let needed = match (local, family) {
        (true, _) | (false, 0x00) => 0,
        (false, 0x11) => 12, // TCP over IPv4: two addresses of 4 bytes, two ports
        (false, 0x21) => 36, // TCP over IPv6: two of 16, two ports
        // UDP and AF_UNIX are valid combinations we take no address from: §2.2 says a
        // receiver falls back to UNSPEC for those ("use the real connection endpoints").
        (false, 0x12 | 0x22 | 0x31 | 0x32) => 0,
        _ => {
            return Err(Error::Malformed(
                "PROXY v2 address family or protocol unknown",
            ))
        }
    };
    let (Some(&hi), Some(&lo)) = (buf.get(14), buf.get(15)) else {
        return Ok(Status::Partial);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if 16 + len > V2_MAX {
        return Err(Error::TooLarge);
    }
    if len < needed {
        return Err(Error::Malformed("PROXY v2 address block too short"));
    }
    let total = 16 + len;
    if buf.len() < total {
        return Ok(Status::Partial);
    }
    let block = &buf[16..total];
    let header = match (local, family) {
        (false, 0x11) => {
            let ip =
                |at: usize| IpAddr::from([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            }
        }
        (false, 0x21) => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::from(octets)
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            }
        }
        // The rest of the block (TLVs: SSL details, unique IDs, cloud endpoint IDs) is
        // skipped, as §2.2 allows.
        _ => Header::Local,
    };
    Ok(Status::Complete((total, header)))
}

/// The peers allowed to send a PROXY header (`--proxy-allow-from`): `*`, or addresses and
/// networks. A unix-socket peer has no address and is always allowed, as in gunicorn: only
/// processes that may open the socket file can be one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowList {
    /// `*`: any peer.
    Anyone,
    /// These networks (a bare address is a network of one).
    Only(Vec<(IpAddr, u8)>),
}

impl Default for AllowList {
    /// gunicorn's default, `127.0.0.1,::1`: a balancer on the same host.
    fn default() -> AllowList {
        AllowList::Only(vec![
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 32),
            (IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
        ])
    }
}

impl AllowList {
    /// Parses a comma-separated list of `*`, addresses and CIDR networks (`10.0.0.0/8`,
    /// `fd00::/8`); host bits after the prefix are ignored, as Python's
    /// `ip_network(strict=False)` ignores them.
    pub fn parse(list: &str) -> Result<AllowList, String> {
        let mut nets = Vec::new();
        let mut anyone = false;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                anyone = true;
                continue;
            }
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| {
                format!("invalid address '{item}' (expected an IP, a CIDR network or *)")
            })?;
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => bits,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .filter(|&p| p <= bits)
                    .ok_or_else(|| format!("invalid network '{item}' (prefix 0 to {bits})"))?,
            };
            // `::ffff:a.b.c.d` is how an IPv4 peer looks on a dual-stack listener, and peers
            // are matched in their IPv4 form (see `allows`): store such entries that way too.
            let net = match ip {
                IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                    Some(v4) => (IpAddr::V4(v4), prefix - 96),
                    None => (ip, prefix),
                },
                _ => (ip, prefix),
            };
            nets.push(net);
        }
        Ok(if anyone {
            AllowList::Anyone
        } else {
            AllowList::Only(nets)
        })
    }

    /// True when `peer` may send a header. An IPv4 client and its IPv4-mapped IPv6 form
    /// (`::ffff:a.b.c.d`, how it arrives on a dual-stack listener) are one peer: either form
    /// may match, so `10.0.0.0/8` and `::ffff:10.0.0.0/104` allow the same clients.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let v4 = peer.to_canonical();
        let v6 = match v4 {
            IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
            v6 => v6,
        };
        match self {
            AllowList::Anyone => true,
            AllowList::Only(nets) => nets
                .iter()
                .any(|&(net, prefix)| in_network(v4, net, prefix) || in_network(v6, net, prefix)),
        }
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowList::Anyone => f.write_str("*"),
            AllowList::Only(nets) => {
                for (i, (ip, prefix)) in nets.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    let full = if ip.is_ipv4() { 32 } else { 128 };
                    if *prefix == full {
                        write!(f, "{sep}{ip}")?;
                    } else {
                        write!(f, "{sep}{ip}/{prefix}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

/// True when the first `prefix` bits of `ip` and `net` agree (same family only).
fn in_network(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let mask = |bits: u32, prefix: u8| -> u128 {
        if prefix == 0 {
            0
        } else {
            (u128::MAX << (bits - u32::from(prefix))) & (u128::MAX >> (128 - bits))
        }
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let m = mask(32, prefix);
            u128::from(u32::from(a)) & m == u128::from(u32::from(b)) & m
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let m = mask(128, prefix);
            u128::from(a) & m == u128::from(b) & m
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small xorshift generator, so random splits replay exactly.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Feeds `input` in pieces of the given sizes, as reads would deliver it, stopping at the
    /// first answer that is not `Partial`; `Ok(None)` when all of it is still partial.
    fn feed(
        input: &[u8],
        pieces: impl Iterator<Item = usize>,
        mode: Mode,
    ) -> Result<Option<(usize, Header)>, Error> {
        let mut buf = Vec::new();
        let mut at = 0;
        for n in pieces {
            let n = n.min(input.len() - at);
            buf.extend_from_slice(&input[at..at + n]);
            at += n;
            if let Status::Complete(done) = parse(&buf, mode)? {
                return Ok(Some(done));
            }
            if at == input.len() {
                break;
            }
        }
        Ok(None)
    }

    /// Parses `input` whole, byte by byte, in pieces of 2 to 7, and in 50 random splits: every
    /// way must give the same answer.
    fn parse_all_ways(input: &[u8], mode: Mode) -> Result<Option<(usize, Header)>, Error> {
        let whole = feed(input, std::iter::once(input.len().max(1)), mode);
        let mut ways: Vec<Vec<usize>> = (1..8).map(|n| vec![n; input.len().max(1)]).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ input.len() as u64);
        for _ in 0..50 {
            let mut left = input.len();
            let mut way = Vec::new();
            while left > 0 {
                let n = (rng.next() % 24 + 1) as usize;
                way.push(n.min(left));
                left -= n.min(left);
            }
            ways.push(way);
        }
        for way in ways {
            let split = feed(input, way.iter().copied(), mode);
            assert_eq!(whole, split, "split {way:?} differs");
        }
        whole
    }

    fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(ver_cmd);
        out.push(family);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// A header that parses: `$len` bytes long, saying `$header`, with HTTP after it.
    macro_rules! ok {
        ($name:ident, $mode:expr, $input:expr, $len:expr, $header:expr) => {
            #[test]
            fn $name() {
                let mut input: Vec<u8> = $input.to_vec();
                input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
                let got = parse_all_ways(&input, $mode);
                assert_eq!(got, Ok(Some(($len, $header))));
            }
        };
    }

    /// A header refused with `$err`, however it arrives.
    macro_rules! bad {
        ($name:ident, $mode:expr, $input:expr, $err:pat) => {
            #[test]
            fn $name() {
                let got = parse_all_ways(&$input, $mode);
                assert!(matches!(got, Err($err)), "got {got:?}");
            }
        };
    }

    const V1_TCP4: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";

    ok!(
        v1_tcp4_names_the_client,
        Mode::Auto,
        V1_TCP4,
        V1_TCP4.len(),
        Header::Proxied {
            source: addr("192.168.0.1:56324"),
            destination: addr("192.168.0.11:443")
        }
    );
    ok!(
        v1_tcp6_names_the_client,
        Mode::V1,
        b"PROXY TCP6 2001:db8::1 2001:DB8::2 65535 0\r\n",
        44,
        Header::Proxied {
            source: addr("[2001:db8::1]:65535"),
            destination: addr("[2001:db8::2]:0")
        }
    );
    ok!(
        v1_unknown_short_form_is_local,
        Mode::Auto,
        b"PROXY UNKNOWN\r\n",
        15,
        Header::Local
    );
    ok!(
        v1_unknown_ignores_the_rest_of_its_line,
        Mode::Auto,
        b"PROXY UNKNOWN ffff:f::f:ffff 1.2.3.4 anything at all\r\n",
        54,
        Header::Local
    );
    ok!(
        v1_longest_line_is_accepted,
        Mode::Auto,
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
        107,
        Header::Local
    );
    ok!(
        v2_tcp4_names_the_client,
        Mode::Auto,
        v2(0x21, 0x11, &[10, 0, 0, 7, 10, 0, 0, 1, 0xD4, 0x31, 0, 80]),
        28,
        Header::Proxied {
            source: addr("10.0.0.7:54321"),
            destination: addr("10.0.0.1:80")
        }
    );
    ok!(
        v2_tcp6_names_the_client,
        Mode::V2,
        v2(0x21, 0x21, &{
            let mut b = [0u8; 36];
            b[0] = 0x20;
            b[1] = 0x01;
            b[15] = 1;
            b[31] = 2;
            b[32..34].copy_from_slice(&443u16.to_be_bytes());
            b[34..36].copy_from_slice(&8000u16.to_be_bytes());
            b
        }),
        52,
        Header::Proxied {
            source: addr("[2001::1]:443"),
            destination: addr("[::2]:8000")
        }
    );
    ok!(
        v2_tlvs_are_skipped,
        Mode::Auto,
        v2(
            0x21,
            0x11,
            &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0xEA, 0, 3, b'v', b'p', b'c', 0x04, 0, 0]
        ),
        37,
        Header::Proxied {
            source: addr("1.2.3.4:1"),
            destination: addr("5.6.7.8:2")
        }
    );
    ok!(
        v2_local_uses_the_real_endpoints,
        Mode::Auto,
        v2(0x20, 0x00, &[]),
        16,
        Header::Local
    );
    ok!(
        v2_local_skips_whatever_block_it_has,
        Mode::Auto,
        v2(0x20, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]),
        28,
        Header::Local
    );
    ok!(
        v2_unspecified_family_is_local,
        Mode::Auto,
        v2(0x21, 0x00, &[9, 9, 9]),
        19,
        Header::Local
    );
    ok!(
        v2_udp_falls_back_to_the_real_endpoints,
        Mode::Auto,
        v2(0x21, 0x12, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2]),
        28,
        Header::Local
    );
    ok!(
        v2_unix_falls_back_to_the_real_endpoints,
        Mode::Auto,
        v2(0x21, 0x31, &[b'/'; 216]),
        232,
        Header::Local
    );

    bad!(v1_refused_in_v2_mode, Mode::V2, V1_TCP4, Error::Missing);
    bad!(
        v2_refused_in_v1_mode,
        Mode::V1,
        v2(0x20, 0x00, &[]),
        Error::Missing
    );
    bad!(
        plain_http_is_missing_the_header,
        Mode::Auto,
        *b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
        Error::Missing
    );
    bad!(
        http_method_named_proxy_is_not_a_header,
        Mode::Auto,
        *b"PROXYFIND / HTTP/1.1\r\n\r\n",
        Error::Missing
    );
    bad!(
        blank_lines_then_http_are_missing_the_header,
        Mode::Auto,
        *b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        Error::Missing
    );
    bad!(
        v1_without_crlf_in_107_bytes,
        Mode::Auto,
        [&b"PROXY UNKNOWN "[..], &[b'f'; 200]].concat(),
        Error::LineTooLong
    );
    bad!(
        v1_crlf_at_byte_108_is_too_late,
        Mode::Auto,
        *b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 655355\r\n",
        Error::LineTooLong
    );
    bad!(
        v1_bare_lf,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_lone_cr,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_nul_byte,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4\x005.6.7.8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_two_spaces,
        Mode::Auto,
        *b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_missing_field,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_extra_field,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_trailing_space,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_unknown_protocol,
        Mode::Auto,
        *b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_lowercase_protocol,
        Mode::Auto,
        *b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_ipv6_in_tcp4,
        Mode::Auto,
        *b"PROXY TCP4 ::1 ::1 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_ipv4_in_tcp6,
        Mode::Auto,
        *b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_leading_zero_in_address,
        Mode::Auto,
        *b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_leading_zero_in_port,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_port_too_large,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_signed_port,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_zone_in_ipv6,
        Mode::Auto,
        *b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v1_non_ascii,
        Mode::Auto,
        *b"PROXY TCP4 1.2.3.4 5.6.7.\xb8 1 2\r\n",
        Error::Malformed(_)
    );
    bad!(
        v2_version_1,
        Mode::Auto,
        v2(0x11, 0x11, &[0; 12]),
        Error::Malformed(_)
    );
    bad!(
        v2_version_3,
        Mode::Auto,
        v2(0x31, 0x11, &[0; 12]),
        Error::Malformed(_)
    );
    bad!(
        v2_unknown_command,
        Mode::Auto,
        v2(0x22, 0x11, &[0; 12]),
        Error::Malformed(_)
    );
    bad!(
        v2_unknown_family,
        Mode::Auto,
        v2(0x21, 0x41, &[0; 12]),
        Error::Malformed(_)
    );
    bad!(
        v2_unknown_protocol,
        Mode::Auto,
        v2(0x21, 0x13, &[0; 12]),
        Error::Malformed(_)
    );
    bad!(
        v2_tcp4_block_too_short,
        Mode::Auto,
        v2(0x21, 0x11, &[0; 11]),
        Error::Malformed(_)
    );
    bad!(
        v2_tcp6_block_too_short,
        Mode::Auto,
        v2(0x21, 0x21, &[0; 35]),
        Error::Malformed(_)
    );
    bad!(
        v2_too_large,
        Mode::Auto,
        v2(0x21, 0x11, &[0; V2_MAX - 15]),
        Error::TooLarge
    );

    #[test]
    fn v2_at_the_size_limit_is_accepted() {
        let input = v2(0x21, 0x11, &[0; V2_MAX - 16]);
        assert_eq!(
            parse_all_ways(&input, Mode::Auto).map(|h| h.map(|h| h.0)),
            Ok(Some(V2_MAX))
        );
    }

    #[test]
    fn a_truncated_header_waits_for_more() {
        for input in [V1_TCP4.to_vec(), v2(0x21, 0x11, &[0; 12])] {
            for cut in 0..input.len() {
                assert_eq!(
                    parse(&input[..cut], Mode::Auto),
                    Ok(Status::Partial),
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn errors_show_as_soon_as_their_byte_arrives() {
        // The version nibble is byte 13: refused before the length is known.
        let mut input = V2_SIGNATURE.to_vec();
        input.push(0x31);
        assert!(matches!(
            parse(&input, Mode::Auto),
            Err(Error::Malformed(_))
        ));
        // An announced length past the limit is refused before the bytes come.
        let input = [&V2_SIGNATURE[..], &[0x21, 0x11, 0xFF, 0xFF]].concat();
        assert_eq!(parse(&input, Mode::Auto), Err(Error::TooLarge));
        // A bare LF in a v1 line at once, not at byte 107.
        assert!(matches!(
            parse(b"PROXY TCP4\n", Mode::Auto),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn detect_answers_from_the_fewest_bytes() {
        assert_eq!(detect(b"", Mode::Auto), Status::Partial);
        assert_eq!(detect(b"PROX", Mode::Auto), Status::Partial);
        assert_eq!(detect(b"POST", Mode::Auto), Status::Complete(None));
        assert_eq!(detect(b"\r\n\r\n\0", Mode::Auto), Status::Partial);
        assert_eq!(detect(b"\r\n\r\nG", Mode::Auto), Status::Complete(None));
        assert_eq!(
            detect(b"PROXY ", Mode::V1),
            Status::Complete(Some(Version::V1))
        );
        assert_eq!(detect(b"PROXY ", Mode::V2), Status::Complete(None));
        assert_eq!(
            detect(&V2_SIGNATURE, Mode::V2),
            Status::Complete(Some(Version::V2))
        );
        assert_eq!(detect(b"", Mode::Off), Status::Complete(None));
    }

    #[test]
    fn modes_read_as_gunicorn_writes_them() {
        assert_eq!(Mode::parse("v1"), Some(Mode::V1));
        assert_eq!(Mode::parse("V2"), Some(Mode::V2));
        assert_eq!(Mode::parse("auto"), Some(Mode::Auto));
        assert_eq!(Mode::parse("true"), Some(Mode::Auto));
        assert_eq!(Mode::parse("False"), Some(Mode::Off));
        assert_eq!(Mode::parse("off"), Some(Mode::Off));
        assert_eq!(Mode::parse("v3"), None);
        assert_eq!(Mode::parse("app:app"), None);
    }

    #[test]
    fn allow_list_matches_addresses_and_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("test address");
        let default = AllowList::default();
        assert!(default.allows(ip("127.0.0.1")));
        assert!(default.allows(ip("::1")));
        assert!(default.allows(ip("::ffff:127.0.0.1")));
        assert!(!default.allows(ip("127.0.0.2")));
        assert!(!default.allows(ip("10.0.0.1")));
        let nets = AllowList::parse("10.0.0.0/8, 192.168.1.7 ,fd00::/8").expect("valid list");
        assert!(nets.allows(ip("10.255.0.1")));
        assert!(!nets.allows(ip("11.0.0.1")));
        assert!(nets.allows(ip("192.168.1.7")));
        assert!(!nets.allows(ip("192.168.1.8")));
        assert!(nets.allows(ip("fd12::1")));
        assert!(!nets.allows(ip("fe80::1")));
        assert_eq!(nets.to_string(), "10.0.0.0/8,192.168.1.7,fd00::/8");
        assert!(AllowList::parse("0.0.0.0/0")
            .expect("valid")
            .allows(ip("8.8.8.8")));
        assert!(!AllowList::parse("0.0.0.0/0")
            .expect("valid")
            .allows(ip("::2")));
        assert!(AllowList::parse("10.1.2.3/8")
            .expect("host bits")
            .allows(ip("10.9.9.9")));
        assert_eq!(AllowList::parse("10.0.0.1, *"), Ok(AllowList::Anyone));
        assert!(AllowList::parse("*, junk").is_err());
        assert_eq!(AllowList::parse(""), Ok(AllowList::Only(Vec::new())));
        let mapped = AllowList::parse("::ffff:10.0.0.1, ::ffff:192.168.0.0/112").expect("mapped");
        assert!(mapped.allows(ip("10.0.0.1")));
        assert!(mapped.allows(ip("::ffff:10.0.0.1")));
        assert!(mapped.allows(ip("192.168.3.4")));
        assert_eq!(mapped.to_string(), "10.0.0.1,192.168.0.0/16");
        // Found by fuzz/ `proxy`: a mapped address in a network wider than the mapped range.
        let wide = AllowList::parse("::ffff:192.168.0.0/1").expect("wide");
        assert!(wide.allows(ip("::ffff:192.168.0.0")));
        assert!(wide.allows(ip("192.168.0.0")));
        assert!(AllowList::parse("::/0")
            .expect("all v6")
            .allows(ip("8.8.8.8")));
        assert!(AllowList::parse("10.0.0.0/33").is_err());
        assert!(AllowList::parse("localhost").is_err());
        assert!(AllowList::parse("::/129").is_err());
    }
}
