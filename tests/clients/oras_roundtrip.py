#!/usr/bin/env python3
"""Black-box round trip against an OCI registry using the Python `oras` package (oras-py).

Usage:
    python3 oras_roundtrip.py --registry 127.0.0.1:5000 --repo golden/artifacts \
        --workdir /tmp/oras-work [--no-referrers] [--trace] [--timeout 120]

Steps (all over plain http, through oras-py's requests session):
  1. push a ~300 KiB random file to <registry>/<repo>:v1 with oras.provider.Registry.push().
     oras-py 0.2.x cannot write a manifest `artifactType` field from push(); the artifact
     type is carried as the config media type (application/vnd.wharf.test.v1), which is
     what the OCI 1.1 referrers API falls back to.
  2. pull it back with Registry.pull() into a fresh directory and compare bytes.
  3. attach referrers to the v1 manifest:
       a. an SBOM whose manifest is built by hand (explicit `artifactType`
          application/vnd.wharf.sbom.v1, OCI empty config, `subject`), uploaded with
          Registry.upload_blob() + Registry.upload_manifest() by digest (no tag);
       b. a "signature" pushed with Registry.push(subject=oras.oci.Subject(...)) to tag
          v1-signature, artifact type only via config media type application/vnd.wharf.sig.v1.
  4. GET /v2/<repo>/referrers/<digest> (oras-py has no referrers helper -> urllib):
     content type, listing, artifactType values, ?artifactType= filtering, and an
     empty index for an unknown digest. Skipped with --no-referrers.
Prints "ORAS OK" and exits 0 on success; prints "ORAS FAIL: ..." and exits 1 otherwise.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request

ARTIFACT_TYPE = "application/vnd.wharf.test.v1"
SBOM_TYPE = "application/vnd.wharf.sbom.v1"
SIG_TYPE = "application/vnd.wharf.sig.v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
BLOB_SIZE = 300 * 1024 + 123  # ~300 KiB, deliberately not a round number


class Failure(Exception):
    pass


class Timeout(BaseException):
    # BaseException so oras-py's retry decorator (which catches Exception) can't swallow it.
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def log(msg):
    print(f"[oras_roundtrip] {msg}", flush=True)


def sha256_bytes(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(65536), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def install_trace(client):
    """Log every HTTP exchange made through oras-py's requests.Session."""
    interesting = ("Content-Type", "Content-Length", "Content-Range", "Accept", "Authorization")

    def hook(resp, *args, **kwargs):
        req = resp.request
        hdrs = {k: v for k, v in req.headers.items() if k in interesting}
        body = req.body
        blen = len(body) if isinstance(body, (bytes, str)) else (0 if body is None else "?")
        rh = {k: v for k, v in resp.headers.items()
              if k.lower() in ("location", "docker-content-digest", "content-type", "oci-subject", "range")}
        log(f"HTTP {req.method} {req.url} req={hdrs} body={blen}B -> {resp.status_code} {rh}")

    client.session.hooks["response"].append(hook)


def raw_get(client, url, accept):
    """GET through oras-py's do_request (keeps its auth handling); return response."""
    return client.do_request(url, "GET", headers={"Accept": accept})


def fetch_manifest_raw(client, base, repo, ref):
    r = raw_get(client, f"{base}/v2/{repo}/manifests/{ref}", OCI_MANIFEST)
    check(r.status_code == 200, f"GET manifest {ref}: HTTP {r.status_code} {r.text[:300]}")
    return r.content, r.headers


def http_get_json(url):
    """Plain urllib GET (used for the referrers API, which oras-py has no helper for)."""
    req = urllib.request.Request(url, headers={"Accept": OCI_INDEX})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            body = resp.read()
            return resp.status, dict(resp.headers.items()), body
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def header(headers, name):
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def check_referrers_response(status, headers, body, what):
    check(status == 200, f"{what}: expected HTTP 200, got {status}: {body[:300]!r}")
    ctype = header(headers, "Content-Type") or ""
    check(ctype.split(";")[0].strip() == OCI_INDEX,
          f"{what}: Content-Type is {ctype!r}, expected {OCI_INDEX}")
    try:
        index = json.loads(body)
    except ValueError as e:
        raise Failure(f"{what}: body is not JSON: {e}: {body[:300]!r}")
    check(index.get("schemaVersion") == 2, f"{what}: schemaVersion != 2: {index}")
    check(index.get("mediaType") == OCI_INDEX, f"{what}: index mediaType is {index.get('mediaType')!r}")
    check(isinstance(index.get("manifests"), list), f"{what}: 'manifests' missing or not a list: {index}")
    return index


