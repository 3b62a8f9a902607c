#!/usr/bin/env python3
"""ORAS (the Python `oras` package) against a Wharf serving HTTPS with access control.

Usage:
    python3 oras_auth.py push --registry 127.0.0.1:5000 --ca ca.crt --workdir DIR \
        --target golden/notes:v1 --user alice --password PW
    python3 oras_auth.py pull --registry 127.0.0.1:5000 --ca ca.crt --workdir DIR \
        --target golden/notes:v1 --expect ok|refused

push: logs in (oras-py writes the credentials to DIR/config.json, never to ~/.docker),
      pushes DIR/notes.txt as an artifact, prints "PUSHED <digest>".
pull: an anonymous client (no login) pulls the artifact and compares it with
      DIR/notes.txt (expect ok), or must be refused (expect refused).
The CA file is what oras-py (requests) checks Wharf's certificate against.
Prints "ORAS OK" and exits 0 when the expectation holds, "ORAS FAIL: ..." and 1 otherwise.
"""

import argparse
import os
import sys
import traceback

CONTENT = b"release notes for the golden image\n" * 100


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["push", "pull"])
    p.add_argument("--registry", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--target", required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--expect", choices=["ok", "refused"], default="ok")
    args = p.parse_args()

    import oras.client

    os.makedirs(args.workdir, exist_ok=True)
    notes = os.path.join(args.workdir, "notes.txt")
    target = f"{args.registry}/{args.target}"
    client = oras.client.OrasClient(hostname=args.registry, tls_verify=args.ca)

    if args.mode == "push":
        with open(notes, "wb") as f:
            f.write(CONTENT)
        client.login(
            username=args.user,
            password=args.password,
            hostname=args.registry,
            config_path=os.path.join(args.workdir, "config.json"),
        )
        # oras-py resolves file paths relative to the working directory.
        os.chdir(args.workdir)
        resp = client.push(target=target, files=["notes.txt:text/plain"], quiet=True)
        if resp.status_code != 201:
            print(f"ORAS FAIL: push answered {resp.status_code}: {resp.text[:300]}")
            return 1
        print(f"PUSHED {resp.headers.get('Docker-Content-Digest')}")
        print("ORAS OK")
        return 0

    out = os.path.join(args.workdir, "pulled")
    os.makedirs(out, exist_ok=True)
    try:
        files = client.pull(target=target, outdir=out)
    except Exception as e:  # oras-py raises on a refusal
        if args.expect == "refused":
            print(f"refused: {type(e).__name__}: {str(e)[:200]}")
            print("ORAS OK")
            return 0
        traceback.print_exc()
        print(f"ORAS FAIL: pull failed: {e}")
        return 1
    pulled = [f for f in files if os.path.basename(f) == "notes.txt"]
    got = open(pulled[0], "rb").read() if pulled else None
    if args.expect == "refused":
        print(f"ORAS FAIL: anonymous pull was not refused (got {len(got or b'')} bytes)")
        return 1
    if got != CONTENT:
        print(f"ORAS FAIL: pulled content differs ({files})")
        return 1
    print("ORAS OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
