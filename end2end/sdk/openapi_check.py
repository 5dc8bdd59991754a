"""Checks Tessera's OpenAPI document against the running server: the document is valid
OpenAPI 3.1, and real answers validate against the schemas it gives for their path and status.

Environment: TESSERA_BASE_URL (the server, no /v1), TESSERA_API_KEY (a clinic API key).
Prints {"validated": N} on success; raises on the first mismatch.
"""

import json
import os
import urllib.error
import urllib.request

import jsonschema
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

BASE = os.environ["TESSERA_BASE_URL"].rstrip("/")
KEY = os.environ["TESSERA_API_KEY"]


def call(method, path, body=None, key=KEY):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req) as res:
            return res.status, res.headers, json.loads(res.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


_, _, doc = call("GET", "/v1/openapi.json", key=None)
validate(doc)
assert doc["openapi"].startswith("3.1"), doc["openapi"]

# The document as a JSON Schema resource, so `#/components/...` references resolve.
ROOT = "urn:tessera:openapi"
registry = Registry().with_resource(ROOT, Resource.from_contents(doc, default_specification=DRAFT202012))


def response_schema(path, method, status):
    responses = doc["paths"][path][method.lower()]["responses"]
    response = responses[str(status)]
    if "$ref" in response:
        name = response["$ref"].split("/")[-1]
        response = doc["components"]["responses"][name]
    schema = response["content"]["application/json"]["schema"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": ROOT + schema["$ref"]} if "$ref" in schema else schema


validated = 0


def check(method, path, status, headers, body):
    global validated
    jsonschema.validate(body, response_schema(path, method, status), registry=registry)
    assert headers.get("x-request-id"), "every answer carries x-request-id"
    validated += 1


chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
for method, path, body, key, expected in [
    ("GET", "/v1/models", None, KEY, 200),
    ("POST", "/v1/chat/completions", chat, KEY, 200),
    ("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}, KEY, 200),
    ("POST", "/v1/responses", {"model": "gpt-4o-mini", "input": "hello"}, KEY, 200),
    ("POST", "/v1/responses", {"model": "gpt-4o-mini", "input": "hello", "previous_response_id": "resp_1"}, KEY, 400),
    ("POST", "/v1/responses/input_tokens", {"model": "gpt-4o-mini", "input": "hello"}, KEY, 200),
    ("POST", "/v1/responses/input_tokens", {"input": "hello"}, KEY, 400),
    ("POST", "/v1/moderations", {"input": ["hello", "[sim:flagged=violence] a threat"]}, KEY, 200),
    ("POST", "/v1/chat/completions", chat, "tsk_not-a-key", 401),
    ("POST", "/v1/chat/completions", {"model": "no-such-model", "messages": chat["messages"]}, KEY, 404),
    ("POST", "/v1/messages", {"model": "claude-3-5-haiku-latest", "max_tokens": 8, "messages": chat["messages"]}, "tsk_not-a-key", 401),
]:
    status, headers, answer = call(method, path, body, key)
    assert status == expected, (method, path, status, answer)
    check(method, path, status, headers, answer)

for model, expected in [("gpt-4o-mini", 200), ("no-such-model", 404)]:
    status, headers, answer = call("GET", f"/v1/models/{model}", None, KEY)
    assert status == expected, (model, status, answer)
    check("GET", "/v1/models/{model}", status, headers, answer)

print(json.dumps({"validated": validated}))
