"""The official OpenAI Python SDK against Tessera's /v1 with what passes through the gateway:
tools (a round trip, JSON and streamed), JSON-schema output, an image part, a PDF file part,
several choices, and embeddings; for OpenAI's models and, translated, for Claude's.

Run by server/tests/openai_sdk.rs with TESSERA_BASE_URL (…/v1) and TESSERA_API_KEY set. Prints
one JSON line with what it saw; exits non-zero when a check fails.
"""

import base64
import json
import os
import sys

from openai import OpenAI

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather now in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# A 1x1 PNG.
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def tools_round_trip(client: OpenAI, model: str) -> int:
    """Asks, gets a tool call, answers it, gets text; the same again streamed. Returns tokens."""
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = client.chat.completions.create(model=model, messages=[question], tools=[WEATHER], max_tokens=60)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "weather", call
    assert json.loads(call.function.arguments) == {"city": "Oslo"}, call.function.arguments
    answer = client.chat.completions.create(
        model=model,
        messages=[
            question,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
            {"role": "tool", "tool_call_id": call.id, "content": "Rain, 4 degrees"},
        ],
        tools=[WEATHER],
        max_tokens=60,
    )
    assert "the tool said Rain, 4 degrees" in answer.choices[0].message.content, answer
    tokens = first.usage.total_tokens + answer.usage.total_tokens

    # Streamed: the arguments arrive in pieces, and the SDK's accumulator puts them together.
    name, arguments, call_id, finish = None, "", None, None
    usage = None
    for chunk in client.chat.completions.create(
        model=model, messages=[question], tools=[WEATHER], max_tokens=60, stream=True,
        stream_options={"include_usage": True},
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                call_id = tc.id or call_id
                if tc.function and tc.function.name:
                    name = tc.function.name
                if tc.function and tc.function.arguments:
                    arguments += tc.function.arguments
            finish = c.finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("weather", {"city": "Oslo"}, "tool_calls"), (name, arguments, finish)
    assert call_id, "a streamed tool call has its id"
    assert usage is not None and usage.completion_tokens > 0, usage
    return tokens + usage.total_tokens


def structured(client: OpenAI, model: str) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "urgent": {"type": "boolean"}},
        "required": ["name", "age", "urgent"],
        "additionalProperties": False,
    }
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "The patient is called Ada"}],
        response_format={"type": "json_schema", "json_schema": {"name": "patient", "schema": schema, "strict": True}},
        max_tokens=60,
    )
    assert reply.choices[0].finish_reason == "stop", reply
    assert json.loads(reply.choices[0].message.content) == {"name": "Ada", "age": 1, "urgent": True}, reply


def image(client: OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}},
        ]}],
        max_tokens=60,
    )
    assert reply.choices[0].message.content.startswith("I see 1 image."), reply


def pdf(pages: int) -> str:
    """A PDF of empty pages, as a data URL."""
    objects = ["<</Type /Catalog /Pages 2 0 R>>"]
    objects.append(f"<</Type /Pages /Count {pages} /Kids [{' '.join(f'{i + 3} 0 R' for i in range(pages))}]>>")
    objects += ["<</Type /Page /Parent 2 0 R>>"] * pages
    text = "%PDF-1.4\n" + "".join(f"{i + 1} 0 obj {o} endobj\n" for i, o in enumerate(objects)) + "%%EOF\n"
    return "data:application/pdf;base64," + base64.b64encode(text.encode()).decode()


def document(client: OpenAI, model: str) -> int:
    """A PDF file part: each page costs the prompt more than its bytes. Returns the prompt's tokens."""
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "Sum up the discharge letter."},
            {"type": "file", "file": {"filename": "letter.pdf", "file_data": pdf(3)}},
        ]}],
        max_tokens=60,
    )
    # The simulator counts 1,500 tokens a page, as providers count a page's text and image.
    assert reply.usage.prompt_tokens >= 3 * 1500, reply.usage
    return reply.usage.prompt_tokens


def main() -> int:
    client = OpenAI(base_url=os.environ["TESSERA_BASE_URL"], api_key=os.environ["TESSERA_API_KEY"], max_retries=0)
    seen = {"tokens": 0}
    for model in ["gpt-4o-mini", "claude-3-5-haiku-latest"]:
        seen["tokens"] += tools_round_trip(client, model)
        structured(client, model)
        image(client, model)
        seen["document_prompt_tokens"] = seen.get("document_prompt_tokens", 0) + document(client, model)

    # Fields Tessera does not read pass through to OpenAI: several choices, a seed, logprobs.
    many = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], n=3, seed=7,
        logprobs=True, max_tokens=20,
    )
    assert len(many.choices) == 3, many
    assert many.choices[2].logprobs.content[0].logprob == -0.1, many.choices[2]
    seen["choices_completion_tokens"] = many.usage.completion_tokens

    emb = client.embeddings.create(model="text-embedding-3-small", input=["flu shot", "opening hours"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb
    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
