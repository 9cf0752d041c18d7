"""Package signatures in the daemon's format (devtools.signing, devtools.pkgcheck.signature).

A built package is signed and verified; any change to a file, the key or the zip comment must
fail verification. Packages signed by Go (the daemon's official package and one signed by the
daemon's signing code, tests/data/dify_daemon/) check the verifier against the daemon's output.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from devtools import signing, validate_package
from devtools.build_packages import build_plugin
from devtools.pkgcheck import validate
from devtools.pkgcheck.signature import VERIFICATION_FILE, SignatureError
from devtools.signing import generate_key_pair, sign_package, verify_package
from tests.fake_plugins import make_model_plugin

DAEMON_DATA = Path(__file__).resolve().parent / "data" / "dify_daemon"


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="module")
def other_keys() -> tuple[bytes, bytes]:
    return generate_key_pair()


@pytest.fixture(scope="module")
def unsigned(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("plugin")
    return build_plugin(make_model_plugin(root), root / "dist").path.read_bytes()


@pytest.fixture(scope="module")
def signed(unsigned: bytes, keys: tuple[bytes, bytes]) -> bytes:
    return sign_package(unsigned, keys[0], signed_at=1_767_225_600)


def entries(package: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(package)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def rebuilt(package: bytes, *, replace: dict[str, bytes] | None = None, comment: bytes | None = None) -> bytes:
    """The package entry by entry, with some contents or the comment changed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as old, zipfile.ZipFile(buffer, "w") as new:
        for info in old.infolist():
            new.writestr(info, (replace or {}).get(info.filename, old.read(info)))
        new.comment = old.comment if comment is None else comment
    return buffer.getvalue()


def test_keys_are_rsa_4096_pkcs1_pem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path / "keys" / "acme"
    assert signing.main(["keygen", str(prefix)]) == 0
    private, public = Path(f"{prefix}.private.pem"), Path(f"{prefix}.public.pem")
    assert private.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    assert public.read_bytes().startswith(b"-----BEGIN RSA PUBLIC KEY-----\n")
    assert private.stat().st_mode & 0o777 == 0o600
    assert signing.load_private_key(private.read_bytes()).key_size == 4096
    assert signing.load_public_key(public.read_bytes()).key_size == 4096
    # An existing key is never overwritten.
    assert signing.main(["keygen", str(prefix)]) == 1
    assert "File exists" in capsys.readouterr().err


