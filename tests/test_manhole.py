"""The SSH manhole: the real OpenSSH client logs in (key or password) and evaluates Python."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from twisted.conch.ssh import keys
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, protocol

from callbackd.config import ConfigError, ManholeConfig
from callbackd.manhole import (
    HOST_KEY_NAME,
    BcryptPasswordChecker,
    hash_password,
    load_or_create_host_key,
    make_manhole_service,
    parse_password_file,
)
from tests.procs import free_port

SSH = shutil.which("ssh")
SSH_KEYGEN = shutil.which("ssh-keygen")
pytestmark = pytest.mark.skipif(
    SSH is None or SSH_KEYGEN is None, reason="needs openssh-client (ssh, ssh-keygen)"
)

ROOT = Path(__file__).resolve().parent.parent
_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[A-Za-z]|\r")
#: cheap bcrypt cost for test password files
FAST_ROUNDS = 4
WAIT = 20.0


def make_key(directory: Path, name: str) -> Path:
    """A fresh ed25519 key pair made by ssh-keygen; the private key's path."""
    key = directory / name
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        timeout=30,
    )
    return key


class SSHClient(protocol.ProcessProtocol):
    """The real ssh as a child of the running reactor; collects what it prints."""

    def __init__(self) -> None:
        self.output = b""
        self.stderr = b""
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self._waiters: list[tuple[re.Pattern[bytes], defer.Deferred[re.Match[bytes]]]] = []

    @property
    def screen(self) -> bytes:
        """What the manhole printed, without terminal escapes."""
        return _ANSI.sub(b"", self.output)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for pattern, d in list(self._waiters):
            match = pattern.search(self.screen)
            if match:
                self._waiters.remove((pattern, d))
                d.callback(match)

    def errReceived(self, data: bytes) -> None:
        self.stderr += data

    def processEnded(self, reason) -> None:
        for _, d in self._waiters:
            d.errback(AssertionError(f"ssh ended; screen {self.screen!r} {self.stderr!r}"))
        self._waiters = []
        self.ended.callback(reason.value.exitCode)

    def send(self, text: str) -> None:
        self.transport.write(text.encode())

    def wait_for(self, pattern: bytes) -> defer.Deferred[re.Match[bytes]]:
        """Fires when the manhole's screen matches ``pattern``."""
        from twisted.internet import reactor

        compiled = re.compile(pattern)
        match = compiled.search(self.screen)
        if match:
            return defer.succeed(match)
        d: defer.Deferred[re.Match[bytes]] = defer.Deferred()
        self._waiters.append((compiled, d))
        return d.addTimeout(WAIT, reactor)

    def wait_ended(self) -> defer.Deferred[int | None]:
        """Fires with ssh's exit status."""
        from twisted.internet import reactor

        return self.ended.addTimeout(WAIT, reactor)


class Manhole:
    """A manhole service on a free loopback port, with its files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.authorized_keys = directory / "authorized_keys"
        self.passwords = directory / "passwords"
        self.state_dir = directory / "state"
        self.logins = 0
        self.service = None
        self.clients: list[SSHClient] = []

    def namespace(self) -> dict:
        self.logins += 1
        return {"answer": "forty-two", "logins": self.logins}

    def start(self, *, keys_file: bool = True, passwords_file: bool = False, factory=None):
        from twisted.internet import reactor

        config = ManholeConfig(
            listen=f"tcp:{self.port}:interface=127.0.0.1",
            authorized_keys=str(self.authorized_keys) if keys_file else "",
            passwords=str(self.passwords) if passwords_file else "",
        )
        self.service = make_manhole_service(
            config, self.state_dir, factory or self.namespace, reactor=reactor
        )
        self.service.startService()
        return self

    def ssh(self, user: str, *options: str, env: dict | None = None) -> SSHClient:
        """Spawn the real ssh, logging in as ``user`` with ``options``."""
        from twisted.internet import reactor

        client = SSHClient()
        args = [
            SSH,
            "-F",
            "/dev/null",
            "-tt",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=10",
            *options,
            "-p",
            str(self.port),
            f"{user}@127.0.0.1",
        ]
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.directory)}
        reactor.spawnProcess(client, SSH, args, env={**base, **(env or {})})
        self.clients.append(client)
        return client

    def ssh_with_key(self, key: Path, user: str = "admin") -> SSHClient:
        return self.ssh(
            user,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PreferredAuthentications=publickey",
            "-i",
            str(key),
        )

    def ssh_with_password(self, user: str, password: str) -> SSHClient:
        # No sshpass here: OpenSSH's own SSH_ASKPASS hook supplies the password.
        askpass = self.directory / f"askpass-{len(self.clients)}"
        askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
        askpass.chmod(0o700)
        return self.ssh(
            user,
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            env={"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"},
        )

    def stop(self) -> None:
        for client in self.clients:
            if not client.ended.called:
                client.transport.signalProcess("KILL")
                pytest_twisted.blockon(client.ended)
        if self.service is not None and self.service.running:
            pytest_twisted.blockon(defer.maybeDeferred(self.service.stopService))


@pytest.fixture
def manhole(tmp_path):
    m = Manhole(tmp_path)
    yield m
    m.stop()


@pytest.fixture
def operator_key(manhole):
    """A key pair whose public half is in the manhole's authorized_keys."""
    key = make_key(manhole.directory, "operator")
    manhole.authorized_keys.write_bytes(key.with_suffix(".pub").read_bytes())
    return key


