"""A codec server: lets the Temporal Web UI and CLI show encrypted payloads in plain text.

With ORDERFLOW_CODEC_KEYS set, the history holds only ciphertext (orderflow/codec.py), and the
Web UI, which has no keys, shows it as such. A *codec server* is a small HTTP service, run by you
next to your keys, that the UI calls from the browser to decode what it displays:

    orderflow codec-server --port 8081
    Web UI: Settings (the gear) > Codec Server > endpoint http://127.0.0.1:8081/codec
    CLI:    temporal workflow show -w order-123 --codec-endpoint http://127.0.0.1:8081/codec

The protocol (Temporal's "remote data encoding"): ``POST {endpoint}/decode`` and
``POST {endpoint}/encode``, each with the JSON form of ``temporal.api.common.v1.Payloads``,
``{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}``, answered in the
same shape. The UI adds ``X-Namespace: <namespace>`` and, if configured, ``Authorization``;
the browser sends a CORS preflight first, so the UI's origin must be allowed.

Anyone who can reach this server can decrypt payloads with it: it binds to 127.0.0.1 and has no
authentication of its own. Put it behind your SSO/TLS proxy before exposing it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from orderflow.api.server import EmbeddedServer, serve_until_cancelled
from orderflow.codec import CodecError, EncryptionCodec
from orderflow.config import ConfigError, Settings

# The Web UI is served by the dev server on 8233; a browser's Origin is whichever host was typed.
DEFAULT_UI_ORIGINS = ("http://localhost:8233", "http://127.0.0.1:8233")
DEFAULT_PORT = 8081
PREFIX = "/codec"

log = logging.getLogger("orderflow.codec_server")


def create_app(codec: PayloadCodec, namespace: str, ui_origins: Sequence[str] = DEFAULT_UI_ORIGINS) -> FastAPI:
    """The codec server for ``namespace``: ``POST /codec/encode`` and ``POST /codec/decode``."""
    app = FastAPI(title="orderflow codec server", docs_url=None, redoc_url=None, openapi_url=None)
    # The browser asks first (OPTIONS preflight) whether the UI's origin may POST JSON with an
    # X-Namespace header; CORSMiddleware answers it. Credentials: the UI's "include cross-origin
    # credentials" option sends cookies, which browsers allow only for a named origin, never "*".
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(ui_origins),
        allow_methods=["POST"],
        allow_headers=["Content-Type", "X-Namespace", "Authorization"],
        allow_credentials=True,
    )

    async def convert(request: Request, direction: str) -> dict:
        asked = request.headers.get("X-Namespace")
        if asked is not None and asked != namespace:  # keys belong to a namespace; the CLI may send none
            raise HTTPException(403, f"this codec server holds the keys of namespace {namespace!r}, not {asked!r}")
        try:
            # Proto3 JSON: bytes fields (data, each metadata value) are base64. Unknown fields
            # (from a newer UI) are skipped rather than failing the whole page.
            payloads = json_format.Parse(await request.body(), Payloads(), ignore_unknown_fields=True)
        except (json_format.ParseError, UnicodeDecodeError) as err:
            raise HTTPException(400, f"body is not Temporal Payloads JSON: {' '.join(str(err).split())}") from None
        try:
            if direction == "decode":
                out = await codec.decode(payloads.payloads)
            else:
                out = await codec.encode(payloads.payloads)
        except CodecError as err:
            raise HTTPException(422, str(err)) from None
        # Always a "payloads" key (MessageToJson would drop an empty list); the same proto3 JSON.
        return {"payloads": [json_format.MessageToDict(p) for p in out]}

    @app.post(PREFIX + "/decode")
    async def decode(request: Request) -> dict:
        """Payloads as the history holds them -> as the payload converter made them (JSON)."""
        return await convert(request, "decode")

    @app.post(PREFIX + "/encode")
    async def encode(request: Request) -> dict:
        """The reverse: what the UI or CLI sends as a workflow's input or a signal's, encrypted."""
        return await convert(request, "encode")

    return app


def app_for(settings: Settings, ui_origins: Sequence[str] = DEFAULT_UI_ORIGINS) -> FastAPI:
    """The codec server with ``settings``' keys and namespace; ConfigError without keys."""
    if not settings.codec_keys:
        raise ConfigError("the codec server needs the keys: set ORDERFLOW_CODEC_KEYS (or ORDERFLOW_CODEC_KEYS_FILE)")
    return create_app(EncryptionCodec(settings.codec_keys), settings.namespace, ui_origins)


async def serve(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    ui_origins: Sequence[str] = DEFAULT_UI_ORIGINS,
) -> None:
    app = app_for(settings, ui_origins)
    server = EmbeddedServer(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    log.info(
        "codec server started",
        extra={
            "orderflow": {
                "endpoint": f"http://{host}:{port}{PREFIX}",
                "namespace": settings.namespace,
                "key_ids": [key_id for key_id, _ in settings.codec_keys],
                "ui_origins": list(ui_origins),
            }
        },
    )
    await serve_until_cancelled(server)
