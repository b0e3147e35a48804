"""The registry's error tree.

``RegistryError``
  ``RegistryConfigError``   bad settings, raised at startup; ``.setting`` names the culprit
  ``ConsulUnavailable``     the agent could not be reached, or failed (5xx): retried
  ``ConsulRejected``        the agent refused the call (400 bad field, 403 missing ACL
                            permission or unknown token): retrying cannot help, so it is
                            never retried
  ``InstanceUnknown``       the agent no longer knows our service or check (it lost its state)
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base of every error raised by ``registry``."""


class RegistryConfigError(RegistryError, ValueError):
    """A setting is missing or invalid; the message starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class ConsulUnavailable(RegistryError):
    """The Consul agent did not answer, or answered with an error."""


class ConsulRejected(RegistryError):
    """The agent refused ``call`` for good: 400 (a bad field) or 403 (ACLs).

    ``permission`` is the missing ACL permission a 403 names (``service:write``), else
    None (a token the agent does not know, or no permission named). A 403's ``detail`` is
    ``consul_connection.refusals.AclDenial.reason``, the CLIs' wording. The message names
    the call and the permission or field, never the token.
    """

    def __init__(self, call: str, status: int, detail: str, permission: str | None = None):
        what = "bad request" if status == 400 else "permission denied"
        super().__init__(f"{call}: Consul refused it ({status} {what}): {detail}")
        self.call = call
        self.status = status
        self.detail = detail
        self.permission = permission


class InstanceUnknown(RegistryError):
    """The agent has forgotten this instance (restarted without data, catalog wiped)."""
