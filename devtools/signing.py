"""Sign ``.difypkg`` files so a self-hosted daemon can keep ``FORCE_VERIFYING_SIGNATURE`` on.

Usage::

    python -m devtools.signing keygen keys/tritonmm          # keys/tritonmm.private.pem + .public.pem (RSA-4096)
    python -m devtools.signing sign dist/x.difypkg --key keys/tritonmm.private.pem [--category community]
    python -m devtools.signing verify dist/x.signed.difypkg --key keys/tritonmm.public.pem

The same formats as the daemon's ``dify signature generate|sign|verify`` (``cmd/commandline/signature``),
written from its source: PKCS#1 PEM keys, and a signed package ``<name>.signed.difypkg`` that is the
original zip with every entry kept byte for byte, ``.verification.dify.json`` appended last
(``{"authorized_category": ...}``, ``community`` for a third party) and the signature JSON in the zip
comment (the hashing is devtools.pkgcheck.signature). Unlike the Go CLI, the private key is written
with mode 0600 and existing key files are never overwritten.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from devtools.pkgcheck.signature import (
    AUTHORIZED_CATEGORIES,
    VERIFICATION_FILE,
    SignatureError,
    load_private_key,
    load_public_key,
    signed_data,
    verify_zip,
)

KEY_BITS = 4096  # what `dify signature generate` makes
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the builder's entry time, so only the comment carries a date


def generate_key_pair() -> tuple[bytes, bytes]:
    """(private, public) PEM: ``RSA PRIVATE KEY`` and ``RSA PUBLIC KEY``, PKCS#1, unencrypted."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    return private, public


def sign_package(
    package: bytes, private_pem: bytes, category: str = "community", signed_at: int | None = None
) -> bytes:
    """The signed package: ``package`` unchanged entry by entry, plus the verification file and the comment."""
    if category not in AUTHORIZED_CATEGORIES:
        raise SignatureError(f"category {category!r} is not one of {list(AUTHORIZED_CATEGORIES)}")
    key = load_private_key(private_pem)
    buffer = io.BytesIO(package)
    with zipfile.ZipFile(buffer, "a") as archive:
        names = archive.namelist()
        if archive.comment or VERIFICATION_FILE in names:
            raise SignatureError("the package is already signed; sign the unsigned build instead")
        # Go's json.Marshal of the Verification struct: no spaces.
        verification = json.dumps({"authorized_category": category}, separators=(",", ":")).encode()
        info = zipfile.ZipInfo(VERIFICATION_FILE, date_time=FIXED_DATE_TIME)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 3
        info.external_attr = 0o100644 << 16
        archive.writestr(info, verification)
        when = int(time.time()) if signed_at is None else signed_at
        signature = key.sign(signed_data(archive, when), padding.PKCS1v15(), hashes.SHA256())
        # Go's json.Marshal of map[string]any: keys sorted, no spaces; base64 needs no escaping.
        comment = {"signature": base64.b64encode(signature).decode(), "time": when}
        archive.comment = json.dumps(comment, separators=(",", ":")).encode()
    return buffer.getvalue()


def verify_package(package: bytes, public_pems: Sequence[bytes]) -> None:
    """Raise SignatureError unless one of the keys verifies ``package`` as the daemon does."""
    keys = [load_public_key(pem) for pem in public_pems]
    try:
        with zipfile.ZipFile(io.BytesIO(package)) as archive:
            verify_zip(archive, keys)
    except zipfile.BadZipFile as exc:
        raise SignatureError(f"not a zip archive ({exc})") from exc


def signed_path(package: Path) -> Path:
    """``x.difypkg`` -> ``x.signed.difypkg``, the name the Go CLI gives."""
    return package.with_name(f"{package.stem}.signed{package.suffix}")


def _write_new(path: Path, data: bytes, mode: int) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.signing", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    keygen = commands.add_parser("keygen", help="write NAME.private.pem and NAME.public.pem (RSA-4096, PKCS#1)")
    keygen.add_argument("name", type=Path, help="path prefix of the two key files")
    sign = commands.add_parser("sign", help="write PACKAGE.signed.difypkg")
    sign.add_argument("package", type=Path)
    sign.add_argument("--key", type=Path, required=True, help="the private key PEM")
    sign.add_argument("--category", default="community", choices=AUTHORIZED_CATEGORIES)
    sign.add_argument("--out", type=Path, help="output path (default: <package>.signed.difypkg)")
    verify = commands.add_parser("verify", help="exit 0 if one of the public keys verifies the package")
    verify.add_argument("package", type=Path)
    verify.add_argument("--key", type=Path, action="append", required=True, help="a public key PEM (repeatable)")
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            private, public = generate_key_pair()
            private_path, public_path = Path(f"{args.name}.private.pem"), Path(f"{args.name}.public.pem")
            private_path.parent.mkdir(parents=True, exist_ok=True)
            _write_new(private_path, private, 0o600)
            _write_new(public_path, public, 0o644)
            print(f"{private_path} (keep it secret)\n{public_path} (give it to the daemon)")
        elif args.command == "sign":
            out = args.out or signed_path(args.package)
            out.write_bytes(sign_package(args.package.read_bytes(), args.key.read_bytes(), args.category))
            print(f"{out}  signed, category {args.category}")
        else:
            verify_package(args.package.read_bytes(), [key.read_bytes() for key in args.key])
            print(f"{args.package}: signature OK")
    except (SignatureError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
