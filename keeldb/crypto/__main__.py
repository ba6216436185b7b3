"""Operator commands for encryption at rest, run while the node is stopped.

    python -m keeldb.crypto new-key FILE
    python -m keeldb.crypto check  --data-dir DIR --key FILE
    python -m keeldb.crypto rotate --data-dir DIR --old-key FILE --new-key FILE

`--keyring-dir DIR` may replace `--data-dir` to name a keyring directly (a copy kept with a
backup, say). Each command prints one line and exits 0 on success, 1 on failure. They never
print key material.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from keeldb.crypto.errors import EncryptionError, MasterKeyError
from keeldb.crypto.keyring import Keyring, keyring_dir
from keeldb.crypto.master_key import MASTER_KEY_BYTES, load_master_key


def _keyring_location(args: argparse.Namespace) -> tuple[Path, tuple[Path, ...]]:
    """The keyring directory, and the directories a master key file must stay out of."""
    if args.data_dir is not None:
        return keyring_dir(args.data_dir), (args.data_dir,)
    return args.keyring_dir, (args.keyring_dir,)


def _new_key(args: argparse.Namespace) -> str:
    path: Path = args.file
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise MasterKeyError(f"{path} exists; a master key file is never overwritten") from None
    except OSError as error:
        raise MasterKeyError(f"cannot create {path}: {error.strerror or error}") from None
    try:
        os.write(fd, os.urandom(MASTER_KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    return f"wrote a new {MASTER_KEY_BYTES}-byte master key to {path} (mode 600)"


def _check(args: argparse.Namespace) -> str:
    directory, keep_out_of = _keyring_location(args)
    master = load_master_key(args.key, keep_out_of=keep_out_of)
    keyring = Keyring.load(directory, master, read_only=True)
    count = len(keyring.data_keys())
    return f"the master key opens all {count} data keys of the keyring in {directory}"


def _rotate(args: argparse.Namespace) -> str:
    directory, keep_out_of = _keyring_location(args)
    old = load_master_key(args.old_key, keep_out_of=keep_out_of)
    new = load_master_key(args.new_key, keep_out_of=keep_out_of)
    if old.secret == new.secret:
        raise MasterKeyError("the new master key is the old one: nothing to rotate")
    keyring = Keyring.load(directory, old)  # refuses while a server holds the keyring
    try:
        keyring.rewrap(new)
        count = len(keyring.data_keys())
    finally:
        keyring.close()
    return (
        f"re-wrapped {count} data keys in {directory} under the new master key; "
        f"{args.old_key} no longer opens it"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m keeldb.crypto", description="Master keys and keyrings of KeelDB."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new_key = commands.add_parser("new-key", help="write a new random master key to FILE")
    new_key.add_argument("file", type=Path, metavar="FILE")
    new_key.set_defaults(run=_new_key)
    check = commands.add_parser("check", help="check that a master key opens a keyring")
    rotate = commands.add_parser(
        "rotate", help="re-wrap every data key under a new master key (server stopped)"
    )
    for command in (check, rotate):
        where = command.add_mutually_exclusive_group(required=True)
        where.add_argument("--data-dir", type=Path, metavar="DIR")
        where.add_argument("--keyring-dir", type=Path, metavar="DIR")
    check.add_argument("--key", type=Path, required=True, metavar="FILE")
    check.set_defaults(run=_check)
    rotate.add_argument("--old-key", type=Path, required=True, metavar="FILE")
    rotate.add_argument("--new-key", type=Path, required=True, metavar="FILE")
    rotate.set_defaults(run=_rotate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        message = args.run(args)
    except EncryptionError as error:
        print(f"keeldb.crypto: {args.command}: {error}", file=sys.stderr)
        return 1
    print(message, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
