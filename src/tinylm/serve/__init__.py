"""Serving a model: an OpenAI-compatible HTTP API with continuous batching and a chat page.

    from tinylm.serve import Backend, create_app
    app = create_app(Backend.load("runs/stories15M"))      # then run it with uvicorn

Needs the `serve` extra (fastapi, uvicorn) for the server; `tinylm.serve.client` (the terminal chat's
HTTP side) needs neither.
"""
