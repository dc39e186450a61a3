//! Per-request text written by hand: `format!` and `to_string` go through
//! `core::fmt`, which costs more than the few digits they write (a client
//! address took as many instructions as the rest of the forwarding
//! headers).

use std::net::IpAddr;

/// An address as `Display` writes it; IPv4, the common case, by hand,
/// into a string exactly as long as the text: a header value made of it
/// then takes the buffer as it is (`bytes` allocates again for a `Vec`
/// with room to spare).
pub fn ip(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let octets = v4.octets();
    let digits = |o: u8| 1 + usize::from(o >= 10) + usize::from(o >= 100);
    let dots = octets.len() - 1;
    let mut text = String::with_capacity(dots + octets.into_iter().map(digits).sum::<usize>());
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        push_digits(&mut text, octet.into(), 10);
    }
    text
}

/// `format!("{prefix}-{n:x}")`.
pub fn numbered(prefix: &str, n: u64) -> String {
    let mut text = String::with_capacity(prefix.len() + 17);
    text.push_str(prefix);
    text.push('-');
    push_digits(&mut text, n, 16);
    text
}

/// Appends `n` in `radix` (at most 16), lower-case digits.
fn push_digits(text: &mut String, mut n: u64, radix: u64) {
    let mut digits = [0u8; 64];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b"0123456789abcdef"[(n % radix) as usize];
        n /= radix;
        if n == 0 {
            break;
        }
    }
    text.extend(digits[start..].iter().map(|&d| char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_fmt_writes_them() {
        for a in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "255.255.255.255",
            "1.2.3.4",
            "100.9.10.199",
            "::1",
            "fe80::1",
        ] {
            let addr: IpAddr = a.parse().unwrap();
            assert_eq!(ip(addr), addr.to_string());
            if addr.is_ipv4() {
                assert_eq!(ip(addr).capacity(), a.len(), "{a}");
            }
        }
        for n in [0, 1, 15, 16, 255, 0xdead_beef, u64::MAX] {
            assert_eq!(numbered("ab12cd34", n), format!("ab12cd34-{n:x}"));
        }
    }
}
