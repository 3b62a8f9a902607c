//! Content digests (`algorithm:hex`): parsing with the image-spec grammar,
//! the two algorithms Wharf can verify (sha256, sha512), and an incremental
//! hasher. A digest is the only value that ever becomes a file path.

use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;

/// A hash algorithm Wharf can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest: a known algorithm and lowercase hex of the right length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not a digest Wharf accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("digest must have the form algorithm:encoded")]
    Malformed,
    #[error("unsupported digest algorithm {0:?} (sha256 and sha512 are supported)")]
    UnsupportedAlgorithm(String),
    #[error("{0} digests need exactly {1} lowercase hex characters")]
    BadEncoding(&'static str, usize),
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest whose hash is `hash` (its raw bytes), if the length is
    /// right for `algorithm`.
    pub fn from_hash(algorithm: Algorithm, hash: &[u8]) -> Option<Digest> {
        (hash.len() * 2 == algorithm.hex_len()).then(|| Digest {
            algorithm,
            hex: hex::encode(hash),
        })
    }

    /// The raw bytes of the hash.
    pub fn hash(&self) -> Vec<u8> {
        // The hex was validated (lowercase, even length) when parsed.
        hex::decode(&self.hex).unwrap_or_default()
    }

    /// The digest of `bytes` under `algorithm`.
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = Hasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }

    /// The all-zero sha256 digest some clients use to probe the referrers API.
    #[cfg(test)]
    pub fn zero_sha256() -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: "0".repeat(64),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, enc) = s.split_once(':').ok_or(DigestError::Malformed)?;
        if !valid_algorithm_grammar(alg) || !valid_encoded_grammar(enc) {
            return Err(DigestError::Malformed);
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_string())),
        };
        let want = algorithm.hex_len();
        if enc.len() != want || !enc.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadEncoding(algorithm.as_str(), want));
        }
        Ok(Digest {
            algorithm,
            hex: enc.to_string(),
        })
    }
}

/// `[a-z0-9]+([+._-][a-z0-9]+)*`
fn valid_algorithm_grammar(s: &str) -> bool {
    let mut prev_sep = true;
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => prev_sep = false,
            b'+' | b'.' | b'_' | b'-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !prev_sep
}

/// `[a-zA-Z0-9=_-]+`
fn valid_encoded_grammar(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The hasher's state, to continue it later, perhaps in another
    /// process (an upload session kept in a bucket): see [`Hasher::resume`].
    pub fn save(&self) -> Vec<u8> {
        use sha2::digest::common::hazmat::SerializableState;
        match self {
            Hasher::Sha256(h) => h.serialize().to_vec(),
            Hasher::Sha512(h) => h.serialize().to_vec(),
        }
    }

    /// A hasher continued from what [`Hasher::save`] returned; `None` when
    /// `state` is not a saved state of `algorithm`.
    pub fn resume(algorithm: Algorithm, state: &[u8]) -> Option<Hasher> {
        use sha2::digest::common::hazmat::SerializableState;
        match algorithm {
            Algorithm::Sha256 => {
                let s = state.try_into().ok()?;
                Sha256::deserialize(s).ok().map(Hasher::Sha256)
            }
            Algorithm::Sha512 => {
                let s = state.try_into().ok()?;
                Sha512::deserialize(s).ok().map(Hasher::Sha512)
            }
        }
    }

    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_hasher_continues_where_it_stopped() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
            // Cut inside a block and at block boundaries alike.
            for cut in [0, 1, 63, 64, 65, 127, 128, 129, 999, 1000] {
                let mut h = Hasher::new(alg);
                h.update(&data[..cut]);
                let saved = h.save();
                let mut resumed = Hasher::resume(alg, &saved).expect("resumes");
                resumed.update(&data[cut..]);
                assert_eq!(
                    resumed.finish(),
                    Digest::of(alg, &data),
                    "{alg:?} cut {cut}"
                );
            }
        }
        let saved = Hasher::new(Algorithm::Sha256).save();
        assert!(Hasher::resume(Algorithm::Sha512, &saved).is_none());
        assert!(Hasher::resume(Algorithm::Sha256, &saved[1..]).is_none());
        assert!(Hasher::resume(Algorithm::Sha256, b"").is_none());
    }

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::of(Algorithm::Sha256, b""), d);
        let z = Digest::zero_sha256();
        assert_eq!(z.to_string().len(), 71);
    }

    #[test]
    fn rejects_bad_digests() {
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        let cases: &[(&str, DigestError)] = &[
            ("", DigestError::Malformed),
            ("sha256", DigestError::Malformed),
            ("sha256:", DigestError::Malformed),
            (":abc", DigestError::Malformed),
            ("sha256:../../etc", DigestError::Malformed),
            ("md5:abcd", DigestError::UnsupportedAlgorithm("md5".into())),
            ("sha256:abcd", DigestError::BadEncoding("sha256", 64)),
            (&upper, DigestError::BadEncoding("sha256", 64)),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Digest>().unwrap_err(), *want, "{input}");
        }
    }

    #[test]
    fn raw_hashes_round_trip() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let d = Digest::of(alg, b"x");
            assert_eq!(Digest::from_hash(alg, &d.hash()), Some(d.clone()));
            assert_eq!(d.hash().len() * 2, d.hex().len());
        }
        assert_eq!(Digest::from_hash(Algorithm::Sha256, &[0; 31]), None);
        assert_eq!(Digest::from_hash(Algorithm::Sha512, &[0; 32]), None);
    }

    #[test]
    fn sha512_works() {
        let d = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(d.hex().len(), 128);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }
}
