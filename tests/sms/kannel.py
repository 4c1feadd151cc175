"""A real Kannel (Debian's ``kannel`` and ``kannel-extras``) for tests, private to one run.

bearerbox and smsbox run the sample configuration of ``etc/kannel/`` (:func:`render`
replaces its ports, paths, passwords and callbackd's URL, nothing else), with Kannel's
fake SMS centre as the link and ``/usr/lib/kannel/test/fakesmsc`` as the phone side:
:meth:`Kannel.inject` writes an incoming message (MO) to fakesmsc, which hands it to
bearerbox, and smsbox's ``get-url`` delivers it to the URL the test gives;
:meth:`Kannel.wait_for_outgoing` waits for a message Kannel sent to the phone (MT, e.g.
a reply callbackd sent through smsbox's ``sendsms``), as fakesmsc prints it.

What it takes, learnt on Debian 12's Kannel 1.4.5:

- Both boxes run in the foreground as root without complaint (``bearerbox -v 1 FILE``,
  then ``smsbox -v 1 FILE``), so the directory is pytest's ``tmp_path``. bearerbox
  listens in about 0.1 s, smsbox connects in another 0.1 s; neither smsbox nor fakesmsc
  retries its first connection, so each waits for the one before it, and readiness is
  read from bearerbox's ``status.txt`` ("smsbox:" among the box connections, the fake
  SMSC "online").
- smsbox restarts itself under a new pid in the same process group when bearerbox goes
  away, so each box runs in a session of its own and is stopped by process group.
- fakesmsc with no message argument reads MO lines from stdin (kept open through a
  pipe); ``-i 0.02`` makes it send a line within milliseconds, but it reads one line
  per turn and sees a second line written at once only a turn later or never, so
  :meth:`Kannel.inject` writes one line and waits for its "sent message N". A line is
  ``sender receiver text TEXT`` or ``sender receiver ucs2 PERCENT-ENCODED-UTF-16BE``
  (under 255 bytes, no newline).
- fakesmsc prints every MT at DEBUG level as ``Got message N: <FROM TO TYPE DATA>``
  (so it runs without ``-v``): ``text`` with the text in UTF-8, ``ucs-2`` with
  form-encoded UTF-16BE (``+`` for a 0x20 byte), ``udh HEADER data TEXT`` for the parts
  of a concatenated message (the header and text form-encoded, the text's coding not
  said: UTF-8 for GSM-7, UTF-16BE for UCS-2). A newline in the text
  splits the line protocol: the second half comes as a message of its own, no header.
  It polls for MT once a second in this mode, so an MT is seen up to 1 s late.
- Kannel's sendsms answers ``202 "0: Accepted for delivery"``, or ``"3: Queued for
  later delivery"`` while no SMSC is connected.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.procs import free_port, require_installed, stop_process, wait_for_port

ROOT = Path(__file__).resolve().parent.parent.parent
SAMPLE = ROOT / "etc" / "kannel"
BEARERBOX = "/usr/sbin/bearerbox"
SMSBOX = "/usr/sbin/smsbox"
FAKESMSC = "/usr/lib/kannel/test/fakesmsc"
#: seconds one start or stop may take on a loaded machine
STARTUP = 20.0

_GROUP = re.compile(r"^\s*group\s*=\s*(\S+)\s*$")
#: an INI section's header, for :func:`render` on callbackd's side
INI_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*$")
_SETTING = re.compile(r"^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(.*?)\s*$")
_SENT = re.compile(r"fakesmsc: sent message (\d+)")
_GOT = re.compile(r"Got message \d+: <(.*)>\s*$")
_MT = re.compile(r"(\S+) (\S+) (text|data|ucs-2|udh) (.*)", re.DOTALL)


def available() -> bool:
    """Whether Debian's kannel and kannel-extras are installed."""
    return all(os.access(path, os.X_OK) for path in (BEARERBOX, SMSBOX, FAKESMSC))


