//! The fuzz targets on stable: every committed corpus input of
//! `tests/fuzz/corpus/<target>/` goes through its target again (so what
//! the fuzzers found stays fixed), and property tests throw random and
//! near-valid inputs at each (cargo-fuzz needs a nightly toolchain; this
//! runs everywhere).

use proptest::prelude::*;
use std::path::Path;
use wharf::fuzzing::{self, TARGETS};

#[test]
fn every_corpus_input_still_holds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} fails", path.display());
            n += 1;
        }
        assert!(n > 0, "the {name} corpus is empty");
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        for (_, target) in TARGETS {
            target(&data);
        }
    }

    #[test]
    fn near_valid_paths(
        name in "[a-z0-9]{1,8}((/|\\.|_|__|-|%2[fF])[a-z0-9.]{0,8}){0,4}",
        kind in prop::sample::select(vec!["manifests", "blobs", "tags", "referrers", "blobs/uploads", "%2e%2e"]),
        last in "[a-zA-Z0-9:._%-]{0,70}",
    ) {
        fuzzing::route(format!("/v2/{name}/{kind}/{last}").as_bytes());
        fuzzing::names(name.as_bytes());
        fuzzing::names(last.as_bytes());
        fuzzing::names(format!("repository:{name}:{last}").as_bytes());
    }

    #[test]
    fn near_valid_headers(
        spec in "bytes=[0-9]{0,20}-[0-9]{0,20}(,[0-9]{0,3}-[0-9]{0,3})?",
        size in any::<u64>(),
        scheme in prop::sample::select(vec!["Basic", "Bearer", "basic", "Digest", ""]),
        value in "[ -~]{0,120}",
    ) {
        let mut data = size.to_le_bytes().to_vec();
        data.extend_from_slice(spec.as_bytes());
        fuzzing::range(&data);
        fuzzing::authorization(format!("{scheme} {value}").as_bytes());
        fuzzing::challenge(format!("{scheme} {value}").as_bytes());
        fuzzing::token(value.as_bytes());
    }
}
