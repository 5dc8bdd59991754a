"""The official OpenAI Python SDK asking an agent that answers from the clinic's documents:
the reply carries the passages it was given in Tessera's extra field `sources`, JSON and
streamed (on the first chunk), and the SDK keeps it for the caller. Then `/v1/embeddings`
through the SDK (which asks for base64 and decodes it).

Run by server/tests/openai_sdk.rs with TESSERA_BASE_URL (…/v1), TESSERA_API_KEY and
TESSERA_MODEL (`agent:<slug>`) set. Prints one JSON line with what it saw; exits non-zero when
a check fails.
"""

import json
import os
import sys

from openai import OpenAI


def main() -> int:
    client = OpenAI(base_url=os.environ["TESSERA_BASE_URL"], api_key=os.environ["TESSERA_API_KEY"], max_retries=0)
    model = os.environ["TESSERA_MODEL"]

    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "How much does a flu shot cost?"}],
    )
    sources = (reply.model_extra or {}).get("sources")
    assert sources, reply
    first = sources[0]
    assert first["index"] == 1, first
    assert first["document"] == "prices.md", first
    assert "flu shot costs 25 euros" in first["text"], first
    assert reply.choices[0].message.content, reply

    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "What does a standard consultation cost?"}],
        stream=True,
    )
    streamed_sources, parts = None, []
    for chunk in stream:
        extra = chunk.model_extra or {}
        if extra.get("sources") and streamed_sources is None:
            streamed_sources = extra["sources"]
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert streamed_sources and streamed_sources[0]["document"] == "prices.md", streamed_sources
    assert "".join(parts), parts

    # Embeddings: the SDK asks for base64 and decodes it.
    embedded = client.embeddings.create(model="text-embedding-3-small", input=["flu shot", "parking"])
    assert len(embedded.data) == 2, embedded
    assert len(embedded.data[0].embedding) == 16 and embedded.data[0].embedding != embedded.data[1].embedding, embedded
    assert embedded.usage.prompt_tokens > 0, embedded.usage

    print(json.dumps({
        "sources": len(sources),
        "streamed_sources": len(streamed_sources),
        "embedding_tokens": embedded.usage.prompt_tokens,
        "first_value": embedded.data[0].embedding[0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