def write_passwords(manhole: Manhole, **users: str) -> None:
    lines = ["# manhole users"] + [
        f"{user}:{hash_password(pw, rounds=FAST_ROUNDS)}" for user, pw in users.items()
    ]
    manhole.passwords.write_text("\n".join(lines) + "\n")


# --- the real ssh client ---------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_key_login_evaluates_an_expression(manhole, operator_key):
    """Logged in with an authorized key, the manhole evaluates 6*7 and prints 42."""
    client = manhole.start().ssh_with_key(operator_key)
    yield client.wait_for(rb">>> ")
    client.send("6*7\n")
    # the echo shows 6*7; only the evaluation prints 42
    yield client.wait_for(rb"\n42\n")


@pytest_twisted.inlineCallbacks
def test_namespace_is_built_on_each_login(manhole, operator_key):
    """The namespace factory is called per login, not at start: two logins see 1 then 2."""
    manhole.start()
    assert manhole.logins == 0
    for expected in (1, 2):
        client = manhole.ssh_with_key(operator_key)
        yield client.wait_for(rb">>> ")
        client.send("(answer.upper(), logins * 1000)\n")
        match = yield client.wait_for(rb"\('FORTY-TWO', (\d+)\)")
        assert int(match.group(1)) == expected * 1000
        client.send("\x04")
        yield client.wait_ended()


@pytest_twisted.inlineCallbacks
def test_ctrl_d_leaves_with_exit_status_0(manhole, operator_key):
    """^D at an empty prompt ends the session and ssh exits 0."""
    client = manhole.start().ssh_with_key(operator_key)
    yield client.wait_for(rb">>> ")
    client.send("\x04")
    status = yield client.wait_ended()
    assert status == 0


@pytest_twisted.inlineCallbacks
def test_unknown_key_is_refused(manhole, operator_key):
    """A key not in authorized_keys gets no shell: ssh exits 255, permission denied."""
    stranger = make_key(manhole.directory, "stranger")
    client = manhole.start().ssh_with_key(stranger)
    status = yield client.wait_ended()
    assert status == 255
    assert b"Permission denied" in client.stderr
    assert b">>>" not in client.screen
    assert manhole.logins == 0


@pytest_twisted.inlineCallbacks
def test_password_login_evaluates_an_expression(manhole):
    """A user from the bcrypt password file logs in with the real ssh and evaluates code."""
    write_passwords(manhole, alice="correct horse")
    manhole.start(keys_file=False, passwords_file=True)
    client = manhole.ssh_with_password("alice", "correct horse")
    yield client.wait_for(rb">>> ")
    client.send("answer.upper()\n")
    yield client.wait_for(rb"'FORTY-TWO'")


@pytest_twisted.inlineCallbacks
def test_wrong_password_is_refused(manhole):
    """The real ssh with a wrong password gets no shell and exits 255."""
    write_passwords(manhole, alice="correct horse")
    manhole.start(keys_file=False, passwords_file=True)
    client = manhole.ssh_with_password("alice", "battery staple")
    status = yield client.wait_ended()
    assert status == 255
    assert b"Permission denied" in client.stderr
    assert manhole.logins == 0


