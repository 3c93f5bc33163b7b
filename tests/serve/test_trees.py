"""The live search view's server side on the scripted backends (in process, through ASGI):
the bounded registry of requests' trees, `GET /v1/trees/{id}` and its SSE `/events`, how a
search's end (answered, failed, cancelled) reaches its tree, eviction, 404s, the API key, and
the page at `GET /`. The page itself runs in a real browser in test_server.py."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from tests.serve.scripted_service import client, make_service
from tests.serve.test_api import chat, events
from tests.serve.test_service import hang_on, until
from ttsearch.core.backend import SampleRequest
from ttsearch.core.results import selected_index
from ttsearch.core.tree import SearchTree
from ttsearch.serve import ServiceOptions, parse_request
from ttsearch.serve.metering import SearchProgress
from ttsearch.serve.service import SearchOutcome, SearchService
from ttsearch.serve.trees import TreeRecord, TreeRegistry, tree_id


def start(service: SearchService, problem: str, model: str = "beam-4", *, id: str) -> asyncio.Task[SearchOutcome]:
    """A request's search as the app starts it, under the tree id `id`."""
    plan = service.plan(parse_request("chat", chat(model, problem, seed=1)))
    return service.start(service.reserve(), plan, SearchProgress(), tree_id=id)


def path_text(tree: dict[str, Any], node_id: int) -> str:
    """The solution text at `node_id`: its segments from the root down."""
    by_id = {node["id"]: node for node in tree["nodes"]}
    texts = []
    node = by_id[node_id]
    while node["parent"] is not None:
        texts.append(node["text"])
        node = by_id[node["parent"]]
    return "".join(reversed(texts))


# -- the registry --------------------------------------------------------------------------


def test_tree_ids_are_response_ids_without_their_prefix() -> None:
    assert tree_id("chatcmpl-ab12") == tree_id("cmpl-ab12") == tree_id("ab12") == "ab12"


def test_the_registry_keeps_the_newest_finished_trees_and_every_live_one() -> None:
    registry = TreeRegistry(keep=2)
    records = [registry.open(f"chatcmpl-{i}", model="beam-4", problem=f"p{i}") for i in range(4)]
    assert registry.get("1") is records[1] and registry.get("cmpl-1") is records[1]
    for record in records[:3]:
        record.end("finished", answer="7")
        registry.retire(record)
    # The oldest finished one is dropped; the live one stays whatever `keep` says.
    assert registry.get("0") is None and registry.get("1") is records[1] and registry.get("2") is records[2]
    assert registry.get("3") is records[3] and (registry.live, registry.kept) == (1, 2)
    assert registry.get("nonsense") is None


def test_keep_zero_drops_a_tree_when_its_search_ends() -> None:
    registry = TreeRegistry(keep=0)
    record = registry.open("a", model="m", problem="p")
    assert registry.get("a") is record  # live: shown while it searches
    record.end("cancelled")
    registry.retire(record)
    assert registry.get("a") is None and (registry.live, registry.kept) == (0, 0)


def test_registry_and_record_misuse_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="keep_trees must be >= 0, got -1"):
        TreeRegistry(keep=-1)
    registry = TreeRegistry(keep=4)
    record = registry.open("a", model="m", problem="p")
    with pytest.raises(ValueError, match="search tree a exists already"):
        registry.open("chatcmpl-a", model="m", problem="p")
    with pytest.raises(ValueError, match="search tree a is still queued"):
        registry.retire(record)
    with pytest.raises(ValueError, match="ends as one of"):
        record.end("searching")
    record.end("failed", error="the engine broke")
    with pytest.raises(RuntimeError, match="already ended \\(failed\\)"):
        record.end("finished")
    with pytest.raises(RuntimeError, match="already ended"):
        record.watch(SearchTree("p", [1]))


