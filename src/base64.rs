//! Standard base64 with padding: how etcd's JSON gateway and `etcdctl -w json` carry bytes.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `bytes` as standard base64 with padding to `out`.
pub fn encode_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let sym = |n: u64, shift: u32| ALPHABET[(n >> shift) as usize & 63];
    // 6 bytes -> 8 symbols per step, written into the grown buffer and unrolled by hand: the
    // release profile optimizes for size, which neither unrolls nor inlines small copies.
    let start = out.len();
    let mut chunks = bytes.chunks_exact(6);
    out.resize(start + bytes.len() / 6 * 8, 0);
    for (c, o) in (&mut chunks).zip(out[start..].chunks_exact_mut(8)) {
        let n = u64::from_be_bytes([0, 0, c[0], c[1], c[2], c[3], c[4], c[5]]);
        o.copy_from_slice(&[
            sym(n, 42),
            sym(n, 36),
            sym(n, 30),
            sym(n, 24),
            sym(n, 18),
            sym(n, 12),
            sym(n, 6),
            sym(n, 0),
        ]);
    }
    let rest = chunks.remainder();
    let mut groups = rest.chunks(3);
    for g in &mut groups {
        let n = (g[0] as u64) << 16
            | (g.get(1).copied().unwrap_or(0) as u64) << 8
            | g.get(2).copied().unwrap_or(0) as u64;
        out.push(sym(n, 18));
        out.push(sym(n, 12));
        out.push(if g.len() > 1 { sym(n, 6) } else { b'=' });
        out.push(if g.len() > 2 { sym(n, 0) } else { b'=' });
    }
}

/// `bytes` as standard base64 with padding.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    encode_into(&mut out, bytes);
    // Every symbol is ASCII.
    out.into_iter().map(char::from).collect()
}

pub fn decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        encode(bytes)
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), enc);
        }
        assert_eq!(b64(&[0xff, 0xfe, 0xfd]), "//79");
        // Every length around the 6-byte step, against a plain 3-byte reference.
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..data.len() {
            let mut want = String::new();
            for g in data[..len].chunks(3) {
                let n = (g[0] as u32) << 16
                    | (*g.get(1).unwrap_or(&0) as u32) << 8
                    | *g.get(2).unwrap_or(&0) as u32;
                let a = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
                for k in 0..4 {
                    if k <= g.len() {
                        want.push(a[(n >> (18 - 6 * k)) as usize & 63] as char);
                    } else {
                        want.push('=');
                    }
                }
            }
            assert_eq!(b64(&data[..len]), want, "len {len}");
        }
    }

    #[test]
    fn round_trip() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"/registry/events/",
            &[0, 255, 128],
        ] {
            assert_eq!(decode(&encode(s)).unwrap(), s);
        }
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"fo"), "Zm8=");
    }
}