@pytest_twisted.inlineCallbacks
def test_a_broken_namespace_factory_still_opens_the_shell(manhole, operator_key):
    """If the namespace cannot be built the shell opens anyway and says why."""

    def broken():
        raise LookupError("no store yet")

    client = manhole.start(factory=broken).ssh_with_key(operator_key)
    yield client.wait_for(rb">>> ")
    client.send("namespace_error.upper()\n")
    yield client.wait_for(rb"'LOOKUPERROR: NO STORE YET'")


# --- the password checker through its API ----------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_password_checker_accepts_the_right_password(tmp_path):
    """The checker returns the user name for a matching password."""
    from twisted.internet import reactor

    path = tmp_path / "passwords"
    path.write_text(f"# ops\n\nbob:{hash_password('s3cret', rounds=FAST_ROUNDS)}\n")
    avatar = yield BcryptPasswordChecker(path, reactor).requestAvatarId(
        UsernamePassword(b"bob", b"s3cret")
    )
    assert avatar == b"bob"


@pytest.mark.parametrize(
    ("user", "password"), [(b"bob", b"wrong"), (b"carol", b"s3cret"), (b"bob", b"x" * 100)]
)
@pytest_twisted.inlineCallbacks
def test_password_checker_refuses(tmp_path, user, password):
    """A wrong password, an unknown user or an over-long password is UnauthorizedLogin."""
    from twisted.internet import reactor

    path = tmp_path / "passwords"
    path.write_text(f"bob:{hash_password('s3cret', rounds=FAST_ROUNDS)}\n")
    checker = BcryptPasswordChecker(path, reactor)
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(UsernamePassword(user, password))


@pytest_twisted.inlineCallbacks
def test_a_refused_password_is_logged_without_the_password(tmp_path):
    """A refusal is logged with the user name, and neither password nor hash appears."""
    from twisted.internet import reactor
    from twisted.logger import formatEvent, globalLogPublisher

    path = tmp_path / "passwords"
    hashed = hash_password("s3cret", rounds=FAST_ROUNDS)
    path.write_text(f"bob:{hashed}\n")
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with pytest.raises(UnauthorizedLogin):
            yield BcryptPasswordChecker(path, reactor).requestAvatarId(
                UsernamePassword(b"bob", b"guess-XYZZY")
            )
    finally:
        globalLogPublisher.removeObserver(events.append)
    text = "\n".join(formatEvent(e) + repr(e) for e in events)
    assert "refused for bob" in text
    assert "XYZZY" not in text and hashed not in text


@pytest_twisted.inlineCallbacks
def test_password_checker_reads_the_file_on_each_attempt(tmp_path):
    """A password changed in the file works at the next login, without a restart."""
    from twisted.internet import reactor

    path = tmp_path / "passwords"
    path.write_text(f"bob:{hash_password('old', rounds=FAST_ROUNDS)}\n")
    checker = BcryptPasswordChecker(path, reactor)
    path.write_text(f"bob:{hash_password('new', rounds=FAST_ROUNDS)}\n")
    avatar = yield checker.requestAvatarId(UsernamePassword(b"bob", b"new"))
    assert avatar == b"bob"
    with pytest.raises(UnauthorizedLogin):
        yield checker.requestAvatarId(UsernamePassword(b"bob", b"old"))


# --- refusing to start -----------------------------------------------------------------------


def test_refuses_to_start_without_any_authentication(tmp_path):
    """With neither authorized_keys nor passwords configured there is no manhole at all."""
    with pytest.raises(ConfigError) as caught:
        make_manhole_service(ManholeConfig(), tmp_path, dict)
    assert "unauthenticated" in str(caught.value)


def test_refuses_to_start_when_the_keys_file_is_missing(tmp_path):
    """A configured authorized_keys file that does not exist stops the start, naming it."""
    missing = tmp_path / "nope"
    svc = make_manhole_service(
        ManholeConfig(
            listen=f"tcp:{free_port()}:interface=127.0.0.1", authorized_keys=str(missing)
        ),
        tmp_path,
        dict,
    )
    with pytest.raises(ConfigError) as caught:
        svc.startService()
    assert str(missing) in str(caught.value)
    assert not (tmp_path / HOST_KEY_NAME).exists()