def test_a_record_shows_its_tree_live_and_freezes_it_when_it_ends() -> None:
    record = TreeRecord("a", model="beam-4", problem="What is 3 + 4?")
    queued = record.snapshot()
    assert (queued["status"], queued["nodes"], queued["selected"]) == ("queued", [], None)
    tree = SearchTree("What is 3 + 4?", [1, 2])
    record.watch(tree)
    seen = record.version
    child = tree.add_child(
        tree.root, token_ids=(3,), text="so 7", steps=("so 7",), step_scores=(0.9,), finish="eos", terminal=True
    )
    assert record.version != seen and len(record.snapshot()["nodes"]) == 2  # the live tree, as it grows
    record.end("finished", answer="7", selected=child.id)
    tree.add_child(tree.root, token_ids=(4,), text="late", steps=("late",), step_scores=(), finish="eos", terminal=True)
    final = record.snapshot()
    assert (final["status"], final["answer"], final["selected"]) == ("finished", "7", child.id)
    assert [n["text"] for n in final["nodes"]] == ["", "so 7"]  # frozen at the end
    assert final["problem"] == "What is 3 + 4?" and final["object"] == "search.tree"


# -- the routes ----------------------------------------------------------------------------


async def test_a_finished_search_s_tree_by_either_id_with_the_answer_s_path_selected() -> None:
    async with client(make_service()) as http:
        reply = (await http.post("/v1/chat/completions", json=chat("beam-4", seed=3))).json()
        links = reply["search"]["tree"]
        bare = await http.get(links["url"])
        prefixed = await http.get(f"/v1/trees/{reply['id']}")
    hex_id = reply["id"].removeprefix("chatcmpl-")
    assert links == {"id": hex_id, "url": f"/v1/trees/{hex_id}", "view": f"/?tree={hex_id}"}
    assert bare.status_code == prefixed.status_code == 200 and bare.json() == prefixed.json()
    tree = bare.json()
    assert (tree["id"], tree["model"], tree["status"]) == (hex_id, "beam-4", "finished")
    assert tree["answer"] == reply["search"]["answer"] and tree["error"] is None
    # The selected node is the shown candidate: its path spells the message.
    assert path_text(tree, tree["selected"]) == reply["choices"][0]["message"]["content"]
    finished = [n for n in tree["nodes"] if n["state"] == "finished"]
    assert len(finished) == len(reply["search"]["candidates"]) == 4
    assert {n["state"] for n in tree["nodes"]} >= {"expanded", "finished"}
    assert all(n["score"] is not None for n in tree["nodes"][1:])  # every step scored by the PRM


async def test_plain_sampling_has_a_tree_without_a_selected_node() -> None:
    async with client(make_service()) as http:
        reply = (await http.post("/v1/completions", json={"model": "scripted", "prompt": "1?", "n": 3})).json()
        tree = (await http.get(reply["search"]["tree"]["url"])).json()
    assert reply["id"].startswith("cmpl-") and tree["selected"] is None
    assert [n["depth"] for n in tree["nodes"]] == [0, 1, 1, 1] and tree["nodes"][1]["score"] is None


async def test_the_events_follow_a_search_as_it_grows_and_end_with_its_final_tree() -> None:
    async def slow(request: SampleRequest) -> None:
        await asyncio.sleep(0.05)  # long beside the 5 ms poll: every stage of growth is seen

    service = make_service(delay=slow)
    async with client(service, progress_interval=0.005) as http:
        search = start(service, "What is 3 + 4?", "beam-8", id="abc123")
        streamed = await http.get("/v1/trees/chatcmpl-abc123/events")  # returns once the stream ended
        outcome = await search
        final = (await http.get("/v1/trees/abc123")).json()
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    *snapshots, done = events(streamed.text)
    assert done == "[DONE]" and snapshots[-1] == final and final["status"] == "finished"
    sizes = [len(s["nodes"]) for s in snapshots]
    assert sizes == sorted(sizes) and len(set(sizes)) > 2  # seen growing, not only at the end
    assert all(s["status"] in ("queued", "searching") for s in snapshots[:-1])
    assert all(a != b for a, b in itertools.pairwise(snapshots))  # an event only when it moved
    shown = selected_index(outcome.result)
    assert shown is not None and final["selected"] == outcome.result.candidates[shown].node_id
    assert outcome.tree_id == "abc123"


async def test_the_events_of_an_ended_search_are_its_tree_once() -> None:
    async with client(make_service()) as http:
        reply = (await http.post("/v1/chat/completions", json=chat("best_of_n-4"))).json()
        streamed = await http.get(f"{reply['search']['tree']['url']}/events")
    snapshot, done = events(streamed.text)
    assert done == "[DONE]" and snapshot["status"] == "finished" and len(snapshot["nodes"]) == 5


