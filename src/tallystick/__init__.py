"""tallystick: billing for AI products.

Importing the package loads only the SDK, which depends on httpx and OpenTelemetry. The server,
CLI and store live in ``tallystick.server`` and ``tallystick.cli`` and need the ``[server]`` extra.
"""

from tallystick._version import __version__
from tallystick.client import ApiError, Client

__all__ = ["ApiError", "Client", "__version__"]
