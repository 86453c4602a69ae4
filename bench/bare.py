"""The ingest baseline: a bare Flask endpoint that parses the JSON body and answers 200,
storing nothing. bench.ingest serves it with the relay's own gunicorn settings:

    gunicorn bench.bare:app
"""

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/hooks/<route>")
def receive(route: str):
    body = request.get_json()
    return jsonify(id=body.get("id"), route=route), 200
