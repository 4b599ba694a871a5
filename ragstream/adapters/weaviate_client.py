"""A Weaviate v4 client from settings (HTTP + gRPC, API key)."""

from __future__ import annotations

from urllib.parse import urlparse

import weaviate
from weaviate.classes.init import AdditionalConfig, Auth, Timeout

from ragstream.core.secrets import is_published
from ragstream.settings import WeaviateSettings


def _api_key(cfg: WeaviateSettings) -> str:
    key = cfg.api_key.get_secret_value()
    if key and is_published(key):
        raise ValueError("weaviate.api_key is a value published in the ragstream repository; use your own")
    return key


def connect(cfg: WeaviateSettings) -> weaviate.WeaviateClient:
    url = urlparse(cfg.url)
    secure = url.scheme == "https"
    key = _api_key(cfg)
    return weaviate.connect_to_custom(
        http_host=url.hostname or "127.0.0.1",
        http_port=url.port or (443 if secure else 80),
        http_secure=secure,
        grpc_host=url.hostname or "127.0.0.1",
        grpc_port=cfg.grpc_port,
        grpc_secure=secure,
        auth_credentials=Auth.api_key(key) if key else None,
        additional_config=AdditionalConfig(
            timeout=Timeout(init=cfg.timeout_s, query=cfg.timeout_s, insert=cfg.timeout_s * 4)
        ),
        skip_init_checks=False,
    )


def connect_async(cfg: WeaviateSettings) -> weaviate.WeaviateAsyncClient:
    url = urlparse(cfg.url)
    secure = url.scheme == "https"
    key = _api_key(cfg)
    return weaviate.use_async_with_custom(
        http_host=url.hostname or "127.0.0.1",
        http_port=url.port or (443 if secure else 80),
        http_secure=secure,
        grpc_host=url.hostname or "127.0.0.1",
        grpc_port=cfg.grpc_port,
        grpc_secure=secure,
        auth_credentials=Auth.api_key(key) if key else None,
        additional_config=AdditionalConfig(
            timeout=Timeout(init=cfg.timeout_s, query=cfg.timeout_s, insert=cfg.timeout_s * 4)
        ),
    )
