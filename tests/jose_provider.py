#!/usr/bin/env python3
"""An identity provider's keys and tokens, made with jwcrypto (PyPI
`jwcrypto`, pinned in scripts/jose.sh): the test tooling of dialer tokens
verified against a JWKS (contract §15; tests/common/jwks.rs drives it).

    jose_provider.py keys --out DIR --kid K --alg A
        Generate a signing key for A as a provider would (RSA 2048 for
        RS*/PS*, P-256 / P-384 for ES256 / ES384, Ed25519 for EdDSA), write
        the private JWK to DIR/K.private.json (mode 0600) and print the
        public JWK (kty, kid, alg, use "sig", and the key's public numbers).
    jose_provider.py jwks --dir DIR K1 K2 ...
        Print {"keys": [the public JWKs of K1, K2, ...]}.
    jose_provider.py sign --dir DIR --kid K [--no-kid] [--header-kid H]
                          [--alg A] --claims JSON
        Print a compact JWS signed with K's private key, protected header
        {"alg", "typ": "JWT", "kid"}: alg is the key's unless --alg says
        otherwise, kid is K unless --header-kid names another (a key the
        verifier does not know) or --no-kid leaves it out. --claims - reads
        the claims from stdin.
    jose_provider.py batch --dir DIR
        Read a JSON list of operations on stdin and print the JSON list of
        their results, in order, from one process (Python's start-up once):
          {"op": "keys", "kid": K, "alg": A}              -> public JWK
          {"op": "jwks", "kids": [K1, ...]}               -> {"keys": [...]}
          {"op": "sign", "kid": K, "claims": {...},
           "alg": A?, "header_kid": H-or-null?}           -> "compact JWS"
        In "sign", a missing "header_kid" means K, null means no kid.

Exit status 2 on a bad request, 1 on any other failure, saying why on
stderr in one line. Nothing secret (no
private key, no token) is ever written to stderr.
"""
import argparse
import json
import os
import re
import sys

from jwcrypto import jwk, jws
from jwcrypto.common import json_encode

# alg -> the parameters of JWK.generate for a key of that alg.
KEY_TYPES = {
    "RS256": {"kty": "RSA", "size": 2048},
    "RS384": {"kty": "RSA", "size": 2048},
    "RS512": {"kty": "RSA", "size": 2048},
    "PS256": {"kty": "RSA", "size": 2048},
    "PS384": {"kty": "RSA", "size": 2048},
    "PS512": {"kty": "RSA", "size": 2048},
    "ES256": {"kty": "EC", "crv": "P-256"},
    "ES384": {"kty": "EC", "crv": "P-384"},
    "EdDSA": {"kty": "OKP", "crv": "Ed25519"},
}
SAFE_KID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class BadRequest(Exception):
    pass


def key_path(directory, kid):
    if not isinstance(kid, str) or not SAFE_KID.match(kid):
        raise BadRequest(f"kid {kid!r}: letters, digits, '.', '_', '-' (1 to 128)")
    return os.path.join(directory, f"{kid}.private.json")


# Keys loaded by this process: loading an RSA private key checks it, which
# costs tens of milliseconds (50 tokens of one key load it once).
LOADED = {}


def load_key(directory, kid):
    path = key_path(directory, kid)
    if path not in LOADED:
        try:
            with open(path, encoding="utf-8") as f:
                LOADED[path] = jwk.JWK.from_json(f.read())
        except FileNotFoundError:
            raise BadRequest(f"no key {kid!r} in {directory}") from None
    return LOADED[path]


def make_key(directory, kid, alg):
    """A new private key for `alg`, saved; returns its public JWK."""
    params = KEY_TYPES.get(alg)
    if params is None:
        raise BadRequest(f"alg {alg!r}: one of {', '.join(KEY_TYPES)}")
    path = key_path(directory, kid)
    key = jwk.JWK.generate(**params, kid=kid, alg=alg, use="sig")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key.export_private())
    LOADED[path] = key
    return key.export_public(as_dict=True)


