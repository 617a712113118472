//! What OpenSSL's PKCS#7 API does not show or check: the envelope is exactly one DER value
//! (`d2i_PKCS7` ignores bytes after it), and its digest algorithms are SHA-256 or stronger
//! (`PKCS7_verify` accepts SHA-1 and MD5). Read with the `der` crate, element by element, before
//! OpenSSL parses anything.
//!
//! The same reading gives the certificates the envelope carries and the envelope without them:
//! `d2i_PKCS7` decodes every carried certificate's public key, which OpenSSL 3.0 does slowly
//! (about 40 % of an Azure verification), so a signer already proven is handed to OpenSSL
//! parsed, beside an envelope that no longer carries it.
//!
//! ```text
//! ContentInfo ::= SEQUENCE { contentType OID, content [0] EXPLICIT SignedData }
//! SignedData  ::= SEQUENCE { version, digestAlgorithms SET OF AlgorithmIdentifier,
//!                            encapContentInfo, [0] certificates?, [1] crls?, signerInfos SET }
//! SignerInfo  ::= SEQUENCE { version, sid, digestAlgorithm AlgorithmIdentifier, ... }
//! ```

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode as _, Encode as _, Reader as _, SliceReader, Tag, TagNumber, Tagged as _};

use super::super::Rejected;

const SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");

/// Digest algorithms accepted: SHA-256 and stronger, plus the signature OIDs that name them,
/// which Azure writes where the digest OID belongs (OpenSSL maps them to their digest).
const STRONG_DIGESTS: [(ObjectIdentifier, &str); 6] = [
    (
        ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1"),
        "SHA-256",
    ),
    (
        ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2"),
        "SHA-384",
    ),
    (
        ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3"),
        "SHA-512",
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"),
        "SHA-256",
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12"),
        "SHA-384",
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13"),
        "SHA-512",
    ),
];

/// Names for the weak digests a refusal may meet, so its detail says what was found.
const WEAK_DIGESTS: [(ObjectIdentifier, &str); 6] = [
    (ObjectIdentifier::new_unwrap("1.3.14.3.2.26"), "SHA-1"),
    (ObjectIdentifier::new_unwrap("1.2.840.113549.2.5"), "MD5"),
    (
        ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.4"),
        "SHA-224",
    ),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.5"),
        "SHA-1",
    ),
    (ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.4"), "MD5"),
    (
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.14"),
        "SHA-224",
    ),
];

/// A signedData envelope read down to its fields.
#[derive(Debug)]
pub(super) struct SignedData<'a> {
    content_type: AnyRef<'a>,
    /// SignedData's fields, in order.
    fields: Vec<AnyRef<'a>>,
}

impl<'a> SignedData<'a> {
    /// Position of `certificates` among the fields: right after `encapContentInfo`, when
    /// present.
    const CERTIFICATES: usize = 3;

    /// The `certificates` field, when the fields are laid out exactly as signedData's are
    /// (version, digestAlgorithms, encapContentInfo, certificates, crls?, signerInfos): any
    /// other layout is left to OpenSSL whole, so that stripping a field never turns an envelope
    /// it would refuse into one it accepts.
    fn certificates_field(&self) -> Option<AnyRef<'a>> {
        let tags: Vec<Tag> = self.fields.iter().map(|field| field.tag()).collect();
        let laid_out = match tags.as_slice() {
            [
                Tag::Integer,
                Tag::Set,
                Tag::Sequence,
                certificates,
                Tag::Set,
            ] => *certificates == context(0),
            [
                Tag::Integer,
                Tag::Set,
                Tag::Sequence,
                certificates,
                crls,
                Tag::Set,
            ] => *certificates == context(0) && *crls == context(1),
            _ => false,
        };
        laid_out.then(|| self.fields[Self::CERTIFICATES])
    }

    /// The DER of every certificate the envelope carries, in order (none when the fields are
    /// not laid out as signedData's).
    pub(super) fn certificates(&self) -> Result<Vec<Vec<u8>>, der::Error> {
        let Some(field) = self.certificates_field() else {
            return Ok(Vec::new());
        };
        let mut reader = SliceReader::new(field.value())?;
        let mut out = Vec::new();
        while !reader.is_finished() {
            out.push(reader.decode::<AnyRef<'_>>()?.to_der()?);
        }
        Ok(out)
    }

    /// The same envelope without its `certificates` field: every other byte as it was, the
    /// three enclosing lengths written anew.
    pub(super) fn without_certificates(&self) -> Result<Vec<u8>, der::Error> {
        let stripped = self.certificates_field().map(|_| Self::CERTIFICATES);
        let mut fields = Vec::new();
        for (index, field) in self.fields.iter().enumerate() {
            if Some(index) != stripped {
                fields.extend(field.to_der()?);
            }
        }
        let signed_data = AnyRef::new(Tag::Sequence, &fields)?.to_der()?;
        let explicit = AnyRef::new(context(0), &signed_data)?.to_der()?;
        let mut content_info = self.content_type.to_der()?;
        content_info.extend(explicit);
        AnyRef::new(Tag::Sequence, &content_info)?.to_der()
    }
}

