"""Llama Stack's Files API through ``llama-stack-client``: upload, list,
retrieve, download, delete; prints what each call returned, as JSON.

Data for ``tests/test_llama_stack.py``; run with the Python of an environment
where ``llama-stack-client`` is installed:
``python files_client.py BASE_URL FILE``.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

from llama_stack_client import LlamaStackClient


def main(base_url: str, path: Path) -> None:
    client = LlamaStackClient(base_url=base_url, timeout=30, max_retries=0)
    with path.open("rb") as f:
        created = client.files.create(file=(path.name, f, "text/plain"), purpose="assistants")
    listed = client.files.list()
    retrieved = client.files.retrieve(created.id)
    content = client.files.content(created.id)
    raw = client.files.with_raw_response.content(created.id)
    deleted = client.files.delete(created.id)
    after = client.files.list()
    print(json.dumps({
        "created": created.to_dict(),
        "listed": [f.id for f in listed.data],
        "retrieved": retrieved.to_dict(),
        "content": content,
        "raw": base64.b64encode(raw.http_response.content).decode(),
        "raw_type": raw.headers.get("content-type"),
        "deleted": deleted.to_dict(),
        "after": [f.id for f in after.data],
    }))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
