//! PEM blocks, and private keys in the encodings CA files use.
//!
//! Istio's own self-signed CA writes its key as PKCS#1 (`RSA PRIVATE KEY`); the signing library
//! here takes PKCS#8, so a PKCS#1 RSA key is wrapped into PKCS#8 (a fixed DER envelope around
//! the same bytes) rather than asking the operator to convert it.

use rcgen::KeyPair;

/// The DER body of the first PEM block labelled `label`.
pub(crate) fn pem_block(text: &str, label: &str) -> Result<Vec<u8>, String> {
    blocks(text)?
        .into_iter()
        .find(|(l, _)| l == label)
        .map(|(_, der)| der)
        .ok_or_else(|| format!("no '{label}' PEM block"))
}

/// The DER of the first certificate in a PEM text.
pub(crate) fn first_certificate_der(text: &str) -> Result<Vec<u8>, String> {
    pem_block(text, "CERTIFICATE")
}

/// Each certificate of a PEM bundle as its own PEM text.
pub(crate) fn split_pem_certificates(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        }
        if let Some(c) = current.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
        if line == "-----END CERTIFICATE-----"
            && let Some(c) = current.take()
        {
            out.push(c);
        }
    }
    out
}

/// Every PEM block of `text`: label and decoded body.
fn blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut label: Option<String> = None;
    let mut body = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(l) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            label = Some(l.to_string());
            body.clear();
        } else if let Some(l) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            match label.take() {
                Some(open) if open == l => out.push((open, base64_decode(&body)?)),
                _ => return Err(format!("'END {l}' without its BEGIN")),
            }
        } else if label.is_some() && !line.contains(':') {
            body.push_str(line);
        }
    }
    if out.is_empty() {
        return Err("no PEM block".to_string());
    }
    Ok(out)
}

fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in s.as_bytes().iter().filter(|c| !c.is_ascii_whitespace()) {
        if c == b'=' {
            break;
        }
        let v = val(c).ok_or_else(|| format!("invalid base64 character {:?}", c as char))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// A private key from PEM: PKCS#8 (`PRIVATE KEY`, RSA or ECDSA) or PKCS#1 RSA
/// (`RSA PRIVATE KEY`).
pub(crate) fn key_pair_from_pem(text: &str) -> Result<KeyPair, String> {
    let all = blocks(text)?;
    if let Some((_, der)) = all.iter().find(|(l, _)| l == "PRIVATE KEY") {
        return KeyPair::try_from(der.as_slice()).map_err(|e| format!("unusable PKCS#8 key: {e}"));
    }
    if let Some((_, der)) = all.iter().find(|(l, _)| l == "RSA PRIVATE KEY") {
        let pkcs8 = pkcs1_rsa_to_pkcs8(der);
        return KeyPair::try_from(pkcs8.as_slice())
            .map_err(|e| format!("unusable PKCS#1 RSA key: {e}"));
    }
    if all.iter().any(|(l, _)| l == "EC PRIVATE KEY") {
        return Err(
            "an 'EC PRIVATE KEY' (SEC1) key is not read; convert it with \
             `openssl pkcs8 -topk8 -nocrypt` to a 'PRIVATE KEY'"
                .to_string(),
        );
    }
    Err("no 'PRIVATE KEY' or 'RSA PRIVATE KEY' PEM block".to_string())
}

/// PKCS#8 `PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING pkcs1 }` around a PKCS#1 key.
fn pkcs1_rsa_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier: SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }.
    const RSA_ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut inner = vec![0x02, 0x01, 0x00];
    inner.extend_from_slice(RSA_ALGORITHM);
    inner.push(0x04);
    der_length(&mut inner, pkcs1.len());
    inner.extend_from_slice(pkcs1);
    let mut out = vec![0x30];
    der_length(&mut out, inner.len());
    out.extend_from_slice(&inner);
    out
}

fn der_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_decode_and_split() {
        let key = KeyPair::generate().expect("key");
        let pem = key.serialize_pem();
        let der = pem_block(&pem, "PRIVATE KEY").expect("block");
        assert_eq!(der, key.serialize_der());
        let two = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        assert_eq!(split_pem_certificates(two).len(), 2);
        assert!(pem_block("nothing here", "CERTIFICATE").is_err());
    }

    #[test]
    fn an_sec1_key_is_refused_with_the_conversion_to_run() {
        let text = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let err = key_pair_from_pem(text).expect_err("refused");
        assert!(err.contains("openssl pkcs8"), "{err}");
    }
}
