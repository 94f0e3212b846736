"""The floor: a bare Flask app whose sync views answer what stackflask's do."""

from __future__ import annotations

import json
import time

from flask import Flask, Response, request

app = Flask(__name__)


@app.get("/v1/weather/locations")
def locations() -> Response:
    return Response(json.dumps({"locations": ["Paris", "Tokyo"]}, separators=(",", ":")),
                    mimetype="application/json")


@app.post("/v1/bench/order")
@app.post("/v1/bench/order_pydantic")
def order() -> Response:
    return Response(json.dumps(json.loads(request.get_data()), separators=(",", ":")),
                    mimetype="application/json")


@app.get("/v1/health")
def health() -> Response:
    return Response('{"status":"OK"}', mimetype="application/json")


@app.get("/v1/bench/ticks")
def ticks() -> Response:
    n = int(request.args.get("n", 1000))

    def events():
        for i in range(n):
            yield f"data: {json.dumps({'i': i, 't': time.time()}, separators=(',', ':'))}\n\n"

    return Response(events(), mimetype="text/event-stream")
