"""The embedded default configuration, installed as the package ``stackflask.defaults``.

Holds no code: ``run.yaml`` serves the weather API of ``blueprints/`` through
``apis.d/`` and ``providers.d/``, as any external API is served.
"""
