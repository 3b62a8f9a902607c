//! Micro-benchmarks of the hot paths, with criterion: request path parsing,
//! digest parsing, checking a bearer token and deciding access (what every
//! request with access control pays), SHA-256 over a MiB (what verifies
//! every fill and push),
//! one chunk of a warm blob read from the page cache, and the fill's tee
//! into a temp blob (batched write + hash). `cargo bench --bench hot_paths`;
//! `-- --test` runs each once (a smoke check). For instruction counts that
//! repeat exactly, run the binary under `valgrind --tool=callgrind`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use wharf::oci::digest::{Algorithm, Digest, Hasher};
use wharf::oci::route::ApiRoute;

const HEX: &str = "9640acbb6318ff322f65c34c579d6c92a83f9cfc5beddcce77cbab1c7a29abab";

fn parsing(c: &mut Criterion) {
    let blob = format!("/v2/library/ubuntu/blobs/sha256:{HEX}");
    let manifest = "/v2/ghcr.io/org/team/app/manifests/v1.2.3";
    c.bench_function("route: blob by digest", |b| {
        b.iter(|| ApiRoute::parse(black_box(&blob)))
    });
    c.bench_function("route: manifest by tag, nested name", |b| {
        b.iter(|| ApiRoute::parse(black_box(manifest)))
    });
    let digest = format!("sha256:{HEX}");
    c.bench_function("digest: parse", |b| {
        b.iter(|| black_box(&digest).parse::<Digest>())
    });
}

fn access(c: &mut Criterion) {
    use wharf::auth::policy::{decide, Action, Identity, Op, Place, Policy, Principal, Rule};
    use wharf::auth::token::{Grant, Tokens, Via};
    let tokens =
        Tokens::new(&[9u8; 32], "wharf", std::time::Duration::from_secs(300)).expect("tokens");
    let grant = Grant {
        kind: "repository".into(),
        name: "golden/app".into(),
        actions: vec!["pull".into(), "push".into()],
    };
    let token = tokens
        .issue(
            "alice",
            Via::Password,
            vec![grant],
            std::time::SystemTime::now(),
        )
        .expect("token")
        .token;
    c.bench_function("token: verify", |b| {
        b.iter(|| tokens.verify(black_box(&token)))
    });
    let p = |s: &str| Principal::parse(s).expect("principal");
    let rules = (0..10)
        .map(|i| {
            Rule::new(
                &format!("team{i}/*"),
                vec![p("anonymous")],
                vec![p("alice")],
                vec![],
            )
        })
        .chain([Rule::new(
            "golden/*",
            vec![p("anonymous")],
            vec![p("group:ci")],
            vec![],
        )])
        .collect::<Result<Vec<_>, _>>()
        .expect("rules");
    let groups = std::collections::BTreeMap::from([("ci".to_string(), vec!["alice".to_string()])]);
    let policy = Policy::new(rules, groups, true, &[]).expect("policy");
    let op = Op::Repo {
        name: "golden/app",
        full: None,
        place: Place::Local,
        action: Action::Push,
    };
    let alice = Identity::User("alice".into());
    c.bench_function("policy: decide, 11th rule", |b| {
        b.iter(|| decide(&policy, black_box(&alice), black_box(&op)))
    });
}

fn hashing(c: &mut Criterion) {
    let mib = vec![7u8; 1 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(mib.len() as u64));
    g.bench_function("1 MiB", |b| {
        b.iter(|| {
            let mut h = Hasher::new(Algorithm::Sha256);
            h.update(black_box(&mib));
            h.finish()
        })
    });
    g.finish();
}

fn serving(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("blob");
    std::fs::write(&path, vec![3u8; 8 << 20]).expect("write");
    let file = Arc::new(std::fs::File::open(&path).expect("open"));
    let chunk = wharf::body::FILE_CHUNK;
    let mut g = c.benchmark_group("warm blob");
    g.throughput(Throughput::Bytes(chunk as u64));
    let mut pos = 0u64;
    g.bench_function("one chunk from the page cache", |b| {
        b.iter(|| {
            pos = (pos + chunk as u64) % (8 << 20);
            rt.block_on(wharf::body::read_chunk(&file, pos, chunk))
        })
    });
    g.finish();

    // The fill's tee: 8 MiB arriving in 64 KiB frames, written and hashed.
    let store = rt
        .block_on(wharf::store::Store::open_for_maintenance(
            dir.path(),
            &wharf::config::Storage::Fs,
            wharf::config::DEFAULT_INDEX_CACHE,
        ))
        .expect("store");
    let frames: Vec<Bytes> = (0..128)
        .map(|i| Bytes::from(vec![i as u8; 64 << 10]))
        .collect();
    let mut g = c.benchmark_group("fill tee");
    g.throughput(Throughput::Bytes(8 << 20));
    g.sample_size(20);
    g.bench_function("8 MiB in 64 KiB frames", |b| {
        b.iter_batched(
            || frames.clone(),
            |frames| {
                rt.block_on(async {
                    let mut t = store.new_blob(Algorithm::Sha256).await.expect("temp");
                    for f in frames {
                        t.write(f).await.expect("write");
                    }
                    t.finish().await.expect("finish")
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, parsing, access, hashing, serving);
criterion_main!(benches);