async def test_failed_and_cancelled_searches_keep_their_partial_trees() -> None:
    release, delay = hang_on("hang")
    service = make_service(delay=delay)
    async with client(service) as http:
        failed = start(service, "boom", id="f1")
        await asyncio.gather(failed, return_exceptions=True)
        hung = start(service, "hang here", id="c1")
        await until(lambda: service.policy_load.requests == 1)
        live = (await http.get("/v1/trees/c1")).json()
        hung.cancel()
        await asyncio.gather(hung, return_exceptions=True)
        never_ran = start(service, "cancelled before it ran", id="c2")
        never_ran.cancel()
        await asyncio.gather(never_ran, return_exceptions=True)
        trees = {i: (await http.get(f"/v1/trees/{i}")).json() for i in ("f1", "c1", "c2")}
    release.set()
    assert live["status"] == "searching" and len(live["nodes"]) == 1  # the root, its expansion in flight
    assert trees["f1"]["status"] == "failed"
    assert trees["f1"]["error"] == "internal error (RuntimeError); the server's log has the details"
    assert trees["c1"]["status"] == "cancelled" and len(trees["c1"]["nodes"]) == 1
    assert trees["c2"]["status"] == "cancelled" and trees["c2"]["nodes"] == []
    assert service.trees.live == 0


async def test_the_oldest_finished_trees_are_dropped_past_keep_trees() -> None:
    async with client(make_service(options=ServiceOptions(keep_trees=2))) as http:
        replies = [(await http.post("/v1/chat/completions", json=chat("best_of_n-4"))).json() for _ in range(3)]
        statuses = [(await http.get(r["search"]["tree"]["url"])).status_code for r in replies]
        gone = await http.get(replies[0]["search"]["tree"]["url"])
    assert statuses == [404, 200, 200]
    error = gone.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("tree_not_found", "tree_id", "invalid_request_error")
    assert "older than the 2 finished searches it keeps" in error["message"]


async def test_without_kept_trees_a_response_names_none() -> None:
    async with client(make_service(options=ServiceOptions(keep_trees=0))) as http:
        reply = (await http.post("/v1/chat/completions", json=chat("best_of_n-4"))).json()
        gone = await http.get(f"/v1/trees/{reply['id']}")
    assert reply["search"]["tree"] is None and gone.status_code == 404
    assert "or finished (it keeps none)" in gone.json()["error"]["message"]


async def test_unknown_trees_are_404_and_trees_need_the_api_key() -> None:
    async with client(make_service()) as http:
        reply = (await http.post("/v1/chat/completions", json=chat("best_of_n-4"))).json()
        url = reply["search"]["tree"]["url"]
        unknown = [await http.get(path) for path in ("/v1/trees/nope", "/v1/trees/nope/events")]
        keyless = [await http.get(path, headers={"Authorization": ""}) for path in (url, f"{url}/events")]
        wrong = await http.get(url, headers={"Authorization": "Bearer wrong"})
        metrics = (await http.get("/metrics")).text
    for response in unknown:
        assert response.status_code == 404 and response.json()["error"]["code"] == "tree_not_found"
        assert "no search tree 'nope'" in response.json()["error"]["message"]
    for response in (*keyless, wrong):
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert 'ttsearch_requests_total{endpoint="/v1/trees",status="404"} 2.0' in metrics
    assert 'ttsearch_requests_total{endpoint="/v1/trees",status="401"} 3.0' in metrics


async def test_the_page_is_one_document_open_without_a_key() -> None:
    async with client(make_service()) as http:
        page = await http.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    # The viewer and the page's script inlined, no marker left, nothing fetched from elsewhere.
    assert "global.TreeView = " in text and "/v1/trees/" in text and 'id="tree"' in text
    assert "<!--" not in text and "src=" not in text and "http://" not in text.replace("http://www.w3.org", "")


async def test_a_chat_stream_s_id_opens_its_tree() -> None:
    async with client(make_service()) as http:
        streamed = await http.post("/v1/chat/completions", json=chat("beam-4", stream=True))
        chunks = events(streamed.text)
        tree = await http.get(f"/v1/trees/{chunks[0]['id']}")
    final = [c for c in chunks[:-1] if "candidates" in c.get("search", {})][-1]
    assert tree.status_code == 200 and final["search"]["tree"]["id"] == tree.json()["id"]
