"""The Ray driver's bookkeeping without Ray: which worker gets which search, what happens
to the searches of a worker that died, how its restarts are counted, one run at a time on
a worker; and the recipe's
`ray:` section and the `--ray` flag's refusals (no cluster, no engine)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from ttsearch.cli.app import main
from ttsearch.cli.experiment import TOY_RECIPE
from ttsearch.errors import RecipeError
from ttsearch.study.cluster import check_ray_plan, ray_spec, require_ray
from ttsearch.study.cluster.dispatch import Dispatcher, WorkItem
from ttsearch.study.cluster.restarts import RestartCount
from ttsearch.study.cluster.worker import RunGate
from ttsearch.study.preflight import prepare
from ttsearch.study.recipe import RaySpec, load_recipe


def _items(runs: int, problems: int) -> list[WorkItem]:
    return [WorkItem(run, problem) for run in range(runs) for problem in range(problems)]


def test_items_go_out_run_by_run_in_plan_order_and_each_once() -> None:
    dispatcher = Dispatcher(_items(2, 3), workers=2)
    taken = [dispatcher.take(worker) for worker in (0, 1, 0, 1, 0, 1)]
    assert [(i.run, i.problem) for i in taken if i] == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 0), (1, 2)]
    assert dispatcher.take(0) is None and not dispatcher.finished  # all in flight
    for worker, item in zip((0, 1, 0, 1, 0, 1), taken):
        assert item is not None
        dispatcher.returned(worker, item)
    assert dispatcher.finished


def test_a_problem_stays_with_the_worker_that_has_its_prompt_cached() -> None:
    dispatcher = Dispatcher(_items(3, 4), workers=2)
    homes: dict[int, set[int]] = {0: set(), 1: set()}
    while not dispatcher.finished:
        for worker in (1, 0):  # worker 1 asks first each time
            item = dispatcher.take(worker)
            if item is not None:
                homes[worker].add(item.problem)
                dispatcher.returned(worker, item)
    assert homes == {1: {0, 2}, 0: {1, 3}}  # every run of a problem on one worker


def test_an_idle_worker_takes_another_workers_problems_rather_than_wait() -> None:
    dispatcher = Dispatcher(_items(2, 2), workers=2)
    first = [dispatcher.take(0), dispatcher.take(0)]  # worker 0 searched both problems of run 0
    for item in first:
        assert item is not None
        dispatcher.returned(0, item)
    stolen = dispatcher.take(1)
    assert stolen is not None and (stolen.run, stolen.problem) == (1, 0)


def test_a_failed_item_goes_to_another_worker_and_is_given_up_after_two() -> None:
    dispatcher = Dispatcher(_items(1, 2), workers=3)
    item = dispatcher.take(0)
    assert item is not None and (item.run, item.problem) == (0, 0)
    assert dispatcher.failed(0, item, "the worker died") is False  # handed out again
    again = dispatcher.take(0)
    assert again is not None and again.problem == 1  # not back to the worker it failed on
    retry = dispatcher.take(1)
    assert retry is item  # first in its run: it went out before the rest
    assert dispatcher.failed(1, retry, "ValueError: boom") is True  # two different workers: given up
    assert retry.cause == "worker 0: the worker died; worker 1: ValueError: boom"
    dispatcher.returned(0, again)
    assert dispatcher.finished


def test_with_one_worker_left_a_failed_item_gets_one_more_try_there() -> None:
    dispatcher = Dispatcher(_items(1, 1), workers=2)
    dispatcher.retire(1)
    item = dispatcher.take(0)
    assert item is not None and dispatcher.failed(0, item, "died") is False
    assert dispatcher.take(0) is item
    assert dispatcher.failed(0, item, "died again") is True


def test_a_retired_workers_problems_find_a_new_home() -> None:
    dispatcher = Dispatcher(_items(2, 1), workers=2)
    item = dispatcher.take(1)
    assert item is not None
    dispatcher.returned(1, item)
    dispatcher.retire(1)
    nxt = dispatcher.take(0)
    assert nxt is not None and nxt.run == 1
    dispatcher.returned(0, nxt)
    assert dispatcher.finished and dispatcher.live_workers == 1


def test_a_death_is_one_restart_however_many_calls_fail_with_it() -> None:
    count = RestartCount(workers=2)
    count.answered(0, pid=100)
    count.answered(1, pid=200)
    for _ in range(4):  # every slot's search fails with the process, then two starts
        count.died(0)
    assert count.total == 1 and count.pid(0) is None
    count.answered(0, pid=101)  # the restarted process: no second count
    assert count.total == 1 and count.pid(0) == 101
    count.answered(1, pid=200)  # the same process again
    assert count.total == 1


def test_a_death_while_starting_or_idle_is_counted_by_the_new_process() -> None:
    count = RestartCount(workers=2)
    count.answered(0, pid=100)  # seen before its engines start
    count.died(0)  # killed while starting them (the CI flake this test pins: it was missed)
    count.answered(0, pid=101)
    assert count.total == 1
    count.answered(1, pid=200)
    count.answered(1, pid=201)  # died idle, restarted by Ray before the next call
    assert count.total == 2


def test_a_death_ray_never_restarts_is_not_a_restart() -> None:
    count = RestartCount(workers=1)
    count.answered(0, pid=100)
    count.died(0)
    count.died(0)
    count.gone(0)
    assert count.total == 0
    never_seen = RestartCount(workers=1)
    never_seen.died(0)  # died being created: nothing to compare a new process with
    never_seen.gone(0)
    assert never_seen.total == 0


async def test_the_run_gate_lets_one_run_in_at_a_time_and_switches_between() -> None:
    events: list[str] = []

    async def forget() -> None:
        events.append("forget")
        await asyncio.sleep(0)

    gate = RunGate(forget)
    release = {name: asyncio.Event() for name in ("a1", "a2", "b1", "a3")}

    async def search(name: str, run: int) -> None:
        async with gate.entered(run):
            events.append(f"start {name}")
            await release[name].wait()
            events.append(f"end {name}")

    tasks = [asyncio.create_task(search(name, run)) for name, run in (("a1", 0), ("a2", 0), ("b1", 1), ("a3", 0))]
    await asyncio.sleep(0.01)
    # b1 waits for run 0 to drain; a3, behind it in the queue, waits too (no overtaking).
    assert events == ["start a1", "start a2"]
    release["a1"].set()
    release["a2"].set()
    await asyncio.sleep(0.01)
    assert events[2:] == ["end a1", "end a2", "forget", "start b1"]
    release["b1"].set()
    release["a3"].set()
    await asyncio.gather(*tasks)
    assert events[6:] == ["end b1", "forget", "start a3", "end a3"]


async def test_a_search_cancelled_while_waiting_at_the_gate_leaves_it_usable() -> None:
    gate = RunGate(lambda: asyncio.sleep(0))
    hold = asyncio.Event()

    async def search(run: int) -> None:
        async with gate.entered(run):
            await hold.wait()

    first = asyncio.create_task(search(0))
    waiting = asyncio.create_task(search(1))
    await asyncio.sleep(0.01)
    waiting.cancel()
    hold.set()
    await first
    await asyncio.wait_for(search(1), 1)  # the cancelled one held no place
    with pytest.raises(asyncio.CancelledError):
        await waiting


# -- the recipe's ray: section and --ray --------------------------------------------------------


def test_the_ray_section_never_changes_the_hash_and_is_checked() -> None:
    plain = load_recipe(TOY_RECIPE)
    placed = load_recipe(TOY_RECIPE, ["ray.workers=4", "ray.resources={num_gpus: 1, memory: 8GiB}"])
    assert placed.hash == plain.hash == "38674fbf6daca682"
    assert placed.ray == RaySpec(workers=4, resources={"num_gpus": 1.0, "memory": 8.0 * 2**30})
    assert "ray" not in plain.to_dict() and placed.to_dict()["ray"]["workers"] == 4
    assert ray_spec(placed, "ray://head:10001").address == "ray://head:10001"
    assert ray_spec(plain) == RaySpec()
    for override, message in [
        ("ray.workers=0", "ray.workers must be >= 1, got 0"),
        ("ray.address=nowhere", "ray.address: not a Ray address: 'nowhere'"),
        ("ray.resources={num_gpus: -1}", "ray.resources: num_gpus must be >= 0, got -1"),
        ("ray.gpus=1", r"ray: unknown field\(s\) \['gpus'\]"),
    ]:
        with pytest.raises(RecipeError, match=message):
            load_recipe(TOY_RECIPE, [override])


def test_adaptive_best_of_n_is_refused_on_ray() -> None:
    recipe = load_recipe(TOY_RECIPE, ["dataset.end=4", "strategies=[{strategy: adaptive_best_of_n, n: [4]}]"])
    with pytest.raises(RecipeError, match="pool their budget across the problems of a run"):
        check_ray_plan(prepare(recipe))


def test_ray_not_installed_is_named_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees
    with pytest.raises(RecipeError, match=r"--ray needs Ray, which is not installed: pip install 'ttsearch\[ray\]'"):
        require_ray()
    assert main(["experiment", str(TOY_RECIPE), "--out", str(tmp_path / "x"), "--ray"]) == 2
    assert "--ray needs Ray" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_bad_ray_field_is_named_by_the_command_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x"
    assert main(["experiment", str(TOY_RECIPE), "--out", str(out), "--set", "ray.workers=-2", "--ray"]) == 2
    assert "ray.workers must be >= 1, got -2" in capsys.readouterr().err
    assert not out.exists()
    code = main(["experiment", str(TOY_RECIPE), "--check", "--set", "ray.workers=2", "--ray", "auto"])
    assert code == 0
    assert "on Ray: auto; workers: 2" in capsys.readouterr().out
