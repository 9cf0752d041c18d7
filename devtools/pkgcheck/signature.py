"""A package's signature as the daemon reads and verifies it (dify-plugin-daemon ``pkg/plugin_packager``).

What is signed (``signer/withkey/sign_with_key.go``, ``decoder/verifier.go``): the SHA-256 digests of
every entry's bytes, concatenated in the zip's central-directory order (``decoder/zip.go`` Walk over
``reader.File``; ``.verification.dify.json`` is simply one of the entries, the signer adds it last),
followed by the signing time as decimal Unix seconds. The signature is RSA PKCS#1 v1.5 over SHA-256
of that buffer (``utils/encryption/rsa.go``) and travels base64-encoded in the zip comment as
``{"signature": "<base64>", "time": <unix>}``. Keys are PKCS#1 PEM blocks, nothing before or after.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zipfile
from collections.abc import Iterator, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

VERIFICATION_FILE = ".verification.dify.json"
AUTHORIZED_CATEGORIES = ("langgenius", "partner", "community")
PRIVATE_KEY_TYPE = "RSA PRIVATE KEY"
PUBLIC_KEY_TYPE = "RSA PUBLIC KEY"
R_SIGNATURE = "§1.9 daemon signature: zip comment {signature, time}, .verification.dify.json"


class SignatureError(Exception):
    """A signature or key the daemon would not accept; the message says why."""


def signed_data(zf: zipfile.ZipFile, signed_at: int) -> bytes:
    """The bytes the daemon verifies: each entry's SHA-256 in zip order, then the time."""
    names = [info.filename for info in zf.infolist()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SignatureError(f"duplicate zip entries {duplicates}: the daemon would read one of them for both")
    digests = []
    for info in zf.infolist():
        if info.is_dir():
            raise SignatureError(f"{info.filename}: directory entry; the daemon's ReadFile fails on it")
        digests.append(hashlib.sha256(zf.read(info)).digest())
    return b"".join(digests) + str(signed_at).encode()


def read_signature(zf: zipfile.ZipFile) -> tuple[bytes, int]:
    """The signature and signing time from the zip comment."""
    if not zf.comment:
        raise SignatureError("the package is not signed (no zip comment)")
    try:
        comment = json.loads(zf.comment.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignatureError(f"the zip comment is not the daemon's signature JSON ({exc})") from exc
    if not isinstance(comment, dict):
        raise SignatureError("the zip comment is not a JSON object")
    signature, signed_at = comment.get("signature"), comment.get("time")
    if not isinstance(signature, str) or not signature:
        raise SignatureError("the zip comment has no signature")
    if isinstance(signed_at, bool) or not isinstance(signed_at, int):
        raise SignatureError(f"the zip comment's time {signed_at!r} is not an integer (Go reads it as int64)")
    try:
        return base64.b64decode(signature, validate=True), signed_at
    except binascii.Error as exc:
        raise SignatureError(f"the signature is not base64 ({exc})") from exc


def verify_zip(zf: zipfile.ZipFile, public_keys: Sequence[rsa.RSAPublicKey]) -> None:
    """Raise SignatureError unless one of ``public_keys`` verifies the package, as the daemon checks it."""
    signature, signed_at = read_signature(zf)
    data = signed_data(zf, signed_at)
    for key in public_keys:
        try:
            key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            return
        except InvalidSignature:
            continue
    raise SignatureError(
        f"bad signature: no key of {len(public_keys)} verifies it (a file, the comment or the key differs)"
    )


def check_signature(zf: zipfile.ZipFile) -> Iterator[str]:
    """Structure of a signed package (the key is not known here): comment, verification file."""
    names = [info.filename for info in zf.infolist()]
    if not zf.comment and VERIFICATION_FILE not in names:
        return  # unsigned: installs only where FORCE_VERIFYING_SIGNATURE=false
    try:
        read_signature(zf)
    except SignatureError as exc:
        yield f"zip comment: {exc} [{R_SIGNATURE}]"
    if VERIFICATION_FILE not in names:
        return  # signatures from before the verification file count as langgenius ones
    if names.count(VERIFICATION_FILE) > 1:
        yield f"{VERIFICATION_FILE}: appears {names.count(VERIFICATION_FILE)} times (signed twice?) [{R_SIGNATURE}]"
    try:
        verification = json.loads(zf.read(VERIFICATION_FILE))
    except (UnicodeDecodeError, ValueError) as exc:
        yield f"{VERIFICATION_FILE}: not JSON ({exc}) [{R_SIGNATURE}]"
        return
    category = verification.get("authorized_category") if isinstance(verification, dict) else None
    if category not in AUTHORIZED_CATEGORIES:
        yield f"{VERIFICATION_FILE}: authorized_category {category!r} is not one of {list(AUTHORIZED_CATEGORIES)} [{R_SIGNATURE}]"


# --------------------------------------------------------------------------------------------
# Keys: PKCS#1 PEM exactly as encryption.LoadPrivateKey / LoadPublicKey accept them
# --------------------------------------------------------------------------------------------


def check_pem_block(data: bytes, block_type: str) -> None:
    """One PEM block of ``block_type`` and nothing after it: Go's pem.Decode plus the daemon's 'no extra data'."""
    begin, end = f"-----BEGIN {block_type}-----".encode(), f"-----END {block_type}-----".encode()
    start = data.find(b"-----BEGIN ")
    if start < 0 or not data[start:].startswith(begin):
        found = data[start:].split(b"\n", 1)[0].decode("ascii", "replace") if start >= 0 else "no PEM block"
        raise SignatureError(f"expected a PEM block '{block_type}', found {found!r}")
    stop = data.find(end, start)
    if stop < 0:
        raise SignatureError(f"the PEM block '{block_type}' has no END line")
    rest = data[stop + len(end) :]
    rest = rest[2:] if rest.startswith(b"\r\n") else rest[1:] if rest.startswith(b"\n") else rest
    if rest:
        raise SignatureError("extra data after the PEM block (the daemon refuses such a key file)")


def load_public_key(data: bytes) -> rsa.RSAPublicKey:
    check_pem_block(data, PUBLIC_KEY_TYPE)
    try:
        key = load_pem_public_key(data)  # with this header: PKCS#1 RSAPublicKey, like x509.ParsePKCS1PublicKey
    except ValueError as exc:
        raise SignatureError(f"not a PKCS#1 RSA public key ({exc})") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureError("not an RSA public key")
    return key


def load_private_key(data: bytes) -> rsa.RSAPrivateKey:
    check_pem_block(data, PRIVATE_KEY_TYPE)
    try:
        key = load_pem_private_key(data, password=None)  # PKCS#1 RSAPrivateKey, unencrypted
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"not an unencrypted PKCS#1 RSA private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignatureError("not an RSA private key")
    return key
