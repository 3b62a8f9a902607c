//! Short-lived bearer tokens: JSON Web Tokens signed with HMAC-SHA256
//! (the `jsonwebtoken` crate), carrying who the caller is, how they proved
//! it, and the repository actions granted, as the Docker token
//! specification's `access` claim. The signing key is a file: given in the
//! config, or generated on first start into the data directory (mode
//! 0600), so a restart keeps issued tokens valid. A token that checked
//! out is remembered until it expires, so a client sending the same token
//! with every request pays the signature check and the JSON once.

use super::policy::Action;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `iss` of every token Wharf signs.
pub const ISSUER: &str = "wharf";
/// Shortest signing key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;

/// One entry of the `access` claim.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Grant {
    /// Whether this grant covers `action` on repository `name`.
    pub fn covers(&self, name: &str, action: Action) -> bool {
        self.kind == "repository"
            && self.name == name
            && self.actions.iter().any(|a| a == action.as_str())
    }
}

/// How the token's subject proved who they are.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Anonymous,
    Password,
    Certificate,
}

/// What a token says.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Claims {
    pub iss: String,
    /// The user name; empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub via: Via,
    pub access: Vec<Grant>,
}

/// Why a presented token is not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token is invalid")]
    Invalid,
}

/// A freshly signed token.
pub struct Issued {
    pub token: String,
    pub expires_in: Duration,
    pub issued_at: SystemTime,
}

/// Tokens remembered at most; past it the memory starts afresh.
const REMEMBERED_TOKENS: usize = 4096;

/// Signs and checks tokens with one key.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    service: String,
    ttl: Duration,
    /// Tokens that checked out, by their text (compared whole).
    verified: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<Claims>>>,
}

