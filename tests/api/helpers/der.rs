//! Just enough DER to reshape PKCS#7 test envelopes that OpenSSL's `PKCS7_sign` cannot produce:
//! two SignerInfos, Azure's signature OID in place of the digest OID, a chosen digest, and
//! certificate extensions written by hand.

/// One element: its tag, its content and its whole encoding.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Reads one element (single-byte tags, definite lengths: all that `i2d_PKCS7` writes).
fn read(input: &[u8]) -> (Tlv<'_>, &[u8]) {
    let tag = input[0];
    let (length, header) = match input[1] {
        short @ 0..=0x7f => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7f);
            let length = input[2..2 + count]
                .iter()
                .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
            (length, 2 + count)
        }
    };
    let end = header + length;
    (
        Tlv {
            tag,
            content: &input[header..end],
            whole: &input[..end],
        },
        &input[end..],
    )
}

fn children(mut content: &[u8]) -> Vec<Tlv<'_>> {
    let mut out = Vec::new();
    while !content.is_empty() {
        let (tlv, rest) = read(content);
        out.push(tlv);
        content = rest;
    }
    out
}

/// One element with `tag` around `content`.
pub fn encode(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        short @ 0..=0x7f => out.push(u8::try_from(short).expect("short length")),
        long => {
            let bytes: Vec<u8> = long
                .to_be_bytes()
                .into_iter()
                .skip_while(|byte| *byte == 0)
                .collect();
            out.push(0x80 | u8::try_from(bytes.len()).expect("length of length"));
            out.extend(bytes);
        }
    }
    out.extend_from_slice(content);
    out
}

/// ContentInfo → (contentType OID element, SignedData's elements).
fn signed_data(der: &[u8]) -> (Tlv<'_>, Vec<Tlv<'_>>) {
    let (content_info, _) = read(der);
    let mut parts = children(content_info.content).into_iter();
    let oid = parts.next().expect("contentType");
    let explicit = parts.next().expect("[0] content");
    let (signed, _) = read(explicit.content);
    (oid, children(signed.content))
}

/// `first` with `second`'s certificates and SignerInfos added: one envelope, two signers.
pub fn merge_signed_data(first: &[u8], second: &[u8]) -> Vec<u8> {
    let (oid, a) = signed_data(first);
    let (_, b) = signed_data(second);
    let find = |parts: &[Tlv<'_>], tag: u8| -> Vec<u8> {
        parts
            .iter()
            .find(|part| part.tag == tag)
            .map(|part| part.content.to_vec())
            .unwrap_or_else(|| panic!("no element with tag {tag:#x}"))
    };
    let certificates = [find(&a, 0xa0), find(&b, 0xa0)].concat();
    // signerInfos is the last SET; digestAlgorithms the first.
    let signer_infos = [
        a.last().expect("signerInfos").content,
        b.last().expect("signerInfos").content,
    ]
    .concat();
    let mut body = Vec::new();
    body.extend_from_slice(a[0].whole); // version
    body.extend_from_slice(a[1].whole); // digestAlgorithms
    body.extend_from_slice(a[2].whole); // encapContentInfo
    body.extend(encode(0xa0, &certificates));
    body.extend(encode(0x31, &signer_infos));
    let signed = encode(0x30, &body);
    encode(0x30, &[oid.whole, &encode(0xa0, &signed)].concat())
}

/// id-sha256 (2.16.840.1.101.3.4.2.1) → sha256WithRSAEncryption (1.2.840.113549.1.1.11),
/// both encoded in 11 bytes, wherever it occurs (digestAlgorithms and the SignerInfo).
pub fn replace_digest_oid_with_sha256_with_rsa(der: &[u8]) -> Vec<u8> {
    const SHA256: [u8; 11] = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    const SHA256_WITH_RSA: [u8; 11] = [
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b,
    ];
    let mut out = der.to_vec();
    let mut replaced = 0;
    let mut at = 0;
    while at + SHA256.len() <= out.len() {
        if out[at..at + SHA256.len()] == SHA256 {
            out[at..at + SHA256.len()].copy_from_slice(&SHA256_WITH_RSA);
            replaced += 1;
            at += SHA256.len();
        } else {
            at += 1;
        }
    }
    assert_eq!(
        replaced, 2,
        "digestAlgorithms and the SignerInfo's digestAlgorithm"
    );
    out
}

/// An OBJECT IDENTIFIER element, from its content bytes.
pub fn oid(content: &[u8]) -> Vec<u8> {
    encode(0x06, content)
}

/// AlgorithmIdentifier with NULL parameters.
fn algorithm(oid_content: &[u8]) -> Vec<u8> {
    encode(0x30, &[oid(oid_content), vec![0x05, 0x00]].concat())
}

/// A non-negative INTEGER from big-endian magnitude bytes.
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = if trimmed.is_empty() { vec![0] } else { trimmed };
    if content[0] & 0x80 != 0 {
        content.insert(0, 0);
    }
    encode(0x02, &content)
}

pub const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
pub const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];

/// What [`build_signed_data`] needs of the signer.
pub struct SignerParts<'a> {
    pub certificate: &'a [u8],
    pub issuer_name: &'a [u8],
    pub serial: &'a [u8],
    /// The signature over the content with the digest named by `digest_oid`.
    pub signature: &'a [u8],
}

/// A PKCS#7 signedData over `content` without signed attributes, as Azure writes it, naming
/// `digest_oid` (content bytes of the OID) as its digest algorithm.
pub fn build_signed_data(content: &[u8], digest_oid: &[u8], signer: &SignerParts<'_>) -> Vec<u8> {
    let version = integer(&[1]);
    let digests = encode(0x31, &algorithm(digest_oid));
    let encapsulated = encode(
        0x30,
        &[oid(DATA), encode(0xa0, &encode(0x04, content))].concat(),
    );
    let certificates = encode(0xa0, signer.certificate);
    let sid = encode(
        0x30,
        &[signer.issuer_name.to_vec(), integer(signer.serial)].concat(),
    );
    let signer_info = encode(
        0x30,
        &[
            version.clone(),
            sid,
            algorithm(digest_oid),
            algorithm(RSA_ENCRYPTION),
            encode(0x04, signer.signature),
        ]
        .concat(),
    );
    let body = encode(
        0x30,
        &[
            version,
            digests,
            encapsulated,
            certificates,
            encode(0x31, &signer_info),
        ]
        .concat(),
    );
    encode(0x30, &[oid(SIGNED_DATA), encode(0xa0, &body)].concat())
}

/// The value of an Authority Information Access extension with one CA-issuers URI.
pub fn ca_issuers_extension(uri: &str) -> Vec<u8> {
    const CA_ISSUERS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let description = encode(
        0x30,
        &[oid(CA_ISSUERS), encode(0x86, uri.as_bytes())].concat(),
    );
    encode(0x30, &description)
}
