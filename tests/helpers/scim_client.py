"""scim2-client over plain httpx, for scim2-tester and the provisioning tests: scim2-client's own
network engine is built on httpx2, which the appliance does not otherwise need."""

from __future__ import annotations

from typing import Any

import httpx
from scim2_client import BaseSyncSCIMClient

__all__ = ["HttpxScimClient"]


class HttpxScimClient(BaseSyncSCIMClient):
    def __init__(self, client: httpx.Client, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = client

    def _stays_under_base_url(self, endpoint: str) -> bool:
        base = self.client.base_url
        url = self.client.build_request("GET", endpoint).url
        return url.scheme == base.scheme and url.netloc == base.netloc and url.raw_path.startswith(base.raw_path)

    def _parse_json(self, response: Any) -> Any:
        return response.json()

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, url, **kwargs)
