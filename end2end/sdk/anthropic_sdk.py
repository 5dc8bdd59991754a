"""The official Anthropic Python SDK against Tessera's /v1/messages: the models listed and
retrieved, a message and its prompt's token count, a stream read with the SDK's helper, a tool
round trip, a call with beta features, and the SDK's own error classes for Tessera's errors.

Run by server/tests/openai_sdk.rs with TESSERA_BASE_URL (the server's root: the SDK adds
/v1/messages) and TESSERA_API_KEY set. Prints one JSON line with what it saw; exits non-zero
when a check fails.
"""

import json
import os
import sys

import anthropic

MODEL = "claude-3-5-haiku-latest"
WEATHER = {
    "name": "weather",
    "description": "The weather now in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def main() -> int:
    client = anthropic.Anthropic(base_url=os.environ["TESSERA_BASE_URL"], api_key=os.environ["TESSERA_API_KEY"], max_retries=0)
    seen = {}

    # The models, in Anthropic's shape: Claude's, the ones /v1/messages serves.
    listed = [m.id for m in client.models.list()]
    assert MODEL in listed and all(i.startswith("claude-") for i in listed), listed
    model = client.models.retrieve(MODEL)
    assert model.type == "model" and model.id == MODEL, model
    try:
        client.models.retrieve("claude-no-such-model")
        raise AssertionError("an unknown model must not be found")
    except anthropic.NotFoundError as e:
        assert "claude-no-such-model" in str(e), e
    seen["models"] = len(listed)

    message = client.messages.create(
        model=MODEL, max_tokens=64, system="Be brief.",
        messages=[{"role": "user", "content": "What does triage mean?"}],
    )
    assert message.type == "message" and message.stop_reason == "end_turn", message
    assert "triage" in message.content[0].text, message
    seen["message_tokens"] = message.usage.input_tokens + message.usage.output_tokens

    # The same prompt counted as the message reported it (a count is not charged).
    counted = client.messages.count_tokens(
        model=MODEL, system="Be brief.", messages=[{"role": "user", "content": "What does triage mean?"}],
    )
    assert counted.input_tokens == message.usage.input_tokens, (counted, message.usage)

    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "List the clinic opening hours"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert "opening hours" in text, text
    seen["stream_tokens"] = final.usage.input_tokens + final.usage.output_tokens

    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = client.messages.create(model=MODEL, max_tokens=64, tools=[WEATHER], messages=[question])
    assert first.stop_reason == "tool_use", first
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "weather" and use.input == {"city": "Oslo"}, use
    answer = client.messages.create(
        model=MODEL, max_tokens=64, tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Rain, 4 degrees"}]},
        ],
    )
    assert "the tool said Rain, 4 degrees" in answer.content[0].text, answer
    seen["tool_tokens"] = sum(m.usage.input_tokens + m.usage.output_tokens for m in [first, answer])

    # Beta features through the SDK's beta namespace: the `anthropic-beta` header reaches
    # Anthropic (the test reads what the simulator received); this is the last call forwarded.
    beta = client.beta.messages.create(
        model=MODEL, max_tokens=32, betas=["token-efficient-tools-2025-02-19"],
        messages=[{"role": "user", "content": "Name one vital sign"}],
    )
    assert "vital sign" in beta.content[0].text, beta
    seen["beta_tokens"] = beta.usage.input_tokens + beta.usage.output_tokens

    try:
        client.messages.create(model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("a model that is not Claude's must be refused here")
    except anthropic.BadRequestError as e:
        assert "/v1/chat/completions" in str(e), e

    try:
        anthropic.Anthropic(base_url=os.environ["TESSERA_BASE_URL"], api_key="tsk_not_a_real_key", max_retries=0).messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        raise AssertionError("a wrong key must fail")
    except anthropic.AuthenticationError:
        pass

    print(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