# -- the sample configuration ---------------------------------------------------------


def parse_groups(text: str) -> list[tuple[str, dict[str, str]]]:
    """A Kannel config's groups in order: each group's name and its settings (raw values).

    ``include`` lines are left out (they belong to no group).
    """
    groups: list[tuple[str, dict[str, str]]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _GROUP.match(line)
        if match:
            groups.append((match.group(1), {}))
            continue
        setting = _SETTING.match(line)
        if setting is None:
            raise ValueError(f"not a Kannel setting: {line!r}")
        if groups and setting.group(2) != "include":  # an include is no group's
            groups[-1][1][setting.group(2)] = setting.group(4)
    return groups


def unquote(value: str) -> str:
    """A config value without its double quotes."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def render(
    text: str,
    values: Mapping[str, Mapping[str, str]],
    where: str = "sample",
    group_line: re.Pattern[str] = _GROUP,
) -> str:
    """``text`` with the setting ``key`` of each group ``group`` set to ``values[group][key]``.

    Only settings the text has are replaced (a missing one raises ``KeyError``: the sample
    lost a key the tests rely on); comments, order and every other line stay as they are.
    ``include`` lines outside any group are keyed by the group ``""``. With
    ``group_line=INI_SECTION`` it renders an INI file's sections the same way.
    """
    wanted = {(group, key) for group, keys in values.items() for key in keys}
    seen: set[tuple[str, str]] = set()
    group = ""
    lines = []
    for line in text.splitlines():
        match = group_line.match(line)
        if match:
            group = match.group(1)
        setting = _SETTING.match(line)
        if not match and setting and not line.lstrip().startswith(("#", ";")):
            key = setting.group(2)
            scope = "" if key == "include" else group
            if (scope, key) in wanted:
                seen.add((scope, key))
                indent, _, equals, _ = setting.groups()
                line = f"{indent}{key}{equals}{values[scope][key]}"
        lines.append(line)
    missing = wanted - seen
    if missing:
        raise KeyError(f"{where} has no {sorted(missing)}")
    return "\n".join(lines) + "\n"


def quoted(value: str | Path) -> str:
    return f'"{value}"'


def get_url(sample_url: str, target: str, token: str) -> str:
    """The sample's ``get-url`` sent to ``target`` (scheme, host, port, path) with ``token``."""
    _, query = sample_url.split("?", 1)
    fields = [
        f"token={urllib.parse.quote(token, safe='')}" if part.startswith("token=") else part
        for part in query.split("&")
    ]
    return f"{target}?{'&'.join(fields)}"


def query_of(target: str) -> dict[str, list[bytes]]:
    """The query fields of a request target as Twisted's ``request.args`` holds them
    (raw bytes, whatever their charset), with the names decoded."""
    query = urllib.parse.urlsplit(target).query
    parsed = urllib.parse.parse_qs(query, keep_blank_values=True, encoding="latin-1")
    return {name: [value.encode("latin-1") for value in values] for name, values in parsed.items()}


#: what smsbox fills in for each ``get-url`` escape callbackd's sample uses
_ESCAPES = {
    "%p": "sender",
    "%P": "receiver",
    "%a": "text",
    "%I": "message_id",
    "%c": "coding",
    "%C": "charset",
    "%T": "time",
}


def fill_get_url(url: str, **values: str) -> str:
    """``url`` with its escapes filled in as smsbox fills them (UTF-8, percent-encoded).

    ``values`` are named as in :data:`_ESCAPES`; ``coding`` defaults to ``0``,
    ``charset`` to ``UTF-8`` and ``time`` to now.
    """
    values = {"coding": "0", "charset": "UTF-8", "time": str(int(time.time())), **values}
    return re.sub(
        r"%[A-Za-z]",
        lambda m: urllib.parse.quote(values[_ESCAPES[m.group(0)]], safe=""),
        url,
    )


# -- what fakesmsc prints -----------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """A message Kannel sent to the phone (an MT), as fakesmsc printed it.

    ``sender`` is the ``from`` of the sendsms request, ``receiver`` the phone's number;
    ``kind`` is fakesmsc's type (``text``, ``ucs-2``, ``udh``, ``data``); ``text`` the
    decoded text; ``udh`` the user data header of a part of a concatenated message.
    """

    sender: str
    receiver: str
    kind: str
    text: str
    udh: bytes = b""
    raw: bytes = field(default=b"", repr=False)  # a part's bytes, decoded when joined

    @property
    def concatenated(self) -> tuple[int, int, int] | None:
        """(reference, parts, this part) when the UDH says this is a part of a message."""
        data, i = self.udh[1:], 0
        while i + 2 <= len(data):
            element, size = data[i], data[i + 1]
            value = data[i + 2 : i + 2 + size]
            if element == 0 and size == 3:
                return value[0], value[1], value[2]
            if element == 8 and size == 4:
                return value[0] << 8 | value[1], value[2], value[3]
            i += 2 + size
        return None


def _form_bytes(data: str) -> bytes:
    """Kannel's form encoding (``+`` for a space byte) back to bytes."""
    return urllib.parse.unquote_to_bytes(data.replace("+", "%20"))


def parse_mt(line: str) -> Outgoing | None:
    """The MT fakesmsc printed between ``<`` and ``>``, or None if it is no MT header."""
    match = _MT.fullmatch(line)
    if match is None:
        return None
    sender, receiver, kind, data = match.groups()
    if kind == "udh":  # udh HEADER data BODY
        udh, _, rest = data.partition(" ")
        _, _, body = rest.partition(" ")
        raw = _form_bytes(body)
        return Outgoing(sender, receiver, kind, _guess(raw), _form_bytes(udh), raw)
    if kind == "text":
        return Outgoing(sender, receiver, kind, data)
    if kind == "ucs-2":
        return Outgoing(sender, receiver, kind, _form_bytes(data).decode("utf-16-be", "replace"))
    return Outgoing(sender, receiver, kind, _guess(_form_bytes(data)))


def _guess(raw: bytes) -> str:
    """The text of a part of a concatenated message, whose coding fakesmsc does not print.

    Kannel's GSM-7 text is valid UTF-8 with no NUL; UCS-2 (UTF-16BE) of Latin text has
    NULs, and most other UTF-16BE is not valid UTF-8.
    """
    if b"\x00" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return raw.decode("utf-16-be", "replace")


def take_mt(outgoing: list[Outgoing], line: str) -> None:
    """Add the MT of one line of fakesmsc's output to ``outgoing`` (other lines: nothing).

    A "message" with no ``FROM TO TYPE`` is the rest of a text a newline split: it is
    joined to the one before.
    """
    got = _GOT.search(line)
    if got is None:
        return
    message = parse_mt(got.group(1))
    if message is not None:
        outgoing.append(message)
    elif outgoing:
        last = outgoing[-1]
        outgoing[-1] = dataclasses.replace(last, text=f"{last.text}\n{got.group(1)}")


def read_request(path: Path) -> tuple[str, dict[str, str]]:
    """A recorded request (``tests/fixtures/kannel/*.http``): its target and headers."""
    line, *headers = path.read_text().splitlines()
    fields = dict(header.split(": ", 1) for header in headers if header)
    return line.split(" ")[1], fields


def mo_line(sender: str, receiver: str, text: str, coding: str = "text") -> bytes:
    """The fakesmsc line injecting ``text`` from ``sender`` to ``receiver``.

    ``coding`` is ``text`` (a plain line; the text goes as it is) or ``ucs2`` (UTF-16BE,
    percent-encoded, as a UCS-2 message from a phone).
    """
    if "\n" in text or "\r" in text:
        raise ValueError("fakesmsc's line protocol cannot carry a newline")
    if coding == "text":
        line = f"{sender} {receiver} text {text}".encode()
    elif coding == "ucs2":
        encoded = urllib.parse.quote_from_bytes(text.encode("utf-16-be"), safe="")
        line = f"{sender} {receiver} ucs2 {encoded}".encode()
    else:
        raise ValueError(f"unknown coding {coding!r}")
    if len(line) >= 255:
        raise ValueError(f"a fakesmsc line must stay under 255 bytes, not {len(line)}")
    return line + b"\n"


def join_parts(messages: list[Outgoing]) -> list[Outgoing]:
    """``messages`` with the parts of each concatenated message joined, once all came."""
    joined: list[Outgoing] = []
    parts: dict[tuple[str, str, int], dict[int, Outgoing]] = {}
    for message in messages:
        concatenated = message.concatenated
        if concatenated is None:
            joined.append(message)
            continue
        reference, total, number = concatenated
        pending = parts.setdefault((message.sender, message.receiver, reference), {})
        pending[number] = message
        if len(pending) == total:
            text = _guess(b"".join(pending[n].raw for n in sorted(pending)))
            joined.append(Outgoing(message.sender, message.receiver, message.kind, text))
            del parts[(message.sender, message.receiver, reference)]
    return joined


# -- the processes ------------------------------------------------------------------------


def _group_gone(process: subprocess.Popen, timeout: float) -> bool:
    """Whether the process group ``process`` leads is gone within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        process.poll()  # reap the leader: a zombie still counts as a member
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stop_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group ``process`` leads, wait until it is gone, else SIGKILL it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        if _group_gone(process, timeout):
            break
    process.wait(timeout)


@dataclass
class Kannel:
    """bearerbox, smsbox and fakesmsc on free loopback ports, in ``dir``.

    ``target`` is the URL smsbox's ``get-url`` sends incoming messages to (scheme, host,
    port and path; the sample's query is kept) with ``token`` in its ``token`` field.
    """

    dir: Path
    target: str
    token: str = "kannel-test-token"
    username: str = ""
    password: str = "sendsms-test-password"
    admin_password: str = "admin-test-password"
    admin_port: int = field(default_factory=free_port)
    smsbox_port: int = field(default_factory=free_port)
    smsc_port: int = field(default_factory=free_port)
    sendsms_port: int = field(default_factory=free_port)
    bearerbox: subprocess.Popen | None = field(default=None, repr=False)
    smsbox: subprocess.Popen | None = field(default=None, repr=False)
    fakesmsc: subprocess.Popen | None = field(default=None, repr=False)
    outgoing: list[Outgoing] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Condition()
        self._sent = 0  # MO lines the current fakesmsc confirmed
        self._reader: threading.Thread | None = None
        self.write_config()

    # -- configuration

    @property
    def config(self) -> Path:
        return self.dir / "kannel.conf"

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}"

    def values(self) -> dict[str, dict[str, dict[str, str]]]:
        """What :meth:`write_config` changes in each sample file: file, group, key, value."""
        sample_url = self.sample_groups("smsbox.conf", "sms-service")["get-url"]
        return {
            "kannel.conf": {
                "core": {
                    "admin-port": str(self.admin_port),
                    "admin-password": quoted(self.admin_password),
                    "smsbox-port": str(self.smsbox_port),
                    "log-file": quoted(self.dir / "bearerbox.log"),
                    "store-location": quoted(self.dir / "kannel.store"),
                },
                "smsc": {"port": str(self.smsc_port)},
                "": {"include": quoted(self.dir / "smsbox.conf")},
            },
            "smsbox.conf": {
                "smsbox": {
                    "bearerbox-port": str(self.smsbox_port),
                    "sendsms-port": str(self.sendsms_port),
                    "log-file": quoted(self.dir / "smsbox.log"),
                },
                "sendsms-user": {"password": quoted(self.password)},
                "sms-service": {
                    "get-url": quoted(get_url(unquote(sample_url), self.target, self.token))
                },
            },
        }

    @staticmethod
    def sample_groups(name: str, group: str) -> dict[str, str]:
        """The settings of the first group ``group`` in the sample file ``name``."""
        return next(s for g, s in parse_groups((SAMPLE / name).read_text()) if g == group)

    def write_config(self) -> None:
        """The sample's two files, rendered with this instance's values, into ``dir``."""
        for name, values in self.values().items():
            rendered = render((SAMPLE / name).read_text(), values, where=str(SAMPLE / name))
            (self.dir / name).write_text(rendered)
        if not self.username:
            self.username = unquote(self.sample_groups("smsbox.conf", "sendsms-user")["username"])

    def callbackd_values(self) -> dict[str, dict[str, str]]:
        """What :meth:`callbackd_config` changes in the sample's callbackd-sms.ini."""
        return {
            "sms-gateway:kannel": {
                "token_file": str(self.dir / "kannel.token"),
                "sendsms_url": self.sendsms_url,
                "sendsms_password_file": str(self.dir / "kannel-sendsms.password"),
            }
        }

    def callbackd_config(self) -> str:
        """The sample's ``[sms]`` and ``[sms-gateway:kannel]`` for a daemon behind this Kannel.

        The token and the sendsms password go into files of their own, as the sample has it.
        """
        (self.dir / "kannel.token").write_text(self.token + "\n")
        (self.dir / "kannel-sendsms.password").write_text(self.password + "\n")
        sample = SAMPLE / "callbackd-sms.ini"
        return render(sample.read_text(), self.callbackd_values(), str(sample), INI_SECTION)

    def rendered_get_url(self) -> str:
        """The ``get-url`` smsbox runs with (its escapes not filled in)."""
        groups = parse_groups((self.dir / "smsbox.conf").read_text())
        return unquote(next(s for g, s in groups if g == "sms-service")["get-url"])

    # -- start and stop

    def start(self) -> None:
        """Start bearerbox, smsbox and fakesmsc, each once the one before is ready."""
        try:
            self.bearerbox = self._box(BEARERBOX, "bearerbox")
            wait_for_port(self.admin_port, timeout=STARTUP)
            self.smsbox = self._box(SMSBOX, "smsbox")
            wait_for_port(self.sendsms_port, timeout=STARTUP)
            self._wait_status("smsbox:", "the smsbox to connect")
            self._start_fakesmsc()
            self._wait_status("(online", "the fake SMSC to be online")
        except (TimeoutError, RuntimeError) as e:
            self.stop()
            raise RuntimeError(f"Kannel did not start: {e}\n{self.logs()}") from None

    def stop(self) -> None:
        """Stop fakesmsc, smsbox and bearerbox (what was sent to the phone is kept)."""
        if self.fakesmsc is not None:
            stop_process(self.fakesmsc, timeout=5)
            if self._reader is not None:
                self._reader.join(5)
            self.fakesmsc = None
        for name in ("smsbox", "bearerbox"):
            process = getattr(self, name)
            if process is not None:
                stop_group(process)
                setattr(self, name, None)

    def _box(self, binary: str, name: str) -> subprocess.Popen:
        with open(self.dir / f"{name}.out", "ab") as out:
            process = subprocess.Popen(
                [binary, "-v", "1", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        return process

    def status(self) -> str:
        """bearerbox's ``status.txt``."""
        query = urllib.parse.urlencode({"password": self.admin_password})
        url = f"http://127.0.0.1:{self.admin_port}/status.txt?{query}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode(errors="replace")

    def _wait_status(self, needle: str, what: str) -> None:
        deadline = time.monotonic() + STARTUP
        while True:
            for name in ("bearerbox", "smsbox", "fakesmsc"):
                process = getattr(self, name)
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}")
            try:
                if needle in self.status():
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {STARTUP}s for {what}")
            time.sleep(0.05)

    def _start_fakesmsc(self) -> None:
        self._sent = 0
        self.fakesmsc = subprocess.Popen(
            [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.smsc_port), "-i", "0.02"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        self._reader = threading.Thread(
            target=self._read, args=(self.fakesmsc,), name="fakesmsc", daemon=True
        )
        self._reader.start()

    def _read(self, process: subprocess.Popen) -> None:
        """fakesmsc's output, line by line, into its log, ``outgoing`` and the MO count."""
        assert process.stdout is not None
        with open(self.dir / "fakesmsc.log", "ab") as log:
            for raw in process.stdout:
                log.write(raw)
                log.flush()
                self._line(raw.decode("utf-8", "replace").rstrip("\n"))

    def _line(self, line: str) -> None:
        with self._lock:
            sent = _SENT.search(line)
            if sent:
                self._sent = int(sent.group(1))
            take_mt(self.outgoing, line)
            self._lock.notify_all()

    # -- the phone's side

    def inject(
        self, sender: str, receiver: str, text: str, coding: str = "text", timeout: float = 10.0
    ) -> None:
        """fakesmsc sends ``text`` from ``sender`` to ``receiver`` (an MO): see :func:`mo_line`.

        Returns once fakesmsc says it sent it to bearerbox.
        """
        line = mo_line(sender, receiver, text, coding)
        process = self.fakesmsc
        if process is None or process.stdin is None:
            raise RuntimeError("Kannel is stopped")
        with self._lock:
            expected = self._sent + 1
            process.stdin.write(line)
            process.stdin.flush()
            if not self._lock.wait_for(lambda: self._sent >= expected, timeout):
                raise TimeoutError(f"fakesmsc did not send {line!r}:\n{self.logs()}")

    def messages(self) -> list[Outgoing]:
        """Every MT so far, parts of concatenated messages joined."""
        with self._lock:
            return join_parts(list(self.outgoing))

    def wait_for_outgoing(
        self, predicate: Callable[[Outgoing], bool], timeout: float = 20.0, after: int = 0
    ) -> Outgoing:
        """The first MT from index ``after`` of :meth:`messages` that ``predicate`` accepts."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for message in join_parts(list(self.outgoing))[after:]:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(repr(m) for m in join_parts(list(self.outgoing)))
                    raise TimeoutError(
                        f"no matching MT in {timeout}s; seen:\n{seen}\n{self.logs()}"
                    )
                self._lock.wait(left)

    def sendsms(self, to: str, text: str, sender: str = "", **extra: str) -> tuple[int, str]:
        """A sendsms request as callbackd makes it: its status and body."""
        query = {"username": self.username, "password": self.password, "to": to, "text": text}
        if sender:
            query["from"] = sender
        query.update(extra)
        url = f"{self.sendsms_url}/cgi-bin/sendsms?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    # -- diagnostics

    def logs(self, tail: int = 4000) -> str:
        """The end of every log (bearerbox, smsbox, their output, fakesmsc)."""
        parts = []
        names = ("bearerbox.log", "smsbox.log", "fakesmsc.log", "bearerbox.out", "smsbox.out")
        for name in names:
            path = self.dir / name
            if path.exists():
                # the .out files repeat the logs; they matter for a panic before those open
                size = tail if name.endswith(".log") else tail // 4
                text = path.read_text(errors="replace")
                parts.append(f"--- {name} ---\n{text[-size:]}")
        return "\n".join(parts)


# -- for pytest -----------------------------------------------------------------------------


def require() -> None:
    """Skip when Kannel is missing, except in CI (CI=true), where it must run."""
    require_installed(available(), "kannel", "kannel kannel-extras")


@contextlib.contextmanager
def running(directory: Path, target: str, **options: Any) -> Iterator[Kannel]:
    """A started :class:`Kannel` in ``directory``, stopped afterwards; see :func:`require`."""
    require()
    kannel = Kannel(directory, target, **options)
    kannel.start()
    try:
        yield kannel
    finally:
        kannel.stop()
