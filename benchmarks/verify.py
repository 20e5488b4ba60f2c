"""Identity-token verification: microseconds per full verification, side by side.

Run: ``python benchmarks/verify.py [--seconds 30] [--rounds 200]``

Every contender verifies the same Apple-shaped RS256 token against the same RSA-2048 key and
checks the same claims (signature, iss, aud against two client ids, exp, iat, sub), with keys
already parsed, as a long-running service would. The reference is a bare ``cryptography`` RS256
(PKCS#1 v1.5, SHA-256) verification of the same bytes; each figure is shown as a ratio to it.
Goal (issue 2): appleconnect at most 1.3x the bare verification.

Contenders are measured in interleaved rounds (each round times a short batch of every
contender, in a rotating order), and a ratio is taken within each round, so that a machine
whose speed drifts (shared cores, frequency changes) moves the reference and the contender
together. The table gives medians over the rounds and, for the ratio, the spread between the
first and third quartiles, and the ratio of the fastest rounds (the least disturbed by other
work on a shared machine, as ``timeit`` recommends).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import authlib
import cryptography
import joserfc
import jwt as pyjwt
from authlib.jose import JsonWebToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from joserfc import jwt as jose_jwt
from joserfc.jwk import RSAKey

import appleconnect
from appleconnect import AppleKeys, _jws, verify_identity_token
from appleconnect._jws import _SCAN_ONCE, _b64url_decode_stdlib, _pkcs1_sha256_valid

AUDIENCES = ["com.example.web", "com.example.app"]
# Built once from configuration, as a service does (AppleClient keeps its audiences so).
ALLOWED = frozenset(AUDIENCES)
ISSUER = "https://appleid.apple.com"
KID = "W6WcOKB"
# appleconnect with its optional accelerators switched off (the standard library only).
STDLIB = f"appleconnect {appleconnect.__version__}, standard library only"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def build() -> tuple[str, rsa.RSAPrivateKey, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": "com.example.web",
        "exp": now + 86400,
        "iat": now,
        "sub": "001234.0a1b2c3d4e5f60718293a4b5c6d7e8f9.1234",
        "at_hash": "RV_uB2Y3Y4xMuQ1xo5Ucbw",
        "email": "ep9ks2tnph@privaterelay.appleid.com",
        "email_verified": "true",
        "is_private_email": "true",
        "auth_time": now - 5,
        "nonce_supported": True,
    }
    token = pyjwt.encode(claims, key, algorithm="RS256", headers={"kid": KID})
    n = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": KID,
        "use": "sig",
        "alg": "RS256",
        "n": b64(n.n.to_bytes(256, "big")),
        "e": b64(n.e.to_bytes(3, "big")),
    }
    return token, key, jwk


def contenders(
    token: str, key: rsa.RSAPrivateKey, jwk: dict[str, Any]
) -> dict[str, Callable[[], object]]:
    public = key.public_key()
    header, payload, signature = token.split(".")
    signing_input = f"{header}.{payload}".encode()
    raw_signature = base64.urlsafe_b64decode(signature + "==")
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()

    def bare() -> object:
        public.verify(raw_signature, signing_input, pkcs1, sha256)
        return True

    keys = AppleKeys.from_jwks({"keys": [jwk]})

    def floor() -> object:
        # What any verifier on the standard library must do at least: split, base64url-decode
        # the signature and payload, hash, RSA, JSON-parse; no claim is checked here.
        head, body, sig = token.split(".")
        digest = hashlib.sha256(f"{head}.{body}".encode("ascii")).digest()
        if not _pkcs1_sha256_valid(public, _b64url_decode_stdlib(sig), digest):
            raise AssertionError("the benchmark token does not verify")
        return _SCAN_ONCE(_b64url_decode_stdlib(body).decode("utf-8"), 0)  # fastest stdlib JSON

    def ours() -> object:
        return verify_identity_token(token, keys, audiences=ALLOWED)

    def with_pyjwt() -> object:
        return pyjwt.decode(
            token,
            public,
            algorithms=["RS256"],
            audience=AUDIENCES,
            issuer=ISSUER,
            leeway=60,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )

    jose_key = RSAKey.import_key(jwk)
    registry = jose_jwt.JWTClaimsRegistry(
        leeway=60,
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "values": AUDIENCES},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )

    def with_joserfc() -> object:
        decoded = jose_jwt.decode(token, jose_key, ["RS256"])
        registry.validate(decoded.claims)
        return decoded

    authlib_jwt = JsonWebToken(["RS256"])
    authlib_options = {
        "iss": {"essential": True, "value": ISSUER},
        "aud": {"essential": True, "values": AUDIENCES},
        "sub": {"essential": True},
        "exp": {"essential": True},
        "iat": {"essential": True},
    }

    def with_authlib() -> object:
        claims = authlib_jwt.decode(token, jwk, claims_options=authlib_options)
        claims.validate(leeway=60)
        return claims

    return {
        "bare cryptography RS256 verify": bare,
        "floor: decode + RSA + JSON, no checks": floor,
        f"appleconnect {appleconnect.__version__}": ours,
        STDLIB: ours,
        f"PyJWT {pyjwt.__version__}": with_pyjwt,
        f"joserfc {joserfc.__version__}": with_joserfc,
        f"authlib {authlib.__version__}": with_authlib,
    }


def measure(
    runs: dict[str, Callable[[], object]], seconds: float, rounds: int
) -> dict[str, tuple[list[float], list[float]]]:
    """Time every contender in ``rounds`` interleaved rounds.

    Returns, per contender, the microseconds per call of each round and the ratio of each to the
    reference (the first contender) of the same round.
    """
    names = list(runs)
    batches = {}
    for name in names:  # size each batch to about seconds / rounds / contenders
        fn = runs[name]
        fn()
        start = time.perf_counter()
        for _ in range(50):
            fn()
        per_call = (time.perf_counter() - start) / 50
        batches[name] = max(1, int(seconds / rounds / len(names) / per_call))
    timings: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            fn, batch = runs[name], batches[name]
            _jws._set_speedups(name != STDLIB)
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            timings[name].append((time.perf_counter() - start) / batch * 1e6)
    _jws._set_speedups(True)
    reference = timings[names[0]]
    return {
        name: (values, [value / ref for value, ref in zip(values, reference, strict=True)])
        for name, values in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="time for the whole run")
    parser.add_argument("--rounds", type=int, default=200, help="interleaved rounds")
    args = parser.parse_args()
    token, key, jwk = build()
    runs = contenders(token, key, jwk)
    accelerators = ", ".join(name for name, on in _jws.speedups().items() if on) or "none"
    print(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip())
    print(f"python {platform.python_version()}, cryptography {cryptography.__version__}")
    print(f"appleconnect speedups installed: {accelerators}")
    print(f"token: {len(token)} bytes, RSA-2048, {len(AUDIENCES)} allowed audiences")
    print(f"{args.rounds} interleaved rounds, {args.seconds:g} s in all\n")
    results = measure(runs, args.seconds, args.rounds)
    best_bare = min(next(iter(results.values()))[0])
    print(f"{'contender':<44} {'µs/verify':>10} {'x bare':>7} {'ratio IQR':>10} {'best':>6}")
    for name, (values, ratios) in results.items():
        q1, median, q3 = statistics.quantiles(ratios, n=4)
        print(
            f"{name:<44} {statistics.median(values):>10.1f} {median:>7.2f}"
            f" {f'{q1:.2f}-{q3:.2f}':>10} {min(values) / best_bare:>6.2f}"
        )
    print(
        "\nµs/verify and x bare: medians over the rounds (x bare is the median of the ratios"
        " taken within each round);\nratio IQR: first to third quartile of those ratios; best:"
        " ratio of the fastest rounds, the least disturbed by other work on the machine."
    )


if __name__ == "__main__":
    main()
