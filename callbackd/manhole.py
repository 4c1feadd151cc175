"""The operators' manhole: a Python shell over SSH with the daemon's objects in it.

Built from Twisted's own pieces (``twisted.conch.manhole_tap`` shows the plain
version): a ``ConchFactory`` behind a ``Portal`` whose realm opens a
``ColoredManhole`` on the SSH terminal. What this module adds:

- authentication only from files: an OpenSSH ``authorized_keys`` file (any
  user name) and/or a file of ``user:bcrypt-hash`` lines; with neither the
  manhole refuses to start rather than open an unauthenticated shell;
- a host key read from the configured file, or generated once (ed25519) into
  the state directory with mode 0600 and reused after that;
- the namespace built lazily, by calling ``namespace_factory()`` on each login
  (buildbot's idea): the shell always sees the daemon's current objects and
  nothing is built at all until an operator logs in.

Both auth files are read on each login, so keys and passwords can be changed
without a restart. Passwords, hashes and keys are never logged.
"""

from __future__ import annotations

import argparse
import getpass
import os
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.application import service, strports
from twisted.conch import interfaces as iconch
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred import portal
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from callbackd.config import ConfigError, ManholeConfig

__all__ = [
    "AuthorizedKeysFile",
    "BcryptPasswordChecker",
    "ManholeService",
    "hash_password",
    "load_or_create_host_key",
    "make_manhole_service",
    "parse_password_file",
]

log = Logger(namespace="callbackd.manhole")

#: the file name of the generated host key inside the state directory
HOST_KEY_NAME = "manhole_host_key"
#: bcrypt looks at no more than this many bytes of a password
BCRYPT_MAX_BYTES = 72

NamespaceFactory = Callable[[], dict[str, Any]]


def hash_password(password: str, rounds: int = 12) -> str:
    """A bcrypt hash of ``password`` for the manhole's password file."""
    raw = password.encode("utf-8")
    if not raw:
        raise ValueError("the password is empty")
    if len(raw) > BCRYPT_MAX_BYTES:
        raise ValueError(f"the password is longer than bcrypt's {BCRYPT_MAX_BYTES} bytes")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds)).decode("ascii")


def parse_password_file(text: str) -> tuple[dict[str, bytes], list[int]]:
    """Parse ``user:bcrypt-hash`` lines; the users' hashes and the numbers of bad lines.

    Blank lines and lines starting with ``#`` are ignored. A line without a
    user name or whose hash is not a bcrypt hash is bad (reported by number
    only, never by content). A user listed twice keeps the first hash.
    """
    users: dict[str, bytes] = {}
    bad: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        user, hashed = user.strip(), hashed.strip()
        if not sep or not user or not _looks_like_bcrypt(hashed):
            bad.append(number)
            continue
        users.setdefault(user, hashed.encode("ascii"))
    return users, bad


def _looks_like_bcrypt(hashed: str) -> bool:
    # $2b$12$ + 53 characters of bcrypt's base64
    return (
        len(hashed) == 60
        and hashed[:4] in ("$2a$", "$2b$", "$2y$")
        and hashed[4:6].isdigit()
        and hashed[6] == "$"
        and hashed.isascii()
    )


@implementer(IAuthorizedKeysDB)
class AuthorizedKeysFile:
    """The keys of one OpenSSH ``authorized_keys`` file, for any user name, read on each login."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def getAuthorizedKeys(self, avatarId: bytes) -> Iterator[keys.Key]:
        """Every key in the file (the user name does not matter)."""
        try:
            with self.path.open("rb") as f:
                # readAuthorizedKeyFile is lazy: consume it while the file is open
                found = list(readAuthorizedKeyFile(f))
        except OSError as e:
            log.error("cannot read {path}: {error}", path=str(self.path), error=str(e))
            return iter(())
        return iter(found)


@implementer(ICredentialsChecker)
class BcryptPasswordChecker:
    """Checks user names and passwords against a file of ``user:bcrypt-hash`` lines.

    The file is read on each attempt; bcrypt runs in the reactor's thread pool
    because it is slow on purpose. Unknown users cost a bcrypt check too, so
    timing does not tell which user names exist.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: Path, reactor: Any) -> None:
        self.path = path
        self._reactor = reactor

    def requestAvatarId(self, credentials: IUsernamePassword) -> defer.Deferred[Any]:
        """The user name as bytes if the password matches, else UnauthorizedLogin."""
        return defer.ensureDeferred(self._check(credentials))

    async def _check(self, credentials: IUsernamePassword) -> bytes:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            log.error("cannot read {path}: {error}", path=str(self.path), error=str(e))
            raise UnauthorizedLogin("password file unreadable") from None
        users, bad = parse_password_file(text)
        if bad:
            log.warn("{path}: ignoring malformed lines {lines}", path=str(self.path), lines=bad)
        username = credentials.username
        name = username.decode("utf-8", "replace") if isinstance(username, bytes) else username
        hashed = users.get(name)
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        ok = await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), _check_password, password, hashed
        )
        if ok:
            return name.encode("utf-8")
        log.warn("manhole password login refused for {user}", user=name)
        raise UnauthorizedLogin("bad user name or password")


