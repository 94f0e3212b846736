"""Write a stackflask stack serving every API protocol of the installed Llama
Stack with the raising provider, and Llama Stack's own route table.

Data for ``tests/test_llama_stack.py``; run with the Python of an environment
where ``llama-stack`` is installed: ``python write_every_api.py OUT_DIR``.

Writes ``apis.d/``, ``providers.d/inline/<api>/raising.yaml`` and ``run.yaml``
for each API of ``api_protocol_map()`` but ``inspect`` and ``providers``
(stackflask serves those routes itself), plus ``rag_tool`` for
``RAGToolRuntime``, whose routes Llama Stack adds to ``tool_runtime``'s by hand
(the "HACK ALERT" in ``llama_stack/distribution/server/routes.py``); and
``routes.json``: ``{api: [[method, path, declared method], ...]}`` from
``get_all_api_routes()``, the method as Llama Stack serves it (GET, DELETE or
POST) and as the webmethod declares it.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import yaml
from llama_stack.apis.tools import RAGToolRuntime
from llama_stack.distribution.resolver import api_protocol_map
from llama_stack.distribution.server.routes import get_all_api_routes

BUILT_IN = {"inspect", "providers"}


def declared_methods(protocol: type) -> dict[str, str]:
    return {
        name: value.__webmethod__.method
        for name, value in inspect.getmembers(protocol, inspect.isfunction)
        if hasattr(value, "__webmethod__")
    }


def main(out: Path) -> None:
    protocols = {api.value: protocol for api, protocol in api_protocol_map().items()}
    served = {api: p for api, p in protocols.items() if api not in BUILT_IN}
    served["rag_tool"] = RAGToolRuntime
    (out / "apis.d").mkdir(parents=True)
    providers = {}
    for api, protocol in served.items():
        spec = {"module": protocol.__module__, "name": api, "protocol": protocol.__name__}
        (out / "apis.d" / f"{api}.yaml").write_text(yaml.safe_dump(spec))
        folder = out / "providers.d" / "inline" / api
        folder.mkdir(parents=True)
        provider = {"module": "raising_provider", "config_class": "raising_provider.RaisingConfig"}
        (folder / "raising.yaml").write_text(yaml.safe_dump(provider))
        providers[api] = [{
            "provider_id": f"raising-{api}",
            "provider_type": "inline::raising",
            "config": {"protocol": f"{protocol.__module__}:{protocol.__name__}"},
        }]
    run = {
        "version": "2",
        "image_name": "every-llama-stack-api",
        "apis": sorted(served),
        "providers": providers,
        "external_apis_dir": "apis.d",
        "external_providers_dir": "providers.d",
    }
    (out / "run.yaml").write_text(yaml.safe_dump(run))

    declared = {api: declared_methods(p) for api, p in protocols.items()}
    declared["tool_runtime"].update(
        {f"rag_tool.{k}": v for k, v in declared_methods(RAGToolRuntime).items()}
    )
    table = {
        api.value: [
            [method, route.path, declared[api.value][route.name]]
            for route, _ in routes
            for method in sorted(route.methods - {"HEAD"})
        ]
        for api, routes in get_all_api_routes().items()
    }
    (out / "routes.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
