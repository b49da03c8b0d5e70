#!/usr/bin/env python3
"""Writes the benchmark's HS256 key as a sessiond JWK key file that signs
from a fixed past instant.

Usage:
  bench/benchkey.py FOLDER KID SECRET_B64URL

The file is created with mode 0600 under a dot-name (sessiond skips those)
and renamed into place, so sessiond never reads a half-written key.
"""

import base64
import json
import os
import sys


def write_key(folder: str, kid: str, secret: bytes) -> None:
    """Writes `secret` as the key file `<kid>.json` in `folder`."""
    jwk = {
        "kty": "oct",
        "kid": kid,
        "alg": "HS256",
        "k": base64.urlsafe_b64encode(secret).rstrip(b"=").decode(),
        "created_at": "2020-01-01T00:00:00Z",
        "sign_from": "2020-01-01T00:00:00Z",
    }
    temporary = os.path.join(folder, "." + kid + ".json.tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        json.dump(jwk, f)
    os.rename(temporary, os.path.join(folder, kid + ".json"))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: benchkey.py FOLDER KID SECRET_B64URL")
    encoded = sys.argv[3]
    write_key(sys.argv[1], sys.argv[2], base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
