//! Parsing what a client presents in its `Authorization` header: `Basic`
//! (user and password, base64) or `Bearer` (a token). Pure and bounded:
//! an oversized, malformed or unknown header is an error, never a panic,
//! and the password is held as a [`Secret`] that never prints.

use crate::config::Secret;
use base64::Engine;

/// Longest `Authorization` value looked at; anything longer is refused
/// before it is decoded.
pub const MAX_AUTHORIZATION: usize = 8 * 1024;

/// Credentials from one `Authorization` header (a token is borrowed from
/// the header: it is checked on every request and never copied).
pub enum Credentials<'a> {
    Basic { user: String, password: Secret },
    Bearer(&'a str),
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { user, .. } => write!(f, "Basic({user:?}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("Authorization header is longer than {MAX_AUTHORIZATION} bytes")]
    TooLong,
    #[error("Authorization scheme is neither Basic nor Bearer")]
    UnknownScheme,
    #[error("Basic credentials are not valid base64")]
    BadBase64,
    #[error("Basic credentials are not user:password")]
    NoColon,
    #[error("credentials are not UTF-8")]
    NotUtf8,
    #[error("credentials have an empty user name, or a token with spaces or non-ASCII")]
    Empty,
    #[error("the user name has characters no user name has")]
    BadUser,
}

/// Parses one `Authorization` header value.
pub fn parse(value: &[u8]) -> Result<Credentials<'_>, CredentialsError> {
    if value.len() > MAX_AUTHORIZATION {
        return Err(CredentialsError::TooLong);
    }
    let value = std::str::from_utf8(value).map_err(|_| CredentialsError::NotUtf8)?;
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| CredentialsError::BadBase64)?;
        let text = String::from_utf8(raw).map_err(|_| CredentialsError::NotUtf8)?;
        let (user, password) = text.split_once(':').ok_or(CredentialsError::NoColon)?;
        if user.is_empty() {
            return Err(CredentialsError::Empty);
        }
        // Nothing a log line could be forged with (newlines, controls).
        if !super::policy::valid_user_name(user) {
            return Err(CredentialsError::BadUser);
        }
        Ok(Credentials::Basic {
            user: user.to_string(),
            password: Secret::new(password.to_string()),
        })
    } else if scheme.eq_ignore_ascii_case("bearer") {
        // A token is printable ASCII with no spaces (RFC 6750 token68).
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CredentialsError::Empty);
        }
        Ok(Credentials::Bearer(rest))
    } else {
        Err(CredentialsError::UnknownScheme)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn basic_and_bearer() {
        let header = format!("Basic {}", b64("alice:pa:ss"));
        assert!(!format!("{:?}", parse(header.as_bytes()).unwrap()).contains("pa:ss"));
        match parse(header.as_bytes()).unwrap() {
            Credentials::Basic { user, password } => {
                assert_eq!(user, "alice");
                assert_eq!(password.expose(), "pa:ss");
                assert_eq!(format!("{password:?}"), "<redacted>");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(b"bearer abc.def.ghi").unwrap(),
            Credentials::Bearer(t) if t == "abc.def.ghi"
        ));
        assert!(!format!("{:?}", parse(b"Bearer s3cr3t").unwrap()).contains("s3cr3t"));
    }

    #[test]
    fn malformed() {
        let long = format!("Basic {}", "A".repeat(100 * 1024));
        let cases: Vec<(Vec<u8>, CredentialsError)> = vec![
            (b"Basic !!!".to_vec(), CredentialsError::BadBase64),
            (
                format!("Basic {}", b64("nocolon")).into_bytes(),
                CredentialsError::NoColon,
            ),
            (
                format!("Basic {}", b64(":pw")).into_bytes(),
                CredentialsError::Empty,
            ),
            (long.into_bytes(), CredentialsError::TooLong),
            (b"Digest x=y".to_vec(), CredentialsError::UnknownScheme),
            (b"".to_vec(), CredentialsError::UnknownScheme),
            (b"Bearer".to_vec(), CredentialsError::Empty),
            (b"Bearer a b".to_vec(), CredentialsError::Empty),
            (
                "Bearer a\u{2028}b".as_bytes().to_vec(),
                CredentialsError::Empty,
            ),
            (b"Basic \xff".to_vec(), CredentialsError::NotUtf8),
            (
                format!("Basic {}", b64("x\nINFO forged:pw")).into_bytes(),
                CredentialsError::BadUser,
            ),
            (
                format!("Basic {}", b64("anonymous:pw")).into_bytes(),
                CredentialsError::BadUser,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input).unwrap_err(), want, "{input:?}");
        }
    }
}
