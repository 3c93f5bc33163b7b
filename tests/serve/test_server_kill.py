"""SIGKILL of a real `ttsearch serve` (toy models, real vLLM engines) mid-load, then a
restart on the same port with the same command and no clean-up in between.

What must hold (issue 21): every answer a client received is complete and valid; a request
in flight at the kill fails with a connection error, never with half an answer taken for a
whole one (a stream cut mid-way included); no process of the server's session survives;
the restarted server binds the port its predecessor's connections still linger on
(TIME_WAIT) and answers. Two server starts in all (~40 s each on a quiet 2-core machine).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.serve.server_process import ServeCommand, ServerProcess
from ttsearch.cli.experiment import TOY_QUICK_RECIPE
from ttsearch.toy.task import make_problems

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "best_of_n-4"
CANDIDATES = 4
CLIENTS = 8  # each sends one request after another until the kill
STREAMING_CLIENTS = 2  # of them: a stream cut by the kill must fail, not end quietly
ANSWERS_BEFORE_KILL = 8
LOAD_SECONDS = 300.0  # the kill's conditions must come about within this
PROBLEMS = [p.problem for p in make_problems(500, seed=21)]
# A request's failure the kill may cause: the openai client wraps transport errors of a
# plain request in APIConnectionError; a stream's body raises httpx's own while iterated.
CONNECTION_ERRORS = (openai.APIConnectionError, httpx.TransportError)


@dataclass(frozen=True, slots=True)
class Answer:
    """What a client took from a response: the message text, `finish_reason`, and the
    `search` extension (None where the response never carried it)."""

    text: str
    finish: str | None
    search: dict[str, Any] | None


@dataclass(slots=True)
class Call:
    """One request and how it ended."""

    seed: int
    stream: bool
    answer: Answer | None = None
    error: BaseException | None = None
    started_stream: bool = False  # a stream whose first chunk arrived
    done: bool = False


@dataclass(slots=True)
class Load:
    """Every call the clients made; which were in flight when the server was killed."""

    calls: list[Call] = field(default_factory=list)
    in_flight_at_kill: list[Call] = field(default_factory=list)
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    killed_at: float = 0.0  # time.monotonic()

    @property
    def answered(self) -> int:
        return sum(c.answer is not None for c in self.calls)


def _recipe(tmp_path: Path) -> Path:
    data = yaml.safe_load(TOY_QUICK_RECIPE.read_text())
    data["strategies"] = [{"strategy": "best_of_n", "n": [CANDIDATES], "reduction": "min"}]
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def _ask(api: openai.AsyncOpenAI, call: Call) -> None:
    """Send `call`'s request; keep its answer or its error."""
    messages: Any = [{"role": "user", "content": PROBLEMS[call.seed % len(PROBLEMS)]}]
    try:
        if call.stream:
            call.answer = await _read_stream(api, messages, call)
        else:
            reply = await api.chat.completions.create(model=MODEL, messages=messages, seed=call.seed)
            choice = reply.choices[0]
            call.answer = Answer(
                choice.message.content or "", choice.finish_reason, (reply.model_extra or {}).get("search")
            )
    except Exception as error:
        call.error = error
    finally:
        call.done = True


async def _read_stream(api: openai.AsyncOpenAI, messages: Any, call: Call) -> Answer:
    text, finish, search = "", None, None
    stream = await api.chat.completions.create(model=MODEL, messages=messages, seed=call.seed, stream=True)
    async for chunk in stream:
        call.started_stream = True
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        extra = (chunk.model_extra or {}).get("search") or {}
        if "candidates" in extra:  # progress chunks carry search.progress only
            search = extra
    return Answer(text, finish, search)


async def _client(api: openai.AsyncOpenAI, load: Load, seeds: itertools.count[int], stream: bool) -> None:
    """One request after another until the server is killed (or a request fails)."""
    while not load.killed.is_set():
        call = Call(next(seeds), stream)
        load.calls.append(call)
        await _ask(api, call)
        if call.error is not None:
            return


