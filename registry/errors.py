"""The registry's error tree.

``RegistryError``
  ``RegistryConfigError``   bad settings, raised at startup; ``.setting`` names the culprit
  ``ConsulUnavailable``     the agent could not be reached or refused a request
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


class InstanceUnknown(RegistryError):
    """The agent has forgotten this instance (restarted without data, catalog wiped)."""