/// Refuses `der` unless it is one DER ContentInfo holding signedData, with nothing after it,
/// whose `digestAlgorithms` and every SignerInfo's `digestAlgorithm` are SHA-256 or stronger.
/// Anything else about the structure is left to OpenSSL, which parses it next. Gives the
/// signedData's fields; `None` when the content type is not signedData (OpenSSL refuses that
/// more precisely).
pub(super) fn inspect(der: &[u8]) -> Result<Option<SignedData<'_>>, Rejected> {
    let not_der = |_| Rejected::new("signature is not DER PKCS#7");
    let content_info = match AnyRef::from_der(der) {
        Err(err) if matches!(err.kind(), der::ErrorKind::TrailingData { .. }) => {
            return Err(Rejected::new("trailing bytes after the PKCS#7 envelope"));
        }
        other => other.map_err(not_der)?,
    };
    let mut parts = children(content_info, Tag::Sequence)?.into_iter();
    let content_type = next(&mut parts)?;
    if content_type.decode_as::<ObjectIdentifier>().ok() != Some(SIGNED_DATA) {
        return Ok(None);
    }
    let explicit = next(&mut parts)?;
    if parts.next().is_some() {
        return Err(Rejected::new("signature is not DER PKCS#7"));
    }
    let signed_data = single(explicit, context(0))?;
    let fields = children(signed_data, Tag::Sequence)?;
    let (Some(digest_algorithms), Some(signer_infos)) = (fields.get(1), fields.last()) else {
        return Err(Rejected::new("signature is not DER PKCS#7"));
    };
    for algorithm in children(*digest_algorithms, Tag::Set)? {
        check_digest(algorithm)?;
    }
    for signer_info in children(*signer_infos, Tag::Set)? {
        let fields = children(signer_info, Tag::Sequence)?;
        let algorithm = fields
            .get(2)
            .ok_or_else(|| Rejected::new("signature is not DER PKCS#7"))?;
        check_digest(*algorithm)?;
    }
    Ok(Some(SignedData {
        content_type,
        fields,
    }))
}

fn check_digest(algorithm: AnyRef<'_>) -> Result<(), Rejected> {
    let mut fields = children(algorithm, Tag::Sequence)?.into_iter();
    let oid = next(&mut fields)?
        .decode_as::<ObjectIdentifier>()
        .map_err(|_| Rejected::new("signature is not DER PKCS#7"))?;
    if STRONG_DIGESTS.iter().any(|(strong, _)| *strong == oid) {
        return Ok(());
    }
    let name = WEAK_DIGESTS
        .iter()
        .find(|(weak, _)| *weak == oid)
        .map_or_else(|| oid.to_string(), |(_, name)| (*name).to_owned());
    Err(Rejected::new(format!(
        "digest algorithm {name} is weaker than SHA-256 or unknown"
    )))
}

fn context(number: u8) -> Tag {
    Tag::ContextSpecific {
        constructed: true,
        number: TagNumber::new(number),
    }
}

/// The elements inside `any`, which must carry `tag`.
fn children(any: AnyRef<'_>, tag: Tag) -> Result<Vec<AnyRef<'_>>, Rejected> {
    let not_der = |_| Rejected::new("signature is not DER PKCS#7");
    if any.tag() != tag {
        return Err(Rejected::new("signature is not DER PKCS#7"));
    }
    let mut reader = SliceReader::new(any.value()).map_err(not_der)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        out.push(reader.decode::<AnyRef<'_>>().map_err(not_der)?);
    }
    Ok(out)
}

/// The one element inside `any`.
fn single(any: AnyRef<'_>, tag: Tag) -> Result<AnyRef<'_>, Rejected> {
    let mut inside = children(any, tag)?.into_iter();
    match (inside.next(), inside.next()) {
        (Some(one), None) => Ok(one),
        _ => Err(Rejected::new("signature is not DER PKCS#7")),
    }
}

fn next<'a>(parts: &mut impl Iterator<Item = AnyRef<'a>>) -> Result<AnyRef<'a>, Rejected> {
    parts
        .next()
        .ok_or_else(|| Rejected::new("signature is not DER PKCS#7"))
}
