"""Who a study link says the participant is, and whether the link proves it.

Two kinds of link open a study (docs/online.md has the exact formats):
- a recruitment site's, e.g. Prolific's `?PROLIFIC_PID=...&STUDY_ID=...&SESSION_ID=...`: the
  participant id plus the ids of this one submission. The site makes them; nobody can guess a
  submission's SESSION_ID, so a browser that brings back the same three ids is the same
  participant and resumes the session without the cookie (another device, a private window).
- a lab's own, `?participant=P002`: ids like P002 can be guessed. Signed, `&sig=` is an
  HMAC-SHA256 of the study name and the id keyed with a secret only the experimenter holds
  (`python -m mcmcp.links` makes the links); a signed link proves its participant, so it also
  resumes without the cookie.
`online.participant_links` says which a study takes: open (any, as given: an unsigned link
resumes only with the cookie or after the experimenter releases the session), signed (signed lab
links only) or recruitment (recruitment-site links only); any other link is refused before
anything is written, so in the last two a guessed id claims nothing.

Nothing here trusts the browser: every field is checked (ids as `valid_id`), and the signature
is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import urlencode

from mcmcp.config import ConfigError
from mcmcp.specs import OnlineSpec
from mcmcp.store import validate_participant_id

FIELDS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "participant", "sig")
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def valid_id(value: object, max_len: int = 64) -> bool:
    """True for 1..max_len letters, digits, '-' or '_' (tokens, screen ids, recruitment ids)."""
    return isinstance(value, str) and 1 <= len(value) <= max_len and set(value) <= _ID_CHARS


@dataclass(frozen=True)
class Link:
    """What a study link says. participant: the id (validated); study_id, session_id: the
    recruitment site's submission ids (None for a lab link); sig: a lab link's signature."""

    participant: str
    study_id: str | None = None
    session_id: str | None = None
    sig: str | None = None

    @property
    def recruited(self) -> bool:
        """A recruitment site's link, with the ids of one submission."""
        return self.study_id is not None and self.session_id is not None


def parse_link(data: dict) -> Link:
    """The link's fields from a start request (`FIELDS`, each optional), or ValueError with a
    message for the participant."""
    pid, named = data.get("PROLIFIC_PID"), data.get("participant")
    if pid is not None and named is not None and pid != named:
        raise ValueError("PROLIFIC_PID and participant differ; the link gives one id")
    participant = pid if pid is not None else named
    if participant is None:
        raise ValueError("This link has no participant id. Please open the study with the link "
                         "you were given.")
    if not isinstance(participant, str):
        raise ValueError("the participant id must be text")
    validate_participant_id(participant)
    values = {}
    for name in ("STUDY_ID", "SESSION_ID", "sig"):
        value = data.get(name)
        if value is not None and not valid_id(value):
            raise ValueError(f"{name} must be 1-64 letters, digits, '-' or '_'")
        values[name] = value
    if pid is None and (values["STUDY_ID"] or values["SESSION_ID"]):
        raise ValueError("STUDY_ID and SESSION_ID come with PROLIFIC_PID")
    return Link(participant, values["STUDY_ID"], values["SESSION_ID"], values["sig"])


def sign(secret: str, study: str, participant: str) -> str:
    """The signature of a lab link: HMAC-SHA256 of study and id, 128 bits in base64url."""
    mac = hmac.new(secret.encode("utf-8"), f"{study}\n{participant}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).decode("ascii").rstrip("=")


def signed(link: Link, secret: str | None, study: str) -> bool:
    """True if `link` is a lab link with the right signature for its participant (never
    without a secret)."""
    return (secret is not None and link.sig is not None and not link.recruited
            and hmac.compare_digest(link.sig.encode("ascii"),
                                    sign(secret, study, link.participant).encode("ascii")))


def same_submission(link: Link, online_meta: dict) -> bool:
    """True if a recruitment link names the submission a session was started with."""
    return (link.recruited and online_meta.get("study_id") == link.study_id
            and online_meta.get("session_id") == link.session_id)


def participant_url(base: str, study: str, participant: str, secret: str | None) -> str:
    """A lab link for `participant` under `base` (the study's page), signed when a secret is
    given."""
    validate_participant_id(participant)
    query = {"participant": participant}
    if secret is not None:
        query["sig"] = sign(secret, study, participant)
    return f"{base.rstrip('/')}/?{urlencode(query)}"


def link_secret(spec: OnlineSpec, environ: dict, file: str = "<config>") -> str | None:
    """The secret lab links are signed with, from the environment variable the YAML names
    (None if unset); ConfigError when links must be signed and there is none."""
    secret = environ.get(spec.link_secret_env) or None
    if spec.participant_links == "signed" and secret is None:
        raise ConfigError(file, "online.participant_links", "signed",
                          f"signed links need a secret: set the environment variable "
                          f"{spec.link_secret_env} (online.link_secret_env), e.g. to the output "
                          "of `openssl rand -hex 32`, the same for the server and "
                          "`python -m mcmcp.links`")
    if secret is not None and len(secret) < 16:
        raise ConfigError(file, "online.link_secret_env", spec.link_secret_env,
                          "an environment variable holding a secret of 16 or more characters "
                          "(e.g. `openssl rand -hex 32`)")
    return secret
