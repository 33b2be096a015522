//! `baton hooks sign`: the `X-Signature-256` header an app with a signing secret expects
//! (seed 000: `openssl dgst -sha256 -hmac "$SECRET"` over the exact body bytes).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "X-Signature-256";

/// Lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_sha256_hex(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length (longer ones are hashed first), so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The whole header line, as curl's `-H` takes it.
pub fn header_line(secret: &[u8], body: &[u8]) -> String {
    format!("{HEADER}: sha256={}", hmac_sha256_hex(secret, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each expected value is what `printf '%s' BODY | openssl dgst -sha256 -hmac SECRET` prints.
    #[test]
    fn signature_matches_openssl_for_the_readme_example() {
        assert_eq!(
            header_line(b"shop-signing-secret", br#"{"name": "Linus"}"#),
            "X-Signature-256: sha256=e2cd1e00eaf9fd084bd450bea021a937824399419bf59c63dea1690d9da208b1"
        );
    }

    #[test]
    fn signature_matches_openssl_for_the_rfc_style_vector() {
        assert_eq!(
            hmac_sha256_hex(b"key", b"The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn trailing_newlines_are_signed_as_bytes_not_trimmed() {
        assert_eq!(
            hmac_sha256_hex(b"s", b"a\nb\n"),
            "73184965cf40c1f051df765ca7a5849a15334912e96a274ed7f005003e1d7105"
        );
        assert_ne!(hmac_sha256_hex(b"s", b"a\nb\n"), hmac_sha256_hex(b"s", b"a\nb"));
    }
}