@pytest_twisted.inlineCallbacks
def test_relative_auth_files_are_found_under_base_dir(tmp_path):
    """Relative file names in the config are resolved against base_dir (the config's dir)."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "keys").write_text("")
    svc = make_manhole_service(
        ManholeConfig(listen=f"tcp:{free_port()}:interface=127.0.0.1", authorized_keys="keys"),
        tmp_path / "state",
        dict,
        base_dir=tmp_path / "etc",
    )
    svc.startService()
    assert svc.running
    yield defer.maybeDeferred(svc.stopService)


# --- host key --------------------------------------------------------------------------------


def test_host_key_is_generated_once_with_mode_0600(tmp_path):
    """Without host_key a key is generated into state_dir, private (0600), and reused."""
    first = load_or_create_host_key(None, tmp_path)
    path = tmp_path / HOST_KEY_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = load_or_create_host_key(None, tmp_path)
    assert first.fingerprint() == second.fingerprint()
    assert keys.Key.fromFile(str(path.with_name(HOST_KEY_NAME + ".pub"))) == first.public()


def test_configured_host_key_is_used(tmp_path):
    """A host_key file from the config is used as is, and nothing is generated."""
    key = make_key(tmp_path, "host")
    loaded = load_or_create_host_key(key, tmp_path / "state")
    assert loaded == keys.Key.fromFile(str(key))
    assert not (tmp_path / "state" / HOST_KEY_NAME).exists()


def test_unreadable_configured_host_key_is_a_config_error(tmp_path):
    """A host_key that is not a key stops the start with a ConfigError naming it."""
    bad = tmp_path / "host"
    bad.write_text("not a key\n")
    with pytest.raises(ConfigError) as caught:
        load_or_create_host_key(bad, tmp_path)
    assert "host_key" in str(caught.value)


# --- the password file and hash-password -----------------------------------------------------


def test_password_file_skips_comments_and_reports_bad_lines_by_number():
    """Comments and blank lines are skipped; malformed lines are reported by number only."""
    good = hash_password("pw", rounds=FAST_ROUNDS)
    text = f"# admins\n\nalice:{good}\nno colon here\n:{good}\nbob:plaintext\n"
    users, bad = parse_password_file(text)
    assert users == {"alice": good.encode()}
    assert bad == [4, 5, 6]


_HASH = hash_password("pw", rounds=FAST_ROUNDS)


@given(st.text())
def test_password_file_parser_takes_any_text(text):
    """Any text parses: users only from well-formed lines, never an exception."""
    users, bad = parse_password_file(text)
    for user, hashed in users.items():
        assert user and ":" not in user
        assert len(hashed) == 60
    assert all(1 <= n <= len(text.splitlines()) for n in bad)


@given(
    st.dictionaries(
        st.text(
            st.characters(
                blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=":#"
            ),
            min_size=1,
            max_size=20,
        ),
        st.just(_HASH),
        max_size=5,
    )
)
def test_password_file_round_trips(users):
    """Lines written as user:hash are read back as the same users and hashes."""
    text = "".join(f"{user}:{hashed}\n" for user, hashed in users.items())
    parsed, bad = parse_password_file(text)
    assert bad == []
    assert parsed == {user: hashed.encode() for user, hashed in users.items()}


def test_hash_password_refuses_empty_and_overlong_passwords():
    """bcrypt cannot honestly hash an empty or >72-byte password, so neither is accepted."""
    with pytest.raises(ValueError):
        hash_password("")
    with pytest.raises(ValueError):
        hash_password("é" * 40)


def test_hash_password_cli_reads_stdin():
    """python -m callbackd.manhole hash-password --user prints a line that verifies."""
    result = subprocess.run(
        [sys.executable, "-m", "callbackd.manhole", "hash-password", "--user", "ops"],
        input="hunter2 with spaces\n",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    user, hashed = result.stdout.strip().split(":", 1)
    assert user == "ops"
    assert bcrypt.checkpw(b"hunter2 with spaces", hashed.encode())
    assert "hunter2" not in result.stdout + result.stderr
