//! The few DER shapes this crate reads and writes: the P-256 named-curve OID (CKA_EC_PARAMS),
//! the public point (CKA_EC_POINT) and the X9.62 Ecdsa-Sig-Value.

/// DER of the OID prime256v1 / secp256r1 (1.2.840.10045.3.1.7), as CKA_EC_PARAMS holds it.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The 65-byte SEC1 uncompressed point from a CKA_EC_POINT value. PKCS#11 says the value is a DER
/// OCTET STRING holding the point (`04 41 04 …`); a few tokens return the bare point, which is
/// accepted too.
pub(crate) fn ec_point(value: &[u8]) -> Option<[u8; 65]> {
    let point = match value {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        bare if bare.len() == 65 => bare,
        _ => return None,
    };
    if point[0] != 0x04 {
        return None;
    }
    point.try_into().ok()
}

/// DER-encodes a PKCS#11 ECDSA signature (r ‖ s, 32 bytes each for P-256) as
/// `Ecdsa-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }`.
pub(crate) fn ecdsa_sig(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let (r, s) = raw.split_at(32);
    let r = integer(r);
    let s = integer(s);
    let mut out = Vec::with_capacity(2 + r.len() + s.len());
    out.push(0x30);
    // At most 2 × (2 + 33) = 70 bytes: a one-byte length.
    out.push((r.len() + s.len()) as u8);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

/// A positive INTEGER from big-endian bytes: leading zeros dropped, a 0x00 added when the high
/// bit is set, zero kept as one 0x00 byte.
fn integer(be: &[u8]) -> Vec<u8> {
    let start = be.iter().position(|b| *b != 0).unwrap_or(be.len());
    let digits = &be[start..];
    let mut out = Vec::with_capacity(be.len() + 3);
    out.push(0x02);
    if digits.is_empty() {
        out.extend_from_slice(&[1, 0]);
    } else if digits[0] & 0x80 != 0 {
        out.push(digits.len() as u8 + 1);
        out.push(0);
        out.extend_from_slice(digits);
    } else {
        out.push(digits.len() as u8);
        out.extend_from_slice(digits);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_minimal_and_positive() {
        assert_eq!(integer(&[0, 0, 0x7f]), vec![2, 1, 0x7f]);
        assert_eq!(integer(&[0, 0x80]), vec![2, 2, 0, 0x80]);
        assert_eq!(integer(&[0, 0]), vec![2, 1, 0]);
        assert_eq!(integer(&[0x12, 0x34]), vec![2, 2, 0x12, 0x34]);
    }

    #[test]
    fn signatures_are_sequences_of_two_integers() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80;
        raw[63] = 1;
        let der = ecdsa_sig(&raw).expect("64 bytes");
        assert_eq!(der[0], 0x30);
        assert_eq!(der[1] as usize, der.len() - 2);
        assert_eq!(&der[2..5], &[2, 33, 0]);
        assert_eq!(&der[der.len() - 3..], &[2, 1, 1]);
        assert!(ecdsa_sig(&raw[..63]).is_none());
    }

    #[test]
    fn points_in_an_octet_string_or_bare() {
        let mut point = [0u8; 65];
        point[0] = 4;
        point[64] = 9;
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&point);
        assert_eq!(ec_point(&wrapped), Some(point));
        assert_eq!(ec_point(&point), Some(point));
        assert_eq!(ec_point(&wrapped[..66]), None);
        point[0] = 2;
        assert_eq!(ec_point(&point), None);
    }
}
