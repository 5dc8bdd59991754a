"""The official OpenAI Python SDK against Tessera's /v1 API: a JSON call, a streamed call with
usage, the Responses API (JSON, streamed, a function tool's round trip, the SDK's stream and
parse helpers, a count of input tokens), moderations, the models listed and retrieved, and the SDK's own error classes for Tessera's errors.

Run by server/tests/openai_sdk.rs with TESSERA_BASE_URL (…/v1) and TESSERA_API_KEY set. Prints
one JSON line with what it saw; exits non-zero when a check fails.
"""

import json
import os
import sys

import openai
from openai import OpenAI
from pydantic import BaseModel


class Shift(BaseModel):
    ward: str
    nurses: int


def main() -> int:
    client = OpenAI(base_url=os.environ["TESSERA_BASE_URL"], api_key=os.environ["TESSERA_API_KEY"], max_retries=0)

    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What does triage mean?"},
        ],
        max_tokens=50,
    )
    assert reply.object == "chat.completion", reply
    text = reply.choices[0].message.content
    assert text and "triage" in text, text
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    stream = client.chat.completions.create(
        model="claude-3-5-haiku-latest",
        messages=[{"role": "user", "content": "List the clinic opening hours"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    streamed = "".join(parts)
    assert "opening hours" in streamed, streamed
    assert usage is not None and usage.completion_tokens > 0, usage

    # The Responses API: JSON, streamed, and a function tool's round trip.
    response = client.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", input="What does triage mean?", max_output_tokens=50
    )
    assert response.status == "completed", response
    assert "triage" in response.output_text, response.output_text
    responses_tokens = response.usage.total_tokens
    deltas, completed = [], None
    for event in client.responses.create(model="gpt-4o-mini", input="List the clinic opening hours", stream=True):
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            completed = event.response
    assert completed is not None, "the stream must end with response.completed"
    assert "".join(deltas) == completed.output_text, (deltas, completed.output_text)
    responses_tokens += completed.usage.total_tokens
    weather = {
        "type": "function",
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    asked = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.responses.create(model="gpt-4o-mini", input=asked, tools=[weather])
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "weather" and json.loads(call.arguments) == {"city": "Oslo"}, call
    answered = client.responses.create(
        model="gpt-4o-mini",
        tools=[weather],
        input=asked + [call, {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}],
    )
    assert answered.output_text.endswith("Sunny, 21 C"), answered.output_text
    responses_tokens += first.usage.total_tokens + answered.usage.total_tokens
    # The SDK's helpers: a stream it gathers into the final response, and structured output it
    # parses into a model.
    with client.responses.stream(model="gpt-4o-mini", input="Summarise the rota") as stream:
        gathered = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(gathered) == final.output_text and final.output_text, (gathered, final.output_text)
    parsed = client.responses.parse(model="gpt-4o-mini", input="Plan the shift for ward B", text_format=Shift)
    assert parsed.output_parsed == Shift(ward="B", nurses=1), parsed.output_parsed
    responses_tokens += final.usage.total_tokens + parsed.usage.total_tokens
    try:
        client.responses.create(model="gpt-4o-mini", input="And then?", previous_response_id=response.id)
        raise AssertionError("a response kept by the provider cannot be bounded and must be refused")
    except openai.BadRequestError as e:
        assert "previous_response_id" in str(e), e

    # The count of a Responses body's input tokens: the provider's, and not metered, as OpenAI
    # does not charge for it. The model names the provider to ask, so it is required.
    count = client.responses.input_tokens.count(
        model="gpt-4o-mini", instructions="Be brief.", input="What does triage mean?"
    )
    assert count.object == "response.input_tokens", count
    assert count.input_tokens == response.usage.input_tokens, (count, response.usage)
    try:
        client.responses.input_tokens.count(input="What does triage mean?")
        raise AssertionError("a count without a model must be refused")
    except openai.BadRequestError as e:
        assert "model" in str(e), e

    # Moderation: forwarded to OpenAI and not metered, as OpenAI does not charge for it.
    moderation = client.moderations.create(model="omni-moderation-latest", input="Take two tablets daily.")
    assert moderation.results[0].flagged is False, moderation
    flagged = client.moderations.create(input=["A calm note.", "[sim:flagged=violence] a threat"])
    assert [r.flagged for r in flagged.results] == [False, True], flagged
    assert flagged.results[1].categories.violence, flagged.results[1]
    assert flagged.results[1].category_scores.violence > 0.5, flagged.results[1]
    try:
        client.moderations.create(model="gpt-4o-mini", input="hi")
        raise AssertionError("a chat model does not moderate")
    except openai.BadRequestError as e:
        assert "moderation" in str(e), e

    listed = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in listed, listed
    model = client.models.retrieve("gpt-4o-mini")
    assert model.id == "gpt-4o-mini" and model.object == "model", model
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("an unknown model must not be found")
    except openai.NotFoundError as e:
        assert "no-such-model" in str(e), e
    try:
        client.completions.create(model="gpt-4o-mini", prompt="hi")
        raise AssertionError("an endpoint Tessera does not serve must fail")
    except openai.NotFoundError as e:
        assert "/v1/completions" in str(e), e

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
        raise AssertionError("an unknown model must fail")
    except openai.NotFoundError as e:
        assert "no-such-model" in str(e), e

    try:
        OpenAI(base_url=os.environ["TESSERA_BASE_URL"], api_key="tsk_not_a_real_key", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        raise AssertionError("a wrong key must fail")
    except openai.AuthenticationError:
        pass

    print(json.dumps({
        "json_total_tokens": reply.usage.total_tokens,
        "stream_total_tokens": usage.total_tokens,
        "responses_total_tokens": responses_tokens,
        "sdk_version": openai.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
