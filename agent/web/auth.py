"""Who is on the till page: PIN sign-in, server-side sessions, CSRF tokens, PIN attempt limits.

Everything lives in memory on purpose: a restart signs everyone out (they type their PIN again),
and nothing that opens a session is ever written to disk. Times come from the daemon's Clock
(monotonic), so tests move them instead of sleeping.

PINs are short, so guessing is what this module is about:

* each client address may fail ``MAX_FAILURES`` times in ``FAILURE_WINDOW``; the next failure
  locks it out for ``LOCKOUT`` (429 with Retry-After), and a locked-out client is refused before
  its PIN is even compared;
* all clients together may fail ``MAX_FAILURES_ALL`` times in the window, after which every
  sign-in is refused until the window has passed. One attacker can then keep staff from signing
  in on new phones, but cannot walk a 4-digit PIN space by changing address on the LAN; phones
  already signed in keep working.

A PIN is compared with every staff member's in constant time (digests through
``hmac.compare_digest``, no early exit), so timing says neither whether nor whose PIN matched.
Failed sign-ins are logged with the client address and never the PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from drivers.clock import Clock

log = logging.getLogger("settleguard.web")

MAX_FAILURES = 5            # per client address within FAILURE_WINDOW, then LOCKOUT
FAILURE_WINDOW = 15 * 60.0
LOCKOUT = 15 * 60.0
MAX_FAILURES_ALL = 30       # all addresses together within FAILURE_WINDOW
MAX_SESSIONS = 200          # a shop has a handful of phones; the oldest session goes beyond this
MAX_CLIENTS_TRACKED = 4096  # addresses with recent failures kept; memory stays bounded whatever the LAN does


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    role: str                # cashier | manager
    pin: str


@dataclass(slots=True)
class Session:
    token: str
    name: str
    role: str
    csrf: str
    started: float
    seen: float
    pin_digest: bytes = b""   # of the PIN it was opened with: a changed PIN ends it (a leaked PIN's sessions)


@dataclass(slots=True)
class _Failures:
    times: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LockedOut(Exception):
    """Too many wrong PINs: ``retry_after`` whole seconds until the next try is heard."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"locked out for {retry_after:.0f} s")
        self.retry_after = max(1, math.ceil(retry_after))


def _digest(pin: str) -> bytes:
    return hashlib.sha256(pin.encode("utf-8")).digest()


def match_pin(pin: str, people: Sequence[Person]) -> Person | None:
    """The person whose PIN this is; every PIN is compared, in constant time, whatever matched."""
    given = _digest(pin)
    found: Person | None = None
    for person in people:
        if hmac.compare_digest(given, _digest(person.pin)) and found is None:
            found = person
    return found


class Gate:
    """Sign-in attempts, sessions and their CSRF tokens; thread-safe (waitress serves on several threads)."""

    def __init__(self, clock: Clock, *, idle: float, longest: float,
                 on_lockout: Callable[[str, bool], None] | None = None) -> None:
        self.clock = clock
        # Told (client address, whether every sign-in is now refused) when a lockout starts: the shop's
        # group hears of PIN guessing, not only the log. Called under the lock: it must not block.
        self.on_lockout = on_lockout
        self.idle = idle
        self.longest = longest
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, _Failures] = {}
        self._all_failures: deque[float] = deque()

    # -- sign-in ---------------------------------------------------------------------------------
    def sign_in(self, pin: str, people: Sequence[Person], client: str) -> Session | None:
        """A new session for the person with this PIN; None for a wrong PIN; LockedOut when refused unheard."""
        now = self.clock.monotonic()
        # One lock around check, compare and count: parallel guesses from one address (waitress serves
        # on several threads) cannot all pass the lockout check before any failure is counted. The
        # compare is a few hashes, so holding the lock costs nothing a phone would notice.
        with self._lock:
            self._check_locked(client, now)
            person = match_pin(pin, people)
            if person is None:
                self._failed(client, now)
                return None
            # A right PIN does not wipe the address's recent failures: a cashier signing in with their own
            # PIN between guesses at the manager's must still run into the lockout.
            session = Session(secrets.token_urlsafe(32), person.name, person.role, secrets.token_urlsafe(32),
                              now, now, _digest(person.pin))
            self._sessions[session.token] = session
            self._prune_sessions(now)
        log.info("web sign-in: %s (%s) from %s", person.name, person.role, client)
        return session

    def _check_locked(self, client: str, now: float) -> None:
        state = self._failures.get(client)
        if state is not None and state.locked_until > now:
            raise LockedOut(state.locked_until - now)
        while self._all_failures and now - self._all_failures[0] > FAILURE_WINDOW:
            self._all_failures.popleft()
        if len(self._all_failures) >= MAX_FAILURES_ALL:
            raise LockedOut(FAILURE_WINDOW - (now - self._all_failures[0]))

    def _failed(self, client: str, now: float) -> None:
        if client not in self._failures and len(self._failures) >= MAX_CLIENTS_TRACKED:
            self._forget_old_failures(now)
        state = self._failures.setdefault(client, _Failures())
        state.times.append(now)
        while state.times and now - state.times[0] > FAILURE_WINDOW:
            state.times.popleft()
        self._all_failures.append(now)
        if len(self._all_failures) == MAX_FAILURES_ALL and self.on_lockout is not None:
            self.on_lockout(client, True)
        if len(state.times) >= MAX_FAILURES:
            if self.on_lockout is not None:
                self.on_lockout(client, False)
            state.locked_until = now + LOCKOUT
            state.times.clear()
            log.warning("web sign-in: wrong PIN from %s, %d times: locked out for %.0f s", client, MAX_FAILURES,
                        LOCKOUT)
        else:
            log.warning("web sign-in: wrong PIN from %s (%d of %d before a lockout)", client, len(state.times),
                        MAX_FAILURES)

    def _forget_old_failures(self, now: float) -> None:
        for addr, st in list(self._failures.items()):
            if st.locked_until <= now and (not st.times or now - st.times[-1] > FAILURE_WINDOW):
                del self._failures[addr]
        while len(self._failures) >= MAX_CLIENTS_TRACKED:   # still full: the stalest goes
            del self._failures[next(iter(self._failures))]

    # -- sessions --------------------------------------------------------------------------------
    def session(self, token: str | None) -> Session | None:
        """The live session for a cookie's token (and it counts as used now); None when unknown or expired."""
        if not token:
            return None
        now = self.clock.monotonic()
        with self._lock:
            found = self._sessions.get(token)
            if found is None:
                return None
            if now - found.seen > self.idle or now - found.started > self.longest:
                del self._sessions[token]
                return None
            found.seen = now
            return found

    def sign_out(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def drop_people_gone(self, people: Sequence[Person]) -> None:
        """After a reload: sessions of people no longer listed, whose role changed, or whose PIN changed end now.

        A PIN is changed because it leaked: whoever signed in with the old one must be out at once.
        """
        current = {(p.name, p.role, _digest(p.pin)) for p in people}
        with self._lock:
            for token, s in list(self._sessions.items()):
                if (s.name, s.role, s.pin_digest) not in current:
                    del self._sessions[token]

    def _prune_sessions(self, now: float) -> None:
        for token, s in list(self._sessions.items()):
            if now - s.seen > self.idle or now - s.started > self.longest:
                del self._sessions[token]
        while len(self._sessions) > MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.seen)
            del self._sessions[oldest.token]


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf.encode(), (presented or "").encode())
