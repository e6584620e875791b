"""tpkit-serve against the clients people use: the official `openai` Python client, and a bounded
schemathesis run against docs/openapi.yaml that must find no 5xx and no crash.

    python clients.py TPKIT_SERVE MODEL OPENAPI_YAML

Starts the server itself on a free port and stops it with SIGTERM (it must exit 0).
"""
import os
import re
import subprocess
import sys
import tempfile

import httpx
import openai

serve, model, spec = sys.argv[1:4]
spec = os.path.abspath(spec)  # schemathesis runs in a directory of its own
server = subprocess.Popen([serve, "--model", model, "--port", "0", "--served-model-name", "stories", "--tp", "2"],
                          stdout=subprocess.PIPE, text=True)
line = server.stdout.readline()
match = re.search(r"listening on (http://[^\s]+)", line)
assert match, f"the server did not start: {line!r}"
base = match.group(1)
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAILED:", what)


try:
    client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    check([m.id for m in models.data] == ["stories"], f"models: {models}")

    whole = client.completions.create(model="stories", prompt="Once upon a time", max_tokens=24, temperature=0,
                                      extra_body={"ignore_eos": True})
    text = whole.choices[0].text
    check(whole.choices[0].finish_reason == "length", f"finish_reason {whole.choices[0].finish_reason}")
    check(whole.usage.completion_tokens == 24, f"usage {whole.usage}")
    check(text.startswith(", there was a little girl named Lily"), f"text {text!r}")

    pieces, reasons, usage = [], [], None
    for chunk in client.completions.create(model="stories", prompt="Once upon a time", max_tokens=24,
                                           temperature=0, stream=True, stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True}):
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.text)
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
    check("".join(pieces) == text, f"streamed {''.join(pieces)!r} != {text!r}")
    check(reasons == ["length"], f"stream finish reasons {reasons}")
    check(usage is not None and usage.completion_tokens == 24, f"stream usage {usage}")

    seeded = [client.completions.create(model="stories", prompt="Lily", max_tokens=16, temperature=0.9, seed=7)
              .choices[0].text for _ in range(2)]
    check(seeded[0] == seeded[1], f"seeded sampling differs: {seeded}")

    try:
        client.completions.create(model="stories", prompt="x", max_tokens=0)
        check(False, "max_tokens 0 was accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and "max_tokens" in str(e), f"max_tokens 0: {e}")
    try:
        client.completions.create(model="gpt-4", prompt="x")
        check(False, "an unknown model was accepted")
    except openai.NotFoundError as e:
        check("does not exist" in str(e), f"unknown model: {e}")
    try:
        client.chat.completions.create(model="stories", messages=[{"role": "user", "content": "hi"}])
        check(False, "chat without a template was accepted")
    except openai.BadRequestError as e:
        check("chat template" in str(e), f"chat without a template: {e}")

    # Schemathesis: generated requests for every operation; none may be answered with a 5xx.
    run = subprocess.run([sys.executable, "-m", "schemathesis.cli", "run", spec, "--url", base,
                          "--checks", "not_a_server_error", "--max-examples", "25", "--generation-deterministic",
                          "--request-timeout", "60", "--no-color"],
                         capture_output=True, text=True, cwd=tempfile.mkdtemp())  # its cache lands there
    print(run.stdout[-4000:], run.stderr[-2000:])
    check(run.returncode == 0, f"schemathesis exited {run.returncode}")
    check(httpx.get(base + "/health").status_code == 200, "the server is not healthy after schemathesis")
finally:
    server.terminate()
    try:
        status = server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        status = "hung"
    check(status == 0, f"the server exited {status} after SIGTERM")

print("FAILURES:" if failures else "all client checks passed", *failures, sep="\n")
sys.exit(1 if failures else 0)