def make_jwks(directory, kids):
    return {"keys": [load_key(directory, k).export_public(as_dict=True) for k in kids]}


def sign(directory, kid, claims, alg=None, header_kid=""):
    """A compact JWS of `claims` with `kid`'s private key. header_kid: ""
    for `kid` itself, None for no kid, else that kid."""
    key = load_key(directory, kid)
    alg = alg or key.get("alg")
    if alg not in KEY_TYPES:
        raise BadRequest(f"alg {alg!r}: one of {', '.join(KEY_TYPES)}")
    # Another alg than the key's own is allowed (a token that a verifier
    # honouring the key's "alg" must refuse), within the key's family.
    fits = KEY_TYPES[alg]
    if key.get("kty") != fits["kty"] or key.get("crv") != fits.get("crv"):
        kind = f"{key.get('kty')} {key.get('crv') or ''}".strip()
        raise BadRequest(f"alg {alg} does not fit key {kid!r} ({kind})")
    if not isinstance(claims, dict):
        raise BadRequest("claims: a JSON object")
    header = {"alg": alg, "typ": "JWT"}
    if header_kid == "":
        header["kid"] = kid
    elif header_kid is not None:
        header["kid"] = header_kid
    token = jws.JWS(json_encode(claims).encode("utf-8"))
    token.add_signature(key, alg=alg, protected=json_encode(header))
    return token.serialize(compact=True)


def run_op(directory, op):
    if not isinstance(op, dict):
        raise BadRequest("each operation: a JSON object")
    kind = op.get("op")
    if kind == "keys":
        return make_key(directory, op.get("kid"), op.get("alg"))
    if kind == "jwks":
        return make_jwks(directory, op.get("kids") or [])
    if kind == "sign":
        return sign(
            directory,
            op.get("kid"),
            op.get("claims"),
            alg=op.get("alg"),
            header_kid=op.get("header_kid", ""),
        )
    raise BadRequest(f"op {kind!r}: keys, jwks or sign")


def parse_args(argv):
    parser = argparse.ArgumentParser(description="keys and tokens as an identity provider makes them")
    sub = parser.add_subparsers(dest="cmd", required=True)
    keys = sub.add_parser("keys")
    keys.add_argument("--out", required=True)
    keys.add_argument("--kid", required=True)
    keys.add_argument("--alg", required=True)
    jwks_cmd = sub.add_parser("jwks")
    jwks_cmd.add_argument("--dir", required=True)
    jwks_cmd.add_argument("kids", nargs="*")
    sign_cmd = sub.add_parser("sign")
    sign_cmd.add_argument("--dir", required=True)
    sign_cmd.add_argument("--kid", required=True)
    sign_cmd.add_argument("--alg")
    sign_cmd.add_argument("--claims", required=True)
    which_kid = sign_cmd.add_mutually_exclusive_group()
    which_kid.add_argument("--no-kid", action="store_true")
    which_kid.add_argument("--header-kid")
    batch = sub.add_parser("batch")
    batch.add_argument("--dir", required=True)
    return parser.parse_args(argv)


def read_json(text, what):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRequest(f"{what}: not JSON ({e.msg} at {e.pos})") from None


def main(argv):
    args = parse_args(argv)
    if args.cmd == "keys":
        out = make_key(args.out, args.kid, args.alg)
    elif args.cmd == "jwks":
        out = make_jwks(args.dir, args.kids)
    elif args.cmd == "sign":
        text = sys.stdin.read() if args.claims == "-" else args.claims
        header_kid = None if args.no_kid else (args.header_kid or "")
        claims = read_json(text, "--claims")
        out = sign(args.dir, args.kid, claims, alg=args.alg, header_kid=header_kid)
    else:
        ops = read_json(sys.stdin.read(), "batch")
        if not isinstance(ops, list):
            raise BadRequest("batch: a JSON list of operations")
        out = [run_op(args.dir, op) for op in ops]
    json.dump(out, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BadRequest as e:
        print(f"jose_provider: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - no traceback: it could quote key material
        print(f"jose_provider: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
