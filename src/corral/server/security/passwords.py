"""Password hashing (argon2id) and the password strength policy.

Hashing: argon2id through argon2-cffi's ``PasswordHasher`` with its default (RFC 9106 low-memory)
parameters. Hashing and verifying cost ~0.2-0.4 s of CPU on purpose: async callers must run them in
``asyncio.to_thread``. Passwords are NFKC-normalised first, so the same visible password typed on
different systems (composed vs decomposed accents) hashes the same; ASCII is unchanged by NFKC, so
hashes made before normalisation was introduced still verify.

Strength (``check_strength``), each rule reported with a stable problem code:

- ``too_short``: at least ``MIN_LENGTH`` (10) characters (code points, after NFKC);
- ``too_long``: at most ``MAX_LENGTH`` (1024), the most a login request accepts;
- ``contains_username``: must not contain the user name (case-insensitive; names under 3
  characters are ignored, they would forbid too much);
- ``too_common``: not one of ``COMMON_PASSWORDS``, also after lower-casing, removing up to 8
  leading and trailing digits/symbols and undoing leetspeak (``P@ssw0rd2024!`` is ``password``);
- ``too_simple``: at least 3 of 4 character classes (lower case, upper case, digits, anything
  else) unless it is a passphrase of ``PASSPHRASE_LENGTH`` (16) characters or more;
- ``too_predictable``: at least ``MIN_UNPREDICTABLE`` (6) characters outside runs of 3+ repeated,
  alphabetical, numerical or keyboard-row characters (``aaaa``, ``abcd``, ``4321``, ``qwerty``).
"""

from __future__ import annotations

import itertools
import secrets
import string
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from corral.api.errors import InvalidInput

MIN_LENGTH = 10
MAX_LENGTH = 1024
PASSPHRASE_LENGTH = 16
MIN_UNPREDICTABLE = 6

DEFAULT_HASHER = PasswordHasher()
"""The production hasher; tests may pass a cheaper one through ``hasher=``."""

_COMMON_TEXT = """
    123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon 123123 baseball
    abc123 football monkey letmein 696969 shadow master 666666 qwertyuiop 123321 mustang
    1234567890 michael 654321 superman 1qaz2wsx 7777777 121212 000000 qazwsx 123qwe killer
    trustno1 jordan jennifer zxcvbnm asdfgh hunter buster soccer harley batman andrew tigger
    sunshine iloveyou charlie robert thomas hockey ranger daniel starwars 112233 george computer
    michelle jessica pepper 1111 zxcvbn 555555 11111111 131313 freedom 777777 pass maggie 159753
    aaaaaa ginger princess joshua cheese amanda summer love ashley nicole chelsea matthew access
    yankees 987654321 dallas austin thunder taylor matrix minecraft william corvette hello martin
    heather secret merlin diamond 1234qwer hammer silver 222222 88888888 anthony justin test
    bailey q1w2e3r4t5 patrick internet scooter orange 11111 golfer cookie richard samantha bigdog
    guitar jackson whatever mickey chicken sparky snoopy maverick phoenix camaro peanut morgan
    welcome falcon cowboy ferrari samsung andrea smokey steelers joseph mercedes dakota arsenal
    eagles melissa boomer spider nascar monster tigers yellow xxxxxx 123123123 gateway marina
    diablo bulldog qwer1234 purple banana junior hannah 123654 porsche lakers iceman money
    cowboys 987654 london tennis 999999 coffee scooby 0000 miller boston q1w2e3r4 brandon yamaha
    chester mother forever johnny edward 333333 oliver redsox player knight fender midnight
    please chicago slayer rangers charles angel flower rabbit wizard jasper enter rachel steven
    winner adidas victoria natasha 1q2w3e4r jasmine winter prince fishing cocacola casper
    gandalf asdfasdf crystal 87654321 12344321 golden 8675309 pokemon naruto liverpool
    barcelona football1 password1 password12 password123 passw0rd qwerty123 qwerty1 welcome1
    iloveyou1 abc12345 1q2w3e4r5t 1qaz2wsx3edc zaq12wsx asdfghjkl zxcvbnm123 qwertyuiop123
    admin administrator root toor changeme default guest user login letmein1 monkey123
    dragon123 sunshine1 princess1 superman1 whatever1 starwars1 spring autumn fall
    january february march april june july august september october november december
    corral proxmox openstack vmware libvirt qemu kvm virtual server cloud linux ubuntu debian
    security temp temporary test123 testing hello123 secret123 master123 admin123 root123
"""

COMMON_PASSWORDS: frozenset[str] = frozenset(_COMMON_TEXT.split())
"""The most common passwords (and bases of common ones), lower case."""

_PROBLEMS = {
    "too_short": f"use at least {MIN_LENGTH} characters",
    "too_long": f"use at most {MAX_LENGTH} characters",
    "contains_username": "do not include the user name",
    "too_common": "it is a commonly used password",
    "too_simple": (
        "mix 3 of lower case, upper case, digits and symbols,"
        f" or use a passphrase of {PASSPHRASE_LENGTH}+ characters"
    ),
    "too_predictable": "it is mostly repeats or sequences (aaa, abc, 123, qwerty)",
}