_dummy_hash: list[bytes] = []


def _check_password(password: bytes, hashed: bytes | None) -> bool:
    """bcrypt's verdict (run in a thread); an unknown user costs the same and fails."""
    if hashed is None:
        # Spend the same time as for a real user, so timing does not reveal user names.
        if not _dummy_hash:
            _dummy_hash.append(bcrypt.hashpw(b"no such user", bcrypt.gensalt(12)))
        _check_password(password, _dummy_hash[0])
        return False
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:
        # an over-long password or a damaged hash: simply not a match
        return False


def load_or_create_host_key(host_key: str | Path | None, state_dir: Path) -> keys.Key:
    """The manhole's SSH host key: the configured file, else one generated once in state_dir."""
    if host_key:
        path = Path(host_key)
        try:
            return keys.Key.fromFile(str(path))
        except (OSError, keys.BadKeyError, keys.EncryptedKeyError) as e:
            raise ConfigError([f"[manhole] host_key: cannot load {path}: {e}"]) from None
    path = state_dir / HOST_KEY_NAME
    if path.exists():
        try:
            return keys.Key.fromFile(str(path))
        except (OSError, keys.BadKeyError, keys.EncryptedKeyError) as e:
            raise ConfigError([f"[manhole] generated host key {path} is unusable: {e}"]) from None
    key = keys.Key(ed25519.Ed25519PrivateKey.generate())
    state_dir.mkdir(parents=True, exist_ok=True)
    # O_EXCL: never overwrite a key another process just wrote; 0600 from the start
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.toString("openssh"))
    path.with_name(HOST_KEY_NAME + ".pub").write_bytes(
        key.public().toString("openssh", comment=b"callbackd-manhole") + b"\n"
    )
    log.info(
        "generated manhole host key {path} ({fingerprint})",
        path=str(path),
        fingerprint=key.fingerprint(keys.FingerprintFormats.SHA256_BASE64),
    )
    return key


class _ManholeSession(manhole_ssh.TerminalSession):
    """Conch's terminal session, completed: a default size, resizes, and EOF closing it."""

    width = 80
    height = 24
    _channel: Any = None
    _terminal: Any = None

    def getPty(self, term: bytes, windowSize: tuple[int, int, int, int], attrs: Any) -> None:
        # ssh -tt without a local terminal asks for a 0x0 one
        self.height = windowSize[0] or 24
        self.width = windowSize[1] or 80

    def openShell(self, proto: Any) -> None:
        self._channel = proto
        self._terminal = self.transportFactory(
            proto,
            self.chainedProtocolFactory(),
            iconch.IConchUser(self.original),
            self.width,
            self.height,
        )
        # Leaving the shell (^D, quit) ends the session with exit status 0, so
        # scripted use of ssh sees success rather than ssh's 255.
        self._terminal.chainedProtocol.transport.loseConnection = self._exit

    def _exit(self) -> None:
        channel = self._channel.session
        channel.conn.sendRequest(channel, b"exit-status", struct.pack(">L", 0))
        self._channel.loseConnection()

    def windowChanged(self, newWindowSize: tuple[int, int, int, int]) -> None:
        self.height = newWindowSize[0] or 24
        self.width = newWindowSize[1] or 80
        if self._terminal is not None:
            self._terminal.chainedProtocol.terminalProtocol.terminalSize(self.width, self.height)

    def eofReceived(self) -> None:
        if self._channel is not None:
            self._exit()