impl Tokens {
    /// Tokens signed with `key` (at least [`MIN_KEY_LEN`] bytes) for
    /// `service`, valid for `ttl`.
    pub fn new(key: &[u8], service: &str, ttl: Duration) -> Result<Tokens, String> {
        if key.len() < MIN_KEY_LEN {
            return Err(format!(
                "the token signing key is shorter than {MIN_KEY_LEN} bytes"
            ));
        }
        let bad = |e: jsonwebtoken::errors::Error| format!("token signing key: {e}");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[service]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        Ok(Tokens {
            encoding: EncodingKey::from_secret(key).map_err(bad)?,
            decoding: DecodingKey::from_secret(key).map_err(bad)?,
            validation,
            service: service.to_string(),
            ttl,
            verified: Default::default(),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Signs a token for `sub` granting `access`, valid from `now` for the
    /// configured lifetime.
    pub fn issue(
        &self,
        sub: &str,
        via: Via,
        access: Vec<Grant>,
        now: SystemTime,
    ) -> Result<Issued, jsonwebtoken::errors::Error> {
        let iat = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: self.service.clone(),
            exp: iat + self.ttl.as_secs(),
            nbf: iat,
            iat,
            jti: uuid::Uuid::new_v4().to_string(),
            via,
            access,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(Issued {
            token,
            expires_in: self.ttl,
            issued_at: UNIX_EPOCH + Duration::from_secs(iat),
        })
    }

    /// Checks a token's signature, issuer, audience and lifetime.
    pub fn verify(&self, token: &str) -> Result<std::sync::Arc<Claims>, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let remembered = {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            verified.get(token).cloned()
        };
        if let Some(claims) = remembered {
            // The same test as the full check: expired once `now` passes `exp`.
            return if claims.exp < now {
                Err(TokenError::Expired)
            } else {
                Ok(claims)
            };
        }
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => std::sync::Arc::new(data.claims),
            Err(e) => {
                return match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(TokenError::Expired),
                    _ => Err(TokenError::Invalid),
                }
            }
        };
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= REMEMBERED_TOKENS {
            verified.retain(|_, c| c.exp >= now);
            if verified.len() >= REMEMBERED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(token.to_string(), claims.clone());
        Ok(claims)
    }
}

/// Reads the signing key from `path`, or, when `create` is set and the
/// file does not exist, generates a random one there (mode 0600).
pub fn load_key(path: &Path, create: bool) -> io::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let key = bytes.trim_ascii().to_vec();
            if key.len() < MIN_KEY_LEN {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "token signing key {} is shorter than {MIN_KEY_LEN} bytes",
                        path.display()
                    ),
                ));
            }
            warn_if_readable_by_others(path);
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            let mut raw = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                .map_err(|_| io::Error::other("no system randomness for the token key"))?;
            use base64::Engine;
            let key = base64::engine::general_purpose::STANDARD.encode(raw);
            // Written whole to a temp file, then linked into place: a crash
            // never leaves an empty key, and of two servers starting at
            // once the second reads the first one's key.
            let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
            let written = (|| {
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                let mut f = opts.open(&tmp)?;
                f.write_all(key.as_bytes())?;
                f.sync_all()?;
                std::fs::hard_link(&tmp, path)
            })();
            let _ = std::fs::remove_file(&tmp);
            match written {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "generated a token signing key");
                    Ok(key.into_bytes())
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => load_key(path, false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the token signing key is readable by other users: chmod 600 it"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(name: &str, actions: &[&str]) -> Grant {
        Grant {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let key = [7u8; 32];
        let t = Tokens::new(&key, "wharf", Duration::from_secs(300)).unwrap();
        let issued = t
            .issue(
                "alice",
                Via::Password,
                vec![grant("golden/app", &["pull", "push"])],
                SystemTime::now(),
            )
            .unwrap();
        let c = t.verify(&issued.token).unwrap();
        assert_eq!(c.sub, "alice");
        let again = t.verify(&issued.token).unwrap();
        assert!(std::sync::Arc::ptr_eq(&c, &again), "remembered");
        assert_eq!(c.via, Via::Password);
        assert!(c.access[0].covers("golden/app", Action::Push));
        assert!(!c.access[0].covers("golden/app", Action::Delete));
        assert!(!c.access[0].covers("golden/other", Action::Pull));

        // Another key, another audience, an expired token, a tampered one.
        let other = Tokens::new(&[8u8; 32], "wharf", Duration::from_secs(300)).unwrap();
        assert_eq!(
            other.verify(&issued.token).unwrap_err(),
            TokenError::Invalid
        );
        let aud = Tokens::new(&key, "elsewhere", Duration::from_secs(300)).unwrap();
        assert_eq!(aud.verify(&issued.token).unwrap_err(), TokenError::Invalid);
        let old = t
            .issue(
                "alice",
                Via::Password,
                vec![],
                SystemTime::now() - Duration::from_secs(3600),
            )
            .unwrap();
        assert_eq!(t.verify(&old.token).unwrap_err(), TokenError::Expired);
        // A remembered token expires all the same.
        let short = Tokens::new(&key, "wharf", Duration::from_secs(1)).unwrap();
        let soon = short
            .issue("alice", Via::Password, vec![], SystemTime::now())
            .unwrap();
        assert!(short.verify(&soon.token).is_ok());
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(short.verify(&soon.token).unwrap_err(), TokenError::Expired);
        let mut tampered = issued.token.clone();
        tampered.insert(tampered.find('.').unwrap() + 5, 'x');
        assert_eq!(t.verify(&tampered).unwrap_err(), TokenError::Invalid);
        assert_eq!(t.verify("").unwrap_err(), TokenError::Invalid);
        assert_eq!(t.verify("a.b.c").unwrap_err(), TokenError::Invalid);
        // `alg: none` is never accepted.
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let claims = issued.token.split('.').nth(1).unwrap();
        let none = format!("{}.{claims}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
        assert_eq!(t.verify(&none).unwrap_err(), TokenError::Invalid);
    }

    #[test]
    fn a_key_is_generated_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token.key");
        assert!(load_key(&p, false).is_err());
        let k1 = load_key(&p, true).unwrap();
        let k2 = load_key(&p, true).unwrap();
        assert_eq!(k1, k2);
        assert!(k1.len() >= MIN_KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&p, "short").unwrap();
        assert!(load_key(&p, true).is_err());
    }
}
