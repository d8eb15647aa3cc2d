"""The Python client of the f2f gateway: an aiortc client library and the `f2f client` command.

    from clients.python import AvatarClient, ClientOptions
"""

__all__ = ["AvatarClient", "ClientOptions", "ClientStats", "GatewayError"]


def __getattr__(name: str):  # imported on first use: the CLI parser must not pull in aiortc
    if name in __all__:
        from clients.python import client

        return getattr(client, name)
    raise AttributeError(name)