def test_sign_then_verify(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    verify_package(signed, [keys[1]])


def test_signing_leaves_the_package_unchanged(unsigned: bytes, signed: bytes) -> None:
    before, after = entries(unsigned), entries(signed)
    assert len(after) == len(before) + 1
    for (old_info, old_data), (new_info, new_data) in zip(before, after, strict=False):
        assert new_info.filename == old_info.filename and new_data == old_data
        assert (new_info.date_time, new_info.external_attr, new_info.compress_type) == (
            old_info.date_time,
            old_info.external_attr,
            old_info.compress_type,
        )
    # Byte for byte: every original entry (header and data) stays where it was.
    with zipfile.ZipFile(io.BytesIO(unsigned)) as archive:
        directory_start = archive.start_dir
    assert signed[:directory_start] == unsigned[:directory_start]
    last, verification = after[-1]
    assert last.filename == VERIFICATION_FILE and verification == b'{"authorized_category":"community"}'
    with zipfile.ZipFile(io.BytesIO(signed)) as archive:
        comment = json.loads(archive.comment)
    assert sorted(comment) == ["signature", "time"] and comment["time"] == 1_767_225_600


def test_a_tampered_file_fails(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    tampered = rebuilt(signed, replace={"main.py": b"import os\n"})
    with pytest.raises(SignatureError, match="bad signature"):
        verify_package(tampered, [keys[1]])


def test_a_changed_category_fails(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    promoted = rebuilt(signed, replace={VERIFICATION_FILE: b'{"authorized_category":"langgenius"}'})
    with pytest.raises(SignatureError, match="bad signature"):
        verify_package(promoted, [keys[1]])


def test_a_wrong_key_fails(signed: bytes, other_keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(SignatureError, match="bad signature"):
        verify_package(signed, [other_keys[1]])


def test_a_changed_comment_fails(signed: bytes, keys: tuple[bytes, bytes]) -> None:
    with zipfile.ZipFile(io.BytesIO(signed)) as archive:
        comment = json.loads(archive.comment)
    later = rebuilt(signed, comment=json.dumps({**comment, "time": comment["time"] + 1}).encode())
    with pytest.raises(SignatureError, match="bad signature"):
        verify_package(later, [keys[1]])
    with pytest.raises(SignatureError, match="not the daemon's signature JSON"):
        verify_package(rebuilt(signed, comment=b"signed by me"), [keys[1]])


def test_any_of_several_keys_verifies(
    signed: bytes, keys: tuple[bytes, bytes], other_keys: tuple[bytes, bytes]
) -> None:
    verify_package(signed, [other_keys[1], keys[1]])  # like the daemon's official key + third-party keys


def test_an_unsigned_or_twice_signed_package(unsigned: bytes, signed: bytes, keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(SignatureError, match="not signed"):
        verify_package(unsigned, [keys[1]])
    with pytest.raises(SignatureError, match="already signed"):
        sign_package(signed, keys[0])


def test_keys_the_daemon_would_refuse_are_refused(keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(SignatureError, match="extra data after the PEM block"):
        signing.load_public_key(keys[1] + b"\n")
    with pytest.raises(SignatureError, match="expected a PEM block 'RSA PUBLIC KEY'"):
        signing.load_public_key(keys[0])


def test_command_line_and_validator(
    tmp_path: Path,
    unsigned: bytes,
    keys: tuple[bytes, bytes],
    other_keys: tuple[bytes, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    package, private, public, wrong = (tmp_path / n for n in ("x.difypkg", "k.private.pem", "k.public.pem", "w.pem"))
    package.write_bytes(unsigned)
    private.write_bytes(keys[0])
    public.write_bytes(keys[1])
    wrong.write_bytes(other_keys[1])
    assert signing.main(["sign", str(package), "--key", str(private)]) == 0
    signed_file = tmp_path / "x.signed.difypkg"
    assert signing.main(["verify", str(signed_file), "--key", str(public)]) == 0
    assert signing.main(["verify", str(signed_file), "--key", str(wrong)]) == 1
    assert "bad signature" in capsys.readouterr().err
    assert validate(signed_file) == []  # well-formed, whoever signed it
    assert validate(signed_file, [public]) == []
    assert validate_package.main(["--public-key", str(wrong), str(signed_file)]) == 1
    assert "signature: bad signature" in capsys.readouterr().out
    [problem] = validate(package, [public])
    assert "the package is not signed" in problem


def test_validator_checks_the_verification_file(signed: bytes, tmp_path: Path) -> None:
    odd = tmp_path / "odd.difypkg"
    odd.write_bytes(rebuilt(signed, replace={VERIFICATION_FILE: b'{"authorized_category":"friends"}'}))
    [problem] = validate(odd)
    assert ".verification.dify.json: authorized_category 'friends' is not one of" in problem


def test_verifies_what_the_daemon_signed() -> None:
    official = (DAEMON_DATA / "langgenius-agent_0.0.14.difypkg").read_bytes()
    official_key = (DAEMON_DATA / "langgenius_official.public.pem").read_bytes()
    verify_package(official, [official_key])
    go_signed = (DAEMON_DATA / "dummy_plugin.go-signed.difypkg").read_bytes()
    test_key = (DAEMON_DATA / "test_key_pair_1.public.pem").read_bytes()
    verify_package(go_signed, [test_key])
    with zipfile.ZipFile(io.BytesIO(go_signed)) as archive:
        assert archive.namelist()[-1] == VERIFICATION_FILE
    with pytest.raises(SignatureError, match="bad signature"):
        verify_package(rebuilt(official, replace={"manifest.yaml": b"name: other\n"}), [official_key])
    with pytest.raises(SignatureError, match="bad signature"):
        verify_package(go_signed, [official_key])