async def _load_then_kill(server: ServerProcess) -> Load:
    """Load `server` from CLIENTS clients; SIGKILL its session once ANSWERS_BEFORE_KILL
    answers came back and a stream is mid-way; return when every client has stopped."""
    load, seeds = Load(), itertools.count()
    api = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=LOAD_SECONDS)
    async with api:
        clients = [asyncio.create_task(_client(api, load, seeds, stream=i < STREAMING_CLIENTS)) for i in range(CLIENTS)]
        deadline = time.monotonic() + LOAD_SECONDS
        while not (load.answered >= ANSWERS_BEFORE_KILL and any(c.started_stream and not c.done for c in load.calls)):
            assert time.monotonic() < deadline, f"no mid-stream moment after {load.answered} answers"
            assert not any(c.error for c in load.calls), [c.error for c in load.calls if c.error]
            await asyncio.sleep(0.01)
        # Nothing else runs on this event loop between the snapshot and the kill.
        load.in_flight_at_kill = [c for c in load.calls if not c.done]
        server.kill_session()
        load.killed_at = time.monotonic()
        load.killed.set()
        await asyncio.gather(*clients)
    return load


def _assert_complete(answer: Answer, seed: int) -> None:
    """A whole, valid completion of a `MODEL` search sent with `seed`."""
    search = answer.search
    assert search is not None, f"no search object: half an answer ({answer})"
    assert search["seed"] == seed and len(search["candidates"]) == CANDIDATES
    selected = search["candidates"][search["selected"]]
    assert answer.text and answer.text == selected["text"], answer
    assert answer.finish in ("stop", "length")
    assert search["answer"] and search["answer"] == selected["answer"]


def _lingering_connections(port: int) -> list[str]:
    """The TCP states of connections whose local port is `port` and that are closing
    (FIN_WAIT1/2, TIME_WAIT, CLOSING, LAST_ACK; /proc/net/tcp, Linux): with them around, a
    bind without SO_REUSEADDR fails with EADDRINUSE."""
    closing = {"04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT", "09": "LAST_ACK", "0B": "CLOSING"}
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        if int(local.split(":")[1], 16) == port and state in closing:
            states.append(closing[state])
    return states


async def _ask_restarted(url: str) -> list[Call]:
    api = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=LOAD_SECONDS)
    calls = [Call(seed, stream=seed == 0) for seed in range(4)]
    async with api:
        await asyncio.gather(*(_ask(api, call) for call in calls))
    return calls


def test_sigkill_mid_load_loses_no_answer_and_a_restart_on_the_same_port_serves(tmp_path: Path) -> None:
    command = ServeCommand.on_free_port(_recipe(tmp_path))
    victim = ServerProcess.start(command, tmp_path / "victim.log")
    try:
        load = asyncio.run(_load_then_kill(victim))
    finally:
        victim.kill_session()  # a no-op after the kill; the clean-up if the load failed
        survivors = victim.wait_for_session_end()
    assert not survivors, f"processes {survivors} of the killed server's session are alive"

    # Every answer is whole, those in flight at the kill included (a response already sent
    # in full may be read after it). Only requests in flight at the kill failed, and only
    # to connect: nothing answered before it was lost.
    answered = [c for c in load.calls if c.answer is not None]
    assert len(answered) >= ANSWERS_BEFORE_KILL
    for call in answered:
        assert call.answer is not None and call.error is None
        _assert_complete(call.answer, call.seed)
    failed = [c for c in load.calls if c.answer is None]
    assert {c.seed for c in failed} <= {c.seed for c in load.in_flight_at_kill}
    assert all(isinstance(c.error, CONNECTION_ERRORS) for c in failed), [repr(c.error) for c in failed]
    cut = [c for c in load.in_flight_at_kill if c.answer is None]
    assert cut, "nothing was in flight at the kill"
    assert any(c.stream and c.started_stream for c in cut), "no stream was cut mid-way"

    # The same command on the same port, at once: the killed server's connections are
    # still closing on it (Linux keeps TIME_WAIT 60 s; the engines start in less).
    lingering = _lingering_connections(command.port)
    assert lingering, "the kill left no closing connection on the port: the restart would test nothing"
    with ServerProcess.start(command, tmp_path / "restarted.log") as restarted:
        restarted_after = time.monotonic() - load.killed_at
        calls = asyncio.run(_ask_restarted(restarted.url))
        for call in calls:
            assert call.answer is not None, repr(call.error)
            _assert_complete(call.answer, call.seed)
        health = httpx.get(f"{restarted.url}/health").json()
        assert health["running"] == health["queued"] == 0
    # Leaving the block stopped it by SIGTERM: exit 0, no process of its session left.
    print(
        f"{len(answered)} answers, {len(cut)} requests cut by the kill "
        f"({sum(c.stream for c in cut)} streams); restarted over {len(lingering)} closing connections "
        f"({', '.join(sorted(set(lingering)))}), serving {restarted_after:.0f} s after the kill"
    )
