"""`tinylm serve`: a checkpoint behind an OpenAI-compatible HTTP API, with a chat page at `/`."""

from __future__ import annotations

import argparse

from tinylm.threads import add_threads_argument, use_threads

NAME = "serve"
ORDER = 60
HELP = "Serve a checkpoint over an OpenAI-compatible HTTP API (continuous batching) with a chat page at /."
EXAMPLES = """
  tinylm serve runs/stories15M                        # http://127.0.0.1:8000/ (page), /v1/... (API)
  tinylm serve runs/stories15M --port 8080 --max-batch 32
  TINYLM_API_KEY=secret tinylm serve runs/stories15M --host 0.0.0.0
  tinylm serve runs/stories15M-q8 --engine numpy      # quantized, no torch
  curl http://127.0.0.1:8000/v1/completions -H 'Content-Type: application/json' \\
       -d '{"prompt": "Once upon a time", "max_tokens": 50}'
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    import os

    p.add_argument("checkpoint", help="checkpoint directory (config.json, model.safetensors, tokenizer/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=os.environ.get("TINYLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on every route but /health (default: $TINYLM_API_KEY, "
                        "else no key)")  # fmt: skip
    p.add_argument("--model-name", default=None, help="the model's name in the API (default: the directory name)")
    p.add_argument("--max-batch", type=int, default=16, help="requests decoded together per step (default 16)")
    p.add_argument("--max-queue", type=int, default=256,
                   help="requests waiting for a row before new ones get a 503 (default 256)")  # fmt: skip
    p.add_argument("--engine", default="torch", help="torch (default) or numpy (NumPy only, no torch)")
    p.add_argument("--device", default="cpu", help="torch engine device: cpu or cuda (default cpu)")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    import socket

    from tinylm.errors import TinyLMError

    use_threads(args.threads)  # before torch or NumPy start their pools (either engine)
    try:
        import uvicorn

        from tinylm.serve.app import create_app
        from tinylm.serve.backend import Backend
    except ImportError as e:
        raise TinyLMError(f"serving needs {e.name}; install it with: pip install 'tinylm[serve]'") from None
    backend = Backend.load(args.checkpoint, name=args.model_name, engine=args.engine, device=args.device,
                           max_batch=args.max_batch, max_queue=args.max_queue)  # fmt: skip
    app = create_app(backend, api_key=args.api_key)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # bound here so a taken port is one clear line (uvicorn would log and exit)
        sock.bind((args.host, args.port))
    except OSError as e:
        raise TinyLMError(f"cannot listen on {args.host}:{args.port}: {e.strerror}; pick another --port") from None
    print(f"serving {backend.name!r} at http://{args.host}:{args.port}/ (chat page), "
          f"http://{args.host}:{args.port}/v1 (OpenAI API)" + (", API key required" if args.api_key else ""), flush=True)  # fmt: skip
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0
