//! Writes the seed corpora, `corpus/parse_head/`, `corpus/chunked/` and `corpus/proxy/`, from the table of raw
//! requests in `../tests/requests/{valid,invalid}/*.http` plus a few built-in samples, so the
//! fuzzer starts from requests that reach deep into the parser instead of from nothing.
//!
//! Generated rather than committed: the table is the source of truth, and `corpus/` is where
//! libFuzzer keeps the inputs it finds interesting (ignored by git).

use std::path::Path;

use minigun_fuzz::{CHUNKED_PREFIX, HEAD_PREFIX, PROXY_PREFIX};

/// Chunked bodies worth starting from, beyond those in the table.
const BODIES: &[&[u8]] = &[
    b"0\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;a=b;c=\"d\\\"e\"\r\nhello\r\n6 ; x\r\n world\r\n0\r\nT: 1\r\nU: 2\r\n\r\n",
    b"A\r\n0123456789\r\n0000\r\n\r\n",
    b"fffffffffffffff\r\n",
    b"1\r\nx\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
];

/// Heads worth starting from, beyond those in the table.
const HEADS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\n\r\nPOST /a%20b?c=d HTTP/1.1\r\nHost: h:80\r\nContent-Length: 3\r\n\r\nabc",
    b"PUT http://x.example/p HTTP/1.1\r\nHost: y\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\nExpect: 100-continue\r\n\r\n",
];

/// First bytes of connections for `proxy`: headers of every kind, broken ones, plain HTTP.
fn proxy_seeds() -> Vec<Vec<u8>> {
    let sig = b"\r\n\r\n\0\r\nQUIT\n";
    let v2 = |ver_cmd: u8, fam: u8, block: &[u8]| {
        let mut out = sig.to_vec();
        out.extend_from_slice(&[ver_cmd, fam]);
        out.extend_from_slice(&(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        out
    };
    let mut tcp6 = vec![0x20, 0x01, 0x0d, 0xb8];
    tcp6.resize(36, 7);
    vec![
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        b"PROXY TCP6 2001:db8::1 ::ffff:1.2.3.4 65535 0\r\n".to_vec(),
        b"PROXY UNKNOWN\r\n".to_vec(),
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 080 65536\r\n".to_vec(),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec(),
        v2(0x21, 0x11, &[10, 0, 0, 7, 10, 0, 0, 1, 0xd4, 0x31, 0, 80]),
        v2(0x21, 0x21, &tcp6),
        v2(0x21, 0x11, &[1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2, 0xea, 0, 3, b'v', b'p', b'c']),
        v2(0x20, 0x00, &[]),
        v2(0x21, 0x31, &[b'/'; 216]),
        v2(0x21, 0x12, &[0; 12]),
        v2(0x31, 0x11, &[0; 12]),
        b"10.0.0.0/8, ::1, ::ffff:192.168.0.0/112, *".to_vec(),
    ]
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = root.join("../tests/requests");
    let mut requests: Vec<Vec<u8>> = HEADS.iter().map(|h| h.to_vec()).collect();
    for kind in ["valid", "invalid"] {
        let Ok(entries) = std::fs::read_dir(table.join(kind)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path.extension().is_some_and(|e| e == "http") {
                requests.push(std::fs::read(&path)?);
            }
        }
    }

    let heads = root.join("corpus/parse_head");
    let chunked = root.join("corpus/chunked");
    std::fs::create_dir_all(&heads)?;
    std::fs::create_dir_all(&chunked)?;
    let mut bodies: Vec<Vec<u8>> = BODIES.iter().map(|b| b.to_vec()).collect();
    for (i, request) in requests.iter().enumerate() {
        // Default limits, and tiny limits (request line 30, 3 fields of 20 bytes) so the
        // fuzzer starts next to every limit's edge.
        let seed = i as u8;
        for prefix in [[0u8, 0, 0, 0, seed], [1, 30, 3, 20, seed]] {
            let mut input = prefix.to_vec();
            input.extend_from_slice(request);
            let name = format!("seed-{i:03}-{}", prefix[0]);
            std::fs::write(heads.join(name), input)?;
        }
        let lower = String::from_utf8_lossy(request).to_ascii_lowercase();
        if lower.contains("chunked") {
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                bodies.push(request[end + 4..].to_vec());
            }
        }
    }
    for (i, body) in bodies.iter().enumerate() {
        for flags in [0u8, 1 | 8 << 1] {
            let mut input = vec![flags, i as u8];
            input.extend_from_slice(body);
            std::fs::write(chunked.join(format!("seed-{i:03}-{flags}")), input)?;
        }
    }
    let proxy = root.join("corpus/proxy");
    std::fs::create_dir_all(&proxy)?;
    let seeds = proxy_seeds();
    for (i, seed) in seeds.iter().enumerate() {
        // Auto mode, and one of off, v1 and v2, each with its own split seed.
        for mode in [3u8, i as u8 % 3] {
            let mut input = vec![mode, i as u8];
            input.extend_from_slice(seed);
            std::fs::write(proxy.join(format!("seed-{i:03}-{mode}")), input)?;
        }
    }
    println!(
        "wrote {} inputs to {}, {} to {} and {} to {} (prefixes: {HEAD_PREFIX}, \
         {CHUNKED_PREFIX} and {PROXY_PREFIX} bytes)",
        2 * requests.len(),
        heads.display(),
        2 * bodies.len(),
        chunked.display(),
        2 * seeds.len(),
        proxy.display()
    );
    Ok(())
}