@implementer(portal.IRealm)
class _ManholeRealm(manhole_ssh.TerminalRealm):
    """Opens a ColoredManhole on a namespace made fresh for each login."""

    sessionFactory = _ManholeSession

    def __init__(self, namespace_factory: NamespaceFactory) -> None:
        super().__init__()
        self._namespace_factory = namespace_factory
        self.chainedProtocolFactory = self._terminal  # type: ignore[assignment]

    def _terminal(self) -> insults.ServerProtocol:
        try:
            namespace = dict(self._namespace_factory())
        except Exception as e:
            # The shell is most needed when the daemon is in trouble: open it anyway.
            log.failure("manhole namespace could not be built")
            namespace = {"namespace_error": f"{type(e).__name__}: {e}"}
        return insults.ServerProtocol(manhole.ColoredManhole, namespace)

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any) -> Any:
        user = avatarId.decode("utf-8", "replace") if isinstance(avatarId, bytes) else avatarId
        log.info("manhole login by {user}", user=user)
        return super().requestAvatar(avatarId, mind, *interfaces)


class ManholeService(service.MultiService):
    """The manhole's SSH listener; loads (or makes) the host key before listening."""

    def __init__(
        self,
        listen: str,
        ssh_portal: portal.Portal,
        host_key: str | Path | None,
        state_dir: Path,
        auth_files: list[tuple[str, Path]],
        reactor: Any,
    ) -> None:
        super().__init__()
        self.factory = manhole_ssh.ConchFactory(ssh_portal)
        # ConchFactory's key dicts are class attributes: give this factory its own
        self.factory.publicKeys = {}
        self.factory.privateKeys = {}
        self._host_key = host_key
        self._state_dir = state_dir
        self._auth_files = auth_files
        strports.service(listen, self.factory, reactor=reactor).setServiceParent(self)

    def startService(self) -> None:
        missing = [
            f"[manhole] {key}: {path} is not a readable file"
            for key, path in self._auth_files
            if not (path.is_file() and os.access(path, os.R_OK))
        ]
        if missing:
            raise ConfigError(missing)
        key = load_or_create_host_key(self._host_key, self._state_dir)
        # conch annotates these as bytes but uses Key objects (as manhole_tap does)
        self.factory.publicKeys = {key.sshType(): key.public()}  # type: ignore[dict-item]
        self.factory.privateKeys = {key.sshType(): key}  # type: ignore[dict-item]
        super().startService()


def make_manhole_service(
    config: ManholeConfig,
    state_dir: Path,
    namespace_factory: NamespaceFactory,
    *,
    base_dir: Path | None = None,
    reactor: Any = None,
) -> service.Service:
    """The manhole service for ``config``; raises ConfigError if no authentication is set.

    ``namespace_factory`` is called on each login and returns the shell's
    namespace. Relative file names in ``config`` are taken relative to
    ``base_dir`` (the config file's directory), else to the working directory.
    ``reactor`` (default: the global one) runs the listener and bcrypt threads.
    """
    if not config.authorized_keys and not config.passwords:
        raise ConfigError(
            [
                "[manhole]: neither authorized_keys nor passwords is set; refusing to open "
                "an unauthenticated Python shell (set one of them, or enabled = no)"
            ]
        )
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor

    def resolve(name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() or base_dir is None else base_dir / p

    checkers: list[ICredentialsChecker] = []
    auth_files: list[tuple[str, Path]] = []
    if config.authorized_keys:
        path = resolve(config.authorized_keys)
        checkers.append(SSHPublicKeyChecker(AuthorizedKeysFile(path)))
        auth_files.append(("authorized_keys", path))
    if config.passwords:
        path = resolve(config.passwords)
        checkers.append(BcryptPasswordChecker(path, reactor))
        auth_files.append(("passwords", path))
    ssh_portal = portal.Portal(_ManholeRealm(namespace_factory), checkers)
    host_key = resolve(config.host_key) if config.host_key else None
    return ManholeService(config.listen, ssh_portal, host_key, state_dir, auth_files, reactor)


def main(argv: list[str] | None = None) -> int:
    """``python -m callbackd.manhole hash-password [--user NAME]``: make a password file line."""
    parser = argparse.ArgumentParser(
        prog="python -m callbackd.manhole", description="Manhole helpers."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    hasher = commands.add_parser(
        "hash-password",
        help="read a password from stdin, print its bcrypt hash for the passwords file",
    )
    hasher.add_argument("--user", help="print a whole 'user:hash' line for this user")
    args = parser.parse_args(argv)
    if args.user is not None and (not args.user or ":" in args.user):
        parser.error("--user must be a non-empty name without ':'")
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        hashed = hash_password(password)
    except ValueError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(f"{args.user}:{hashed}" if args.user else hashed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