_LEET = str.maketrans("013457@$!", "oieastasi")
_AFFIX = 8
_EDGE = string.digits + string.punctuation + string.whitespace
_SEQUENCES = ("abcdefghijklmnopqrstuvwxyz", "01234567890", "qwertyuiop", "asdfghjkl", "zxcvbnm")
_ADJACENT = frozenset(
    pair for seq in _SEQUENCES for a, b in itertools.pairwise(seq) for pair in ((a, b), (b, a))
)


def _normalise(password: str) -> str:
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    """The argon2id hash (PHC string) of ``password``; a new random salt each call."""
    return hasher.hash(_normalise(password))


def verify_password(
    password_hash: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> bool:
    """Whether ``password`` matches ``password_hash``. A malformed or non-argon2 hash (e.g. ``"!"``
    for an account without a password) never matches: False, not an error."""
    try:
        return hasher.verify(password_hash, _normalise(password))
    except (VerificationError, InvalidHashError):
        return False


def verify_and_update(
    password_hash: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> tuple[bool, str | None]:
    """``(ok, new_hash)``: ``new_hash`` is a fresh hash to store when the password matched but
    ``password_hash`` was made with other parameters than ``hasher``'s; None otherwise."""
    if not verify_password(password_hash, password, hasher=hasher):
        return False, None
    if hasher.check_needs_rehash(password_hash):
        return True, hash_password(password, hasher=hasher)
    return True, None


def dummy_verify(password: str, *, hasher: PasswordHasher = DEFAULT_HASHER) -> None:
    """Spend the time of a real verification; call it when the user does not exist, so response
    times do not reveal which user names are valid."""
    verify_password(_dummy_hash(hasher), password, hasher=hasher)


_DUMMY: dict[tuple[int, int, int], str] = {}


def _dummy_hash(hasher: PasswordHasher) -> str:
    key = (hasher.time_cost, hasher.memory_cost, hasher.parallelism)
    if key not in _DUMMY:
        _DUMMY[key] = hasher.hash(secrets.token_urlsafe(16))
    return _DUMMY[key]


def _classes(password: str) -> int:
    lower = any(c.islower() for c in password)
    upper = any(c.isupper() for c in password)
    digit = any(c in string.digits for c in password)
    other = any(not (c.islower() or c.isupper() or c in string.digits) for c in password)
    return lower + upper + digit + other


def _is_common(lowered: str) -> bool:
    """Whether ``lowered``, less up to 8 leading and trailing digits/symbols, is (in leetspeak)
    one of ``COMMON_PASSWORDS``."""
    n = len(lowered)
    lead = min(_AFFIX, n - len(lowered.lstrip(_EDGE)))
    trail = min(_AFFIX, n - len(lowered.rstrip(_EDGE)))
    for i in range(lead + 1):
        for j in range(n - trail, n + 1):
            core = lowered[i:j]
            if core in COMMON_PASSWORDS or core.translate(_LEET) in COMMON_PASSWORDS:
                return True
    return False


def _unpredictable_chars(lowered: str) -> int:
    """Characters outside runs (3+) of repeats or neighbours in ``_SEQUENCES``."""
    trivial = 0
    run = 1
    for i in range(1, len(lowered) + 1):
        if i < len(lowered) and (
            lowered[i] == lowered[i - 1] or (lowered[i - 1], lowered[i]) in _ADJACENT
        ):
            run += 1
            continue
        if run >= 3:
            trivial += run
        run = 1
    return len(lowered) - trivial


def strength_problems(password: str, *, username: str | None = None) -> list[str]:
    """The problem codes (see the module docstring) of ``password``; empty if it is acceptable."""
    password = _normalise(password)
    lowered = password.lower()
    problems: list[str] = []
    if len(password) < MIN_LENGTH:
        problems.append("too_short")
    if len(password) > MAX_LENGTH:
        problems.append("too_long")
    if username is not None and len(username.strip()) >= 3:
        name = _normalise(username.strip()).lower()
        if name in lowered or name in lowered.translate(_LEET):
            problems.append("contains_username")
    if _is_common(lowered):
        problems.append("too_common")
    if len(password) < PASSPHRASE_LENGTH and _classes(password) < 3:
        problems.append("too_simple")
    if _unpredictable_chars(lowered) < MIN_UNPREDICTABLE:
        problems.append("too_predictable")
    return problems


def check_strength(password: str, *, username: str | None = None) -> None:
    """Raise ``InvalidInput`` (context ``reason="weak_password"``, ``problems`` = the list of
    problem codes, ``min_length``) unless ``password`` passes every rule of the module docstring."""
    problems = strength_problems(password, username=username)
    if problems:
        hints = "; ".join(_PROBLEMS[p] for p in problems)
        raise InvalidInput(
            f"the password is too weak: {hints}",
            reason="weak_password",
            problems=problems,
            min_length=MIN_LENGTH,
        )


def generate_password(length: int = 20) -> str:
    """A random password (letters, digits, ``-_``) that passes ``check_strength``; for first-start
    and admin-reset passwords shown once."""
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise InvalidInput(f"a password is {MIN_LENGTH} to {MAX_LENGTH} characters", length=length)
    alphabet = string.ascii_letters + string.digits + "-_"
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(length))
        if not strength_problems(candidate):
            return candidate