def find_desc(index, digest):
    return [d for d in index["manifests"] if d.get("digest") == digest]


def run(args):
    import oras.client
    import oras.oci
    import oras.version
    import requests

    log(f"oras-py {oras.version.__version__}")
    registry, repo = args.registry, args.repo.strip("/")
    base = f"http://{registry}"

    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    src_dir = os.path.join(work, "src")
    pull_dir = os.path.join(work, "pulled")
    for d in (src_dir, pull_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)

    # insecure=True -> plain http; hostname is only a default, the target carries it too.
    client = oras.client.OrasClient(hostname=registry, insecure=True)
    if args.trace:
        install_trace(client)

    # ---- 1. push -------------------------------------------------------------------
    payload = os.urandom(BLOB_SIZE)
    blob_path = os.path.join(src_dir, "payload.bin")
    with open(blob_path, "wb") as f:
        f.write(payload)
    target = f"{registry}/{repo}:v1"
    log(f"push {target} ({len(payload)} bytes, config mediaType {ARTIFACT_TYPE})")
    # "<missing path>:<mediaType>" -> oras-py uploads the 2-byte "{}" config with that media type.
    resp = client.push(
        target=target,
        files=[f"{blob_path}:application/vnd.wharf.payload.layer.v1"],
        manifest_config=f"{os.path.join(src_dir, 'no-such-config.json')}:{ARTIFACT_TYPE}",
        manifest_annotations={"org.opencontainers.image.description": "wharf oras-py roundtrip"},
        disable_path_validation=True,
        do_chunked=args.chunked,
        quiet=True,
    )
    check(resp.status_code == 201, f"manifest PUT for {target}: expected 201, got {resp.status_code}")
    v1_digest = header(resp.headers, "Docker-Content-Digest")
    check(v1_digest, f"manifest PUT for {target}: no Docker-Content-Digest header")
    check(header(resp.headers, "Location"), f"manifest PUT for {target}: no Location header")
    sent = resp.request.body if isinstance(resp.request.body, bytes) else resp.request.body.encode()
    check(sha256_bytes(sent) == v1_digest,
          f"Docker-Content-Digest {v1_digest} != sha256 of the bytes sent {sha256_bytes(sent)}")
    log(f"pushed v1 manifest {v1_digest}")

    # Manifest must come back byte-for-byte, by tag and by digest.
    raw_tag, h = fetch_manifest_raw(client, base, repo, "v1")
    check(raw_tag == sent, "manifest fetched by tag differs from the bytes pushed")
    check(header(h, "Docker-Content-Digest") == v1_digest, f"GET by tag: Docker-Content-Digest {header(h, 'Docker-Content-Digest')} != {v1_digest}")
    check((header(h, "Content-Type") or "").split(";")[0] == OCI_MANIFEST, f"GET manifest Content-Type {header(h, 'Content-Type')!r}")
    raw_dig, _ = fetch_manifest_raw(client, base, repo, v1_digest)
    check(raw_dig == sent, "manifest fetched by digest differs from the bytes pushed")
    v1_manifest = json.loads(raw_tag)
    check(v1_manifest["config"]["mediaType"] == ARTIFACT_TYPE, f"config mediaType is {v1_manifest['config']['mediaType']}")

    # ---- 2. pull -------------------------------------------------------------------
    manifest = client.get_manifest(target)
    check(manifest == v1_manifest, "get_manifest() result differs from raw manifest")
    files = client.pull(target=target, outdir=pull_dir)
    check(len(files) == 1, f"pull returned {files}, expected exactly one file")
    check(os.path.basename(files[0]) == "payload.bin", f"pulled file named {files[0]}")
    with open(files[0], "rb") as f:
        got = f.read()
    check(got == payload, f"pulled bytes differ: {len(got)} bytes, {sha256_bytes(got)} vs {sha256_bytes(payload)}")
    log(f"pulled {files[0]} ({len(got)} bytes) identical")

    # Subject descriptor from the exact stored bytes (oras.oci.Subject.from_manifest would
    # re-serialise with json.dumps, which only matches if the registry kept bytes verbatim).
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=v1_digest, size=len(raw_tag))
    check(oras.oci.Subject.from_manifest(v1_manifest) == subject, "Subject.from_manifest disagrees with stored bytes")

    # ---- 3a. attach SBOM (hand-built manifest with artifactType + subject) ---------
    repo_container = client.get_container(f"{registry}/{repo}")
    sbom_path = os.path.join(src_dir, "sbom.spdx.json")
    with open(sbom_path, "w") as f:
        json.dump({"spdxVersion": "SPDX-2.3", "name": "wharf-test", "nonce": os.urandom(8).hex()}, f)
    sbom_layer = oras.oci.NewLayer(sbom_path, media_type="application/spdx+json")
    sbom_layer["annotations"] = {"org.opencontainers.image.title": "sbom.spdx.json"}
    empty_path = os.path.join(src_dir, "empty.json")
    with open(empty_path, "w") as f:
        f.write("{}")
    empty_desc = {"mediaType": OCI_EMPTY, "digest": EMPTY_DIGEST, "size": 2}
    for path, desc in ((empty_path, empty_desc), (sbom_path, sbom_layer)):
        r = client.upload_blob(path, repo_container, desc, do_chunked=args.chunked)
        check(r.status_code in (200, 201, 202), f"upload_blob {desc['digest']}: HTTP {r.status_code} {r.text[:300]}")
    sbom_manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SBOM_TYPE,
        "config": empty_desc,
        "layers": [sbom_layer],
        "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    # Exact bytes requests will send for json=..., so we can PUT by digest.
    sbom_bytes = requests.Request("PUT", "http://x/", json=sbom_manifest).prepare().body
    sbom_digest = sha256_bytes(sbom_bytes)
    sbom_container = client.get_container(f"{registry}/{repo}@{sbom_digest}")
    r = client.upload_manifest(sbom_manifest, sbom_container)
    check(r.status_code == 201, f"SBOM manifest PUT by digest: HTTP {r.status_code} {r.text[:300]}")
    check(header(r.headers, "Docker-Content-Digest") == sbom_digest,
          f"SBOM PUT Docker-Content-Digest {header(r.headers, 'Docker-Content-Digest')} != {sbom_digest}")
    if not args.no_referrers:
        check(header(r.headers, "OCI-Subject") == v1_digest,
              f"SBOM PUT: OCI-Subject header is {header(r.headers, 'OCI-Subject')!r}, expected {v1_digest}")
    raw_sbom, _ = fetch_manifest_raw(client, base, repo, sbom_digest)
    check(raw_sbom == sbom_bytes, "SBOM manifest fetched by digest differs from bytes pushed")
    got_sbom = client.get_manifest(sbom_container)
    check(got_sbom.get("artifactType") == SBOM_TYPE and got_sbom.get("subject", {}).get("digest") == v1_digest,
          f"SBOM manifest lost artifactType/subject: {got_sbom}")
    log(f"attached SBOM {sbom_digest} -> {v1_digest}")

    # ---- 3b. attach signature via Registry.push(subject=...) ----------------------
    sig_path = os.path.join(src_dir, "signature.sig")
    with open(sig_path, "wb") as f:
        f.write(b"not-really-a-signature:" + os.urandom(32))
    r = client.push(
        target=f"{registry}/{repo}:v1-signature",
        files=[sig_path],
        manifest_config=f"{os.path.join(src_dir, 'no-such-sig-config.json')}:{SIG_TYPE}",
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    check(r.status_code == 201, f"signature push: HTTP {r.status_code}")
    sig_digest = header(r.headers, "Docker-Content-Digest")
    check(sig_digest == sha256_bytes(r.request.body), f"signature PUT digest {sig_digest} mismatch")
    if not args.no_referrers:
        check(header(r.headers, "OCI-Subject") == v1_digest,
              f"signature PUT: OCI-Subject header is {header(r.headers, 'OCI-Subject')!r}, expected {v1_digest}")
    log(f"attached signature {sig_digest} -> {v1_digest} (artifactType via config.mediaType)")

    # ---- 4. referrers --------------------------------------------------------------
    if args.no_referrers:
        log("--no-referrers: skipping referrers API checks")
        return
    url = f"{base}/v2/{repo}/referrers/{v1_digest}"
    status, hdrs, body = http_get_json(url)
    index = check_referrers_response(status, hdrs, body, f"GET {url}")
    expect = {sbom_digest: (SBOM_TYPE, len(sbom_bytes)), sig_digest: (SIG_TYPE, len(r.request.body))}
    for dig, (atype, size) in expect.items():
        found = find_desc(index, dig)
        check(len(found) == 1, f"referrers: {dig} listed {len(found)} times in {index['manifests']}")
        d = found[0]
        check(d.get("artifactType") == atype, f"referrers: {dig} artifactType {d.get('artifactType')!r}, expected {atype}")
        check(d.get("mediaType") == OCI_MANIFEST, f"referrers: {dig} mediaType {d.get('mediaType')!r}")
        check(d.get("size") == size, f"referrers: {dig} size {d.get('size')} expected {size}")
    sbom_desc = find_desc(index, sbom_digest)[0]
    check(sbom_desc.get("annotations", {}).get("org.opencontainers.image.created") == "2024-01-01T00:00:00Z",
          f"referrers: SBOM descriptor lacks manifest annotations: {sbom_desc}")
    log(f"referrers lists {len(index['manifests'])} descriptor(s) incl. SBOM and signature")

    furl = f"{url}?{urllib.parse.urlencode({'artifactType': SBOM_TYPE})}"
    status, hdrs, body = http_get_json(furl)
    findex = check_referrers_response(status, hdrs, body, f"GET {furl}")
    check(len(find_desc(findex, sbom_digest)) == 1, f"filtered referrers missing SBOM: {findex['manifests']}")
    check(all(d.get("artifactType") == SBOM_TYPE for d in findex["manifests"]),
          f"filtered referrers contains other artifact types: {findex['manifests']}")
    applied = header(hdrs, "OCI-Filters-Applied") or ""
    check("artifactType" in [x.strip() for x in applied.split(",")],
          f"filtered referrers: OCI-Filters-Applied header is {applied!r}, expected 'artifactType'")
    log("artifactType filter OK")

    unknown = "sha256:" + hashlib.sha256(os.urandom(16)).hexdigest()
    uurl = f"{base}/v2/{repo}/referrers/{unknown}"
    status, hdrs, body = http_get_json(uurl)
    uindex = check_referrers_response(status, hdrs, body, f"GET {uurl} (unknown subject)")
    check(uindex["manifests"] == [], f"unknown subject: expected empty manifests, got {uindex['manifests']}")
    log("unknown subject -> empty index OK")


def main():
    p = argparse.ArgumentParser(description="oras-py push/pull/attach/referrers round trip")
    p.add_argument("--registry", required=True, help="HOST:PORT of the registry (plain http)")
    p.add_argument("--repo", required=True, help="repository name, e.g. golden/artifacts")
    p.add_argument("--workdir", required=True, help="scratch directory (created if missing)")
    p.add_argument("--no-referrers", action="store_true",
                   help="skip the referrers API checks and OCI-Subject header checks")
    p.add_argument("--chunked", action="store_true",
                   help="use oras-py chunked uploads (POST, PATCH..., PUT ?digest=) instead of POST + monolithic PUT")
    p.add_argument("--trace", action="store_true", help="log every HTTP request oras-py makes")
    p.add_argument("--timeout", type=int, default=120,
                   help="overall deadline in seconds (oras-py retries connection errors/500s with long sleeps)")
    args = p.parse_args()

    def on_alarm(signum, frame):
        raise Timeout(f"overall timeout of {args.timeout}s exceeded")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    try:
        run(args)
    except (Failure, Timeout) as e:
        print(f"ORAS FAIL: {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # oras-py raises ValueError / requests errors on HTTP problems
        traceback.print_exc()
        print(f"ORAS FAIL: unexpected {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    finally:
        signal.alarm(0)
    print("ORAS OK", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
